//! Authority over QUIC, in-process: what a member's certificate lets it do when it speaks to
//! the leader directly (not through its own node's checks), what a removed identity and a
//! second key for a registered node get, what a rogue member relaying a join gets, the limits
//! for callers without a certificate, and certificates renewed before they run out.

use super::*;

#[path = "../../../tests/support/flood.rs"]
mod flood;

/// A node's identity as its consensus directory holds it.
pub(crate) fn identity_of(c: &Cluster, id: NodeId) -> Identity {
    let dir = c.dir.path().join(format!("n{}", id.get()));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("identity file");
    Identity {
        ca_pem: read("ca.pem"),
        cert_pem: read("node.pem"),
        key_pem: read("node.key"),
    }
}

/// Sends one request (JSON) to node `to` as whoever `net` is, and returns the answer (JSON).
pub(crate) async fn ask(
    c: &Cluster,
    net: &QuicNet,
    to: NodeId,
    rpc: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let body = serde_json::to_vec(&rpc).expect("json");
    let answer = net
        .call(to, addr(c.ports[&to]), &body, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&answer).map_err(|e| e.to_string())
}

/// The rule a refusal names, wherever the answer carries it.
fn rule_of(answer: &serde_json::Value) -> Option<String> {
    let text = answer.to_string();
    [
        "raft-by-voters",
        "admin-by-voters",
        "tokens-by-voters",
        "own-record-only",
    ]
    .into_iter()
    .find(|r| text.contains(r))
    .map(str::to_string)
}

pub(crate) fn leader_of(c: &Cluster) -> NodeId {
    c.any()
        .raft()
        .metrics()
        .borrow()
        .current_leader
        .expect("a leader")
}

fn membership(c: &Cluster) -> (BTreeSet<NodeId>, BTreeSet<NodeId>, Vec<NodeId>) {
    let m = c.any().raft().metrics().borrow().clone();
    let mem = m.membership_config.membership();
    (
        mem.voter_ids().collect(),
        mem.learner_ids().collect(),
        c.any().local_registry().nodes.keys().copied().collect(),
    )
}

/// A storage node speaking to the leader over QUIC with its own certificate cannot remove,
/// demote or promote anyone, move the leadership, create or revoke tokens, change settings,
/// write another node's record or take part in Raft: each is refused by the rule that names
/// it, and the registry and the group are unchanged. It can write its own labels, and reads
/// the registry without its tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_member_cannot_govern_over_quic_with_its_certificate() {
    let c = three_voters_and_storage().await;
    let leader = leader_of(&c);
    // A token exists, so that the read can show it is withheld.
    let token = TokenRecord {
        id: "00000000000000b1".into(),
        secret_hash: secret_hash("s"),
        proof_key: None,
        role: Role::Voter,
        expires_ms: u64::MAX,
        max_uses: None,
        uses: 0,
        revoked: false,
        created_ms: 0,
    };
    c.nodes[&leader]
        .write(Request::CreateToken {
            token: token.clone(),
        })
        .await
        .expect("a voter creates a token")
        .outcome
        .expect("created");
    let before = membership(&c);
    let storage = QuicNet::bind(
        addr(0),
        &identity_of(&c, NodeId::new(4)),
        &DenyList::default(),
    )
    .expect("bind");
    let admin = |op: AdminOp| serde_json::json!({ "admin": { "op": op } });
    let write = |req: Request| serde_json::json!({ "write": { "req": req } });
    let other = NodeId::new(1);
    let refused = [
        (admin(AdminOp::Remove { node: other }), "admin-by-voters"),
        (admin(AdminOp::Demote { node: other }), "admin-by-voters"),
        (
            admin(AdminOp::Promote {
                node: NodeId::new(4),
            }),
            "admin-by-voters",
        ),
        (admin(AdminOp::StepDown { to: None }), "admin-by-voters"),
        (admin(AdminOp::Leave { node: other }), "own-record-only"),
        (
            write(Request::CreateToken {
                token: TokenRecord {
                    id: "00000000000000b2".into(),
                    ..token.clone()
                },
            }),
            "tokens-by-voters",
        ),
        (
            write(Request::RevokeToken {
                id: token.id.clone(),
            }),
            "tokens-by-voters",
        ),
        (
            write(Request::SetSettings {
                settings: Settings::default(),
            }),
            "admin-by-voters",
        ),
        (
            write(Request::RemoveNode { node: other }),
            "admin-by-voters",
        ),
        (write(label(other, "zone")), "own-record-only"),
        (
            serde_json::json!({ "vote": { "req": vote_from(NodeId::new(4)) } }),
            "raft-by-voters",
        ),
    ];
    for (rpc, rule) in &refused {
        let answer = ask(&c, &storage, leader, rpc.clone())
            .await
            .expect("answered");
        assert_eq!(
            rule_of(&answer).as_deref(),
            Some(*rule),
            "{rpc} was answered {answer}"
        );
    }
    assert_eq!(membership(&c), before, "nothing changed");
    let t = &c.any().local_registry().tokens[&token.id];
    assert!(!t.revoked, "the token was not revoked");
    assert_eq!(
        c.any().local_registry().tokens.len(),
        1,
        "no token was created"
    );

    // Its own record: yes.
    let answer = ask(&c, &storage, leader, write(label(NodeId::new(4), "zone")))
        .await
        .expect("answered");
    assert!(answer["written"]["res"]["Ok"].is_object(), "{answer}");
    // Reads: the registry without tokens.
    let answer = ask(&c, &storage, leader, serde_json::json!("read"))
        .await
        .expect("answered");
    let registry = &answer["registry"]["res"]["Ok"];
    assert!(registry["nodes"].is_object(), "{answer}");
    assert_eq!(registry["tokens"], serde_json::json!({}), "tokens withheld");
    // Through its own node: refused before anything leaves it, with the same rule.
    let e = c.nodes[&NodeId::new(4)]
        .admin(AdminOp::Remove { node: other })
        .await
        .expect_err("refused");
    assert!(
        matches!(&e, ConsensusError::Forbidden { rule, .. } if rule == "admin-by-voters"),
        "{e}"
    );
    let counters = c.nodes[&leader].counters();
    assert!(
        counters["refused_admin_by_voters"] >= 6,
        "counted: {counters:?}"
    );
    c.shutdown().await;
}

/// Removal removes the identity: a removed node's certificate is refused by the handshake
/// (it was answered a moment before), and its open connections are closed; the same node id
/// may join again with a new identity (a fresh directory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_identity_is_refused_at_the_handshake() {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    c.join(NodeId::new(2), Role::Storage).await;
    c.wait_membership(&[NodeId::new(1)], &[NodeId::new(2)])
        .await;
    let old = identity_of(&c, NodeId::new(2));
    let net = QuicNet::bind(addr(0), &old, &DenyList::default()).expect("bind");
    ask(&c, &net, NodeId::new(1), serde_json::json!("read"))
        .await
        .expect("a member is answered");
    c.kill(NodeId::new(2)).await;
    c.nodes[&NodeId::new(1)]
        .admin(AdminOp::Remove {
            node: NodeId::new(2),
        })
        .await
        .expect("removed");
    let refused_before = c.nodes[&NodeId::new(1)].counters()["quic_handshakes_refused"];
    // Polled with a deadline until a call fails and a refused handshake is counted; a new
    // endpoint each time, so that no connection from before the removal is reused. The deny
    // list follows the commit a moment later, so a handshake begun before it may pass and
    // its request be refused instead; and the dialer may read the close before the server's
    // task has counted it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let net = QuicNet::bind(addr(0), &old, &DenyList::default()).expect("bind");
        let answer = ask(&c, &net, NodeId::new(1), serde_json::json!("read")).await;
        net.close();
        let refused = c.nodes[&NodeId::new(1)].counters()["quic_handshakes_refused"];
        match answer {
            Err(_) if refused > refused_before => break,
            _ if std::time::Instant::now() > deadline => panic!(
                "no refused handshake within 5s: the last call got {answer:?}; \
                 refused handshakes {refused} (before the removal {refused_before})"
            ),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    // The same number with a new key: admitted.
    std::fs::remove_dir_all(c.dir.path().join("n2")).expect("wipe");
    c.join(NodeId::new(2), Role::Storage).await;
    c.wait_membership(&[NodeId::new(1)], &[NodeId::new(2)])
        .await;
    c.shutdown().await;
}

/// A join for a registered node id with another key is refused, and the registered node is
/// unharmed (its record and address are not re-pointed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_for_a_registered_node_id_with_another_key_is_refused() {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    c.join(NodeId::new(2), Role::Storage).await;
    let before = c.any().local_registry().nodes[&NodeId::new(2)].clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let mut cfg = config(dir.path(), NodeId::new(2), port);
    cfg.admission.policy = JoinPolicy::Open;
    let e = Consensus::join(
        cfg,
        info(NodeId::new(2), Role::Voter),
        "test",
        &[c.seed()],
        JoinCredentials {
            trust: Trust::FirstUse,
            token: None,
            key: None,
        },
    )
    .await
    .err()
    .expect("refused");
    assert!(e.to_string().contains("registered with another key"), "{e}");
    assert_eq!(c.any().local_registry().nodes[&NodeId::new(2)], before);
    c.shutdown().await;
}

/// A rogue member with a CA of its own, seen by a joiner that holds the cluster key, relays
/// the joiner's request to a real member: the request names the rogue's CA, so the real member
/// refuses it; the rogue gets no certificate, no CA key and no secret, and the joiner is not
/// admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_join_yields_the_rogue_nothing() {
    let c = Cluster::bootstrap(NodeId::new(1)).await;
    let key = [7u8; 32];
    c.any()
        .set_admission(admission(JoinPolicy::KeyOrToken, vec![key]));
    let rogue_ca = new_ca("00000000000000ee").expect("ca");
    let rogue_port = free_port();
    let rogue_net = QuicNet::bind(
        addr(rogue_port),
        &identity(&rogue_ca, NodeId::new(99)),
        &DenyList::default(),
    )
    .expect("bind");
    let rogue = Arc::new(crate::rogue::Relay::new(c.seed()));
    let serving = rogue_net.serve(rogue.clone());
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let e = Consensus::join(
        config(dir.path(), NodeId::new(5), port),
        info(NodeId::new(5), Role::Voter),
        "test",
        &[addr(rogue_port)],
        JoinCredentials {
            trust: Trust::FirstUse,
            token: None,
            key: Some(key),
        },
    )
    .await
    .err()
    .expect("not admitted");
    let seen = rogue.captured();
    assert_eq!(seen.len(), 2, "the rogue relayed one request: {e}");
    let answer = String::from_utf8_lossy(&seen[1]);
    assert!(
        answer.contains("another CA"),
        "refused for the CA: {answer}"
    );
    for secret in ["cert_pem", "sealed", "BEGIN"] {
        assert!(!answer.contains(secret), "the rogue got {secret}: {answer}");
    }
    assert!(
        !c.any().local_registry().nodes.contains_key(&NodeId::new(5)),
        "not admitted"
    );
    serving.abort();
    rogue_net.close();
    c.shutdown().await;
}

/// A thousand connections without a certificate from one source (another process, so that it
/// does not share the nodes' runtime), each asking something over and over, do not stop the
/// group from committing: every write during the flood is acknowledged, and the leader turned
/// the flood away by its limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_strangers_do_not_stop_commits() {
    use std::io::BufRead;
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    c.join(NodeId::new(2), Role::Voter).await;
    c.join(NodeId::new(3), Role::Voter).await;
    c.wait_membership(&[1, 2, 3].map(NodeId::new), &[]).await;
    let leader = leader_of(&c);
    /// Kills the attacker however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut attacker = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args([
            "--ignored",
            "--exact",
            "authority::stranger_flood",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FLOOD_TARGET, addr(c.ports[&leader]).to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the attacker process");
    let out = attacker.stdout.take().expect("stdout");
    let attacker = Killed(attacker);
    let mut lines = std::io::BufReader::new(out).lines();
    let started = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("flooding "));
    assert!(started.is_some(), "the attacker did not start");
    let mut worst = Duration::ZERO;
    let until = std::time::Instant::now() + Duration::from_secs(5);
    let mut i = 0;
    while std::time::Instant::now() < until {
        i += 1;
        let t = std::time::Instant::now();
        c.nodes[&leader]
            .write(label(leader, &format!("during-{i}")))
            .await
            .expect("a write during the flood is acknowledged")
            .outcome
            .expect("applied");
        worst = worst.max(t.elapsed());
    }
    drop(attacker);
    let counters = c.nodes[&leader].counters();
    assert!(
        counters["quic_handshakes_limited"] + counters["quic_strangers_refused"] > 0,
        "the limits held: {counters:?}"
    );
    eprintln!("slowest write during the flood: {worst:?}; {counters:?}");
    c.shutdown().await;
}

/// Where the attacker process sends its flood.
const FLOOD_TARGET: &str = "QUORATE_TEST_FLOOD_TARGET";

/// The attacker's half of `a_thousand_strangers_do_not_stop_commits`, run by it as a process of
/// its own: opens 1000 connections without a certificate from 127.0.0.2 and asks over each until
/// it is killed, or for a minute at most. Without the variable it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by a_thousand_strangers_do_not_stop_commits as its attacker process"]
async fn stranger_flood() {
    let Some(target) = std::env::var(FLOOD_TARGET)
        .ok()
        .and_then(|t| t.parse::<SocketAddr>().ok())
    else {
        return;
    };
    flood::run(SocketAddr::from(([127, 0, 0, 2], 0)), target, 1000, 60).await;
}

/// With a short certificate lifetime every member renews its certificate several times with
/// no restart, the group keeps committing across the renewals, the first certificates run
/// out, and a member restarted afterwards reconnects with its renewed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_and_the_cluster_keeps_working() {
    let lifetime = Duration::from_secs(6);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ports = BTreeMap::new();
    let mut nodes = BTreeMap::new();
    let short = |id: NodeId, port: u16| {
        let mut cfg = config(dir.path(), id, port);
        cfg.cert_lifetime = lifetime;
        cfg
    };
    let p1 = free_port();
    let first = Consensus::bootstrap(
        short(NodeId::new(1), p1),
        info(NodeId::new(1), Role::Voter),
        "test",
        Settings::default(),
    )
    .await
    .expect("bootstrap");
    ports.insert(NodeId::new(1), p1);
    nodes.insert(NodeId::new(1), first);
    for id in [2, 3].map(NodeId::new) {
        let port = free_port();
        let (n, _) = Consensus::join(
            short(id, port),
            info(id, Role::Voter),
            "test",
            &[addr(p1)],
            JoinCredentials {
                trust: Trust::FirstUse,
                token: None,
                key: None,
            },
        )
        .await
        .expect("join");
        ports.insert(id, port);
        nodes.insert(id, n);
    }
    let mut c = Cluster { dir, ports, nodes };
    c.wait_membership(&[1, 2, 3].map(NodeId::new), &[]).await;
    let first_cert = identity_of(&c, NodeId::new(2)).cert_pem;
    let until = std::time::Instant::now() + lifetime * 3;
    let mut i = 0;
    while std::time::Instant::now() < until {
        c.any()
            .write(label(NodeId::new(1), &format!("w{i}")))
            .await
            .expect("a write across the renewals")
            .outcome
            .expect("applied");
        i += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.until("every member renewed twice", Duration::from_secs(10), |c| {
        for (id, n) in &c.nodes {
            let r = n.counters()["certificates_renewed"];
            if r < 2 {
                return Err(format!("node {id} renewed {r} times"));
            }
        }
        Ok(())
    })
    .await;
    let old = quorate_consensus::tls::cert_facts_pem(&first_cert).expect("facts");
    assert!(
        old.not_after < std::time::SystemTime::now(),
        "the first certificate ran out"
    );
    let now = quorate_consensus::tls::cert_facts_pem(&identity_of(&c, NodeId::new(2)).cert_pem)
        .expect("facts");
    assert_eq!(now.key, old.key, "the identity (key) stays");
    // Restarted, node 2 handshakes with its renewed certificate and catches up.
    c.kill(NodeId::new(2)).await;
    c.restart(NodeId::new(2), Role::Voter).await;
    c.nodes[&NodeId::new(1)]
        .write(label(NodeId::new(1), "after-restart"))
        .await
        .expect("written")
        .outcome
        .expect("applied");
    c.until("node 2 caught up", Duration::from_secs(10), |c| {
        let labels = labels_of(&c.nodes[&NodeId::new(2)], NodeId::new(1));
        if labels.contains("after-restart") {
            Ok(())
        } else {
            Err(format!("{} labels", labels.len()))
        }
    })
    .await;
    c.shutdown().await;
}

/// Gossip informs, never decides: a node reported failed long past the grace period (as a
/// forged gossip incarnation can make every peer report it) is not removed while it answers
/// the leader over QUIC; once it really stops answering, it is removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reported_failure_of_a_live_node_removes_nobody() {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    c.join(NodeId::new(2), Role::Storage).await;
    c.wait_membership(&[NodeId::new(1)], &[NodeId::new(2)])
        .await;
    let long_ago = std::time::Instant::now() - Duration::from_secs(60);
    c.nodes[&NodeId::new(1)].set_failed(
        BTreeMap::from([(NodeId::new(2), long_ago)]),
        Some(Duration::from_secs(1)),
    );
    wait::never_async("the live node removed", Duration::from_secs(3), || {
        let r = c.nodes[&NodeId::new(1)].local_registry();
        (!r.nodes.contains_key(&NodeId::new(2))).then(|| format!("{:?}", r.nodes.keys()))
    })
    .await;
    assert!(
        c.nodes[&NodeId::new(1)].counters()["removals_unconfirmed"] > 0,
        "the autopilot wanted to and held back"
    );
    c.kill(NodeId::new(2)).await;
    c.until("the dead node removed", Duration::from_secs(10), |c| {
        let r = c.nodes[&NodeId::new(1)].local_registry();
        if r.nodes.contains_key(&NodeId::new(2)) {
            Err(format!("{:?}", r.nodes.keys()))
        } else {
            Ok(())
        }
    })
    .await;
    c.shutdown().await;
}
