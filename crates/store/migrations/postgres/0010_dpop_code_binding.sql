-- RFC 9449 §10: an authorization code bound to the DPoP key named in the authorization
-- request (`dpop_jkt`); only a token request with a proof by that key may redeem it.
ALTER TABLE auth_codes ADD COLUMN dpop_jkt TEXT;
