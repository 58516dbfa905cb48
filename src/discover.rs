//! `quorate discover`: find quorate peers on the LAN for scripts and operators.
//!
//! The one-shot mode asks with legacy unicast queries (see `quorate_discovery::query`), so
//! back-to-back calls answer in one round trip each. The watch mode browses with a multicast
//! daemon and prints `found`, `updated` and `lost` events as JSON lines until interrupted.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use quorate_discovery::{
    AdvertRole, DiscoveryError, Interfaces, Mdns, MdnsConfig, Peer, PeerEvent, QueryOptions, Stats,
};

/// Which peers count.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this cluster.
    pub cluster: Option<String>,
    /// Only this role.
    pub role: Option<AdvertRole>,
    /// Only peers whose TXT has each of these key/value pairs.
    pub txt: Vec<(String, String)>,
}

impl Filter {
    /// Whether the peer passes every condition.
    pub fn matches(&self, p: &Peer) -> bool {
        self.cluster.as_ref().is_none_or(|c| *c == p.cluster)
            && self.role.is_none_or(|r| r == p.role)
            && self
                .txt
                .iter()
                .all(|(k, v)| p.txt.get(&k.to_ascii_lowercase()) == Some(v))
    }
}

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON array.
    Json,
    /// One `ip:port` per line.
    Lines,
    /// One line of comma-separated `ip:port`, for `--peers`.
    Quiet,
}

/// A one-shot discovery.
#[derive(Clone, Debug)]
pub struct Once {
    /// What to ask and how long.
    pub query: QueryOptions,
    /// Stop as soon as this many matching peers are found.
    pub expect: Option<usize>,
    /// Which peers count.
    pub filter: Filter,
}

/// Runs a one-shot discovery; returns the matching peers, sorted by name and id, and the
/// counters of what was skipped.
pub fn once(opts: &Once) -> Result<(Vec<Peer>, Arc<Stats>), DiscoveryError> {
    let stats = Arc::new(Stats::default());
    let want = opts.expect;
    let filter = opts.filter.clone();
    let found = quorate_discovery::query(
        &opts.query,
        stats.clone(),
        |_| {},
        |peers| want.is_some_and(|n| peers.iter().filter(|p| filter.matches(p)).count() >= n),
    )?;
    let mut peers: Vec<Peer> = found
        .into_iter()
        .filter(|p| opts.filter.matches(p))
        .collect();
    peers.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
    Ok((peers, stats))
}

/// `ip:port` of a peer's preferred address and QUIC port; IPv6 in brackets.
pub fn dial_addr(p: &Peer) -> Option<String> {
    p.preferred_addr()
        .map(|ip| std::net::SocketAddr::new(ip, p.port).to_string())
}

/// Renders peers in a format. JSON is always one valid array (`[]` when empty).
pub fn render(peers: &[Peer], format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(peers).unwrap_or_else(|_| "[]".into()) + "\n",
        Format::Lines => peers
            .iter()
            .filter_map(dial_addr)
            .map(|a| a + "\n")
            .collect(),
        Format::Quiet => {
            let line = peers
                .iter()
                .filter_map(dial_addr)
                .collect::<Vec<_>>()
                .join(",");
            if line.is_empty() {
                String::new()
            } else {
                line + "\n"
            }
        }
        Format::Table => table(peers),
    }
}

fn table(peers: &[Peer]) -> String {
    let header = [
        "ID", "NAME", "CLUSTER", "ROLE", "STATE", "ADDRESS", "VERSION",
    ];
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.name.clone(),
                p.cluster.clone(),
                p.role.to_string(),
                p.state.to_string(),
                dial_addr(p).unwrap_or_default(),
                p.version.clone(),
            ]
        })
        .collect();
    columns(&header, &rows)
}

/// Aligned columns under a header, two spaces apart, no trailing spaces.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(l, "{c:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

/// Watches the network and writes one JSON line per event for matching peers until `stop`
/// completes. Verifies known peers every `verify_every`, so that a peer that vanished without
/// a goodbye is reported lost within about `verify_every + verify_timeout`.
pub async fn watch(
    service_type: String,
    interfaces: Interfaces,
    filter: Filter,
    out: &mut (dyn Write + Send),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), DiscoveryError> {
    let mdns = Mdns::start(MdnsConfig {
        service_type,
        interfaces,
        verify_every: Some(Duration::from_secs(2)),
        verify_timeout: Duration::from_secs(3),
    })?;
    let mut events = mdns.browse(None)?;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            ev = events.recv() => {
                let Some(ev) = ev else { break };
                if !filter.matches(ev.peer()) {
                    continue;
                }
                let line = event_json(&ev);
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    break; // the reader went away (a closed pipe): stop quietly
                }
            }
            () = &mut stop => break,
        }
    }
    mdns.shutdown(Duration::from_secs(1)).await
}

/// One watch event as a JSON object: `{"event": "found", "time": ..., "peer": {...}}`.
pub fn event_json(ev: &PeerEvent) -> String {
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    serde_json::json!({ "event": ev.kind(), "time": time, "peer": ev.peer() }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_discovery::AdvertState;

    fn peer(id: &str, name: &str, cluster: &str, role: AdvertRole, addrs: &[&str]) -> Peer {
        Peer {
            id: id.into(),
            name: name.into(),
            cluster: cluster.into(),
            role,
            state: AdvertState::Forming,
            addrs: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
            port: 7947,
            gossip_port: 7946,
            api_port: 7948,
            version: "0.1.0".into(),
            ca: None,
            txt: [("zone".to_string(), "a".to_string())].into(),
        }
    }

    #[test]
    fn filters_select_by_cluster_role_and_txt() {
        let p = peer(
            "0000000000000001",
            "n1",
            "prod",
            AdvertRole::Storage,
            &["10.0.0.1"],
        );
        assert!(Filter::default().matches(&p));
        assert!(
            Filter {
                cluster: Some("prod".into()),
                ..Default::default()
            }
            .matches(&p)
        );
        assert!(
            !Filter {
                cluster: Some("dev".into()),
                ..Default::default()
            }
            .matches(&p)
        );
        assert!(
            !Filter {
                role: Some(AdvertRole::Voter),
                ..Default::default()
            }
            .matches(&p)
        );
        assert!(
            Filter {
                txt: vec![("ZONE".into(), "a".into())],
                ..Default::default()
            }
            .matches(&p)
        );
        assert!(
            !Filter {
                txt: vec![("zone".into(), "b".into())],
                ..Default::default()
            }
            .matches(&p)
        );
    }

    #[test]
    fn formats_agree_on_addresses() {
        let peers = vec![
            peer(
                "0000000000000001",
                "n1",
                "c",
                AdvertRole::Voter,
                &["10.0.0.1", "fe80::1"],
            ),
            peer(
                "0000000000000002",
                "n2",
                "c",
                AdvertRole::Voter,
                &["fe80::2"],
            ),
        ];
        assert_eq!(
            render(&peers, Format::Quiet),
            "10.0.0.1:7947,[fe80::2]:7947\n"
        );
        assert_eq!(
            render(&peers, Format::Lines),
            "10.0.0.1:7947\n[fe80::2]:7947\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&peers, Format::Json)).expect("json");
        assert_eq!(json[0]["addrs"], serde_json::json!(["10.0.0.1", "fe80::1"]));
        assert_eq!(json[1]["role"], "voter");
        let table = render(&peers, Format::Table);
        assert!(
            table.starts_with("ID") && table.contains("10.0.0.1:7947"),
            "{table}"
        );
    }

    #[test]
    fn nothing_found_is_an_empty_array_and_empty_lines() {
        assert_eq!(render(&[], Format::Json).trim(), "[]");
        assert_eq!(render(&[], Format::Quiet), "");
        assert_eq!(render(&[], Format::Lines), "");
    }
}
