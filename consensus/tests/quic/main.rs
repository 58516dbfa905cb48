//! Members over QUIC with mutual TLS, in-process on loopback: bootstrap and joins, forwarded
//! writes, learners that never vote, leader loss and restart, hand-over, promotion and
//! demotion under load, restarts from disk, join tokens, refusal of strangers, impostors
//! and forged claims.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::VoteRequest;
use openraft::{BasicNode, ServerState, Vote};
use quorate_consensus::NodeId;
use quorate_consensus::quic::QuicNet;
use quorate_consensus::tls::{CertSpec, DenyList, Identity, JoinVerifier, issue_node_cert, new_ca};
use quorate_consensus::{
    AdminOp, AdmissionConfig, Consensus, ConsensusConfig, ConsensusError, JoinCredentials,
    JoinPolicy, NodeInfo, RaftNet, Request, Role, Settings, StartError, TokenRecord, TokenSecret,
    Trust, secret_hash, token_proof_key,
};

#[path = "../../../tests/support/wait.rs"]
mod wait;

#[path = "../../../tests/support/rogue.rs"]
mod rogue;

mod authority;
mod hostile;
mod slow;

/// Logs to the test's output when `RUST_LOG` is set.
fn logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A free UDP port below the kernel's ephemeral range, so that no ephemeral socket (a joiner's,
/// another test's) takes the port of a node that is down while it restarts.
fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 400) as u16 * 25;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 10_000;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn addr(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn config(dir: &Path, id: NodeId, port: u16) -> ConsensusConfig {
    let mut c = ConsensusConfig::new(
        id,
        dir.join(format!("n{}", id.get())),
        addr(port),
        addr(port),
    );
    // These clusters are open unless a test seals them.
    c.admission.policy = JoinPolicy::Open;
    c
}

fn admission(policy: JoinPolicy, keys: Vec<[u8; 32]>) -> AdmissionConfig {
    AdmissionConfig {
        policy,
        keys,
        ..AdmissionConfig::default()
    }
}

fn info(id: NodeId, role: Role) -> NodeInfo {
    NodeInfo {
        name: format!("n{}", id.get()),
        role,
        gossip_addr: "127.0.0.1:7946".into(),
        api_addr: "127.0.0.1:7948".into(),
        labels: BTreeMap::new(),
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    ports: BTreeMap<NodeId, u16>,
    nodes: BTreeMap<NodeId, Consensus>,
}

impl Cluster {
    async fn bootstrap(id: NodeId) -> Cluster {
        logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let node = Consensus::bootstrap(
            config(dir.path(), id, port),
            info(id, Role::Voter),
            "test",
            Settings::default(),
        )
        .await
        .expect("bootstrap");
        Cluster {
            dir,
            ports: BTreeMap::from([(id, port)]),
            nodes: BTreeMap::from([(id, node)]),
        }
    }

    fn seed(&self) -> SocketAddr {
        addr(self.ports[self.nodes.keys().next().expect("a node")])
    }

    async fn join(&mut self, id: NodeId, role: Role) {
        self.join_with(id, role, Trust::FirstUse, None)
            .await
            .expect("join");
    }

    async fn join_with(
        &mut self,
        id: NodeId,
        role: Role,
        trust: Trust,
        token: Option<TokenSecret>,
    ) -> Result<(), StartError> {
        self.join_keyed(id, role, trust, token, None).await
    }

    async fn join_keyed(
        &mut self,
        id: NodeId,
        role: Role,
        trust: Trust,
        token: Option<TokenSecret>,
        key: Option<[u8; 32]>,
    ) -> Result<(), StartError> {
        self.join_from([127, 0, 0, 1], id, role, trust, token, key)
            .await
    }

    /// Joins from a loopback address of its own (a source of its own for the rate limit).
    async fn join_from(
        &mut self,
        ip: [u8; 4],
        id: NodeId,
        role: Role,
        trust: Trust,
        token: Option<TokenSecret>,
        key: Option<[u8; 32]>,
    ) -> Result<(), StartError> {
        let at = SocketAddr::from((ip, free_port()));
        self.join_advertised(id, role, at, at, JoinCredentials { trust, token, key })
            .await
    }

    /// Joins listening on `listen` and telling the cluster it is reached at `advertise`.
    async fn join_advertised(
        &mut self,
        id: NodeId,
        role: Role,
        listen: SocketAddr,
        advertise: SocketAddr,
        credentials: JoinCredentials,
    ) -> Result<(), StartError> {
        let seeds = vec![self.seed()];
        let dir = self.dir.path().join(format!("n{}", id.get()));
        let mut cfg = ConsensusConfig::new(id, dir, listen, advertise);
        cfg.admission.policy = JoinPolicy::Open;
        let (node, _) = Consensus::join(cfg, info(id, role), "test", &seeds, credentials).await?;
        self.ports.insert(id, listen.port());
        self.nodes.insert(id, node);
        Ok(())
    }

    async fn kill(&mut self, id: NodeId) {
        let n = self.nodes.remove(&id).expect("running");
        n.shutdown().await;
    }

    async fn restart(&mut self, id: NodeId, role: Role) {
        // `Consensus::shutdown` returns before openraft's tasks have dropped the last handle
        // on the node's redb file, and redb refuses a second open in one process: wait until
        // the file can be opened (a new process, as in production, never meets this).
        let db = self.dir.path().join(format!("n{}/raft.redb", id.get()));
        wait::until_async(
            &format!("node {id}'s database to be free"),
            Duration::from_secs(5),
            || quorate_consensus::open_db(&db).map(drop),
        )
        .await;
        let n = Consensus::open(config(self.dir.path(), id, self.ports[&id]), info(id, role))
            .await
            .expect("reopen");
        self.nodes.insert(id, n);
    }

    fn any(&self) -> &Consensus {
        self.nodes.values().next().expect("a node")
    }

    /// Waits on a condition of the cluster (see `wait::until_async`).
    async fn until(
        &self,
        what: &str,
        within: Duration,
        f: impl Fn(&Cluster) -> Result<(), String>,
    ) {
        wait::until_async(what, within, || f(self)).await
    }

    /// Waits until every running node sees `voters` as voters and `learners` as learners.
    async fn wait_membership(&self, voters: &[NodeId], learners: &[NodeId]) {
        let want: (BTreeSet<NodeId>, BTreeSet<NodeId>) = (
            voters.iter().copied().collect(),
            learners.iter().copied().collect(),
        );
        self.until("the membership", Duration::from_secs(20), |c| {
            for (id, n) in &c.nodes {
                let m = n.raft().metrics().borrow().clone();
                let mem = m.membership_config.membership();
                let seen: (BTreeSet<NodeId>, BTreeSet<NodeId>) =
                    (mem.voter_ids().collect(), mem.learner_ids().collect());
                if seen != want || mem.get_joint_config().len() != 1 {
                    return Err(format!("node {id} sees {seen:?}"));
                }
            }
            Ok(())
        })
        .await;
    }

    async fn shutdown(self) {
        for n in self.nodes.values() {
            n.shutdown().await;
        }
    }
}

/// Node 1 bootstraps, 2 and 3 join as voters and 4 as a storage node; the autopilot makes
/// 1 to 3 the voters.
async fn three_voters_and_storage() -> Cluster {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    c.join(NodeId::new(2), Role::Voter).await;
    c.join(NodeId::new(3), Role::Voter).await;
    c.join(NodeId::new(4), Role::Storage).await;
    c.wait_membership(&[1, 2, 3].map(NodeId::new), &[NodeId::new(4)])
        .await;
    c
}

fn label(node: NodeId, key: &str) -> Request {
    Request::SetLabel {
        node,
        key: key.into(),
        value: "v".into(),
    }
}

fn labels_of(n: &Consensus, node: NodeId) -> BTreeSet<String> {
    n.local_registry()
        .nodes
        .get(&node)
        .map(|r| r.labels.keys().cloned().collect())
        .unwrap_or_default()
}

/// A bootstrapped node and three joiners over QUIC: the voter-role joiners are promoted once
/// caught up, up to three voters; the storage node stays a learner, never votes and never
/// holds the CA key; a write sent to the learner is forwarded to the leader and reaches all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_are_promoted_to_the_target_and_learners_forward_writes() {
    let c = three_voters_and_storage().await;
    assert!(
        c.nodes[&NodeId::new(2)].holds_ca_key(),
        "a voter holds the CA key"
    );
    assert!(
        !c.nodes[&NodeId::new(4)].holds_ca_key(),
        "a storage node never does"
    );

    let w = c.nodes[&NodeId::new(4)]
        .write(label(NodeId::new(4), "zone"))
        .await
        .expect("forwarded write");
    assert_eq!(w.outcome, Ok(()));
    c.until("the label everywhere", Duration::from_secs(10), |c| {
        for (id, n) in &c.nodes {
            if !labels_of(n, NodeId::new(4)).contains("zone") {
                return Err(format!("node {id} lacks it"));
            }
        }
        Ok(())
    })
    .await;
    let learner = c.nodes[&NodeId::new(4)].raft().metrics().borrow().clone();
    assert_eq!(learner.state, ServerState::Learner);
    assert_ne!(
        learner.vote.leader_id().voted_for(),
        Some(NodeId::new(4)),
        "a learner never votes for itself"
    );

    let status = c.nodes[&NodeId::new(4)].status();
    assert_eq!(status.cluster_name, "test");
    assert_eq!(
        status.cluster_id,
        c.nodes[&NodeId::new(1)].cluster().cluster_id
    );
    let suffrage: BTreeMap<NodeId, String> = status
        .members
        .iter()
        .map(|m| (m.id, m.suffrage.clone()))
        .collect();
    assert_eq!(suffrage[&NodeId::new(1)], "voter");
    assert_eq!(suffrage[&NodeId::new(4)], "learner");
    assert_eq!(
        status
            .members
            .iter()
            .find(|m| m.id == NodeId::new(4))
            .and_then(|m| m.role),
        Some(Role::Storage)
    );
    // A storage node is not promoted, even by an operator.
    let refused = c
        .any()
        .admin(AdminOp::Promote {
            node: NodeId::new(4),
        })
        .await;
    assert!(
        matches!(&refused, Err(ConsensusError::Membership { message }) if message.contains("storage")),
        "{refused:?}"
    );
    c.shutdown().await;
}

impl Cluster {
    /// Node 1 bootstraps, 2 and 3 join as voters, and five writes are committed: the shared
    /// setup of the failure and restart tests.
    async fn three_voters() -> Cluster {
        let mut c = Cluster::bootstrap(NodeId::new(1)).await;
        c.join(NodeId::new(2), Role::Voter).await;
        c.join(NodeId::new(3), Role::Voter).await;
        c.wait_membership(&[1, 2, 3].map(NodeId::new), &[]).await;
        for i in 0..5 {
            c.any()
                .write(label(NodeId::new(1), &format!("a{i}")))
                .await
                .expect("write");
        }
        c
    }
}

/// Kill the leader: the others elect a new one and keep committing; the old one restarts from
/// its directory and rejoins as a follower with every entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_rejoins_as_a_follower() {
    let mut c = Cluster::three_voters().await;
    let leader = c.any().status().leader_id.expect("a leader");
    c.kill(leader).await;
    c.until("a new leader", Duration::from_secs(10), |c| {
        let l = c.any().status().leader_id;
        if l.is_some() && l != Some(leader) {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    })
    .await;
    c.any()
        .write(label(NodeId::new(1), "after-failover"))
        .await
        .expect("write after failover");

    c.restart(leader, Role::Voter).await;
    c.until(
        "the old leader to catch up as a follower",
        Duration::from_secs(15),
        |c| {
            let n = &c.nodes[&leader];
            let m = n.raft().metrics().borrow().clone();
            if m.state == ServerState::Follower
                && labels_of(n, NodeId::new(1)).contains("after-failover")
            {
                Ok(())
            } else {
                Err(format!("{:?}", m.state))
            }
        },
    )
    .await;
    c.shutdown().await;
}

/// Step-down hands leadership to another voter at once, and the group keeps committing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_down_hands_leadership_to_another_voter() {
    let c = Cluster::three_voters().await;
    let before = c.any().status().leader_id.expect("leader");
    let said = c.nodes[&before]
        .admin(AdminOp::StepDown { to: None })
        .await
        .expect("step down");
    let after = c.any().status().leader_id;
    assert!(
        after.is_some() && after != Some(before),
        "{said}; leader {after:?}"
    );
    c.any()
        .write(label(NodeId::new(1), "after-step-down"))
        .await
        .expect("write after step-down");
    c.shutdown().await;
}

/// Forty linearizable reads at once on the leader are all answered, by a few leadership
/// confirmations shared among them, not one each: a bulk start of hundreds of joiners (each
/// admission confirms the leadership) must not send the voters a round of heartbeats apiece.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_share_leadership_confirmations() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    const READS: usize = 40;
    let c = Cluster::three_voters().await;
    let leader = &c.nodes[&c.any().status().leader_id.expect("a leader")];
    let before = leader.counters()["quorum_checks"];
    type Read<'a> = Pin<Box<dyn Future<Output = Result<(), ConsensusError>> + Send + 'a>>;
    let mut reads: Vec<Read<'_>> = (0..READS)
        .map(|_| Box::pin(async { leader.read().await.map(drop) }) as Read<'_>)
        .collect();
    let mut answers: Vec<Option<Result<(), ConsensusError>>> = (0..READS).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (read, answer) in reads.iter_mut().zip(answers.iter_mut()) {
            if answer.is_none()
                && let Poll::Ready(r) = read.as_mut().poll(cx)
            {
                *answer = Some(r);
            }
        }
        if answers.iter().all(Option::is_some) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    let failed: Vec<_> = answers
        .iter()
        .flatten()
        .filter_map(|r| r.as_ref().err())
        .collect();
    assert!(failed.is_empty(), "reads failed: {failed:?}");
    let checks = leader.counters()["quorum_checks"] - before;
    assert!(
        (1..=READS as u64 / 4).contains(&checks),
        "{READS} concurrent reads took {checks} leadership confirmations"
    );
    drop(reads);
    c.shutdown().await;
}

/// After every node stops and restarts from its directory, the registry and the cluster id are
/// intact and the group commits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_restart_keeps_the_registry_and_the_cluster_id() {
    let mut c = Cluster::three_voters().await;
    let cluster_id = c.any().cluster().cluster_id.clone();
    let ids: Vec<NodeId> = c.nodes.keys().copied().collect();
    let registry = c.nodes[&ids[0]].read().await.expect("read");
    for id in &ids {
        c.kill(*id).await;
    }
    for id in &ids {
        c.restart(*id, Role::Voter).await;
    }
    c.until(
        "the registry after a full restart",
        Duration::from_secs(20),
        |c| {
            for (id, n) in &c.nodes {
                let r = n.local_registry();
                if r != registry {
                    return Err(format!(
                        "node {id}: {} labels",
                        labels_of(n, NodeId::new(1)).len()
                    ));
                }
                if n.cluster().cluster_id != cluster_id {
                    return Err("another cluster id".into());
                }
            }
            Ok(())
        },
    )
    .await;
    c.any()
        .write(label(NodeId::new(1), "after-restart"))
        .await
        .expect("write after restart");
    c.shutdown().await;
}

/// Writes flow from four clients while voters are demoted, promoted back and leadership moves:
/// every write that was acknowledged is in every node's registry at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_demote_under_load_lose_no_acknowledged_write() {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    // Node 4 joins once 2 and 3 are voters: with three joiners at once, the autopilot
    // promotes whichever two catch up first, and node 4 is to be the standby.
    for id in 2..=3 {
        c.join(NodeId::new(id), Role::Voter).await;
    }
    c.wait_membership(&[1, 2, 3].map(NodeId::new), &[]).await;
    c.join(NodeId::new(4), Role::Voter).await;
    c.wait_membership(&[1, 2, 3].map(NodeId::new), &[NodeId::new(4)])
        .await;
    let nodes: Arc<Vec<Consensus>> = Arc::new(std::mem::take(&mut c.nodes).into_values().collect());
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4usize {
        let nodes = nodes.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}-{i}");
                i += 1;
                if let Ok(done) = nodes[(w + i) % nodes.len()]
                    .write(label(NodeId::new(1), &key))
                    .await
                    && done.outcome.is_ok()
                {
                    acked.push(key);
                }
            }
            acked
        }));
    }
    let admin = &nodes[0];
    for round in 0..3 {
        let status = admin.status();
        let voters: Vec<NodeId> = status
            .members
            .iter()
            .filter(|m| m.suffrage == "voter")
            .map(|m| m.id)
            .collect();
        let victim = voters[round % voters.len()];
        admin
            .admin(AdminOp::Demote { node: victim })
            .await
            .expect("demote");
        // The autopilot promotes the standby; the operator promotes the demoted one back.
        wait::until_async("three voters again", Duration::from_secs(15), || {
            let v = admin
                .status()
                .members
                .iter()
                .filter(|m| m.suffrage == "voter")
                .count();
            if v == 3 {
                Ok(())
            } else {
                Err(format!("voters stayed at {v}"))
            }
        })
        .await;
        admin
            .admin(AdminOp::Promote { node: victim })
            .await
            .expect("promote");
        admin
            .admin(AdminOp::StepDown { to: None })
            .await
            .expect("step down");
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = BTreeSet::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    assert!(acked.len() > 20, "writes flowed: {}", acked.len());
    wait::until_async(
        "every acknowledged write on every node",
        Duration::from_secs(15),
        || {
            let missing: Vec<(usize, usize)> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (i, acked.difference(&labels_of(n, NodeId::new(1))).count()))
                .filter(|(_, m)| *m > 0)
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "acknowledged writes missing (node index, count): {missing:?}"
                ))
            }
        },
    )
    .await;
    for n in nodes.iter() {
        n.shutdown().await;
    }
}

/// Join tokens: a token-only cluster refuses a joiner without one; a wrong secret, another
/// role and an expired token are each refused with their own reason and change nothing; a pin
/// of another CA gets nothing; after five refusals an address is refused unheard; a good token
/// admits the node and counts a use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_are_checked_against_tokens_and_pins() {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    c.any()
        .set_admission(admission(JoinPolicy::TokenOnly, Vec::new()));
    let secret = "s3cret-s3cret-s3cret";
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    for (id, expires) in [
        ("00000000000000a1", now + 60_000),
        ("00000000000000a2", now - 1),
    ] {
        let w = c
            .any()
            .write(Request::CreateToken {
                token: TokenRecord {
                    id: id.into(),
                    secret_hash: secret_hash(secret),
                    proof_key: Some(token_proof_key(secret)),
                    role: Role::Storage,
                    expires_ms: expires,
                    max_uses: Some(2),
                    uses: 0,
                    revoked: false,
                    created_ms: now,
                },
            })
            .await
            .expect("create token");
        assert_eq!(w.outcome, Ok(()));
    }
    let proof = |id: &str, secret: &str| {
        Some(TokenSecret {
            id: id.into(),
            secret: secret.into(),
        })
    };
    let before = c.any().local_registry();
    let cases = [
        (None, Role::Storage, "join token only"),
        (
            proof("00000000000000a1", "wrong"),
            Role::Storage,
            "secret is wrong",
        ),
        (
            proof("00000000000000a1", secret),
            Role::Voter,
            "grants role",
        ),
        (proof("00000000000000a2", secret), Role::Storage, "expired"),
        (
            proof("00000000000000ff", secret),
            Role::Storage,
            "no join token",
        ),
    ];
    for (token, role, says) in cases {
        let e = c
            .join_with(NodeId::new(9), role, Trust::FirstUse, token)
            .await
            .expect_err("refused");
        assert!(
            matches!(&e, StartError::JoinRefused(_)) && e.to_string().contains(says),
            "expected a refusal saying {says:?}, got: {e}"
        );
        // A refused joiner leaves nothing behind and may try again.
        assert_eq!(
            Consensus::stored(&c.dir.path().join("n9")).expect("dir"),
            None
        );
    }
    assert_eq!(c.any().local_registry(), before, "refusals changed nothing");

    let fingerprint = quorate_consensus::tls::ca_fingerprint(&c.any().ca_pem()).expect("fp");
    let other = quorate_consensus::tls::ca_fingerprint(&new_ca("00000000000000cd").expect("ca").0)
        .expect("fp");
    let e = c
        .join_with(
            NodeId::new(9),
            Role::Storage,
            Trust::Pinned(other),
            proof("00000000000000a1", secret),
        )
        .await
        .expect_err("another CA pinned");
    assert!(matches!(e, StartError::JoinFailed { .. }), "{e}");

    // Five refusals from one address: the next attempt from it is refused unheard, even with
    // a good token, and changes nothing.
    let e = c
        .join_with(
            NodeId::new(9),
            Role::Storage,
            Trust::Pinned(fingerprint.clone()),
            proof("00000000000000a1", secret),
        )
        .await
        .expect_err("rate-limited");
    assert!(
        e.to_string().contains("too many refused join attempts"),
        "{e}"
    );
    assert_eq!(
        c.any().local_registry(),
        before,
        "a limited attempt changed nothing"
    );
    assert!(c.any().counters()["joins_rate_limited"] >= 1);

    c.join_from(
        [127, 0, 0, 2],
        NodeId::new(9),
        Role::Storage,
        Trust::Pinned(fingerprint),
        proof("00000000000000a1", secret),
        None,
    )
    .await
    .expect("a good token and pin, from another address");
    c.wait_membership(&[NodeId::new(1)], &[NodeId::new(9)])
        .await;
    assert_eq!(c.any().local_registry().tokens["00000000000000a1"].uses, 1);
    c.shutdown().await;
}

fn identity(ca: &(String, String), id: NodeId) -> Identity {
    let spec = CertSpec {
        role: Role::Voter,
        lifetime: Duration::from_secs(3600),
    };
    let (cert_pem, key_pem) = issue_node_cert(&ca.0, &ca.1, id, &spec).expect("issue");
    Identity {
        ca_pem: ca.0.clone(),
        cert_pem,
        key_pem,
    }
}

fn vote_from(id: NodeId) -> VoteRequest<NodeId> {
    VoteRequest {
        vote: Vote::new(1, id),
        last_log_id: None,
    }
}

/// Mutual TLS refuses what it should: another CA's node, a member answering under another
/// node's name, a Raft request claiming another node than its certificate, and anything but a
/// join from a caller without a certificate. A recorded member calling as itself is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_impostors_and_forged_claims_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let target = Consensus::bootstrap(
        config(dir.path(), NodeId::new(1), port),
        info(NodeId::new(1), Role::Voter),
        "test",
        Settings::default(),
    )
    .await
    .expect("bootstrap");
    let ca_key = std::fs::read_to_string(dir.path().join("n1/ca.key")).expect("ca key");
    let ca = (target.ca_pem().to_string(), ca_key);
    let option = RPCOption::new(Duration::from_secs(2));
    let node1 = BasicNode {
        addr: addr(port).to_string(),
    };

    // A member calling as itself is answered: node 2, recorded with its certificate's key.
    let friend_id = identity(&ca, NodeId::new(2));
    let key = quorate_consensus::tls::own_key_fingerprint(&friend_id.key_pem).expect("key");
    target
        .write(Request::PutNode {
            node: info(NodeId::new(2), Role::Voter).record(
                NodeId::new(2),
                Some(key),
                "127.0.0.1:9",
                0,
            ),
        })
        .await
        .expect("node 2 recorded")
        .outcome
        .expect("recorded");
    let friend = QuicNet::bind(addr(0), &friend_id, &DenyList::default()).expect("bind");
    let mut conn = RaftNet::new(friend.clone())
        .new_client(NodeId::new(1), &node1)
        .await;
    conn.vote(vote_from(NodeId::new(2)), option.clone())
        .await
        .expect("a genuine vote is answered");

    // The same member claiming to be node 3: refused.
    let forged = conn.vote(vote_from(NodeId::new(3)), option.clone()).await;
    assert!(forged.is_err(), "a forged claim was answered: {forged:?}");

    // A node with a certificate of another CA: the handshake fails.
    let other_ca = new_ca("00000000000000cd").expect("ca");
    let stranger = QuicNet::bind(
        addr(0),
        &identity(&other_ca, NodeId::new(2)),
        &DenyList::default(),
    )
    .expect("bind");
    let mut conn = RaftNet::new(stranger)
        .new_client(NodeId::new(1), &node1)
        .await;
    let r = conn.vote(vote_from(NodeId::new(2)), option.clone()).await;
    assert!(r.is_err(), "another CA's node was answered: {r:?}");

    // Dialing node 1's address while expecting node 4: its certificate names another node.
    let mut conn = RaftNet::new(friend)
        .new_client(NodeId::new(4), &node1)
        .await;
    let r = conn.vote(vote_from(NodeId::new(2)), option.clone()).await;
    assert!(
        r.is_err(),
        "a peer answering under another node's name was trusted: {r:?}"
    );

    // Without a certificate, a Raft request is refused (only joins are answered).
    let anonymous = QuicNet::joiner(addr(0), &JoinVerifier::new(Trust::FirstUse)).expect("bind");
    let body = serde_json::json!({"vote": {"req": vote_from(NodeId::new(2))}}).to_string();
    let answer = anonymous
        .call_addr(addr(port), body.as_bytes(), Duration::from_secs(2))
        .await
        .expect("answered");
    let answer: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    assert!(answer.get("refused").is_some(), "{answer}");
    // Junk from a caller without a certificate is refused and counted, and the node stays up.
    let junk = anonymous
        .call_addr(addr(port), b"\x00\xffnot json", Duration::from_secs(2))
        .await
        .expect("answered");
    assert!(String::from_utf8_lossy(&junk).contains("malformed"));

    let counters = target.counters();
    assert!(counters["quic_handshakes_refused"] >= 1, "{counters:?}");
    assert!(counters["requests_refused"] >= 3, "{counters:?}");
    target
        .write(label(NodeId::new(1), "still-up"))
        .await
        .expect("still serving");
    target.shutdown().await;
}

/// After more entries than the snapshot policy keeps, the leader's log is compacted, and a
/// node that joins late receives the registry as a snapshot over QUIC and applies what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_catches_up_from_a_snapshot_after_compaction() {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    for i in 0..1100 {
        let w = c.nodes[&NodeId::new(1)]
            .write(label(NodeId::new(1), &format!("k{i}")))
            .await
            .expect("write");
        assert_eq!(w.outcome, Ok(()));
    }
    c.until(
        "a snapshot and a compacted log",
        Duration::from_secs(20),
        |c| {
            let m = c.nodes[&NodeId::new(1)].raft().metrics().borrow().clone();
            match (m.snapshot, m.purged) {
                (Some(_), Some(_)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    c.join(NodeId::new(2), Role::Storage).await;
    c.until(
        "the joiner to hold every label",
        Duration::from_secs(20),
        |c| {
            let n = labels_of(&c.nodes[&NodeId::new(2)], NodeId::new(1)).len();
            if n == 1100 {
                Ok(())
            } else {
                Err(format!("{n} labels"))
            }
        },
    )
    .await;
    let m = c.nodes[&NodeId::new(2)].raft().metrics().borrow().clone();
    assert!(
        m.snapshot.is_some(),
        "the joiner installed a snapshot: {:?}",
        m.snapshot
    );
    c.shutdown().await;
}

/// A cluster sealed with a key admits a joiner that proves the same key (and proves it back),
/// refuses one with another key or none, and says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_cluster_admits_holders_of_its_key_only() {
    let mut c = Cluster::bootstrap(NodeId::new(1)).await;
    let key = [5u8; 32];
    c.any()
        .set_admission(admission(JoinPolicy::KeyOrToken, vec![key]));
    let e = c
        .join_keyed(
            NodeId::new(7),
            Role::Storage,
            Trust::FirstUse,
            None,
            Some([6u8; 32]),
        )
        .await
        .expect_err("another key");
    assert!(e.to_string().contains("not this cluster's"), "{e}");
    let e = c
        .join_keyed(NodeId::new(7), Role::Storage, Trust::FirstUse, None, None)
        .await
        .expect_err("no key");
    assert!(e.to_string().contains("sealed with a cluster key"), "{e}");
    c.join_keyed(
        NodeId::new(7),
        Role::Storage,
        Trust::FirstUse,
        None,
        Some(key),
    )
    .await
    .expect("the right key");
    c.wait_membership(&[NodeId::new(1)], &[NodeId::new(7)])
        .await;
    c.shutdown().await;
}
