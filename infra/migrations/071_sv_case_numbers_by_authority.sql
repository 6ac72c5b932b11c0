-- The shared view keeps each case number (ケース番号) with the authority whose case it is — its referral's —
-- as {"authority", "case_number"} (domain.shared_view._case_items): an authority is shown its own case
-- numbers and referrals only, Hello Work all (as_disclosed), and an authority's search by case number
-- matches its own only. The numbers were one sorted list for the whole person, so an authority reading
-- someone another authority had referred too was shown that authority's welfare case number.
--
-- A number kept before this belongs to the one authority that referred the person where there is one
-- (numbers come from referrals only). Where several did, which one's it is lies in the sealed referral
-- blocks SQL cannot open: the authority is null — shown to Hello Work only, to no authority — until a
-- replay of the shared view (`hub replay shared-view`) rebuilds the record from its events.
UPDATE sv_persons p
SET case_numbers = (
    SELECT jsonb_agg(
        jsonb_build_object(
            'authority',
            CASE WHEN jsonb_array_length(p.referring_authorities) = 1 THEN p.referring_authorities ->> 0 END,
            'case_number', n
        ) ORDER BY n
    )
    FROM jsonb_array_elements_text(p.case_numbers) AS n
)
WHERE jsonb_typeof(p.case_numbers -> 0) = 'string';
