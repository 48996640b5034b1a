//! The configuration tree: a TOML file (`--config`) overlaid with `PORTCULLIS_<SECTION>__<KEY>`
//! environment variables, checked as a whole so that every problem is reported at once:
//! all unknown keys (a typo in a security setting must fail loudly), one type error per
//! section, and every semantic rule (issuer scheme, lifetimes). Secrets are never printed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use domain::jose::Algorithm;
use domain::settings::Issuer;
pub use domain::settings::Seconds;
use serde::Deserialize;

/// The environment variable prefix; `PORTCULLIS_SERVER__LISTEN` sets `server.listen`.
pub const ENV_PREFIX: &str = "PORTCULLIS_";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub tokens: TokensConfig,
    pub keys: KeysConfig,
    pub log: LogConfig,
    /// Owned by the gateway crate.
    pub gateway: gateway::config::GatewayConfig,
    /// TLS for both listeners.
    pub tls: crate::transport::TlsConfig,
    /// People signing in: lifetimes of codes, sessions and refresh tokens; login lockout.
    pub signin: SigninConfig,
    /// argon2id cost and the hashing pool.
    pub passwords: PasswordsConfig,
    /// Rate limits and bans, on both listeners.
    pub rate_limit: crate::protection::RateLimitConfig,
    /// Roles → permissions, Cedar policies, claims mapped for policies.
    pub authorization: crate::authz::AuthorizationConfig,
    /// Shared fast state of several instances: revocations and key changes pushed to every
    /// instance; the rate limiter's default Redis.
    pub redis: RedisConfig,
    /// The stored, hash-chained audit trail and its optional file copy.
    pub audit: crate::audit::AuditConfig,
    /// The admin listener (`/metrics`).
    pub admin: crate::admin::AdminConfig,
    /// Anomaly detectors and the alert webhook.
    pub alerts: crate::alerts::AlertsConfig,
    /// DPoP proofs (RFC 9449): algorithms, lifetime, server nonces.
    pub dpop: crate::dpop::DpopConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RedisConfig {
    /// `redis://host:port[/db]` (or `rediss://` for TLS). Unset: one instance, nothing to
    /// push (instances on one database still converge through the store every 2 s).
    pub url: Option<SecretUrl>,
    /// Prefix of this deployment's channel (several deployments can share one Redis).
    pub key_prefix: String,
    /// How long one Redis command may take.
    pub timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { url: None, key_prefix: "portcullis:".into(), timeout_ms: 250 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SigninConfig {
    /// Authorization codes (single use).
    pub code_ttl: Seconds,
    /// A refresh token unused this long dies…
    pub refresh_idle_ttl: Seconds,
    /// …and every refresh chain ends this long after sign-in.
    pub refresh_absolute_ttl: Seconds,
    /// A rotated refresh token presented again by its client within this window gets the
    /// same successor (two tabs, a retried request) instead of revoking the family.
    pub refresh_grace: Seconds,
    pub session_idle_ttl: Seconds,
    pub session_absolute_ttl: Seconds,
    pub id_token_ttl: Seconds,
    /// Failed logins per account name that start the first lockout.
    pub lockout_account_failures: u32,
    /// Failed logins per source IP that start the first lockout.
    pub lockout_ip_failures: u32,
    /// First lockout; doubles with each further failure.
    pub lockout_base: Seconds,
    pub lockout_max: Seconds,
    /// Failures older than this are forgotten.
    pub lockout_window: Seconds,
}

impl Default for SigninConfig {
    fn default() -> Self {
        let f = domain::settings::FlowSettings::default();
        let t = domain::throttle::ThrottlePolicy::default();
        let secs = |v: i64| Seconds(u64::try_from(v).unwrap_or(0));
        Self {
            code_ttl: secs(f.code_ttl),
            refresh_idle_ttl: secs(f.refresh_idle_ttl),
            refresh_absolute_ttl: secs(f.refresh_absolute_ttl),
            refresh_grace: secs(f.refresh_grace),
            session_idle_ttl: secs(f.session_idle_ttl),
            session_absolute_ttl: secs(f.session_absolute_ttl),
            id_token_ttl: secs(f.id_token_ttl),
            lockout_account_failures: t.account_free_failures,
            lockout_ip_failures: t.ip_free_failures,
            lockout_base: secs(t.base_lock),
            lockout_max: secs(t.max_lock),
            lockout_window: secs(t.window),
        }
    }
}

impl SigninConfig {
    #[must_use]
    pub fn flow(&self) -> domain::settings::FlowSettings {
        domain::settings::FlowSettings {
            code_ttl: self.code_ttl.as_i64(),
            refresh_idle_ttl: self.refresh_idle_ttl.as_i64(),
            refresh_absolute_ttl: self.refresh_absolute_ttl.as_i64(),
            refresh_grace: self.refresh_grace.as_i64(),
            session_idle_ttl: self.session_idle_ttl.as_i64(),
            session_absolute_ttl: self.session_absolute_ttl.as_i64(),
            id_token_ttl: self.id_token_ttl.as_i64(),
        }
    }

    #[must_use]
    pub fn throttle(&self) -> domain::throttle::ThrottlePolicy {
        domain::throttle::ThrottlePolicy {
            account_free_failures: self.lockout_account_failures,
            ip_free_failures: self.lockout_ip_failures,
            base_lock: self.lockout_base.as_i64(),
            max_lock: self.lockout_max.as_i64(),
            window: self.lockout_window.as_i64(),
            ..domain::throttle::ThrottlePolicy::default()
        }
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.code_ttl.0 == 0 || self.code_ttl.0 > 600 {
            errors.push("signin.code_ttl must be between 1s and 10m (RFC 6749 §4.1.2)".into());
        }
        if self.refresh_idle_ttl.0 == 0 || self.refresh_idle_ttl.0 > self.refresh_absolute_ttl.0 {
            errors.push("signin.refresh_idle_ttl must be positive and at most signin.refresh_absolute_ttl".into());
        }
        if self.refresh_grace.0 > 60 {
            errors.push("signin.refresh_grace above 60s weakens refresh-token reuse detection".into());
        }
        if self.session_idle_ttl.0 == 0 || self.session_idle_ttl.0 > self.session_absolute_ttl.0 {
            errors.push("signin.session_idle_ttl must be positive and at most signin.session_absolute_ttl".into());
        }
        if self.id_token_ttl.0 == 0 {
            errors.push("signin.id_token_ttl must be positive".into());
        }
        if self.lockout_account_failures == 0 || self.lockout_ip_failures == 0 {
            errors.push("signin.lockout_account_failures and lockout_ip_failures must be positive".into());
        }
        if self.lockout_base.0 == 0 || self.lockout_base.0 > self.lockout_max.0 {
            errors.push("signin.lockout_base must be positive and at most signin.lockout_max".into());
        }
        errors
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct PasswordsConfig {
    /// argon2id memory cost in KiB (OWASP: 19456 = 19 MiB).
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    /// Hashes computed at once; 0 means one per CPU core. Logins beyond it wait in line.
    pub concurrency: usize,
    /// How long a login may wait for a hashing slot before it is answered 503.
    pub queue_timeout: Seconds,
}

impl Default for PasswordsConfig {
    fn default() -> Self {
        let p = domain::password::PasswordParams::default();
        Self {
            memory_kib: p.memory_kib,
            iterations: p.iterations,
            parallelism: p.parallelism,
            concurrency: 0,
            queue_timeout: Seconds(10),
        }
    }
}

impl PasswordsConfig {
    #[must_use]
    pub const fn params(&self) -> domain::password::PasswordParams {
        domain::password::PasswordParams {
            memory_kib: self.memory_kib,
            iterations: self.iterations,
            parallelism: self.parallelism,
        }
    }

    /// The hasher these settings describe.
    ///
    /// # Errors
    /// Parameters argon2 refuses.
    pub fn hasher(&self) -> Result<domain::password::PasswordHasher, domain::password::PasswordError> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let concurrency = if self.concurrency == 0 { cores } else { self.concurrency };
        domain::password::PasswordHasher::new(
            self.params(),
            concurrency,
            std::time::Duration::from_secs(self.queue_timeout.0),
        )
    }

    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        // OWASP's floor for argon2id: m ≥ 7 MiB with t ≥ 5, or 19 MiB with t ≥ 2, …
        if self.memory_kib < 7 * 1024 || self.iterations == 0 || self.parallelism == 0 {
            errors.push("passwords: argon2id needs memory_kib ≥ 7168 and positive iterations and parallelism".into());
        }
        if self.memory_kib > 4 * 1024 * 1024 {
            errors.push("passwords.memory_kib above 4 GiB per hash would exhaust memory".into());
        }
        errors
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Address of the public listener (OAuth endpoints, discovery, health).
    pub listen: SocketAddr,
    /// Issuer URL; defaults to `http(s)://<listen address>` (plain http on loopback only).
    pub issuer: Option<String>,
    /// Where the SQLite database and the generated master key live.
    pub data_dir: PathBuf,
    /// How long in-flight requests may take to finish after SIGTERM.
    pub shutdown_grace: Seconds,
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` / `Forwarded` headers
    /// are believed; from anyone else the socket address is the client's.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            issuer: None,
            data_dir: PathBuf::from("portcullis-data"),
            shutdown_grace: Seconds(10),
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `sqlite://path` (default: `<data_dir>/portcullis.db`) or
    /// `postgres://user:password@host:port/database` (several instances share it).
    pub url: Option<SecretUrl>,
    /// PostgreSQL connections of this instance.
    pub max_connections: u32,
    /// How long a query waits for a connection before the request fails (503).
    pub acquire_timeout: Seconds,
    /// `auto`: apply pending migrations on start (every command). `check`: refuse to start
    /// while migrations are pending; `portcullis migrate` applies them (deploy pipelines that
    /// migrate in a step of their own).
    pub migrate: MigrateMode,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 16, acquire_timeout: Seconds(5), migrate: MigrateMode::Auto }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrateMode {
    Auto,
    Check,
}

/// A URL that may carry credentials (`postgres://user:password@…`, `redis://:password@…`):
/// `Debug` shows it with the password replaced, so no log or error of a `Config` prints it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(pub String);

impl std::ops::Deref for SecretUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
                write!(f, "\"{scheme}://{user}:<redacted>@{host}\"")
            }
            None => write!(f, "{:?}", self.0),
        }
    }
}

/// Which database `database.url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(SecretUrl),
}

impl DatabaseConfig {
    fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(url) = &self.url
            && !["sqlite://", "postgres://", "postgresql://"].iter().any(|p| url.starts_with(p))
        {
            errors.push("database.url must start with sqlite://, postgres:// or postgresql://".into());
        }
        if self.max_connections == 0 {
            errors.push("database.max_connections must be positive".into());
        }
        if self.acquire_timeout.0 == 0 {
            errors.push("database.acquire_timeout must be positive".into());
        }
        errors
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TokensConfig {
    pub access_token_ttl: Seconds,
    pub max_access_token_ttl: Seconds,
    pub leeway: Seconds,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self { access_token_ttl: Seconds(15 * 60), max_access_token_ttl: Seconds(24 * 3600), leeway: Seconds(30) }
    }
}

#[derive(Clone, Deserialize)]
#[serde(default)]
pub struct KeysConfig {
    pub algorithm: Algorithm,
    pub rotation_interval: Seconds,
    pub announce_period: Seconds,
    /// How often the key ring applies the schedule and reloads keys from the store.
    pub refresh_interval: Seconds,
    /// Base64 (standard or URL-safe) 32-byte master key. Prefer `master_key_file`.
    pub master_key: Option<String>,
    /// File holding the base64 master key (e.g. a mounted secret).
    pub master_key_file: Option<PathBuf>,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::ES256,
            rotation_interval: Seconds(90 * 86_400),
            announce_period: Seconds(86_400),
            refresh_interval: Seconds(30),
            master_key: None,
            master_key_file: None,
        }
    }
}

impl fmt::Debug for KeysConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeysConfig")
            .field("algorithm", &self.algorithm)
            .field("rotation_interval", &self.rotation_interval)
            .field("announce_period", &self.announce_period)
            .field("refresh_interval", &self.refresh_interval)
            .field("master_key", &self.master_key.as_ref().map(|_| "<redacted>"))
            .field("master_key_file", &self.master_key_file)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON unless standard output is a terminal.
    #[default]
    Auto,
    Json,
    Pretty,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `info,portcullis=debug`.
    pub level: String,
    /// Export request spans to this OTLP/HTTP traces endpoint (`http://collector:4318/v1/traces`).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl LogConfig {
    fn problems(&self) -> Vec<String> {
        match &self.otlp_endpoint {
            Some(url) if !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) => {
                vec![format!("log.otlp_endpoint {url:?} is not an http(s) URL")]
            }
            _ => Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Auto, level: "info".into(), otlp_endpoint: None, service_name: "portcullis".into() }
    }
}

/// Reads a route's JSON Schema file.
///
/// # Errors
/// Unreadable file or invalid JSON, described with the path.
pub fn read_json_schema(file: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("json_schema {}: {e}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("json_schema {}: not JSON: {e}", file.display()))
}

/// Every problem found in a configuration, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration has {} problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

const SECTIONS: [&str; 16] = [
    "server",
    "database",
    "tokens",
    "keys",
    "log",
    "gateway",
    "tls",
    "signin",
    "passwords",
    "rate_limit",
    "authorization",
    "redis",
    "audit",
    "admin",
    "alerts",
    "dpop",
];

/// Loads the file (if any), overlays the environment, and checks everything.
///
/// # Errors
/// All problems found, at once.
pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigErrors> {
    let mut errors = Vec::new();
    let mut table = match file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(text) => text.parse::<toml::Table>().unwrap_or_else(|e| {
                errors.push(format!("{}: {}", path.display(), e.message()));
                toml::Table::new()
            }),
            Err(e) => {
                errors.push(format!("cannot read {}: {e}", path.display()));
                toml::Table::new()
            }
        },
        None => toml::Table::new(),
    };
    overlay_env(&mut table, env, &mut errors);
    let mut config = from_table(table, &mut errors);
    if config.rate_limit.redis_url.is_none() {
        // One Redis for everything unless the limiter is given its own.
        config.rate_limit.redis_url.clone_from(&config.redis.url);
    }
    errors.extend(validate(&config));
    if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
}

/// `PORTCULLIS_KEYS__ROTATION_INTERVAL=30d` → `keys.rotation_interval = "30d"`. Variables
/// without a `__` (such as `PORTCULLIS_TEST_POSTGRES_URL`) are not configuration.
fn overlay_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>, errors: &mut Vec<String>) {
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let Some((section, key)) = rest.split_once("__") else {
            continue;
        };
        let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
        if section.is_empty() || key.is_empty() || key.contains("__") {
            errors.push(format!("environment variable {name} does not name a section and key"));
            continue;
        }
        // Typed like TOML when it parses as a TOML value (numbers, booleans), else a string.
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(raw));
        match table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
            toml::Value::Table(t) => {
                t.insert(key, value);
            }
            _ => errors.push(format!("environment variable {name}: {section} is not a section")),
        }
    }
}

fn from_table(table: toml::Table, errors: &mut Vec<String>) -> Config {
    let mut config = Config::default();
    let mut sections: BTreeMap<String, toml::Value> = table.into_iter().collect();
    for name in sections.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        errors.push(format!("unknown section [{name}]"));
    }
    macro_rules! section {
        ($name:literal, $field:ident) => {
            if let Some(value) = sections.remove($name) {
                if let Some(v) = section_value(value, $name, errors) {
                    config.$field = v;
                }
            }
        };
    }
    section!("server", server);
    section!("database", database);
    section!("tokens", tokens);
    section!("keys", keys);
    section!("log", log);
    section!("tls", tls);
    section!("signin", signin);
    section!("passwords", passwords);
    section!("rate_limit", rate_limit);
    section!("authorization", authorization);
    section!("redis", redis);
    section!("audit", audit);
    section!("admin", admin);
    section!("alerts", alerts);
    section!("dpop", dpop);
    if let Some(value) = sections.remove("gateway") {
        config.gateway = gateway_section(value, errors);
    }
    config
}

/// The gateway section, with routes and issuers read one by one so that a mistake in one
/// route does not hide the problems of the others.
fn gateway_section(value: toml::Value, errors: &mut Vec<String>) -> gateway::config::GatewayConfig {
    let toml::Value::Table(mut table) = value else {
        errors.push("[gateway] must be a table".into());
        return gateway::config::GatewayConfig::default();
    };
    let mut list = |key: &str| match table.remove(key) {
        Some(toml::Value::Array(items)) => items,
        Some(_) => {
            errors.push(format!("gateway.{key} must be an array of tables ([[gateway.{key}]])"));
            Vec::new()
        }
        None => Vec::new(),
    };
    let routes = list("routes");
    let issuers = list("issuers");
    let mut config: gateway::config::GatewayConfig =
        section_value(toml::Value::Table(table), "gateway", errors).unwrap_or_default();
    config.routes = routes
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| section_value(v, &format!("gateway.routes[{i}]"), errors))
        .collect();
    config.issuers = issuers
        .into_iter()
        .enumerate()
        .filter_map(|(i, v)| section_value(v, &format!("gateway.issuers[{i}]"), errors))
        .collect();
    config
}

fn section_value<T: serde::de::DeserializeOwned>(
    value: toml::Value,
    name: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    let mut unknown = Vec::new();
    let result = serde_ignored::deserialize(value, |path| unknown.push(path.to_string()));
    for key in unknown {
        errors.push(format!("unknown key {name}.{key}"));
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(format!("[{name}]: {}", e.to_string().trim()));
            None
        }
    }
}

/// `[database]` and `[redis]`, and what several instances on one database need.
fn validate_scale_out(config: &Config) -> Vec<String> {
    let mut errors = config.database.validate();
    let k = &config.keys;
    if matches!(config.database(), DatabaseUrl::Postgres(_)) && k.master_key.is_none() && k.master_key_file.is_none() {
        // A key generated into one instance's data directory cannot open the signing keys
        // another instance stored.
        errors.push(
            "a PostgreSQL database is shared by several instances: set keys.master_key_file (or \
             PORTCULLIS_KEYS__MASTER_KEY) to the same master key on every one"
                .into(),
        );
    }
    if config.redis.url.as_deref().is_some_and(|u| !u.starts_with("redis://") && !u.starts_with("rediss://")) {
        errors.push("redis.url must start with redis:// or rediss://".into());
    }
    errors
}

/// The semantic rules: a config can be well-typed and still unsafe.
fn validate(config: &Config) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(issuer) = &config.server.issuer {
        if let Err(e) = Issuer::parse(issuer) {
            errors.push(format!("server.issuer: {e}"));
        }
    } else if !config.server.listen.ip().is_loopback() {
        errors.push(format!(
            "server.issuer must be set (an https URL) when listening on a non-loopback address ({})",
            config.server.listen
        ));
    }
    let t = &config.tokens;
    if t.access_token_ttl.0 == 0 {
        errors.push("tokens.access_token_ttl must be positive".into());
    }
    if t.access_token_ttl.0 > t.max_access_token_ttl.0 {
        errors.push("tokens.access_token_ttl must not exceed tokens.max_access_token_ttl".into());
    }
    if t.leeway.0 > 300 {
        errors.push("tokens.leeway above 5 minutes defeats expiry checks".into());
    }
    let k = &config.keys;
    if k.announce_period.0 == 0 || k.announce_period.0 >= k.rotation_interval.0 {
        errors.push("keys.announce_period must be positive and shorter than keys.rotation_interval".into());
    }
    if k.refresh_interval.0 == 0 || k.refresh_interval.0 * 2 > k.announce_period.0 {
        errors.push("keys.refresh_interval must be positive and at most half of keys.announce_period".into());
    }
    if k.master_key.is_some() && k.master_key_file.is_some() {
        errors.push("set only one of keys.master_key and keys.master_key_file".into());
    }

    errors.extend(config.gateway.validate());
    errors.extend(config.tls.validate());
    errors.extend(config.signin.validate());
    for route in &config.gateway.routes {
        if let Some(file) = &route.upstream_ca_file {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject as _;
            let found = CertificateDer::pem_file_iter(file).map(|mut certs| certs.next().is_some_and(|c| c.is_ok()));
            if !matches!(found, Ok(true)) {
                errors.push(format!(
                    "route {}: upstream_ca_file {} holds no PEM certificate",
                    route.name,
                    file.display()
                ));
            }
        }
    }
    for route in &config.gateway.routes {
        if let Some(file) = &route.json_schema {
            let checked = read_json_schema(file).and_then(|doc| gateway::schema::BodySchema::compile(&doc).map(|_| ()));
            if let Err(e) = checked {
                errors.push(format!("route {}: {e}", route.name));
            }
        }
    }
    if config.gateway.uses_mtls() && config.tls.client_ca_file.is_none() {
        errors.push("a gateway route uses auth \"mtls\": set tls.client_ca_file (and TLS)".into());
    }
    errors.extend(config.passwords.validate());
    errors.extend(config.alerts.problems());
    errors.extend(config.dpop.problems());
    errors.extend(config.log.problems());
    errors.extend(config.admin.problems(config.tls.enabled(), config.authorization.policies_dir.is_some()));
    errors.extend(validate_scale_out(config));
    errors.extend(config.rate_limit.validate());
    errors.extend(config.authorization.validate());
    if let Err(e) = domain::netaddr::TrustedProxies::parse(&config.server.trusted_proxies) {
        errors.push(format!("server.trusted_proxies: {e}"));
    }
    if config.gateway.listen == config.server.listen
        && config.server.listen.port() != 0
        && !config.gateway.routes.is_empty()
    {
        errors.push("gateway.listen must differ from server.listen".into());
    }
    if tracing_subscriber::EnvFilter::try_new(&config.log.level).is_err() {
        errors.push(format!("log.level {:?} is not a valid filter", config.log.level));
    }
    errors
}

impl Config {
    /// The issuer: configured, or `http://<bound address>` on loopback.
    ///
    /// # Errors
    /// The derived issuer is not acceptable (cannot happen for a loopback listener).
    pub fn issuer(&self, bound: SocketAddr) -> Result<Issuer, domain::settings::IssuerError> {
        match &self.server.issuer {
            Some(i) => Issuer::parse(i),
            None if self.tls.enabled() => Issuer::parse(&format!("https://{bound}")),
            None => Issuer::parse(&format!("http://{bound}")),
        }
    }

    /// The database: configured, or the SQLite file in the data directory.
    #[must_use]
    pub fn database(&self) -> DatabaseUrl {
        match self.database.url.as_deref() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                DatabaseUrl::Postgres(SecretUrl(url.to_owned()))
            }
            Some(url) => match url.strip_prefix("sqlite://") {
                Some(path) => DatabaseUrl::Sqlite(PathBuf::from(path)),
                None => DatabaseUrl::Sqlite(self.server.data_dir.join("portcullis.db")),
            },
            None => DatabaseUrl::Sqlite(self.server.data_dir.join("portcullis.db")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = load(None, env(&[])).unwrap();
        assert_eq!(c.tokens.access_token_ttl, Seconds(900));
        assert_eq!(c.server.listen.port(), 8080);
    }

    #[test]
    fn env_overrides_and_ignores_non_config_variables() {
        let c = load(
            None,
            env(&[
                ("PORTCULLIS_TOKENS__ACCESS_TOKEN_TTL", "5m"),
                ("PORTCULLIS_KEYS__ALGORITHM", "EdDSA"),
                ("PORTCULLIS_SERVER__LISTEN", "127.0.0.1:9999"),
                ("PORTCULLIS_TEST_POSTGRES_URL", "postgres://x"),
                ("OTHER__THING", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.tokens.access_token_ttl, Seconds(300));
        assert_eq!(c.keys.algorithm, Algorithm::EdDSA);
        assert_eq!(c.server.listen.port(), 9999);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"0.0.0.0:80\"\nissuer = \"http://id.example.com\"\ntypo = 1\n\
             [tokens]\naccess_tokn_ttl = 5\nleeway = \"1y\"\n[keys]\nalgorithm = \"HS256\"\n[nonsense]\n",
        )
        .unwrap();
        let errors = load(Some(&path), env(&[])).unwrap_err().0;
        let all = errors.join("\n");
        for needle in ["server.typo", "tokens.access_tokn_ttl", "invalid duration", "HS256", "[nonsense]", "https"] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn non_loopback_listener_needs_an_https_issuer() {
        let errors = load(None, env(&[("PORTCULLIS_SERVER__LISTEN", "0.0.0.0:8080")])).unwrap_err();
        assert!(errors.to_string().contains("server.issuer must be set"));
        let ok = load(
            None,
            env(&[
                ("PORTCULLIS_SERVER__LISTEN", "0.0.0.0:8080"),
                ("PORTCULLIS_SERVER__ISSUER", "https://id.example.com"),
            ]),
        );
        assert!(ok.is_ok());
    }

    #[test]
    fn secrets_are_not_debug_printed() {
        let c = load(None, env(&[("PORTCULLIS_KEYS__MASTER_KEY", "c2VjcmV0")])).unwrap();
        assert!(!format!("{c:?}").contains("c2VjcmV0"));
        let c = load(
            None,
            env(&[
                ("PORTCULLIS_DATABASE__URL", "postgres://portcullis:pg-s3cret@db:5432/p"),
                ("PORTCULLIS_KEYS__MASTER_KEY", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="),
                ("PORTCULLIS_REDIS__URL", "redis://:redis-s3cret@cache:6379"),
                ("PORTCULLIS_RATE_LIMIT__REDIS_URL", "redis://limits:rl-s3cret@cache:6379/1"),
            ]),
        )
        .unwrap();
        let printed = format!("{c:?} {:?}", c.database());
        for secret in ["pg-s3cret", "redis-s3cret", "rl-s3cret"] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(printed.contains("postgres://portcullis:<redacted>@db:5432/p"), "{printed}");
    }

    #[test]
    fn rate_limit_mistakes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n\
             [rate_limit]\nbackend = \"redis\"\nmax_keys = 10\n\
             plans = { gold = [\"a\"], silver = [\"a\"] }\n\
             [[rate_limit.token]]\nname = \"t\"\nby = [\"ip\"]\nrequests = 0\nper = \"1m\"\n",
        )
        .unwrap();
        let all = load(Some(&path), env(&[])).unwrap_err().0.join("\n");
        for needle in ["trusted_proxies", "redis_url is required", "max_keys", "both", "rate_limit.token"] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let typo = load(None, env(&[("PORTCULLIS_RATE_LIMIT__BANS", "{ enabeld = false }")])).unwrap_err();
        assert!(typo.to_string().contains("enabeld"), "{typo}");
        let off = load(None, env(&[("PORTCULLIS_RATE_LIMIT__ENABLED", "false")])).unwrap();
        assert!(!off.rate_limit.enabled);
    }

    #[test]
    fn database_and_redis_sections() {
        let c = load(None, env(&[])).unwrap();
        assert!(matches!(c.database(), DatabaseUrl::Sqlite(p) if p.ends_with("portcullis-data/portcullis.db")));
        let pg = [
            ("PORTCULLIS_DATABASE__URL", "postgres://portcullis@db:5432/portcullis"),
            ("PORTCULLIS_KEYS__MASTER_KEY", "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="),
            ("PORTCULLIS_REDIS__URL", "redis://cache:6379"),
            ("PORTCULLIS_RATE_LIMIT__BACKEND", "redis"),
        ];
        let c = load(None, env(&pg)).unwrap();
        assert_eq!(c.database(), DatabaseUrl::Postgres(SecretUrl("postgres://portcullis@db:5432/portcullis".into())));
        assert_eq!(c.rate_limit.redis_url.as_deref(), Some("redis://cache:6379"), "the limiter shares redis.url");
        let all = load(
            None,
            env(&[
                ("PORTCULLIS_DATABASE__URL", "postgres://db/p"),
                ("PORTCULLIS_DATABASE__MAX_CONNECTIONS", "0"),
                ("PORTCULLIS_DATABASE__MIGRATE", "\"check\""),
                ("PORTCULLIS_REDIS__URL", "http://cache"),
            ]),
        )
        .unwrap_err()
        .0
        .join("\n");
        for needle in ["same master key on every one", "max_connections", "redis.url must start"] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        let bad = load(None, env(&[("PORTCULLIS_DATABASE__URL", "mysql://db/p")])).unwrap_err().to_string();
        assert!(bad.contains("database.url must start with"), "{bad}");
    }

    #[test]
    fn gateway_example_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/gateway.example.toml");
        let c = load(Some(&path), env(&[])).unwrap();
        assert_eq!(c.gateway.routes.len(), 5);
        assert_eq!(c.gateway.issuers.len(), 1);
        assert_eq!(c.gateway.bff.len(), 1);
    }

    #[test]
    fn gateway_mistakes_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[gateway.routes]]\npath_prefix = \"api\"\nupstreams = [\"https://x/y\"]\nauth = \"jwt\"\nissuers = [\"https://nope\"]\n\
             [[gateway.routes]]\npath_prefix = \"/b\"\nupstreams = [\"http://127.0.0.1:1\"]\nscopes_all = [\"a\"]\nauth = \"none\"\n\
             [[gateway.routes]]\npath_prefix = \"/c\"\nupstreams = [\"http://127.0.0.1:1\"]\nauth = \"basic\"\nupstream = 1\n\
             [gateway.headers]\nsubject = \"X Subject\"\n",
        )
        .unwrap();
        let all = load(Some(&path), env(&[])).unwrap_err().to_string();
        for needle in [
            "path_prefix",
            "upstream \"https://x/y\"",
            "need audiences",
            "not configured",
            "cannot allow auth",
            "gateway.headers.subject = \"X Subject\" is not a valid HTTP header name",
            "gateway",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/example.toml");
        let c = load(Some(&path), env(&[])).unwrap();
        assert_eq!(c.keys.algorithm, Algorithm::ES256);
        assert_eq!(c.tls.reload_interval, Seconds(10));
        assert_eq!(c.signin.flow(), domain::settings::FlowSettings::default(), "example documents the defaults");
        assert_eq!(c.signin.throttle(), domain::throttle::ThrottlePolicy::default());
        assert_eq!(c.passwords.params(), domain::password::PasswordParams::default());
    }

    #[test]
    fn unsafe_signin_settings_are_refused() {
        let errors = load(
            None,
            env(&[
                ("PORTCULLIS_SIGNIN__CODE_TTL", "1h"),
                ("PORTCULLIS_SIGNIN__REFRESH_GRACE", "5m"),
                ("PORTCULLIS_SIGNIN__SESSION_IDLE_TTL", "48h"),
                ("PORTCULLIS_PASSWORDS__MEMORY_KIB", "1024"),
                ("PORTCULLIS_SIGNIN__LOCKOUT_ACCOUNT_FAILURES", "0"),
            ]),
        )
        .unwrap_err();
        assert_eq!(errors.0.len(), 5, "{errors}");
    }

    #[test]
    fn tls_section_and_env_reach_the_config() {
        let c = load(
            None,
            env(&[
                ("PORTCULLIS_TLS__CERT_FILE", "/etc/c.pem"),
                ("PORTCULLIS_TLS__KEY_FILE", "/etc/k.pem"),
                ("PORTCULLIS_TLS__HSTS_MAX_AGE", "1d"),
            ]),
        )
        .unwrap();
        assert!(c.tls.enabled());
        assert_eq!(c.tls.hsts_max_age, Seconds(86_400));
        assert_eq!(c.issuer("127.0.0.1:8443".parse().unwrap()).unwrap().as_str(), "https://127.0.0.1:8443");
        let errors = load(None, env(&[("PORTCULLIS_TLS__CERT_FIEL", "x")])).unwrap_err();
        assert!(errors.to_string().contains("cert_fiel"), "{errors}");
    }
}
