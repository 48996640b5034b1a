//! Entry point: parse argv, load configuration (file + environment), dispatch a command.
//! Exit codes: 0 success, 1 runtime failure, 2 invalid configuration or usage.

use std::process::ExitCode;

use clap::Parser as _;
use portcullis_server::cli::{self, Cli, Command, ConfigCommand};
use portcullis_server::telemetry::{self, Sink};
use portcullis_server::{app, audit, config};

/// mimalloc instead of glibc malloc: the request path (hyper, Cedar's per-decision
/// entities) allocates from both worker threads at once, where glibc's arenas contend
/// (docs/benchmarks.md, "Gateway throughput …").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    #[expect(clippy::disallowed_methods, reason = "the one place the environment is read")]
    let env: Vec<(String, String)> = std::env::vars().collect();
    // Who runs a CLI command, for the audit trail's `actor` of its admin events.
    let os_user = env.iter().find(|(k, _)| k == "USER" || k == "LOGNAME").map_or("unknown", |(_, v)| v.as_str());
    // And where: the host it runs on.
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| env.iter().find(|(k, _)| k == "HOSTNAME").map(|(_, v)| v.clone()))
        .unwrap_or_else(|| "localhost".into());
    let actor = format!("cli:{os_user}@{host}");

    if let Command::Config(ConfigCommand::Check { file }) = &cli.command {
        let path = file.as_deref().or(cli.config.as_deref());
        return match config::load(path, env) {
            Ok(_) => {
                eprintln!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::from(2)
            }
        };
    }

    let config = match config::load(cli.config.as_deref(), env) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("{errors}");
            return ExitCode::from(2);
        }
    };
    let serving = matches!(cli.command, Command::Serve);
    let sink = if serving { Sink::Stdout } else { Sink::Stderr };
    // `serve` always collects audit events: the detectors and alerts read them too.
    let audit = (serving || config.audit.store || config.audit.file.is_some())
        .then(|| audit::layer(config.audit.queue, (!serving).then_some(actor)));
    let otlp = (serving && config.log.otlp_endpoint.is_some()).then(portcullis_server::otlp::layer);
    telemetry::init(&config.log, sink, audit, otlp);

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        let result = match cli.command {
            Command::Serve => app::serve(config).await.map_err(cli::CliError::from),
            Command::Client(cmd) => cli::client(config, cmd).await,
            Command::Keys(cmd) => cli::keys(config, cmd).await,
            Command::Apikey(cmd) => portcullis_server::apikey_cli::run(config, cmd).await,
            Command::Policy(cmd) => portcullis_server::authz::run(&config, cmd),
            Command::Ban(cmd) => portcullis_server::ban_cli::run(config, cmd).await,
            Command::Audit(cmd) => portcullis_server::audit_cli::run(config, cmd).await,
            Command::Incident(cmd) => portcullis_server::incident_cli::run(config, cmd).await,
            Command::User(cmd) => portcullis_server::user_cli::run(config, cmd).await,
            Command::Tls(cmd) => cli::tls(&config, cmd),
            Command::Migrate { check } => {
                portcullis_server::database::migrate_command(&config, check).await.map_err(cli::CliError::from)
            }
            Command::Config(_) => Ok(()),
        };
        // What the command (or the server, after draining) queued for the audit trail.
        audit::finish(std::time::Duration::from_secs(5)).await;
        result
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(cli::CliError::Usage(msg) | cli::CliError::NotFound(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!(cause = %e, "command failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
