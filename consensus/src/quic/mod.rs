//! Requests and answers between nodes over QUIC with TLS 1.3: the transport under Raft, joins,
//! forwarded writes and leadership hand-over.
//!
//! One endpoint per node serves and dials. Each call takes its own bidirectional stream: the
//! request, then the end of the stream; the answer likewise. Both sides read at most
//! [`MAX_MESSAGE`] bytes and give up at a deadline. Connections are reused per peer; dialing
//! runs on its own, so a caller's short deadline (Raft heartbeats wait 50 ms) never cancels a
//! handshake half way, and one dial at a time runs per peer however many calls wait for it. A
//! call still waiting for a dial at its deadline fails as unreachable (Raft then backs off).
//!
//! A peer that restarted must be redialed at once, not after the idle timeout, or it misses
//! the leader's heartbeats and campaigns: its endpoint answers the old connection with a
//! stateless reset (its keys are derived from the node's key, so the new process honours the
//! old process's connection ids), and a connection that answers nothing for [`STALE`] while
//! calls time out on it is dropped as well. A call that fails on a stream error drops its
//! connection too. A peer that cannot be reached is logged once when it goes and once when it
//! comes back, not on every retry.
//!
//! What travels is opaque bytes here; [`crate::network`] speaks Raft over it and the node its
//! own requests. The server tells the handler who called: what its certificate says
//! ([`PeerCert`]: node id, role, key), or nobody (a joiner without a certificate yet).
//!
//! **Strangers** (callers without a certificate) are held to little: a new address is made to
//! prove it receives (a QUIC retry) before any handshake work, and a source starting
//! handshakes faster than a member ever would is refused before them; at most
//! [`STRANGERS_PER_SOURCE`] connections from one address and [`STRANGERS`] in all; one request
//! at a time per connection, of at most [`MAX_STRANGER_MESSAGE`] bytes. Members are not held
//! to these. A member whose identity is removed has its connections closed
//! ([`QuicNet::close_peer`]) and its certificate refused by the handshake
//! ([`crate::tls::DenyList`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use tokio::sync::watch;
use tracing::{debug, info, warn};

mod common;
mod server;

pub use common::{
    CallError, Handler, MAX_MESSAGE, MAX_STRANGER_MESSAGE, NetMetrics, PeerCert, QuicError,
    STRANGERS, STRANGERS_PER_SOURCE,
};

use common::transport;
use server::Open;

use crate::tls::{DenyList, Identity, JoinVerifier, node_name};

use quorate_base::NodeId;

/// A connection silent this long while calls time out on it is given up and dialed afresh.
const STALE: Duration = Duration::from_millis(250);
/// How long a dial may take before it is given up (and the next call dials again).
const DIAL: Duration = Duration::from_secs(1);

type DialResult = Option<Result<quinn::Connection, String>>;

/// When a connection last answered, in milliseconds since the endpoint started.
type Answered = Arc<AtomicU64>;

enum Slot {
    Ready(quinn::Connection, SocketAddr, Answered),
    Dialing(watch::Receiver<DialResult>, SocketAddr),
}

/// A node's QUIC endpoint.
#[derive(Clone)]
pub struct QuicNet {
    endpoint: quinn::Endpoint,
    conns: Arc<Mutex<HashMap<NodeId, Slot>>>,
    down: Arc<Mutex<HashMap<NodeId, bool>>>,
    open: Arc<Mutex<Open>>,
    deny: DenyList,
    /// How this node dials (its identity, renewed in place).
    client: Arc<std::sync::RwLock<quinn::ClientConfig>>,
    /// Targets dialed with [`common::patient_transport`] (storage learners, as the node is
    /// told), not [`transport`].
    patient: Arc<std::sync::RwLock<std::collections::BTreeSet<NodeId>>>,
    metrics: Arc<NetMetrics>,
    epoch: std::time::Instant,
}

fn client_config(config: rustls::ClientConfig) -> Result<quinn::ClientConfig, QuicError> {
    let crypto =
        QuicClientConfig::try_from(config).map_err(|e| QuicError::Config(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(transport());
    Ok(client)
}
impl QuicNet {
    /// Binds a member's endpoint: serves with, and dials as, this node's identity.
    ///
    /// Its stateless-reset key and connection-id key are derived from the node's private key,
    /// so they are the same in every incarnation of the node: after a restart, the first packet
    /// a peer sends on a connection to the old process is answered with a stateless reset the
    /// peer accepts (RFC 9000 §10.3), and the peer redials at once instead of waiting out the
    /// idle timeout.
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        deny: &DenyList,
    ) -> Result<QuicNet, QuicError> {
        let server = server::server_config(identity, deny)?;
        // Both keys come from the node's private key: stable across restarts, secret.
        let derive = |purpose: &[u8]| {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(b"quorate quic endpoint key/1\0");
            h.update(purpose);
            h.update(identity.key_pem.as_bytes());
            h.finalize()
        };
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derive(b"reset"));
        let mut cid_key = [0u8; 8];
        cid_key.copy_from_slice(&derive(b"cid")[..8]);
        let cid_key = u64::from_le_bytes(cid_key);
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(reset_key));
        // The new process must recognise the old one's connection ids as its own to answer
        // them with a stateless reset.
        endpoint_config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        let socket =
            std::net::UdpSocket::bind(addr).map_err(|source| QuicError::Bind { addr, source })?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(server),
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| QuicError::Bind { addr, source })?;
        let client = client_config(identity.client_config()?)?;
        Ok(QuicNet::around(endpoint, client, deny.clone()))
    }

    /// Serves with, and dials as, a renewed identity from now on (the same key, a new
    /// certificate); connections already open keep going.
    pub fn set_identity(&self, identity: &Identity) -> Result<(), QuicError> {
        let client = client_config(identity.client_config()?)?;
        self.endpoint
            .set_server_config(Some(server::server_config(identity, &self.deny)?));
        if let Ok(mut c) = self.client.write() {
            *c = client;
        }
        Ok(())
    }

    /// Closes every connection with node `id` (its identity was removed; the handshake
    /// refuses it from now on).
    pub fn close_peer(&self, id: NodeId) {
        let conns = self
            .open
            .lock()
            .ok()
            .and_then(|mut o| o.members.remove(&id))
            .unwrap_or_default();
        for c in conns {
            c.close(2u32.into(), crate::tls::REMOVED.as_bytes());
        }
        if let Ok(mut slots) = self.conns.lock()
            && let Some(Slot::Ready(c, _, _)) = slots.remove(&id)
        {
            c.close(2u32.into(), crate::tls::REMOVED.as_bytes());
        }
    }

    /// Closes every connection with a member, both ways (the trusted CAs changed: each is
    /// made again, and checked, under the new ones).
    pub fn close_members(&self) {
        const WHY: &[u8] = b"the cluster CA changed";
        let served: Vec<quinn::Connection> = self
            .open
            .lock()
            .map(|mut o| o.members.drain().flat_map(|(_, c)| c).collect())
            .unwrap_or_default();
        for c in served {
            c.close(3u32.into(), WHY);
        }
        if let Ok(mut slots) = self.conns.lock() {
            for (_, slot) in slots.drain() {
                if let Slot::Ready(c, _, _) = slot {
                    c.close(3u32.into(), WHY);
                }
            }
        }
    }

    /// A dial-only endpoint on an ephemeral port for a node that is not a member yet: it
    /// presents no certificate and trusts servers as `verifier` says.
    pub fn joiner(bind: SocketAddr, verifier: &Arc<JoinVerifier>) -> Result<QuicNet, QuicError> {
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|source| QuicError::Bind { addr: bind, source })?;
        let client = client_config(verifier.client_config()?)?;
        Ok(QuicNet::around(endpoint, client, DenyList::default()))
    }

    fn around(endpoint: quinn::Endpoint, client: quinn::ClientConfig, deny: DenyList) -> QuicNet {
        QuicNet {
            endpoint,
            conns: Arc::default(),
            down: Arc::default(),
            open: Arc::default(),
            deny,
            client: Arc::new(std::sync::RwLock::new(client)),
            patient: Arc::default(),
            metrics: Arc::default(),
            epoch: std::time::Instant::now(),
        }
    }

    /// The targets to dial with a patient link (keep-alives every second, 10 s idle timeout,
    /// see [`common::patient_transport`]): the storage learners. A connection open already
    /// keeps its timings until it is dialed again.
    pub fn set_patient(&self, ids: std::collections::BTreeSet<NodeId>) {
        if let Ok(mut p) = self.patient.write() {
            *p = ids;
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Counters.
    pub fn metrics(&self) -> Arc<NetMetrics> {
        self.metrics.clone()
    }

    /// Serves requests with `handler` until the endpoint closes.
    pub fn serve<H: Handler>(&self, handler: Arc<H>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(server::accept(
            self.endpoint.clone(),
            self.metrics.clone(),
            self.open.clone(),
            handler,
        ))
    }

    /// Closes the endpoint: connections end, serving stops.
    pub fn close(&self) {
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    /// Waits until every connection has closed (at most `within`).
    pub async fn wait_idle(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.endpoint.wait_idle()).await;
    }

    fn mark(&self, target: NodeId, reachable: bool, addr: SocketAddr, why: &str) {
        let Ok(mut down) = self.down.lock() else {
            return;
        };
        let was_down = down.get(&target).copied().unwrap_or(false);
        if reachable && was_down {
            info!(peer = target.to_string(), addr = %addr, "peer reachable again");
        } else if !reachable && !was_down {
            warn!(peer = target.to_string(), addr = %addr, error = why, "peer unreachable; retrying with backoff");
        }
        down.insert(target, !reachable);
    }

    /// The connection to `target` at `addr`, reused, or dialed once for all waiting callers.
    async fn connection(
        &self,
        target: NodeId,
        addr: SocketAddr,
        server_name: String,
    ) -> Result<(quinn::Connection, Answered), String> {
        let mut rx = {
            let mut conns = self.conns.lock().map_err(|_| "lock poisoned".to_string())?;
            match conns.get(&target) {
                Some(Slot::Ready(c, a, answered)) if *a == addr && c.close_reason().is_none() => {
                    return Ok((c.clone(), answered.clone()));
                }
                Some(Slot::Dialing(rx, a)) if *a == addr => rx.clone(),
                _ => {
                    let (tx, rx) = watch::channel(None);
                    conns.insert(target, Slot::Dialing(rx.clone(), addr));
                    let endpoint = self.endpoint.clone();
                    let slots = self.conns.clone();
                    let epoch = self.epoch;
                    let mut client = self
                        .client
                        .read()
                        .map_err(|_| "lock poisoned".to_string())?
                        .clone();
                    if self.patient.read().is_ok_and(|p| p.contains(&target)) {
                        client.transport_config(common::patient_transport());
                    }
                    tokio::spawn(async move {
                        let dialed = match endpoint.connect_with(client, addr, &server_name) {
                            Err(e) => Err(e.to_string()),
                            Ok(connecting) => match tokio::time::timeout(DIAL, connecting).await {
                                Ok(Ok(c)) => Ok(c),
                                Ok(Err(e)) => Err(e.to_string()),
                                Err(_) => Err(format!("no handshake within {DIAL:?}")),
                            },
                        };
                        if let Ok(mut slots) = slots.lock() {
                            match &dialed {
                                Ok(c) => {
                                    let answered = Arc::new(AtomicU64::new(
                                        epoch.elapsed().as_millis() as u64,
                                    ));
                                    slots.insert(target, Slot::Ready(c.clone(), addr, answered));
                                }
                                Err(_) => {
                                    if matches!(slots.get(&target), Some(Slot::Dialing(_, a)) if *a == addr)
                                    {
                                        slots.remove(&target);
                                    }
                                }
                            }
                        }
                        let _ = tx.send(Some(dialed));
                    });
                    rx
                }
            }
        };
        let done = rx
            .wait_for(Option::is_some)
            .await
            .map_err(|_| "the dial was abandoned".to_string())?;
        let conn = match &*done {
            Some(r) => r.clone()?,
            None => return Err("the dial was abandoned".to_string()),
        };
        let answered = match self.conns.lock().ok().and_then(|c| match c.get(&target) {
            Some(Slot::Ready(c, _, a)) if c.stable_id() == conn.stable_id() => Some(a.clone()),
            _ => None,
        }) {
            Some(a) => a,
            None => Arc::new(AtomicU64::new(self.epoch.elapsed().as_millis() as u64)),
        };
        Ok((conn, answered))
    }

    fn evict(&self, target: NodeId, conn: &quinn::Connection) {
        if let Ok(mut conns) = self.conns.lock()
            && matches!(conns.get(&target), Some(Slot::Ready(c, _, _)) if c.stable_id() == conn.stable_id())
        {
            conns.remove(&target);
            conn.close(0u32.into(), b"call failed");
        }
    }

    /// Calls member `target` at `addr` (its certificate must name it) and returns the answer.
    pub async fn call(
        &self,
        target: NodeId,
        addr: SocketAddr,
        request: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, CallError> {
        self.call_named(target, addr, node_name(target), request, deadline)
            .await
    }

    /// Calls whatever node answers at `addr` (a joiner does not know node ids yet; its verifier
    /// checks the certificate).
    pub async fn call_addr(
        &self,
        addr: SocketAddr,
        request: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, CallError> {
        self.call_named(
            addr_key(addr),
            addr,
            SEED_NAME.to_string(),
            request,
            deadline,
        )
        .await
    }

    /// Connects to whatever node answers at `addr` without a request, so that the caller
    /// learns what the handshake verified (a joiner binds its request to that CA); the next
    /// [`QuicNet::call_addr`] to `addr` uses this connection.
    pub async fn dial_addr(&self, addr: SocketAddr, deadline: Duration) -> Result<(), CallError> {
        match tokio::time::timeout(
            deadline,
            self.connection(addr_key(addr), addr, SEED_NAME.to_string()),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(message)) => Err(CallError::Unreachable { addr, message }),
            Err(_) => Err(CallError::Unreachable {
                addr,
                message: format!("no connection within {deadline:?}"),
            }),
        }
    }

    async fn call_named(
        &self,
        target: NodeId,
        addr: SocketAddr,
        server_name: String,
        request: &[u8],
        deadline: Duration,
    ) -> Result<Vec<u8>, CallError> {
        self.metrics.calls_out.fetch_add(1, Ordering::Relaxed);
        self.metrics
            .bytes_out
            .fetch_add(request.len() as u64, Ordering::Relaxed);
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(
            deadline,
            self.connection(target, addr, server_name),
        )
        .await
        {
            Ok(Err(message)) => Err(CallError::Unreachable { addr, message }),
            // Still dialing when the caller's time is up: the peer is not reachable now (Raft
            // backs off on this, instead of retrying every heartbeat).
            Err(_) => Err(CallError::Unreachable {
                addr,
                message: format!("no connection within {deadline:?}"),
            }),
            Ok(Ok((conn, answered))) => {
                let exchange = async {
                    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
                    send.write_all(request).await.map_err(|e| e.to_string())?;
                    send.finish().map_err(|e| e.to_string())?;
                    recv.read_to_end(MAX_MESSAGE)
                        .await
                        .map_err(|e| e.to_string())
                };
                let left = deadline.saturating_sub(started.elapsed());
                match tokio::time::timeout(left, exchange).await {
                    Ok(Ok(answer)) => {
                        self.metrics
                            .bytes_in
                            .fetch_add(answer.len() as u64, Ordering::Relaxed);
                        answered.store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
                        Ok(answer)
                    }
                    Ok(Err(message)) => {
                        self.evict(target, &conn);
                        Err(CallError::Network { addr, message })
                    }
                    Err(_) => {
                        // A connection that has answered nothing for a while is presumed to
                        // lead to a process that is gone (the peer restarted): dial afresh.
                        let silent = (self.epoch.elapsed().as_millis() as u64)
                            .saturating_sub(answered.load(Ordering::Relaxed));
                        if silent > STALE.as_millis() as u64 {
                            debug!(peer = %addr, silent_ms = silent, "connection silent; dialing afresh");
                            self.evict(target, &conn);
                        }
                        Err(CallError::Network {
                            addr,
                            message: format!("no answer within {deadline:?}"),
                        })
                    }
                }
            }
        };
        match &result {
            Ok(_) => self.mark(target, true, addr, ""),
            Err(e) => {
                self.metrics.calls_failed.fetch_add(1, Ordering::Relaxed);
                if let CallError::Unreachable { message, .. } = e {
                    self.mark(target, false, addr, message);
                }
            }
        }
        result
    }
}

/// The name a joiner asks a seed for (its verifier accepts any node of the trusted CA).
const SEED_NAME: &str = "node.quorate";

/// A pseudo id per seed address (never a member's: members are dialed by name), which keeps
/// one connection per seed.
fn addr_key(addr: SocketAddr) -> NodeId {
    NodeId::new(u64::from_be_bytes(sha2_prefix(addr.to_string().as_bytes())))
}

fn sha2_prefix(data: &[u8]) -> [u8; 8] {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}
