//! IP bans, on either SQL backend (compiled once per backend, see `crate::sql`).

use std::net::IpAddr;

use async_trait::async_trait;
use domain::StoreError;
use domain::abuse::{Ban, BanStore};
use domain::clock::UnixTime;
use sqlx::Row as _;

use super::{Db, DbRow, q};
use crate::sql::{SqlStore, corrupt, map_err};

type Store = SqlStore<Db>;

fn ban_from_row(row: &DbRow) -> Result<Ban, StoreError> {
    let ip: String = row.try_get("ip").map_err(map_err)?;
    Ok(Ban {
        ip: ip.parse().map_err(|_| corrupt("ban address"))?,
        created_at: row.try_get("created_at").map_err(map_err)?,
        until: row.try_get("until").map_err(map_err)?,
        strikes: u32::try_from(row.try_get::<i64, _>("strikes").map_err(map_err)?).map_err(|_| corrupt("strikes"))?,
        reason: row.try_get("reason").map_err(map_err)?,
    })
}

#[async_trait]
impl BanStore for Store {
    async fn put_ban(&self, ban: &Ban) -> Result<(), StoreError> {
        sqlx::query(&q("INSERT INTO bans (ip, created_at, until, strikes, reason) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (ip) DO UPDATE SET created_at = excluded.created_at, until = excluded.until, \
             strikes = excluded.strikes, reason = excluded.reason"))
        .bind(ban.ip.to_string())
        .bind(ban.created_at)
        .bind(ban.until)
        .bind(i64::from(ban.strikes))
        .bind(&ban.reason)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_ban(&self, ip: IpAddr) -> Result<Option<Ban>, StoreError> {
        let row = sqlx::query(&q("SELECT * FROM bans WHERE ip = ?"))
            .bind(ip.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(ban_from_row).transpose()
    }

    async fn list_bans(&self, now: UnixTime) -> Result<Vec<Ban>, StoreError> {
        let rows = sqlx::query(&q("SELECT * FROM bans WHERE until > ? ORDER BY created_at DESC, ip"))
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(ban_from_row).collect()
    }

    async fn delete_ban(&self, ip: IpAddr) -> Result<bool, StoreError> {
        let done = sqlx::query(&q("DELETE FROM bans WHERE ip = ?"))
            .bind(ip.to_string())
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn purge_bans(&self, before: UnixTime) -> Result<u64, StoreError> {
        let done = sqlx::query(&q("DELETE FROM bans WHERE until < ?"))
            .bind(before)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}
