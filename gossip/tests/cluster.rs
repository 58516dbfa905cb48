//! In-process gossip clusters on loopback: convergence, metadata spread, failure, leave (also
//! as seen by a peer that starts later) and restart, sealed and open transports, key rotation,
//! and junk on the wire.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use quorate_gossip::{Gossip, GossipConfig, Key, MemberStatus, NodeId, NodeMeta, Role};

#[path = "../../tests/support/wait.rs"]
mod wait;

use wait::{never_async, until_async as until};

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
    let mut cfg = GossipConfig::lan(NodeId::new(i as u64 + 1), "test".into(), addr, addr);
    cfg.generation = generation;
    cfg.seeds = seeds.to_vec();
    cfg.keys = keys;
    cfg.interval = Duration::from_millis(100);
    Gossip::start(cfg, meta(&format!("n{i}")))
        .await
        .expect("start gossip")
}

fn statuses(g: &Gossip) -> String {
    g.members()
        .iter()
        .map(|m| format!("{}:{}:g{}", m.meta.name, m.status, m.generation))
        .collect::<Vec<_>>()
        .join(",")
}

fn status_of(g: &Gossip, name: &str) -> Option<MemberStatus> {
    g.members()
        .iter()
        .find(|m| m.meta.name == name)
        .map(|m| m.status)
}

/// Starts `n` nodes (node ids 1..=n, generation 1) seeded with the first, with `keys`, and waits
/// until each sees all `n` alive.
async fn converged(n: usize, keys: &[Key]) -> (Vec<u16>, SocketAddr, Vec<Gossip>) {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let seed: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    let mut nodes = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        nodes.push(node(i, 1, *p, &[seed], keys.to_vec()).await);
    }
    for g in &nodes {
        until(
            &format!("{n} alive members"),
            Duration::from_secs(10),
            || all_alive(g, n),
        )
        .await;
    }
    (ports, seed, nodes)
}

async fn shutdown_all(nodes: impl IntoIterator<Item = Gossip>) {
    for g in nodes {
        g.shutdown().await;
    }
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
    let (_, _, nodes) = converged(5, &[]).await;
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
    shutdown_all(nodes).await;
}

/// A node that stops without leaving (a crash) is reported failed by every peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_without_leaving_is_failed() {
    let (_, _, mut nodes) = converged(3, &[Key::from_bytes([7; 32])]).await;
    let crasher = nodes.pop().expect("node 2");
    crasher.shutdown().await;
    for g in &nodes {
        until("n2 failed", Duration::from_secs(10), || {
            if status_of(g, "n2") == Some(MemberStatus::Failed) {
                Ok(())
            } else {
                Err(statuses(g))
            }
        })
        .await;
    }
    shutdown_all(nodes).await;
}

/// A node that leaves gracefully is reported left, not failed, by every peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_is_left() {
    let (_, _, mut nodes) = converged(3, &[Key::from_bytes([7; 32])]).await;
    let leaver = nodes.pop().expect("node 2");
    leaver.leave().await;
    for g in &nodes {
        until("n2 left", Duration::from_secs(10), || {
            if status_of(g, "n2") == Some(MemberStatus::Left) {
                Ok(())
            } else {
                Err(statuses(g))
            }
        })
        .await;
    }
    shutdown_all(nodes).await;
}

/// A peer that starts after a node has left (a restarted peer, a late joiner) learns the
/// leaver's state from the others with the leaving marker already set, and lists it left like
/// they do. It never sees the leaver alive, so a view that admits only nodes seen alive would
/// never list it (the lab test of graceful leave failed that way for a restarted peer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_started_after_a_leave_lists_the_leaver_as_left() {
    let key = Key::from_bytes([7; 32]);
    let (_, seed, mut nodes) = converged(3, std::slice::from_ref(&key)).await;
    let leaver = nodes.pop().expect("node 2");
    leaver.leave().await;
    for g in &nodes {
        until("n2 left", Duration::from_secs(10), || {
            if status_of(g, "n2") == Some(MemberStatus::Left) {
                Ok(())
            } else {
                Err(statuses(g))
            }
        })
        .await;
    }
    let late = node(3, 1, free_port(), &[seed], vec![key]).await;
    until(
        "the late peer to see n0 and n1 alive and n2 left",
        Duration::from_secs(10),
        || {
            let ok = status_of(&late, "n0") == Some(MemberStatus::Alive)
                && status_of(&late, "n1") == Some(MemberStatus::Alive)
                && status_of(&late, "n2") == Some(MemberStatus::Left);
            if ok { Ok(()) } else { Err(statuses(&late)) }
        },
    )
    .await;
    late.shutdown().await;
    shutdown_all(nodes).await;
}

/// A crashed node restarted with a new generation is alive again on every peer, as one entry
/// with the new generation (no ghost of the old incarnation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_new_generation_is_one_alive_entry() {
    let key = Key::from_bytes([7; 32]);
    let (ports, seed, mut nodes) = converged(3, std::slice::from_ref(&key)).await;
    let crasher = nodes.pop().expect("node 2");
    crasher.shutdown().await;
    for g in &nodes {
        until("n2 failed", Duration::from_secs(10), || {
            if status_of(g, "n2") == Some(MemberStatus::Failed) {
                Ok(())
            } else {
                Err(statuses(g))
            }
        })
        .await;
    }
    let restarted = node(2, 2, ports[2], &[seed], vec![key]).await;
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
    shutdown_all(nodes).await;
}

/// Nodes with different keys never see each other: over a window of several failure-detection
/// periods after the sealed three have converged, the stranger lists nobody but itself and no
/// sealed node lists the stranger; the stranger's datagrams are refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_different_keys_never_see_each_other() {
    let key = Key::from_bytes([1; 32]);
    let (_, seed, nodes) = converged(3, std::slice::from_ref(&key)).await;
    let stranger_port = free_port();
    // Seeded with the sealed cluster, and the sealed cluster seeded with it, so that both
    // sides keep sending to each other for the whole window.
    let stranger = node(3, 1, stranger_port, &[seed], vec![Key::from_bytes([3; 32])]).await;
    let stranger_addr: SocketAddr = ([127, 0, 0, 1], stranger_port).into();
    for g in &nodes {
        g.add_seeds([stranger_addr]);
    }
    until(
        "the stranger to list itself",
        Duration::from_secs(5),
        || all_alive(&stranger, 1),
    )
    .await;
    until(
        "the stranger's datagrams to be refused",
        Duration::from_secs(5),
        || {
            let dropped = nodes[0].metrics().snapshot()["dropped_auth"];
            if dropped > 0 { Ok(()) } else { Err(dropped) }
        },
    )
    .await;
    never_async("a member seen across keys", Duration::from_secs(3), || {
        if stranger.members().len() != 1 {
            return Some(format!("the stranger sees {}", statuses(&stranger)));
        }
        nodes
            .iter()
            .find(|g| g.members().iter().any(|m| m.meta.name == "n3") || g.members().len() != 3)
            .map(|g| format!("a sealed node sees {}", statuses(g)))
    })
    .await;
    stranger.shutdown().await;
    shutdown_all(nodes).await;
}

/// Junk sent to a sealed node (random bytes, a replay of an authentic datagram, an authentic
/// datagram that is not a chitchat message) is dropped and counted, and the view is unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_replayed_and_foreign_datagrams_are_dropped_and_counted() {
    let key = Key::from_bytes([1; 32]);
    let (ports, _, nodes) = converged(3, std::slice::from_ref(&key)).await;
    let a = &nodes[0];
    let junk = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dst: SocketAddr = ([127, 0, 0, 1], ports[0]).into();
    for len in [0usize, 1, 10, 60, 500, 1400] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
        junk.send_to(&bytes, dst).expect("send junk");
    }
    // Authentic but replayed: b's first datagram (epoch = generation 1, sequence 1); node
    // index i gossips as node id i + 1.
    let ring = quorate_gossip::Keyring::new(vec![key.clone()]);
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
    for g in &nodes {
        all_alive(g, 3).expect("the view is unharmed");
    }
    shutdown_all(nodes).await;
}

/// A key rotation across a running cluster (install everywhere, use everywhere, remove
/// everywhere) keeps it whole at every step, and afterwards it gossips under the new key alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_keeps_the_cluster_whole() {
    let (old, new) = (Key::from_bytes([1; 32]), Key::from_bytes([2; 32]));
    let (_, _, nodes) = converged(3, std::slice::from_ref(&old)).await;
    for g in &nodes {
        g.install_key(new.clone()).expect("install");
    }
    for g in &nodes {
        g.use_key(&new.fingerprint()).expect("use");
        // Between switches the cluster is mixed: it must stay whole.
        for h in &nodes {
            all_alive(h, 3).expect("still whole during rotation");
        }
    }
    for g in &nodes {
        g.remove_key(&old.fingerprint()).expect("remove");
    }
    let mut m = meta("n0");
    m.labels.insert("rotated".into(), "yes".into());
    nodes[0].set_meta(m).await;
    for g in &nodes[1..] {
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
    assert_eq!(nodes[0].key_fingerprints(), vec![new.fingerprint()]);
    shutdown_all(nodes).await;
}
