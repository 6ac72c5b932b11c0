-- P8 (domain/provenance.py): consent records are keyed by (person, consent_id). Consent ids travel in the
-- topics' values; keyed by the id alone, another person's consent under the same id and a higher version
-- replaced a person's record (withdrawing or widening their consent). A record id never crosses people.
ALTER TABLE sv_consents DROP CONSTRAINT IF EXISTS sv_consents_pkey;
ALTER TABLE sv_consents ADD PRIMARY KEY (person_key, consent_id);
DROP INDEX IF EXISTS sv_consents_person;   -- the primary key leads with person_key
ALTER TABLE feed_consents DROP CONSTRAINT IF EXISTS feed_consents_pkey;
ALTER TABLE feed_consents ADD PRIMARY KEY (person_key, consent_id);
DROP INDEX IF EXISTS feed_consents_person;
