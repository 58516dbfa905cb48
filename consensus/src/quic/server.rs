//! The server side of a node's QUIC endpoint: accepting connections (a QUIC retry for a new
//! address, a handshake rate per source), telling members from strangers by their certificate,
//! and serving each request on its own stream, within the limits for strangers.
//!
//! It holds no dialing and no state of the endpoint's own beyond what it is handed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::crypto::rustls::QuicServerConfig;
use quorate_base::NodeId;
use tracing::debug;

use super::common::{
    Handler, MAX_MESSAGE, MAX_STRANGER_MESSAGE, NetMetrics, PeerCert, QuicError, STRANGERS,
    STRANGERS_PER_SOURCE, patient_transport,
};
use crate::tls::{DenyList, Identity, cert_facts};

/// How long a server waits for a whole request once its stream opened.
const READ_REQUEST: Duration = Duration::from_secs(10);

/// New connections (handshakes) a source may start: [`HandshakeRate::BURST`] at once, then
/// [`HandshakeRate::PER_SECOND`]; members connect once per peer and again after a restart, so
/// only a flood meets it. Bounded: at most [`HandshakeRate::SOURCES`] sources are remembered.
#[derive(Default)]
pub(super) struct HandshakeRate {
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
pub(super) struct Open {
    /// Members' connections by node id (closed when the identity is removed).
    pub(super) members: HashMap<NodeId, Vec<quinn::Connection>>,
    /// Connections without a certificate, by source address.
    pub(super) strangers: HashMap<IpAddr, usize>,
}

/// Accepts connections until the endpoint closes: retries new addresses, limits each
/// source's handshakes, then serves each connection as a member's or a stranger's.
pub(super) async fn accept<H: Handler>(
    endpoint: quinn::Endpoint,
    metrics: Arc<NetMetrics>,
    open: Arc<Mutex<Open>>,
    handler: Arc<H>,
) {
    let rate = Arc::new(Mutex::new(HandshakeRate::default()));
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
                Some(peer) => serve_member(handler, metrics, open, conn, peer, remote).await,
                None => serve_stranger(handler, metrics, open, conn, remote).await,
            }
        });
    }
}

pub(super) fn server_config(
    identity: &Identity,
    deny: &DenyList,
) -> Result<quinn::ServerConfig, QuicError> {
    let server = QuicServerConfig::try_from(identity.server_config(deny)?)
        .map_err(|e| QuicError::Config(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(server));
    // The dialer's idle timeout wins (the smaller one does): see `patient_transport`.
    server.transport_config(patient_transport());
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
            MAX_MESSAGE,
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
        serve_stream(
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

/// Reads one request of at most `limit` bytes, answers it, and finishes the stream.
async fn serve_stream<H: Handler>(
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
