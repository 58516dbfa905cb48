//! The agent: the long-running node process behind `quorate agent`.
//!
//! It settles the node's identity and addresses (data dir, node id, name, advertised address,
//! see [`Resolved`], in `setup`), then runs the layers (started in `layers`): gossip, mDNS discovery (whose
//! peers become gossip seeds), the HTTP API, and consensus, which `membership` makes this node
//! a member of: it resumes the cluster its data dir holds, or bootstraps one (`--bootstrap`,
//! `--dev`), or joins one (`--join`, `--peers`, zero-config). Once a member, `bridge` carries
//! facts between the layers (Raft's view into gossip and mDNS, gossip's failures to the
//! autopilot). This module holds the lifecycle: the start, the stop order, and the signals;
//! `notify` tells systemd when the node is ready, how it stands and when it stops.
//! The agent never decides membership itself: Raft does.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use quorate_consensus::AdminOp;
use tracing::{info, warn};

use crate::Role;
use crate::api::ConsensusCell;
use crate::config::Config;
use crate::keys::{SharedKeys, StoredKeys};

mod bridge;
mod layers;
mod membership;
mod notify;
mod setup;

use layers::HttpParts;
pub use setup::{Agent, AgentError, MdnsView, Resolved};

impl Agent {
    /// Runs until `shutdown` completes, then stops cleanly.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = &'static str>,
    ) -> Result<(), AgentError> {
        let c = &self.config;
        let r = &self.resolved;
        let systemd = notify::Systemd::from_env();
        let watchdog = systemd.spawn_watchdog();
        info!(
            node_id = %self.data_dir.node_id(),
            name = %r.name,
            role = %c.role,
            cluster = %c.cluster,
            data_dir = %r.data_dir.display(),
            first_start = self.data_dir.created(),
            "node identity ready"
        );
        if self.dev_dir.is_some() {
            warn!(data_dir = %r.data_dir.display(), "dev mode: state is kept in a temporary directory and removed on exit");
        }
        let admin_token = self
            .data_dir
            .admin_token()
            .map_err(AgentError::AdminCredential)?;
        info!(file = %self.data_dir.path().join(crate::ADMIN_TOKEN_FILE).display(), "admin credential ready: the CLI reads it on this machine (or give it --admin-token)");
        if self.dev_dir.is_some() {
            warn!(
                "dev mode: to make changes with the CLI, point it at the temporary data dir: export QUORATE_DATA_DIR={}",
                r.data_dir.display()
            );
        }
        let keys: SharedKeys = Arc::new(std::sync::Mutex::new(self.load_keys()?));
        let stored = keys
            .lock()
            .map(|k| k.clone())
            .unwrap_or_else(|_| StoredKeys::open(c.role));
        let gossip = Arc::new(self.start_gossip(&stored).await?);
        let view: MdnsView = Arc::default();
        let mdns = if c.discovery.enabled {
            Some(Arc::new(
                self.start_discovery(gossip.clone(), view.clone())?,
            ))
        } else {
            None
        };
        let consensus: ConsensusCell = Arc::default();
        let leave = Arc::new(tokio::sync::Notify::new());
        let (http_stop, http_done) = self
            .start_http(HttpParts {
                gossip: gossip.clone(),
                keys: keys.clone(),
                discovery: mdns.as_ref().map(|m| m.stats()),
                consensus: consensus.clone(),
                admin_token,
                leave: leave.clone(),
            })
            .await?;
        info!(
            advertise = %r.advertise,
            gossip = %c.gossip_listen(),
            quic = %c.quic_listen(),
            http = %c.http_addr,
            "agent running"
        );
        // Ready once the node serves: gossip, mDNS and the HTTP API run, and the node is on
        // its way to membership (resuming, forming, or joining); systemd does not wait for
        // the peers a forming node waits for. STATUS follows the membership from then on.
        systemd.ready("serving; becoming a member of the cluster (resuming, forming or joining)");
        let status = systemd.spawn_status(self.membership.subscribe());
        let handlers = crate::handlers::spawn(
            &c.handlers(),
            &self.events,
            self.data_dir.path(),
            c.event_handler_timeout,
            &self.handler_stats,
        );
        let announced = mdns.as_ref().map(|m| m.announced());
        let plan = self.consensus_plan(&stored, view, announced, gossip.clone());
        let starter = {
            let cell = consensus.clone();
            let gossip = gossip.clone();
            let mdns = mdns.clone();
            let advert = self.advertisement();
            let data_dir = self.data_dir.clone();
            let grace = c.raft.failed_grace;
            let keys = keys.clone();
            let role = c.role;
            let membership = self.membership.clone();
            tokio::spawn(async move {
                let (node, secrets) = plan.start().await?;
                bridge::adopt_secrets(&gossip, &data_dir, &keys, role, &secrets);
                node.on_secrets(crate::keyring::handler(
                    keys.clone(),
                    gossip.clone(),
                    data_dir.clone(),
                ));
                let _ = cell.set(node.clone());
                // A storage node needs mDNS's view only to find the cluster; a member keeps
                // advertising (`quorate discover` lists it) but stops browsing, since N
                // browsers refreshing every peer they cache send O(N²) queries on the link.
                if role == Role::Storage
                    && let Some(mdns) = &mdns
                    && mdns
                        .stats()
                        .browsing
                        .load(std::sync::atomic::Ordering::Relaxed)
                        == 1
                {
                    match mdns.stop_browse() {
                        Ok(()) => info!(
                            "member: mdns browsing stopped (a storage node keeps advertising only)"
                        ),
                        Err(e) => warn!(error = %e, "cannot stop mdns browsing"),
                    }
                }
                bridge::run(node, gossip, keys, mdns, advert, grace, membership).await;
                Ok::<(), AgentError>(())
            })
        };
        let outcome = tokio::select! {
            signal = shutdown => {
                info!(signal, "shutting down");
                // At once, before a leave (leave_on_terminate) that may take a while.
                systemd.stopping(&format!("stopping ({signal})"));
                if signal == "SIGTERM" && c.leave_on_terminate {
                    match consensus.get() {
                        Some(node) => match node.admin(AdminOp::Leave { node: node.id() }).await {
                            Ok(m) => {
                                info!(message = %m, "left the cluster (leave_on_terminate)");
                                Ok(Stop::Left)
                            }
                            Err(e) => {
                                warn!(error = %e, "could not leave the cluster; stopping as a member");
                                Ok(Stop::Member)
                            }
                        },
                        None => Ok(Stop::Member),
                    }
                } else {
                    Ok(Stop::Member)
                }
            }
            () = leave.notified() => {
                info!("left the cluster (quorate leave); stopping");
                Ok(Stop::Left)
            }
            started = starter => match started {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Ok(Stop::Member),
                Err(e) => Err(AgentError::ConsensusTask(e.to_string())),
            },
        };
        if let Err(e) = &outcome {
            warn!(error = %e, "stopping");
        }
        // For the other ways to stop (a leave asked over the API, a consensus failure); a
        // second STOPPING=1 after a signal changes nothing.
        systemd.stopping("stopping");
        drop(status);
        for h in &handlers {
            h.abort();
        }
        if let Some(node) = consensus.get() {
            node.shutdown().await;
            info!("consensus stopped");
        }
        if matches!(outcome, Ok(Stop::Left)) {
            // This node is no longer a member: keep its old state aside, so that a restart
            // starts afresh (and may join again) instead of resuming a membership it gave up.
            // Its keys go: the CA key (which could mint members) and its own (a removed
            // identity the cluster refuses anyway).
            let dir = self.data_dir.path().join("consensus");
            for key in ["ca.key", "node.key"] {
                match std::fs::remove_file(dir.join(key)) {
                    Ok(()) => info!(file = key, "key deleted on leaving"),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => warn!(file = key, error = %e, "could not delete a key on leaving"),
                }
            }
            let kept = self
                .data_dir
                .path()
                .join(format!("consensus.left-{}", quorate_base::now_ms() / 1000));
            match std::fs::rename(&dir, &kept) {
                Ok(()) => {
                    info!(kept = %kept.display(), "the cluster state of this node was set aside; a restart starts afresh")
                }
                Err(e) => warn!(error = %e, "could not set the cluster state aside"),
            }
        }
        if let Some(mdns) = mdns {
            match mdns.shutdown(Duration::from_secs(2)).await {
                Ok(()) => info!("mdns goodbye sent"),
                Err(e) => warn!(error = %e, "mdns goodbye not confirmed"),
            }
        }
        gossip.leave().await;
        info!("left gossip");
        let _ = http_stop.send(());
        let _ = http_done.await;
        drop(self.data_dir);
        drop(watchdog);
        info!("agent stopped");
        outcome.map(|_| ())
    }
}

/// How the agent stops.
enum Stop {
    /// Still a member: a restart resumes.
    Member,
    /// It left the cluster.
    Left,
}
/// Waits for SIGINT or SIGTERM and says which arrived.
pub async fn shutdown_signal() -> Result<&'static str, AgentError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    Ok(tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    })
}

/// Starts the agent and runs it until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), AgentError> {
    // Install the handlers before anything slow, so an early signal is not lost.
    let signals = tokio::spawn(shutdown_signal());
    let agent = Agent::start(config)?;
    agent
        .run_until(async move {
            match signals.await {
                Ok(Ok(name)) => name,
                _ => "signal handler failure",
            }
        })
        .await
}
