//! Wiring: opens the store, resolves the master key, loads the key ring, builds the token
//! service and the routers, runs the listeners and the background maintenance, and shuts
//! down gracefully on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::os::unix::fs::DirBuilderExt as _;
use std::sync::Arc;
use std::time::Duration;

use authserver::AppState;
use domain::StoreError;
use domain::clock::{Clock, SystemClock};
use domain::cluster::{ClusterBus, ClusterEvent};
use domain::keyring::{KeyRing, KeyRingError};
use domain::keys::RotationPolicy;
use domain::ports::Stores;
use domain::service::TokenService;
use domain::settings::{IssuerError, TokenSettings};
use domain::signin::SignIn;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::master_key::{self, MasterKeyError};
use crate::transport::{self, CertReloader, TlsError, TlsListener};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error("signing keys: {0}")]
    Keys(#[from] KeyRingError),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("issuer: {0}")]
    Issuer(#[from] IssuerError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    #[error("passwords: {0}")]
    Passwords(#[from] domain::password::PasswordError),
    #[error("page templates: {0}")]
    Templates(String),
    #[error("rate_limit: {0}")]
    RateLimit(String),
    #[error("policies: {0}")]
    Policies(String),
    #[error("redis: {0}")]
    Redis(String),
}

/// The opened state every command works on.
#[derive(Debug)]
pub struct Runtime {
    pub config: Config,
    pub stores: Stores,
    pub clock: Arc<dyn Clock>,
    /// Tells the other instances about revocations and key changes (`[redis]`), or nobody.
    pub bus: Arc<dyn ClusterBus>,
    /// The same bus, to subscribe to, when Redis is configured.
    pub redis_bus: Option<Arc<store::RedisBus>>,
    /// Client lookups are cached; the store's clients' version (polled) and the bus drop
    /// changed entries (`domain::client_cache`).
    pub client_cache: Arc<domain::client_cache::CachedClients>,
}

/// The longest a cached client may lag a change made by another process, in seconds (the
/// 2 s version poll normally sees it first).
const CLIENT_CACHE_TTL: i64 = 5;

impl Runtime {
    /// Creates the data directory (0700) and opens the store, running migrations.
    ///
    /// # Errors
    /// The directory cannot be created or the database cannot be opened.
    pub async fn open(config: Config) -> Result<Self, StartupError> {
        let dir = &config.server.data_dir;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StartupError::DataDir(dir.display().to_string(), e))?;
        let db = crate::database::Database::open(&config).await?;
        tracing::debug!(backend = db.backend(), "database open");
        let redis_bus = match &config.redis.url {
            Some(url) => Some(Arc::new(
                store::RedisBus::new(url, &config.redis.key_prefix, Duration::from_millis(config.redis.timeout_ms))
                    .map_err(StartupError::Redis)?,
            )),
            None => None,
        };
        let bus: Arc<dyn ClusterBus> = match &redis_bus {
            Some(b) => b.clone(),
            None => Arc::new(domain::cluster::LocalOnly),
        };
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let mut stores = db.stores();
        let master = master_key::resolve(&config.keys, &config.server.data_dir)?;
        crate::audit::start(&config.audit, stores.audit.clone(), master.audit_chain());
        let client_cache =
            Arc::new(domain::client_cache::CachedClients::new(stores.clients.clone(), clock.clone(), CLIENT_CACHE_TTL));
        stores.clients = client_cache.clone();
        Ok(Self { config, stores, clock, bus, redis_bus, client_cache })
    }

    /// Tells running servers that a client changed (their caches drop it).
    pub async fn announce_client_changed(&self, id: &str) {
        self.bus.publish(&ClusterEvent::ClientChanged { id: id.to_owned() }).await;
    }

    /// Tells running gateways that an API key was revoked or rotated (their caches drop it).
    pub async fn announce_api_key_changed(&self, id: &str) {
        self.bus.publish(&ClusterEvent::ApiKeyChanged { id: id.to_owned() }).await;
    }

    /// Puts access tokens on the blocklist and tells running servers.
    ///
    /// # Errors
    /// The store failed (some entries may be written; running again is harmless).
    pub async fn blocklist(&self, tokens: Vec<domain::grant::FamilyToken>) -> Result<(), domain::StoreError> {
        for t in &tokens {
            self.stores.revocations.revoke(&t.jti, t.expires_at).await?;
        }
        self.announce_revoked(tokens).await;
        Ok(())
    }

    /// Revokes every access token of a user or client issued up to now (an incident
    /// cut-off, see `domain::revoked::Cutoff`), kept until the last such token expires.
    /// A client's cut-off reaches the cache's staleness bound into the future: an instance
    /// whose cached copy does not yet show the client disabled may still issue tokens until
    /// then, and those must fall under the cut-off too.
    ///
    /// # Errors
    /// The store failed.
    pub async fn cut_off(&self, kind: domain::revoked::CutoffKind, id: &str) -> Result<(), domain::StoreError> {
        let now = self.clock.now();
        let issued_before = match kind {
            domain::revoked::CutoffKind::Client => now + self.client_cache.max_staleness(),
            domain::revoked::CutoffKind::Subject => now,
        };
        let key = domain::revoked::Cutoff { kind, id: id.to_owned(), issued_before }.key();
        let until =
            issued_before + self.config.tokens.max_access_token_ttl.as_i64() + self.config.tokens.leeway.as_i64();
        self.blocklist(vec![domain::grant::FamilyToken { jti: key, expires_at: until }]).await
    }

    /// Tells running servers about access tokens this command put on the blocklist.
    pub async fn announce_revoked(&self, tokens: Vec<domain::grant::FamilyToken>) {
        if !tokens.is_empty() {
            self.bus.publish(&ClusterEvent::Revoked { tokens }).await;
        }
    }

    #[must_use]
    pub fn rotation_policy(&self) -> RotationPolicy {
        let c = &self.config;
        RotationPolicy {
            algorithm: c.keys.algorithm,
            interval: c.keys.rotation_interval.as_i64(),
            announce: c.keys.announce_period.as_i64(),
            max_token_ttl: c.tokens.max_access_token_ttl.as_i64(),
            leeway: c.tokens.leeway.as_i64(),
        }
    }

    /// Loads the key ring (creating the first key on a fresh store).
    ///
    /// # Errors
    /// The master key cannot be resolved or a stored key cannot be opened with it.
    pub async fn key_ring(&self) -> Result<Arc<KeyRing>, StartupError> {
        let master = master_key::resolve(&self.config.keys, &self.config.server.data_dir)?;
        let ring = KeyRing::load(self.stores.keys.clone(), master, self.rotation_policy(), self.clock.clone()).await?;
        Ok(Arc::new(ring))
    }
}

/// `portcullis serve`.
///
/// # Errors
/// Any startup failure; serving errors after startup end the process too.
pub async fn serve(config: Config) -> Result<(), StartupError> {
    let listen = config.server.listen;
    let grace = Duration::from_secs(config.server.shutdown_grace.0);
    let runtime = Arc::new(Runtime::open(config).await?);
    let keys = runtime.key_ring().await?;
    crate::audit::set_alerting(crate::alerts::Alerting::start(&runtime.config.alerts));
    let (listener, bound) = bind(listen).await?;
    let issuer = runtime.config.issuer(bound)?;
    let derived = master_derived(&runtime)?;
    let (mut state, revoked) = auth_state(&runtime, keys.clone(), issuer.clone(), derived.dpop.clone())?;
    let admin_tokens = TokenService::clone(&state.tokens);
    let mut tasks = Vec::new();
    let gateway_protection = protect(&runtime, &mut state, &mut tasks)?;
    let proxies = Arc::new(
        domain::netaddr::TrustedProxies::parse(&runtime.config.server.trusted_proxies)
            .map_err(StartupError::RateLimit)?,
    );
    let web_origins = state.web_origins.clone();
    let tls = runtime.config.tls.clone();
    let (certs, gateway_certs) = cert_reloaders(&tls)?;
    let hsts = tls.hsts();
    let metrics = crate::metrics::install();
    let router = authserver::router(state).layer(axum::middleware::from_fn(crate::metrics::track));
    let router = transport::secure_headers(router, hsts.clone());
    tasks.push(crate::background::spawn_maintenance(&runtime, keys.clone()));
    tasks.extend(spawn_cert_reloads(&certs, &gateway_certs, Duration::from_secs(tls.reload_interval.0)));
    let authz = policies(&runtime, &mut tasks)?;
    let admin_api = crate::admin_api::AdminApi {
        runtime: runtime.clone(),
        keys: keys.clone(),
        tokens: admin_tokens,
        hasher: runtime.config.passwords.hasher()?,
        authz: authz.clone(),
    };
    let gw =
        build_gateway(&runtime, issuer.as_str(), keys.clone(), revoked.clone(), gateway_protection, authz, derived);
    let api_keys = gw.clone();
    let gateway = match gw {
        Some(gw) => Some(gateway_listener(&runtime, gw, certs.is_some(), hsts, &mut tasks).await?),
        None => None,
    };
    let redirect = match tls.redirect_listen {
        Some(addr) => {
            let (listener, bound_redirect) = bind(addr).await?;
            tracing::info!(addr = %bound_redirect, "redirect listening");
            Some(listener)
        }
        None => None,
    };
    let admin = admin_listener(&runtime.config.admin, metrics, Arc::new(admin_api), &mut tasks).await?;
    tasks.extend(crate::background::spawn_revocation_sync(&runtime, revoked, keys, api_keys));
    tasks.push(crate::background::spawn_web_origins(&runtime, web_origins));
    tasks.push(crate::background::spawn_store_probe(&runtime));
    if let Some(endpoint) = &runtime.config.log.otlp_endpoint {
        tasks.extend(crate::otlp::start(endpoint.clone(), runtime.config.log.service_name.clone()));
    }

    tracing::info!(addr = %bound, issuer = %issuer, tls = certs.is_some(), "portcullis listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let handshake = Duration::from_secs(tls.handshake_timeout.0);
    let mut listeners = tokio::task::JoinSet::new();
    let serve =
        |listener, router, certs| run_listener(listener, router, certs, proxies.clone(), handshake, stop_rx.clone());
    listeners.spawn(serve(listener, router, certs.clone()));
    if let Some((listener, router)) = gateway {
        listeners.spawn(serve(listener, router, gateway_certs.clone()));
    }
    if let Some((listener, router, certs)) = admin {
        // Plain HTTP on a private address, unless `admin.client_ca_file` asks for mTLS.
        listeners.spawn(serve(listener, router, certs));
    }
    if let Some(listener) = redirect {
        let router = transport::secure_headers(transport::redirect_router(tls.redirect_https_port), None);
        listeners.spawn(serve(listener, router, None));
    }
    let result = run_until_stopped(listeners, &stop_tx, grace).await;
    for task in tasks {
        task.abort();
    }
    tracing::info!("portcullis stopped");
    result
}

/// Rate limits and bans (unless `rate_limit.enabled = false`): sets the authorization
/// server's, starts the ban sync, and returns the gateway's.
fn protect(
    runtime: &Runtime,
    state: &mut AppState,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Option<gateway::limits::Protection>, StartupError> {
    let Some((guard, compiled)) = crate::protection::guard(runtime).map_err(StartupError::RateLimit)? else {
        return Ok(None);
    };
    let headers_on_success = runtime.config.rate_limit.headers_on_success;
    state.protection = Some(Arc::new(authserver::limits::AuthProtection {
        guard: guard.clone(),
        limits: compiled.endpoints,
        headers_on_success,
    }));
    tasks.push(crate::background::spawn_ban_sync(guard.clone()));
    Ok(Some(gateway::limits::Protection { guard, defaults: compiled.gateway_defaults, headers_on_success }))
}

/// Certificate reloading: the authorization server's, and the gateway's when it has its own.
fn spawn_cert_reloads(
    certs: &Option<Arc<CertReloader>>,
    gateway: &Option<Arc<CertReloader>>,
    every: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut reloaders: Vec<Arc<CertReloader>> = certs.iter().cloned().collect();
    if let (Some(gw), Some(main)) = (gateway, certs)
        && !Arc::ptr_eq(gw, main)
    {
        reloaders.push(gw.clone());
    }
    reloaders.into_iter().map(|r| tokio::spawn(r.run(every))).collect()
}

/// The gateway's listener and router; starts the JWKS refreshers of external issuers.
async fn gateway_listener(
    runtime: &Runtime,
    gw: Arc<gateway::Gateway>,
    tls: bool,
    hsts: Option<axum::http::HeaderValue>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<(TcpListener, axum::Router), StartupError> {
    let (listener, bound) = bind(runtime.config.gateway.listen).await?;
    for issuer in gw.authenticator().external_issuers() {
        tasks.push(tokio::spawn(issuer.run_refresher(runtime.clock.clone())));
    }
    tracing::info!(
        addr = %bound,
        tls,
        client_certificates = runtime.config.tls.client_ca_file.is_some(),
        routes = runtime.config.gateway.routes.len(),
        "gateway listening"
    );
    Ok((listener, transport::secure_headers(gateway::router(gw), hsts)))
}

/// The admin listener (`/metrics`), unless disabled.
async fn admin_listener(
    config: &crate::admin::AdminConfig,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    api: Arc<crate::admin_api::AdminApi>,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<Option<AdminListener>, StartupError> {
    if !config.enabled {
        return Ok(None);
    }
    let tls = &api.runtime.config.tls;
    let certs = match (&config.client_ca_file, tls.files()) {
        (Some(ca), Some((cert, key))) => {
            let verifier = transport::client_verifier(ca, transport::ClientAuth::Required)?;
            let certs = CertReloader::new(cert.to_owned(), key.to_owned(), Some(verifier))?;
            tasks.push(tokio::spawn(certs.clone().run(Duration::from_secs(tls.reload_interval.0))));
            Some(certs)
        }
        _ => None,
    };
    let (listener, bound) = bind(config.listen).await?;
    tracing::info!(addr = %bound, mtls = certs.is_some(), "admin listening");
    tasks.extend(metrics.clone().map(crate::admin::spawn_upkeep));
    Ok(Some((listener, crate::admin::router(metrics, api), certs)))
}

type AdminListener = (TcpListener, axum::Router, Option<Arc<CertReloader>>);

/// Role permissions, and the Cedar engine with its reloader when a policy directory is set.
fn policies(
    runtime: &Runtime,
    tasks: &mut Vec<tokio::task::JoinHandle<()>>,
) -> Result<gateway::authz::Authz, StartupError> {
    let c = &runtime.config.authorization;
    let engine = match &c.policies_dir {
        Some(dir) => {
            let policies = crate::authz::load_dir(dir).map_err(|p| StartupError::Policies(p.join("; ")))?;
            tracing::info!(dir = %dir.display(), policies = policies.len(), "policies loaded");
            let engine = Arc::new(domain::policy::PolicyEngine::new(policies));
            tasks.push(crate::authz::spawn_reloader(dir.clone(), engine.clone()));
            Some(engine)
        }
        None => None,
    };
    Ok(gateway::authz::Authz { permissions: c.permissions(), engine, log_allows: c.log_allows })
}

/// The authorization server's state: token service, sign-in service, pages; and the
/// in-memory revocation mirror the gateway shares.
fn auth_state(
    runtime: &Runtime,
    keys: Arc<KeyRing>,
    issuer: domain::settings::Issuer,
    dpop: domain::dpop::Dpop,
) -> Result<(AppState, Arc<domain::revoked::RevokedSet>), StartupError> {
    let c = &runtime.config;
    let settings = TokenSettings {
        issuer,
        access_token_ttl: c.tokens.access_token_ttl.as_u32(),
        max_access_token_ttl: c.tokens.max_access_token_ttl.as_u32(),
        leeway: c.tokens.leeway.as_u32(),
        flow: c.signin.flow(),
    };
    let tokens =
        TokenService::new(settings, &runtime.stores, keys, runtime.clock.clone()).with_bus(runtime.bus.clone());
    let revoked = tokens.revoked_set().clone();
    // Failed logins counted across instances when they share a Redis.
    let policy = c.signin.throttle();
    let throttle: Arc<dyn domain::throttle::Throttle> = match redis_of(c) {
        Some((url, prefix, timeout)) => {
            Arc::new(store::RedisThrottle::new(url, prefix, timeout, policy).map_err(StartupError::Redis)?)
        }
        None => Arc::new(domain::throttle::LoginThrottle::new(policy)),
    };
    let signin = SignIn::new(tokens, &runtime.stores, c.passwords.hasher()?, throttle);
    let sender = authserver::SenderConstraints {
        checker: dpop,
        nonce_at_token: c.dpop.nonce_at_token_endpoint,
        nonce_at_userinfo: c.dpop.nonce_at_resources,
        mtls: c.tls.client_ca_file.is_some() && c.tls.enabled(),
    };
    let state = AppState::new(signin, runtime.stores.health.clone(), c.keys.algorithm, sender)
        .map_err(|e| StartupError::Templates(e.to_string()))?;
    Ok((state, revoked))
}

/// What the listeners derive from the master key besides the key ring, read once.
struct MasterDerived {
    /// The DPoP checker both listeners share (`[dpop]`).
    dpop: domain::dpop::Dpop,
    /// Seals backend-for-frontend sessions.
    bff: Arc<domain::bff::BffSealer>,
}

/// The DPoP checker (its replay cache in Redis when `[redis]` is set) and the BFF sealer.
fn master_derived(runtime: &Runtime) -> Result<MasterDerived, StartupError> {
    let c = &runtime.config;
    let master = master_key::resolve(&c.keys, &c.server.data_dir)?;
    let dpop = c.dpop.build(&master, redis_of(c), runtime.clock.clone()).map_err(StartupError::Redis)?;
    Ok(MasterDerived { dpop, bff: Arc::new(domain::bff::BffSealer::new(master)) })
}

/// `[redis]`: URL, key prefix and timeout, when set.
fn redis_of(c: &Config) -> Option<(&str, &str, Duration)> {
    c.redis.url.as_ref().map(|u| (u.0.as_str(), c.redis.key_prefix.as_str(), Duration::from_millis(c.redis.timeout_ms)))
}

/// Certificates for the listeners: one reloader for the authorization server, and for the
/// gateway the same one — or, with `tls.client_ca_file`, its own that asks for client
/// certificates. With a client CA the authorization server asks for (never requires) a
/// certificate too: `tls_client_auth` clients and certificate-bound tokens (RFC 8705).
type Reloaders = (Option<Arc<CertReloader>>, Option<Arc<CertReloader>>);

fn cert_reloaders(tls: &transport::TlsConfig) -> Result<Reloaders, StartupError> {
    let certs = match (tls.files(), &tls.client_ca_file) {
        (Some((cert, key)), Some(ca)) => {
            let verifier = transport::client_verifier(ca, transport::ClientAuth::Optional)?;
            Some(CertReloader::new(cert.to_owned(), key.to_owned(), Some(verifier))?)
        }
        (Some((cert, key)), None) => Some(CertReloader::new(cert.to_owned(), key.to_owned(), None)?),
        (None, _) => None,
    };
    let gateway = match (tls.files(), &tls.client_ca_file) {
        (Some((cert, key)), Some(ca)) => {
            let verifier = transport::client_verifier(ca, tls.client_auth)?;
            Some(CertReloader::new(cert.to_owned(), key.to_owned(), Some(verifier))?)
        }
        _ => certs.clone(),
    };
    Ok((certs, gateway))
}

/// Binds a listener and reports the address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let listener = TcpListener::bind(addr).await.map_err(|e| StartupError::Bind(addr, e))?;
    let bound = listener.local_addr().map_err(|e| StartupError::Bind(addr, e))?;
    Ok((listener, bound))
}

/// Waits for SIGTERM/SIGINT (or a listener failing), then lets every listener drain in
/// parallel within the one grace period.
async fn run_until_stopped(
    mut listeners: tokio::task::JoinSet<std::io::Result<()>>,
    stop_tx: &tokio::sync::watch::Sender<bool>,
    grace: Duration,
) -> Result<(), StartupError> {
    let result = tokio::select! {
        // A listener never ends on its own; if one does, stop the others too.
        Some(ended) = listeners.join_next() => {
            let _ = stop_tx.send(true);
            ended.map_err(|e| StartupError::Serve(std::io::Error::other(e))).and_then(|r| r.map_err(StartupError::Serve))
        }
        () = shutdown_signal() => {
            tracing::info!(grace_seconds = grace.as_secs(), "shutting down: no new connections, finishing in-flight requests");
            let _ = stop_tx.send(true);
            Ok(())
        }
    };
    let drained = tokio::time::timeout(grace, async { while listeners.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("grace period over; closing remaining connections");
        listeners.abort_all();
    }
    result
}

/// Serves one listener (over TLS when `certs` is set) until the stop signal.
async fn run_listener(
    listener: TcpListener,
    router: axum::Router,
    certs: Option<Arc<CertReloader>>,
    proxies: Arc<domain::netaddr::TrustedProxies>,
    handshake_timeout: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    match certs {
        Some(certs) => {
            transport::serve(TlsListener::new(listener, certs, handshake_timeout)?, router, proxies, stop).await
        }
        None => transport::serve(listener, router, proxies, stop).await,
    }
}

/// The gateway, when routes are configured.
fn build_gateway(
    runtime: &Runtime,
    issuer: &str,
    keys: Arc<KeyRing>,
    revoked: Arc<domain::revoked::RevokedSet>,
    protection: Option<gateway::limits::Protection>,
    authz: gateway::authz::Authz,
    derived: MasterDerived,
) -> Option<Arc<gateway::Gateway>> {
    let config = &runtime.config.gateway;
    if config.routes.is_empty() && config.bff.is_empty() {
        return None;
    }
    // Validated at load time; a route that fails to compile here is skipped loudly.
    let routes = config
        .routes
        .iter()
        .filter_map(|r| {
            with_files(r)
                .and_then(|r| gateway::routes::Route::compile(&r))
                .map_err(|e| tracing::error!(route = %r.name, cause = %e, "route skipped"))
                .ok()
        })
        .collect();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap_or_default();
    let external =
        config.issuers.iter().map(|c| Arc::new(gateway::jwks::ExternalIssuer::new(c.clone(), http.clone()))).collect();
    let keys_for_bff = keys.clone();
    let auth = gateway::auth::Authenticator::new(
        issuer.to_owned(),
        keys,
        external,
        revoked,
        config.token_cache_size,
        runtime.clock.clone(),
        runtime.config.tokens.leeway.as_i64(),
    )
    .with_claims(runtime.config.authorization.claim_map());
    let api_keys = gateway::apikey::ApiKeyVerifier::new(
        runtime.stores.api_keys.clone(),
        config.api_key_cache_ttl.as_i64(),
        config.token_cache_size,
    );
    let table = gateway::routes::RouteTable::new(routes);
    let dpop = gateway::DpopCheck {
        checker: derived.dpop,
        require_nonce: runtime.config.dpop.nonce_at_resources,
        public_origin: runtime.config.dpop.gateway_public_origin.clone(),
        https: runtime.config.tls.enabled(),
    };
    let mut gateway =
        gateway::Gateway::new(table, auth, api_keys, config.headers.clone()).with_authz(authz).with_dpop(dpop);
    if !config.bff.is_empty() {
        let bff = gateway::bff::Bff::new(
            &config.bff,
            issuer,
            runtime.stores.bff_sessions.clone(),
            derived.bff,
            keys_for_bff,
            runtime.clock.clone(),
        )
        .with_http(http)
        .with_external(gateway.authenticator().external_issuers());
        gateway = gateway.with_bff(bff);
    }
    Some(Arc::new(match protection {
        Some(p) => gateway.with_protection(p),
        None => gateway,
    }))
}

/// The route with its upstream CA file and JSON Schema read (the gateway crate reads no
/// files; `config check` validated both). A file that cannot be read now makes the route
/// fail to compile — it is skipped (404), never served without its schema.
fn with_files(route: &gateway::config::RouteConfig) -> Result<gateway::config::RouteConfig, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut route = route.clone();
    if let Some(file) = &route.upstream_ca_file {
        let certs = CertificateDer::pem_file_iter(file)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("upstream_ca_file {}: {e}", file.display()))?;
        route.upstream_roots = certs.into_iter().map(|c| c.to_vec()).collect();
    }
    if let Some(file) = &route.json_schema {
        route.json_schema_doc = Some(crate::config::read_json_schema(file)?);
    }
    Ok(route)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
