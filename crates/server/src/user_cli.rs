//! `portcullis user …`: people who sign in. Passwords are prompted without echo (or read
//! from standard input with `--password-stdin`, for scripts), hashed with argon2id, and
//! never printed. `logout-everywhere` is the incident command: every session and grant of
//! the user ends at once.

#![allow(clippy::print_stdout, reason = "printing results is what a CLI command does")]

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use clap::{Args, Subcommand};
use domain::signin::end_user_everywhere;
use domain::user::{User, check_email, check_names, new_user_id, normalize_username};
use serde_json::json;
use zeroize::Zeroizing;

use crate::app::Runtime;
use crate::cli::{CliError, JsonFlag, rfc3339};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is prompted (or read from stdin with --password-stdin).
    Create(CreateUser),
    /// List users.
    List(JsonFlag),
    /// Show one user.
    Show {
        username: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Set a new password; ends the user's sessions and grants.
    SetPassword {
        username: String,
        #[command(flatten)]
        password: PasswordInput,
    },
    /// Refuse the user's logins; ends every session and grant at once.
    Disable { username: String },
    /// Allow the user to sign in again.
    Enable { username: String },
    /// Show or change roles.
    Roles {
        username: String,
        /// Roles to add (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        add: Vec<String>,
        /// Roles to remove (repeat or comma-separate).
        #[arg(long, value_delimiter = ',')]
        remove: Vec<String>,
    },
    /// End every session and revoke every refresh and access token of the user, now.
    LogoutEverywhere { username: String },
    /// List the clients the user has consented to.
    Consents {
        username: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Withdraw the user's consent to a client (the consent page shows again).
    RevokeConsent {
        username: String,
        /// Client ids are base64url: one in 64 starts with '-'.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Delete a user with their sessions, consents and grants.
    Delete { username: String },
}

#[derive(Debug, Args)]
pub struct PasswordInput {
    /// Read the password from the first line of standard input instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Args)]
pub struct CreateUser {
    pub username: String,
    #[arg(long)]
    pub email: Option<String>,
    /// Mark the email address as verified.
    #[arg(long)]
    pub email_verified: bool,
    /// Display name.
    #[arg(long)]
    pub name: Option<String>,
    /// Roles (repeat or comma-separate).
    #[arg(long = "role", value_delimiter = ',')]
    pub roles: Vec<String>,
    /// Groups (repeat or comma-separate).
    #[arg(long = "group", value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Free-form attributes as a JSON object, e.g. '{"tenant":"acme"}'.
    #[arg(long)]
    pub attributes: Option<String>,
    #[command(flatten)]
    pub password: PasswordInput,
    #[command(flatten)]
    pub json: JsonFlag,
}

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::Usage(e.to_string())
}

pub async fn run(config: Config, command: UserCommand) -> Result<(), CliError> {
    let hasher = config.passwords.hasher().map_err(usage)?;
    let rt = Runtime::open(config).await?;
    match command {
        UserCommand::Create(args) => create(&rt, &hasher, args).await?,
        UserCommand::List(flag) => {
            let users = rt.stores.users.list_users().await?;
            if flag.json {
                println!("{}", json!(users.iter().map(user_json).collect::<Vec<_>>()));
            } else {
                println!("{:<24} {:<24} {:<9} ROLES", "ID", "USERNAME", "STATUS");
                for u in &users {
                    println!("{:<24} {:<24} {:<9} {}", u.id, u.username, status(u), u.roles.join(","));
                }
            }
        }
        UserCommand::Show { username, json } => {
            let u = find(&rt, &username).await?;
            if json.json {
                println!("{}", user_json(&u));
            } else {
                show(&u);
            }
        }
        UserCommand::SetPassword { username, password } => {
            let password = read_password(&password, true)?;
            let u = set_password(&rt, &hasher, &username, password).await?;
            println!("password of {} changed; their sessions and tokens are revoked", u.username);
        }
        UserCommand::Disable { username } => {
            let u = disable_user(&rt, &username).await?;
            println!("user {} is disabled; their sessions and tokens are revoked", u.username);
        }
        UserCommand::Enable { username } => {
            let u = set_disabled(&rt, &username, false).await?;
            println!("user {} is enabled", u.username);
        }
        UserCommand::Roles { username, add, remove } => roles(&rt, &username, &add, &remove).await?,
        UserCommand::LogoutEverywhere { username } => {
            let u = find(&rt, &username).await?;
            let out = end_everything(&rt, &u).await?;
            println!(
                "ended {} session(s) of {}; revoked their refresh tokens and {} live access token(s)",
                out.sessions, u.username, out.revoked_access_tokens
            );
        }
        UserCommand::Consents { username, json } => consents(&rt, &username, json.json).await?,
        UserCommand::RevokeConsent { username, client_id } => {
            let u = revoke_consent(&rt, &username, &client_id).await?;
            println!("withdrew the consent of {} to {client_id}", u.username);
        }
        UserCommand::Delete { username } => {
            let u = delete_user(&rt, &username).await?;
            println!("deleted user {}", u.username);
        }
    }
    Ok(())
}

async fn create(rt: &Runtime, hasher: &domain::password::PasswordHasher, args: CreateUser) -> Result<(), CliError> {
    let attributes = match args.attributes.as_deref() {
        None => serde_json::Map::new(),
        Some(raw) => match serde_json::from_str(raw) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err(usage(domain::user::UserError::BadAttributes)),
        },
    };
    let password = read_password(&args.password, true)?;
    let spec = NewUser {
        username: args.username,
        password,
        email: args.email,
        email_verified: args.email_verified,
        name: args.name,
        roles: args.roles,
        groups: args.groups,
        attributes,
    };
    let user = create_user(rt, hasher, spec).await?;
    if args.json.json {
        println!("{}", user_json(&user));
    } else {
        println!("created user {} (id {})", user.username, user.id);
    }
    Ok(())
}

/// A user to create; also the admin API's `POST /admin/users` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    /// At least 12 characters; only its argon2id hash is stored.
    #[serde(deserialize_with = "zeroizing")]
    pub password: Zeroizing<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_verified: bool,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn zeroizing<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Zeroizing<String>, D::Error> {
    <String as serde::Deserialize>::deserialize(d).map(Zeroizing::new)
}

/// Creates a user; the password is checked and hashed.
pub(crate) async fn create_user(
    rt: &Runtime,
    hasher: &domain::password::PasswordHasher,
    spec: NewUser,
) -> Result<User, CliError> {
    let now = rt.clock.now();
    let username = normalize_username(&spec.username).map_err(usage)?;
    let email = spec.email.as_deref().map(check_email).transpose().map_err(usage)?;
    let password = check(spec.password)?;
    let user = User {
        id: new_user_id(),
        username,
        email,
        email_verified: spec.email_verified,
        name: spec.name,
        password_hash: hasher.hash(password).await.map_err(|e| usage(e.description))?,
        roles: check_names(&spec.roles).map_err(usage)?,
        groups: check_names(&spec.groups).map_err(usage)?,
        attributes: spec.attributes,
        disabled: false,
        created_at: now,
        updated_at: now,
    };
    rt.stores.users.insert_user(&user).await.map_err(|e| match e {
        domain::StoreError::Conflict(_) => usage(format!("user {:?} exists", user.username)),
        other => CliError::Store(other),
    })?;
    audit("admin.user.created", &user);
    Ok(user)
}

async fn consents(rt: &Runtime, username: &str, as_json: bool) -> Result<(), CliError> {
    let u = find(rt, username).await?;
    let consents = rt.stores.users.list_consents(&u.id).await?;
    if as_json {
        println!("{}", consents_json(rt, username).await?);
    } else {
        for c in &consents {
            println!("{:<24} {:<21} {}", c.client_id, rfc3339(c.granted_at), c.scope);
        }
    }
    Ok(())
}

async fn roles(rt: &Runtime, username: &str, add: &[String], remove: &[String]) -> Result<(), CliError> {
    let u = change_roles(rt, username, add, remove).await?;
    println!("{}", u.roles.join(","));
    Ok(())
}

/// Adds and removes roles; returns the user as changed.
pub(crate) async fn change_roles(
    rt: &Runtime,
    username: &str,
    add: &[String],
    remove: &[String],
) -> Result<User, CliError> {
    let mut u = find(rt, username).await?;
    if !add.is_empty() || !remove.is_empty() {
        let add = check_names(add).map_err(usage)?;
        u.roles.retain(|r| !remove.contains(r));
        u.roles.extend(add.into_iter().filter(|a| !u.roles.contains(a)).collect::<Vec<_>>());
        u.updated_at = rt.clock.now();
        rt.stores.users.update_user(&u).await?;
        audit("admin.user.roles_changed", &u);
    }
    Ok(u)
}

/// Sets a new password (checked, argon2id) and ends the user's sessions and grants.
pub(crate) async fn set_password(
    rt: &Runtime,
    hasher: &domain::password::PasswordHasher,
    username: &str,
    password: Zeroizing<String>,
) -> Result<User, CliError> {
    let mut u = find(rt, username).await?;
    let password = check(password)?;
    u.password_hash = hasher.hash(password).await.map_err(|e| usage(e.description))?;
    u.updated_at = rt.clock.now();
    rt.stores.users.update_user(&u).await?;
    audit("admin.user.password_set", &u);
    end_everything(rt, &u).await?;
    Ok(u)
}

/// Withdraws a user's consent to a client (the consent page shows again).
pub(crate) async fn revoke_consent(rt: &Runtime, username: &str, client_id: &str) -> Result<User, CliError> {
    let u = find(rt, username).await?;
    if !rt.stores.users.delete_consent(&u.id, client_id).await? {
        return Err(CliError::NotFound(format!("{} has not consented to client {client_id:?}", u.username)));
    }
    tracing::info!(target: "portcullis::audit", event = "admin.user.consent_revoked", user_id = %u.id, client_id = %client_id, "consent withdrawn");
    Ok(u)
}

/// A user's remembered consents.
pub(crate) async fn consents_json(rt: &Runtime, username: &str) -> Result<serde_json::Value, CliError> {
    let u = find(rt, username).await?;
    let consents = rt.stores.users.list_consents(&u.id).await?;
    Ok(json!(
        consents
            .iter()
            .map(|c| json!({ "client_id": c.client_id, "scope": c.scope.to_string(), "granted_at": c.granted_at }))
            .collect::<Vec<_>>()
    ))
}

/// Deletes a user with their sessions, consents and grants.
pub(crate) async fn delete_user(rt: &Runtime, username: &str) -> Result<User, CliError> {
    let u = find(rt, username).await?;
    end_everything(rt, &u).await?;
    rt.stores.users.delete_user(&u.id).await?;
    audit("admin.user.deleted", &u);
    Ok(u)
}

/// Refuses the user's sign-ins and ends every session and grant at once.
pub(crate) async fn disable_user(rt: &Runtime, username: &str) -> Result<User, CliError> {
    let u = set_disabled(rt, username, true).await?;
    end_everything(rt, &u).await?;
    Ok(u)
}

pub(crate) async fn find(rt: &Runtime, username: &str) -> Result<User, CliError> {
    let name = normalize_username(username).map_err(usage)?;
    rt.stores.users.get_user_by_username(&name).await?.ok_or_else(|| CliError::NotFound(format!("no user {name:?}")))
}

pub(crate) async fn set_disabled(rt: &Runtime, username: &str, disabled: bool) -> Result<User, CliError> {
    let mut u = find(rt, username).await?;
    u.disabled = disabled;
    u.updated_at = rt.clock.now();
    rt.stores.users.update_user(&u).await?;
    audit(if disabled { "admin.user.disabled" } else { "admin.user.enabled" }, &u);
    Ok(u)
}

pub(crate) async fn end_everything(rt: &Runtime, u: &User) -> Result<domain::signin::LoggedOut, CliError> {
    let (out, tokens) = end_user_everywhere(&rt.stores, &u.id, rt.clock.now())
        .await
        .map_err(|e| usage(format!("{}: {}", e.description, e.cause.unwrap_or_default())))?;
    rt.announce_revoked(tokens).await;
    Ok(out)
}

fn audit(event: &'static str, u: &User) {
    tracing::info!(target: "portcullis::audit", event, user_id = %u.id, username = %u.username, "user changed");
}

/// Reads a password: from stdin's first line with `--password-stdin`, else prompted twice
/// on the terminal with echo off.
fn read_password(input: &PasswordInput, confirm: bool) -> Result<Zeroizing<String>, CliError> {
    let stdin = std::io::stdin();
    if input.password_stdin || !stdin.is_terminal() {
        let mut line = Zeroizing::new(String::new());
        stdin.lock().read_line(&mut line).map_err(usage)?;
        let trimmed = Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned());
        return check(trimmed);
    }
    let first = prompt("Password: ")?;
    if confirm {
        let second = prompt("Repeat password: ")?;
        if *first != *second {
            return Err(usage("the passwords do not match"));
        }
    }
    check(first)
}

fn check(password: Zeroizing<String>) -> Result<Zeroizing<String>, CliError> {
    domain::password::PasswordHasher::check_policy(&password).map_err(usage)?;
    Ok(password)
}

fn prompt(label: &str) -> Result<Zeroizing<String>, CliError> {
    let mut err = std::io::stderr();
    let _ = write!(err, "{label}");
    let _ = err.flush();
    let echo_off = std::process::Command::new("stty").arg("-echo").status().is_ok_and(|s| s.success());
    let mut line = Zeroizing::new(String::new());
    let read = std::io::stdin().lock().read_line(&mut line);
    if echo_off {
        let _ = std::process::Command::new("stty").arg("echo").status();
    }
    let _ = writeln!(err);
    read.map_err(usage)?;
    Ok(Zeroizing::new(line.trim_end_matches(['\r', '\n']).to_owned()))
}

fn status(u: &User) -> &'static str {
    if u.disabled { "disabled" } else { "active" }
}

pub(crate) fn user_json(u: &User) -> serde_json::Value {
    json!({
        "id": u.id,
        "username": u.username,
        "email": u.email,
        "email_verified": u.email_verified,
        "name": u.name,
        "status": status(u),
        "roles": u.roles,
        "groups": u.groups,
        "attributes": u.attributes,
        "created_at": u.created_at,
        "updated_at": u.updated_at,
    })
}

fn show(u: &User) {
    println!("id:         {}", u.id);
    println!("username:   {}", u.username);
    println!("email:      {}{}", u.email.as_deref().unwrap_or("-"), if u.email_verified { " (verified)" } else { "" });
    println!("name:       {}", u.name.as_deref().unwrap_or("-"));
    println!("status:     {}", status(u));
    println!("roles:      {}", u.roles.join(","));
    println!("groups:     {}", u.groups.join(","));
    println!("attributes: {}", serde_json::Value::Object(u.attributes.clone()));
    println!("created_at: {}", rfc3339(u.created_at));
}
