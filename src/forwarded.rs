//! The origin (scheme and host) a browser used, behind a TLS-terminating load balancer.
//!
//! The callback and logout URLs are completed from the origin the browser used. Behind a load
//! balancer that ends TLS, nginx sees plain http; the balancer tells the truth in
//! `X-Forwarded-Proto` and `X-Forwarded-Host` (de-facto headers; RFC 7239 `Forwarded` is their
//! standard form). Any client can send these headers too, so they count only when the
//! connection comes from an address listed in `trusted_proxies`.

use std::net::IpAddr;

use ipnet::IpNet;

/// What nginx knows about how a request arrived, and the forwarded headers it carries.
pub struct Arrival<'a> {
    /// The connection to nginx is TLS.
    pub tls: bool,
    /// `Host` header (or the server name when absent).
    pub host: &'a str,
    /// Address of the connection's peer: the load balancer, when there is one.
    pub peer: Option<IpAddr>,
    pub forwarded_proto: Option<&'a [u8]>,
    pub forwarded_host: Option<&'a [u8]>,
}

/// `scheme://host` as the browser used it: the forwarded headers override what nginx sees only
/// when `peer` lies in one of `trusted`. With several proxies in a chain each appends its value,
/// so the first (leftmost) value is the one the outermost proxy, facing the browser, wrote.
pub fn origin(a: &Arrival, trusted: &[IpNet]) -> String {
    let trusted = a
        .peer
        .is_some_and(|ip| trusted.iter().any(|n| n.contains(&ip)));
    let mut scheme = if a.tls { "https" } else { "http" };
    let mut host = a.host;
    if trusted {
        match a.forwarded_proto.map(first_value) {
            Some(p) if p.eq_ignore_ascii_case(b"https") => scheme = "https",
            Some(p) if p.eq_ignore_ascii_case(b"http") => scheme = "http",
            _ => {}
        }
        if let Some(h) = a
            .forwarded_host
            .map(first_value)
            .and_then(|h| std::str::from_utf8(h).ok())
            .filter(|h| is_host(h))
        {
            host = h;
        }
    }
    format!("{scheme}://{host}")
}

fn first_value(v: &[u8]) -> &[u8] {
    let end = memchr::memchr(b',', v).unwrap_or(v.len());
    v[..end].trim_ascii()
}

/// A host name or address with an optional port: nothing that could change the URL's shape.
fn is_host(h: &str) -> bool {
    !h.is_empty()
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'))
}

/// Parses one `trusted_proxies` value: an address (`10.0.0.7`, `::1`) or a network
/// (`10.0.0.0/8`); `None` when it is neither.
pub fn parse_trusted(value: &str) -> Option<IpNet> {
    value
        .parse::<IpNet>()
        .ok()
        .or_else(|| value.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn behind_balancer<'a>(peer: &str, proto: &'a [u8], host: Option<&'a [u8]>) -> Arrival<'a> {
        Arrival {
            tls: false,
            host: "app.example.test",
            peer: peer.parse().ok(),
            forwarded_proto: Some(proto),
            forwarded_host: host,
        }
    }

    #[test]
    fn a_trusted_balancer_makes_the_callback_https() {
        let trusted = [parse_trusted("10.0.0.0/8").unwrap()];
        let a = behind_balancer("10.1.2.3", b"https", None);
        assert_eq!(origin(&a, &trusted), "https://app.example.test");
    }

    #[test]
    fn forwarded_headers_from_anyone_else_are_ignored() {
        let a = behind_balancer("203.0.113.9", b"https", Some(b"evil.example"));
        assert_eq!(origin(&a, &[]), "http://app.example.test");
        let trusted = [parse_trusted("10.0.0.0/8").unwrap()];
        assert_eq!(origin(&a, &trusted), "http://app.example.test");
    }

    #[test]
    fn the_outermost_proxys_values_count_and_odd_hosts_are_ignored() {
        let trusted = [parse_trusted("127.0.0.1").unwrap()];
        let a = behind_balancer(
            "127.0.0.1",
            b"https, http",
            Some(b"sso.example.test:8443, x"),
        );
        assert_eq!(origin(&a, &trusted), "https://sso.example.test:8443");
        let a = behind_balancer("127.0.0.1", b"gopher", Some(b"a.test/evil?"));
        assert_eq!(origin(&a, &trusted), "http://app.example.test");
    }

    #[test]
    fn trusted_proxies_are_addresses_or_networks() {
        assert!(parse_trusted("::1").is_some());
        assert!(parse_trusted("192.168.0.0/16").is_some());
        assert!(parse_trusted("fd00::/8").is_some());
        assert!(parse_trusted("10.0.0.0/33").is_none());
        assert!(parse_trusted("lb.example.test").is_none());
    }
}
