//! Clients, signing keys, revoked access tokens, API keys and health, on either SQL backend.
//! Compiled once per backend (see `crate::sql`): `super` supplies `Db`, `DbRow` and `q`.

use async_trait::async_trait;
use domain::StoreError;
use domain::apikey::ApiKey;
use domain::client::{Client, GrantType};
use domain::clock::UnixTime;
use domain::jose::{Algorithm, Jwk};
use domain::keys::{KeyState, StoredKey};
use domain::ports::{ApiKeyStore, ClientStore, Health, KeyStore, RevocationStore};
use domain::scope::Scopes;
use sqlx::Row as _;

use super::{Db, DbRow, q};
use crate::sql::{SqlStore, corrupt, map_err, to_json};

type Store = SqlStore<Db>;

fn client_from_row(row: &DbRow) -> Result<Client, StoreError> {
    let grants: Vec<String> =
        serde_json::from_str(row.try_get("grant_types").map_err(map_err)?).map_err(|_| corrupt("grant_types"))?;
    let grant_types =
        grants.iter().map(|g| GrantType::parse(g).ok_or_else(|| corrupt("grant type"))).collect::<Result<_, _>>()?;
    let scopes = |col: &str| -> Result<Scopes, StoreError> {
        Scopes::parse(row.try_get(col).map_err(map_err)?).map_err(|_| corrupt(col))
    };
    let ttl: Option<i64> = row.try_get("access_token_ttl").map_err(map_err)?;
    let uris = |col: &str| -> Result<Vec<String>, StoreError> {
        serde_json::from_str(row.try_get(col).map_err(map_err)?).map_err(|_| corrupt(col))
    };
    Ok(Client {
        id: row.try_get("id").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        secret_hash: row.try_get("secret_hash").map_err(map_err)?,
        grant_types,
        allowed_scopes: scopes("allowed_scopes")?,
        default_scopes: scopes("default_scopes")?,
        audience: serde_json::from_str(row.try_get("audience").map_err(map_err)?).map_err(|_| corrupt("audience"))?,
        access_token_ttl: ttl.map(|t| u32::try_from(t).map_err(|_| corrupt("access_token_ttl"))).transpose()?,
        redirect_uris: uris("redirect_uris")?,
        post_logout_redirect_uris: uris("post_logout_redirect_uris")?,
        first_party: row.try_get("first_party").map_err(map_err)?,
        dpop_bound_access_tokens: row.try_get("dpop_bound_access_tokens").map_err(map_err)?,
        tls_client_auth_subject: row.try_get("tls_client_auth_subject").map_err(map_err)?,
        disabled: row.try_get("disabled").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
    })
}

fn grants_json(client: &Client) -> Result<String, StoreError> {
    to_json(&client.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>())
}

#[async_trait]
impl ClientStore for Store {
    async fn insert_client(&self, c: &Client) -> Result<(), StoreError> {
        sqlx::query(&q(
            "INSERT INTO clients (id, name, secret_hash, grant_types, allowed_scopes, default_scopes, audience, \
             access_token_ttl, redirect_uris, post_logout_redirect_uris, first_party, disabled, created_at, \
             updated_at, dpop_bound_access_tokens, tls_client_auth_subject) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&c.id)
        .bind(&c.name)
        .bind(&c.secret_hash)
        .bind(grants_json(c)?)
        .bind(c.allowed_scopes.to_string())
        .bind(c.default_scopes.to_string())
        .bind(to_json(&c.audience)?)
        .bind(c.access_token_ttl.map(i64::from))
        .bind(to_json(&c.redirect_uris)?)
        .bind(to_json(&c.post_logout_redirect_uris)?)
        .bind(c.first_party)
        .bind(c.disabled)
        .bind(c.created_at)
        .bind(c.updated_at)
        .bind(c.dpop_bound_access_tokens)
        .bind(&c.tls_client_auth_subject)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        let row = sqlx::query(&q("SELECT * FROM clients WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows = sqlx::query(&q("SELECT * FROM clients ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn update_client(&self, c: &Client) -> Result<(), StoreError> {
        let done = sqlx::query(&q(
            "UPDATE clients SET name = ?, secret_hash = ?, grant_types = ?, allowed_scopes = ?, default_scopes = ?, \
             audience = ?, access_token_ttl = ?, redirect_uris = ?, post_logout_redirect_uris = ?, first_party = ?, \
             disabled = ?, updated_at = ?, dpop_bound_access_tokens = ?, tls_client_auth_subject = ? WHERE id = ?",
        ))
        .bind(&c.name)
        .bind(&c.secret_hash)
        .bind(grants_json(c)?)
        .bind(c.allowed_scopes.to_string())
        .bind(c.default_scopes.to_string())
        .bind(to_json(&c.audience)?)
        .bind(c.access_token_ttl.map(i64::from))
        .bind(to_json(&c.redirect_uris)?)
        .bind(to_json(&c.post_logout_redirect_uris)?)
        .bind(c.first_party)
        .bind(c.disabled)
        .bind(c.updated_at)
        .bind(c.dpop_bound_access_tokens)
        .bind(&c.tls_client_auth_subject)
        .bind(&c.id)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn delete_client(&self, id: &str) -> Result<(), StoreError> {
        let done = sqlx::query(&q("DELETE FROM clients WHERE id = ?"))
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn clients_version(&self) -> Result<i64, StoreError> {
        // Bumped by triggers on `clients` (migration 0011), so every writer counts.
        let row = sqlx::query(&q("SELECT version FROM change_counters WHERE name = 'clients'"))
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        row.try_get("version").map_err(map_err)
    }
}

fn key_from_row(row: &DbRow) -> Result<StoredKey, StoreError> {
    let alg: String = row.try_get("alg").map_err(map_err)?;
    let state: String = row.try_get("state").map_err(map_err)?;
    let jwk: String = row.try_get("public_jwk").map_err(map_err)?;
    Ok(StoredKey {
        kid: row.try_get("kid").map_err(map_err)?,
        alg: Algorithm::parse(&alg).ok_or_else(|| corrupt("key algorithm"))?,
        state: KeyState::parse(&state).ok_or_else(|| corrupt("key state"))?,
        public_jwk: serde_json::from_str::<Jwk>(&jwk).map_err(|_| corrupt("public_jwk"))?,
        sealed_private_key: row.try_get("sealed_private_key").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        activates_at: row.try_get("activates_at").map_err(map_err)?,
        retired_at: row.try_get("retired_at").map_err(map_err)?,
        purge_after: row.try_get("purge_after").map_err(map_err)?,
    })
}

#[async_trait]
impl KeyStore for Store {
    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query(&q("SELECT * FROM signing_keys ORDER BY created_at, kid"))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn insert_key(&self, k: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(&q(
            "INSERT INTO signing_keys (kid, alg, state, public_jwk, sealed_private_key, created_at, activates_at, \
             retired_at, purge_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&k.kid)
        .bind(k.alg.as_str())
        .bind(k.state.as_str())
        .bind(to_json(&k.public_jwk)?)
        .bind(&k.sealed_private_key)
        .bind(k.created_at)
        .bind(k.activates_at)
        .bind(k.retired_at)
        .bind(k.purge_after)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn update_key(&self, k: &StoredKey) -> Result<(), StoreError> {
        let done = sqlx::query(&q(
            "UPDATE signing_keys SET state = ?, sealed_private_key = ?, activates_at = ?, retired_at = ?, \
             purge_after = ? WHERE kid = ?",
        ))
        .bind(k.state.as_str())
        .bind(&k.sealed_private_key)
        .bind(k.activates_at)
        .bind(k.retired_at)
        .bind(k.purge_after)
        .bind(&k.kid)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn acquire_rotation_lease(&self, holder: &str, now: UnixTime, until: UnixTime) -> Result<bool, StoreError> {
        let done = sqlx::query(&q("INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE leases.expires_at <= ? OR leases.holder = excluded.holder"))
        .bind(ROTATION_LEASE)
        .bind(holder)
        .bind(until)
        .bind(now)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_rotation_lease(&self, holder: &str) -> Result<(), StoreError> {
        sqlx::query(&q("DELETE FROM leases WHERE name = ? AND holder = ?"))
            .bind(ROTATION_LEASE)
            .bind(holder)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

const ROTATION_LEASE: &str = "key_rotation";

#[async_trait]
impl RevocationStore for Store {
    async fn revoke(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError> {
        sqlx::query(&q("INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) \
             ON CONFLICT (jti) DO UPDATE SET expires_at = CASE WHEN excluded.expires_at > revoked_tokens.expires_at \
             THEN excluded.expires_at ELSE revoked_tokens.expires_at END"))
        .bind(jti)
        .bind(expires_at)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn is_revoked(&self, jti: &str, now: UnixTime) -> Result<bool, StoreError> {
        let row = sqlx::query(&q("SELECT 1 FROM revoked_tokens WHERE jti = ? AND expires_at > ?"))
            .bind(jti)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(row.is_some())
    }

    async fn list_active(&self, now: UnixTime) -> Result<Vec<(String, UnixTime)>, StoreError> {
        let rows = sqlx::query(&q("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > ?"))
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| Ok((r.try_get("jti").map_err(map_err)?, r.try_get("expires_at").map_err(map_err)?)))
            .collect()
    }

    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError> {
        let done = sqlx::query(&q("DELETE FROM revoked_tokens WHERE expires_at <= ?"))
            .bind(now)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

fn api_key_from_row(row: &DbRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: row.try_get("id").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        key_hash: row.try_get("key_hash").map_err(map_err)?,
        scopes: Scopes::parse(row.try_get("scopes").map_err(map_err)?).map_err(|_| corrupt("scopes"))?,
        roles: serde_json::from_str(row.try_get("roles").map_err(map_err)?).map_err(|_| corrupt("roles"))?,
        owner: row.try_get("owner").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        expires_at: row.try_get("expires_at").map_err(map_err)?,
        revoked_at: row.try_get("revoked_at").map_err(map_err)?,
        last_used_at: row.try_get("last_used_at").map_err(map_err)?,
        rotated_from: row.try_get("rotated_from").map_err(map_err)?,
    })
}

#[async_trait]
impl ApiKeyStore for Store {
    async fn insert_api_key(&self, k: &ApiKey) -> Result<(), StoreError> {
        sqlx::query(&q(
            "INSERT INTO api_keys (id, name, key_hash, scopes, roles, owner, created_at, expires_at, revoked_at, \
             last_used_at, rotated_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&k.id)
        .bind(&k.name)
        .bind(&k.key_hash)
        .bind(k.scopes.to_string())
        .bind(to_json(&k.roles)?)
        .bind(&k.owner)
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.revoked_at)
        .bind(k.last_used_at)
        .bind(&k.rotated_from)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let row = sqlx::query(&q("SELECT * FROM api_keys WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query(&q("SELECT * FROM api_keys ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn update_api_key(&self, k: &ApiKey) -> Result<(), StoreError> {
        let done = sqlx::query(&q("UPDATE api_keys SET expires_at = ?, revoked_at = ? WHERE id = ?"))
            .bind(k.expires_at)
            .bind(k.revoked_at)
            .bind(&k.id)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn touch_api_key(&self, id: &str, at: UnixTime) -> Result<(), StoreError> {
        sqlx::query(&q(
            "UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
        ))
        .bind(at)
        .bind(id)
        .bind(at)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait]
impl Health for Store {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query(&q("SELECT 1")).execute(&self.pool).await.map_err(map_err)?;
        Ok(())
    }
}
