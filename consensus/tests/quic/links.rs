//! Links between members under a busy host: a peer that answers late but whose endpoint still
//! sends keeps its connection (no new handshake for a host already short of time), up to 2 s
//! without an answer; a peer from which nothing comes (cut off, gone) is dialed afresh once it
//! is back.

use super::*;

use std::sync::atomic::AtomicU64;

use quorate_consensus::quic::{Handler, PeerCert};

/// Answers every request after the delay it is set to.
struct Slow {
    delay_ms: AtomicU64,
}

impl Handler for Slow {
    async fn handle(
        &self,
        _peer: Option<PeerCert>,
        _remote: SocketAddr,
        _request: Vec<u8>,
    ) -> Vec<u8> {
        let delay = Duration::from_millis(self.delay_ms.load(Ordering::Relaxed));
        tokio::time::sleep(delay).await; // the slowness under test, not a synchronisation
        b"ok".to_vec()
    }
}

/// A UDP relay between one client and `server` that drops everything while `cut` is set.
async fn relay(server: SocketAddr, cut: Arc<AtomicBool>) -> SocketAddr {
    let front = tokio::net::UdpSocket::bind(addr(0)).await.expect("bind");
    let back = tokio::net::UdpSocket::bind(addr(0)).await.expect("bind");
    let at = front.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        loop {
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut a) => {
                    client = Some(from);
                    if !cut.load(Ordering::Relaxed) {
                        let _ = back.send_to(&a[..n], server).await;
                    }
                }
                Ok((n, _)) = back.recv_from(&mut b) => {
                    if let Some(c) = client.filter(|_| !cut.load(Ordering::Relaxed)) {
                        let _ = front.send_to(&b[..n], c).await;
                    }
                }
            }
        }
    });
    at
}

/// Calls `to` with a 50 ms deadline until `span` has passed; returns how many calls failed.
async fn calls_for(net: &QuicNet, to: SocketAddr, span: Duration) -> usize {
    let t0 = std::time::Instant::now();
    let mut failed = 0;
    while t0.elapsed() < span {
        if net
            .call(NodeId::new(1), to, b"ping", Duration::from_millis(50))
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    failed
}

/// With the peer answering after `delay_ms`, calls `to` for `span` (see [`calls_for`]), then
/// makes it quick again and returns how many calls failed once the next call is answered.
async fn slow_for(
    net: &QuicNet,
    to: SocketAddr,
    slow: &Slow,
    delay_ms: u64,
    span: Duration,
) -> usize {
    slow.delay_ms.store(delay_ms, Ordering::Relaxed);
    let failed = calls_for(net, to, span).await;
    slow.delay_ms.store(0, Ordering::Relaxed);
    net.call(NodeId::new(1), to, b"ping", Duration::from_secs(5))
        .await
        .expect("answered once the peer is quick again");
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_keeps_its_link_and_a_silent_one_is_dialed_afresh() {
    logs();
    let ca = new_ca("00000000000000ab").expect("ca");
    let server = QuicNet::bind(
        addr(0),
        &identity(&ca, NodeId::new(1)),
        &DenyList::default(),
    )
    .expect("bind");
    let slow = Arc::new(Slow {
        delay_ms: AtomicU64::new(0),
    });
    let _serving = server.serve(slow.clone());
    let cut = Arc::new(AtomicBool::new(false));
    let to = relay(server.local_addr().expect("addr"), cut.clone()).await;
    let client = QuicNet::bind(
        addr(0),
        &identity(&ca, NodeId::new(2)),
        &DenyList::default(),
    )
    .expect("bind");
    let dials = || server.metrics().retries_sent.load(Ordering::Relaxed);

    let answer = client
        .call(NodeId::new(1), to, b"ping", Duration::from_secs(5))
        .await
        .expect("the first call is answered");
    assert_eq!(answer, b"ok");
    assert_eq!(dials(), 1, "one dial for the first call");

    // The peer answers after 400 ms, every call gives up after 50 ms, for 1.2 s: far longer
    // than a link may stay silent, but the peer's endpoint acknowledges every request.
    let failed = slow_for(&client, to, &slow, 400, Duration::from_millis(1200)).await;
    assert!(failed >= 10, "only {failed} calls timed out");
    assert_eq!(
        dials(),
        1,
        "a slow peer that still acknowledges was dialed again"
    );

    // A peer that never answers, though its endpoint acknowledges: after 2 s without an
    // answer the link is given up all the same (its streams are held by calls it never
    // finishes), and the next call is answered on a new connection.
    let failed = slow_for(&client, to, &slow, 60_000, Duration::from_millis(2600)).await;
    assert!(failed >= 20, "only {failed} calls timed out");
    assert_eq!(
        dials(),
        2,
        "a link that answered nothing for 2.6 s was kept, or dialed more than once"
    );

    // Now nothing comes back for 700 ms (a cut, short of the 2 s idle timeout): the link
    // is given up, and the first call after the heal is answered on a new connection.
    cut.store(true, Ordering::Relaxed);
    let failed = calls_for(&client, to, Duration::from_millis(700)).await;
    assert!(failed >= 5, "only {failed} calls failed during the cut");
    cut.store(false, Ordering::Relaxed);
    // Each call waits up to 1 s for its answer (or for the dial), so the loop paces itself.
    let t0 = std::time::Instant::now();
    let healed = loop {
        match client
            .call(NodeId::new(1), to, b"ping", Duration::from_secs(1))
            .await
        {
            Ok(answer) => break answer,
            Err(e) if t0.elapsed() > Duration::from_secs(10) => {
                panic!("no call answered within 10 s of the heal; last: {e}")
            }
            Err(_) => {}
        }
    };
    assert_eq!(healed, b"ok");
    assert!(
        dials() >= 3,
        "a link silent through the cut was kept ({} dials)",
        dials()
    );
}
