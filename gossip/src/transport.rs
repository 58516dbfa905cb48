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
//!
//! **A narrower round in a large cluster.** Each round chitchat sends a SYN to three live
//! nodes (and at times to one it holds dead and to one seed), and each SYN is answered with a
//! digest that names every member, so what a round costs grows with the cluster twice over:
//! with the digest's size and with the fan-out. The SYNs to live members that travel a round
//! are capped so that, times the live members, they stay within [`ROUND_BUDGET`]: chitchat's
//! three up to 128 live members, two from 129 to 192, one from 193 up (see [`Fanout`]), so a
//! node's gossip stops growing at 128 members, until 384. A SYN to a node held dead or to a
//! seed that is not a live member always travels, for those are what heal a partition and
//! bring a joining node in. An exchange is push-pull (the SYN-ACK and ACK carry what either
//! side lacks), so news still reaches every member in O(log N) rounds (Karp et al.,
//! "Randomized rumor spreading", 2000). But chitchat's failure detector learns a member's
//! heartbeat from every digest a node receives, and a node that starts one exchange a round
//! receives about two digests a round instead of six, so it takes longer to call a silent
//! member failed: one SYN a round at 60 members, tried, took a failure from 3.7 s to 9.5 s to
//! be reported (`benches/results/scale.md`). Hence the high budget: a round narrows only where
//! a node's gossip would otherwise cost more than it does at 128 members. memberlist likewise
//! spaces out its full-state push-pull above 32 members (`pushPullScale`); this keeps the
//! round and narrows it instead.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

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
    /// SYNs not sent: a round's to live members beyond [`fanout`] (above 128 live members).
    pub syns_skipped: AtomicU64,
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
            ("syns_skipped", g(&self.syns_skipped)),
        ])
    }
}

/// The SYNs to live members that travel a round, times the live members (this node
/// included), stay within this: chitchat's three a round up to 128 members.
pub(crate) const ROUND_BUDGET: usize = 384;

/// How many SYNs to live members a round sends with `live` live members: at least one, and
/// no more than [`ROUND_BUDGET`] allows.
pub(crate) fn fanout(live: usize) -> usize {
    (ROUND_BUDGET / live.max(1)).max(1)
}

/// The gossip addresses of the members chitchat holds live, this node's included (kept by the
/// view loop).
pub(crate) type LiveAddrs = Arc<RwLock<HashSet<SocketAddr>>>;

/// Which of chitchat's SYNs travel: [`fanout`] a round to live members, and every one to any
/// other address (a node held dead, a seed not yet a member). chitchat sends a round's SYNs one
/// right after the other, so a SYN within half a round of the round's first belongs to it.
pub(crate) struct Fanout {
    live: LiveAddrs,
    /// Half a gossip round.
    spacing: Duration,
    /// When the current round's first SYN to a live member went, and how many travelled.
    round: Option<Instant>,
    sent: usize,
}

impl Fanout {
    pub(crate) fn new(live: LiveAddrs, round: Duration) -> Fanout {
        Fanout {
            live,
            spacing: round / 2,
            round: None,
            sent: 0,
        }
    }

    /// Whether a SYN to `to` sent at `now` travels.
    fn travels(&mut self, to: SocketAddr, now: Instant) -> bool {
        let (allowed, to_live) = {
            let live = self.live.read().unwrap_or_else(|p| p.into_inner());
            (fanout(live.len()), live.contains(&to))
        };
        if !to_live {
            return true;
        }
        if self
            .round
            .is_none_or(|t| now.duration_since(t) >= self.spacing)
        {
            self.round = Some(now);
            self.sent = 0;
        }
        if self.sent >= allowed {
            return false;
        }
        self.sent += 1;
        true
    }
}

/// Opens sealed (or open) UDP sockets for chitchat.
pub(crate) struct SealedTransport {
    pub(crate) keyring: Arc<RwLock<Keyring>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) sender_id: String,
    pub(crate) epoch: u64,
    /// The live members' addresses (see [`Fanout`]).
    pub(crate) live: LiveAddrs,
    /// The gossip round.
    pub(crate) round: Duration,
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
            fanout: Fanout::new(self.live.clone(), self.round),
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
    fanout: Fanout,
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
        if matches!(envelope.message, ChitchatMessage::Syn { .. })
            && !self.fanout.travels(to, Instant::now())
        {
            self.metrics.syns_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(SendOutcome { num_bytes_sent: 0 });
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], 7000 + i))
    }

    /// A view of `n` live members, addresses 0 to n-1 (0 is this node).
    fn live(n: usize) -> LiveAddrs {
        Arc::new(RwLock::new((0..n as u16).map(addr).collect()))
    }

    /// A round's SYNs as chitchat sends them, one right after the other from `start`; how
    /// many travelled.
    fn round(f: &mut Fanout, start: Instant, to: &[u16]) -> usize {
        to.iter()
            .enumerate()
            .filter(|(i, a)| f.travels(addr(**a), start + Duration::from_millis(*i as u64)))
            .count()
    }

    /// Up to 128 live members every SYN of a round travels; from 129 to 192 two do; from 193
    /// one.
    #[test]
    fn the_fan_out_shrinks_with_the_cluster_down_to_one() {
        let widths: Vec<(usize, usize)> = [3, 128, 129, 192, 193, 203, 5000]
            .into_iter()
            .map(|n| (n, fanout(n)))
            .collect();
        assert_eq!(
            widths,
            [
                (3, 128),
                (128, 3),
                (129, 2),
                (192, 2),
                (193, 1),
                (203, 1),
                (5000, 1)
            ]
        );
        assert_eq!(
            fanout(0),
            ROUND_BUDGET,
            "an empty view does not divide by zero"
        );
    }

    /// chitchat's three SYNs to live members: all travel at 128 members, two at 150.
    #[test]
    fn a_small_cluster_sends_every_syn_of_a_round() {
        let mut f = Fanout::new(live(128), Duration::from_secs(1));
        assert_eq!(round(&mut f, Instant::now(), &[1, 2, 3]), 3);
        let mut f = Fanout::new(live(150), Duration::from_secs(1));
        assert_eq!(round(&mut f, Instant::now(), &[1, 2, 3]), 2);
    }

    /// In a large cluster, one SYN a round to a live member travels, and the next round's
    /// first one does again, also when a round runs late (a busy host).
    #[test]
    fn a_large_cluster_sends_one_syn_a_round_to_live_members() {
        let mut f = Fanout::new(live(200), Duration::from_secs(1));
        let t = Instant::now();
        assert_eq!(round(&mut f, t, &[1, 2, 3]), 1, "first round");
        let next = t + Duration::from_secs(1);
        assert_eq!(round(&mut f, next, &[4, 5, 6]), 1, "second round");
        let late = t + Duration::from_millis(2600);
        assert_eq!(round(&mut f, late, &[7, 8, 9]), 1, "late round");
    }

    /// A SYN to an address that is not a live member (chitchat's one to a node it holds dead,
    /// one to a seed, the seed loop's) always travels: those heal a partition between two
    /// large halves and bring joining nodes in, and narrowing must not silence them.
    #[test]
    fn syns_to_dead_nodes_and_seeds_always_travel() {
        let mut f = Fanout::new(live(200), Duration::from_secs(1));
        let t = Instant::now();
        // Three live members, then a dead node and a seed (addresses past the live ones).
        assert_eq!(round(&mut f, t, &[1, 2, 3, 250, 260]), 1 + 2);
        // A seed loop's SYNs in the middle of a round.
        assert_eq!(
            round(&mut f, t + Duration::from_millis(50), &[270, 271, 272]),
            3
        );
    }

    /// The live set is read at each SYN: a cluster that grows past the threshold narrows its
    /// rounds, one that shrinks widens them again.
    #[test]
    fn the_fan_out_follows_the_live_members() {
        let members = live(3);
        let mut f = Fanout::new(members.clone(), Duration::from_secs(1));
        let t = Instant::now();
        assert!(f.travels(addr(1), t));
        assert!(f.travels(addr(2), t + Duration::from_millis(1)));
        *members.write().unwrap() = (0..200).map(addr).collect();
        assert!(
            !f.travels(addr(3), t + Duration::from_millis(2)),
            "two sent this round"
        );
        *members.write().unwrap() = (0..10).map(addr).collect();
        assert!(f.travels(addr(3), t + Duration::from_millis(3)));
    }
}
