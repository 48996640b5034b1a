//! Test harness: runs the real `portcullis` binary on 127.0.0.1:0 with its own temporary
//! data directory, captures every line it logs, and runs CLI commands against the same
//! data directory.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A data directory plus the environment every process of one test shares.
pub struct Instance {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
    config: Option<PathBuf>,
    /// On the PostgreSQL backend: (server URL, this test's scratch database URL).
    postgres: Option<(String, String)>,
}

/// Which backend the suite runs on: `PORTCULLIS_E2E_BACKEND=postgres` (with
/// `PORTCULLIS_TEST_POSTGRES_URL` and `PORTCULLIS_TEST_REDIS_URL`) runs every test on a
/// scratch PostgreSQL database of its own plus Redis (revocation bus, rate limits, bans);
/// otherwise SQLite in the test's data directory and in-memory limits.
pub fn backend() -> Option<(String, String)> {
    #[expect(clippy::disallowed_methods, reason = "the suite's own backend switch")]
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    if var("PORTCULLIS_E2E_BACKEND").as_deref() != Some("postgres") {
        return None;
    }
    let pg = var("PORTCULLIS_TEST_POSTGRES_URL")
        .expect("PORTCULLIS_E2E_BACKEND=postgres needs PORTCULLIS_TEST_POSTGRES_URL");
    let redis =
        var("PORTCULLIS_TEST_REDIS_URL").expect("PORTCULLIS_E2E_BACKEND=postgres needs PORTCULLIS_TEST_REDIS_URL");
    Some((pg, redis))
}

/// Runs a future to completion on a runtime of its own (the harness is synchronous and may
/// be called from inside a test's runtime).
pub fn block_on<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
    })
    .join()
    .expect("harness thread")
}

/// A loopback port held for the length of a test: bound with `SO_REUSEADDR` but not
/// listening. The kernel never hands it to another test's `bind(…:0)` while it is held
/// (dropping a probe listener and reusing its number races with those), a connection to it
/// is refused, and a process the test starts can still listen on it, because tokio and
/// chromedriver bind their listeners with `SO_REUSEADDR` too.
pub struct ReservedPort {
    pub port: u16,
    _socket: tokio::net::TcpSocket,
}

pub fn reserve_port() -> ReservedPort {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket.bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind a loopback port");
    let port = socket.local_addr().expect("bound address").port();
    ReservedPort { port, _socket: socket }
}

/// PostgreSQL and Redis URLs for tests that need them whatever the suite's backend, or
/// `None` (printing that the test skipped) off CI; on CI (`PORTCULLIS_TEST_REQUIRE_SERVICES`)
/// a missing service fails the test.
pub fn services(test: &str) -> Option<(String, String)> {
    #[expect(clippy::disallowed_methods, reason = "the suite's own service switch")]
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("PORTCULLIS_TEST_POSTGRES_URL"), var("PORTCULLIS_TEST_REDIS_URL")) {
        (Some(pg), Some(redis)) => Some((pg, redis)),
        _ => {
            assert!(
                var("PORTCULLIS_TEST_REQUIRE_SERVICES").is_none(),
                "{test}: PORTCULLIS_TEST_POSTGRES_URL and PORTCULLIS_TEST_REDIS_URL are required on CI"
            );
            eprintln!("{test}: skipped (needs PORTCULLIS_TEST_POSTGRES_URL and PORTCULLIS_TEST_REDIS_URL)");
            None
        }
    }
}

impl Instance {
    /// An instance on the suite's backend (see [`backend`]).
    pub fn new() -> Self {
        Self::on(backend())
    }

    /// An instance on a scratch PostgreSQL database + Redis (`Some((postgres, redis))`) or
    /// on SQLite (`None`).
    pub fn on(services: Option<(String, String)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env: Vec<(String, String)> = vec![
            ("PORTCULLIS_SERVER__LISTEN".into(), "127.0.0.1:0".into()),
            ("PORTCULLIS_GATEWAY__LISTEN".into(), "127.0.0.1:0".into()),
            ("PORTCULLIS_ADMIN__LISTEN".into(), "127.0.0.1:0".into()),
            ("PORTCULLIS_SERVER__DATA_DIR".into(), dir.path().display().to_string()),
            ("PORTCULLIS_LOG__FORMAT".into(), "json".into()),
            ("PORTCULLIS_LOG__LEVEL".into(), "info".into()),
        ];
        let postgres = services.map(|(admin, redis)| {
            let url = block_on({
                let admin = admin.clone();
                async move { store::postgres::scratch_database(&admin).await.expect("scratch database") }
            });
            // Every instance on one database shares one master key: a mounted secret file.
            let key_file = dir.path().join("master.key");
            let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, rand::random::<[u8; 32]>());
            std::fs::write(&key_file, key).expect("master key file");
            let prefix = format!("portcullis-test:{}:", domain::secret::random_hex(6));
            env.extend([
                ("PORTCULLIS_DATABASE__URL".into(), url.clone()),
                ("PORTCULLIS_KEYS__MASTER_KEY_FILE".into(), key_file.display().to_string()),
                ("PORTCULLIS_REDIS__URL".into(), redis),
                ("PORTCULLIS_REDIS__KEY_PREFIX".into(), prefix.clone()),
                ("PORTCULLIS_RATE_LIMIT__BACKEND".into(), "redis".into()),
                ("PORTCULLIS_RATE_LIMIT__KEY_PREFIX".into(), format!("{prefix}rl:")),
            ]);
            (admin, url)
        });
        Self { dir, env, config: None, postgres }
    }

    /// Another instance on the same database (and, on PostgreSQL, the same Redis prefix)
    /// with a data directory of its own: a second server of one deployment.
    pub fn sibling(&self) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut env = self.env.clone();
        for (k, v) in &mut env {
            if k == "PORTCULLIS_SERVER__DATA_DIR" {
                *v = dir.path().display().to_string();
            }
        }
        if self.postgres.is_none() {
            // SQLite: the database is the file in the first instance's data directory.
            env.push((
                "PORTCULLIS_DATABASE__URL".into(),
                format!("sqlite://{}", self.data_dir().join("portcullis.db").display()),
            ));
            env.push((
                "PORTCULLIS_KEYS__MASTER_KEY_FILE".into(),
                self.data_dir().join("master.key").display().to_string(),
            ));
        }
        let config = self.config.as_ref().map(|c| {
            let copy = dir.path().join("portcullis.toml");
            std::fs::copy(c, &copy).expect("copy config");
            copy
        });
        Self { dir, env, config, postgres: None }
    }

    /// Whether this test runs on PostgreSQL (there is no database file to inspect).
    pub fn on_postgres(&self) -> bool {
        self.postgres.is_some()
            || self.env.iter().any(|(k, v)| k == "PORTCULLIS_DATABASE__URL" && v.starts_with("postgres"))
    }

    /// Runs one SQL statement on this test's database, behind Portcullis's back (tampering).
    pub async fn raw_sql(&self, sql: &str) -> u64 {
        use sqlx::Connection as _;
        match self.env.iter().find(|(k, _)| k == "PORTCULLIS_DATABASE__URL") {
            Some((_, url)) if url.starts_with("postgres") => {
                let mut c = sqlx::PgConnection::connect(url).await.expect("postgres");
                sqlx::query(sql).execute(&mut c).await.expect("sql").rows_affected()
            }
            other => {
                let path = other
                    .and_then(|(_, u)| u.strip_prefix("sqlite://"))
                    .map_or_else(|| self.data_dir().join("portcullis.db"), PathBuf::from);
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
                let mut c = sqlx::SqliteConnection::connect_with(&options).await.expect("sqlite");
                sqlx::query(sql).execute(&mut c).await.expect("sql").rows_affected()
            }
        }
    }

    /// The store every process of this test uses, opened by the test itself.
    pub async fn stores(&self) -> domain::ports::Stores {
        Self::stores_of(&self.env, self.dir.path()).await
    }

    async fn stores_of(env: &[(String, String)], data_dir: &Path) -> domain::ports::Stores {
        match env.iter().find(|(k, _)| k == "PORTCULLIS_DATABASE__URL") {
            Some((_, url)) if url.starts_with("postgres") => {
                let settings = store::PgSettings {
                    url: url.clone(),
                    max_connections: 2,
                    acquire_timeout: Duration::from_secs(10),
                };
                Arc::new(store::PgStore::connect(&settings).await.expect("postgres")).stores()
            }
            Some((_, url)) => {
                let path = url.strip_prefix("sqlite://").expect("sqlite url");
                Arc::new(store::SqliteStore::open(Path::new(path)).await.expect("sqlite")).stores()
            }
            None => Arc::new(store::SqliteStore::open(&data_dir.join("portcullis.db")).await.expect("sqlite")).stores(),
        }
    }

    /// Removes a variable (e.g. to configure the master key another way).
    pub fn without(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    /// Uses a TOML configuration file with this content.
    pub fn with_config(mut self, toml: &str) -> Self {
        let path = self.dir.path().join("portcullis.toml");
        std::fs::write(&path, toml).expect("write config");
        self.config = Some(path);
        self
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        cmd.args(args).env_clear();
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs a CLI command to completion.
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let out = self.command(args).output().expect("run portcullis");
        CliOutput::from(out)
    }

    /// Creates a client_credentials client and returns (id, secret).
    pub fn create_client(&self, scope: &str, audience: &str) -> (String, String) {
        let v = self.create_service("billing", scope, audience, &[]);
        (v["client_id"].as_str().unwrap().to_owned(), v["client_secret"].as_str().unwrap().to_owned())
    }

    /// Registers a client-credentials client with extra `client create` flags; returns the
    /// `--json` output (its secret, if any, remembered for the log checks).
    pub fn create_service(&self, name: &str, scope: &str, audience: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "client",
            "create",
            "--name",
            name,
            "--grant",
            "client_credentials",
            "--scope",
            scope,
            "--audience",
            audience,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert_eq!(out.status, 0, "client create failed: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json output");
        if let Some(secret) = v["client_secret"].as_str() {
            remember(secret);
        }
        v
    }

    /// Starts `portcullis serve` and waits for its "listening" line.
    pub fn serve(&self) -> Server {
        let mut child = self
            .command(&["serve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn portcullis serve");
        let logs = Arc::new(Mutex::new(Vec::<String>::new()));
        for stream in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = logs.lock().unwrap().iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                (v["message"] == "portcullis listening")
                    .then(|| (v["addr"].as_str().unwrap().to_owned(), v["issuer"].as_str().unwrap().to_owned()))
            });
            if let Some((addr, issuer)) = found {
                let scheme = if issuer.starts_with("https://") { "https" } else { "http" };
                let gateway = listening(&logs.lock().unwrap(), "gateway listening").map(|a| format!("{scheme}://{a}"));
                let admin = listening(&logs.lock().unwrap(), "admin listening").map(|a| format!("http://{a}"));
                return Server { child, logs, base: format!("{scheme}://{addr}"), issuer, gateway, admin };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("portcullis exited with {status}: {:#?}", logs.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "portcullis did not start: {:#?}", logs.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.dir.path().join("portcullis.db").exists() || self.postgres.is_some() {
            self.check_audit_trail();
        }
        if let Some((admin, url)) = self.postgres.take() {
            // Best effort; a crashed run's databases are dropped by a later run after an hour.
            let _ = block_on(async move { store::postgres::drop_scratch_database(&admin, &url).await });
        }
    }
}

impl Instance {
    /// The stored audit trail holds no secret the suite has seen.
    fn check_audit_trail(&self) {
        if std::thread::panicking() {
            return;
        }
        let (env, dir) = (self.env.clone(), self.dir.path().to_owned());
        // A database that never got its schema (a config-check test) has no trail to check.
        let Ok(records) = block_on(async move {
            let stores = Instance::stores_of(&env, &dir).await;
            let query = domain::audit::AuditQuery { limit: 1_000_000, ..Default::default() };
            stores.audit.list_audit(&query).await
        }) else {
            return;
        };
        let text: Vec<String> =
            records.iter().map(|r| format!("{} {:?} {}", r.entry.event, r.entry.subject, r.entry.fields)).collect();
        assert_no_secret_in(&text.join("\n"), "the stored audit trail");
    }
}

/// The address a "… listening" log line reports.
pub fn listening(logs: &[String], message: &str) -> Option<String> {
    logs.iter().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["message"] == message).then(|| v["addr"].as_str().unwrap().to_owned())
    })
}

pub struct CliOutput {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for CliOutput {
    /// Remembers the secrets a command printed (client secrets, API keys), and checks its
    /// log (stderr) for every secret the suite has seen.
    fn from(out: std::process::Output) -> Self {
        let out = CliOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        for line in out.stdout.lines() {
            if let Ok(serde_json::Value::Object(v)) = serde_json::from_str(line) {
                for (k, v) in &v {
                    if (k.contains("secret") || k.contains("key")) && !k.ends_with("_id") {
                        v.as_str().map(remember);
                    }
                }
            }
        }
        assert_no_secret_in(&out.stderr, "a CLI command's log");
        out
    }
}

/// Every secret, password and full token the suite has used (16 characters or more), so
/// that every server's log and every audit trail can be checked for all of them.
static SECRETS: Mutex<std::collections::BTreeSet<String>> = Mutex::new(std::collections::BTreeSet::new());

/// Adds a secret to the suite's list (see [`assert_no_secret_in`]).
pub fn remember(secret: &str) {
    if secret.len() >= 16 {
        SECRETS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(secret.to_owned());
    }
}

/// Fails when `text` holds any secret the suite has seen, or a JWT's signature.
pub fn assert_no_secret_in(text: &str, what: &str) {
    let mut secrets: Vec<String> =
        SECRETS.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter().cloned().collect();
    secrets.push(PASSWORD.to_owned());
    for secret in &secrets {
        let signature = secret.rsplit('.').next().filter(|s| s.len() >= 16 && secret.matches('.').count() == 2);
        if text.contains(secret.as_str()) || signature.is_some_and(|s| text.contains(s)) {
            let shown = secret.get(..6).unwrap_or_default();
            panic!("a secret or token ({shown}…, {} characters) is in {what}", secret.len());
        }
    }
}

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub base: String,
    pub issuer: String,
    /// The gateway's base URL, when routes are configured.
    pub gateway: Option<String>,
    /// The admin listener's base URL (`/metrics`).
    pub admin: Option<String>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn gw(&self, path: &str) -> String {
        format!("{}{path}", self.gateway.as_deref().expect("gateway listening"))
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The logs once a line containing `needle` has arrived: a response can reach the test
    /// before the server's log line has come through the pipe.
    pub fn logs_once(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.iter().any(|l| l.contains(needle)) || Instant::now() >= deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(mut self) -> i32 {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait");
        status.code().unwrap_or(-1)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !std::thread::panicking() {
            assert_no_secret_in(&self.logs().join("\n"), "the server's log");
        }
    }
}

/// Polls `check` every 100 ms until it holds (a change another process made, a cache poll,
/// a log line still being read); fails the test with `what` once `within` has passed.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} (after {within:?})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// POSTs a form with HTTP Basic client authentication.
pub async fn post_form(url: &str, id: &str, secret: &str, form: &[(&str, &str)]) -> reqwest::Response {
    http().post(url).basic_auth(id, Some(secret)).form(form).send().await.unwrap()
}

pub async fn token(server: &Server, id: &str, secret: &str, scope: Option<&str>) -> serde_json::Value {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let resp = post_form(&server.url("/oauth2/token"), id, secret, &form).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    remember_tokens(&body);
    body
}

/// Remembers the tokens of a token response (see [`assert_no_secret_in`]).
pub fn remember_tokens(response: &serde_json::Value) {
    for name in ["access_token", "refresh_token", "id_token"] {
        response[name].as_str().map(remember);
    }
}

pub async fn introspect(server: &Server, id: &str, secret: &str, token: &str) -> serde_json::Value {
    let resp = post_form(&server.url("/oauth2/introspect"), id, secret, &[("token", token)]).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[allow(dead_code, reason = "used by some test modules only")]
pub fn data_path(instance: &Instance, name: &str) -> PathBuf {
    instance.data_dir().join(name)
}

/// The password every test user gets (≥ 12 characters).
#[allow(dead_code, reason = "used by some test modules only")]
pub const PASSWORD: &str = "correct horse battery staple";

#[allow(dead_code, reason = "used by some test modules only")]
impl Instance {
    /// Runs a CLI command with `input` on standard input.
    pub fn cli_stdin(&self, args: &[&str], input: &str) -> CliOutput {
        use std::io::Write as _;
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run portcullis");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        remember(input.trim());
        CliOutput::from(child.wait_with_output().unwrap())
    }

    /// Creates a user with [`PASSWORD`]; returns its id.
    pub fn create_user(&self, username: &str, extra: &[&str]) -> String {
        let mut args = vec!["user", "create", username, "--password-stdin", "--json"];
        args.extend_from_slice(extra);
        let out = self.cli_stdin(&args, &format!("{PASSWORD}\n"));
        assert_eq!(out.status, 0, "user create failed: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap();
        v["id"].as_str().unwrap().to_owned()
    }

    /// Registers an authorization-code client; returns the `--json` output (client_id and,
    /// for confidential clients, client_secret).
    pub fn create_app(&self, name: &str, extra: &[&str]) -> serde_json::Value {
        let mut args = vec![
            "client",
            "create",
            "--name",
            name,
            "--grant",
            "authorization_code,refresh_token",
            "--scope",
            "openid profile email invoices:read",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        assert_eq!(out.status, 0, "client create failed: {}", out.stderr);
        serde_json::from_str(out.stdout.trim()).unwrap()
    }
}

/// A browser without JavaScript: follows nothing by itself, keeps cookies.
#[allow(dead_code, reason = "used by some test modules only")]
pub struct Browser {
    http: reqwest::Client,
    pub cookies: Mutex<std::collections::BTreeMap<String, String>>,
}

/// One response as the browser saw it.
#[allow(dead_code, reason = "used by some test modules only")]
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

#[allow(dead_code, reason = "used by some test modules only")]
impl Page {
    pub fn location(&self) -> String {
        self.headers.get("location").expect("a Location header").to_str().unwrap().to_owned()
    }

    /// The value of a hidden form field (HTML-unescaped).
    pub fn field(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start =
            self.body.find(&marker).unwrap_or_else(|| panic!("no field {name} in {}", self.body)) + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        html_unescape(&self.body[start..end])
    }

    /// A query parameter of the Location header.
    pub fn redirect_param(&self, name: &str) -> Option<String> {
        let url = url::Url::parse(&self.location()).unwrap();
        url.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
}

pub fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&#x2f;", "/")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[allow(dead_code, reason = "used by some test modules only")]
impl Browser {
    pub fn new() -> Self {
        Self { http: http(), cookies: Mutex::new(std::collections::BTreeMap::new()) }
    }

    fn cookie_header(&self) -> String {
        self.cookies.lock().unwrap().iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn finish(&self, resp: reqwest::Response) -> Page {
        for set in resp.headers().get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let (pair, attrs) = set.split_once(';').unwrap_or((set, ""));
            let (k, v) = pair.split_once('=').unwrap();
            let mut cookies = self.cookies.lock().unwrap();
            if attrs.contains("Max-Age=0") || v.is_empty() {
                cookies.remove(k);
            } else {
                cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        Page { status, headers, body: resp.text().await.unwrap() }
    }

    pub async fn get(&self, url: &str) -> Page {
        let resp = self.http.get(url).header("cookie", self.cookie_header()).send().await.unwrap();
        self.finish(resp).await
    }

    pub async fn post(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let resp = self.http.post(url).header("cookie", self.cookie_header()).form(form).send().await.unwrap();
        self.finish(resp).await
    }

    /// Submits the login form of `page`.
    pub async fn login(&self, server: &Server, page: &Page, username: &str, password: &str) -> Page {
        assert_eq!(page.status, 200, "expected the login page: {}", page.body);
        let (csrf, request) = (page.field("csrf"), page.field("request"));
        self.post(
            &server.url("/oauth2/login"),
            &[("csrf", &csrf), ("request", &request), ("username", username), ("password", password)],
        )
        .await
    }

    /// Answers the consent page of `page`.
    pub async fn consent(&self, server: &Server, page: &Page, decision: &str) -> Page {
        assert!(page.body.contains("Allow access?"), "expected the consent page: {}", page.body);
        let (csrf, request) = (page.field("csrf"), page.field("request"));
        self.post(&server.url("/oauth2/consent"), &[("csrf", &csrf), ("request", &request), ("decision", decision)])
            .await
    }
}

/// `application/x-www-form-urlencoded` encoding of one value (for URLs built by hand).
#[allow(dead_code, reason = "used by some test modules only")]
pub fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
