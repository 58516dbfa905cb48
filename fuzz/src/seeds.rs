//! Writes the seed corpora, `fuzz/corpus/<target>/seed-*`, from valid values made by the
//! crates' own encoders, so that the fuzzer starts from what the wire really carries:
//! `cargo +nightly fuzz build -O`, then `fuzz/target/x86_64-unknown-linux-gnu/release/seeds`.
//!
//! Every seed is checked against its target's property before it is written.

#[allow(dead_code)]
#[path = "../../tests/fuzz/props.rs"]
mod props;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{
    CommittedLeaderId, Entry, EntryPayload, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use quorate::token::{JoinToken, Mint, mint};
use quorate_consensus::{
    AdminOp, JoinRequest, NodeInfo, NodeRecord, NodeStatus, Request, Role, TokenProof, TypeConfig,
};
use quorate_discovery::{Advert, AdvertState, NodeId};
use rand::SeedableRng as _;
use serde_json::json;
use simple_dns::rdata::{A, AAAA, PTR, RData, SRV, TXT};
use simple_dns::{CLASS, Name, Packet, ResourceRecord};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    txt_decode(&root.join("txt_decode"));
    dns_assembler(&root.join("dns_assembler"));
    join_token(&root.join("join_token"));
    gossip_envelope(&root.join("gossip_envelope"));
    quic_request(&root.join("quic_request"));
}

fn write(dir: &Path, seeds: &[Vec<u8>], check: fn(&[u8])) {
    std::fs::create_dir_all(dir).expect("corpus dir");
    for (i, s) in seeds.iter().enumerate() {
        check(s);
        let path: PathBuf = dir.join(format!("seed-{i:02}"));
        std::fs::write(&path, s).expect("write seed");
    }
    println!("{}: {} seeds", dir.display(), seeds.len());
}

fn adverts() -> Vec<Advert> {
    let plain = Advert {
        id: "00abcdef01234567".parse().expect("id"),
        cluster: "default".into(),
        role: quorate_discovery::Role::Voter,
        gossip_port: 7946,
        api_port: 7948,
        state: AdvertState::Forming,
        ca: None,
        version: "0.1.0".into(),
    };
    let member = Advert {
        role: quorate_discovery::Role::Storage,
        state: AdvertState::Member,
        ca: Some("0123456789abcdef".into()),
        ..plain.clone()
    };
    let largest = Advert {
        id: "ffffffffffffffff".parse().expect("id"),
        cluster: "c".repeat(32),
        gossip_port: 65535,
        api_port: 65535,
        ca: Some("f".repeat(32)),
        version: "v".repeat(32),
        ..member.clone()
    };
    vec![plain, member, largest]
}

/// TXT wire form: a length byte and `key=value` per pair.
fn txt_wire(pairs: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        let s = format!("{k}={v}");
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
    out
}

fn txt_decode(dir: &Path) {
    let mut seeds: Vec<Vec<u8>> = adverts()
        .iter()
        .map(|a| txt_wire(&a.encode().expect("encode")))
        .collect();
    // A foreign record (another product's) and one with a bare key.
    seeds.push(b"\x05path=\x05model\x06note=x".to_vec());
    write(dir, &seeds, props::txt_decode);
}

fn response(instance: &str, advert: &Advert, full: bool, ttl: u32) -> Vec<u8> {
    let mut p = Packet::new_reply(0);
    let ty = Name::new_unchecked("_cluster._tcp.local");
    let inst = Name::new_unchecked(instance);
    let host = Name::new_unchecked("q-0000000000000001.local");
    p.answers.push(ResourceRecord::new(
        ty,
        CLASS::IN,
        ttl,
        RData::PTR(PTR(inst.clone())),
    ));
    if full {
        p.additional_records.push(ResourceRecord::new(
            inst.clone(),
            CLASS::IN,
            ttl,
            RData::SRV(SRV {
                priority: 0,
                weight: 0,
                port: 7947,
                target: host.clone(),
            }),
        ));
        let strings: Vec<String> = advert
            .encode()
            .expect("encode")
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let mut txt = TXT::new();
        for s in &strings {
            txt = txt.with_string(s).expect("txt");
        }
        p.additional_records.push(ResourceRecord::new(
            inst,
            CLASS::IN,
            ttl,
            RData::TXT(txt.into_owned()),
        ));
        p.additional_records.push(ResourceRecord::new(
            host.clone(),
            CLASS::IN,
            ttl,
            RData::A(A {
                address: u32::from(Ipv4Addr::new(10, 0, 0, 1)),
            }),
        ));
        p.additional_records.push(ResourceRecord::new(
            host,
            CLASS::IN,
            ttl,
            RData::AAAA(AAAA {
                address: u128::from(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            }),
        ));
    }
    p.build_bytes_vec_compressed().expect("build")
}

/// Packets as the target reads them: a big-endian `u16` length before each.
fn framed(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn dns_assembler(dir: &Path) {
    let [plain, member, _] = <[Advert; 3]>::try_from(adverts()).expect("three");
    let inst = "n1._cluster._tcp.local";
    let zeroconf = include_bytes!("../../discovery/src/zeroconf_response.bin").to_vec();
    let seeds = vec![
        framed(&[response(inst, &plain, true, 120)]),
        framed(&[response(inst, &plain, false, 120)]),
        framed(&[
            response(inst, &plain, false, 120),
            response(inst, &member, true, 120),
        ]),
        framed(&[
            response(inst, &plain, true, 120),
            response(inst, &plain, false, 0),
        ]),
        framed(&[zeroconf]),
    ];
    write(dir, &seeds, props::dns_assembler);
}

fn join_token(dir: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let ca = "ab".repeat(32);
    let minted = |role, voters: Vec<SocketAddr>, rng: &mut rand::rngs::StdRng| {
        let m = Mint {
            ca_fingerprint: &ca,
            role,
            ttl: Duration::from_secs(3600),
            uses: Some(1),
            voters,
        };
        mint(m, 1_800_000_000_000, rng).expect("mint").token
    };
    let v4: SocketAddr = "10.0.0.11:7947".parse().expect("addr");
    let v6: SocketAddr = "[fd00::1]:7947".parse().expect("addr");
    let tokens: Vec<JoinToken> = vec![
        minted(quorate_base::Role::Voter, vec![v4], &mut rng),
        minted(quorate_base::Role::Storage, vec![v4, v6], &mut rng),
        minted(quorate_base::Role::Voter, vec![], &mut rng),
        minted(quorate_base::Role::Voter, vec![v6; 7], &mut rng),
    ];
    let mut seeds: Vec<Vec<u8>> = tokens.iter().map(|t| t.encode().into_bytes()).collect();
    seeds.push(format!("  {}\n", tokens[0].encode()).into_bytes());
    write(dir, &seeds, props::join_token);
}

fn gossip_envelope(dir: &Path) {
    let ring = props::keyring();
    let mut seeds = Vec::new();
    // Mode 0: real sealed datagrams, under the primary key and under the second key.
    let sealed = ring
        .seal(
            [7; 24],
            "0000000000000001",
            1_700_000_000_000,
            1,
            b"chitchat",
        )
        .expect("seal");
    seeds.push([&[0u8][..], &sealed].concat());
    let second = quorate_gossip::Keyring::new(vec![quorate_gossip::Key::from_bytes([2; 32])]);
    let sealed = second
        .seal([8; 24], "0000000000000002", 5, 9, &[0u8; 300])
        .expect("seal");
    seeds.push([&[0u8][..], &sealed].concat());
    // Mode 1: what to seal.
    let mut m1 = vec![1u8];
    m1.extend_from_slice(&[9; 24]);
    m1.extend_from_slice(&42u64.to_be_bytes());
    m1.extend_from_slice(&7u64.to_be_bytes());
    m1.push(16);
    m1.extend_from_slice(b"00000000000000a1hello gossip");
    seeds.push(m1);
    // Mode 2: a well-formed plaintext sealed under the primary key.
    let mut m2 = vec![2u8];
    m2.extend_from_slice(&[5; 24]);
    m2.push(2);
    m2.extend_from_slice(b"n1");
    m2.extend_from_slice(&1u64.to_be_bytes());
    m2.extend_from_slice(&1u64.to_be_bytes());
    m2.extend_from_slice(b"message");
    seeds.push(m2);
    write(dir, &seeds, props::gossip_envelope);
}

fn log_id(term: u64, index: u64) -> LogId<NodeId> {
    LogId::new(CommittedLeaderId::new(term, NodeId::new(1)), index)
}

fn quic_request(dir: &Path) {
    let n = NodeId::new;
    let vote = VoteRequest {
        vote: Vote::new(3, n(2)),
        last_log_id: Some(log_id(2, 17)),
    };
    let membership = Membership::<NodeId, openraft::BasicNode>::new(
        vec![BTreeSet::from([n(1), n(2), n(3)])],
        BTreeMap::from([(n(4), openraft::BasicNode::new("10.0.0.4:7947"))]),
    );
    let record = NodeRecord {
        id: n(4),
        name: "node-4".into(),
        role: Role::Storage,
        raft_addr: "10.0.0.4:7947".into(),
        gossip_addr: "10.0.0.4:7946".into(),
        api_addr: "10.0.0.4:7948".into(),
        labels: BTreeMap::from([("rack".into(), "r1".into())]),
        status: NodeStatus::Active,
        joined_ms: 1_700_000_000_000,
        key: Some("ab".repeat(32)),
    };
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, n(1)),
        prev_log_id: Some(log_id(3, 20)),
        entries: vec![
            Entry {
                log_id: log_id(3, 21),
                payload: EntryPayload::Normal(Request::PutNode {
                    node: record.clone(),
                }),
            },
            Entry {
                log_id: log_id(3, 22),
                payload: EntryPayload::Membership(membership.clone()),
            },
            Entry {
                log_id: log_id(3, 23),
                payload: EntryPayload::Blank,
            },
        ],
        leader_commit: Some(log_id(3, 20)),
    };
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(3, n(1)),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(3, 1000)),
            last_membership: StoredMembership::new(Some(log_id(3, 22)), membership),
            snapshot_id: "3-1-1000-0".into(),
        },
        offset: 0,
        data: b"{\"nodes\":{}}".to_vec(),
        done: true,
    };
    let join = JoinRequest {
        node_id: n(0x00ab_cdef_0123_4567),
        raft_addr: "10.0.0.9:7947".into(),
        node: NodeInfo {
            name: "node-9".into(),
            role: Role::Voter,
            gossip_addr: "10.0.0.9:7946".into(),
            api_addr: "10.0.0.9:7948".into(),
            labels: BTreeMap::new(),
        },
        csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
            .into(),
        token: Some(TokenProof {
            id: "00000000000000a1".into(),
            proof: "ab".repeat(64),
        }),
        cluster_name: "default".into(),
        key_proof: Some("00".repeat(32)),
        ca_fingerprint: "cd".repeat(32),
        nonce: "ef".repeat(16),
        at_ms: 1_700_000_000_000,
        seal_to: "12".repeat(32),
    };
    let write_label = Request::SetLabel {
        node: n(4),
        key: "zone".into(),
        value: "a".into(),
    };
    let use_token = Request::UseToken {
        id: "00000000000000a1".into(),
        secret_hash: String::new(),
        proof_key: Some("cd".repeat(32)),
        role: Role::Voter,
        at_ms: 1_700_000_000_000,
    };
    let values = [
        json!({ "vote": { "req": vote } }),
        json!({ "append_entries": { "req": append } }),
        json!({ "install_snapshot": { "req": snapshot } }),
        json!({ "join": { "join": join } }),
        json!({ "write": { "req": write_label } }),
        json!({ "write": { "req": use_token } }),
        json!({ "admin": { "op": AdminOp::StepDown { to: Some(n(2)) } } }),
        json!({ "admin": { "op": AdminOp::Remove { node: n(4) } } }),
        json!("read"),
        json!("elect"),
    ];
    let seeds: Vec<Vec<u8>> = values
        .iter()
        .map(|v| {
            let bytes = serde_json::to_vec(v).expect("json");
            quorate_consensus::decode_request(&bytes)
                .unwrap_or_else(|e| panic!("{v} is not a request the server reads: {e}"));
            bytes
        })
        .collect();
    write(dir, &seeds, props::quic_request);
}
