//! Peers behind a relay: a storage learner on a busy host, whose answers come later than
//! openraft's deadline for an AppendEntries (one heartbeat interval, 50 ms), still catches up
//! and follows; a voter that hears nothing from its leader for a while does not depose it.

use super::*;

/// A UDP relay in front of `server` that holds every datagram for `delay`, each way, and
/// drops every one while `cut` is set.
async fn relay(server: SocketAddr, delay: Duration, cut: Arc<AtomicBool>) -> SocketAddr {
    let front = Arc::new(tokio::net::UdpSocket::bind(addr(0)).await.expect("bind"));
    let back = Arc::new(tokio::net::UdpSocket::bind(addr(0)).await.expect("bind"));
    let at = front.local_addr().expect("addr");
    tokio::spawn(async move {
        let client = Arc::new(std::sync::Mutex::new(None::<SocketAddr>));
        let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
        loop {
            // Each datagram is sent on after the delay by a task of its own, so that the
            // relay adds latency, not a queue.
            tokio::select! {
                Ok((n, from)) = front.recv_from(&mut a) => {
                    *client.lock().expect("client") = Some(from);
                    if cut.load(Ordering::Relaxed) {
                        continue;
                    }
                    let (back, d) = (back.clone(), a[..n].to_vec());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await; // the fault under test
                        let _ = back.send_to(&d, server).await;
                    });
                }
                Ok((n, _)) = back.recv_from(&mut b) => {
                    let to = *client.lock().expect("client");
                    if let Some(to) = to && !cut.load(Ordering::Relaxed) {
                        let (front, d) = (front.clone(), b[..n].to_vec());
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await; // the fault under test
                            let _ = front.send_to(&d, to).await;
                        });
                    }
                }
            }
        }
    });
    at
}

fn first_use() -> JoinCredentials {
    JoinCredentials {
        trust: Trust::FirstUse,
        token: None,
        key: None,
    }
}

/// Writes labels `{prefix}-0` to `{prefix}-{n-1}` on `node`'s record through `node`, each
/// applied.
async fn write_labels(c: &Cluster, node: NodeId, prefix: &str, n: usize) {
    for i in 0..n {
        let w = c.nodes[&node]
            .write(label(node, &format!("{prefix}-{i}")))
            .await
            .expect("write");
        assert!(w.outcome.is_ok(), "{w:?}");
    }
}

/// The leader reaches storage node 2 through a relay that adds 40 ms each way: every
/// AppendEntries to it is answered after openraft's 50 ms deadline. It joins, takes the
/// writes made before and after, and the leader's heartbeats to it stay few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_learner_answering_after_the_deadline_catches_up() {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    let leader = NodeId::new(1);
    write_labels(&c, leader, "before", 20).await;
    let id = NodeId::new(2);
    let listen = addr(free_port());
    let cut = Arc::new(AtomicBool::new(false));
    let advertised = relay(listen, Duration::from_millis(40), cut).await;
    c.join_advertised(id, Role::Storage, listen, advertised, first_use())
        .await
        .expect("join");
    c.wait_membership(&[leader], &[id]).await;
    write_labels(&c, leader, "after", 20).await;
    let want: BTreeSet<String> = (0..20)
        .flat_map(|i| [format!("before-{i}"), format!("after-{i}")])
        .collect();
    c.until(
        "the slow learner holding every write",
        Duration::from_secs(15),
        |c| {
            let held = labels_of(&c.nodes[&id], leader);
            let missing: Vec<&String> = want.difference(&held).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {} writes: {missing:?}", missing.len()))
            }
        },
    )
    .await;
    // At rest the leader's calls to it are its heartbeats, one per LEARNER_BEAT (500 ms):
    // over 2 s about 4, where one per 50 ms heartbeat would be 40.
    let calls = || c.nodes[&id].counters()["quic_requests_in"];
    let before = calls();
    tokio::time::sleep(Duration::from_secs(2)).await; // the window observed, not a synchronisation
    let during = calls() - before;
    assert!(
        during <= 10,
        "the slow learner was called {during} times in 2 s at rest"
    );
    c.shutdown().await;
}

/// Every datagram to voter 3 is dropped for a while, then none: meanwhile it heard no leader,
/// asked the others for a pre-vote, and was refused (the leader leads, voter 2 hears it), so it
/// took no new term, and once it hears the leader again the leader and its term are as before.
/// (Without the pre-vote it would campaign in a new term, and the leader would step down when
/// it met that term.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_cut_off_from_its_leader_does_not_depose_it() {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    c.join(NodeId::new(2), Role::Voter).await;
    let id = NodeId::new(3);
    let listen = addr(free_port());
    let cut = Arc::new(AtomicBool::new(false));
    let advertised = relay(listen, Duration::ZERO, cut.clone()).await;
    c.join_advertised(id, Role::Voter, listen, advertised, first_use())
        .await
        .expect("join");
    c.wait_membership(&[1, 2, 3].map(NodeId::new), &[]).await;
    let before = c.nodes[&NodeId::new(1)].status();
    let leader = before.leader_id.expect("a leader");
    assert_ne!(leader, id);

    cut.store(true, Ordering::Relaxed);
    c.until(
        "voter 3 to ask for pre-votes twice and be refused",
        Duration::from_secs(10),
        |c| {
            let lost = c.nodes[&id].counters()["pre_votes_lost"];
            if lost >= 2 {
                Ok(())
            } else {
                Err(format!("pre-votes lost: {lost}"))
            }
        },
    )
    .await;
    cut.store(false, Ordering::Relaxed);

    write_labels(&c, leader, "healed", 1).await;
    c.until(
        "voter 3 to take a write after the heal",
        Duration::from_secs(15),
        |c| {
            let held = labels_of(&c.nodes[&id], leader);
            if held.contains("healed-0") {
                Ok(())
            } else {
                Err(format!("voter 3 holds {held:?}"))
            }
        },
    )
    .await;
    let after = c.nodes[&leader].status();
    assert_eq!(
        (after.leader_id, after.term),
        (Some(leader), before.term),
        "the leader or its term changed"
    );
    assert_eq!(c.nodes[&id].counters()["campaigns"], 0);
    c.shutdown().await;
}
