//! A real upstream for gateway tests: an HTTP server on 127.0.0.1:0 that records every
//! request it receives and echoes it back as JSON.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::IntoResponse;

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub body: Bytes,
    pub version: axum::http::Version,
}

type Log = Arc<Mutex<Vec<Seen>>>;

#[derive(Clone, Default)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub addr: Option<SocketAddr>,
}

impl Upstream {
    /// Starts an echo server over TLS (h2 and HTTP/1.1 by ALPN) with this certificate.
    pub async fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> Self {
        let seen: Log = Arc::default();
        let app = Router::new().fallback(echo).with_state((seen.clone(), None));
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let certs = portcullis_server::transport::CertReloader::new(cert.to_owned(), key.to_owned(), None).unwrap();
        let listener = portcullis_server::transport::TlsListener::new(tcp, certs, Duration::from_secs(5)).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { seen, addr: Some(addr) }
    }

    /// Starts an echo server; with `delay`, every answer waits that long first.
    pub async fn start(delay: Option<Duration>) -> Self {
        let seen: Log = Arc::default();
        let app = Router::new().fallback(echo).with_state((seen.clone(), delay));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { seen, addr: Some(addr) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr.unwrap())
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    pub fn last(&self) -> Seen {
        self.seen.lock().unwrap().last().cloned().expect("upstream saw a request")
    }
}

async fn echo(State((seen, delay)): State<(Log, Option<Duration>)>, req: Request) -> impl IntoResponse {
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let headers: BTreeMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("<binary>").to_owned()))
        .collect();
    let record = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: headers.clone(),
        body: body.clone(),
        version: parts.version,
    };
    seen.lock().unwrap().push(record);
    axum::Json(serde_json::json!({ "path": parts.uri.path(), "headers": headers, "upstream": "echo" }))
}

/// Sends raw bytes and returns (status, whole response text); for requests that an HTTP
/// client library would refuse to send or would "fix" first.
pub async fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let host = addr.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn https_and_http2_upstreams() {
    use crate::harness::{Instance, http};
    // An upstream with a private CA (a dev certificate for 127.0.0.1), over TLS.
    let instance = Instance::new();
    let dir = instance.data_dir().join("upstream-tls");
    assert_eq!(instance.cli(&["tls", "dev-cert", "--out", dir.to_str().unwrap()]).status, 0);
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let tls_upstream = Upstream::start_tls(&cert, &key).await;
    let plain = Upstream::start(None).await;
    let instance = instance.with_config(&format!(
        r#"
[[gateway.routes]]
name = "tls-auto"
path_prefix = "/tls"
upstreams = ["https://{tls}"]
upstream_ca_file = "{ca}"
auth = "none"

[[gateway.routes]]
name = "tls-h1"
path_prefix = "/tls1"
upstreams = ["https://{tls}"]
upstream_ca_file = "{ca}"
upstream_protocol = "http1"
auth = "none"

[[gateway.routes]]
name = "tls-untrusted"
path_prefix = "/untrusted"
upstreams = ["https://{tls}"]
auth = "none"

[[gateway.routes]]
name = "h2c"
path_prefix = "/h2c"
upstreams = ["{plain}"]
upstream_protocol = "http2"
auth = "none"
"#,
        tls = tls_upstream.addr.unwrap(),
        ca = cert.display(),
        plain = plain.url(),
    ));
    let server = instance.serve();
    let resp = http().get(server.gw("/tls/a")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(tls_upstream.last().version, axum::http::Version::HTTP_2, "h2 by ALPN");
    assert_eq!(tls_upstream.last().path, "/tls/a");
    assert_eq!(http().get(server.gw("/tls1/b")).send().await.unwrap().status(), 200);
    assert_eq!(tls_upstream.last().version, axum::http::Version::HTTP_11);
    let before = tls_upstream.count();
    assert_eq!(http().get(server.gw("/untrusted/c")).send().await.unwrap().status(), 502, "unknown CA: no connection");
    assert_eq!(tls_upstream.count(), before);
    assert_eq!(http().get(server.gw("/h2c/d")).send().await.unwrap().status(), 200);
    assert_eq!(plain.last().version, axum::http::Version::HTTP_2, "prior-knowledge h2c");
}
