//! `portcullis ban list / add / remove`: the IP bans made after repeated authentication
//! failures, and manual ones for incidents. Running servers pick changes up within 2 s.

#![allow(clippy::print_stdout, reason = "printing results is what a CLI command does")]

use std::net::IpAddr;

use clap::Subcommand;
use domain::abuse::Ban;
use domain::settings::Seconds;
use serde_json::json;

use crate::app::Runtime;
use crate::cli::{CliError, JsonFlag, rfc3339};
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum BanCommand {
    /// List bans in force.
    List(JsonFlag),
    /// Ban an address now (an incident command); an IPv6 address bans its /64.
    Add {
        ip: IpAddr,
        /// How long, such as 30m, 12h or 7d; without it the ban policy's doubling applies.
        #[arg(long = "for")]
        length: Option<String>,
    },
    /// Lift the ban of an address.
    Remove { ip: IpAddr },
}

pub(crate) fn ban_json(b: &Ban) -> serde_json::Value {
    json!({
        "ip": b.ip.to_string(),
        "reason": b.reason,
        "strikes": b.strikes,
        "created_at": rfc3339(b.created_at),
        "until": rfc3339(b.until),
    })
}

pub async fn run(config: Config, command: BanCommand) -> Result<(), CliError> {
    let rt = Runtime::open(config).await?;
    let store = &rt.stores.bans;
    let now = rt.clock.now();
    match command {
        BanCommand::List(flag) => {
            let bans = store.list_bans(now).await?;
            if flag.json {
                println!("{}", json!(bans.iter().map(ban_json).collect::<Vec<_>>()));
            } else {
                println!("{:<40} {:<20} {:<8} {:<21} UNTIL", "IP", "REASON", "STRIKES", "SINCE");
                for b in &bans {
                    println!(
                        "{:<40} {:<20} {:<8} {:<21} {}",
                        b.ip.to_string(),
                        b.reason,
                        b.strikes,
                        rfc3339(b.created_at),
                        rfc3339(b.until)
                    );
                }
            }
        }
        BanCommand::Add { ip, length } => {
            let length = length
                .as_deref()
                .map(|l| {
                    Seconds::parse(l).filter(|s| s.0 > 0).ok_or_else(|| CliError::Usage(format!("bad length {l:?}")))
                })
                .transpose()?;
            let ban = crate::ops::ban(&rt, ip, length).await?;
            println!("banned {} until {} (strike {})", ban.ip, rfc3339(ban.until), ban.strikes);
        }
        BanCommand::Remove { ip } => {
            // Bans are per address, IPv6 per /64 network.
            let ip = crate::ops::lift_ban(&rt, ip).await?;
            println!("lifted the ban of {ip}");
        }
    }
    Ok(())
}
