//! Raft groups of real agents: formation, learners, leader loss, partitions, restarts.

use std::time::Duration;

use crate::support::agents::{
    agent, labels_of, leader_name, quic, status, wait_group, wait_group_led,
};
use crate::support::lab::{Lab, ProcId};
use crate::support::wait;
use crate::util::{set_label, wait_label};

const VOTERS: [(&str, &str); 3] = [("v0", "voter"), ("v1", "voter"), ("v2", "voter")];

/// Host 0 bootstraps; hosts 1.. join through it with `extra` flags each.
fn form(lab: &mut Lab, names: &[&str], storage_from: usize) -> Vec<ProcId> {
    let seed = quic(lab, 0);
    let mut procs = vec![agent(lab, 0, names[0], &["--bootstrap"])];
    for (i, name) in names.iter().enumerate().skip(1) {
        let mut extra = vec!["--peers", seed.as_str()];
        if i >= storage_from {
            extra.extend(["--role", "storage"]);
        }
        procs.push(agent(lab, i, name, &extra));
    }
    procs
}

fn host_of(names: &[&str], name: &str) -> usize {
    names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no host runs {name}"))
}

/// One node bootstraps, two voter-role nodes and two storage nodes join: the voters are
/// promoted (three voters, one leader everywhere), the storage nodes stay learners and never
/// vote; a write made on a learner is forwarded to the leader and every node applies it, the
/// learners up to the same commit index as the voters.
#[test]
fn three_voters_elect_one_leader_and_learners_replicate_without_voting() {
    let names = ["v0", "v1", "v2", "s3", "s4"];
    let mut lab = Lab::new(5);
    form(&mut lab, &names, 3);
    let want = [
        VOTERS[0],
        VOTERS[1],
        VOTERS[2],
        ("s3", "learner"),
        ("s4", "learner"),
    ];
    wait_group(&lab, &[0, 1, 2, 3, 4], &want, Duration::from_secs(30));

    let (ok, said) = set_label(&lab, 3, "zone=s");
    assert!(ok, "a write on a learner is forwarded: {said}");
    for i in 0..5 {
        wait_label(&lab, i, "s3", "zone", "s", Duration::from_secs(10));
    }
    wait::until(
        "every node at the same commit index",
        Duration::from_secs(10),
        || {
            let commits: Vec<Option<u64>> = (0..5)
                .map(|i| {
                    status(&lab, i)
                        .ok()
                        .and_then(|s| s["commit_index"].as_u64())
                })
                .collect();
            if commits[0].is_some() && commits.iter().all(|c| *c == commits[0]) {
                Ok(())
            } else {
                Err(commits)
            }
        },
    );
    for i in [3, 4] {
        let st = status(&lab, i).expect("status");
        assert_eq!(st["state"], "learner", "{st}");
        let me = st["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == st["node_id"]).cloned())
            .expect("itself listed");
        assert_eq!(me["role"], "storage");
        assert_eq!(me["suffrage"], "learner");
    }
}

/// kill -9 the leader: the two others elect a new leader and commit; the old leader restarts
/// from its data dir and rejoins as a follower holding the writes it missed.
#[test]
fn a_killed_leader_is_replaced_and_rejoins_as_a_follower() {
    let names = ["v0", "v1", "v2"];
    let mut lab = Lab::new(3);
    let procs = form(&mut lab, &names, 3);
    let leader = wait_group(&lab, &[0, 1, 2], &VOTERS, Duration::from_secs(30));
    let l = host_of(&names, &leader);
    lab.kill9(procs[l]);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let new_leader = wait_group_led(
        &lab,
        &survivors,
        &VOTERS,
        Some(&leader),
        Duration::from_secs(15),
    );
    assert_ne!(new_leader, leader);
    let (ok, said) = set_label(&lab, survivors[0], "after=failover");
    assert!(ok, "a survivor commits: {said}");

    lab.restart(procs[l]);
    wait::until(
        "the old leader to follow and catch up",
        Duration::from_secs(20),
        || {
            let st = status(&lab, l)?;
            let caught_up = labels_of(&st, names[survivors[0]])["after"] == "failover";
            if st["state"] == "follower"
                && caught_up
                && leader_name(&st).as_deref() == Some(&new_leader)
            {
                Ok(())
            } else {
                Err(format!("{} leader {:?}", st["state"], leader_name(&st)))
            }
        },
    );
}

/// Cut the leader's cable: it refuses writes with a clear error (it cannot reach a majority),
/// the two others elect a leader and keep committing; after the cable is back everyone holds
/// the same registry and follows the same leader.
#[test]
fn a_cut_off_leader_refuses_writes_and_everyone_converges_after_heal() {
    let names = ["v0", "v1", "v2"];
    let mut lab = Lab::new(3);
    form(&mut lab, &names, 3);
    let leader = wait_group(&lab, &[0, 1, 2], &VOTERS, Duration::from_secs(30));
    let l = host_of(&names, &leader);
    let majority: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    lab.cut(l);
    let (ok, said) = set_label(&lab, l, "minority=yes");
    assert!(!ok, "the cut-off leader accepted a write: {said}");
    assert!(
        said.contains("no quorum")
            || said.contains("no leader")
            || said.contains("cannot reach the leader"),
        "the refusal says why: {said}"
    );
    let new_leader = wait_group_led(
        &lab,
        &majority,
        &VOTERS,
        Some(&leader),
        Duration::from_secs(15),
    );
    assert_ne!(new_leader, leader);
    let (ok, said) = set_label(&lab, majority[0], "majority=yes");
    assert!(ok, "the majority commits: {said}");

    lab.heal(l);
    let agreed = wait_group(&lab, &[0, 1, 2], &VOTERS, Duration::from_secs(20));
    assert_eq!(agreed, new_leader, "the healed node follows the new leader");
    wait::until("one registry everywhere", Duration::from_secs(15), || {
        let views: Vec<(Option<u64>, String)> = (0..3)
            .map(|i| {
                let st = status(&lab, i).unwrap_or_default();
                (
                    st["commit_index"].as_u64(),
                    format!("{}", labels_of(&st, names[majority[0]])),
                )
            })
            .collect();
        let minority_write = (0..3).any(|i| {
            status(&lab, i)
                .map(|st| labels_of(&st, names[l])["minority"] == "yes")
                .unwrap_or(false)
        });
        assert!(!minority_write, "the refused write was applied after all");
        if views.iter().all(|v| *v == views[0]) && views[0].1.contains("majority") {
            Ok(())
        } else {
            Err(views)
        }
    });
}

/// Cut a follower away: it refuses writes too (it cannot reach the leader), while the leader
/// and the other follower keep committing; after the heal it catches up.
#[test]
fn a_cut_off_follower_refuses_writes_and_catches_up_after_heal() {
    let names = ["v0", "v1", "v2"];
    let mut lab = Lab::new(3);
    form(&mut lab, &names, 3);
    let leader = wait_group(&lab, &[0, 1, 2], &VOTERS, Duration::from_secs(30));
    let f = (0..3).find(|i| names[*i] != leader).expect("a follower");
    let others: Vec<usize> = (0..3).filter(|i| *i != f).collect();
    lab.cut(f);
    let (ok, said) = set_label(&lab, f, "cut-follower=yes");
    assert!(!ok, "a cut-off follower accepted a write: {said}");
    assert!(
        said.contains("no quorum")
            || said.contains("no leader")
            || said.contains("cannot reach the leader"),
        "the refusal says why: {said}"
    );
    let (ok, said) = set_label(&lab, others[0], "while-cut=yes");
    assert!(ok, "the majority commits while a follower is away: {said}");
    lab.heal(f);
    wait_label(
        &lab,
        f,
        names[others[0]],
        "while-cut",
        "yes",
        Duration::from_secs(15),
    );
}

/// Stop every node and start them again from their data dirs: same cluster id, every label
/// kept.
#[test]
fn a_full_restart_keeps_the_cluster_id_and_every_label() {
    let names = ["v0", "v1", "v2", "s3"];
    let mut lab = Lab::new(4);
    let procs = form(&mut lab, &names, 3);
    let want = [VOTERS[0], VOTERS[1], VOTERS[2], ("s3", "learner")];
    wait_group(&lab, &[0, 1, 2, 3], &want, Duration::from_secs(30));
    for (i, kv) in ["a=1", "b=2", "c=3", "d=4"].iter().enumerate() {
        let (ok, said) = set_label(&lab, i, kv);
        assert!(ok, "{said}");
    }
    wait_label(&lab, 0, "s3", "d", "4", Duration::from_secs(10));
    let before = status(&lab, 0).expect("status");

    for p in &procs {
        let st = lab.stop(*p, Duration::from_secs(15));
        assert!(st.success(), "clean stop: {st}");
    }
    for p in &procs {
        lab.restart(*p);
    }
    wait_group(&lab, &[0, 1, 2, 3], &want, Duration::from_secs(30));
    for i in 0..4 {
        let st = status(&lab, i).expect("status");
        assert_eq!(st["cluster_id"], before["cluster_id"], "same cluster");
        for (n, k, v) in [
            ("v0", "a", "1"),
            ("v1", "b", "2"),
            ("v2", "c", "3"),
            ("s3", "d", "4"),
        ] {
            wait_label(&lab, i, n, k, v, Duration::from_secs(10));
        }
        assert!(st["commit_index"].as_u64() >= before["commit_index"].as_u64());
    }
}

/// A storage node's data dir is wiped: it comes back as a new node (a new id) and joins again
/// as a learner, and the leader carries on.
#[test]
fn a_wiped_storage_node_joins_again_as_a_new_node() {
    let names = ["v0", "v1", "v2", "s3"];
    let mut lab = Lab::new(4);
    let procs = form(&mut lab, &names, 3);
    let want = [VOTERS[0], VOTERS[1], VOTERS[2], ("s3", "learner")];
    wait_group(&lab, &[0, 1, 2, 3], &want, Duration::from_secs(30));
    let st = lab.stop(procs[3], Duration::from_secs(15));
    assert!(st.success());
    std::fs::remove_dir_all(lab.host_dir(3).join("data")).expect("wipe");
    lab.restart(procs[3]);
    wait::until(
        "the wiped node to join as a new learner",
        Duration::from_secs(30),
        || {
            let st = status(&lab, 0)?;
            let s3: Vec<&serde_json::Value> = st["members"]
                .as_array()
                .map(|ms| ms.iter().filter(|m| m["name"] == "s3").collect())
                .unwrap_or_default();
            let fresh = status(&lab, 3).ok();
            let fresh_id = fresh.as_ref().map(|f| f["node_id"].clone());
            if s3.len() == 2
                && s3
                    .iter()
                    .any(|m| Some(&m["id"]) == fresh_id.as_ref() && m["suffrage"] == "learner")
            {
                Ok(())
            } else {
                Err(format!("{s3:?}"))
            }
        },
    );
    let (ok, said) = set_label(&lab, 0, "still=leading");
    assert!(ok, "the cluster carries on: {said}");
}
