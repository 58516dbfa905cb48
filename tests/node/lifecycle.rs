//! The autopilot removes failed nodes after the grace period, never a voter that the quorum
//! needs; a leaving leader hands over and deregisters.

use std::time::Duration;

use serde_json::Value;

use crate::support::agents::{agent, leader_name, quic, status, wait_group, wait_group_led};
use crate::support::lab::Lab;
use crate::support::wait;

fn names(st: &Value) -> Vec<String> {
    let mut v: Vec<String> = st["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["name"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Host 0 bootstraps; the others join through it. Every agent runs with `extra`.
fn form(
    lab: &mut Lab,
    names: &[&str],
    storage_from: usize,
    extra: &[&str],
) -> Vec<crate::support::lab::ProcId> {
    let seed = quic(lab, 0);
    let mut procs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut args: Vec<&str> = extra.to_vec();
        if i == 0 {
            args.push("--bootstrap");
        } else {
            args.extend(["--peers", seed.as_str()]);
        }
        if i >= storage_from {
            args.extend(["--role", "storage"]);
        }
        procs.push(agent(lab, i, name, &args));
    }
    procs
}

/// kill -9 a storage node: gossip reports it failed and the leader removes it once the grace
/// period has passed. kill -9 a voter of three: it is reported failed but stays a voter (the
/// quorum needs it), however long it stays down.
#[test]
fn failed_nodes_are_removed_after_the_grace_but_not_a_needed_voter() {
    let names_ = ["a0", "a1", "a2", "a3"];
    let mut lab = Lab::new(4);
    let config = lab.host_dir(0).join("grace.toml");
    std::fs::write(&config, "[raft]\nfailed_grace = \"3s\"\n").expect("config");
    let config = config.to_str().expect("utf-8").to_string();
    let procs = form(&mut lab, &names_, 3, &["--config", &config]);
    let all = [
        ("a0", "voter"),
        ("a1", "voter"),
        ("a2", "voter"),
        ("a3", "learner"),
    ];
    wait_group(&lab, &[0, 1, 2, 3], &all, Duration::from_secs(30));
    // Gossip reports only nodes it has seen alive as failed: let it see the storage node.
    wait::until(
        "every member alive by gossip",
        Duration::from_secs(15),
        || {
            let st = status(&lab, 0)?;
            let live: Vec<String> = st["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .map(|m| m["liveness"].as_str().unwrap_or("").to_string())
                        .collect()
                })
                .unwrap_or_default();
            if live.len() == 4 && live.iter().all(|l| l == "alive") {
                Ok(())
            } else {
                Err(format!("{live:?}"))
            }
        },
    );

    lab.kill9(procs[3]);
    wait::until(
        "the failed storage node to be removed",
        Duration::from_secs(30),
        || {
            let st = status(&lab, 0)?;
            let n = names(&st);
            if n == ["a0", "a1", "a2"] {
                Ok(())
            } else {
                Err(format!("{n:?}"))
            }
        },
    );

    // A voter of three: never removed, however long it is down.
    let leader = leader_name(&status(&lab, 0).expect("status")).expect("a leader");
    let victim = (0..3).find(|i| names_[*i] != leader).expect("a follower");
    lab.kill9(procs[victim]);
    let observer = (0..3).find(|i| *i != victim).expect("an observer");
    wait::until("the voter reported failed", Duration::from_secs(15), || {
        let st = status(&lab, observer)?;
        let m = st["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == names_[victim]).cloned());
        match m {
            Some(m) if m["liveness"] == "failed" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    wait::holds(
        "the failed voter staying a voter (3 s grace, 8 s watched)",
        Duration::from_secs(8),
        || {
            let st = status(&lab, observer)?;
            let still = st["members"].as_array().is_some_and(|m| {
                m.iter()
                    .any(|m| m["name"] == names_[victim] && m["suffrage"] == "voter")
            });
            if still {
                Ok(())
            } else {
                Err(format!("{}", st["members"]))
            }
        },
    );
}

/// `quorate leave` on the leader: it hands leadership to another voter, deregisters, and its
/// agent stops; the others no longer list it, and the state it set aside holds no key.
#[test]
fn leave_on_the_leader_hands_over_and_deregisters() {
    let names_ = ["l0", "l1", "l2"];
    let mut lab = Lab::new(3);
    let procs = form(&mut lab, &names_, 3, &[]);
    let voters = [("l0", "voter"), ("l1", "voter"), ("l2", "voter")];
    let leader = wait_group(&lab, &[0, 1, 2], &voters, Duration::from_secs(30));
    let l = names_
        .iter()
        .position(|n| *n == leader)
        .expect("leader host");
    let out = lab.quorate_admin(l, &["leave"]);
    assert!(
        out.status.success(),
        "leave: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait::until(
        "the leaver's agent to exit",
        Duration::from_secs(15),
        || lab.exited(procs[l]).ok_or("still running"),
    );
    let rest: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let want: Vec<(&str, &str)> = rest.iter().map(|i| (names_[*i], "voter")).collect();
    let new_leader = wait_group_led(&lab, &rest, &want, Some(&leader), Duration::from_secs(15));
    assert_ne!(new_leader, leader);
    // The leaver kept its state aside, without the keys: no CA key, no node key.
    let data = lab.host_dir(l).join("data");
    let kept: Vec<_> = std::fs::read_dir(&data)
        .expect("data dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert!(
        kept.iter()
            .any(|p| p.to_string_lossy().contains("consensus.left-")),
        "the state was set aside: {kept:?}"
    );
    for dir in &kept {
        for key in ["ca.key", "node.key"] {
            assert!(
                !dir.join(key).exists(),
                "{} still holds {key}",
                dir.display()
            );
        }
    }
}
