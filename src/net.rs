//! Outgoing connections to hosts that users and peers name: git registries, the release APIs
//! of their platforms, peer brokers of bridges and (through the rule given to
//! `pepeunit-federation`) peer instances. Unless the instance runs with
//! `PU_ALLOW_LOCAL_NETWORK=true`, none of them may reach this machine or the networks around
//! it (loopback, private, link-local, ... addresses): a name is resolved once, every address it
//! resolves to is checked, and the connection goes to a checked address (pinned), so a DNS
//! answer that changes in between (rebinding) cannot redirect it. Refusals name the address
//! class. This module is the one place that knows which addresses are local.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Longest a name may take to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The variable that allows local addresses (for trials and tests).
pub const ALLOW_LOCAL_VAR: &str = "PU_ALLOW_LOCAL_NETWORK";

/// Why an address may not be reached from here, or None for a global address.
pub fn local_address_class(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_class(v4),
        IpAddr::V6(v6) => v6_class(v6),
    }
}

/// Whether no user-named connection may reach `ip` (see [`local_address_class`]).
pub fn is_local_ip(ip: IpAddr) -> bool {
    local_address_class(ip).is_some()
}

fn v4_class(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    Some(if v4.is_loopback() {
        "loopback"
    } else if v4.is_unspecified() || a == 0 {
        // 0.0.0.0/8: connecting to 0.x.x.x reaches this machine on Linux
        "unspecified"
    } else if v4.is_private() {
        "private"
    } else if v4.is_link_local() {
        "link-local"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if v4.is_broadcast() {
        "broadcast"
    } else if v4.is_multicast() {
        "multicast"
    } else if v4.is_documentation() {
        "documentation"
    } else if (a == 192 && b == 0 && c == 0) || a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn v6_class(v6: Ipv6Addr) -> Option<&'static str> {
    let s = v6.segments();
    if v6.is_loopback() {
        return Some("loopback");
    }
    if v6.is_unspecified() {
        return Some("unspecified");
    }
    // IPv4 inside IPv6: mapped (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::/96)
    // and 6to4 (2002:AABB:CCDD::/48) reach the IPv4 address they carry
    if let Some(v4) = v6.to_ipv4() {
        return v4_class(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [a, b] = s[6].to_be_bytes();
        let [c, d] = s[7].to_be_bytes();
        return v4_class(Ipv4Addr::new(a, b, c, d));
    }
    if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        return v4_class(Ipv4Addr::new(a, b, c, d));
    }
    Some(if (s[0] & 0xfe00) == 0xfc00 || (s[0] & 0xffc0) == 0xfec0 {
        // unique local (and the deprecated site-local)
        "private"
    } else if (s[0] & 0xffc0) == 0xfe80 {
        "link-local"
    } else if v6.is_multicast() {
        "multicast"
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        "documentation"
    } else {
        return None;
    })
}

/// A host that may not be reached, or could not be looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error(
        "{host} is a {class} address ({ALLOW_LOCAL_VAR}=true allows local addresses for trials)"
    )]
    LocalLiteral { host: String, class: &'static str },
    #[error("{host} resolves to {addr}, a {class} address ({ALLOW_LOCAL_VAR}=true allows local addresses for trials)")]
    LocalResolved {
        host: String,
        addr: IpAddr,
        class: &'static str,
    },
    #[error("{host} cannot be resolved ({reason})")]
    Resolve { host: String, reason: String },
    #[error("{0} has no valid host")]
    NoHost(String),
}

/// An address literal (`127.0.0.1`, `::1`, `[::1]`), or None for a name.
fn literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Names that are this machine by definition (RFC 6761), whatever a resolver says.
fn is_localhost_name(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// Checks an address literal or a local name without resolving anything: Ok(Some(ip)) for a
/// literal that may be reached, Ok(None) for a name still to resolve.
fn check_without_dns(host: &str, allow_local: bool) -> Result<Option<IpAddr>, NetError> {
    if let Some(ip) = literal(host) {
        if let (false, Some(class)) = (allow_local, local_address_class(ip)) {
            return Err(NetError::LocalLiteral {
                host: host.to_string(),
                class,
            });
        }
        return Ok(Some(ip));
    }
    if !allow_local && is_localhost_name(host) {
        return Err(NetError::LocalLiteral {
            host: host.to_string(),
            class: "loopback",
        });
    }
    Ok(None)
}

/// Resolves `host` (a name or an address literal) for `port` and checks every address it
/// resolves to: the addresses to connect to (all of them allowed). With `allow_local` nothing
/// is refused. One local address refuses the whole name (a resolver may hand them out in any
/// order).
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_local: bool,
) -> Result<Vec<SocketAddr>, NetError> {
    if let Some(ip) = check_without_dns(host, allow_local)? {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let unresolved = |reason: String| NetError::Resolve {
        host: host.to_string(),
        reason,
    };
    let addrs: Vec<SocketAddr> =
        tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((host, port)))
            .await
            .map_err(|_| unresolved("DNS timed out".into()))?
            .map_err(|e| unresolved(e.to_string()))?
            .collect();
    if addrs.is_empty() {
        return Err(unresolved("no address".into()));
    }
    if !allow_local {
        for a in &addrs {
            if let Some(class) = local_address_class(a.ip()) {
                return Err(NetError::LocalResolved {
                    host: host.to_string(),
                    addr: a.ip(),
                    class,
                });
            }
        }
    }
    Ok(addrs)
}

/// The host of an `http(s)` URL as a connection names it, and its port (explicit or the
/// scheme's).
pub fn url_host_port(url: &url::Url) -> Result<(String, u16), NetError> {
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_string(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
        None => return Err(NetError::NoHost(url.to_string())),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| NetError::NoHost(url.to_string()))?;
    Ok((host, port))
}

/// [`resolve_checked`] for the host of a URL: `(host, port, addresses)`.
pub async fn resolve_url(
    url: &str,
    allow_local: bool,
) -> Result<(String, u16, Vec<SocketAddr>), NetError> {
    let parsed = url::Url::parse(url).map_err(|_| NetError::NoHost("the URL".into()))?;
    let (host, port) = url_host_port(&parsed)?;
    let addrs = resolve_checked(&host, port, allow_local).await?;
    Ok((host, port, addrs))
}

/// For reqwest clients whose requests go to hosts users name: a URL's address literal is
/// checked here ([`check_url`]: reqwest connects to literals without resolving them), names
/// by this resolver when the connection is made, which hands reqwest only checked addresses.
#[derive(Clone, Copy)]
pub struct CheckedResolver;

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_checked(&host, 0, false).await?;
            let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// Makes a reqwest client follow the rule: unless local addresses are allowed, no proxy (it
/// would resolve names itself) and [`CheckedResolver`]. Requests must also pass [`check_url`].
pub fn guard_client(builder: reqwest::ClientBuilder, allow_local: bool) -> reqwest::ClientBuilder {
    if allow_local {
        builder
    } else {
        builder.no_proxy().dns_resolver(Arc::new(CheckedResolver))
    }
}

/// The part of the rule a resolver cannot see: a URL whose host is an address literal (or a
/// `localhost` name).
pub fn check_url(url: &str, allow_local: bool) -> Result<(), NetError> {
    let parsed = url::Url::parse(url).map_err(|_| NetError::NoHost("the URL".into()))?;
    let (host, _) = url_host_port(&parsed)?;
    check_without_dns(&host, allow_local).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_in_every_spelling() {
        for (local, class) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.0.0.5", "private"),
            ("172.16.1.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("100.127.255.255", "shared (carrier-grade NAT)"),
            ("192.0.0.8", "reserved"),
            ("240.0.0.1", "reserved"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("192.0.2.1", "documentation"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("fd00::1", "private"),
            ("fec0::1", "private"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
        ] {
            let ip: IpAddr = local.parse().unwrap();
            assert_eq!(local_address_class(ip), Some(class), "{local}");
            assert!(is_local_ip(ip));
        }
        for global in [
            "8.8.8.8",
            "100.128.0.1",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            assert_eq!(
                local_address_class(global.parse().unwrap()),
                None,
                "{global}"
            );
        }
    }

    #[tokio::test]
    async fn names_are_resolved_and_every_address_checked() {
        for (host, class) in [
            ("127.0.0.1", "loopback"),
            ("[::1]", "loopback"),
            ("localhost", "loopback"),
            ("LocalHost.", "loopback"),
            ("svc.localhost", "loopback"),
            ("169.254.169.254", "link-local"),
        ] {
            let err = resolve_checked(host, 80, false).await.unwrap_err();
            assert!(err.to_string().contains(class), "{host}: {err}");
            assert!(err.to_string().contains(ALLOW_LOCAL_VAR), "{host}: {err}");
        }
        // glibc reads inet_aton forms; a resolver that refuses them is fine too
        for host in ["2130706433", "127.1"] {
            if let Err(e) = resolve_checked(host, 80, false).await {
                assert!(
                    matches!(
                        e,
                        NetError::LocalResolved {
                            class: "loopback",
                            ..
                        } | NetError::Resolve { .. }
                    ),
                    "{host}: {e}"
                );
            } else {
                panic!("{host} was allowed");
            }
        }
        // allowed: nothing refused, literals not resolved
        let addrs = resolve_checked("127.0.0.1", 8080, true).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:8080".parse().unwrap()]);
        assert!(!resolve_checked("localhost", 80, true)
            .await
            .unwrap()
            .is_empty());
        assert!(matches!(
            resolve_checked("name.invalid", 80, false).await,
            Err(NetError::Resolve { .. })
        ));
    }

    #[tokio::test]
    async fn guarded_clients_resolve_through_the_check() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // a name reqwest resolves (no check_url first): the resolver refuses it
        let client = guard_client(reqwest::Client::builder(), false)
            .build()
            .unwrap();
        let err = client
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let mut found = None;
        let mut source = std::error::Error::source(&err);
        while let Some(s) = source {
            if let Some(e) = s.downcast_ref::<NetError>() {
                found = Some(e.clone());
            }
            source = s.source();
        }
        assert!(
            matches!(
                found,
                Some(NetError::LocalLiteral {
                    class: "loopback",
                    ..
                })
            ),
            "{err:?}"
        );
        // allowed: the same request reaches the listener
        let client = guard_client(reqwest::Client::builder(), true)
            .build()
            .unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.is_ok() });
        let _ = client
            .get(format!("http://localhost:{port}/"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        assert!(accept.await.unwrap());
    }

    #[test]
    fn url_literals_are_checked_without_dns() {
        assert!(check_url("http://10.0.0.1:8080/x", false)
            .unwrap_err()
            .to_string()
            .contains("private"));
        assert!(check_url("https://[fe80::1]/x", false)
            .unwrap_err()
            .to_string()
            .contains("link-local"));
        assert!(check_url("http://localhost/x", false).is_err());
        assert!(check_url("http://10.0.0.1:8080/x", true).is_ok());
        // names are the resolver's business
        assert!(check_url("https://gitlab.example.org/api", false).is_ok());
    }
}
