//! Starting the layers for the agent: gossip (sealed with the data dir's keyring, else the
//! configured cluster key, else open), mDNS discovery (the advertisement, and a browse whose
//! peers of this cluster become gossip seeds and whose view feeds the membership decisions)
//! and the HTTP API.
//!
//! Each function starts one layer and hands back its handle; what runs between the layers
//! afterwards is `bridge`'s, and the order of starting and stopping is the agent's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quorate_discovery::{
    Advert, AdvertState, Advertisement, DiscoveryError, Interfaces, Mdns, MdnsConfig,
};
use quorate_gossip::{Gossip, GossipConfig, Key, NodeMeta};
use tracing::{info, warn};

use super::setup::{Agent, AgentError, MdnsView};
use crate::api::{ApiState, ConsensusCell};
use crate::keys::{self, SharedKeys, StoredKeys};

/// What the HTTP API shares with the agent.
pub(super) struct HttpParts {
    pub(super) gossip: Arc<Gossip>,
    pub(super) keys: SharedKeys,
    pub(super) discovery: Option<Arc<quorate_discovery::Stats>>,
    pub(super) consensus: ConsensusCell,
    pub(super) admin_token: String,
    pub(super) leave: Arc<tokio::sync::Notify>,
}

impl Agent {
    /// This node's keyring: the data dir's if it has one, else the configured cluster key
    /// (which then starts the keyring), else none (open) — kept as this node's role may keep
    /// it: a storage node keeps gossip keys only, and an older keyring with cluster keys on a
    /// storage node is rewritten so.
    pub(super) fn load_keys(&self) -> Result<StoredKeys, AgentError> {
        let role = self.config.role;
        let stored = self.data_dir.load_keyring()?;
        let configured = match self.config.cluster_key.as_deref() {
            Some(c) => Some(Key::from_base64(c).map_err(|e| AgentError::Keyring(e.to_string()))?),
            None => None,
        };
        let save = |keys: &StoredKeys| {
            self.data_dir
                .save_keyring(keys)
                .map_err(|e| AgentError::Keyring(format!("cannot save the gossip keyring: {e}")))
        };
        match (stored, configured) {
            (Some(stored), configured) => {
                let kept = stored.clone().for_role(role);
                if kept != stored {
                    save(&kept)?;
                    warn!(
                        "this storage node's keyring held cluster keys; it keeps gossip keys only now"
                    );
                }
                if let Some(c) = configured
                    && !kept.gossip_keys().contains(&keys::gossip_key(&c))
                {
                    warn!(
                        "cluster_key is not in this node's keyring and is ignored: the keyring in the data dir wins; rotate keys with `quorate keyring`"
                    );
                }
                Ok(kept)
            }
            (None, Some(c)) => {
                let kept = StoredKeys::from_cluster_keys(vec![c], role);
                save(&kept)?;
                Ok(kept)
            }
            (None, None) => Ok(StoredKeys::open(role)),
        }
    }

    /// Starts gossip with this node's metadata.
    pub(super) async fn start_gossip(&self, keys: &StoredKeys) -> Result<Gossip, AgentError> {
        let c = &self.config;
        let generation = self
            .data_dir
            .next_generation(quorate_base::now_ms())
            .map_err(AgentError::Generation)?;
        let listen = c.gossip_listen();
        let advertise = self.resolved.gossip_addr();
        let mut config = GossipConfig::lan(
            self.data_dir.node_id(),
            c.cluster.clone(),
            listen,
            advertise,
        );
        config.generation = generation;
        config.seeds = c
            .gossip
            .seeds
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect();
        config.interval = c.gossip_interval();
        config.phi_threshold = c.gossip.phi_threshold;
        config.reap_after = c.gossip.reap_after;
        config.keys = keys.gossip_keys();
        let meta = NodeMeta {
            name: self.resolved.name.clone(),
            role: Some(c.role),
            quic_addr: Some(self.resolved.quic_addr()),
            api_addr: Some(c.http_addr),
            version: env!("CARGO_PKG_VERSION").to_string(),
            cluster_state: "forming".to_string(),
            raft_leader: None,
            raft_term: None,
            labels: c.labels.clone(),
        };
        Ok(Gossip::start(config, meta).await?)
    }

    /// Serves the HTTP API until told to stop.
    pub(super) async fn start_http(
        &self,
        parts: HttpParts,
    ) -> Result<
        (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        ),
        AgentError,
    > {
        let addr = self.config.http_addr;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            AgentError::Http(format!("cannot listen on {addr}: {e}; set --http-addr"))
        })?;
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let state = ApiState {
            node_id: self.data_dir.node_id(),
            gossip: parts.gossip,
            keys: parts.keys,
            data_dir: self.data_dir.clone(),
            discovery: parts.discovery,
            consensus: parts.consensus,
            admin_token: Arc::new(parts.admin_token),
            leave: parts.leave,
            events: self.events.clone(),
            handlers: self.handler_stats.clone(),
            closing: closing_rx,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = crate::api::router(state);
        let done = tokio::spawn(async move {
            let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
                // Event streams and blocking queries end, so the shutdown does not wait on them.
                let _ = closing.send(true);
            });
            if let Err(e) = serve.await {
                warn!(error = %e, "http api stopped with an error");
            }
        });
        Ok((stop, done))
    }

    /// This node's mDNS advertisement while it is forming (`None` when discovery is off).
    pub(super) fn advertisement(&self) -> Option<Advertisement> {
        let c = &self.config;
        if !c.discovery.enabled {
            return None;
        }
        let id = self.data_dir.node_id();
        // Advertise what the node listens on: a fixed address when one is configured (or in
        // dev mode), else every address of the selected interfaces, kept current by mDNS.
        let addrs = if c.dev {
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        } else if c.advertise.is_some() {
            vec![self.resolved.advertise]
        } else if !c.bind.is_unspecified() {
            vec![c.bind]
        } else {
            Vec::new()
        };
        let advert = Advert {
            id,
            cluster: c.cluster.clone(),
            role: c.role,
            gossip_port: c.gossip_port,
            api_port: c.http_addr.port(),
            state: AdvertState::Forming,
            ca: None,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        Some(Advertisement {
            instance: self.resolved.name.clone(),
            host: format!("q-{id}.local."),
            port: c.quic_port,
            addrs,
            advert,
        })
    }

    /// Whether this node browses mDNS (queries, and caches every peer it hears of): a voter
    /// does; a storage node only while it has no other way to its cluster, so not when it is a
    /// member already (its data dir holds a cluster) nor when its join token names the voters'
    /// addresses. Every browser on a link caches and refreshes every node, and answers to each
    /// browser's queries come from every node: hundreds of storage nodes starting at once would
    /// send O(N³) packet deliveries through the link.
    pub(super) fn browses_mdns(&self) -> bool {
        if self.config.role != crate::Role::Storage {
            return true;
        }
        let member = quorate_consensus::Files::open(&self.data_dir.path().join("consensus"))
            .ok()
            .and_then(|f| f.cluster().ok().flatten())
            .is_some();
        let token_names_voters = self
            .resolved
            .join_token()
            .is_some_and(|t| !t.addrs.is_empty());
        !(member || token_names_voters)
    }

    /// Advertises this node on mDNS, keeps `view` (what mDNS shows), logs the peers it hears
    /// of, and hands the gossip address of each peer of this cluster to gossip as a seed.
    pub(super) fn start_discovery(
        &self,
        gossip: Arc<Gossip>,
        view: MdnsView,
    ) -> Result<Mdns, AgentError> {
        let c = &self.config;
        let id = self.data_dir.node_id();
        let present: Vec<String> = if_addrs::get_if_addrs()
            .map(|v| v.into_iter().map(|i| i.name).collect())
            .unwrap_or_default();
        for name in c
            .discovery
            .interfaces
            .iter()
            .filter(|n| !present.contains(n))
        {
            warn!(interface = %name, "configured mdns interface is not present; nothing is advertised on it until it appears");
        }
        let mdns = Mdns::start(MdnsConfig {
            service_type: c.discovery.service_type.clone(),
            interfaces: Interfaces {
                include: c.discovery.interfaces.clone(),
                exclude: c.discovery.exclude_interfaces.clone(),
                loopback_only: c.dev,
            },
            // Liveness is gossip's job; mDNS entries go on goodbye or TTL expiry.
            verify_every: None,
            verify_timeout: Duration::from_secs(3),
        })?;
        let ad = self
            .advertisement()
            .ok_or_else(|| DiscoveryError::Daemon("nothing to advertise".into()))?;
        let fullname = mdns.advertise(&ad)?;
        info!(instance = %fullname, service_type = %c.discovery.service_type, "advertising on mdns");
        if !self.browses_mdns() {
            info!(
                "mdns: advertising only; a storage node that is a member, or whose token names the voters' addresses, needs no view of its peers"
            );
            return Ok(mdns);
        }
        let mut events = mdns.browse(Some(id))?;
        let cluster = c.cluster.clone();
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                let p = ev.peer();
                info!(event = ev.kind(), peer = %p.id, name = %p.name, cluster = %p.cluster, state = ?p.state, addrs = ?p.addrs, "mdns peer");
                if let Ok(mut v) = view.lock() {
                    match &ev {
                        quorate_discovery::PeerEvent::Lost(_) => {
                            v.remove(&p.id);
                        }
                        _ => {
                            v.insert(p.id, p.clone());
                        }
                    }
                }
                if p.cluster == cluster && !matches!(ev, quorate_discovery::PeerEvent::Lost(_)) {
                    gossip.add_seeds(
                        p.addrs
                            .iter()
                            .filter(|a| a.is_ipv4())
                            .map(|a| SocketAddr::new(*a, p.gossip_port)),
                    );
                }
            }
        });
        Ok(mdns)
    }
}
