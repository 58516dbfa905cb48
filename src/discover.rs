//! `quorate discover`'s library half: find quorate peers on the LAN for scripts and operators.
//!
//! The one-shot mode asks with legacy unicast queries (see `quorate_discovery::query`), so
//! back-to-back calls answer in one round trip each. The watch mode browses with a multicast
//! daemon and writes `found`, `updated` and `lost` events as JSON lines until told to stop.
//! How peers are shown (tables, `--quiet` lines) is the binary's job, not this module's.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use quorate_discovery::{
    DiscoveryError, Interfaces, Mdns, MdnsConfig, Peer, PeerEvent, QueryOptions, Role, Stats,
};

/// Which peers count.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this cluster.
    pub cluster: Option<String>,
    /// Only this role.
    pub role: Option<Role>,
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

    fn peer(id: &str, name: &str, cluster: &str, role: Role, addrs: &[&str]) -> Peer {
        Peer {
            id: id.parse().expect("a node id"),
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
            Role::Storage,
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
                role: Some(Role::Voter),
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
}
