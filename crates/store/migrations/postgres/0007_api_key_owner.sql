-- Who an API key belongs to: incident response revokes every key of an owner at once.
ALTER TABLE api_keys ADD COLUMN owner TEXT;
CREATE INDEX api_keys_owner ON api_keys (owner);
