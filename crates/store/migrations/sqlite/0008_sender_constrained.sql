-- Sender-constrained tokens: DPoP (RFC 9449) and mutual-TLS client authentication with
-- certificate-bound tokens (RFC 8705).
ALTER TABLE clients ADD COLUMN dpop_bound_access_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN tls_client_auth_subject TEXT;
-- The DPoP key (RFC 7638 thumbprint) a public client's refresh token is bound to.
ALTER TABLE refresh_tokens ADD COLUMN dpop_jkt TEXT;
