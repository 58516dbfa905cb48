//! What both sides of a node's QUIC endpoint share: the size limits and the limits for
//! strangers, the errors, the counters, what a caller's certificate says, the handler the
//! server answers with, and the LAN transport timings.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quorate_base::{NodeId, Role};

use crate::tls::TlsError;

/// The largest request or answer either side reads (snapshots travel in smaller chunks).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// The largest request a caller without a certificate may send (a join request is a few KiB).
pub const MAX_STRANGER_MESSAGE: usize = 64 * 1024;
/// Connections without a certificate held open at once, from all sources.
pub const STRANGERS: usize = 256;
/// Connections without a certificate held open at once from one address.
pub const STRANGERS_PER_SOURCE: usize = 8;

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

/// Timings for a LAN. Keep-alives every 250 ms and a 2 s idle timeout: a connection to a peer
/// that died is given up within 2 s, so that the next call dials afresh. An initial RTT
/// estimate of 20 ms instead of QUIC's 333 ms: a handshake packet that found the peer not
/// listening yet (it is restarting) is sent again after tens of milliseconds, not a second,
/// so a leader reaches a restarted follower before the follower's election timeout.
pub(crate) fn transport() -> Arc<quinn::TransportConfig> {
    lan(Duration::from_millis(250), Duration::from_secs(2))
}

/// Timings for a link to a storage learner, dialed by the leader, and for every connection a
/// node accepts: keep-alives every second and a 10 s idle timeout. QUIC's idle timeout is the
/// smaller of the two ends' ([RFC 9000 §10.1]), so the dialer chooses: 2 s ([`transport`])
/// between voters, 10 s to a storage node. A storage node's liveness is gossip's to report,
/// and a storage host busy with its own work (or a lab of hundreds of nodes on two cores)
/// must not lose its link, and cost the leader a new handshake, each time it stalls for 2 s.
///
/// [RFC 9000 §10.1]: https://www.rfc-editor.org/rfc/rfc9000#section-10.1
pub(crate) fn patient_transport() -> Arc<quinn::TransportConfig> {
    lan(Duration::from_secs(1), Duration::from_secs(10))
}

fn lan(keep_alive: Duration, idle: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.initial_rtt(Duration::from_millis(20));
    t.keep_alive_interval(Some(keep_alive));
    if let Ok(idle) = idle.try_into() {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}
