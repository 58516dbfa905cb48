//! The registry's rules, one property per test.

use super::*;

fn node(id: u64, role: Role) -> NodeRecord {
    NodeRecord {
        id: NodeId::new(id),
        name: format!("n{id}"),
        role,
        raft_addr: "10.0.0.1:7947".into(),
        gossip_addr: "10.0.0.1:7946".into(),
        api_addr: "127.0.0.1:7948".into(),
        labels: BTreeMap::new(),
        status: NodeStatus::Active,
        joined_ms: 1000,
        key: Some(format!("key-{id}")),
    }
}

fn token(id: &str, role: Role, expires_ms: u64, max_uses: Option<u32>) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        secret_hash: "a".repeat(64),
        role,
        expires_ms,
        max_uses,
        uses: 0,
        revoked: false,
        created_ms: 0,
    }
}

fn use_token(id: &str, role: Role, at_ms: u64) -> Request {
    Request::UseToken {
        id: id.into(),
        secret_hash: "a".repeat(64),
        role,
        at_ms,
    }
}

#[test]
fn the_cluster_is_initialized_once() {
    let mut r = Registry::default();
    let info = ClusterInfo {
        id: "00000000000000ab".into(),
        name: "c".into(),
        created_ms: 1,
    };
    r.apply(&Request::InitCluster {
        cluster: info.clone(),
    })
    .expect("first");
    let again = r.apply(&Request::InitCluster {
        cluster: ClusterInfo {
            id: "00000000000000cd".into(),
            ..info
        },
    });
    assert_eq!(
        again,
        Err(Refusal::AlreadyInitialized {
            id: "00000000000000ab".into()
        })
    );
    assert_eq!(
        r.cluster.as_ref().map(|c| c.id.as_str()),
        Some("00000000000000ab")
    );
}

#[test]
fn refused_requests_change_nothing() {
    let mut r = Registry::default();
    r.apply(&Request::PutNode {
        node: node(1, Role::Storage),
    })
    .expect("put");
    let before = r.clone();
    for bad in [
        Request::PutNode {
            node: node(1, Role::Voter),
        },
        Request::PutNode {
            node: NodeRecord {
                raft_addr: "nowhere".into(),
                ..node(2, Role::Voter)
            },
        },
        Request::PutNode {
            node: node(0, Role::Voter),
        },
        Request::SetLabel {
            node: NodeId::new(1),
            key: "bad key".into(),
            value: "v".into(),
        },
        Request::SetLabel {
            node: NodeId::new(9),
            key: "k".into(),
            value: "v".into(),
        },
        Request::RemoveNode {
            node: NodeId::new(9),
        },
        Request::CreateToken {
            token: TokenRecord {
                secret_hash: "short".into(),
                ..token("00000000000000t1", Role::Voter, 10, None)
            },
        },
        Request::SetSettings {
            settings: Settings {
                voter_target: 4,
                ..Settings::default()
            },
        },
    ] {
        assert!(r.apply(&bad).is_err(), "{bad:?} accepted");
        assert_eq!(r, before, "{bad:?} changed the registry");
    }
}

#[test]
fn tokens_check_secret_expiry_uses_revocation_and_role_by_the_request_time() {
    let mut r = Registry::default();
    let id = "0123456789abcdef";
    r.apply(&Request::CreateToken {
        token: token(id, Role::Storage, 5_000, Some(2)),
    })
    .expect("create");
    let wrong = Request::UseToken {
        id: id.into(),
        secret_hash: "b".repeat(64),
        role: Role::Storage,
        at_ms: 1,
    };
    assert_eq!(r.apply(&wrong), Err(Refusal::WrongSecret));
    assert_eq!(
        r.apply(&use_token(id, Role::Voter, 1)),
        Err(Refusal::WrongRole {
            granted: Role::Storage,
            asked: Role::Voter
        })
    );
    assert_eq!(
        r.apply(&use_token(id, Role::Storage, 5_000)),
        Err(Refusal::Expired),
        "expiry is judged by at_ms"
    );
    r.apply(&use_token(id, Role::Storage, 1))
        .expect("first use");
    r.apply(&use_token(id, Role::Storage, 2))
        .expect("second use");
    assert_eq!(
        r.apply(&use_token(id, Role::Storage, 3)),
        Err(Refusal::UsedUp)
    );
    assert_eq!(r.tokens[id].uses, 2);
    let other = "fedcba9876543210";
    r.apply(&Request::CreateToken {
        token: token(other, Role::Voter, 9_000, None),
    })
    .expect("create");
    r.apply(&Request::RevokeToken { id: other.into() })
        .expect("revoke");
    assert_eq!(
        r.apply(&use_token(other, Role::Voter, 1)),
        Err(Refusal::Revoked)
    );
    assert_eq!(
        r.apply(&use_token("0000000000000000", Role::Voter, 1)),
        Err(Refusal::UnknownToken {
            id: "0000000000000000".into()
        })
    );
}

#[test]
fn apply_is_deterministic_and_survives_serialization() {
    let script = vec![
        Request::InitCluster {
            cluster: ClusterInfo {
                id: "00000000000000ab".into(),
                name: "c".into(),
                created_ms: 1,
            },
        },
        Request::PutNode {
            node: node(1, Role::Voter),
        },
        Request::PutNode {
            node: node(2, Role::Storage),
        },
        Request::SetLabel {
            node: NodeId::new(2),
            key: "zone".into(),
            value: "a".into(),
        },
        Request::CreateToken {
            token: token("0123456789abcdef", Role::Storage, 10, Some(1)),
        },
        use_token("0123456789abcdef", Role::Storage, 5),
        Request::MarkLeaving {
            node: NodeId::new(1),
        },
        Request::RemoveLabel {
            node: NodeId::new(2),
            key: "zone".into(),
        },
        Request::RemoveNode {
            node: NodeId::new(1),
        },
    ];
    let run = || {
        let mut r = Registry::default();
        let outcomes: Vec<Outcome> = script.iter().map(|q| r.apply(q)).collect();
        (r, outcomes)
    };
    let (a, oa) = run();
    let (b, ob) = run();
    assert_eq!((a.clone(), oa), (b, ob));
    let json = serde_json::to_string(&a).expect("serialize");
    assert_eq!(
        serde_json::from_str::<Registry>(&json).expect("deserialize"),
        a
    );
    for q in &script {
        let text = serde_json::to_string(q).expect("serialize request");
        assert_eq!(
            &serde_json::from_str::<Request>(&text).expect("deserialize request"),
            q
        );
    }
}

#[test]
fn a_re_put_node_keeps_its_join_time_and_becomes_active() {
    let mut r = Registry::default();
    r.apply(&Request::PutNode {
        node: node(1, Role::Voter),
    })
    .expect("put");
    r.apply(&Request::MarkLeaving {
        node: NodeId::new(1),
    })
    .expect("leaving");
    r.apply(&Request::PutNode {
        node: NodeRecord {
            joined_ms: 99_999,
            ..node(1, Role::Voter)
        },
    })
    .expect("re-put");
    assert_eq!(r.nodes[&NodeId::new(1)].joined_ms, 1000);
    assert_eq!(r.nodes[&NodeId::new(1)].status, NodeStatus::Active);
}

/// A removed identity goes on the removed list and may not be recorded again; the same node id
/// with a new key may; a record with another key than the registered one is refused.
#[test]
fn removal_denies_the_identity_not_the_number() {
    let mut r = Registry::default();
    r.apply(&Request::PutNode {
        node: node(1, Role::Voter),
    })
    .expect("put");
    let mut impostor = node(1, Role::Voter);
    impostor.key = Some("another".into());
    assert_eq!(
        r.check(&Request::PutNode { node: impostor }),
        Err(Refusal::AnotherKey { id: NodeId::new(1) })
    );
    r.apply(&Request::RemoveNode {
        node: NodeId::new(1),
    })
    .expect("remove");
    assert!(r.removed[&NodeId::new(1)].contains("key-1"));
    assert_eq!(
        r.check(&Request::PutNode {
            node: node(1, Role::Voter)
        }),
        Err(Refusal::Removed { id: NodeId::new(1) })
    );
    let mut fresh = node(1, Role::Voter);
    fresh.key = Some("fresh".into());
    r.apply(&Request::PutNode { node: fresh })
        .expect("a new identity");
    let mut legacy = node(2, Role::Storage);
    legacy.key = None;
    r.apply(&Request::PutNode { node: legacy }).expect("put");
    r.apply(&Request::RemoveNode {
        node: NodeId::new(2),
    })
    .expect("remove");
    assert!(
        r.removed[&NodeId::new(2)].contains(ANY_KEY),
        "no key: every key"
    );
}
