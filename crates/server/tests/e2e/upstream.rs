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
}

type Log = Arc<Mutex<Vec<Seen>>>;

#[derive(Clone, Default)]
pub struct Upstream {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub addr: Option<SocketAddr>,
}

impl Upstream {
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
