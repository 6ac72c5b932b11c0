-- P9: no data key is stored for a person on the erasure register, whatever becomes of the acceptance that
-- asked for one. Keys are made before the accepting transaction (``KeyStore.keys_for`` commits them); the
-- erasure fence inside that transaction deleted a key made for a person erased meanwhile, but when that
-- transaction rolled back the deletion rolled back with it, and an erased person had a key again.
--
-- The insert takes the acceptance erasure lock shared (infra.db.ACCEPTANCE_ERASURE_LOCK = 7204002), which
-- an erasure holds exclusively until it commits. So either the key is stored before the erasure, and the
-- erasure deletes it, or the register is read after the erasure committed (a VOLATILE function's query
-- takes a fresh snapshot, after the wait) and the row is not stored.
CREATE FUNCTION person_data_key_not_erased() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7204002);
    IF EXISTS (SELECT 1 FROM sv_erasures WHERE person_key = NEW.person_key) THEN
        RETURN NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER person_data_keys_not_erased BEFORE INSERT ON person_data_keys
    FOR EACH ROW EXECUTE FUNCTION person_data_key_not_erased();
