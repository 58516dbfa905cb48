//! A storage learner on a busy host: its answers come later than openraft's deadline for an
//! AppendEntries (one heartbeat interval, 50 ms), and it still catches up and follows.

use super::*;

/// A UDP relay in front of `server` that holds every datagram for `delay`, each way.
async fn delaying_relay(server: SocketAddr, delay: Duration) -> SocketAddr {
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
                    let (back, d) = (back.clone(), a[..n].to_vec());
                    tokio::spawn(async move {
                        tokio::time::sleep(delay).await; // the fault under test
                        let _ = back.send_to(&d, server).await;
                    });
                }
                Ok((n, _)) = back.recv_from(&mut b) => {
                    let to = *client.lock().expect("client");
                    if let Some(to) = to {
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
    let advertised = delaying_relay(listen, Duration::from_millis(40)).await;
    let first_use = JoinCredentials {
        trust: Trust::FirstUse,
        token: None,
        key: None,
    };
    c.join_advertised(id, Role::Storage, listen, advertised, first_use)
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
