//! The SQLite adapter (the embedded default): every domain port on `sqlx` pools, WAL
//! journal so the CLI and a running server can share the file, migrations embedded in the
//! binary. Reads use a pool of connections; every write goes through one dedicated writer
//! connection, so writers queue in the process (cheap, async) instead of colliding on
//! SQLite's single write lock and backing off in its busy handler (sleeps of milliseconds).

use std::path::Path;
use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use domain::StoreError;
use domain::apikey::ApiKey;
use domain::client::{Client, GrantType};
use domain::clock::UnixTime;
use domain::jose::{Algorithm, Jwk};
use domain::keys::{KeyState, StoredKey};
use domain::ports::{ApiKeyStore, ClientStore, Health, KeyStore, RevocationStore, Stores};
use domain::scope::Scopes;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row as _, SqlitePool};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// All ports backed by one SQLite database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Readers.
    pub(crate) pool: SqlitePool,
    /// The one writer connection (the same pool as `pool` for an in-memory database).
    pub(crate) writer: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and runs pending migrations.
    ///
    /// # Errors
    /// `Unavailable` when the file cannot be opened or migrated.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(map_err)?;
        MIGRATOR.run(&writer).await.map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(map_err)?;
        Ok(Self { pool, writer })
    }

    /// A private in-memory database (one connection, so every query sees the same data).
    ///
    /// # Errors
    /// `Unavailable` if SQLite cannot start.
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(map_err)?.foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        MIGRATOR.run(&pool).await.map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        Ok(Self { writer: pool.clone(), pool })
    }

    /// Every port, served by this store.
    #[must_use]
    pub fn stores(self: Arc<Self>) -> Stores {
        Stores {
            clients: self.clone(),
            keys: self.clone(),
            revocations: self.clone(),
            api_keys: self.clone(),
            users: self.clone(),
            sessions: self.clone(),
            grants: self.clone(),
            bans: self.clone(),
            health: self,
        }
    }
}

/// Maps driver errors onto the port's error model.
pub(crate) fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(db.message().to_owned()),
        sqlx::Error::RowNotFound => StoreError::NotFound,
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::TypeNotFound { .. } => {
            StoreError::Corrupt(e.to_string())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

pub(crate) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unreadable {what}"))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn client_from_row(row: &SqliteRow) -> Result<Client, StoreError> {
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
        disabled: row.try_get("disabled").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        updated_at: row.try_get("updated_at").map_err(map_err)?,
    })
}

fn grants_json(client: &Client) -> Result<String, StoreError> {
    to_json(&client.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>())
}

#[async_trait]
impl ClientStore for SqliteStore {
    async fn insert_client(&self, c: &Client) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO clients (id, name, secret_hash, grant_types, allowed_scopes, default_scopes, audience, \
             access_token_ttl, redirect_uris, post_logout_redirect_uris, first_party, disabled, created_at, \
             updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
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
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> Result<Option<Client>, StoreError> {
        let row = sqlx::query("SELECT * FROM clients WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(client_from_row).transpose()
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        let rows = sqlx::query("SELECT * FROM clients ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(client_from_row).collect()
    }

    async fn update_client(&self, c: &Client) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE clients SET name = ?, secret_hash = ?, grant_types = ?, allowed_scopes = ?, default_scopes = ?, \
             audience = ?, access_token_ttl = ?, redirect_uris = ?, post_logout_redirect_uris = ?, first_party = ?, \
             disabled = ?, updated_at = ? WHERE id = ?",
        )
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
        .bind(&c.id)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn delete_client(&self, id: &str) -> Result<(), StoreError> {
        let done =
            sqlx::query("DELETE FROM clients WHERE id = ?").bind(id).execute(&self.writer).await.map_err(map_err)?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }
}

fn key_from_row(row: &SqliteRow) -> Result<StoredKey, StoreError> {
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
impl KeyStore for SqliteStore {
    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at, kid")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn insert_key(&self, k: &StoredKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, state, public_jwk, sealed_private_key, created_at, activates_at, \
             retired_at, purge_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
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
        let done = sqlx::query(
            "UPDATE signing_keys SET state = ?, sealed_private_key = ?, activates_at = ?, retired_at = ?, \
             purge_after = ? WHERE kid = ?",
        )
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
}

#[async_trait]
impl RevocationStore for SqliteStore {
    async fn revoke(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES (?, ?) \
             ON CONFLICT (jti) DO UPDATE SET expires_at = MAX(expires_at, excluded.expires_at)",
        )
        .bind(jti)
        .bind(expires_at)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn is_revoked(&self, jti: &str, now: UnixTime) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM revoked_tokens WHERE jti = ? AND expires_at > ?")
            .bind(jti)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(row.is_some())
    }

    async fn list_active(&self, now: UnixTime) -> Result<Vec<(String, UnixTime)>, StoreError> {
        let rows = sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at > ?")
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter()
            .map(|r| Ok((r.try_get("jti").map_err(map_err)?, r.try_get("expires_at").map_err(map_err)?)))
            .collect()
    }

    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM revoked_tokens WHERE expires_at <= ?")
            .bind(now)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

fn api_key_from_row(row: &SqliteRow) -> Result<ApiKey, StoreError> {
    Ok(ApiKey {
        id: row.try_get("id").map_err(map_err)?,
        name: row.try_get("name").map_err(map_err)?,
        key_hash: row.try_get("key_hash").map_err(map_err)?,
        scopes: Scopes::parse(row.try_get("scopes").map_err(map_err)?).map_err(|_| corrupt("scopes"))?,
        roles: serde_json::from_str(row.try_get("roles").map_err(map_err)?).map_err(|_| corrupt("roles"))?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        expires_at: row.try_get("expires_at").map_err(map_err)?,
        revoked_at: row.try_get("revoked_at").map_err(map_err)?,
        last_used_at: row.try_get("last_used_at").map_err(map_err)?,
        rotated_from: row.try_get("rotated_from").map_err(map_err)?,
    })
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn insert_api_key(&self, k: &ApiKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, name, key_hash, scopes, roles, created_at, expires_at, revoked_at, \
             last_used_at, rotated_from) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&k.id)
        .bind(&k.name)
        .bind(&k.key_hash)
        .bind(k.scopes.to_string())
        .bind(to_json(&k.roles)?)
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
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn update_api_key(&self, k: &ApiKey) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE api_keys SET expires_at = ?, revoked_at = ? WHERE id = ?")
            .bind(k.expires_at)
            .bind(k.revoked_at)
            .bind(&k.id)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn touch_api_key(&self, id: &str, at: UnixTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)")
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
impl Health for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(map_err)?;
        Ok(())
    }
}
