//! The abuse guard on real parts (SQLite bans, the in-memory limiter) with a fixed clock:
//! the Nth failure bans, bans double per strike, credential stuffing bans at once, a ban
//! ends on time, and a refused request is counted exactly.

use std::net::IpAddr;
use std::sync::Arc;

use domain::abuse::{AbuseGuard, BanPolicy, Verdict};
use domain::clock::FixedClock;
use domain::ratelimit::{Caller, CompiledRule, KeyPart, LimitRule};
use domain::settings::Seconds;
use portcullis_store::{MemoryLimiter, SqliteStore};

const T0: i64 = 1_700_000_000;

async fn guard(policy: BanPolicy) -> (AbuseGuard, Arc<FixedClock>, Arc<SqliteStore>) {
    let store = Arc::new(SqliteStore::open_in_memory().await.unwrap());
    let clock = Arc::new(FixedClock::new(T0));
    let stores = store.clone().stores();
    let g =
        AbuseGuard::new(Arc::new(MemoryLimiter::new(10_000)), stores.bans, policy, Default::default(), clock.clone());
    (g, clock, store)
}

fn policy() -> BanPolicy {
    BanPolicy {
        failures: 3,
        window: Seconds(60),
        distinct_accounts: 4,
        base: Seconds(100),
        max: Seconds(1000),
        ..BanPolicy::default()
    }
}

const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

#[tokio::test]
async fn the_nth_failure_bans_and_bans_double() {
    let (g, clock, store) = guard(policy()).await;
    assert!(g.record_failure(Some(IP), None).await.is_none());
    assert!(g.record_failure(Some(IP), None).await.is_none());
    let ban = g.record_failure(Some(IP), None).await.expect("the third failure bans");
    assert_eq!((ban.until - T0, ban.strikes, ban.reason.as_str()), (100, 1, "auth_failures"));
    assert_eq!(g.banned(Some(IP)), Some(100));
    let caller = Caller { ip: Some(IP), ..Caller::default() };
    assert_eq!(g.check("api", &[], &caller).await, Verdict::Banned { retry_after: 100 });
    assert_eq!(g.banned(Some("198.51.100.8".parse().unwrap())), None, "other addresses are not affected");

    clock.advance(100);
    assert_eq!(g.banned(Some(IP)), None, "the ban ends on time");
    // The next round of failures within the strike memory bans for twice as long.
    clock.advance(60);
    for _ in 0..2 {
        assert!(g.record_failure(Some(IP), None).await.is_none());
    }
    let ban = g.record_failure(Some(IP), None).await.expect("banned again");
    assert_eq!((ban.until - clock_now(&clock), ban.strikes), (200, 2));
    // The store holds it (the CLI and other instances see it), and a sync keeps it.
    let listed = domain::abuse::BanStore::list_bans(store.as_ref(), clock_now(&clock)).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(g.sync().await.unwrap(), 1);
    assert!(g.banned(Some(IP)).is_some());
    // Lifted in the store: the next sync lifts it here.
    assert!(domain::abuse::BanStore::delete_ban(store.as_ref(), IP).await.unwrap());
    g.sync().await.unwrap();
    assert_eq!(g.banned(Some(IP)), None);
}

fn clock_now(clock: &FixedClock) -> i64 {
    domain::clock::Clock::now(clock)
}

#[tokio::test]
async fn failures_against_many_accounts_ban_at_once() {
    let (g, _, _) = guard(BanPolicy { failures: 100, ..policy() }).await;
    for user in ["alice", "bob", "carol"] {
        assert!(g.record_failure(Some(IP), Some(user)).await.is_none());
    }
    assert!(g.record_failure(Some(IP), Some("alice")).await.is_none(), "the same account again is not another");
    let ban = g.record_failure(Some(IP), Some("dave")).await.expect("the fourth account bans");
    assert_eq!(ban.reason, "credential_stuffing");

    let (off, _, _) = guard(BanPolicy { failures: 100, distinct_accounts: 0, ..policy() }).await;
    for user in ["a", "b", "c", "d", "e", "f"] {
        assert!(off.record_failure(Some(IP), Some(user)).await.is_none(), "0 turns the check off");
    }
}

#[tokio::test]
async fn limits_are_exact_and_reopen_with_the_clock() {
    let (g, clock, _) = guard(policy()).await;
    let rule = CompiledRule::compile(&LimitRule {
        name: "r".into(),
        by: vec![KeyPart::Ip],
        requests: 2,
        per: Seconds(10),
        burst: None,
        applies_to: Default::default(),
        plans: Default::default(),
    })
    .unwrap();
    let caller = Caller { ip: Some(IP), ..Caller::default() };
    let rules = [rule];
    for _ in 0..2 {
        assert!(matches!(g.check("api", &rules, &caller).await, Verdict::Allowed { .. }));
    }
    let Verdict::Limited { retry_after, headers, rule } = g.check("api", &rules, &caller).await else {
        panic!("the third is refused")
    };
    assert_eq!((retry_after, rule.as_str()), (5, "r"));
    assert_eq!(headers, Some(("\"r\";q=2;w=10".into(), "\"r\";r=0;t=10".into())));
    clock.advance(5);
    assert!(matches!(g.check("api", &rules, &caller).await, Verdict::Allowed { .. }), "Retry-After was right");
}

#[tokio::test]
async fn exempt_networks_are_never_banned_and_ipv6_counts_by_64() {
    let (g, _, _) = guard(BanPolicy { exempt: vec!["198.51.100.0/24".into()], ..policy() }).await;
    for _ in 0..10 {
        assert!(g.record_failure(Some(IP), None).await.is_none(), "exempt");
    }
    // Three addresses of one /64 are one client: the third failure bans the network.
    let addrs: Vec<IpAddr> =
        ["2001:db8:0:1::1", "2001:db8:0:1::2", "2001:db8:0:1:ffff::3"].iter().map(|a| a.parse().unwrap()).collect();
    assert!(g.record_failure(Some(addrs[0]), None).await.is_none());
    assert!(g.record_failure(Some(addrs[1]), None).await.is_none());
    let ban = g.record_failure(Some(addrs[2]), None).await.expect("banned");
    assert_eq!(ban.ip, "2001:db8:0:1::".parse::<IpAddr>().unwrap());
    assert!(g.banned(Some("2001:db8:0:1:abcd::77".parse().unwrap())).is_some());
    assert!(g.banned(Some("2001:db8:0:2::1".parse().unwrap())).is_none());
}
