//! Users and consents, SSO sessions, and the grant store (codes, families, refresh tokens,
//! family access tokens), on either SQL backend (compiled once per backend, see
//! `crate::sql`). The races that matter — first use of a code, rotation of a refresh token —
//! are single conditional `UPDATE`s, so the database decides who wins.

use async_trait::async_trait;
use domain::StoreError;
use domain::clock::UnixTime;
use domain::grant::{
    AuthCode, CodeRedemption, Consent, FamilyToken, GrantFamily, RefreshLookup, RefreshToken, Session,
};
use domain::pkce::CodeChallenge;
use domain::ports::{GrantStore, SessionStore, UserStore};
use domain::scope::Scopes;
use domain::user::User;
use sqlx::{Row as _, Transaction};

use super::{Db, DbRow, begin_write, q};
use crate::sql::{SqlStore, corrupt, map_err, to_json};

type Store = SqlStore<Db>;

fn get<'r, T: sqlx::Decode<'r, Db> + sqlx::Type<Db>>(row: &'r DbRow, col: &str) -> Result<T, StoreError> {
    row.try_get(col).map_err(map_err)
}

fn json_col<T: serde::de::DeserializeOwned>(row: &DbRow, col: &str) -> Result<T, StoreError> {
    serde_json::from_str(&get::<String>(row, col)?).map_err(|_| corrupt(col))
}

fn scope_col(row: &DbRow, col: &str) -> Result<Scopes, StoreError> {
    Scopes::parse(&get::<String>(row, col)?).map_err(|_| corrupt(col))
}

fn user_from_row(row: &DbRow) -> Result<User, StoreError> {
    Ok(User {
        id: get(row, "id")?,
        username: get(row, "username")?,
        email: get(row, "email")?,
        email_verified: get(row, "email_verified")?,
        name: get(row, "name")?,
        password_hash: get(row, "password_hash")?,
        roles: json_col(row, "roles")?,
        groups: json_col(row, "groups_")?,
        attributes: json_col(row, "attributes")?,
        disabled: get(row, "disabled")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn consent_from_row(row: &DbRow) -> Result<Consent, StoreError> {
    Ok(Consent {
        user_id: get(row, "user_id")?,
        client_id: get(row, "client_id")?,
        scope: scope_col(row, "scope")?,
        granted_at: get(row, "granted_at")?,
    })
}

#[async_trait]
impl UserStore for Store {
    async fn insert_user(&self, u: &User) -> Result<(), StoreError> {
        sqlx::query(&q(
            "INSERT INTO users (id, username, email, email_verified, name, password_hash, roles, groups_, \
             attributes, disabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&u.id)
        .bind(&u.username)
        .bind(&u.email)
        .bind(u.email_verified)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(to_json(&u.roles)?)
        .bind(to_json(&u.groups)?)
        .bind(to_json(&u.attributes)?)
        .bind(u.disabled)
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&q("SELECT * FROM users WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn get_user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        let row = sqlx::query(&q("SELECT * FROM users WHERE username = ?"))
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&q("SELECT * FROM users ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(user_from_row).collect()
    }

    async fn update_user(&self, u: &User) -> Result<(), StoreError> {
        let done = sqlx::query(&q(
            "UPDATE users SET username = ?, email = ?, email_verified = ?, name = ?, password_hash = ?, roles = ?, \
             groups_ = ?, attributes = ?, disabled = ?, updated_at = ? WHERE id = ?",
        ))
        .bind(&u.username)
        .bind(&u.email)
        .bind(u.email_verified)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(to_json(&u.roles)?)
        .bind(to_json(&u.groups)?)
        .bind(to_json(&u.attributes)?)
        .bind(u.disabled)
        .bind(u.updated_at)
        .bind(&u.id)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn delete_user(&self, id: &str) -> Result<(), StoreError> {
        let done =
            sqlx::query(&q("DELETE FROM users WHERE id = ?")).bind(id).execute(&self.writer).await.map_err(map_err)?;
        if done.rows_affected() == 0 { Err(StoreError::NotFound) } else { Ok(()) }
    }

    async fn get_consent(&self, user_id: &str, client_id: &str) -> Result<Option<Consent>, StoreError> {
        let row = sqlx::query(&q("SELECT * FROM consents WHERE user_id = ? AND client_id = ?"))
            .bind(user_id)
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(consent_from_row).transpose()
    }

    async fn put_consent(&self, c: &Consent) -> Result<(), StoreError> {
        sqlx::query(&q("INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at"))
        .bind(&c.user_id)
        .bind(&c.client_id)
        .bind(c.scope.to_string())
        .bind(c.granted_at)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn delete_consent(&self, user_id: &str, client_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&q("DELETE FROM consents WHERE user_id = ? AND client_id = ?"))
            .bind(user_id)
            .bind(client_id)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_consents(&self, user_id: &str) -> Result<Vec<Consent>, StoreError> {
        let rows = sqlx::query(&q("SELECT * FROM consents WHERE user_id = ? ORDER BY granted_at, client_id"))
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?;
        rows.iter().map(consent_from_row).collect()
    }
}

fn session_from_row(row: &DbRow) -> Result<Session, StoreError> {
    Ok(Session {
        id_hash: get(row, "id_hash")?,
        user_id: get(row, "user_id")?,
        auth_time: get(row, "auth_time")?,
        amr: json_col(row, "amr")?,
        created_at: get(row, "created_at")?,
        last_seen_at: get(row, "last_seen_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

#[async_trait]
impl SessionStore for Store {
    async fn insert_session(&self, s: &Session) -> Result<(), StoreError> {
        sqlx::query(&q(
            "INSERT INTO sessions (id_hash, user_id, auth_time, amr, created_at, last_seen_at, expires_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&s.id_hash)
        .bind(&s.user_id)
        .bind(s.auth_time)
        .bind(to_json(&s.amr)?)
        .bind(s.created_at)
        .bind(s.last_seen_at)
        .bind(s.expires_at)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_session(&self, id_hash: &str) -> Result<Option<Session>, StoreError> {
        let row = sqlx::query(&q("SELECT * FROM sessions WHERE id_hash = ?"))
            .bind(id_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(session_from_row).transpose()
    }

    async fn touch_session(&self, id_hash: &str, at: UnixTime) -> Result<(), StoreError> {
        sqlx::query(&q("UPDATE sessions SET last_seen_at = ? WHERE id_hash = ? AND last_seen_at < ?"))
            .bind(at)
            .bind(id_hash)
            .bind(at)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(&q("DELETE FROM sessions WHERE id_hash = ?"))
            .bind(id_hash)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected() > 0)
    }

    async fn list_user_sessions(&self, user_id: &str, now: UnixTime) -> Result<Vec<Session>, StoreError> {
        let rows =
            sqlx::query(&q("SELECT * FROM sessions WHERE user_id = ? AND expires_at > ? ORDER BY created_at DESC"))
                .bind(user_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
        rows.iter().map(session_from_row).collect()
    }

    async fn delete_user_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(&q("DELETE FROM sessions WHERE user_id = ?"))
            .bind(user_id)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }

    async fn purge_sessions(&self, now: UnixTime) -> Result<u64, StoreError> {
        let done = sqlx::query(&q("DELETE FROM sessions WHERE expires_at <= ?"))
            .bind(now)
            .execute(&self.writer)
            .await
            .map_err(map_err)?;
        Ok(done.rows_affected())
    }
}

fn family_from_row(row: &DbRow, prefix: &str) -> Result<GrantFamily, StoreError> {
    let c = |name: &str| format!("{prefix}{name}");
    Ok(GrantFamily {
        id: get(row, &c("id"))?,
        client_id: get(row, &c("client_id"))?,
        user_id: get(row, &c("user_id"))?,
        session_hash: get(row, &c("session_hash"))?,
        scope: scope_col(row, &c("scope"))?,
        auth_time: get(row, &c("auth_time"))?,
        amr: json_col(row, &c("amr"))?,
        created_at: get(row, &c("created_at"))?,
        expires_at: get(row, &c("expires_at"))?,
        revoked_at: get(row, &c("revoked_at"))?,
    })
}

fn code_from_row(row: &DbRow) -> Result<AuthCode, StoreError> {
    Ok(AuthCode {
        code_hash: get(row, "code_hash")?,
        family_id: get(row, "family_id")?,
        client_id: get(row, "client_id")?,
        redirect_uri: get(row, "redirect_uri")?,
        redirect_uri_given: get(row, "redirect_uri_given")?,
        challenge: CodeChallenge::from_stored(get(row, "challenge")?),
        nonce: get(row, "nonce")?,
        dpop_jkt: get(row, "dpop_jkt")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

const FAMILY_COLUMNS: &str = "f.id AS f_id, f.client_id AS f_client_id, f.user_id AS f_user_id, \
     f.session_hash AS f_session_hash, f.scope AS f_scope, f.auth_time AS f_auth_time, f.amr AS f_amr, \
     f.created_at AS f_created_at, f.expires_at AS f_expires_at, f.revoked_at AS f_revoked_at";

/// Revokes the families a `WHERE` clause selects and returns their live access tokens, in
/// one transaction.
async fn revoke_where(store: &Store, filter: &str, arg: &str, now: UnixTime) -> Result<Vec<FamilyToken>, StoreError> {
    let mut tx: Transaction<'_, Db> = begin_write(&store.writer).await?;
    let ids: Vec<String> = sqlx::query_scalar(&q(&format!("SELECT id FROM grant_families WHERE {filter}")))
        .bind(arg)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
    let mut tokens = Vec::new();
    for id in &ids {
        sqlx::query(&q("UPDATE grant_families SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"))
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        let rows = sqlx::query(&q("SELECT jti, expires_at FROM family_tokens WHERE family_id = ? AND expires_at > ?"))
            .bind(id)
            .bind(now)
            .fetch_all(&mut *tx)
            .await
            .map_err(map_err)?;
        for r in &rows {
            tokens.push(FamilyToken { jti: get(r, "jti")?, expires_at: get(r, "expires_at")? });
        }
    }
    tx.commit().await.map_err(map_err)?;
    Ok(tokens)
}

#[async_trait]
impl GrantStore for Store {
    async fn insert_family(&self, f: &GrantFamily) -> Result<(), StoreError> {
        sqlx::query(&q(
            "INSERT INTO grant_families (id, client_id, user_id, session_hash, scope, auth_time, amr, created_at, \
             expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&f.id)
        .bind(&f.client_id)
        .bind(&f.user_id)
        .bind(&f.session_hash)
        .bind(f.scope.to_string())
        .bind(f.auth_time)
        .bind(to_json(&f.amr)?)
        .bind(f.created_at)
        .bind(f.expires_at)
        .bind(f.revoked_at)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_family(&self, id: &str) -> Result<Option<GrantFamily>, StoreError> {
        let row = sqlx::query(&q(&format!("SELECT {FAMILY_COLUMNS} FROM grant_families f WHERE f.id = ?")))
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.as_ref().map(|r| family_from_row(r, "f_")).transpose()
    }

    async fn insert_code(&self, c: &AuthCode) -> Result<(), StoreError> {
        sqlx::query(&q(
            "INSERT INTO auth_codes (code_hash, family_id, client_id, redirect_uri, redirect_uri_given, challenge, \
             nonce, created_at, expires_at, dpop_jkt) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&c.code_hash)
        .bind(&c.family_id)
        .bind(&c.client_id)
        .bind(&c.redirect_uri)
        .bind(c.redirect_uri_given)
        .bind(c.challenge.as_str())
        .bind(&c.nonce)
        .bind(c.created_at)
        .bind(c.expires_at)
        .bind(&c.dpop_jkt)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn redeem_code(&self, code_hash: &str, now: UnixTime) -> Result<Option<CodeRedemption>, StoreError> {
        let claimed = sqlx::query(&q("UPDATE auth_codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL"))
            .bind(now)
            .bind(code_hash)
            .execute(&self.writer)
            .await
            .map_err(map_err)?
            .rows_affected()
            == 1;
        let row = sqlx::query(&q("SELECT * FROM auth_codes WHERE code_hash = ?"))
            .bind(code_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        let Some(code) = row.as_ref().map(code_from_row).transpose()? else { return Ok(None) };
        Ok(Some(if claimed { CodeRedemption::First(code) } else { CodeRedemption::Replayed(code) }))
    }

    async fn insert_refresh_token(&self, t: &RefreshToken) -> Result<(), StoreError> {
        sqlx::query(&q(
            "INSERT INTO refresh_tokens (token_hash, family_id, client_id, created_at, expires_at, used_at, successor, \
             dpop_jkt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(&t.token_hash)
        .bind(&t.family_id)
        .bind(&t.client_id)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.used_at)
        .bind(&t.successor)
        .bind(&t.dpop_jkt)
        .execute(&self.writer)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_refresh_token(&self, token_hash: &str) -> Result<Option<RefreshLookup>, StoreError> {
        let row = sqlx::query(&q(&format!(
            "SELECT r.*, {FAMILY_COLUMNS} FROM refresh_tokens r JOIN grant_families f ON f.id = r.family_id \
             WHERE r.token_hash = ?"
        )))
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        let Some(row) = row else { return Ok(None) };
        let token = RefreshToken {
            token_hash: get(&row, "token_hash")?,
            family_id: get(&row, "family_id")?,
            client_id: get(&row, "client_id")?,
            created_at: get(&row, "created_at")?,
            expires_at: get(&row, "expires_at")?,
            used_at: get(&row, "used_at")?,
            successor: get(&row, "successor")?,
            dpop_jkt: get(&row, "dpop_jkt")?,
        };
        Ok(Some(RefreshLookup { token, family: family_from_row(&row, "f_")? }))
    }

    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        now: UnixTime,
        sealed_successor: &[u8],
        successor: &RefreshToken,
    ) -> Result<bool, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        let claimed = sqlx::query(&q(
            "UPDATE refresh_tokens SET used_at = ?, successor = ? WHERE token_hash = ? AND used_at IS NULL",
        ))
        .bind(now)
        .bind(sealed_successor)
        .bind(old_hash)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected()
            == 1;
        if !claimed {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
        sqlx::query(&q(
            "INSERT INTO refresh_tokens (token_hash, family_id, client_id, created_at, expires_at, used_at, successor, \
             dpop_jkt) VALUES (?, ?, ?, ?, ?, NULL, NULL, ?)",
        ))
        .bind(&successor.token_hash)
        .bind(&successor.family_id)
        .bind(&successor.client_id)
        .bind(successor.created_at)
        .bind(successor.expires_at)
        .bind(&successor.dpop_jkt)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn record_access_token(&self, family_id: &str, token: &FamilyToken) -> Result<bool, StoreError> {
        let mut tx = begin_write(&self.writer).await?;
        // A no-op write that takes the family's row lock (PostgreSQL) and checks it is live:
        // a revocation that updated the row first makes this wait, then match nothing; one
        // that comes later waits for this transaction and then sees the token.
        let live = sqlx::query(&q("UPDATE grant_families SET revoked_at = NULL WHERE id = ? AND revoked_at IS NULL"))
            .bind(family_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected()
            == 1;
        if !live {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
        sqlx::query(&q(
            "INSERT INTO family_tokens (family_id, jti, expires_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(family_id)
        .bind(&token.jti)
        .bind(token.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn revoke_family(&self, family_id: &str, now: UnixTime) -> Result<Vec<FamilyToken>, StoreError> {
        revoke_where(self, "id = ?", family_id, now).await
    }

    async fn revoke_session_families(&self, session_hash: &str, now: UnixTime) -> Result<Vec<FamilyToken>, StoreError> {
        revoke_where(self, "session_hash = ? AND revoked_at IS NULL", session_hash, now).await
    }

    async fn revoke_user_families(&self, user_id: &str, now: UnixTime) -> Result<Vec<FamilyToken>, StoreError> {
        revoke_where(self, "user_id = ? AND revoked_at IS NULL", user_id, now).await
    }

    async fn revoke_client_families(&self, client_id: &str, now: UnixTime) -> Result<Vec<FamilyToken>, StoreError> {
        revoke_where(self, "client_id = ? AND revoked_at IS NULL", client_id, now).await
    }

    async fn purge_grants(&self, now: UnixTime) -> Result<u64, StoreError> {
        // Codes are kept an hour past expiry so a late replay is still recognised as one.
        let codes = sqlx::query(&q("DELETE FROM auth_codes WHERE expires_at <= ?"))
            .bind(now - 3600)
            .execute(&self.writer)
            .await
            .map_err(map_err)?
            .rows_affected();
        // Families a day past their end: their access tokens (at most a day long) are dead too.
        let families = sqlx::query(&q("DELETE FROM grant_families WHERE expires_at <= ?"))
            .bind(now - 86_400)
            .execute(&self.writer)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(codes + families)
    }
}
