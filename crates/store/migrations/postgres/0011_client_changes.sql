-- A counter bumped by every change to `clients`, whoever makes it (a server, the CLI in
-- another process, an operator's SQL): servers cache client lookups and poll this one row
-- to drop their cache when it moves (domain::client_cache).
CREATE TABLE change_counters (
    name    TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO change_counters (name, version) VALUES ('clients', 0);
CREATE FUNCTION bump_clients_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'clients';
    RETURN NULL;
END
$$;
CREATE TRIGGER clients_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION bump_clients_version();
