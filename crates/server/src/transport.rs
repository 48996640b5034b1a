//! Transport for both listeners: TLS with rustls (aws-lc-rs provider, TLS 1.2 and 1.3 only,
//! HTTP/2 and HTTP/1.1 by ALPN), certificate hot reload, the optional plain-HTTP listener
//! that only redirects to HTTPS, security headers and HSTS (RFC 6797) on every response,
//! and `portcullis tls dev-cert`.
//!
//! TLS handshakes run in their own tasks (with a timeout), never in the accept loop, so a
//! slow or silent client cannot hold up other connections.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use axum::Router;
use axum::http::{HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use domain::netaddr::{ClientIp, TrustedProxies};
use domain::settings::Seconds;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower_http::set_header::SetResponseHeaderLayer;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The `[tls]` section: one certificate for both listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first). TLS is on when this and `key_file` are set.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key_file: Option<PathBuf>,
    /// How often the files are checked for changes; a changed pair is loaded without a
    /// restart (a broken pair is logged and the old one kept).
    pub reload_interval: Seconds,
    /// `Strict-Transport-Security: max-age`; 0 sends no HSTS header.
    pub hsts_max_age: Seconds,
    /// Add `includeSubDomains` to HSTS (every subdomain must then be HTTPS too).
    pub hsts_include_subdomains: bool,
    /// A plain-HTTP listener that answers every request with a redirect to HTTPS.
    pub redirect_listen: Option<SocketAddr>,
    /// The HTTPS port the redirect points to (omitted from the URL when 443).
    pub redirect_https_port: u16,
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Seconds,
    /// PEM CA bundle the gateway listener verifies client certificates against (mTLS,
    /// RFC 8705). Routes with `auth = "mtls"` need it.
    pub client_ca_file: Option<PathBuf>,
    /// `optional`: ask for a certificate, accept connections without one (routes that do
    /// not use mTLS still work); `required`: refuse the handshake without a valid one.
    pub client_auth: ClientAuth,
}

/// Whether the gateway listener insists on a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Optional,
    Required,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            reload_interval: Seconds(10),
            hsts_max_age: Seconds(365 * 86_400),
            hsts_include_subdomains: false,
            redirect_listen: None,
            redirect_https_port: 443,
            handshake_timeout: Seconds(10),
            client_ca_file: None,
            client_auth: ClientAuth::Optional,
        }
    }
}

impl TlsConfig {
    /// The certificate and key files, when TLS is on (both set; `validate` refuses one).
    #[must_use]
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }

    #[must_use]
    pub fn enabled(&self) -> bool {
        self.files().is_some()
    }

    /// Every problem with the section.
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.cert_file.is_some() != self.key_file.is_some() {
            errors.push("tls: cert_file and key_file must be set together".to_owned());
        }
        if self.redirect_listen.is_some() && !self.enabled() {
            errors.push("tls.redirect_listen needs TLS (cert_file and key_file)".to_owned());
        }
        if self.client_ca_file.is_some() && !self.enabled() {
            errors.push("tls.client_ca_file needs TLS (cert_file and key_file)".to_owned());
        }
        if self.reload_interval.0 == 0 || self.handshake_timeout.0 == 0 {
            errors.push("tls: reload_interval and handshake_timeout must be positive".to_owned());
        }
        errors
    }

    /// The HSTS header value, when TLS is on and HSTS is not disabled.
    #[must_use]
    pub fn hsts(&self) -> Option<HeaderValue> {
        if !self.enabled() || self.hsts_max_age.0 == 0 {
            return None;
        }
        let sub = if self.hsts_include_subdomains { "; includeSubDomains" } else { "" };
        HeaderValue::from_str(&format!("max-age={}{sub}", self.hsts_max_age.0)).ok()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(String, String),
    #[error("{0} holds no certificate")]
    NoCertificate(String),
    #[error("the certificate and key are not usable: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA {0}: {1}")]
    ClientCa(String, String),
}

/// A verifier of client certificates against the CA bundle in `ca_file`.
///
/// # Errors
/// The file cannot be read or holds no usable CA certificate.
pub fn client_verifier(
    ca_file: &Path,
    auth: ClientAuth,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let err = |e: &dyn std::fmt::Display| TlsError::ClientCa(ca_file.display().to_string(), e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| err(&e))? {
        roots.add(cert.map_err(|e| err(&e))?).map_err(|e| err(&e))?;
    }
    if roots.is_empty() {
        return Err(err(&"no CA certificate in the file"));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if auth == ClientAuth::Optional { builder.allow_unauthenticated() } else { builder };
    builder.build().map_err(|e| err(&e))
}

/// Loads the certificate chain and key into a server config.
///
/// # Errors
/// Unreadable or malformed files, or a key that does not match the certificate.
pub fn load(
    cert_file: &Path,
    key_file: &Path,
    clients: Option<&Arc<dyn rustls::server::danger::ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let read_err = |p: &Path, e: &dyn std::fmt::Display| TlsError::Read(p.display().to_string(), e.to_string());
    let certs = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| read_err(cert_file, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(cert_file, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(cert_file.display().to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| read_err(key_file, &e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // TLS 1.2 and 1.3 only (rustls has nothing older).
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match clients {
        Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificate in use, swapped atomically when the files change.
#[derive(Debug)]
pub struct CertReloader {
    cert_file: PathBuf,
    key_file: PathBuf,
    clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    current: ArcSwap<ServerConfig>,
    stamp: std::sync::Mutex<Option<(SystemTime, SystemTime)>>,
}

impl CertReloader {
    /// # Errors
    /// The initial pair cannot be loaded (startup fails: no silent plain-text fallback).
    pub fn new(
        cert_file: PathBuf,
        key_file: PathBuf,
        clients: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    ) -> Result<Arc<Self>, TlsError> {
        let config = load(&cert_file, &key_file, clients.as_ref())?;
        let stamp = std::sync::Mutex::new(stamps(&cert_file, &key_file));
        Ok(Arc::new(Self { current: ArcSwap::new(config), cert_file, key_file, clients, stamp }))
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Reloads when either file's modification time changed; keeps the old pair on failure.
    pub fn check(&self) {
        let now = stamps(&self.cert_file, &self.key_file);
        let Ok(mut seen) = self.stamp.lock() else { return };
        if now == *seen {
            return;
        }
        match load(&self.cert_file, &self.key_file, self.clients.as_ref()) {
            Ok(config) => {
                self.current.store(config);
                *seen = now;
                tracing::info!(event = "tls.reloaded", cert = %self.cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                // Keep trying: the pair may be half-written (cert replaced, key not yet).
                tracing::warn!(event = "tls.reload_failed", cause = %e, "TLS certificate not reloaded; keeping the old one");
            }
        }
    }

    /// Checks the files every `every` until aborted.
    pub async fn run(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            self.check();
        }
    }
}

fn stamps(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((modified(cert)?, modified(key)?))
}

/// A listener whose connections are TLS streams, handshaken off the accept loop.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// # Errors
    /// The listener's address cannot be read.
    pub fn new(tcp: TcpListener, certs: Arc<CertReloader>, handshake_timeout: Duration) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(256);
        let accept_task = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(cause = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let acceptor = certs.acceptor();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, cause = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local, accept_task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task ended (only when aborted): no more connections, ever.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// What the server knows about a connection: the peer's address and, on an mTLS listener,
/// the client certificate the handshake verified.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub certificate: Option<Arc<domain::client::ClientCertificate>>,
}

/// Connections that may carry a verified client certificate.
pub trait PeerIo {
    fn client_certificate(&self) -> Option<domain::client::ClientCertificate>;
}

impl PeerIo for TcpStream {
    fn client_certificate(&self) -> Option<domain::client::ClientCertificate> {
        None
    }
}

impl PeerIo for TlsStream<TcpStream> {
    fn client_certificate(&self) -> Option<domain::client::ClientCertificate> {
        // rustls hands out the chain only after its verifier accepted it.
        let der = self.get_ref().1.peer_certificates()?.first()?;
        describe_certificate(der)
    }
}

impl Peer {
    fn of<L: axum::serve::Listener<Addr = SocketAddr>>(stream: &axum::serve::IncomingStream<'_, L>) -> Self
    where
        L::Io: PeerIo,
    {
        Self { addr: *stream.remote_addr(), certificate: stream.io().client_certificate().map(Arc::new) }
    }
}

// One impl per listener type: axum's blanket impl for `TapIo` rules out a generic one.
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Self {
        Self::of(&stream)
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        Self::of(&stream)
    }
}

/// The identity of a client certificate (RFC 8705 §2.1.2 names these subject forms): the
/// first SAN URI (SPIFFE IDs), else the first SAN DNS name, else the subject's CN.
#[must_use]
pub fn describe_certificate(der: &[u8]) -> Option<domain::client::ClientCertificate> {
    use sha2::Digest as _;
    use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let (mut uri, mut dns) = (None, None);
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::URI(u) if uri.is_none() => uri = Some((*u).to_owned()),
                GeneralName::DNSName(d) if dns.is_none() => dns = Some((*d).to_owned()),
                _ => {}
            }
        }
    }
    let cn = cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_owned);
    let subject = uri.or(dns).or(cn).filter(|s| !s.is_empty() && !s.chars().any(char::is_control))?;
    let digest = sha2::Sha256::digest(der);
    Some(domain::client::ClientCertificate {
        subject,
        fingerprint: domain::secret::hex(&digest),
        thumbprint: {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
        },
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// Puts the connection's facts on each request: `ConnectInfo<SocketAddr>` (the socket
/// peer), the client's address ([`ClientIp`]: behind a trusted proxy, the forwarded one —
/// what handlers, limits and logs read), and the verified client certificate, if any.
async fn peer_extensions(
    axum::extract::State(proxies): axum::extract::State<Arc<TrustedProxies>>,
    mut req: axum::extract::Request,
) -> axum::extract::Request {
    use axum::extract::ConnectInfo;
    req.extensions_mut().remove::<ClientIp>();
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<Peer>>().cloned() {
        let client = if proxies.is_empty() {
            peer.addr.ip()
        } else {
            let headers = req.headers();
            let values = |name| headers.get_all(name).into_iter().filter_map(|v| v.to_str().ok());
            proxies.client_ip(peer.addr.ip(), values(header::FORWARDED), values(X_FORWARDED_FOR))
        };
        req.extensions_mut().insert(ClientIp(client));
        req.extensions_mut().insert(ConnectInfo(peer.addr));
        // A client cannot inject this: it only ever comes from the TLS session.
        req.extensions_mut().remove::<domain::client::ClientCertificate>();
        if let Some(cert) = peer.certificate {
            req.extensions_mut().insert((*cert).clone());
        }
    }
    req
}

/// Serves `router` on `listener` until `stop` fires, with the [`Peer`] facts on each request.
///
/// # Errors
/// The server failed.
pub async fn serve<L>(
    listener: L,
    router: Router,
    proxies: Arc<TrustedProxies>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> io::Result<()>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
    for<'a> Peer: axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let router = router.layer(axum::middleware::map_request_with_state(proxies, peer_extensions));
    axum::serve(listener, router.into_make_service_with_connect_info::<Peer>())
        .with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        })
        .await
}

/// Security headers on every response (set only where the handler or upstream did not),
/// and HSTS when the listener is HTTPS.
pub fn secure_headers(router: Router, hsts: Option<HeaderValue>) -> Router {
    let fixed: [(HeaderName, &'static str); 3] = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    let mut router = router;
    for (name, value) in fixed {
        router = router.layer(SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value)));
    }
    if let Some(hsts) = hsts {
        // Ours, always: an upstream must not weaken the policy of the gateway's host.
        router = router.layer(SetResponseHeaderLayer::overriding(header::STRICT_TRANSPORT_SECURITY, hsts));
    }
    router
}

/// The plain-HTTP listener: every request is answered 308 to the same host and path over
/// HTTPS (308 keeps the method and body). Nothing is ever served in plain text.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new()
        .fallback(move |req: axum::extract::Request| async move { redirect(req.uri(), req.headers(), https_port) })
}

fn redirect(uri: &Uri, headers: &axum::http::HeaderMap, https_port: u16) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| uri.host()).unwrap_or_default();
    let name = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h);
    let valid = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    if !valid {
        let body = serde_json::json!({
            "type": "about:blank", "title": "Bad Request", "status": 400,
            "detail": "plain HTTP is not served; use HTTPS",
        });
        return (StatusCode::BAD_REQUEST, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string())
            .into_response();
    }
    let port = if https_port == 443 { String::new() } else { format!(":{https_port}") };
    let path = uri.path_and_query().map_or("/", axum::http::uri::PathAndQuery::as_str);
    let location = format!("https://{name}{port}{path}");
    match HeaderValue::from_str(&location) {
        Ok(v) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, v)]).into_response(),
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

/// A self-signed certificate for local development (ECDSA P-256, 90 days): PEM certificate
/// and key.
///
/// # Errors
/// A host that is not a valid DNS name or IP address.
pub fn dev_cert(hosts: &[String]) -> Result<(String, String), String> {
    let dns_name = |h: &str| {
        !h.is_empty()
            && h.split('.').all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    if let Some(bad) = hosts.iter().find(|h| h.parse::<std::net::IpAddr>().is_err() && !dns_name(h)) {
        return Err(format!("{bad:?} is neither a DNS name nor an IP address"));
    }
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| e.to_string())?;
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, "Portcullis development certificate");
    params.distinguished_name = name;
    #[expect(clippy::disallowed_methods, reason = "a new certificate is valid from the wall-clock now")]
    let start = SystemTime::now();
    params.not_before = start.into();
    params.not_after = (start + Duration::from_secs(90 * 86_400)).into();
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_and_hsts() {
        let mut c = TlsConfig::default();
        assert!(c.validate().is_empty());
        assert_eq!(c.hsts(), None, "no HSTS over plain HTTP");
        c.cert_file = Some("c.pem".into());
        assert_eq!(c.validate().len(), 1);
        c.key_file = Some("k.pem".into());
        assert!(c.validate().is_empty());
        assert_eq!(c.hsts().unwrap(), "max-age=31536000");
        c.hsts_include_subdomains = true;
        assert_eq!(c.hsts().unwrap(), "max-age=31536000; includeSubDomains");
        c.hsts_max_age = Seconds(0);
        assert_eq!(c.hsts(), None);
    }

    #[test]
    fn dev_cert_loads_and_mismatched_pairs_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = dev_cert(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let (_, other_key) = dev_cert(&["localhost".into()]).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (c, k, k2) = (write("c.pem", &cert), write("k.pem", &key), write("k2.pem", &other_key));
        assert!(load(&c, &k, None).is_ok());
        assert!(matches!(load(&c, &k2, None), Err(TlsError::Rustls(_))), "key must match the certificate");
        assert!(matches!(load(&k, &k, None), Err(TlsError::NoCertificate(_))));
        assert!(matches!(load(&dir.path().join("missing"), &k, None), Err(TlsError::Read(..))));
        assert!(dev_cert(&["not a host!".into()]).is_err());
    }

    #[test]
    fn redirects_keep_host_and_path() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("api.example.com:8081"));
        let uri: Uri = "/v1/x?a=1".parse().unwrap();
        let r = redirect(&uri, &h, 8443);
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()[header::LOCATION], "https://api.example.com:8443/v1/x?a=1");
        let r = redirect(&uri, &h, 443);
        assert_eq!(r.headers()[header::LOCATION], "https://api.example.com/v1/x?a=1");
        h.insert(header::HOST, HeaderValue::from_static("evil.example/x@y"));
        assert_eq!(redirect(&uri, &h, 443).status(), 400);
    }
}
