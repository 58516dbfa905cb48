//! A hostile member, for the tests only: built from the project's crates, it holds what its
//! role holds (a member's certificate and key, served on the member's own address) and
//! answers with whatever the attack needs. Never part of the shipped binary.
//!
//! - [`ForgedVotes`]: a Raft learner that answers every append and snapshot chunk with a vote
//!   above the leader's (the next term, or `u64::MAX`), to depose the leader or overflow its
//!   term arithmetic.
//!
//! Each runs in the test's process (in-process clusters) or, in the LAN lab, as a process of
//! its own in a member's host (`run_process`, started as an ignored test of the test binary).
//! - [`Relay`]: a member that takes a stranger's join request, forwards it to a real voter as
//!   a stranger itself, and hands the answer back, keeping every byte it saw both ways.
//! - [`minted_asks`]: a host that kept a CA key (a removed voter's) mints a member certificate
//!   for any node id and asks a member to govern with it.
//!
//! Included by the consensus QUIC tests with
//! `#[path = "../../../tests/support/rogue.rs"] mod rogue;`, and by the lab's test binaries
//! through `support`; it needs `quorate-consensus`, openraft, serde_json and tokio.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use openraft::Vote;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest};
use quorate_consensus::quic::{Handler, PeerCert, QuicNet};
use quorate_consensus::tls::JoinVerifier;
use quorate_consensus::{NodeId, Trust, TypeConfig};
use serde_json::{Value, json};

/// An endpoint on `listen` with the member identity in the consensus directory `dir`.
fn bind_as(dir: &std::path::Path, listen: SocketAddr) -> QuicNet {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("identity file");
    let identity = quorate_consensus::tls::Identity {
        ca_pem: read("ca.pem"),
        cert_pem: read("node.pem"),
        key_pem: read("node.key"),
    };
    QuicNet::bind(
        listen,
        &identity,
        &quorate_consensus::tls::DenyList::default(),
    )
    .expect("bind the rogue")
}

/// How far above the leader's term a [`ForgedVotes`] answer claims to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Forge {
    /// Answer like an honest learner would (the leader's own vote, success).
    Honest = 0,
    /// The leader's term plus one: a leader that believes it steps down at every append.
    NextTerm = 1,
    /// `u64::MAX`: the next election's `term + 1` overflows.
    MaxTerm = 2,
}

/// A learner that forges votes in its answers. Switch the attack with [`ForgedVotes::set`].
pub struct ForgedVotes {
    id: NodeId,
    mode: AtomicU8,
    /// Appends and snapshot chunks answered with a forged vote.
    pub forged: AtomicU64,
    /// Every Raft request received.
    pub received: AtomicU64,
}

impl ForgedVotes {
    pub fn new(id: NodeId, mode: Forge) -> ForgedVotes {
        ForgedVotes {
            id,
            mode: AtomicU8::new(mode as u8),
            forged: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    pub fn set(&self, mode: Forge) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    fn mode(&self) -> Forge {
        match self.mode.load(Ordering::SeqCst) {
            1 => Forge::NextTerm,
            2 => Forge::MaxTerm,
            _ => Forge::Honest,
        }
    }

    /// The vote this learner claims, given the leader's.
    fn claim(&self, leader: Vote<NodeId>) -> Option<Vote<NodeId>> {
        match self.mode() {
            Forge::Honest => None,
            Forge::NextTerm => Some(Vote::new(leader.leader_id().term + 1, self.id)),
            Forge::MaxTerm => Some(Vote::new(u64::MAX, self.id)),
        }
    }

    fn answer(&self, request: &[u8]) -> Value {
        let Ok(v) = serde_json::from_slice::<Value>(request) else {
            return json!({ "refused": { "reason": "unreadable" } });
        };
        if let Some(req) = v.pointer("/append_entries/req") {
            self.received.fetch_add(1, Ordering::Relaxed);
            let Ok(req) = serde_json::from_value::<AppendEntriesRequest<TypeConfig>>(req.clone())
            else {
                return json!({ "refused": { "reason": "unreadable append" } });
            };
            return match self.claim(req.vote) {
                Some(vote) => {
                    self.forged.fetch_add(1, Ordering::Relaxed);
                    json!({ "append_entries": { "res": { "Ok": { "HigherVote": vote } } } })
                }
                // An honest answer: everything held (the leader then sends what follows).
                None => json!({ "append_entries": { "res": { "Ok": "Success" } } }),
            };
        }
        if let Some(req) = v.pointer("/install_snapshot/req") {
            self.received.fetch_add(1, Ordering::Relaxed);
            let Ok(req) = serde_json::from_value::<InstallSnapshotRequest<TypeConfig>>(req.clone())
            else {
                return json!({ "refused": { "reason": "unreadable snapshot" } });
            };
            let vote = match self.claim(req.vote) {
                Some(v) => {
                    self.forged.fetch_add(1, Ordering::Relaxed);
                    v
                }
                None => req.vote,
            };
            return json!({ "install_snapshot": { "res": { "Ok": { "vote": vote } } } });
        }
        json!({ "refused": { "reason": "not served by this rogue" } })
    }
}

impl ForgedVotes {
    /// Runs the rogue as a process of its own (a lab host's): the member identity in the
    /// consensus directory `dir` (node `id`), serving on `listen`, forging `mode`, for at most
    /// `secs` seconds. Prints a line per second with the count of forged answers.
    pub async fn run_process(
        dir: &std::path::Path,
        id: NodeId,
        listen: SocketAddr,
        mode: Forge,
        secs: u64,
    ) {
        let net = bind_as(dir, listen);
        let rogue = std::sync::Arc::new(ForgedVotes::new(id, mode));
        let serving = net.serve(rogue.clone());
        println!("rogue forging {mode:?} on {listen}");
        for _ in 0..secs {
            tokio::time::sleep(Duration::from_secs(1)).await;
            println!("forged {}", rogue.forged.load(Ordering::Relaxed));
        }
        serving.abort();
        net.close();
    }
}

impl Handler for ForgedVotes {
    async fn handle(
        &self,
        _peer: Option<PeerCert>,
        _remote: SocketAddr,
        request: Vec<u8>,
    ) -> Vec<u8> {
        serde_json::to_vec(&self.answer(&request)).unwrap_or_default()
    }
}

/// A member that relays strangers' requests to `to` (a real voter), as a stranger itself,
/// and keeps every byte it saw: the requests it was sent and the answers it passed back.
pub struct Relay {
    pub to: SocketAddr,
    pub seen: Mutex<Vec<Vec<u8>>>,
    /// A file every captured message is also appended to (a rogue in its own process).
    pub log: Option<std::path::PathBuf>,
}

impl Relay {
    pub fn new(to: SocketAddr) -> Relay {
        Relay {
            to,
            seen: Mutex::new(Vec::new()),
            log: None,
        }
    }

    /// Runs a relay as a process of its own (a lab host's): the member identity in the
    /// consensus directory `dir`, serving on `listen`, relaying to `to`, appending what it
    /// captures to `log`, for at most `secs` seconds.
    pub async fn run_process(
        dir: &std::path::Path,
        listen: SocketAddr,
        to: SocketAddr,
        log: std::path::PathBuf,
        secs: u64,
    ) {
        let net = bind_as(dir, listen);
        let relay = std::sync::Arc::new(Relay {
            log: Some(log),
            ..Relay::new(to)
        });
        let serving = net.serve(relay);
        println!("rogue relaying {listen} -> {to}");
        tokio::time::sleep(Duration::from_secs(secs)).await;
        serving.abort();
        net.close();
    }

    /// Everything captured, requests and answers, in the order seen.
    pub fn captured(&self) -> Vec<Vec<u8>> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Whether any captured message contains `needle`.
    pub fn holds(&self, needle: &[u8]) -> bool {
        !needle.is_empty()
            && self
                .captured()
                .iter()
                .any(|m| m.windows(needle.len()).any(|w| w == needle))
    }

    fn keep(&self, bytes: &[u8]) {
        if let Ok(mut s) = self.seen.lock() {
            s.push(bytes.to_vec());
        }
        if let Some(path) = &self.log {
            use std::io::Write;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = f.write_all(bytes);
                let _ = f.write_all(b"\n");
            }
        }
    }
}

impl Handler for Relay {
    async fn handle(
        &self,
        _peer: Option<PeerCert>,
        _remote: SocketAddr,
        request: Vec<u8>,
    ) -> Vec<u8> {
        self.keep(&request);
        let verifier = JoinVerifier::new(Trust::FirstUse);
        let from = SocketAddr::new(
            match self.to {
                SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            },
            0,
        );
        let Ok(net) = QuicNet::joiner(from, &verifier) else {
            return Vec::new();
        };
        let answer = net
            .call_addr(self.to, &request, Duration::from_secs(15))
            .await
            .unwrap_or_default();
        net.close();
        self.keep(&answer);
        answer
    }
}

/// A host that kept the CA key of the consensus directory `dir` (a removed voter's) mints a
/// voter certificate for node `as_id` with a key of its own, then asks node `to_id` at `to`
/// to read the registry and to remove node `victim`: each answer, or why none came (a
/// handshake the member refused).
pub async fn minted_asks(
    dir: &std::path::Path,
    as_id: NodeId,
    to_id: NodeId,
    to: SocketAddr,
    victim: NodeId,
) -> Vec<Result<Value, String>> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).expect("kept file");
    // The CA the directory holds first, with the key it kept.
    let ca_pem = quorate_consensus::tls::split_pem(&read("ca.pem")).expect("ca.pem")[0].clone();
    let spec = quorate_consensus::tls::CertSpec {
        role: quorate_consensus::Role::Voter,
        lifetime: Duration::from_secs(3600),
    };
    let (cert_pem, key_pem) =
        quorate_consensus::tls::issue_node_cert(&ca_pem, &read("ca.key"), as_id, &spec)
            .expect("mint");
    let identity = quorate_consensus::tls::Identity {
        ca_pem,
        cert_pem,
        key_pem,
    };
    let any: SocketAddr = if to.is_ipv4() {
        "0.0.0.0:0".parse().expect("addr")
    } else {
        "[::]:0".parse().expect("addr")
    };
    let net =
        QuicNet::bind(any, &identity, &quorate_consensus::tls::DenyList::default()).expect("bind");
    let mut answers = Vec::new();
    for rpc in [
        json!("read"),
        json!({ "admin": { "op": quorate_consensus::AdminOp::Remove { node: victim } } }),
    ] {
        let body = serde_json::to_vec(&rpc).expect("json");
        let answer = net
            .call(to_id, to, &body, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())
            .and_then(|a| serde_json::from_slice::<Value>(&a).map_err(|e| e.to_string()));
        answers.push(answer);
    }
    net.close();
    answers
}
