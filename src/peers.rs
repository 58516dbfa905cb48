//! `--peers` entries: what one may be (an address, a host name, an SRV record), how it is
//! parsed (pure), and how the names are resolved through DNS at each attempt to join or form.
//!
//! - `ip:port`, `[v6]:port`, or `ip` (the default QUIC port): that address.
//! - `host[:port]`: every A and AAAA record of `host` is a peer, on `port` (default: the QUIC
//!   port).
//! - `srv:_service._proto.name`: every SRV target of the record is a peer on the port the record
//!   gives, its addresses from the target's A and AAAA records.
//!
//! Names are resolved with `hickory-resolver`, configured from `/etc/resolv.conf` each time (so
//! a changed resolver configuration and records that appear later are seen, and nothing is
//! cached between attempts). A name that does not resolve is reported in [`Resolution`] and
//! retried by the caller; it is never an error at start. What the addresses are used for is
//! the membership plan's (`agent::membership`); this module decides nothing.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::proto::rr::RData;

/// The prefix of an SRV entry.
pub const SRV_PREFIX: &str = "srv:";

/// One `--peers` entry, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerSpec {
    /// A literal address.
    Addr(SocketAddr),
    /// A host name whose A and AAAA records are peers, on this port.
    Host {
        /// The name, as given (a trailing dot kept).
        name: String,
        /// The QUIC port.
        port: u16,
    },
    /// An SRV record whose targets are peers, on the ports it gives.
    Srv(String),
}

impl std::fmt::Display for PeerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerSpec::Addr(a) => write!(f, "{a}"),
            PeerSpec::Host { name, port } => write!(f, "{name}:{port}"),
            PeerSpec::Srv(name) => write!(f, "{SRV_PREFIX}{name}"),
        }
    }
}

impl PeerSpec {
    /// Parses an entry; `default_port` is the port of an address or host name given without
    /// one. The error says what is wrong, for the configuration's refusal.
    pub fn parse(text: &str, default_port: u16) -> Result<PeerSpec, String> {
        if let Some(name) = text.strip_prefix(SRV_PREFIX) {
            check_dns_name(name)?;
            let first = name.split('.').next().unwrap_or_default();
            let second = name.split('.').nth(1).unwrap_or_default();
            if !first.starts_with('_') || !second.starts_with('_') {
                return Err(format!(
                    "{text:?}: an SRV name starts with _service._proto, as srv:_quorate._udp.quorate-voters.ns.svc.cluster.local"
                ));
            }
            return Ok(PeerSpec::Srv(name.to_string()));
        }
        if let Ok(a) = text.parse::<SocketAddr>() {
            return check_addr(a).map(PeerSpec::Addr);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return check_addr(SocketAddr::new(ip, default_port)).map(PeerSpec::Addr);
        }
        let (name, port) = match text.rsplit_once(':') {
            Some((name, port)) => {
                let port: u16 = port
                    .parse()
                    .map_err(|_| format!("{text:?}: {port:?} is not a port number"))?;
                (name, port)
            }
            None => (text, default_port),
        };
        if port == 0 {
            return Err(format!("{text:?}: port 0 is not a port to join through"));
        }
        check_dns_name(name).map_err(|e| format!("{text:?}: {e}"))?;
        if name.starts_with('_') {
            return Err(format!(
                "{text:?}: a name that starts with '_' is a service name: write srv:{name}"
            ));
        }
        Ok(PeerSpec::Host {
            name: name.to_string(),
            port,
        })
    }

    /// Whether resolving this entry needs DNS.
    pub fn is_name(&self) -> bool {
        !matches!(self, PeerSpec::Addr(_))
    }
}

fn check_addr(a: SocketAddr) -> Result<SocketAddr, String> {
    if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast() {
        return Err(format!(
            "{a} is not an address to join through (port 0, unspecified or multicast)"
        ));
    }
    Ok(a)
}

/// A DNS name: at most 253 bytes, labels of 1 to 63 letters, digits, '-' or '_', not starting
/// or ending with '-'; a trailing dot allowed; not all digits and dots (that is an address).
fn check_dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        return Err(format!("{name:?}: a DNS name has 1 to 253 bytes"));
    }
    for label in bare.split('.') {
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if label.is_empty()
            || label.len() > 63
            || !label.chars().all(ok)
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(format!(
                "{name:?}: {label:?} is not a DNS label (1 to 63 letters, digits, '-' or '_', no '-' at either end)"
            ));
        }
    }
    if bare.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!("{name:?} is neither an IP address nor a DNS name"));
    }
    Ok(())
}

/// What one round of resolution found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Every address found, literal ones included, in order, without repeats.
    pub addrs: Vec<SocketAddr>,
    /// The entries that gave no address, with the reason (for the log).
    pub unresolved: Vec<(String, String)>,
}

/// Resolves `specs` now: literal addresses as they are, names through DNS with a resolver
/// configured afresh from the system's configuration (`/etc/resolv.conf`).
pub async fn resolve(specs: &[PeerSpec]) -> Resolution {
    let mut out = Resolution::default();
    let mut seen = BTreeSet::new();
    let mut push = |out: &mut Resolution, a: SocketAddr| {
        if seen.insert(a) {
            out.addrs.push(a);
        }
    };
    let resolver = if specs.iter().any(PeerSpec::is_name) {
        match TokioResolver::builder_tokio().and_then(|mut b| {
            // One attempt's answer is all we want: the caller retries with backoff.
            b.options_mut().timeout = Duration::from_secs(2);
            b.options_mut().attempts = 1;
            b.options_mut().cache_size = 0;
            b.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            b.build()
        }) {
            Ok(r) => Some(r),
            Err(e) => {
                let why = format!("no DNS resolver (is /etc/resolv.conf readable?): {e}");
                for s in specs.iter().filter(|s| s.is_name()) {
                    out.unresolved.push((s.to_string(), why.clone()));
                }
                None
            }
        }
    } else {
        None
    };
    for spec in specs {
        match (spec, &resolver) {
            (PeerSpec::Addr(a), _) => push(&mut out, *a),
            (_, None) => {}
            (PeerSpec::Host { name, port }, Some(r)) => match lookup_ips(r, name).await {
                Ok(ips) if !ips.is_empty() => {
                    for ip in ips {
                        push(&mut out, SocketAddr::new(ip, *port));
                    }
                }
                Ok(_) => out
                    .unresolved
                    .push((spec.to_string(), "no A or AAAA records".into())),
                Err(e) => out.unresolved.push((spec.to_string(), e)),
            },
            (PeerSpec::Srv(name), Some(r)) => match r.srv_lookup(name.as_str()).await {
                Ok(lookup) => {
                    let mut any = false;
                    let targets: Vec<(String, u16)> = lookup
                        .answers()
                        .iter()
                        .filter_map(|rec| match &rec.data {
                            RData::SRV(srv) => Some((srv.target.to_ascii(), srv.port)),
                            _ => None,
                        })
                        .collect();
                    for (target, port) in targets {
                        match lookup_ips(r, &target).await {
                            Ok(ips) => {
                                for ip in ips {
                                    any = true;
                                    push(&mut out, SocketAddr::new(ip, port));
                                }
                            }
                            Err(e) => out.unresolved.push((format!("{spec} target {target}"), e)),
                        }
                    }
                    if !any {
                        out.unresolved
                            .push((spec.to_string(), "no SRV target has an address".into()));
                    }
                }
                Err(e) => out.unresolved.push((spec.to_string(), e.to_string())),
            },
        }
    }
    out
}

async fn lookup_ips(r: &TokioResolver, name: &str) -> Result<Vec<IpAddr>, String> {
    r.lookup_ip(name)
        .await
        .map(|l| l.iter().collect())
        .map_err(|e| e.to_string())
}

/// The delay before retry number `attempt` (0 for the first retry): `base` doubled per attempt
/// up to `cap`, then shortened by up to a quarter by `jitter` (a draw in `0..1`), so that
/// nodes started together do not retry in step.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, jitter: f64) -> Duration {
    let full = base
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(cap);
    full.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_bad_ones_are_refused_with_a_reason() {
        let p = |t| PeerSpec::parse(t, 7947);
        assert_eq!(
            p("10.0.0.1"),
            Ok(PeerSpec::Addr("10.0.0.1:7947".parse().unwrap()))
        );
        assert_eq!(
            p("[fd00::1]:9000"),
            Ok(PeerSpec::Addr("[fd00::1]:9000".parse().unwrap()))
        );
        assert_eq!(
            p("quorate-0.quorate-voters"),
            Ok(PeerSpec::Host {
                name: "quorate-0.quorate-voters".into(),
                port: 7947
            })
        );
        assert_eq!(
            p("voters.example.:8000"),
            Ok(PeerSpec::Host {
                name: "voters.example.".into(),
                port: 8000
            })
        );
        assert_eq!(
            p("srv:_quorate._udp.quorate-voters.ns.svc.cluster.local"),
            Ok(PeerSpec::Srv(
                "_quorate._udp.quorate-voters.ns.svc.cluster.local".into()
            ))
        );
        for bad in [
            "",
            "10.0.0.1:0",
            "0.0.0.0",
            "224.0.0.1",
            "host:port",
            "host:70000",
            "-bad.example",
            "bad..example",
            "a b",
            "1.2.3",
            "srv:quorate.example",
            "srv:",
            "_quorate._udp.example",
            &"x".repeat(64),
        ] {
            assert!(p(bad).is_err(), "{bad:?} was accepted: {:?}", p(bad));
        }
    }

    #[test]
    fn entries_print_as_they_parse() {
        for t in ["10.0.0.1:7947", "host.example:7947", "srv:_q._udp.example"] {
            assert_eq!(PeerSpec::parse(t, 7947).unwrap().to_string(), t);
        }
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_jitter_only_shortens() {
        let (b, c) = (Duration::from_millis(250), Duration::from_secs(10));
        assert_eq!(backoff(0, b, c, 0.0), b);
        assert_eq!(backoff(2, b, c, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(30, b, c, 0.0), c);
        assert_eq!(backoff(30, b, c, 1.0), Duration::from_millis(7500));
        for j in [0.0, 0.3, 0.99] {
            let d = backoff(10, b, c, j);
            assert!(d <= c && d >= c.mul_f64(0.75), "{d:?}");
        }
    }

    #[tokio::test]
    async fn literal_addresses_resolve_without_dns() {
        let specs = [
            PeerSpec::parse("10.0.0.1", 7947).unwrap(),
            PeerSpec::parse("10.0.0.1:7947", 7947).unwrap(),
            PeerSpec::parse("10.0.0.2:7000", 7947).unwrap(),
        ];
        let r = resolve(&specs).await;
        assert_eq!(
            r.addrs,
            vec![
                "10.0.0.1:7947".parse().unwrap(),
                "10.0.0.2:7000".parse().unwrap()
            ]
        );
        assert!(r.unresolved.is_empty());
    }
}
