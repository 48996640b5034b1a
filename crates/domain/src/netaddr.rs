//! The client's IP address: the socket peer, unless the peer is a configured trusted proxy,
//! in which case the address that proxy (and any trusted proxies before it) forwarded.
//!
//! `X-Forwarded-For` and `Forwarded` are read right to left and the first address that is
//! not a trusted proxy is the client. Everything left of it was written by the client
//! itself and is ignored, so a spoofed `X-Forwarded-For: 1.2.3.4` buys nothing: from an
//! untrusted peer the headers are not read at all, and behind a trusted proxy the spoofed
//! entry sits left of the address the proxy appended.

use std::net::IpAddr;

/// The resolved client address, put on each request by the server's transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// An IP network (`10.0.0.0/8`, `::1/128`, or a bare address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// # Errors
    /// A message when `s` is not an address or CIDR network.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR network (like 10.0.0.0/8)");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().map_err(|_| bad())?, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim().parse::<IpAddr>().map_err(|_| bad())?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }

    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 (`::ffff:10.0.0.1`, what a dual-stack socket reports) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The address rate limits and bans count by: IPv4 as is, IPv6 by its /64 network (one
/// subscriber usually holds a whole /64, so counting single IPv6 addresses would let one
/// client rotate through 2^64 fresh quotas and fill the ban list).
#[must_use]
pub fn bucket(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

/// The configured trusted proxies.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// # Errors
    /// The first entry that does not parse.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let nets = entries.iter().map(|e| IpNet::parse(e.as_ref())).collect::<Result<_, _>>()?;
        Ok(Self { nets })
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is in one of the networks.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.contains(ip)
    }

    /// The client address for a request from `peer` carrying these `Forwarded` and
    /// `X-Forwarded-For` header values (all occurrences, in order). `Forwarded` is used when
    /// present, otherwise `X-Forwarded-For`.
    #[must_use]
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl Iterator<Item = &'a str>,
        x_forwarded_for: impl Iterator<Item = &'a str>,
    ) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        let mut chain: Vec<Option<IpAddr>> = forwarded.flat_map(|v| v.split(',')).map(forwarded_for).collect();
        if chain.is_empty() {
            chain = x_forwarded_for.flat_map(|v| v.split(',')).map(|hop| parse_hop(hop.trim())).collect();
        }
        let mut client = peer;
        for hop in chain.into_iter().rev() {
            // An entry we cannot read ends the walk: the last trusted hop is the answer.
            let Some(ip) = hop else { break };
            client = canonical(ip);
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The `for=` parameter of one `Forwarded` element (RFC 7239 §4).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then(|| parse_hop(value.trim().trim_matches('"')))?
    })
}

/// `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]`, `[2001:db8::1]:5678`, `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split_once(']').and_then(|(ip, _)| ip.parse().ok());
    }
    hop.rsplit_once(':').and_then(|(ip, _)| ip.parse::<std::net::Ipv4Addr>().ok()).map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(list).unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn ipv6_counts_by_its_64_network() {
        assert_eq!(bucket(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(bucket(ip("2001:db8:1:2:bbbb::9")), ip("2001:db8:1:2::"));
        assert_eq!(bucket(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(bucket(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn networks() {
        let net = IpNet::parse("10.0.0.0/8").unwrap_or_else(|e| unreachable!("{e}"));
        assert!(net.contains(ip("10.200.1.1")));
        assert!(net.contains(ip("::ffff:10.0.0.1")), "v4-mapped v6");
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(IpNet::parse("fd00::/8").is_ok_and(|n| n.contains(ip("fd12::1"))));
        assert!(IpNet::parse("0.0.0.0/0").is_ok_and(|n| n.contains(ip("8.8.8.8"))));
        for bad in ["10.0.0.0/33", "nope", "10.0.0/8", ""] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn untrusted_peers_headers_are_ignored() {
        let p = proxies(&["10.0.0.0/8"]);
        let got = p.client_ip(ip("203.0.113.9"), std::iter::empty(), ["1.2.3.4"].into_iter());
        assert_eq!(got, ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), std::iter::empty(), ["1.2.3.4"].into_iter()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let p = proxies(&["10.0.0.0/8"]);
        // The client spoofed 6.6.6.6; the edge proxy appended the real 198.51.100.7.
        let xff = ["6.6.6.6, 198.51.100.7", "10.1.1.1"];
        assert_eq!(p.client_ip(ip("10.0.0.2"), std::iter::empty(), xff.into_iter()), ip("198.51.100.7"));
        let fwd = ["for=6.6.6.6, for=\"[2001:db8::7]:443\";proto=https", "for=10.1.1.1"];
        assert_eq!(p.client_ip(ip("10.0.0.2"), fwd.into_iter(), ["9.9.9.9"].into_iter()), ip("2001:db8::7"));
        // Only trusted hops: the leftmost one.
        assert_eq!(p.client_ip(ip("10.0.0.2"), std::iter::empty(), ["10.9.9.9"].into_iter()), ip("10.9.9.9"));
        // Garbage stops the walk at the last readable hop.
        assert_eq!(p.client_ip(ip("10.0.0.2"), std::iter::empty(), ["unknown, 10.3.3.3"].into_iter()), ip("10.3.3.3"));
        assert_eq!(p.client_ip(ip("10.0.0.2"), std::iter::empty(), ["1.2.3.4:80"].into_iter()), ip("1.2.3.4"));
    }
}
