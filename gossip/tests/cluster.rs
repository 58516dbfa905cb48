//! In-process gossip clusters on loopback: convergence, metadata spread, failure and leave,
//! sealed and open transports, key rotation, and junk on the wire.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use quorate_gossip::{Gossip, GossipConfig, Key, MemberStatus, NodeId, NodeMeta, Role};

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn meta(name: &str) -> NodeMeta {
    NodeMeta {
        name: name.into(),
        role: Some(Role::Voter),
        version: "test".into(),
        cluster_state: "forming".into(),
        ..Default::default()
    }
}

async fn node(
    i: usize,
    generation: u64,
    port: u16,
    seeds: &[SocketAddr],
    keys: Vec<Key>,
) -> Gossip {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cfg = GossipConfig::lan(
        quorate_gossip::NodeId::new(i as u64 + 1),
        "test".into(),
        addr,
        addr,
    );
    cfg.generation = generation;
    cfg.seeds = seeds.to_vec();
    cfg.keys = keys;
    cfg.interval = Duration::from_millis(100);
    Gossip::start(cfg, meta(&format!("n{i}")))
        .await
        .expect("start gossip")
}

/// Polls `f` until true or `within` passes; panics with `what` and the last state.
async fn until(what: &str, within: Duration, mut f: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    loop {
        match f() {
            Ok(()) => return,
            Err(seen) if start.elapsed() > within => {
                panic!("timed out after {within:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn statuses(g: &Gossip) -> String {
    g.members()
        .iter()
        .map(|m| format!("{}:{}:g{}", m.meta.name, m.status, m.generation))
        .collect::<Vec<_>>()
        .join(",")
}

fn all_alive(g: &Gossip, n: usize) -> Result<(), String> {
    let ms = g.members();
    if ms.len() == n && ms.iter().all(|m| m.status == MemberStatus::Alive) {
        Ok(())
    } else {
        Err(statuses(g))
    }
}

/// Five nodes seeded only with the first converge to the same five-member view, and a
/// metadata change on one reaches all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge_and_metadata_spreads() {
    let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
    let seed: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let mut nodes = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        nodes.push(node(i, 1, *p, &[seed], vec![]).await);
    }
    for g in &nodes {
        until("five alive members", Duration::from_secs(10), || {
            all_alive(g, 5)
        })
        .await;
    }
    let mut m = meta("n3");
    m.labels.insert("zone".into(), "b".into());
    nodes[3].set_meta(m).await;
    for g in &nodes {
        until("the label to spread", Duration::from_secs(10), || {
            let has = g.members().iter().any(|m| {
                m.meta.name == "n3" && m.meta.labels.get("zone").map(String::as_str) == Some("b")
            });
            if has { Ok(()) } else { Err(statuses(g)) }
        })
        .await;
    }
    for g in nodes {
        g.shutdown().await;
    }
}

/// A node that stops without leaving is reported failed; one that leaves is reported left; a
/// restart with a new generation is alive again as one entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_leave_and_restart() {
    let key = Key::from_bytes([7; 32]);
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let seed: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let mut nodes = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        nodes.push(node(i, 1, *p, &[seed], vec![key.clone()]).await);
    }
    for g in &nodes {
        until("four alive members", Duration::from_secs(10), || {
            all_alive(g, 4)
        })
        .await;
    }
    let leaver = nodes.pop().expect("node 3");
    let crasher = nodes.pop().expect("node 2");
    leaver.leave().await;
    crasher.shutdown().await;
    for g in &nodes {
        until("n3 left and n2 failed", Duration::from_secs(10), || {
            let ms = g.members();
            let st = |n: &str| ms.iter().find(|m| m.meta.name == n).map(|m| m.status);
            if st("n3") == Some(MemberStatus::Left) && st("n2") == Some(MemberStatus::Failed) {
                Ok(())
            } else {
                Err(statuses(g))
            }
        })
        .await;
    }
    let restarted = node(2, 2, ports[2], &[seed], vec![key.clone()]).await;
    for g in &nodes {
        until(
            "n2 alive again with generation 2, once",
            Duration::from_secs(10),
            || {
                let ms = g.members();
                let n2: Vec<_> = ms.iter().filter(|m| m.meta.name == "n2").collect();
                if n2.len() == 1 && n2[0].status == MemberStatus::Alive && n2[0].generation == 2 {
                    Ok(())
                } else {
                    Err(statuses(g))
                }
            },
        )
        .await;
    }
    restarted.shutdown().await;
    for g in nodes {
        g.shutdown().await;
    }
}

/// Nodes with different keys never see each other; a rotation (install, use, remove) across a
/// running cluster keeps it whole; junk datagrams are dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_separate_clusters_rotation_keeps_one_and_junk_is_counted() {
    let (old, new, other) = (
        Key::from_bytes([1; 32]),
        Key::from_bytes([2; 32]),
        Key::from_bytes([3; 32]),
    );
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let seed: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let a = node(0, 1, ports[0], &[seed], vec![old.clone()]).await;
    let b = node(1, 1, ports[1], &[seed], vec![old.clone()]).await;
    let c = node(2, 1, ports[2], &[seed], vec![old.clone()]).await;
    let stranger = node(3, 1, ports[3], &[seed], vec![other]).await;
    for g in [&a, &b, &c] {
        until("three alive", Duration::from_secs(10), || all_alive(g, 3)).await;
    }
    assert_eq!(
        stranger.members().len(),
        1,
        "the stranger sees only itself: {}",
        statuses(&stranger)
    );
    assert!(
        a.metrics().snapshot()["dropped_auth"] > 0,
        "the stranger's datagrams were refused"
    );

    // Junk: random bytes, a truncated sealed datagram, a replay of a captured one.
    let junk = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dst: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    for len in [0usize, 1, 10, 60, 500, 1400] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
        junk.send_to(&bytes, dst).expect("send junk");
    }
    // Authentic but replayed: b's first datagram (epoch = generation 1, sequence 1); node
    // index i gossips as node id i + 1.
    let ring = quorate_gossip::Keyring::new(vec![old.clone()]);
    let replay = ring
        .seal([9; 24], &NodeId::new(2).to_string(), 1, 1, b"whatever")
        .expect("seal");
    junk.send_to(&replay, dst).expect("send replay");
    // Authentic and fresh, but not a chitchat message.
    let garbage = ring
        .seal([8; 24], "ffffffffffffffff", 5, 1, b"not chitchat")
        .expect("seal");
    junk.send_to(&garbage, dst).expect("send garbage");
    until(
        "junk, replay and garbage counted",
        Duration::from_secs(5),
        || {
            let s = a.metrics().snapshot();
            if s["dropped_short"] >= 6 && s["dropped_replay"] >= 1 && s["dropped_malformed"] >= 1 {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;
    for g in [&a, &b, &c] {
        all_alive(g, 3).expect("the view is unharmed");
    }

    for g in [&a, &b, &c] {
        g.install_key(new.clone()).expect("install");
    }
    for g in [&a, &b, &c] {
        g.use_key(&new.fingerprint()).expect("use");
        // Between switches the cluster is mixed: it must stay whole.
        for h in [&a, &b, &c] {
            all_alive(h, 3).expect("still whole during rotation");
        }
    }
    for g in [&a, &b, &c] {
        g.remove_key(&old.fingerprint()).expect("remove");
    }
    let mut m = meta("n0");
    m.labels.insert("rotated".into(), "yes".into());
    a.set_meta(m).await;
    for g in [&b, &c] {
        until(
            "gossip under the new key alone",
            Duration::from_secs(10),
            || {
                let ok = g
                    .members()
                    .iter()
                    .any(|m| m.meta.labels.contains_key("rotated"));
                if ok {
                    all_alive(g, 3)
                } else {
                    Err(statuses(g))
                }
            },
        )
        .await;
    }
    assert_eq!(a.key_fingerprints(), vec![new.fingerprint()]);
    for g in [a, b, c, stranger] {
        g.shutdown().await;
    }
}
