//! The `[authorization]` section, loading Cedar policies from their directory, reloading
//! them on change and on SIGHUP, and `portcullis policy validate / test`.

#![allow(clippy::print_stdout, reason = "printing results is what a CLI command does")]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Subcommand;
use domain::policy::{Circumstances, Policies, PolicyEngine, Principal, Query, Resource};
use serde::Deserialize;

use crate::cli::CliError;
use crate::config::Config;

/// The schema file every policy directory holds.
pub const SCHEMA_FILE: &str = "schema.cedarschema";

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuthorizationConfig {
    /// A directory of `*.cedar` policies and `schema.cedarschema`; when set, Cedar decides
    /// every gateway request (default deny) on routes that do not say `policies = false`.
    pub policies_dir: Option<PathBuf>,
    /// Log allowed decisions too (denies are always logged).
    pub log_allows: bool,
    /// Principal attribute → token claim (for external issuers' claim names too).
    pub claims: BTreeMap<String, String>,
    /// Role → permissions (RBAC); routes require them with `permissions_all` /
    /// `permissions_any`, policies see them as `principal.permissions`.
    pub roles: BTreeMap<String, Vec<String>>,
}

impl Default for AuthorizationConfig {
    fn default() -> Self {
        let claims = ["tenant", "department", "groups"].into_iter().map(|c| (c.to_owned(), c.to_owned())).collect();
        Self { policies_dir: None, log_allows: false, claims, roles: BTreeMap::new() }
    }
}

impl AuthorizationConfig {
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(dir) = &self.policies_dir
            && let Err(problems) = load_dir(dir)
        {
            errors.extend(problems.into_iter().map(|p| format!("authorization.policies_dir: {p}")));
        }
        for reserved in ["id", "roles", "permissions", "scopes", "client_id"] {
            if self.claims.contains_key(reserved) {
                errors.push(format!("authorization.claims: {reserved:?} is set by Portcullis, not from a claim"));
            }
        }
        errors
    }

    #[must_use]
    pub fn permissions(&self) -> HashMap<String, Vec<String>> {
        self.roles.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    #[must_use]
    pub fn claim_map(&self) -> Vec<(String, String)> {
        self.claims.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Reads `dir/*.cedar` (sorted) and `dir/schema.cedarschema` and validates them.
///
/// # Errors
/// Every problem, each naming its file.
pub fn load_dir(dir: &Path) -> Result<Policies, Vec<String>> {
    let schema = std::fs::read_to_string(dir.join(SCHEMA_FILE))
        .map_err(|e| vec![format!("{}: {e}", dir.join(SCHEMA_FILE).display())])?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| vec![format!("{}: {e}", dir.display())])?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
        .collect();
    names.sort();
    let mut files = Vec::with_capacity(names.len());
    let mut errors = Vec::new();
    for path in names {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        match std::fs::read_to_string(&path) {
            Ok(text) => files.push((name, text)),
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Policies::load(&files, &schema)
}

/// What a directory looks like now (names, sizes, modification times), to notice changes.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    out.sort();
    out
}

/// What made a policy reload happen: its audit event's `cause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadCause {
    /// A file in the directory changed.
    Change,
    /// SIGHUP.
    Signal,
    /// `POST /admin/policies/reload`.
    AdminApi,
}

impl ReloadCause {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Change => "change",
            Self::Signal => "signal",
            Self::AdminApi => "admin_api",
        }
    }
}

/// Loads `dir` and swaps it into `engine`, or leaves the set in force when it does not
/// validate; either way one audit event: `policy.reloaded`, or `policy.reload_failed`
/// (an alert).
///
/// # Errors
/// Every problem of the set on disk, each naming its file.
pub fn reload(dir: &Path, engine: &PolicyEngine, cause: ReloadCause) -> Result<usize, Vec<String>> {
    let cause = cause.as_str();
    match load_dir(dir) {
        Ok(policies) => {
            let count = policies.len();
            engine.replace(policies);
            tracing::info!(target: "portcullis::audit", event = "policy.reloaded", policies = count, cause, "policies reloaded");
            Ok(count)
        }
        Err(problems) => {
            tracing::error!(
                target: "portcullis::audit", event = "policy.reload_failed", alert = true, cause,
                problems = %problems.join("; "), "policies not reloaded; the previous set stays in force"
            );
            Err(problems)
        }
    }
}

/// Reloads the policies when a file in `dir` changes (checked every second) or on SIGHUP.
/// A set that does not validate is refused and logged; the previous one stays in force.
pub fn spawn_reloader(dir: PathBuf, engine: Arc<PolicyEngine>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut seen = fingerprint(&dir);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let signalled = tokio::select! {
                _ = tick.tick() => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
            };
            let now = fingerprint(&dir);
            if !signalled && now == seen {
                continue;
            }
            seen = now;
            let cause = if signalled { ReloadCause::Signal } else { ReloadCause::Change };
            let dir = dir.clone();
            let engine = engine.clone();
            // Reading and validating the files blocks; the outcome is logged by `reload`.
            let _outcome = tokio::task::spawn_blocking(move || reload(&dir, &engine, cause)).await;
        }
    })
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory against its schema (default: authorization.policies_dir).
    Validate { dir: Option<PathBuf> },
    /// Decide one request, or run a table of expected decisions (`--file cases.toml`).
    Test(TestArgs),
}

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Policy directory (default: authorization.policies_dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// A TOML file of `[[case]]` tables.
    #[arg(long, conflicts_with_all = ["principal", "action", "resource"])]
    file: Option<PathBuf>,
    /// `{ type = "user", id = "alice", roles = ["admin"], tenant = "acme" }`
    #[arg(long)]
    principal: Option<String>,
    /// The action (`GET`, or a route's action name).
    #[arg(long)]
    action: Option<String>,
    /// `{ route = "profiles", path = "/profiles/alice", id = "alice" }`
    #[arg(long)]
    resource: Option<String>,
    /// `{ ip = "10.0.0.1", time = 1796207400, mfa = true, method = "GET" }`
    #[arg(long)]
    context: Option<String>,
}

/// One row of a cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    principal: Principal,
    action: String,
    resource: Resource,
    #[serde(default)]
    context: Circumstances,
    expect: Expect,
    /// When given, exactly these policies must have decided.
    policies: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Expect {
    Allow,
    Deny,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cases {
    /// Role → permissions for these cases, on top of `[authorization.roles]` (so a cases
    /// file is self-contained).
    #[serde(default)]
    roles: BTreeMap<String, Vec<String>>,
    case: Vec<Case>,
}

fn inline<T: serde::de::DeserializeOwned>(what: &str, raw: &str) -> Result<T, CliError> {
    let table: toml::Table = format!("v = {raw}")
        .parse()
        .map_err(|e: toml::de::Error| CliError::Usage(format!("--{what}: {}", e.message())))?;
    let value = table.get("v").cloned().ok_or_else(|| CliError::Usage(format!("--{what}: empty")))?;
    value.try_into().map_err(|e: toml::de::Error| CliError::Usage(format!("--{what}: {}", e.message())))
}

fn describe(verdict: &domain::policy::Verdict) -> String {
    let decision = if verdict.allowed { "ALLOW" } else { "DENY" };
    // Nothing allows without a policy, so an empty list is always the default deny.
    let by = if verdict.policies.is_empty() {
        "default deny".to_owned()
    } else {
        format!("policies: {}", verdict.policies.join(", "))
    };
    let errors =
        if verdict.errors.is_empty() { String::new() } else { format!("; {} policy errors", verdict.errors.len()) };
    format!("{decision} ({by}{errors})")
}

/// Runs the cases of `text` against `engine`: how many, and the failures as lines.
///
/// # Errors
/// The text is not a cases file.
pub fn run_cases(
    engine: &PolicyEngine,
    permissions: &HashMap<String, Vec<String>>,
    text: &str,
) -> Result<(usize, Vec<String>), String> {
    let cases: Cases = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    Ok(run_case_set(engine, permissions, &cases))
}

/// The same cases as JSON (the admin API's `POST /admin/policies/test` body).
///
/// # Errors
/// The value is not a cases document.
pub fn run_cases_json(
    engine: &PolicyEngine,
    permissions: &HashMap<String, Vec<String>>,
    value: serde_json::Value,
) -> Result<(usize, Vec<String>), String> {
    let cases: Cases = serde_json::from_value(value).map_err(|e| e.to_string())?;
    Ok(run_case_set(engine, permissions, &cases))
}

fn run_case_set(
    engine: &PolicyEngine,
    permissions: &HashMap<String, Vec<String>>,
    cases: &Cases,
) -> (usize, Vec<String>) {
    let mut permissions = permissions.clone();
    for (role, granted) in &cases.roles {
        permissions.entry(role.clone()).or_default().extend(granted.iter().cloned());
    }
    let mut failures = Vec::new();
    for case in &cases.case {
        let mut principal = case.principal.clone();
        principal.permissions = domain::policy::permissions_of(&permissions, &principal.roles);
        let query = Query {
            principal,
            action: case.action.clone(),
            resource: case.resource.clone(),
            context: case.context.clone(),
        };
        let verdict = engine.decide(&query);
        let got = if verdict.allowed { Expect::Allow } else { Expect::Deny };
        let policies_ok = case.policies.as_ref().is_none_or(|want| {
            let mut want = want.clone();
            let mut got = verdict.policies.clone();
            want.sort();
            got.sort();
            want == got
        });
        if got != case.expect || !policies_ok {
            failures.push(format!(
                "FAIL {}: expected {:?}{}, got {}",
                case.name,
                case.expect,
                case.policies.as_ref().map(|p| format!(" by {}", p.join(", "))).unwrap_or_default(),
                describe(&verdict)
            ));
        }
    }
    (cases.case.len(), failures)
}

pub fn run(config: &Config, command: PolicyCommand) -> Result<(), CliError> {
    let configured = config.authorization.policies_dir.clone();
    let dir_of = |dir: Option<PathBuf>| {
        dir.or(configured.clone())
            .ok_or_else(|| CliError::Usage("no policy directory: pass one or set authorization.policies_dir".into()))
    };
    match command {
        PolicyCommand::Validate { dir } => {
            let dir = dir_of(dir)?;
            let policies =
                load_dir(&dir).map_err(|p| CliError::Usage(format!("invalid policies:\n  {}", p.join("\n  "))))?;
            println!("{}: {} policies valid against {SCHEMA_FILE}", dir.display(), policies.len());
        }
        PolicyCommand::Test(args) => {
            let dir = dir_of(args.dir)?;
            let policies =
                load_dir(&dir).map_err(|p| CliError::Usage(format!("invalid policies:\n  {}", p.join("\n  "))))?;
            let engine = PolicyEngine::new(policies);
            let permissions = config.authorization.permissions();
            if let Some(file) = args.file {
                let text =
                    std::fs::read_to_string(&file).map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
                let (total, failures) = run_cases(&engine, &permissions, &text)
                    .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
                for f in &failures {
                    println!("{f}");
                }
                println!("{} of {total} cases passed", total - failures.len());
                if !failures.is_empty() {
                    return Err(CliError::Usage(format!("{} case(s) failed", failures.len())));
                }
                return Ok(());
            }
            let (Some(p), Some(action), Some(r)) = (args.principal, args.action, args.resource) else {
                return Err(CliError::Usage("pass --principal, --action and --resource, or --file".into()));
            };
            let mut principal: Principal = inline("principal", &p)?;
            principal.permissions = domain::policy::permissions_of(&permissions, &principal.roles);
            let query = Query {
                principal,
                action,
                resource: inline("resource", &r)?,
                context: args.context.as_deref().map(|c| inline("context", c)).transpose()?.unwrap_or_default(),
            };
            println!("{}", describe(&engine.decide(&query)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
    }

    /// The shipped example policies pass their own table of decisions.
    #[test]
    fn example_policies_pass_their_cases() {
        let engine = PolicyEngine::new(load_dir(&shipped()).unwrap());
        let text = std::fs::read_to_string(shipped().join("tests.toml")).unwrap();
        let (total, failures) = run_cases(&engine, &HashMap::new(), &text).unwrap();
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert!(total >= 20, "{total} cases");
    }
}
