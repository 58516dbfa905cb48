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
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::tls::{DenyList, Identity, JoinVerifier, TlsError, cert_facts, node_name};

use quorate_base::{NodeId, Role};

/// The largest request or answer either side reads (snapshots travel in smaller chunks).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// The largest request a caller without a certificate may send (a join request is a few KiB).
pub const MAX_STRANGER_MESSAGE: usize = 64 * 1024;
/// Connections without a certificate held open at once, from all sources.
pub const STRANGERS: usize = 256;
/// Connections without a certificate held open at once from one address.
pub const STRANGERS_PER_SOURCE: usize = 8;

/// How long a server waits for a whole request once its stream opened.
const READ_REQUEST: Duration = Duration::from_secs(10);
/// A connection silent this long while calls time out on it is given up and dialed afresh.
const STALE: Duration = Duration::from_millis(250);
/// How long a dial may take before it is given up (and the next call dials again).
const DIAL: Duration = Duration::from_secs(1);

/// Why the QUIC endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum QuicError {
    /// TLS configuration.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// QUIC configuration.
    #[error("quic: {0}")]
    Config(String),
    /// Binding the endpoint.
    #[error("cannot bind QUIC to {addr}/udp: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
}

/// Why a call failed.
#[derive(Clone, Debug, thiserror::Error)]
pub enum CallError {
    /// No connection could be made (the peer is down, unreachable, or not who it should be).
    #[error("cannot reach {addr}: {message}")]
    Unreachable {
        /// The address dialed.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
    /// The connection was made but the exchange failed or timed out.
    #[error("no answer from {addr}: {message}")]
    Network {
        /// The address called.
        addr: SocketAddr,
        /// What failed.
        message: String,
    },
}

/// Counters of the endpoint.
#[derive(Debug, Default)]
pub struct NetMetrics {
    /// Inbound connections refused by the TLS handshake (another CA, bad certificate, a
    /// removed identity).
    pub handshakes_refused: AtomicU64,
    /// Connections without a certificate closed at once: too many from one source, or in all.
    pub strangers_refused: AtomicU64,
    /// New addresses asked to prove they receive (QUIC retry) before a handshake.
    pub retries_sent: AtomicU64,
    /// Connection attempts refused before the handshake: too many from one source.
    pub handshakes_limited: AtomicU64,
    /// Requests served.
    pub requests_in: AtomicU64,
    /// Requests that were unreadable (too large, cut off, too slow).
    pub requests_unreadable: AtomicU64,
    /// Calls made.
    pub calls_out: AtomicU64,
    /// Calls that failed.
    pub calls_failed: AtomicU64,
    /// Bytes read: requests served and answers to calls.
    pub bytes_in: AtomicU64,
    /// Bytes sent: requests made and answers served.
    pub bytes_out: AtomicU64,
}

impl NetMetrics {
    /// The counters by name.
    pub fn snapshot(&self) -> std::collections::BTreeMap<&'static str, u64> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        [
            ("quic_handshakes_refused", g(&self.handshakes_refused)),
            ("quic_strangers_refused", g(&self.strangers_refused)),
            ("quic_retries_sent", g(&self.retries_sent)),
            ("quic_handshakes_limited", g(&self.handshakes_limited)),
            ("quic_requests_in", g(&self.requests_in)),
            ("quic_requests_unreadable", g(&self.requests_unreadable)),
            ("quic_calls_out", g(&self.calls_out)),
            ("quic_calls_failed", g(&self.calls_failed)),
            ("quic_bytes_in", g(&self.bytes_in)),
            ("quic_bytes_out", g(&self.bytes_out)),
        ]
        .into_iter()
        .collect()
    }
}

/// What a caller's certificate says, once the handshake verified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerCert {
    /// The node it names.
    pub id: NodeId,
    /// The role it states, if it states one.
    pub role: Option<Role>,
    /// The fingerprint of its key.
    pub key: String,
}

/// Serves requests: `peer` is what the caller's certificate says, `None` for a caller without
/// a certificate.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(
        &self,
        peer: Option<PeerCert>,
        remote: SocketAddr,
        request: Vec<u8>,
    ) -> impl Future<Output = Vec<u8>> + Send;
}

/// New connections (handshakes) a source may start: [`HandshakeRate::BURST`] at once, then
/// [`HandshakeRate::PER_SECOND`]; members connect once per peer and again after a restart, so
/// only a flood meets it. Bounded: at most [`HandshakeRate::SOURCES`] sources are remembered.
#[derive(Default)]
struct HandshakeRate {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl HandshakeRate {
    const BURST: f64 = 64.0;
    const PER_SECOND: f64 = 20.0;
    const SOURCES: usize = 4096;

    /// Whether `ip` may start a handshake now (and counts it if so).
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= Self::SOURCES && !self.buckets.contains_key(&ip) {
            // Forget the sources whose buckets have refilled: they are as new.
            self.buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * Self::PER_SECOND < Self::BURST
            });
            if self.buckets.len() >= Self::SOURCES {
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(ip).or_insert((Self::BURST, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * Self::PER_SECOND).min(Self::BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Connections held open, by what the server knows of their callers.
#[derive(Default)]
struct Open {
    /// Members' connections by node id (closed when the identity is removed).
    members: HashMap<NodeId, Vec<quinn::Connection>>,
    /// Connections without a certificate, by source address.
    strangers: HashMap<IpAddr, usize>,
}

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
    metrics: Arc<NetMetrics>,
    epoch: std::time::Instant,
}

/// Timings for a LAN. Keep-alives every 250 ms and a 2 s idle timeout: a connection to a peer
/// that died is given up within 2 s, so that the next call dials afresh. An initial RTT
/// estimate of 20 ms instead of QUIC's 333 ms: a handshake packet that found the peer not
/// listening yet (it is restarting) is sent again after tens of milliseconds, not a second,
/// so a leader reaches a restarted follower before the follower's election timeout.
fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.initial_rtt(Duration::from_millis(20));
    t.keep_alive_interval(Some(Duration::from_millis(250)));
    if let Ok(idle) = Duration::from_secs(2).try_into() {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
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
        let server = server_config(identity, deny)?;
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
            .set_server_config(Some(server_config(identity, &self.deny)?));
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
            metrics: Arc::default(),
            epoch: std::time::Instant::now(),
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
        let endpoint = self.endpoint.clone();
        let metrics = self.metrics.clone();
        let open = self.open.clone();
        let rate = Arc::new(Mutex::new(HandshakeRate::default()));
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                // An address that has not shown it receives is sent a retry first: a forged
                // source costs this node one packet, not a handshake.
                if !incoming.remote_address_validated() {
                    metrics.retries_sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().ignore();
                    }
                    continue;
                }
                // A source that opens connections faster than any member would is refused
                // before the handshake's work.
                let allowed = rate
                    .lock()
                    .is_ok_and(|mut r| r.allow(incoming.remote_address().ip(), Instant::now()));
                if !allowed {
                    metrics.handshakes_limited.fetch_add(1, Ordering::Relaxed);
                    incoming.refuse();
                    continue;
                }
                let handler = handler.clone();
                let metrics = metrics.clone();
                let open = open.clone();
                tokio::spawn(async move {
                    let remote = incoming.remote_address();
                    let conn = match incoming.await {
                        Ok(c) => c,
                        Err(e) => {
                            metrics.handshakes_refused.fetch_add(1, Ordering::Relaxed);
                            debug!(peer = %remote, error = %e, "quic handshake refused");
                            return;
                        }
                    };
                    match peer_cert(&conn) {
                        Some(peer) => {
                            serve_member(handler, metrics, open, conn, peer, remote).await
                        }
                        None => serve_stranger(handler, metrics, open, conn, remote).await,
                    }
                });
            }
        })
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
                    let client = self
                        .client
                        .read()
                        .map_err(|_| "lock poisoned".to_string())?
                        .clone();
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

fn server_config(identity: &Identity, deny: &DenyList) -> Result<quinn::ServerConfig, QuicError> {
    let server = QuicServerConfig::try_from(identity.server_config(deny)?)
        .map_err(|e| QuicError::Config(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    server.transport_config(transport());
    Ok(server)
}

fn peer_cert(conn: &quinn::Connection) -> Option<PeerCert> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    let facts = cert_facts(certs.first()?.as_ref())?;
    Some(PeerCert {
        id: facts.id,
        role: facts.role,
        key: facts.key,
    })
}

/// A member's connection: any number of concurrent requests, each up to [`MAX_MESSAGE`].
async fn serve_member<H: Handler>(
    handler: Arc<H>,
    metrics: Arc<NetMetrics>,
    open: Arc<Mutex<Open>>,
    conn: quinn::Connection,
    peer: PeerCert,
    remote: SocketAddr,
) {
    let id = peer.id;
    if let Ok(mut o) = open.lock() {
        let list = o.members.entry(id).or_default();
        list.retain(|c| c.close_reason().is_none());
        list.push(conn.clone());
    }
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(serve_stream(
            handler.clone(),
            metrics.clone(),
            Some(peer.clone()),
            remote,
            send,
            recv,
        ));
    }
    if let Ok(mut o) = open.lock()
        && let Some(list) = o.members.get_mut(&id)
    {
        list.retain(|c| c.stable_id() != conn.stable_id());
        if list.is_empty() {
            o.members.remove(&id);
        }
    }
}

/// A caller without a certificate: within the per-source and total limits, one request at a
/// time, each up to [`MAX_STRANGER_MESSAGE`].
async fn serve_stranger<H: Handler>(
    handler: Arc<H>,
    metrics: Arc<NetMetrics>,
    open: Arc<Mutex<Open>>,
    conn: quinn::Connection,
    remote: SocketAddr,
) {
    let ip = remote.ip();
    let admitted = open.lock().is_ok_and(|mut o| {
        let total: usize = o.strangers.values().sum();
        let here = o.strangers.entry(ip).or_default();
        if *here >= STRANGERS_PER_SOURCE || total >= STRANGERS {
            false
        } else {
            *here += 1;
            true
        }
    });
    if !admitted {
        metrics.strangers_refused.fetch_add(1, Ordering::Relaxed);
        debug!(peer = %remote, "too many connections without a certificate; closed");
        conn.close(3u32.into(), b"too many connections");
        return;
    }
    while let Ok((send, recv)) = conn.accept_bi().await {
        serve_stream_limited(
            handler.clone(),
            metrics.clone(),
            None,
            remote,
            send,
            recv,
            MAX_STRANGER_MESSAGE,
        )
        .await;
    }
    if let Ok(mut o) = open.lock()
        && let Some(n) = o.strangers.get_mut(&ip)
    {
        *n = n.saturating_sub(1);
        if *n == 0 {
            o.strangers.remove(&ip);
        }
    }
}

async fn serve_stream<H: Handler>(
    handler: Arc<H>,
    metrics: Arc<NetMetrics>,
    peer: Option<PeerCert>,
    remote: SocketAddr,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    serve_stream_limited(handler, metrics, peer, remote, send, recv, MAX_MESSAGE).await
}

async fn serve_stream_limited<H: Handler>(
    handler: Arc<H>,
    metrics: Arc<NetMetrics>,
    peer: Option<PeerCert>,
    remote: SocketAddr,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    limit: usize,
) {
    let request = match tokio::time::timeout(READ_REQUEST, recv.read_to_end(limit)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            metrics.requests_unreadable.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %remote, error = %e, "unreadable request");
            let _ = send.reset(1u32.into());
            return;
        }
        Err(_) => {
            metrics.requests_unreadable.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %remote, "request not received in time");
            let _ = send.reset(1u32.into());
            return;
        }
    };
    metrics.requests_in.fetch_add(1, Ordering::Relaxed);
    metrics
        .bytes_in
        .fetch_add(request.len() as u64, Ordering::Relaxed);
    let answer = handler.handle(peer, remote, request).await;
    metrics
        .bytes_out
        .fetch_add(answer.len() as u64, Ordering::Relaxed);
    let _ = send.write_all(&answer).await;
    // Dropping a finished stream keeps its data in flight until the peer has it.
    let _ = send.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source gets a burst of handshakes, then a steady rate; other sources are apart.
    #[test]
    fn handshakes_per_source_are_limited_to_a_burst_then_a_rate() {
        let mut r = HandshakeRate::default();
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let t0 = Instant::now();
        let allowed = (0..100).filter(|_| r.allow(a, t0)).count();
        assert_eq!(allowed, HandshakeRate::BURST as usize);
        assert!(r.allow(b, t0), "another source is not affected");
        assert!(!r.allow(a, t0));
        assert!(
            r.allow(a, t0 + Duration::from_millis(100)),
            "refilled at the rate"
        );
    }
}
