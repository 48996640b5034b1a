//! Backend-for-frontend sessions, on either SQL backend (compiled once per backend, see
//! `crate::sql`). The tokens arrive sealed; this layer never sees them in clear.

use async_trait::async_trait;
use domain::StoreError;
use domain::bff::{BffSession, BffSessionStore};
use domain::clock::UnixTime;
use sqlx::Row as _;

use super::{Db, DbRow, q};
use crate::sql::{SqlStore, map_err};

type Store = SqlStore<Db>;

fn session_from_row(row: &DbRow) -> Result<BffSession, StoreError> {
    Ok(BffSession {
        id_hash: row.try_get("id_hash").map_err(map_err)?,
        app: row.try_get("app").map_err(map_err)?,
        subject: row.try_get("subject").map_err(map_err)?,
        sealed: row.try_get("sealed").map_err(map_err)?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        last_seen_at: row.try_get("last_seen_at").map_err(map_err)?,
        expires_at: row.try_get("expires_at").map_err(map_err)?,
    })
}

#[async_trait]
impl BffSessionStore for Store {
    async fn insert_bff_session(&self, s: &BffSession) -> Result<(), StoreError> {
        sqlx::query(&q(
            "INSERT INTO bff_sessions (id_hash, app, subject, sealed, created_at, last_seen_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&s.id_hash)
        .bind(&s.app)
        .bind(&s.subject)
        .bind(&s.sealed)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_bff_session(&self, id_hash: &str) -> Result<Option<BffSession>, StoreError> {
        let row = sqlx::query(&q("SELECT * FROM bff_sessions WHERE id_hash = ?"))
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn update_bff_session(
        &self,
        id_hash: &str,
        sealed: &[u8],
        last_seen_at: UnixTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&q("UPDATE bff_sessions SET sealed = ?, last_seen_at = ? WHERE id_hash = ?"))
            .bind(sealed)
            .bind(last_seen_at)
            .bind(id_hash)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_bff_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&q("DELETE FROM bff_sessions WHERE id_hash = ?"))
            .bind(id_hash)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_user_bff_sessions(&self, subject: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(&q("DELETE FROM bff_sessions WHERE subject = ?"))
            .bind(subject)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn purge_bff_sessions(&self, now: UnixTime) -> Result<u64, StoreError> {
        let done = sqlx::query(&q("DELETE FROM bff_sessions WHERE expires_at <= ?"))
            .bind(now)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}
