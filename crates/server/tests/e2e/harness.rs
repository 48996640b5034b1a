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
}

impl Instance {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = vec![
            ("PORTCULLIS_SERVER__LISTEN".into(), "127.0.0.1:0".into()),
            ("PORTCULLIS_GATEWAY__LISTEN".into(), "127.0.0.1:0".into()),
            ("PORTCULLIS_SERVER__DATA_DIR".into(), dir.path().display().to_string()),
            ("PORTCULLIS_LOG__FORMAT".into(), "json".into()),
            ("PORTCULLIS_LOG__LEVEL".into(), "info".into()),
        ];
        Self { dir, env, config: None }
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
        CliOutput {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Creates a client_credentials client and returns (id, secret).
    pub fn create_client(&self, scope: &str, audience: &str) -> (String, String) {
        let out = self.cli(&[
            "client",
            "create",
            "--name",
            "billing",
            "--grant",
            "client_credentials",
            "--scope",
            scope,
            "--audience",
            audience,
            "--json",
        ]);
        assert_eq!(out.status, 0, "client create failed: {}", out.stderr);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json output");
        (v["client_id"].as_str().unwrap().to_owned(), v["client_secret"].as_str().unwrap().to_owned())
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
                return Server { child, logs, base: format!("{scheme}://{addr}"), issuer, gateway };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("portcullis exited with {status}: {:#?}", logs.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "portcullis did not start: {:#?}", logs.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub base: String,
    pub issuer: String,
    /// The gateway's base URL, when routes are configured.
    pub gateway: Option<String>,
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
    resp.json().await.unwrap()
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
