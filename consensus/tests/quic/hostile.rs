//! Hostile members over QUIC, in-process: a member host that runs a modified node built from
//! these crates ([`rogue`]) and holds everything its role holds. Each test names the attack
//! and what must hold against it.

use super::*;

use std::time::Instant;

use quorate_consensus::{JoinRequest, TokenProof};

use super::authority::{ask, identity_of, leader_of};
use crate::rogue::{self, Forge, ForgedVotes};

/// Writes `n` labels of `node` through `via`, one after another; the time each took, sorted,
/// and the errors.
async fn timed_writes(
    via: &Consensus,
    node: NodeId,
    tag: &str,
    n: usize,
) -> (Vec<Duration>, Vec<String>) {
    let mut took = Vec::new();
    let mut errors = Vec::new();
    for i in 0..n {
        let started = Instant::now();
        match via.write(label(node, &format!("{tag}{i}"))).await {
            Ok(w) if w.outcome.is_ok() => took.push(started.elapsed()),
            Ok(w) => errors.push(format!("{:?}", w.outcome)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    took.sort();
    (took, errors)
}

/// The 99th percentile of sorted durations (the largest, for fewer than 100).
fn p99(sorted: &[Duration]) -> Duration {
    let i = (sorted.len() * 99).div_ceil(100).saturating_sub(1);
    sorted.get(i).copied().unwrap_or_default()
}

/// Each voter's (leader, term, core running).
fn raft_views(c: &Cluster, voters: &[NodeId]) -> Vec<(NodeId, Option<NodeId>, u64, bool)> {
    voters
        .iter()
        .map(|id| {
            let m = c.nodes[id].raft().metrics().borrow().clone();
            (
                *id,
                m.current_leader,
                m.current_term,
                m.running_state.is_ok(),
            )
        })
        .collect()
}

/// A storage learner whose host runs a modified node answering every append with a vote above
/// the leader's, first the next term, then `u64::MAX`: the voters keep one leader in the same
/// term, every write through a follower commits (p99 within twice the figure with an honest
/// learner, plus scheduling slack), no voter's Raft core stops, and the forged answers are
/// refused and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_forging_higher_votes_cannot_depose_the_leader() {
    let mut c = three_voters_and_storage().await;
    let voters = [1, 2, 3].map(NodeId::new);
    let storage = NodeId::new(4);
    let leader = leader_of(&c);
    let follower = *voters.iter().find(|v| **v != leader).expect("a follower");
    let (honest, errors) = timed_writes(&c.nodes[&follower], follower, "honest", 20).await;
    assert!(errors.is_empty(), "honest writes failed: {errors:?}");

    // The storage host's agent is replaced by the rogue, with its identity, on its address.
    let id = identity_of(&c, storage);
    let port = c.ports[&storage];
    c.kill(storage).await;
    let rogue = Arc::new(ForgedVotes::new(storage, Forge::NextTerm));
    let net = wait::until_async("the storage node's port", Duration::from_secs(10), || {
        QuicNet::bind(addr(port), &id, &DenyList::default()).map_err(|e| e.to_string())
    })
    .await;
    let serving = net.serve(rogue.clone());
    let term = c.nodes[&leader].raft().metrics().borrow().current_term;

    for (mode, tag) in [(Forge::NextTerm, "next"), (Forge::MaxTerm, "max")] {
        rogue.set(mode);
        let from = rogue.forged.load(Ordering::Relaxed);
        wait::until_async(
            &format!("the leader to hear the rogue's {tag} forged answers"),
            Duration::from_secs(10),
            || {
                let n = rogue.forged.load(Ordering::Relaxed);
                if n >= from + 5 { Ok(()) } else { Err(n) }
            },
        )
        .await;
        let (took, errors) = timed_writes(&c.nodes[&follower], follower, tag, 20).await;
        let views = raft_views(&c, &voters);
        let bound = (p99(&honest) * 2).max(p99(&honest) + Duration::from_millis(250));
        eprintln!(
            "{tag}: honest p99 {:?}, with the rogue p99 {:?} (bound {bound:?}), {} forged answers, views {views:?}",
            p99(&honest),
            p99(&took),
            rogue.forged.load(Ordering::Relaxed)
        );
        assert!(errors.is_empty(), "{tag}: writes failed: {errors:?}");
        for (v, seen_leader, seen_term, running) in &views {
            assert!(running, "{tag}: node {v}'s Raft core stopped: {views:?}");
            assert_eq!(
                (*seen_leader, *seen_term),
                (Some(leader), term),
                "{tag}: node {v} no longer holds the leader in its term: {views:?}"
            );
        }
        let refused = c.nodes[&leader].counts().answers_refused;
        assert!(
            refused >= rogue.forged.load(Ordering::Relaxed).min(5),
            "{tag}: the leader counted {refused} refused answers"
        );
        assert!(
            p99(&took) <= bound,
            "{tag}: p99 {:?} above {bound:?}",
            p99(&took)
        );
    }
    serving.abort();
    net.close();
    c.shutdown().await;
}

/// Token `id` for `role` with `secret`, valid for ten minutes from now.
fn token_record(id: &str, secret: &str, role: Role) -> TokenRecord {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    TokenRecord {
        id: id.into(),
        secret_hash: secret_hash(secret),
        proof_key: Some(token_proof_key(secret)),
        role,
        expires_ms: now + 600_000,
        max_uses: None,
        uses: 0,
        revoked: false,
        created_ms: now,
    }
}

/// Creates token `id` for `role` with `secret` ([`token_record`]) through `via`.
async fn create_token(via: &Consensus, id: &str, secret: &str, role: Role) {
    via.write(Request::CreateToken {
        token: token_record(id, secret, role),
    })
    .await
    .expect("a token")
    .outcome
    .expect("created");
}

/// A cluster's join key.
type JoinKey = [u8; 32];

/// The secrets a sealed cluster hands joiners in these tests, by role.
fn sealed_admission(key: [u8; 32]) -> AdmissionConfig {
    AdmissionConfig {
        policy: JoinPolicy::KeyOrToken,
        keys: vec![key],
        voter_secrets: BTreeMap::from([(
            "cluster_keys".to_string(),
            "c1u5t3r-k3y-0f-th3-v0t3rs-0000000000000000".to_string(),
        )]),
        storage_secrets: BTreeMap::from([(
            "gossip_keys".to_string(),
            "g0ss1p-k3y-0f-th3-st0r4g3-n0d3s-000000000".to_string(),
        )]),
    }
}

/// A line of the CA private key's PEM body: present in any copy of the key, as JSON escapes
/// the PEM's line breaks but not its base64.
fn ca_key_line(c: &Cluster) -> String {
    let dir = c.dir.path().join("n1");
    let key = std::fs::read_to_string(dir.join("ca.key")).expect("the CA key on a voter");
    key.lines()
        .find(|l| l.len() >= 60 && !l.starts_with("-----"))
        .expect("a base64 line")
        .to_string()
}

/// A storage node whose host relays strangers' joins to a voter, listed first in a joiner's
/// seeds, and a removed voter's host doing the same with its voter certificate: whether the
/// joiner refuses the rogue or is admitted through it, nothing the rogue captured holds the CA
/// key, the cluster's secrets or a token secret, for a voter joining with the cluster key
/// (the zero-config and `--peers` path of a sealed cluster) and with a join token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_relaying_joins_learns_no_secret() {
    let c = three_voters_and_storage().await;
    let key = [42u8; 32];
    for n in c.nodes.values() {
        n.set_admission(sealed_admission(key));
    }
    let leader = leader_of(&c);
    let leader_addr = addr(c.ports[&leader]);
    let ca_line = ca_key_line(&c);
    let token_secret = "70k3n-s3cr3t-70k3n-s3cr3t-70k3n-s3cr3t-00";
    create_token(
        &c.nodes[&leader],
        "00000000000000a7",
        token_secret,
        Role::Voter,
    )
    .await;

    // Rogue one: the storage node's own identity. Rogue two: a voter certificate for an id
    // the registry does not hold, as a removed voter that kept the CA key mints.
    let ca_pem = c.any().ca_pem().to_string();
    let ca_key = std::fs::read_to_string(c.dir.path().join("n1/ca.key")).expect("ca key");
    let rogues = [
        ("storage", identity_of(&c, NodeId::new(4))),
        ("voter", identity(&(ca_pem, ca_key), NodeId::new(0x99))),
    ];
    let mut next = 5;
    for (kind, id) in rogues {
        let port = free_port();
        let net = QuicNet::bind(addr(port), &id, &DenyList::default()).expect("bind");
        let relay = Arc::new(rogue::Relay::new(leader_addr));
        let serving = net.serve(relay.clone());
        let ways: [(&str, Option<TokenSecret>, Option<JoinKey>); 2] = [
            ("cluster key", None, Some(key)),
            (
                "token",
                Some(TokenSecret {
                    id: "00000000000000a7".into(),
                    secret: token_secret.into(),
                }),
                None,
            ),
        ];
        for (how, token, k) in ways {
            let joiner = NodeId::new(next);
            next += 1;
            let dir = c.dir.path().join(format!("n{}", joiner.get()));
            let listen = addr(free_port());
            let mut cfg = ConsensusConfig::new(joiner, dir, listen, listen);
            cfg.admission = sealed_admission(key);
            let joined = Consensus::join(
                cfg,
                info(joiner, Role::Voter),
                "test",
                &[addr(port), leader_addr],
                JoinCredentials {
                    trust: Trust::FirstUse,
                    token,
                    key: k,
                },
            )
            .await;
            let through = relay.captured().len();
            eprintln!(
                "{kind} rogue, {how}: joined {}, {through} messages captured",
                joined.is_ok()
            );
            for (what, needle) in [
                ("the CA key", ca_line.as_str()),
                ("the voters' secrets", "c1u5t3r-k3y-0f-th3-v0t3rs"),
                ("the storage nodes' secrets", "g0ss1p-k3y-0f-th3-st0r4g3"),
                ("the token secret", token_secret),
            ] {
                assert!(
                    !relay.holds(needle.as_bytes()),
                    "the {kind} rogue captured {what} from a {how} join"
                );
            }
            let (node, _) = joined.unwrap_or_else(|e| panic!("{kind}, {how}: not admitted: {e}"));
            node.shutdown().await;
        }
        serving.abort();
        net.close();
    }
    c.shutdown().await;
}

/// A thousand join requests with bad tokens (a wrong secret, a token that does not exist,
/// another role than the token grants) from twenty addresses: every one refused, and none
/// costs a Raft write (the leader's write count and its log are unchanged by them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_joins_cost_no_raft_write() {
    let c = Cluster::bootstrap(NodeId::new(1)).await;
    c.any()
        .set_admission(admission(JoinPolicy::TokenOnly, Vec::new()));
    create_token(
        c.any(),
        "00000000000000b7",
        "the-right-secret",
        Role::Storage,
    )
    .await;
    let fingerprint = quorate_consensus::tls::ca_fingerprint(&c.any().ca_pem()).expect("fp");
    let writes = c.any().counts().writes;
    let log = c.any().raft().metrics().borrow().last_log_index;
    let registry = c.any().local_registry();
    let key_pem = quorate_consensus::tls::new_node_key().expect("key");
    let target = c.seed();
    let mut tasks = Vec::new();
    for source in 0..20u8 {
        let key_pem = key_pem.clone();
        let fingerprint = fingerprint.clone();
        tasks.push(tokio::spawn(async move {
            let verifier = JoinVerifier::new(Trust::FirstUse);
            let net = QuicNet::joiner(SocketAddr::from(([127, 0, 1, 10 + source], 0)), &verifier)
                .expect("bind");
            let mut answers = Vec::new();
            for i in 0..50u64 {
                let id = NodeId::new(0x1000 + u64::from(source) * 100 + i);
                let (token_id, secret, role) = match i % 3 {
                    0 => ("00000000000000b7", "a-wrong-secret", Role::Storage),
                    1 => ("00000000000000ff", "the-right-secret", Role::Storage),
                    _ => ("00000000000000b7", "the-right-secret", Role::Voter),
                };
                let mut join = JoinRequest {
                    node_id: id,
                    raft_addr: "127.0.0.1:9".into(),
                    node: info(id, role),
                    csr_pem: quorate_consensus::tls::node_request_with(id, &key_pem).expect("csr"),
                    token: Some(TokenProof {
                        id: token_id.into(),
                        proof: String::new(),
                    }),
                    cluster_name: "test".into(),
                    key_proof: None,
                    ca_fingerprint: fingerprint.clone(),
                    nonce: format!("{:032x}", rand_nonce(source, i)),
                    at_ms: std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .expect("clock")
                        .as_millis() as u64,
                    seal_to: "ab".repeat(32),
                };
                let proof = quorate_consensus::token_proof(secret, &join);
                if let Some(t) = join.token.as_mut() {
                    t.proof = proof;
                }
                let body = serde_json::to_vec(&serde_json::json!({ "join": { "join": join } }))
                    .expect("json");
                let answer = net
                    .call_addr(target, &body, Duration::from_secs(5))
                    .await
                    .map(|a| String::from_utf8_lossy(&a).into_owned())
                    .unwrap_or_else(|e| format!("call failed: {e}"));
                answers.push(answer);
            }
            net.close();
            answers
        }));
    }
    let mut admitted = Vec::new();
    let mut total = 0;
    for t in tasks {
        for a in t.await.expect("task") {
            total += 1;
            if !a.contains("join_refused") {
                admitted.push(a);
            }
        }
    }
    assert_eq!(total, 1000);
    assert!(
        admitted.is_empty(),
        "not refused: {:?}",
        &admitted[..admitted.len().min(3)]
    );
    let counts = c.any().counts();
    eprintln!(
        "refused {}, rate limited {}, writes {} -> {}",
        counts.joins_refused, counts.joins_rate_limited, writes, counts.writes
    );
    assert_eq!(counts.writes, writes, "bad token joins cost Raft writes");
    assert_eq!(c.any().raft().metrics().borrow().last_log_index, log);
    assert_eq!(c.any().local_registry(), registry);
    c.shutdown().await;
}

/// A nonce unique to a request of this test.
fn rand_nonce(source: u8, i: u64) -> u128 {
    (u128::from(source) << 64) | u128::from(i) | (0xfeed_u128 << 100)
}

/// A host that kept the CA key (a removed voter's, until the CA is rotated) mints
/// certificates: one for a node id the registry does not hold, and one for a current voter's
/// id with a key of its own. Either, presented to the leader, governs nothing: removing a
/// node, writing a label, creating a token and reading the registry are each refused, and
/// the registry and the group are unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_minted_outside_the_cluster_have_no_authority() {
    let c = three_voters_and_storage().await;
    let leader = leader_of(&c);
    let victim = *[1, 2, 3]
        .map(NodeId::new)
        .iter()
        .find(|v| **v != leader)
        .expect("a follower");
    let ca_pem = c.any().ca_pem().to_string();
    let ca_key = std::fs::read_to_string(c.dir.path().join("n1/ca.key")).expect("ca key");
    let before = c.nodes[&leader].local_registry();
    let minted = [
        (
            "a new id",
            identity(&(ca_pem.clone(), ca_key.clone()), NodeId::new(0x99)),
        ),
        ("a voter's id", identity(&(ca_pem, ca_key), victim)),
    ];
    for (what, id) in minted {
        let net = QuicNet::bind(addr(0), &id, &DenyList::default()).expect("bind");
        let requests = [
            serde_json::json!({ "admin": { "op": AdminOp::Remove { node: NodeId::new(4) } } }),
            serde_json::json!({ "write": { "req": label(NodeId::new(4), "minted") } }),
            serde_json::json!({ "write": { "req": Request::CreateToken {
                token: token_record("00000000000000c7", "minted", Role::Voter),
            } } }),
            serde_json::json!("read"),
        ];
        for rpc in requests {
            let answer = ask(&c, &net, leader, rpc.clone()).await;
            let text = format!("{answer:?}");
            assert!(
                text.contains("forbidden") || text.contains("refused"),
                "a certificate for {what} was served {rpc}: {text}"
            );
        }
        net.close();
    }
    assert_eq!(
        c.nodes[&leader].local_registry(),
        before,
        "the registry changed"
    );
    c.shutdown().await;
}

/// A voter is removed; its host keeps its data dir (the CA key, its own certificate). The CA
/// is rotated from another voter: every member then holds a certificate of the new CA only
/// and trusts it only, the storage node never holds a CA key, writes commit, and a restarted
/// member comes back. The old CA is refused everywhere: the removed voter's own certificate,
/// one it mints for a new id, and one for a voter's id with its own key are each refused by
/// the handshake; a joiner pinning the old CA is refused and one pinning the new CA admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_rotation_leaves_the_old_ca_refused_everywhere() {
    let mut c = three_voters_and_storage().await;
    let [n1, n2, n3, n4] = [1, 2, 3, 4].map(NodeId::new);
    let old_ca = c.any().ca_pem();
    let old_fp = quorate_consensus::tls::ca_fingerprint(&old_ca).expect("fp");
    c.nodes[&n1]
        .admin(AdminOp::Remove { node: n3 })
        .await
        .expect("remove 3");
    c.kill(n3).await;
    let kept = c.dir.path().join("n3");
    let kept_key =
        std::fs::read_to_string(kept.join("ca.key")).expect("the removed voter's CA key");
    let own = Identity {
        ca_pem: old_ca.clone(),
        cert_pem: std::fs::read_to_string(kept.join("node.pem")).expect("cert"),
        key_pem: std::fs::read_to_string(kept.join("node.key")).expect("key"),
    };

    let report = c.nodes[&n2].rotate_ca().await.expect("rotate");
    let steps: Vec<(&str, usize, usize)> = report
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.confirmed.len(), s.members))
        .collect();
    assert_eq!(
        steps,
        [
            ("key", 2, 2),
            ("trust", 3, 3),
            ("renew", 3, 3),
            ("switch", 3, 3)
        ],
        "{report:?}"
    );
    assert!(report.complete, "{report:?}");
    assert_eq!(report.replaced, old_fp);
    let new_fp = report.fingerprint.clone();
    for (id, n) in &c.nodes {
        let cas = quorate_consensus::tls::split_pem(&n.ca_pem()).expect("pem");
        assert_eq!(cas.len(), 1, "node {id} trusts one CA");
        assert_eq!(
            quorate_consensus::tls::ca_fingerprint(&cas[0]).expect("fp"),
            new_fp,
            "node {id}"
        );
        assert_eq!(n.cluster().ca_fingerprint, new_fp, "node {id}");
        let dir = c.dir.path().join(format!("n{}", id.get()));
        let cert = std::fs::read_to_string(dir.join("node.pem")).expect("cert");
        assert!(
            quorate_consensus::tls::issued_by(&cert, &cas[0]),
            "node {id}'s certificate is of the new CA"
        );
        let file = quorate_consensus::Consensus::stored(&dir)
            .expect("dir")
            .expect("cluster");
        assert_eq!(file.ca_fingerprint, new_fp, "node {id}'s cluster.json");
    }
    assert!(
        !c.nodes[&n4].holds_ca_key(),
        "the storage node holds a CA key"
    );
    let storage_dir = c.dir.path().join("n4");
    for f in ["ca.key", "ca-next.key"] {
        assert!(!storage_dir.join(f).exists(), "the storage node has {f}");
    }
    assert!(c.nodes[&n1].holds_ca_key() && c.nodes[&n2].holds_ca_key());
    let w = c.nodes[&n4]
        .write(label(n4, "after-rotation"))
        .await
        .expect("write");
    assert_eq!(w.outcome, Ok(()));

    // The old CA, as the removed voter's host keeps it, opens no connection.
    let minted = [
        ("its own certificate", own),
        (
            "a certificate for a new id",
            identity(&(old_ca.clone(), kept_key.clone()), NodeId::new(0x99)),
        ),
        (
            "a certificate for a voter's id",
            identity(&(old_ca.clone(), kept_key), n1),
        ),
    ];
    let leader = leader_of(&c);
    for (what, id) in minted {
        let net = QuicNet::bind(addr(0), &id, &DenyList::default()).expect("bind");
        let answer = ask(&c, &net, leader, serde_json::json!("read")).await;
        assert!(
            answer.is_err(),
            "{what} of the old CA was answered: {answer:?}"
        );
        net.close();
    }

    // Joiners: the old pin is refused, the new one admitted.
    let e = c
        .join_with(NodeId::new(9), Role::Storage, Trust::Pinned(old_fp), None)
        .await
        .expect_err("the old CA pinned");
    assert!(matches!(e, StartError::JoinFailed { .. }), "{e}");
    c.join_with(
        NodeId::new(9),
        Role::Storage,
        Trust::Pinned(new_fp.clone()),
        None,
    )
    .await
    .expect("the new CA pinned");
    c.wait_membership(&[n1, n2], &[n4, NodeId::new(9)]).await;

    // A member restarted after the rotation comes back under the new CA.
    c.kill(n2).await;
    c.restart(n2, Role::Voter).await;
    c.until("a leader after the restart", Duration::from_secs(20), |c| {
        let w = c.nodes[&n2].raft().metrics().borrow().current_leader;
        w.map(drop).ok_or_else(|| "no leader".to_string())
    })
    .await;
    assert_eq!(c.nodes[&n2].cluster().ca_fingerprint, new_fp);
    let w = c.nodes[&n4]
        .write(label(n4, "after-restart"))
        .await
        .expect("write");
    assert_eq!(w.outcome, Ok(()));
    c.shutdown().await;
}
