//! A minimal W3C WebDriver client (the eight commands the browser tests use) over reqwest,
//! driving Debian's headless Chromium through chromedriver. A full client crate would add
//! a second HTTP stack to the build for no gain here.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Why the browser cannot run on this machine.
pub fn unavailable() -> Option<String> {
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        if !std::path::Path::new(bin).exists() {
            return Some(format!("{bin} is not installed (Debian packages chromium and chromium-driver)"));
        }
    }
    None
}

/// chromedriver plus one headless Chromium session; both end when dropped.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

impl Browser {
    pub async fn start() -> Self {
        let reserved = crate::harness::reserve_port();
        let port = reserved.port;
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]
            }
        }}});
        let resp: Value = http.post(format!("{base}/session")).json(&caps).send().await.unwrap().json().await.unwrap();
        let session = resp["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {resp}")).to_owned();
        Self { driver, http, session: format!("{base}/session/{session}") }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp: Value = req.send().await.unwrap().json().await.unwrap();
        assert!(resp["value"].get("error").is_none(), "webdriver {path}: {resp}");
        resp["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None).await.as_str().unwrap().to_owned()
    }

    pub async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None).await.as_str().unwrap().to_owned()
    }

    /// The element matching a CSS selector (waits up to 10 s for it to appear).
    pub async fn find(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let resp: Value = self
                .http
                .post(format!("{}/element", self.session))
                .json(&json!({ "using": "css selector", "value": css }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if let Some(obj) = resp["value"].as_object().filter(|o| o.get("error").is_none()) {
                return obj.values().next().and_then(Value::as_str).unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "no element {css}: {}", self.source().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/value"), Some(json!({ "text": text }))).await;
    }

    pub async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(reqwest::Method::POST, &format!("/element/{el}/click"), Some(json!({}))).await;
    }

    /// Runs JavaScript in the page and returns its result.
    pub async fn script(&self, js: &str) -> Value {
        self.call(reqwest::Method::POST, "/execute/sync", Some(json!({ "script": js, "args": [] }))).await
    }

    /// Waits until the current URL starts with `prefix`.
    pub async fn wait_for_url(&self, prefix: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().await;
            if url.starts_with(prefix) {
                return url;
            }
            assert!(Instant::now() < deadline, "stuck at {url}: {}", self.source().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: end the session (closes Chromium), then chromedriver.
        let session = self.session.clone();
        let _ = std::thread::spawn(move || {
            let _ = reqwest::blocking_delete(&session);
        })
        .join();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `reqwest` without its blocking feature: a tiny synchronous DELETE over a raw socket.
mod reqwest {
    pub use ::reqwest::*;

    pub fn blocking_delete(url: &str) -> std::io::Result<()> {
        use std::io::{Read as _, Write as _};
        let rest = url.trim_start_matches("http://");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut stream = std::net::TcpStream::connect(host)?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(stream, "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
        let mut sink = Vec::new();
        let _ = stream.read_to_end(&mut sink);
        Ok(())
    }
}
