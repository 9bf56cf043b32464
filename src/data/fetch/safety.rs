//! Where a URL list may send us: http and https only, and by default only public
//! addresses. Names are checked after DNS resolution (the addresses checked are the ones
//! connected to), literal IPs before connecting, and both again on every redirect. Through
//! an explicit proxy (`--proxy`) the proxy connects, so names are resolved here as well and
//! refused when any of their addresses is not public.

use std::error::Error;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

/// The error a refused address produces; found again in reqwest's error chain to report it.
#[derive(Debug, Clone)]
pub struct Blocked(pub String);

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Error for Blocked {}

/// Public unicast addresses only: no loopback, private, link-local, shared (CGNAT),
/// unspecified, broadcast, multicast, documentation or reserved ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b)) // NAT64 may reach private IPv4
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // shared 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF 192.0.0/24
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

/// Checks a URL before any connection: its scheme, and its host when that is a literal IP.
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), Blocked> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Blocked(format!(
            "scheme {:?} is not allowed (http and https only)",
            url.scheme()
        )));
    }
    let ip = match url.host() {
        Some(url::Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
        Some(url::Host::Domain(_)) => None,
        None => return Err(Blocked("the URL has no host".into())),
    };
    match ip {
        Some(ip) if !allow_private && !is_public(ip) => Err(Blocked(format!(
            "{ip} is a loopback, private or reserved address (allow with --allow-private)"
        ))),
        _ => Ok(()),
    }
}

/// DNS resolution that drops non-public addresses (unless allowed) and fails when none is
/// left, so a public-looking name cannot lead to the local network.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> = addrs
                .iter()
                .copied()
                .filter(|a| allow || is_public(a.ip()))
                .collect();
            if kept.is_empty() {
                let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Blocked(format!(
                    "{host} resolves to {}: loopback, private or reserved (allow with --allow-private)",
                    shown.join(", ")
                ))) as Box<dyn Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Through a proxy: a name is refused when it resolves here to any non-public address.
/// A name that does not resolve here is left to the proxy (behind a proxy, local DNS often
/// knows only local names); the proxy resolves names again, so a name that changes its
/// addresses between the two lookups is not caught.
fn check_resolved(
    host: &str,
    addrs: std::io::Result<impl Iterator<Item = SocketAddr>>,
) -> Result<(), Blocked> {
    let Ok(addrs) = addrs else { return Ok(()) };
    let local: Vec<String> = addrs
        .filter(|a| !is_public(a.ip()))
        .map(|a| a.ip().to_string())
        .collect();
    if local.is_empty() {
        return Ok(());
    }
    Err(Blocked(format!(
        "{host} resolves to {}: loopback, private or reserved (allow with --allow-private)",
        local.join(", ")
    )))
}

fn domain(url: &Url) -> Option<(&str, u16)> {
    match url.host() {
        Some(url::Host::Domain(d)) => Some((d, url.port_or_known_default().unwrap_or(80))),
        _ => None,
    }
}

/// The name check made before a request is handed to a proxy.
pub async fn check_name(url: &Url, allow_private: bool) -> Result<(), Blocked> {
    match domain(url) {
        Some((host, port)) if !allow_private => {
            check_resolved(host, tokio::net::lookup_host((host, port)).await)
        }
        _ => Ok(()),
    }
}

/// Follows at most `max` redirects, each to an allowed scheme and (literal) address; through
/// a proxy, names too.
pub fn redirect_policy(max: usize, allow_private: bool, proxy: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > max {
            return attempt.error(Blocked(format!("more than {max} redirects")));
        }
        let mut checked = check_url(attempt.url(), allow_private);
        if let (Ok(()), true, false, Some((host, port))) =
            (&checked, proxy, allow_private, domain(attempt.url()))
        {
            // The policy is synchronous; the lookup blocks this worker thread only.
            checked = tokio::task::block_in_place(|| {
                check_resolved(
                    host,
                    std::net::ToSocketAddrs::to_socket_addrs(&(host, port)),
                )
            });
        }
        match checked {
            Ok(()) => attempt.follow(),
            Err(e) => attempt.error(e),
        }
    })
}

/// The `Blocked` error somewhere in an error's chain.
pub fn find_blocked(e: &(dyn Error + 'static)) -> Option<Blocked> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(b) = err.downcast_ref::<Blocked>() {
            return Some(b.clone());
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_are_checked_by_scheme_and_literal_address() {
        let ok = |u: &str, allow| check_url(&Url::parse(u).unwrap(), allow).is_ok();
        assert!(ok("https://example.com/a.jpg", false));
        assert!(!ok("file:///etc/passwd", true));
        assert!(!ok("ftp://example.com/a.jpg", true));
        assert!(!ok("http://127.0.0.1:8080/a.jpg", false));
        assert!(!ok("http://[::1]/a.jpg", false));
        assert!(!ok("http://169.254.169.254/latest/meta-data", false));
        assert!(ok("http://127.0.0.1:8080/a.jpg", true));
    }
}
