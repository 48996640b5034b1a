//! The command line: `serve`, `client …`, `keys …`, `config check`. Operator output goes
//! to stdout (JSON with `--json`, for scripts); logs go to stderr.

#![allow(clippy::print_stdout, reason = "printing results is what a CLI command does")]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use domain::client::{Client, ClientRegistration, GrantType, new_secret};
use domain::scope::Scopes;
use domain::secret;
use serde_json::json;

use crate::app::{Runtime, StartupError};
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about = "OAuth 2.1 / OpenID Connect authorization server and API gateway")]
pub struct Cli {
    /// Configuration file (TOML). Environment variables PORTCULLIS_<SECTION>__<KEY> override it.
    #[arg(long, short, global = true, env = "PORTCULLIS_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve,
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage users (people who sign in).
    #[command(subcommand)]
    User(crate::user_cli::UserCommand),
    /// Manage API keys for the gateway.
    #[command(subcommand)]
    Apikey(crate::apikey_cli::ApiKeyCommand),
    /// Validate and test Cedar policies.
    #[command(subcommand)]
    Policy(crate::authz::PolicyCommand),
    /// Manage IP bans (made after repeated authentication failures, or by hand).
    #[command(subcommand)]
    Ban(crate::ban_cli::BanCommand),
    /// Incident response: revoke everything of a user or a client, or a compromised
    /// signing key, at once and everywhere; list a user's sessions.
    #[command(subcommand)]
    Incident(crate::incident_cli::IncidentCommand),
    /// The stored audit trail: verify its hash chain, tail it, search it.
    #[command(subcommand)]
    Audit(crate::audit_cli::AuditCommand),
    /// TLS tools.
    #[command(subcommand)]
    Tls(TlsCommand),
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Apply pending database migrations (`serve` does it by itself unless
    /// `database.migrate = "check"`).
    Migrate {
        /// Only report pending migrations; exit 1 when there are any.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum TlsCommand {
    /// Create a self-signed certificate for local development (ECDSA P-256, 90 days).
    DevCert {
        /// Directory for cert.pem and key.pem (default: <data_dir>/tls).
        #[arg(long)]
        out: Option<PathBuf>,
        /// DNS names and IP addresses the certificate is for (repeatable).
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1", "::1"])]
        hosts: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; prints its id and secret (the secret is shown only this once).
    Create(CreateClient),
    /// List clients.
    List(JsonFlag),
    /// Show one client.
    Show {
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Refuse all further requests of a client.
    Disable {
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Re-enable a disabled client.
    Enable {
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Issue a new secret (the old one stops working at once); prints it once.
    RotateSecret {
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete a client.
    Delete {
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
    /// Change a registered client's settings (only the ones given).
    Update {
        #[arg(allow_hyphen_values = true)]
        id: String,
        /// DPoP mandatory for this client's token requests (RFC 9449 §5.2
        /// `dpop_bound_access_tokens`): true or false. Tokens already issued keep their binding.
        #[arg(long, value_name = "true|false", action = clap::ArgAction::Set)]
        dpop_bound: Option<bool>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Default, Args)]
pub struct JsonFlag {
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `client create`'s arguments; also the admin API's `POST /admin/clients` body.
#[derive(Debug, Args, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateClient {
    #[arg(long)]
    pub name: String,
    /// Grant type(s): client_credentials, authorization_code, refresh_token (repeat or
    /// comma-separate for several).
    #[arg(long = "grant", value_delimiter = ',', required = true)]
    pub grants: Vec<String>,
    /// Redirect URI for authorization_code (repeatable); compared byte for byte.
    #[arg(long = "redirect-uri")]
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where RP-initiated logout may return to (repeatable).
    #[arg(long = "post-logout-redirect-uri")]
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// A public client (SPA, native app): no secret; PKCE protects its codes.
    #[arg(long)]
    #[serde(default)]
    pub public: bool,
    /// A first-party client: users are not asked for consent.
    #[arg(long)]
    #[serde(default)]
    pub first_party: bool,
    /// Space-separated scopes the client may request.
    #[arg(long, default_value = "")]
    #[serde(default)]
    pub scope: String,
    /// Scopes granted when a request names none (default: all allowed scopes).
    #[arg(long)]
    #[serde(default)]
    pub default_scope: Option<String>,
    /// Audience(s) of the client's access tokens (repeatable).
    #[arg(long = "audience")]
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Access-token lifetime for this client, in seconds (default: tokens.access_token_ttl).
    #[arg(long)]
    #[serde(default)]
    pub token_ttl: Option<u32>,
    /// Refuse this client's token requests without a DPoP proof (RFC 9449): its access
    /// tokens are always bound to its key.
    #[arg(long)]
    #[serde(default)]
    pub dpop_bound: bool,
    /// Authenticate the client by its TLS client certificate instead of a secret
    /// (RFC 8705 `tls_client_auth`): the certificate's subject (first SAN URI, else SAN
    /// DNS name, else CN). Its access tokens are bound to the certificate.
    #[arg(long)]
    #[serde(default)]
    pub tls_client_auth_subject: Option<String>,
    #[serde(skip)]
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys and their states.
    List(JsonFlag),
    /// Announce a successor key; it starts signing after the announcement period.
    Rotate,
    /// Retire a key now (it stays published until the tokens it signed expire).
    Retire {
        // Key ids and client ids are base64url: one in 64 starts with '-'.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration file (default: --config) and report every problem.
    Check { file: Option<PathBuf> },
}

/// A failed command: what to print, and the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Store(#[from] domain::StoreError),
    #[error("{0}")]
    Keys(#[from] domain::keyring::KeyRingError),
    /// A check that found a problem (exit status 1).
    #[error("{0}")]
    Failed(String),
    /// No such client, user, ban, … (exit status 2, like a usage error).
    #[error("{0}")]
    NotFound(String),
}

pub async fn client(config: Config, command: ClientCommand) -> Result<(), CliError> {
    let rt = Runtime::open(config).await?;
    let store = &rt.stores.clients;
    match command {
        ClientCommand::Create(args) => create_client(&rt, args).await?,
        ClientCommand::List(flag) => {
            let clients = store.list_clients().await?;
            if flag.json {
                println!("{}", json!(clients.iter().map(client_json).collect::<Vec<_>>()));
            } else {
                println!("{:<24} {:<20} {:<9} {:<22} SCOPES", "ID", "NAME", "STATUS", "GRANTS");
                for c in &clients {
                    println!("{:<24} {:<20} {:<9} {:<22} {}", c.id, c.name, status(c), grants(c), c.allowed_scopes);
                }
            }
        }
        ClientCommand::Show { id, json } => {
            let c = crate::ops::find_client(&rt, &id).await?;
            if json.json {
                println!("{}", client_json(&c));
            } else {
                show_client(&c);
            }
        }
        ClientCommand::Disable { id } => set_disabled(&rt, &id, true).await?,
        ClientCommand::Enable { id } => set_disabled(&rt, &id, false).await?,
        ClientCommand::RotateSecret { id, json } => rotate_secret(&rt, &id, json.json).await?,
        ClientCommand::Delete { id } => {
            delete_client(&rt, &id).await?;
            println!("deleted client {id}");
        }
        ClientCommand::Update { id, dpop_bound, json } => {
            let c = update_client(&rt, &id, dpop_bound).await?;
            if json.json {
                println!("{}", client_json(&c));
            } else {
                show_client(&c);
            }
        }
    }
    Ok(())
}

async fn create_client(rt: &Runtime, args: CreateClient) -> Result<(), CliError> {
    let as_json = args.json.json;
    let (client, secret) = register_client(rt, args).await?;
    match secret {
        Some(secret) => print_secret(&client.id, &secret, as_json),
        None if as_json => println!("{}", json!({ "client_id": client.id })),
        None => println!("client_id:     {}\n\nA public client: no secret; it must use PKCE (S256).", client.id),
    }
    Ok(())
}

/// Registers a client; returns it and its secret (to show once; none for public clients).
pub(crate) async fn register_client(
    rt: &Runtime,
    args: CreateClient,
) -> Result<(Client, Option<zeroize::Zeroizing<String>>), CliError> {
    let mut registration = registration(
        args.name,
        args.grants,
        &args.scope,
        args.default_scope.as_deref(),
        args.audiences,
        args.token_ttl,
    )?;
    registration.redirect_uris = args.redirect_uris;
    registration.post_logout_redirect_uris = args.post_logout_redirect_uris;
    registration.public = args.public;
    registration.first_party = args.first_party;
    registration.dpop_bound_access_tokens = args.dpop_bound;
    registration.tls_client_auth_subject = args.tls_client_auth_subject;
    let (client, secret) = registration.into_client(rt.clock.now()).map_err(|e| {
        let detail = e.cause.as_deref().map(|c| format!(": {c}")).unwrap_or_default();
        CliError::Usage(format!("{}{detail}", e.description))
    })?;
    rt.stores.clients.insert_client(&client).await?;
    rt.announce_client_changed(&client.id).await;
    tracing::info!(target: "portcullis::audit", event = "admin.client.created", client_id = %client.id, "client created");
    Ok((client, secret.map(|s| s.0)))
}

/// Deletes a client; its users' grants die with it, their live access tokens go on the
/// blocklist.
pub(crate) async fn delete_client(rt: &Runtime, id: &str) -> Result<(), CliError> {
    let tokens = rt.stores.grants.revoke_client_families(id, rt.clock.now()).await?;
    rt.blocklist(tokens).await?;
    rt.stores.clients.delete_client(id).await.map_err(|e| not_found(e, id))?;
    rt.announce_client_changed(id).await;
    tracing::info!(target: "portcullis::audit", event = "admin.client.deleted", client_id = %id, "client deleted");
    Ok(())
}

async fn rotate_secret(rt: &Runtime, id: &str, as_json: bool) -> Result<(), CliError> {
    let secret = new_client_secret(rt, id).await?;
    print_secret(id, &secret, as_json);
    Ok(())
}

/// Issues a new secret for a confidential client (the old one stops working at once).
pub(crate) async fn new_client_secret(rt: &Runtime, id: &str) -> Result<zeroize::Zeroizing<String>, CliError> {
    let secret = new_secret();
    let c = crate::ops::change_client(rt, id, |c| {
        if c.is_public() {
            return Err(CliError::Usage(format!("client {id} is public and has no secret")));
        }
        c.secret_hash = Some(secret::hash_secret(&secret.0));
        Ok(())
    })
    .await?;
    tracing::info!(target: "portcullis::audit", event = "admin.client.secret_rotated", client_id = %c.id, "client secret rotated");
    Ok(secret.0)
}

fn registration(
    name: String,
    grants: Vec<String>,
    scope: &str,
    default_scope: Option<&str>,
    audience: Vec<String>,
    access_token_ttl: Option<u32>,
) -> Result<ClientRegistration, CliError> {
    let grant_types = grants
        .iter()
        .map(|g| {
            GrantType::parse(g.trim()).ok_or_else(|| {
                CliError::Usage(format!(
                    "unsupported grant type {g:?} (supported: client_credentials, authorization_code, refresh_token)"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let parse = |s: &str| Scopes::parse(s).map_err(|e| CliError::Usage(e.to_string()));
    Ok(ClientRegistration {
        name,
        grant_types,
        allowed_scopes: parse(scope)?,
        default_scopes: default_scope.map(parse).transpose()?,
        audience,
        access_token_ttl,
        ..ClientRegistration::default()
    })
}

/// Applies the settings given; running servers drop the client from their caches.
async fn update_client(rt: &Runtime, id: &str, dpop_bound: Option<bool>) -> Result<Client, CliError> {
    let Some(dpop_bound) = dpop_bound else {
        return Err(CliError::Usage("nothing to update: give --dpop-bound true|false".into()));
    };
    let c = crate::ops::change_client(rt, id, |c| {
        c.dpop_bound_access_tokens = dpop_bound;
        Ok(())
    })
    .await?;
    tracing::info!(
        target: "portcullis::audit", event = "admin.client.updated", client_id = %c.id,
        dpop_bound_access_tokens = dpop_bound, "client updated"
    );
    Ok(c)
}

async fn set_disabled(rt: &Runtime, id: &str, disabled: bool) -> Result<(), CliError> {
    let c = crate::ops::set_client_disabled(rt, id, disabled).await?;
    println!("client {id} is now {}", status(&c));
    Ok(())
}

fn not_found(e: domain::StoreError, id: &str) -> CliError {
    match e {
        domain::StoreError::NotFound => CliError::NotFound(format!("no client with id {id:?}")),
        other => CliError::Store(other),
    }
}

fn print_secret(id: &str, secret: &str, as_json: bool) {
    if as_json {
        println!("{}", json!({ "client_id": id, "client_secret": secret }));
    } else {
        println!("client_id:     {id}");
        println!("client_secret: {secret}");
        println!();
        println!("The secret is shown only this once; Portcullis stores only its hash.");
    }
}

fn status(c: &Client) -> &'static str {
    if c.disabled { "disabled" } else { "active" }
}

fn grants(c: &Client) -> String {
    c.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(",")
}

pub(crate) fn client_json(c: &Client) -> serde_json::Value {
    json!({
        "client_id": c.id,
        "name": c.name,
        "status": status(c),
        "grant_types": c.grant_types,
        "scope": c.allowed_scopes.to_string(),
        "default_scope": c.default_scopes.to_string(),
        "audience": c.audience,
        "access_token_ttl": c.access_token_ttl,
        "redirect_uris": c.redirect_uris,
        "post_logout_redirect_uris": c.post_logout_redirect_uris,
        "public": c.is_public(),
        "first_party": c.first_party,
        "dpop_bound_access_tokens": c.dpop_bound_access_tokens,
        "tls_client_auth_subject": c.tls_client_auth_subject,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
    })
}

fn show_client(c: &Client) {
    println!("client_id:        {}", c.id);
    println!("name:             {}", c.name);
    println!("status:           {}", status(c));
    println!("grant_types:      {}", grants(c));
    println!("scope:            {}", c.allowed_scopes);
    println!("default_scope:    {}", c.default_scopes);
    println!("audience:         {}", c.audience.join(" "));
    println!("access_token_ttl: {}", c.access_token_ttl.map_or("server default".into(), |t| format!("{t}s")));
    println!("redirect_uris:    {}", c.redirect_uris.join(" "));
    println!("logout_redirects: {}", c.post_logout_redirect_uris.join(" "));
    println!("first_party:      {}", c.first_party);
    println!("dpop_bound:       {}", c.dpop_bound_access_tokens);
    let secret = match (&c.secret_hash, &c.tls_client_auth_subject) {
        (Some(_), _) => "set (stored as SHA-256 hash)".to_owned(),
        (None, Some(subject)) => format!("none (tls_client_auth, certificate subject {subject})"),
        (None, None) => "none (public client)".to_owned(),
    };
    println!("secret:           {secret}");
    println!("created_at:       {}", rfc3339(c.created_at));
}

pub async fn keys(config: Config, command: KeysCommand) -> Result<(), CliError> {
    let rt = Runtime::open(config).await?;
    match command {
        KeysCommand::List(flag) => {
            let keys = rt.stores.keys.list_keys().await?;
            if flag.json {
                println!("{}", crate::ops::keys_json(&keys));
            } else {
                println!(
                    "{:<44} {:<6} {:<10} {:<21} {:<21} PURGE AFTER",
                    "KID", "ALG", "STATE", "SIGNS FROM", "RETIRED"
                );
                for k in &keys {
                    println!(
                        "{:<44} {:<6} {:<10} {:<21} {:<21} {}",
                        k.kid,
                        k.alg.as_str(),
                        k.state.as_str(),
                        rfc3339(k.activates_at),
                        k.retired_at.map_or("-".into(), rfc3339),
                        k.purge_after.map_or("-".into(), rfc3339)
                    );
                }
            }
        }
        KeysCommand::Rotate => {
            let ring = rt.key_ring().await?;
            let key = crate::ops::rotate_keys(&rt, &ring).await?;
            println!("announced key {} ({}); it starts signing at {}", key.kid, key.alg, rfc3339(key.activates_at));
        }
        KeysCommand::Retire { kid } => {
            let ring = rt.key_ring().await?;
            let changes = crate::ops::retire_key(&rt, &ring, &kid).await?;
            println!("retired key {kid}");
            for change in changes.iter().skip(1) {
                println!("  and: {change:?}");
            }
        }
    }
    Ok(())
}

/// `portcullis tls dev-cert`: writes cert.pem and key.pem (0600) and prints the config lines.
///
/// # Errors
/// A bad host name, or the files cannot be written.
pub fn tls(config: &Config, command: TlsCommand) -> Result<(), CliError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let TlsCommand::DevCert { out, hosts } = command;
    let dir = out.unwrap_or_else(|| config.server.data_dir.join("tls"));
    let (cert, key) = crate::transport::dev_cert(&hosts).map_err(|e| CliError::Usage(format!("dev-cert: {e}")))?;
    let io_err = |what: &std::path::Path, e: std::io::Error| CliError::Usage(format!("{}: {e}", what.display()));
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert).map_err(|e| io_err(&cert_path, e))?;
    // Replace, never append to, an old key; readable by the owner only.
    let _ = std::fs::remove_file(&key_path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut f| f.write_all(key.as_bytes()))
        .map_err(|e| io_err(&key_path, e))?;
    println!("wrote {} and {} for {}", cert_path.display(), key_path.display(), hosts.join(", "));
    println!();
    println!("[tls]");
    println!("cert_file = {:?}", cert_path.display().to_string());
    println!("key_file = {:?}", key_path.display().to_string());
    println!();
    println!("Self-signed: clients must trust cert.pem explicitly (curl --cacert). Never use it in production.");
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SSZ` from Unix seconds (Howard Hinnant's civil-from-days).
#[must_use]
pub fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn cli_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "portcullis",
            "client",
            "create",
            "--name",
            "billing",
            "--grant",
            "client_credentials",
            "--scope",
            "invoices:read invoices:write",
            "--audience",
            "https://api.example.com",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Client(ClientCommand::Create(_))));
        assert!(registration("x".into(), vec!["password".into()], "", None, vec![], None).is_err());
        assert!(registration("x".into(), vec!["implicit".into()], "", None, vec![], None).is_err());
    }
}
