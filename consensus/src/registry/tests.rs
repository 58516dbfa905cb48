//! The registry's rules, one property per test.

use super::*;

/// An active node record with addresses and a key, for tests here and of the events.
pub(crate) fn node(id: u64, role: Role) -> NodeRecord {
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
        proof_key: None,
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
        proof_key: None,
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
                proof_key: None,
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

/// A use written by a leader that checked the joiner's proof names the token's proof key; a
/// use naming another key, or a token made without one, is refused. Uses from before proofs
/// (a secret hash) still apply as they did.
#[test]
fn a_token_use_names_the_proof_key_it_was_checked_with() {
    let mut r = Registry::default();
    let id = "0123456789abcdef";
    let mut t = token(id, Role::Storage, 5_000, None);
    t.proof_key = Some("c".repeat(64));
    r.apply(&Request::CreateToken { token: t }).expect("create");
    let use_with = |key: Option<String>| Request::UseToken {
        id: id.into(),
        secret_hash: String::new(),
        proof_key: key,
        role: Role::Storage,
        at_ms: 1,
    };
    assert_eq!(
        r.apply(&use_with(Some("d".repeat(64)))),
        Err(Refusal::WrongSecret)
    );
    assert_eq!(r.apply(&use_with(None)), Err(Refusal::WrongSecret));
    r.apply(&use_with(Some("c".repeat(64)))).expect("used");
    assert_eq!(r.tokens[id].uses, 1);
    let legacy = "0123456789abcde0";
    r.apply(&Request::CreateToken {
        token: token(legacy, Role::Storage, 5_000, None),
    })
    .expect("create");
    assert_eq!(
        r.apply(&Request::UseToken {
            id: legacy.into(),
            secret_hash: String::new(),
            proof_key: Some("c".repeat(64)),
            role: Role::Storage,
            at_ms: 1,
        }),
        Err(Refusal::WrongSecret),
        "a token without a proof key admits no proof"
    );
    r.apply(&use_token(legacy, Role::Storage, 1))
        .expect("a use from before proofs applies as before");
    let mut bad = token("0123456789abcde1", Role::Storage, 5_000, None);
    bad.proof_key = Some("short".into());
    assert!(r.apply(&Request::CreateToken { token: bad }).is_err());
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
        proof_key: None,
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

fn cluster(id: &str) -> ClusterInfo {
    ClusterInfo {
        id: id.into(),
        name: "c".into(),
        created_ms: 1,
    }
}

/// A registry of cluster `id` with nodes 1 (labels `zone=a`) and 2, a valid token `t1`
/// and settings of 5 voters.
fn backed_up(id: &str) -> Registry {
    let mut r = Registry::default();
    r.apply(&Request::InitCluster {
        cluster: cluster(id),
    })
    .expect("init");
    for n in [node(1, Role::Voter), node(2, Role::Storage)] {
        r.apply(&Request::PutNode { node: n }).expect("put");
    }
    r.apply(&Request::SetLabel {
        node: NodeId::new(1),
        key: "zone".into(),
        value: "a".into(),
    })
    .expect("label");
    r.apply(&Request::CreateToken {
        token: token(&"1".repeat(16), Role::Voter, 10_000, Some(3)),
    })
    .expect("token");
    r.apply(&Request::SetSettings {
        settings: Settings {
            voter_target: 5,
            failed_grace_ms: 5_000,
        },
    })
    .expect("settings");
    r
}

/// A restore brings back the settings, the tokens and the labels of the nodes recorded now;
/// it never adds a node (a node of the snapshot that is not recorded now is skipped and
/// reported) and keeps the nodes the snapshot lacks; the cluster identity stays; the plan
/// says exactly what apply changed.
#[test]
fn a_restore_brings_back_settings_tokens_and_labels_of_members_only() {
    let snap = backed_up("00000000000000ab");
    let mut now = snap.clone();
    now.apply(&Request::SetLabel {
        node: NodeId::new(1),
        key: "zone".into(),
        value: "b".into(),
    })
    .expect("relabel");
    now.apply(&Request::RemoveNode {
        node: NodeId::new(2),
    })
    .expect("remove 2");
    now.apply(&Request::PutNode {
        node: node(3, Role::Voter),
    })
    .expect("put 3");
    now.apply(&Request::SetSettings {
        settings: Settings::default(),
    })
    .expect("settings");
    now.apply(&Request::CreateToken {
        token: token(&"2".repeat(16), Role::Storage, 10_000, None),
    })
    .expect("newer token");

    let plan = now.restore_plan(&snap);
    assert_eq!(plan.labels_restored, BTreeSet::from([NodeId::new(1)]));
    assert_eq!(plan.nodes_skipped, BTreeSet::from([NodeId::new(2)]));
    assert_eq!(plan.nodes_kept, BTreeSet::from([NodeId::new(3)]));
    assert_eq!(plan.tokens_restored, 1);
    assert_eq!(plan.tokens_dropped, BTreeSet::from(["2".repeat(16)]));
    assert_eq!(plan.settings.voter_target, 5);

    let before = now.clone();
    now.apply(&Request::Restore {
        snapshot: Carried(Box::new(snap.clone())),
        force: false,
    })
    .expect("restore");
    assert_eq!(now.cluster, before.cluster, "the identity stays");
    assert_eq!(
        now.nodes.keys().collect::<Vec<_>>(),
        before.nodes.keys().collect::<Vec<_>>(),
        "no node added or removed"
    );
    assert_eq!(now.nodes[&NodeId::new(1)].labels["zone"], "a");
    assert_eq!(now.nodes[&NodeId::new(3)], before.nodes[&NodeId::new(3)]);
    assert_eq!(now.settings, snap.settings);
    assert_eq!(now.tokens, snap.tokens);
    assert!(
        now.removed.contains_key(&NodeId::new(2)),
        "a removal made after the snapshot stays"
    );
}

/// The snapshot of another cluster (or of none) is refused and changes nothing, unless
/// forced; a forced restore still keeps this cluster's identity.
#[test]
fn a_restore_of_another_cluster_needs_force() {
    let snap = backed_up("00000000000000cd");
    let mut now = backed_up("00000000000000ab");
    let before = now.clone();
    let refused = now.apply(&Request::Restore {
        snapshot: Carried(Box::new(snap.clone())),
        force: false,
    });
    assert_eq!(
        refused,
        Err(Refusal::OtherCluster {
            snapshot: "00000000000000cd".into(),
            running: "00000000000000ab".into(),
        })
    );
    assert_eq!(now, before, "a refusal changes nothing");
    let empty = now.apply(&Request::Restore {
        snapshot: Carried::default(),
        force: false,
    });
    assert!(
        matches!(empty, Err(Refusal::OtherCluster { .. })),
        "{empty:?}"
    );
    now.apply(&Request::Restore {
        snapshot: Carried(Box::new(snap)),
        force: true,
    })
    .expect("forced");
    assert_eq!(now.cluster, before.cluster);
}

/// A restore never revives a token: one revoked (or used more) since the snapshot stays so;
/// a removal in the snapshot that names a member's current key is skipped, others are added;
/// invalid settings are refused.
#[test]
fn a_restore_revives_no_token_and_cuts_off_no_member() {
    let id = "1".repeat(16);
    let mut snap = backed_up("00000000000000ab");
    snap.removed
        .insert(NodeId::new(1), BTreeSet::from(["key-1".to_string()]));
    snap.removed
        .insert(NodeId::new(9), BTreeSet::from(["key-9".to_string()]));
    let mut now = backed_up("00000000000000ab");
    now.apply(&use_token(&id, Role::Voter, 5)).expect("use");
    now.apply(&Request::RevokeToken { id: id.clone() })
        .expect("revoke");
    let plan = now.restore_plan(&snap);
    assert_eq!(plan.tokens_kept_revoked, BTreeSet::from([id.clone()]));
    assert_eq!(plan.removals_skipped, BTreeSet::from([NodeId::new(1)]));
    assert_eq!(plan.removals_added, 1);
    now.apply(&Request::Restore {
        snapshot: Carried(Box::new(snap.clone())),
        force: false,
    })
    .expect("restore");
    assert!(now.tokens[&id].revoked);
    assert_eq!(now.tokens[&id].uses, 1);
    assert!(!now.removed.contains_key(&NodeId::new(1)), "member kept");
    assert!(now.removed[&NodeId::new(9)].contains("key-9"));

    snap.settings.voter_target = 4;
    let before = now.clone();
    assert!(
        now.apply(&Request::Restore {
            snapshot: Carried(Box::new(snap)),
            force: false,
        })
        .is_err()
    );
    assert_eq!(now, before);
}

/// A restore request survives the log's JSON (and the wire's) with its registry intact,
/// maps keyed by node id included, and applies the same after the round trip.
#[test]
fn a_restore_request_survives_serialization() {
    let mut snap = backed_up("00000000000000ab");
    snap.removed
        .insert(NodeId::new(9), BTreeSet::from(["key-9".to_string()]));
    let req = Request::Restore {
        snapshot: Carried(Box::new(snap.clone())),
        force: false,
    };
    let bytes = serde_json::to_vec(&req).expect("serialize");
    let back: Request = serde_json::from_slice(&bytes).expect("deserialize");
    assert_eq!(back, req);
    let (mut a, mut b) = (snap.clone(), snap);
    a.apply(&req).expect("apply");
    b.apply(&back).expect("apply after the round trip");
    assert_eq!(a, b);
}

/// A CA rotation: the next CA must be one certificate; the switch must name the rotation
/// under way, and makes its CA the only one; neither touches anything else.
#[test]
fn a_ca_rotation_records_the_next_ca_then_switches_to_it() {
    let (next, _) = crate::tls::next_ca("00000000000000c1").expect("ca");
    let fp = crate::tls::ca_fingerprint(&next).expect("fp");
    let mut r = Registry::default();
    r.nodes.insert(NodeId::new(1), node(1, Role::Voter));
    let before = r.clone();
    let switch = |fingerprint: &str| Request::SwitchCa {
        fingerprint: fingerprint.into(),
    };
    assert!(
        matches!(r.apply(&switch(&fp)), Err(Refusal::Invalid { .. })),
        "no rotation yet"
    );
    for bad in ["not pem".to_string(), format!("{next}{next}")] {
        assert!(
            matches!(
                r.apply(&Request::RotateCa { cert_pem: bad }),
                Err(Refusal::Invalid { .. })
            ),
            "refused"
        );
    }
    assert_eq!(r, before, "refusals change nothing");
    r.apply(&Request::RotateCa {
        cert_pem: next.clone(),
    })
    .expect("rotate");
    assert_eq!(
        (r.ca.as_deref(), r.ca_next.as_deref()),
        (None, Some(next.as_str()))
    );
    assert!(matches!(
        r.apply(&switch(&"0".repeat(64))),
        Err(Refusal::Invalid { .. })
    ));
    r.apply(&switch(&fp)).expect("switch");
    assert_eq!(
        (r.ca.as_deref(), r.ca_next.as_deref()),
        (Some(next.as_str()), None)
    );
    assert_eq!(r.nodes, before.nodes);
}

/// Property tests over random request sequences drawn from a small world (a few node ids,
/// keys, labels and tokens, valid and invalid values), so that requests meet each other.
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn id() -> impl Strategy<Value = NodeId> {
        (0u64..6).prop_map(NodeId::new)
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::Voter), Just(Role::Storage)]
    }

    fn token_id() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("00000000000000a1".to_string()),
            Just("00000000000000a2".to_string()),
            Just("not-hex".to_string()),
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        let put = (
            id(),
            role(),
            prop_oneof![Just(None), Just(Some("k1")), Just(Some("k2"))],
            prop_oneof![Just("10.0.0.1:7947"), Just("nowhere")],
        )
            .prop_map(|(id, role, key, addr)| Request::PutNode {
                node: NodeRecord {
                    key: key.map(str::to_string),
                    raft_addr: addr.to_string(),
                    ..node(id.get(), role)
                },
            });
        let label = (
            id(),
            prop_oneof![Just("zone"), Just("rack"), Just(""), Just("bad key")],
            prop_oneof![Just("a"), Just("b")],
        )
            .prop_map(|(node, key, value)| Request::SetLabel {
                node,
                key: key.into(),
                value: value.into(),
            });
        let create = (
            token_id(),
            role(),
            prop_oneof![Just(None), Just(Some(0)), Just(Some(2))],
        )
            .prop_map(|(id, role, uses)| Request::CreateToken {
                token: token(&id, role, 1_000, uses),
            });
        let use_it =
            (token_id(), role(), 0u64..2_000).prop_map(|(id, role, at)| use_token(&id, role, at));
        prop_oneof![
            put,
            label,
            (id(), prop_oneof![Just("zone"), Just("rack")]).prop_map(|(node, key)| {
                Request::RemoveLabel {
                    node,
                    key: key.into(),
                }
            }),
            id().prop_map(|node| Request::MarkLeaving { node }),
            id().prop_map(|node| Request::RemoveNode { node }),
            create,
            use_it,
            token_id().prop_map(|id| Request::RevokeToken { id }),
            (0u8..8).prop_map(|voter_target| Request::SetSettings {
                settings: Settings {
                    voter_target,
                    ..Settings::default()
                },
            }),
            prop_oneof![Just("00000000000000ab"), Just("xyz")].prop_map(|id| {
                Request::InitCluster {
                    cluster: ClusterInfo {
                        id: id.into(),
                        name: "c".into(),
                        created_ms: 1,
                    },
                }
            }),
            Just(Request::Noop),
        ]
    }

    fn run(log: &[Request]) -> (Registry, Vec<Outcome>) {
        let mut r = Registry::default();
        let outcomes = log.iter().map(|req| r.apply(req)).collect();
        (r, outcomes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A refused request changes nothing; one that passes its check is applied.
        #[test]
        fn a_refused_request_changes_nothing(log in proptest::collection::vec(request(), 1..40)) {
            let mut r = Registry::default();
            for req in &log {
                let before = r.clone();
                let checked = r.check(req);
                let applied = r.apply(req);
                prop_assert_eq!(&checked, &applied);
                if applied.is_err() {
                    prop_assert_eq!(&r, &before, "refused {:?} changed the registry", req);
                }
            }
        }

        /// Replaying a log gives the same registry and the same outcomes (what every member
        /// applying the same entries relies on), and the registry survives its own encoding.
        #[test]
        fn replaying_a_log_gives_the_same_state(log in proptest::collection::vec(request(), 1..40)) {
            let (first, outcomes) = run(&log);
            let (again, outcomes_again) = run(&log);
            prop_assert_eq!(&first, &again);
            prop_assert_eq!(outcomes, outcomes_again);
            let text = serde_json::to_string(&first).expect("json");
            let read: Registry = serde_json::from_str(&text).expect("json");
            prop_assert_eq!(read, first);
        }
    }
}
