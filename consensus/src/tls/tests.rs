//! The PKI's rules: names, roles, lifetimes, keys, requests, pins and the deny list.

use std::collections::{BTreeMap, BTreeSet};

use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};

use super::verify::matches_pin;
use super::*;

const SPEC: CertSpec = CertSpec {
    role: Role::Voter,
    lifetime: Duration::from_secs(3600),
};

#[test]
fn node_certificates_name_their_node_and_chain_to_the_ca() {
    let (ca, ca_key) = new_ca("00000000000000ab").expect("ca");
    let (cert, key) = issue_node_cert(&ca, &ca_key, NodeId::new(0x1234), &SPEC).expect("issue");
    let der = certs(&cert).expect("pem").remove(0);
    assert_eq!(node_id_of_cert(&der), Some(NodeId::new(0x1234)));
    check_node_cert(&cert, &key, NodeId::new(0x1234)).expect("names its node");
    assert!(check_node_cert(&cert, &key, NodeId::new(0x9)).is_err());
    let id = Identity {
        ca_pem: ca.clone(),
        cert_pem: cert,
        key_pem: key,
    };
    id.server_config(&DenyList::default())
        .expect("server config");
    id.client_config().expect("client config");
    let fp = ca_fingerprint(&ca).expect("fingerprint");
    assert_eq!(fp.len(), 64);
    let (other_ca, _) = new_ca("00000000000000cd").expect("ca");
    assert_ne!(ca_fingerprint(&other_ca).expect("fp"), fp);
}

#[test]
fn a_signed_request_gets_quorates_fields_not_the_requesters() {
    let (ca, ca_key) = new_ca("00000000000000ab").expect("ca");
    // A request asking for node 7's name (and whatever else) is signed for node 8 only.
    let (request, key) = node_request(NodeId::new(7)).expect("request");
    let cert = sign_node_request(&ca, &ca_key, &request, NodeId::new(8), &SPEC).expect("sign");
    check_node_cert(&cert, &key, NodeId::new(8)).expect("names node 8");
    assert!(sign_node_request(&ca, &ca_key, "not a request", NodeId::new(8), &SPEC).is_err());
}

/// A certificate states the role and lifetime it was signed with, and the key of the
/// request: a renewal from the same key keeps the fingerprint, another key does not.
#[test]
fn a_certificate_states_role_lifetime_and_key() {
    let (ca, ca_key) = new_ca("00000000000000ab").expect("ca");
    let key = new_node_key().expect("key");
    let spec = CertSpec {
        role: Role::Storage,
        lifetime: Duration::from_secs(120),
    };
    let request = node_request_with(NodeId::new(5), &key).expect("request");
    let cert = sign_node_request(&ca, &ca_key, &request, NodeId::new(5), &spec).expect("sign");
    let facts = cert_facts_pem(&cert).expect("facts");
    assert_eq!(facts.id, NodeId::new(5));
    assert_eq!(facts.role, Some(Role::Storage));
    assert_eq!(facts.key, own_key_fingerprint(&key).expect("fp"));
    assert_eq!(facts.key, request_key_fingerprint(&request).expect("fp"));
    let life = facts
        .not_after
        .duration_since(facts.not_before)
        .expect("ordered");
    assert_eq!(life, spec.lifetime + CLOCK_SKEW);
    let (other, _) = node_request(NodeId::new(5)).expect("request");
    assert_ne!(request_key_fingerprint(&other).expect("fp"), facts.key);
}

/// The deny list names identities: the removed key of a node, or every key (`*`).
#[test]
fn the_deny_list_names_identities() {
    let deny = DenyList::default();
    let a = NodeId::new(1);
    let b = NodeId::new(2);
    let newly = deny.set(BTreeMap::from([
        (a, BTreeSet::from(["k1".to_string()])),
        (b, BTreeSet::from([super::ANY_KEY.to_string()])),
    ]));
    assert_eq!(newly, vec![a, b]);
    assert!(deny.denies(a, "k1"));
    assert!(!deny.denies(a, "k2"), "the same node with a new identity");
    assert!(deny.denies(b, "anything"));
    assert!(!deny.denies(NodeId::new(3), "k1"));
    assert!(
        deny.set(BTreeMap::from([(a, BTreeSet::from(["k1".to_string()]))]))
            .is_empty(),
        "nothing new"
    );
}

#[test]
fn node_names_round_trip() {
    assert_eq!(
        node_id_from_name(&node_name(NodeId::new(42))),
        Some(NodeId::new(42))
    );
    assert_eq!(node_id_from_name("n0000.node.quorate"), None);
    assert_eq!(node_id_from_name("example.com"), None);
}

#[test]
fn pins_match_whole_fingerprints_and_long_prefixes_only() {
    let fp = "ab".repeat(32);
    assert!(matches_pin(&fp, &fp));
    assert!(matches_pin(&fp, &fp[..16]));
    assert!(matches_pin(&fp, &fp.to_ascii_uppercase()));
    assert!(!matches_pin(&fp, &fp[..8]), "a short prefix pins nothing");
    assert!(!matches_pin(&fp, &"cd".repeat(32)));
}

/// A joiner that trusts a node (zero-configuration formation asking the forming node
/// directly) takes whatever CA the server presents, but only from a certificate that names
/// that node; first use takes any node, a pin any node of the pinned CA.
#[test]
fn a_joiner_trusting_a_node_accepts_that_node_only() {
    let (ca, ca_key) = new_ca("00000000000000ab").expect("ca");
    let (cert, _) = issue_node_cert(&ca, &ca_key, NodeId::new(0x1234), &SPEC).expect("issue");
    let leaf = certs(&cert).expect("pem").remove(0);
    let chain = certs(&ca).expect("pem");
    let name = ServerName::try_from(node_name(NodeId::new(0x1234))).expect("name");
    let verify = |trust: Trust| {
        JoinVerifier::new(trust).verify_server_cert(&leaf, &chain, &name, &[], UnixTime::now())
    };
    verify(Trust::Node(NodeId::new(0x1234))).expect("the expected node");
    let other = verify(Trust::Node(NodeId::new(0x99))).expect_err("another node");
    assert!(other.to_string().contains(OTHER_NODE), "{other}");
    verify(Trust::FirstUse).expect("first use takes any node");
    let pin = ca_fingerprint(&ca).expect("fingerprint");
    verify(Trust::Pinned(pin[..16].to_string())).expect("the pinned CA");
    let (other_ca, _) = new_ca("00000000000000cd").expect("ca");
    let foreign = verify(Trust::Pinned(ca_fingerprint(&other_ca).expect("fp")))
        .expect_err("another CA's pin");
    assert!(foreign.to_string().contains(FOREIGN_CA), "{foreign}");
}

/// A joiner accepts only a server whose certificate states the voter role: a storage node of
/// the same CA, whatever the joiner trusts, is refused at the handshake.
#[test]
fn a_joiner_accepts_voters_only() {
    let (ca, ca_key) = new_ca("00000000000000ab").expect("ca");
    let storage = CertSpec {
        role: Role::Storage,
        ..SPEC
    };
    let (cert, _) = issue_node_cert(&ca, &ca_key, NodeId::new(0x1234), &storage).expect("issue");
    let leaf = certs(&cert).expect("pem").remove(0);
    let chain = certs(&ca).expect("pem");
    let name = ServerName::try_from(node_name(NodeId::new(0x1234))).expect("name");
    let pin = ca_fingerprint(&ca).expect("fingerprint");
    for trust in [
        Trust::FirstUse,
        Trust::Pinned(pin),
        Trust::Node(NodeId::new(0x1234)),
    ] {
        let e = JoinVerifier::new(trust.clone())
            .verify_server_cert(&leaf, &chain, &name, &[], UnixTime::now())
            .expect_err("a storage node");
        assert!(e.to_string().contains(NOT_A_VOTER), "{trust:?}: {e}");
    }
}
