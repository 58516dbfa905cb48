//! Advertising and browsing over multicast DNS, on `mdns-sd`.
//!
//! [`Mdns`] owns one mDNS daemon. It advertises this node (and withdraws it with a goodbye
//! that is waited for), and browses for peers: a stream of [`PeerEvent`]s built by a
//! [`PeerTable`]. A peer that says goodbye is lost within about a second (RFC 6762 §10.1); one
//! that vanishes without a goodbye would stay cached for its record TTL (two minutes), so the
//! browser re-verifies every known instance on a period (RFC 6762 §10.4) and drops those that
//! no longer answer.

use quorate_base::NodeId;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceEvent, ServiceInfo, UnregisterStatus};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::peer::{PeerEvent, PeerTable, Resolution, Stats};
use crate::txt::Advert;
use crate::{DiscoveryError, Interfaces};

/// How the mDNS daemon runs.
#[derive(Clone, Debug)]
pub struct MdnsConfig {
    /// Service type, canonical (see [`crate::check_service_type`]).
    pub service_type: String,
    /// Interfaces to use.
    pub interfaces: Interfaces,
    /// How often the browser re-verifies known instances; `None`: never (lost only on goodbye
    /// or TTL expiry).
    pub verify_every: Option<Duration>,
    /// How long a verified instance has to answer.
    pub verify_timeout: Duration,
}

/// What this node advertises.
#[derive(Clone, Debug)]
pub struct Advertisement {
    /// Instance name: the node name (mDNS may rename it on a conflict).
    pub instance: String,
    /// Host name of the SRV target, unique per node (`q-<id>.local.`).
    pub host: String,
    /// SRV port: the QUIC port.
    pub port: u16,
    /// Fixed addresses; empty: every address of the selected interfaces, kept up to date.
    pub addrs: Vec<IpAddr>,
    /// The TXT contents.
    pub advert: Advert,
}

/// A running mDNS daemon.
pub struct Mdns {
    daemon: ServiceDaemon,
    config: MdnsConfig,
    stats: Arc<Stats>,
    registered: Mutex<Option<Registered>>,
    announced: Arc<OnceLock<Instant>>,
}

/// What was last registered: the names and addresses that were probed and claimed.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Registered {
    fullname: String,
    host: String,
    port: u16,
    addrs: Vec<IpAddr>,
}

impl Registered {
    /// Whether registering `next` after `self` changes only the TXT record, once the names are
    /// claimed (`announced`): RFC 6762 §8.4 then asks for an announcement, not a new probe.
    /// mdns-sd would probe again (its new TXT matches no claimed record), and a service being
    /// probed answers no query for about 750 ms: every advertisement change (forming to member,
    /// a new leader) would leave queriers, `quorate discover` among them, unanswered that long.
    fn only_txt_changes(&self, next: &Registered, announced: bool) -> bool {
        announced && self == next
    }
}

impl Mdns {
    /// Starts the daemon on the configured interfaces.
    pub fn start(config: MdnsConfig) -> Result<Mdns, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(|e| DiscoveryError::Daemon(e.to_string()))?;
        let fail = |e: mdns_sd::Error| DiscoveryError::Daemon(e.to_string());
        let ifs = &config.interfaces;
        if ifs.loopback_only || !ifs.include.is_empty() {
            daemon.disable_interface(IfKind::All).map_err(fail)?;
            if ifs.loopback_only {
                daemon
                    .enable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
                    .map_err(fail)?;
            }
            for name in &ifs.include {
                daemon
                    .enable_interface(IfKind::Name(name.clone()))
                    .map_err(fail)?;
            }
        }
        for name in &ifs.exclude {
            daemon
                .disable_interface(IfKind::Name(name.clone()))
                .map_err(fail)?;
        }
        // The daemon reports some failures (an over-long service type, a socket error) and its
        // announcements only through its monitor channel: log them.
        let monitor = daemon.monitor().map_err(fail)?;
        let announced = Arc::new(OnceLock::new());
        let first = announced.clone();
        tokio::spawn(async move {
            while let Ok(ev) = monitor.recv_async().await {
                match ev {
                    DaemonEvent::Announce(instance, ifaces) => {
                        let _ = first.set(Instant::now());
                        info!(instance = %instance, interfaces = %ifaces, "mdns announced")
                    }
                    DaemonEvent::Error(e) => warn!(error = %e, "mdns daemon error"),
                    DaemonEvent::NameChange(change) => {
                        warn!(from = %change.original, to = %change.new_name, "mdns name conflict: renamed")
                    }
                    other => debug!(event = ?other, "mdns daemon event"),
                }
            }
        });
        Ok(Mdns {
            daemon,
            config,
            stats: Arc::new(Stats::default()),
            registered: Mutex::new(None),
            announced,
        })
    }

    /// When this node's advertisement was first announced (its names probed and claimed, so
    /// that every responder on the link has been told of it); unset until then.
    pub fn announced(&self) -> Arc<OnceLock<Instant>> {
        self.announced.clone()
    }

    /// The counters of what the browser skipped and saw.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Advertises this node, replacing an earlier advertisement. Returns the full instance name.
    pub fn advertise(&self, ad: &Advertisement) -> Result<String, DiscoveryError> {
        let pairs = ad.advert.encode()?;
        let props: Vec<(&str, &str)> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let addrs: Vec<IpAddr> = ad.addrs.clone();
        let mut info = ServiceInfo::new(
            &self.config.service_type,
            &ad.instance,
            &ad.host,
            &addrs[..],
            ad.port,
            &props[..],
        )
        .map_err(|e| DiscoveryError::Daemon(e.to_string()))?;
        if ad.addrs.is_empty() {
            info = info.enable_addr_auto();
        }
        let fullname = info.get_fullname().to_string();
        let next = Registered {
            fullname: fullname.clone(),
            host: ad.host.clone(),
            port: ad.port,
            addrs,
        };
        let mut registered = self
            .registered
            .lock()
            .map_err(|_| DiscoveryError::Daemon("the advertisement lock is poisoned".into()))?;
        if registered
            .as_ref()
            .is_some_and(|r| r.only_txt_changes(&next, self.announced.get().is_some()))
        {
            info.set_requires_probe(false);
        }
        self.daemon
            .register(info)
            .map_err(|e| DiscoveryError::Daemon(e.to_string()))?;
        *registered = Some(next);
        Ok(fullname)
    }

    /// Withdraws the advertisement: sends the goodbye and waits (up to `within`) until it is out.
    pub async fn withdraw(&self, within: Duration) -> Result<(), DiscoveryError> {
        let Some(Registered { fullname, .. }) =
            self.registered.lock().ok().and_then(|mut r| r.take())
        else {
            return Ok(());
        };
        let rx = self
            .daemon
            .unregister(&fullname)
            .map_err(|e| DiscoveryError::Daemon(e.to_string()))?;
        match tokio::time::timeout(within, rx.recv_async()).await {
            Ok(Ok(UnregisterStatus::OK)) => Ok(()),
            Ok(Ok(UnregisterStatus::NotFound)) => Ok(()),
            Ok(Err(e)) => Err(DiscoveryError::Daemon(e.to_string())),
            Err(_) => Err(DiscoveryError::Daemon(format!(
                "the goodbye for {fullname} was not sent within {within:?}"
            ))),
        }
    }

    /// Stops browsing: no more queries (the cache's refresh queries among them) and no more
    /// peer events; the receiver `browse` gave ends, and the advertisement stays. Each
    /// browsing node refreshes every peer it caches, so N browsers on a link send O(N²)
    /// queries; a node that no longer needs the view stops.
    pub fn stop_browse(&self) -> Result<(), DiscoveryError> {
        self.daemon
            .stop_browse(&self.config.service_type)
            .map_err(|e| DiscoveryError::Daemon(e.to_string()))
    }

    /// Browses for peers, leaving out `own_id`. The task ends when the receiver is dropped,
    /// browsing stops (`stop_browse`) or the daemon stops.
    pub fn browse(
        &self,
        own_id: Option<NodeId>,
    ) -> Result<mpsc::Receiver<PeerEvent>, DiscoveryError> {
        let events = self
            .daemon
            .browse(&self.config.service_type)
            .map_err(|e| DiscoveryError::Daemon(e.to_string()))?;
        let (tx, rx) = mpsc::channel(256);
        let daemon = self.daemon.clone();
        let config = self.config.clone();
        let mut table = PeerTable::new(&config.service_type, own_id, self.stats.clone());
        let stats = self.stats.clone();
        stats.browsing.store(1, Ordering::Relaxed);
        tokio::spawn(async move {
            // Cleared however the task ends: browsing stopped, the daemon gone, the receiver
            // dropped.
            let _browsing = Browsing(stats);
            let period = config.verify_every.unwrap_or(Duration::from_secs(3600));
            let mut verify = tokio::time::interval(period);
            verify.tick().await;
            loop {
                tokio::select! {
                    ev = events.recv_async() => {
                        let Ok(ev) = ev else { break };
                        let out = match ev {
                            ServiceEvent::ServiceResolved(r) => {
                                let txt: BTreeMap<String, Option<String>> = r
                                    .txt_properties
                                    .iter()
                                    .map(|p| (p.key().to_ascii_lowercase(), p.val().map(|v| String::from_utf8_lossy(v).into_owned())))
                                    .collect();
                                table.resolved(Resolution {
                                    fullname: r.fullname.clone(),
                                    port: r.port,
                                    addrs: r.addresses.iter().map(|a| a.to_ip_addr()).collect(),
                                    txt,
                                })
                            }
                            ServiceEvent::ServiceRemoved(_, fullname) => table.removed(&fullname).into_iter().collect(),
                            other => {
                                debug!(event = ?other, "mdns browse event");
                                Vec::new()
                            }
                        };
                        for e in out {
                            if tx.send(e).await.is_err() {
                                return;
                            }
                        }
                    }
                    _ = verify.tick(), if config.verify_every.is_some() => {
                        for fullname in table.instances() {
                            if let Err(e) = daemon.verify(fullname.to_string(), config.verify_timeout) {
                                warn!(instance = %fullname, error = %e, "cannot verify mdns instance");
                            }
                        }
                    }
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }

    /// Withdraws the advertisement (if any) and stops the daemon.
    pub async fn shutdown(&self, within: Duration) -> Result<(), DiscoveryError> {
        let withdrawn = self.withdraw(within).await;
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(within, rx.recv_async()).await;
        }
        withdrawn
    }
}

/// Holds `Stats::browsing` at 1 while a browse task runs.
struct Browsing(Arc<Stats>);

impl Drop for Browsing {
    fn drop(&mut self) {
        self.0.browsing.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(port: u16) -> Registered {
        Registered {
            fullname: "n1._cluster._tcp.local.".into(),
            host: "q-1.local.".into(),
            port,
            addrs: vec![],
        }
    }

    /// An update that changes only the TXT record of claimed names is announced without a new
    /// probe; a new name, host, port or address list, or names not claimed yet, are probed.
    #[test]
    fn only_a_txt_change_of_claimed_names_skips_the_probe() {
        assert!(reg(7947).only_txt_changes(&reg(7947), true));
        assert!(
            !reg(7947).only_txt_changes(&reg(7947), false),
            "still probing"
        );
        assert!(
            !reg(7947).only_txt_changes(&reg(7948), true),
            "another port"
        );
        let renamed = Registered {
            fullname: "n2._cluster._tcp.local.".into(),
            ..reg(7947)
        };
        assert!(!reg(7947).only_txt_changes(&renamed, true));
        let moved = Registered {
            host: "q-2.local.".into(),
            ..reg(7947)
        };
        assert!(!reg(7947).only_txt_changes(&moved, true));
        let fixed = Registered {
            addrs: vec![IpAddr::from([10, 0, 0, 1])],
            ..reg(7947)
        };
        assert!(!reg(7947).only_txt_changes(&fixed, true));
    }
}
