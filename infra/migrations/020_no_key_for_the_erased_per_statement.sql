-- P9 as migration 015 states it (no data key is stored for a person on the erasure register), checked once
-- per statement instead of once per row. 015's row trigger ran a PL/pgSQL call, the lock and a register
-- lookup for every key: ~14 µs of PostgreSQL per row, two thirds of a file chunk's 2,000-key insert.
--
-- Before the statement inserts anything, it takes the acceptance erasure lock shared
-- (infra.db.AdvisoryLock.ACCEPTANCE_ERASURE = 7204002), which an erasure holds exclusively until it
-- commits: as with 015, a key is either stored before an erasure (which then deletes it) or checked after
-- the erasure committed. After the statement, the rows it inserted are joined to the register by a query
-- of a VOLATILE function, which takes a fresh snapshot (after the lock was granted, so it sees an erasure
-- that committed while the statement waited for the lock). Any inserted key of an erased person fails
-- the whole statement with restrict_violation (SQLSTATE 23001); nothing of it is stored. The error names
-- no person: ``KeyStore.keys_for`` reads the register and inserts the others' keys again.
DROP TRIGGER person_data_keys_not_erased ON person_data_keys;
DROP FUNCTION person_data_key_not_erased();

CREATE FUNCTION person_data_keys_lock_erasures() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7204002);
    RETURN NULL;
END
$$;

CREATE FUNCTION person_data_keys_not_erased() RETURNS trigger LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(7204002);  -- held already (the statement trigger): a no-op
    IF EXISTS (SELECT 1 FROM inserted i JOIN sv_erasures e ON e.person_key = i.person_key) THEN
        RAISE EXCEPTION 'a data key for a person on the erasure register is not stored (P9)'
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER person_data_keys_lock_erasures BEFORE INSERT ON person_data_keys
    FOR EACH STATEMENT EXECUTE FUNCTION person_data_keys_lock_erasures();

CREATE TRIGGER person_data_keys_not_erased AFTER INSERT ON person_data_keys
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION person_data_keys_not_erased();
