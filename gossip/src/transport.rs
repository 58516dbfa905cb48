//! chitchat's `Transport` over UDP, sealed with the keyring (or open, with no key).
//!
//! chitchat 0.13 keeps its wire codec private (`ChitchatEnvelope` has no public serializer),
//! so a transport cannot turn envelopes into bytes itself. This one borrows chitchat's own
//! codec: each socket owns chitchat's `UdpSocket` bound to an ephemeral loopback port, and a
//! private relay socket connected to it. Sending, the envelope goes through chitchat's socket
//! to the relay, and the relay's bytes are sealed and sent to the peer from the real gossip
//! socket. Receiving, a datagram is opened (or refused) first, and only then handed through the
//! relay to chitchat's socket to be decoded; a known sentinel datagram sent right behind it
//! tells a decoded message from one chitchat skipped as malformed, without waiting on a clock.
//!
//! Every datagram in is counted; one that is too short, fails authentication or replays is
//! dropped and counted before any parsing; one that does not decode is dropped and counted.
//! Send errors (a cut link, an unreachable host) are counted and never stop gossip.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as CodecSocket};
use chitchat::{ChitchatEnvelope, ChitchatMessage, ProtocolVersion};
use tracing::debug;

use crate::keyring::{Keyring, Rejected, ReplayGuard};

/// Gossip traffic counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Datagrams received.
    pub datagrams_in: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Datagrams sent.
    pub datagrams_out: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Sends that failed (unreachable peer, cut link).
    pub send_errors: AtomicU64,
    /// Dropped: too short or not a sealed datagram.
    pub dropped_short: AtomicU64,
    /// Dropped: no installed key authenticates it.
    pub dropped_auth: AtomicU64,
    /// Dropped: replayed or from an older incarnation.
    pub dropped_replay: AtomicU64,
    /// Dropped: authenticated (or open mode) but not a chitchat message.
    pub dropped_malformed: AtomicU64,
}

impl Metrics {
    /// All counters by name.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BTreeMap::from([
            ("datagrams_in", g(&self.datagrams_in)),
            ("bytes_in", g(&self.bytes_in)),
            ("datagrams_out", g(&self.datagrams_out)),
            ("bytes_out", g(&self.bytes_out)),
            ("send_errors", g(&self.send_errors)),
            ("dropped_short", g(&self.dropped_short)),
            ("dropped_auth", g(&self.dropped_auth)),
            ("dropped_replay", g(&self.dropped_replay)),
            ("dropped_malformed", g(&self.dropped_malformed)),
        ])
    }
}

/// Opens sealed (or open) UDP sockets for chitchat.
pub(crate) struct SealedTransport {
    pub(crate) keyring: Arc<RwLock<Keyring>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) sender_id: String,
    pub(crate) epoch: u64,
}

#[async_trait]
impl Transport for SealedTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let outer = tokio::net::UdpSocket::bind(listen_addr)
            .await
            .with_context(|| format!("cannot bind gossip to {listen_addr}/udp"))?;
        let loopback: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 0).into();
        let mut codec = CodecSocket::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let relay = tokio::net::UdpSocket::bind(loopback)
            .await
            .context("gossip relay socket")?;
        let relay_addr = relay.local_addr()?;
        // Only chitchat's codec socket can reach the relay.
        relay
            .connect(codec_addr)
            .await
            .context("gossip relay socket")?;
        let mut buf = vec![0u8; 65_536];
        // The sentinel: a message that always decodes, in its exact encoding.
        codec.send(relay_addr, sentinel()).await?;
        let n = relay.recv(&mut buf).await.context("gossip relay socket")?;
        let sentinel_bytes = buf[..n].to_vec();
        Ok(Box::new(SealedSocket {
            outer,
            codec,
            relay,
            relay_addr,
            sentinel_bytes,
            keyring: self.keyring.clone(),
            metrics: self.metrics.clone(),
            sender_id: self.sender_id.clone(),
            epoch: self.epoch,
            seq: 0,
            replay: ReplayGuard::default(),
            buf,
        }))
    }
}

fn sentinel() -> ChitchatEnvelope {
    ChitchatEnvelope {
        version: ProtocolVersion::V0,
        message: ChitchatMessage::BadCluster,
    }
}

struct SealedSocket {
    outer: tokio::net::UdpSocket,
    codec: CodecSocket,
    relay: tokio::net::UdpSocket,
    relay_addr: SocketAddr,
    sentinel_bytes: Vec<u8>,
    keyring: Arc<RwLock<Keyring>>,
    metrics: Arc<Metrics>,
    sender_id: String,
    epoch: u64,
    seq: u64,
    replay: ReplayGuard,
    buf: Vec<u8>,
}

impl SealedSocket {
    /// Encodes an envelope with chitchat's codec, through the relay.
    async fn encode(&mut self, envelope: ChitchatEnvelope) -> anyhow::Result<Vec<u8>> {
        self.codec.send(self.relay_addr, envelope).await?;
        let n = self
            .relay
            .recv(&mut self.buf)
            .await
            .context("gossip relay socket")?;
        Ok(self.buf[..n].to_vec())
    }

    /// Decodes bytes with chitchat's codec, through the relay; `None` if they do not decode.
    async fn decode(&mut self, plain: &[u8]) -> anyhow::Result<Option<ChitchatEnvelope>> {
        self.relay
            .send(plain)
            .await
            .context("gossip relay socket")?;
        self.relay
            .send(&self.sentinel_bytes)
            .await
            .context("gossip relay socket")?;
        let first = self.next_from_relay().await?;
        if plain == self.sentinel_bytes.as_slice() {
            self.next_from_relay().await?; // the sentinel itself
            return Ok(Some(first));
        }
        if first == sentinel() {
            return Ok(None); // chitchat skipped `plain` and decoded only the sentinel
        }
        self.next_from_relay().await?; // the sentinel behind it
        Ok(Some(first))
    }

    /// The next envelope that came from the relay (anything else on loopback is ignored).
    async fn next_from_relay(&mut self) -> anyhow::Result<ChitchatEnvelope> {
        loop {
            let out = self.codec.recv().await?;
            if out.from_addr == self.relay_addr {
                return Ok(out.envelope);
            }
            self.metrics
                .dropped_malformed
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.outer.local_addr().context("gossip socket address")
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        let plain = self.encode(envelope).await?;
        let sealed = {
            let ring = self
                .keyring
                .read()
                .map_err(|_| anyhow::anyhow!("keyring lock poisoned"))?;
            if ring.is_sealed() {
                self.seq += 1;
                ring.seal(
                    rand::random(),
                    &self.sender_id,
                    self.epoch,
                    self.seq,
                    &plain,
                )
            } else {
                None
            }
        };
        let bytes = sealed.as_deref().unwrap_or(&plain);
        match self.outer.send_to(bytes, to).await {
            Ok(n) => {
                self.metrics.datagrams_out.fetch_add(1, Ordering::Relaxed);
                self.metrics
                    .bytes_out
                    .fetch_add(n as u64, Ordering::Relaxed);
                Ok(SendOutcome { num_bytes_sent: n })
            }
            Err(e) => {
                self.metrics.send_errors.fetch_add(1, Ordering::Relaxed);
                debug!(peer = %to, error = %e, "gossip send failed");
                Ok(SendOutcome { num_bytes_sent: 0 })
            }
        }
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let (n, from) = match self.outer.recv_from(&mut self.buf).await {
                Ok(r) => r,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        || e.kind() == std::io::ErrorKind::ConnectionReset =>
                {
                    continue;
                }
                Err(e) => return Err(e).context("gossip socket failed"),
            };
            self.metrics.datagrams_in.fetch_add(1, Ordering::Relaxed);
            self.metrics.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            let opened = {
                let ring = self
                    .keyring
                    .read()
                    .map_err(|_| anyhow::anyhow!("keyring lock poisoned"))?;
                if ring.is_sealed() {
                    Some(ring.open(&self.buf[..n], &mut self.replay))
                } else {
                    None
                }
            };
            let plain = match opened {
                None => self.buf[..n].to_vec(),
                Some(Ok(p)) => p,
                Some(Err(why)) => {
                    let counter = match why {
                        Rejected::TooShort => &self.metrics.dropped_short,
                        Rejected::AuthFailed => &self.metrics.dropped_auth,
                        Rejected::Replayed => &self.metrics.dropped_replay,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %from, len = n, reason = ?why, "gossip datagram dropped");
                    continue;
                }
            };
            match self.decode(&plain).await? {
                Some(envelope) => {
                    return Ok(RecvOutcome {
                        from_addr: from,
                        envelope,
                        num_bytes_received: n,
                    });
                }
                None => {
                    self.metrics
                        .dropped_malformed
                        .fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %from, len = n, "gossip datagram is not a chitchat message");
                }
            }
        }
    }
}
