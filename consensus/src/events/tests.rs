//! The events' properties: the index form, the JSON shape, one derivation per kind, and the
//! hub's replay without gap or repeat.

use std::time::Duration;

use openraft::{CommittedLeaderId, LogId};

use super::*;
use crate::registry::TokenRecord;
use crate::registry::tests::node;

fn id(n: u64) -> NodeId {
    NodeId::new(n)
}

fn token(tid: &str) -> TokenRecord {
    TokenRecord {
        id: tid.into(),
        secret_hash: "a".repeat(64),
        proof_key: None,
        role: Role::Storage,
        expires_ms: 10_000,
        max_uses: None,
        uses: 0,
        revoked: false,
        created_ms: 0,
    }
}

/// Applies `req` to `r` and returns the events derived from it.
fn step(r: &mut Registry, req: Request) -> Vec<EventKind> {
    let before = r.clone();
    if r.apply(&req).is_err() {
        return Vec::new();
    }
    derive(&before, &req, r)
}

fn with_node(n: u64) -> Registry {
    let mut r = Registry::default();
    r.apply(&Request::PutNode {
        node: node(n, Role::Voter),
    })
    .expect("put");
    r
}

const TID: &str = "00000000000000aa";

#[test]
fn an_index_reads_and_writes_both_forms_and_orders_lexicographically() {
    let a: EventIndex = "12".parse().expect("N");
    let b: EventIndex = "12.3".parse().expect("N.k");
    assert_eq!(a, EventIndex::decided(12));
    assert_eq!(
        b,
        EventIndex {
            decided: 12,
            local: 3
        }
    );
    assert_eq!((a.to_string(), b.to_string()), ("12".into(), "12.3".into()));
    assert!(a < b && b < EventIndex::decided(13));
    assert!(
        EventIndex {
            decided: 2,
            local: 9
        } < EventIndex::decided(10)
    );
    for bad in [
        "",
        "x",
        "1.",
        ".1",
        "1.2.3",
        "-1",
        "1 ",
        "99999999999999999999",
    ] {
        assert!(bad.parse::<EventIndex>().is_err(), "{bad:?} parsed");
    }
}

#[test]
fn an_event_is_json_tagged_by_type_with_hex_ids() {
    let e = Event {
        index: EventIndex {
            decided: 4,
            local: 1,
        },
        kind: EventKind::Failed { node: id(0xab) },
        observed_ms: 7,
    };
    let v = serde_json::to_value(&e).expect("json");
    assert_eq!(
        v,
        serde_json::json!({"index": "4.1", "type": "failed", "node": "00000000000000ab", "observed_ms": 7})
    );
    let back: Event = serde_json::from_value(v).expect("read back");
    assert_eq!(back, e);
    let joined = EventKind::Joined {
        node: id(1),
        name: "a".into(),
        role: Role::Storage,
    };
    let v = serde_json::to_value(&joined).expect("json");
    assert_eq!(v["type"], "joined");
    assert_eq!(v["role"], "storage");
    assert_eq!(joined.type_name(), "joined");
    for t in EventKind::TYPES {
        assert!(t.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
    }
}

#[test]
fn put_node_of_a_new_id_is_joined_and_of_a_known_one_is_not() {
    let mut r = Registry::default();
    assert_eq!(
        step(
            &mut r,
            Request::PutNode {
                node: node(1, Role::Storage)
            }
        ),
        vec![EventKind::Joined {
            node: id(1),
            name: "n1".into(),
            role: Role::Storage
        }]
    );
    assert_eq!(
        step(
            &mut r,
            Request::PutNode {
                node: node(1, Role::Storage)
            }
        ),
        vec![]
    );
    let mut relabelled = node(1, Role::Storage);
    relabelled.labels.insert("zone".into(), "a".into());
    assert_eq!(
        step(&mut r, Request::PutNode { node: relabelled }),
        vec![EventKind::LabelsChanged {
            node: id(1),
            labels: BTreeMap::from([("zone".into(), "a".into())])
        }]
    );
}

#[test]
fn label_writes_give_the_full_new_map_and_a_write_that_changes_nothing_gives_none() {
    let mut r = with_node(1);
    let set = |k: &str, v: &str| Request::SetLabel {
        node: id(1),
        key: k.into(),
        value: v.into(),
    };
    step(&mut r, set("a", "1"));
    assert_eq!(
        step(&mut r, set("b", "2")),
        vec![EventKind::LabelsChanged {
            node: id(1),
            labels: BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())])
        }]
    );
    assert_eq!(step(&mut r, set("b", "2")), vec![]);
    assert_eq!(
        step(
            &mut r,
            Request::RemoveLabel {
                node: id(1),
                key: "a".into()
            }
        ),
        vec![EventKind::LabelsChanged {
            node: id(1),
            labels: BTreeMap::from([("b".into(), "2".into())])
        }]
    );
}

#[test]
fn remove_node_is_left_after_leaving_else_removed() {
    let mut r = with_node(1);
    r.apply(&Request::PutNode {
        node: node(2, Role::Voter),
    })
    .expect("put");
    assert_eq!(
        step(&mut r, Request::RemoveNode { node: id(1) }),
        vec![EventKind::Removed { node: id(1) }]
    );
    assert_eq!(step(&mut r, Request::MarkLeaving { node: id(2) }), vec![]);
    assert_eq!(
        step(&mut r, Request::RemoveNode { node: id(2) }),
        vec![EventKind::Left { node: id(2) }]
    );
}

#[test]
fn token_requests_give_token_events() {
    let mut r = Registry::default();
    assert_eq!(
        step(&mut r, Request::CreateToken { token: token(TID) }),
        vec![EventKind::TokenCreated {
            id: TID.into(),
            role: Role::Storage
        }]
    );
    let use_it = Request::UseToken {
        id: TID.into(),
        secret_hash: "a".repeat(64),
        proof_key: None,
        role: Role::Storage,
        at_ms: 5,
    };
    assert_eq!(
        step(&mut r, use_it.clone()),
        vec![EventKind::TokenUsed { id: TID.into() }]
    );
    assert_eq!(
        step(&mut r, Request::RevokeToken { id: TID.into() }),
        vec![EventKind::TokenRevoked { id: TID.into() }]
    );
}

#[test]
fn a_refused_request_gives_no_event() {
    let mut r = with_node(1);
    r.apply(&Request::CreateToken { token: token(TID) })
        .expect("create");
    let refused = [
        Request::RemoveNode { node: id(9) },
        Request::CreateToken { token: token(TID) },
        Request::UseToken {
            id: TID.into(),
            secret_hash: "b".repeat(64),
            proof_key: None,
            role: Role::Storage,
            at_ms: 5,
        },
        Request::SetLabel {
            node: id(1),
            key: "bad key".into(),
            value: "v".into(),
        },
    ];
    for req in refused {
        let before = r.clone();
        assert!(r.apply(&req).is_err(), "{req:?} was applied");
        assert_eq!(derive(&before, &req, &r), vec![], "{req:?}");
    }
}

#[test]
fn a_membership_change_gives_promoted_and_demoted() {
    let set = |ns: &[u64]| ns.iter().map(|n| id(*n)).collect::<BTreeSet<_>>();
    assert_eq!(
        membership_changes(&set(&[1]), &set(&[2, 3]), &set(&[1, 2]), &set(&[3])),
        vec![EventKind::Promoted { node: id(2) }]
    );
    assert_eq!(
        membership_changes(&set(&[1, 2]), &set(&[]), &set(&[1]), &set(&[2])),
        vec![EventKind::Demoted { node: id(2) }]
    );
    // A learner added, or one taken out: no promotion or demotion.
    assert_eq!(
        membership_changes(&set(&[1]), &set(&[]), &set(&[1]), &set(&[4])),
        vec![]
    );
}

#[test]
fn an_entry_of_another_leader_gives_leader_changed() {
    let log = |term: u64, leader: u64, index: u64| LogId {
        leader_id: CommittedLeaderId::new(term, id(leader)),
        index,
    };
    assert_eq!(
        leader_change(None, &log(1, 1, 1)),
        Some(EventKind::LeaderChanged {
            node: id(1),
            term: 1
        })
    );
    assert_eq!(leader_change(Some(&log(1, 1, 1)), &log(1, 1, 2)), None);
    assert_eq!(leader_change(None, &log(0, 0, 0)), None, "initialization");
    assert!(leader_change(Some(&log(0, 0, 0)), &log(1, 1, 1)).is_some());
    assert_eq!(
        leader_change(Some(&log(1, 1, 2)), &log(2, 3, 3)),
        Some(EventKind::LeaderChanged {
            node: id(3),
            term: 2
        })
    );
}

fn kind(n: u64) -> EventKind {
    EventKind::TokenUsed { id: format!("{n}") }
}

async fn take(s: &mut Subscription, n: usize) -> Vec<EventIndex> {
    let mut out = Vec::new();
    for _ in 0..n {
        let e = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("an event in time")
            .expect("not compacted");
        out.push(e.index);
    }
    out
}

#[tokio::test]
async fn a_subscription_replays_after_its_position_then_follows_live() {
    let hub = Arc::new(EventHub::new());
    hub.start_at(0);
    for n in 1..=3 {
        hub.publish_decided(n, kind(n));
    }
    let local = hub.publish_local(EventKind::Failed { node: id(1) });
    assert_eq!(local.to_string(), "3.1");
    let mut s = hub
        .subscribe(Some(EventIndex::decided(1)))
        .expect("retained");
    hub.publish_decided(4, kind(4));
    let got: Vec<String> = take(&mut s, 4)
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(got, ["2", "3", "3.1", "4"]);
    assert_eq!(hub.last_index(), EventIndex::decided(4));
    let mut now = hub.subscribe(None).expect("from now");
    hub.publish_decided(5, kind(5));
    assert_eq!(take(&mut now, 1).await, [EventIndex::decided(5)]);
}

#[tokio::test]
async fn a_lagging_subscriber_gets_every_event_once_from_the_ring() {
    let hub = Arc::new(EventHub::new());
    hub.start_at(0);
    let mut s = hub.subscribe(None).expect("from now");
    let total = (CHANNEL * 3) as u64;
    for n in 1..=total {
        hub.publish_decided(n, kind(n));
    }
    let got = take(&mut s, total as usize).await;
    let want: Vec<EventIndex> = (1..=total).map(EventIndex::decided).collect();
    assert_eq!(got, want);
    assert!(
        hub.counters()[1].1 >= 1,
        "the lag was caught up from the ring"
    );
}

#[tokio::test]
async fn a_position_out_of_the_ring_is_compacted_never_a_gap() {
    let hub = Arc::new(EventHub::new());
    hub.start_at(0);
    let mut s = hub.subscribe(None).expect("from now");
    let total = (RETAINED + 10) as u64;
    for n in 1..=total {
        hub.publish_decided(n, kind(n));
    }
    let oldest = EventIndex::decided(10);
    assert_eq!(hub.oldest(), oldest);
    assert_eq!(
        hub.subscribe(Some(EventIndex::decided(3))).err(),
        Some(Compacted { oldest })
    );
    assert!(hub.subscribe(Some(oldest)).is_ok());
    assert_eq!(s.next().await, Err(Compacted { oldest }));
    assert_eq!(hub.counters()[2].1, 1, "the dropped subscriber is counted");
}

#[tokio::test]
async fn a_snapshot_past_a_position_compacts_it_and_a_subscriber_waiting_before_anchoring_is_kept()
{
    let hub = Arc::new(EventHub::new());
    let mut early = hub.subscribe(None).expect("before the state machine opens");
    let mut resuming = hub.subscribe(Some(EventIndex::decided(3))).expect("ahead");
    hub.start_at(7);
    assert_eq!(
        hub.subscribe(Some(EventIndex::decided(6))).err(),
        Some(Compacted {
            oldest: EventIndex::decided(7)
        })
    );
    hub.publish_decided(8, kind(8));
    assert_eq!(take(&mut early, 1).await, [EventIndex::decided(8)]);
    assert_eq!(
        resuming.next().await,
        Err(Compacted {
            oldest: EventIndex::decided(7)
        })
    );
    // A jump in the decided numbers (a snapshot installed) compacts what came before it.
    hub.publish_decided(20, kind(20));
    let oldest = EventIndex::decided(19);
    assert_eq!(
        hub.subscribe(Some(EventIndex::decided(8))).err(),
        Some(Compacted { oldest })
    );
    assert_eq!(early.next().await, Err(Compacted { oldest }));
}

#[tokio::test]
async fn a_resume_ahead_of_the_replayed_log_skips_what_it_saw() {
    // After a restart the log is applied again: a subscriber that saw up to 2 gets 3 on.
    let hub = Arc::new(EventHub::new());
    let mut s = hub.subscribe(Some(EventIndex::decided(2))).expect("ahead");
    hub.start_at(0);
    for n in 1..=3 {
        hub.publish_decided(n, kind(n));
    }
    assert_eq!(take(&mut s, 1).await, [EventIndex::decided(3)]);
}

#[tokio::test]
async fn the_registry_index_wakes_waiters_only_when_it_moves() {
    let hub = Arc::new(EventHub::new());
    hub.set_registry_index(5);
    let quick = hub.registry_index_after(4, Duration::from_secs(5)).await;
    assert_eq!(quick, 5);
    let waiter = {
        let hub = hub.clone();
        tokio::spawn(async move { hub.registry_index_after(5, Duration::from_secs(30)).await })
    };
    hub.set_registry_index(5);
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "an unchanged index woke the waiter");
    hub.set_registry_index(9);
    assert_eq!(waiter.await.expect("joined"), 9);
    let timed_out = hub.registry_index_after(9, Duration::from_millis(20)).await;
    assert_eq!(timed_out, 9);
}
