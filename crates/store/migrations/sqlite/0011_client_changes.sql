-- A counter bumped by every change to `clients`, whoever makes it (a server, the CLI in
-- another process, an operator's SQL): servers cache client lookups and poll this one row
-- to drop their cache when it moves (domain::client_cache).
CREATE TABLE change_counters (
    name    TEXT PRIMARY KEY,
    version INTEGER NOT NULL
);
INSERT INTO change_counters (name, version) VALUES ('clients', 0);
CREATE TRIGGER clients_changed_insert AFTER INSERT ON clients
BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'clients';
END;
CREATE TRIGGER clients_changed_update AFTER UPDATE ON clients
BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'clients';
END;
CREATE TRIGGER clients_changed_delete AFTER DELETE ON clients
BEGIN
    UPDATE change_counters SET version = version + 1 WHERE name = 'clients';
END;
