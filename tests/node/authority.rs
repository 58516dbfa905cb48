//! Authority follows the planes, in the lab: a storage node's operator, with the storage
//! node's own admin credential, cannot govern the management plane; and nothing a storage node
//! keeps admits a voter.

use std::time::Duration;

use serde_json::Value;

use crate::hostile::minted_asks;
use crate::support::agents::{agent, quic, status, suffrages, wait_group};
use crate::support::lab::Lab;
use crate::support::wait;
use crate::tokens::create;

fn id_of(st: &Value, name: &str) -> String {
    st["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .and_then(|m| m["id"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// On a cluster of three voters and a storage node, the storage node's own API (its admin
/// credential) refuses to remove, demote or promote a node, move the leadership, create, list
/// or revoke tokens: each exits non-zero with 403 and the rule that refuses it, and the group
/// is unchanged. The storage node can still set its own labels and leave.
#[test]
fn a_storage_node_cannot_govern_through_its_own_api() {
    let mut lab = Lab::new(4);
    three_voters_and_storage(&mut lab);
    let st = status(&lab, 0).expect("status");
    let before = suffrages(&st);
    let a1 = id_of(&st, "a1");
    let a3 = id_of(&st, "a3");
    let listed = lab.quorate_admin(0, &["token", "list", "--json"]);
    let list: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("token list");
    let some_token = list[0]["id"].as_str().expect("a token").to_string();

    let refused: [(&[&str], &str); 8] = [
        (&["remove", &a1], "admin-by-voters"),
        (&["demote", &a1], "admin-by-voters"),
        (&["promote", &a3], "admin-by-voters"),
        (&["step-down"], "admin-by-voters"),
        (&["token", "create", "--role", "voter"], "tokens-by-voters"),
        (
            &["token", "create", "--role", "storage"],
            "tokens-by-voters",
        ),
        (&["token", "list"], "tokens-by-voters"),
        (&["token", "revoke", &some_token], "tokens-by-voters"),
    ];
    for (args, rule) in refused {
        let out = lab.quorate_admin(3, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} succeeded on the storage node"
        );
        assert!(
            err.contains("403") && err.contains(rule),
            "{args:?}: expected 403 by {rule}, got: {err}"
        );
    }
    let after = status(&lab, 0).expect("status");
    assert_eq!(suffrages(&after), before, "the group is unchanged");
    let listed = lab.quorate_admin(0, &["token", "list", "--json"]);
    let now: Vec<Value> = serde_json::from_slice(&listed.stdout).expect("token list");
    assert_eq!(now.len(), list.len(), "no token was created");
    assert!(
        now.iter().all(|t| t["revoked"] == false),
        "no token was revoked: {now:?}"
    );

    // Its own record: labels, and leaving.
    let out = lab.quorate_admin(3, &["label", "set", "zone=s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait::until("a3's label on a0", Duration::from_secs(10), || {
        let st = status(&lab, 0)?;
        let labels = st["members"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["name"] == "a3"))
            .map(|m| m["labels"].clone())
            .unwrap_or_default();
        if labels["zone"] == "s" {
            Ok(())
        } else {
            Err(labels.to_string())
        }
    });
    let out = lab.quorate_admin(3, &["leave"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_group(
        &lab,
        &[0],
        &[("a0", "voter"), ("a1", "voter"), ("a2", "voter")],
        Duration::from_secs(30),
    );
}

/// In a cluster sealed with a cluster key, a storage node joined with a token keeps no CA key
/// and only the gossip key derived from the cluster key; that key, given to a new node asking
/// to join as a voter, admits nothing.
#[test]
fn no_key_a_storage_node_holds_admits_a_voter() {
    let mut lab = Lab::new(3);
    let key = lab.quorate(0, &["keygen"]);
    let key = String::from_utf8_lossy(&key.stdout).trim().to_string();
    agent(&mut lab, 0, "k0", &["--bootstrap", "--cluster-key", &key]);
    wait_group(&lab, &[0], &[("k0", "voter")], Duration::from_secs(30));
    let storage = create(&lab, 0, &["--role", "storage"]);
    agent(
        &mut lab,
        1,
        "k1",
        &["--role", "storage", "--join", &storage],
    );
    wait_group(
        &lab,
        &[0],
        &[("k0", "voter"), ("k1", "learner")],
        Duration::from_secs(30),
    );
    // Its gossip is sealed with the cluster's (derived) key: it sees k0.
    wait::until("k1's gossip to see k0", Duration::from_secs(15), || {
        let out = lab.quorate(1, &["members", "--json"]);
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        if rows.len() == 2 {
            Ok(())
        } else {
            Err(format!("{rows:?}"))
        }
    });
    let data = lab.host_dir(1).join("data");
    assert!(
        !data.join("consensus/ca.key").exists(),
        "a storage node holds the CA key"
    );
    let keyring: Value =
        serde_json::from_slice(&std::fs::read(data.join("gossip-keyring.json")).expect("keyring"))
            .expect("keyring json");
    assert_eq!(keyring["kind"], "gossip", "{keyring}");
    let held = keyring["keys"][0].as_str().expect("a key").to_string();
    assert_ne!(held, key, "the storage node keeps no cluster key");
    for f in walk(&data) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !text.contains(&key),
            "{} holds the cluster key",
            f.display()
        );
    }
    // What it holds, offered as the cluster key by a would-be voter: refused.
    intruder_is_refused(&lab, 2, &held);
    let st = status(&lab, 0).expect("status");
    assert_eq!(
        suffrages(&st),
        vec![
            ("k0".to_string(), "voter".to_string()),
            ("k1".to_string(), "learner".to_string())
        ]
    );
}

/// `quorate keyring rotate`, run once on a voter of a sealed cluster of two voters and a
/// storage node (the new key read from a file, never the command line): every member confirms
/// install, use and remove; each ends with the new key alone as its primary; the voters keep
/// the new cluster key, while the storage node keeps only its gossip key: neither the new nor
/// the old cluster key is in any file of its data dir or on its command line, and gossip
/// still reaches every member. The old key (what a removed voter's host keeps) then admits
/// no one. With the storage node down, the rotation stops after the install and names it;
/// run again once it is back, it completes. Removing a voter then names what its host keeps.
#[test]
fn a_rotation_hands_each_role_only_what_it_keeps() {
    let mut lab = Lab::new(4);
    let keygen = |lab: &Lab| {
        let out = lab.quorate(0, &["keygen"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let old = keygen(&lab);
    let new = keygen(&lab);
    agent(&mut lab, 0, "r0", &["--bootstrap", "--cluster-key", &old]);
    wait_group(&lab, &[0], &[("r0", "voter")], Duration::from_secs(30));
    let storage = create(&lab, 0, &["--role", "storage"]);
    let voter = create(&lab, 0, &["--role", "voter"]);
    let s1 = agent(
        &mut lab,
        1,
        "r1",
        &["--role", "storage", "--join", &storage],
    );
    agent(&mut lab, 2, "r2", &["--join", &voter]);
    wait_group(
        &lab,
        &[0],
        &[("r0", "voter"), ("r1", "learner"), ("r2", "voter")],
        Duration::from_secs(30),
    );
    let file = lab.host_dir(0).join("new.key");
    std::fs::write(&file, format!("{new}\n")).expect("key file");
    let file = file.to_str().expect("utf-8").to_string();
    let out = lab.quorate_admin(0, &["keyring", "rotate", "--key-file", &file, "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "rotate: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&text).expect("report json");
    assert_eq!(report["complete"], true, "{report}");
    let steps = steps_of(&report);
    assert_eq!(
        steps,
        ["install", "use", "remove"].map(|s| (s.to_string(), 3, 3)),
        "{report}"
    );
    let fingerprint = report["fingerprint"].as_str().expect("fingerprint");
    let new_key = quorate_gossip::Key::from_base64(&new).expect("key");
    assert_eq!(
        fingerprint,
        quorate::keys::gossip_key(&new_key).fingerprint()
    );
    for host in 0..3 {
        let out = lab.quorate(host, &["keyring", "list", "--json"]);
        let view: Value = serde_json::from_slice(&out.stdout).expect("keyring json");
        assert_eq!(
            view["keys"],
            serde_json::json!([fingerprint]),
            "host {host}: {view}"
        );
    }
    let keyring = |host: usize| -> Value {
        let f = lab.host_dir(host).join("data/gossip-keyring.json");
        serde_json::from_slice(&std::fs::read(f).expect("keyring")).expect("keyring json")
    };
    assert_eq!(keyring(2)["kind"], "cluster");
    assert_eq!(
        keyring(2)["keys"],
        serde_json::json!([new]),
        "a voter keeps the new key"
    );
    assert_eq!(keyring(1)["kind"], "gossip");
    let data = lab.host_dir(1).join("data");
    for f in walk(&data) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for (which, key) in [("new", &new), ("old", &old)] {
            assert!(
                !text.contains(key.as_str()),
                "{} holds the {which} cluster key",
                f.display()
            );
        }
    }
    // What the storage agent was handed, as it logged each change: the gossip key only.
    let handed: Vec<String> = lab
        .log_events(s1, "keyring changed by a voter's rotation")
        .iter()
        .map(|e| e["op"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(handed, ["install_gossip", "use", "remove"], "{handed:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", lab.pid(s1))).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains(new.as_str()));
    wait::until(
        "r1's gossip to see every member alive",
        Duration::from_secs(15),
        || {
            let out = lab.quorate(1, &["members", "--json"]);
            let rows: Vec<Value> =
                serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            let alive = rows.iter().filter(|r| r["status"] == "alive").count();
            if alive == 3 {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    );

    // The old key, as a removed voter's host keeps it, admits no one any more.
    intruder_is_refused(&lab, 3, &old);

    // A member down: the rotation stops after the install, names it, and switches no one;
    // run again once it is back, it completes.
    lab.kill9(s1);
    let third = keygen(&lab);
    std::fs::write(lab.host_dir(0).join("new.key"), &third).expect("key file");
    let out = lab.quorate_admin(0, &["keyring", "rotate", "--key-file", &file]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("install 2/3"), "{text}");
    assert!(text.contains("not confirmed: r1"), "{text}");
    assert!(!text.contains("use "), "no member was switched: {text}");
    for host in [0, 2] {
        let out = lab.quorate(host, &["keyring", "list", "--json"]);
        let view: Value = serde_json::from_slice(&out.stdout).expect("keyring json");
        assert_eq!(view["primary"], fingerprint, "host {host}: {view}");
    }
    lab.restart(s1);
    let out = wait::until("a rotation with r1 back", Duration::from_secs(30), || {
        let out = lab.quorate_admin(0, &["keyring", "rotate", "--key-file", &file]);
        if out.status.success() {
            Ok(out)
        } else {
            Err(String::from_utf8_lossy(&out.stdout).to_string())
        }
    });
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("remove  3/3"), "{text}");

    // Removing a voter tells the operator what its host keeps, and what to do.
    let r2 = id_of(&status(&lab, 0).expect("status"), "r2");
    let out = lab.quorate_admin(0, &["remove", &r2]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("still holds the CA key")
            && text.contains("quorate keyring rotate")
            && text.contains("quorate ca rotate"),
        "{text}"
    );

    // The removed voter's host mints certificates with the CA key it kept, for a new id and
    // for r0's id: before the CA rotation the handshake passes, and every request is refused
    // by the authority rules; after it, no handshake passes.
    let kept = lab.host_dir(2).join("data/consensus");
    let st = status(&lab, 0).expect("status");
    let (r0, r1) = (id_of(&st, "r0"), id_of(&st, "r1"));
    let minted =
        |lab: &Lab, as_id: &str| minted_asks(lab, 2, &kept, as_id, &r0, &quic(lab, 0), &r1);
    for as_id in ["00000000000000ab", r0.as_str()] {
        for answer in minted(&lab, as_id) {
            let text = answer
                .expect("before the CA rotation the handshake passes")
                .to_string();
            assert!(
                text.contains("members-only") || text.contains("recorded-key"),
                "a certificate minted for {as_id}: {text}"
            );
        }
    }

    // The CA rotated from the remaining voter: every member trusts the new CA only, the
    // storage node was handed no CA key, and a token made before (pinning the old CA) admits
    // no one.
    let old_token = create(&lab, 0, &["--role", "storage"]);
    let old_ca = status(&lab, 0).expect("status")["ca"]
        .as_str()
        .expect("ca")
        .to_string();
    let out = lab.quorate_admin(0, &["ca", "rotate", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "ca rotate: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&text).expect("report json");
    let steps = steps_of(&report);
    let want = [("key", 1), ("trust", 2), ("renew", 2), ("switch", 2)];
    assert_eq!(steps, want.map(|(s, n)| (s.to_string(), n, n)), "{report}");
    let new_ca = report["fingerprint"].as_str().expect("fingerprint");
    assert_eq!(report["replaced"], old_ca.as_str());
    for host in [0, 1] {
        let st = status(&lab, host).expect("status");
        assert_eq!(st["ca"], new_ca, "host {host}: {st}");
    }
    for f in walk(&data) {
        let name = f.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(
            !name.starts_with("ca.key") && !name.starts_with("ca-next.key"),
            "the storage node holds {}",
            f.display()
        );
    }
    for as_id in ["00000000000000ab", r0.as_str()] {
        for answer in minted(&lab, as_id) {
            assert!(
                answer.is_err(),
                "a certificate of the old CA minted for {as_id} was answered: {answer:?}"
            );
        }
    }
    let late = lab.host_dir(3).join("late");
    let late = late.to_str().expect("utf-8").to_string();
    let out = lab.quorate(
        3,
        &[
            "agent",
            "--data-dir",
            &late,
            "--name",
            "late",
            "--role",
            "storage",
            "--join",
            &old_token,
            "--peers",
            &quic(&lab, 0),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a token of the old CA admitted: {err}"
    );
    assert!(err.contains("made before a CA rotation"), "{err}");
}

/// A would-be voter in host `host` offering `key` as the cluster key to host 0's voter is
/// refused: the key is not the cluster's.
fn intruder_is_refused(lab: &Lab, host: usize, key: &str) {
    let dir = lab.host_dir(host).join("intruder");
    let dir = dir.to_str().expect("utf-8").to_string();
    let seed = quic(lab, 0);
    let out = lab.quorate(
        host,
        &[
            "agent",
            "--data-dir",
            &dir,
            "--name",
            "intruder",
            "--cluster-key",
            key,
            "--peers",
            &seed,
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the intruder was admitted: {err}");
    assert!(err.contains("not this cluster's"), "{err}");
}

/// Host 0 bootstraps voter a0, hosts 1 and 2 join as voters a1 and a2 with one token, host 3
/// as storage node a3 with another; returns once host 0 and 3 see that group, with a3's
/// process.
pub(crate) fn three_voters_and_storage(lab: &mut Lab) -> crate::support::lab::ProcId {
    agent(lab, 0, "a0", &["--bootstrap"]);
    wait_group(lab, &[0], &[("a0", "voter")], Duration::from_secs(30));
    let voters = create(lab, 0, &["--role", "voter", "--uses", "2"]);
    agent(lab, 1, "a1", &["--join", &voters]);
    agent(lab, 2, "a2", &["--join", &voters]);
    let storage = create(lab, 0, &["--role", "storage"]);
    let a3 = agent(lab, 3, "a3", &["--role", "storage", "--join", &storage]);
    let want = [
        ("a0", "voter"),
        ("a1", "voter"),
        ("a2", "voter"),
        ("a3", "learner"),
    ];
    wait_group(lab, &[0, 3], &want, Duration::from_secs(40));
    a3
}

/// A rotation report's steps: (name, members that confirmed it, members).
fn steps_of(report: &Value) -> Vec<(String, usize, usize)> {
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or_default().to_string(),
                s["confirmed"].as_array().map_or(0, Vec::len),
                s["members"].as_u64().unwrap_or(0) as usize,
            )
        })
        .collect()
}

/// Whether host `host`'s status gives member `name` gossip liveness `want`.
fn liveness_is(lab: &Lab, host: usize, name: &str, want: &str) -> Result<(), String> {
    let st = status(lab, host)?;
    let l = st["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == name))
        .map(|m| m["liveness"].clone());
    if l == Some(Value::from(want)) {
        Ok(())
    } else {
        Err(format!("{name}: {l:?}"))
    }
}

/// Every file below `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A forger that takes a live storage node's id (a copy of its `node.json`) gossips as a newer
/// incarnation of it, is refused by Raft (another key for a registered id), and leaves slowly:
/// for longer than the grace period every peer's gossip lists the real node `left`. Nothing
/// is removed (gossip's values are not a failure; only its detector's verdict is, confirmed by
/// the node's silence to the leader), and the real node is listed alive again afterwards.
#[test]
fn a_forged_leaving_does_not_remove_a_live_node() {
    let mut lab = Lab::new(5);
    let config = lab.host_dir(0).join("grace.toml");
    std::fs::write(&config, "[raft]\nfailed_grace = \"2s\"\n").expect("config");
    let config = config.to_str().expect("utf-8").to_string();
    let seed = quic(&lab, 0);
    agent(&mut lab, 0, "f0", &["--bootstrap", "--config", &config]);
    for (i, name) in [(1, "f1"), (2, "f2")] {
        agent(&mut lab, i, name, &["--peers", &seed, "--config", &config]);
    }
    agent(
        &mut lab,
        3,
        "f3",
        &["--peers", &seed, "--role", "storage", "--config", &config],
    );
    let all = [
        ("f0", "voter"),
        ("f1", "voter"),
        ("f2", "voter"),
        ("f3", "learner"),
    ];
    let leader = wait_group(&lab, &[0, 1, 2, 3], &all, Duration::from_secs(40));
    let leader_host: usize = leader[1..].parse().expect("f<host>");
    wait::until("f3 alive by gossip on f0", Duration::from_secs(15), || {
        liveness_is(&lab, 0, "f3", "alive")
    });
    // The forger: f3's node id, nothing else of it.
    let forged = lab.host_dir(4).join("forger");
    std::fs::create_dir_all(&forged).expect("dir");
    std::fs::copy(
        lab.host_dir(3).join("data/node.json"),
        forged.join("node.json"),
    )
    .expect("copy node.json");
    let f3 = id_of(&status(&lab, 0).expect("status"), "f3");
    // Gossip keys nodes by id: the newest incarnation of f3's id speaks (under its own name).
    let generation_of_f3 = |lab: &Lab| -> Option<u64> {
        let out = lab.quorate(0, &["members", "--json"]);
        let rows: Vec<Value> = serde_json::from_slice(&out.stdout).ok()?;
        rows.iter()
            .find(|r| r["id"] == f3.as_str())
            .and_then(|r| r["generation"].as_u64())
    };
    let before = generation_of_f3(&lab).expect("f3 in gossip");
    // Zero-config (it finds the cluster by mDNS), so that a refusal keeps it running; slow
    // gossip rounds, so that its leaving marker is heard for longer than the grace period
    // while it still heartbeats (a leave lasts four rounds).
    let slow = lab.host_dir(4).join("slow.toml");
    std::fs::write(&slow, "[gossip]\ninterval = \"1s\"\n").expect("config");
    let slow = slow.to_str().expect("utf-8").to_string();
    let p = lab.spawn_agent(
        4,
        "forger",
        "forger",
        &["--role", "storage", "--config", &slow],
    );
    wait::until(
        "the forger refused by Raft",
        Duration::from_secs(20),
        || {
            let log = lab.log(p);
            if log.contains("registered with another key") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    wait::until(
        "the forger's incarnation heard on f0",
        Duration::from_secs(15),
        || match generation_of_f3(&lab) {
            Some(g) if g > before => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // It leaves: its leaving marker for four seconds, then silence.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &lab.pid(p).to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    wait::until("gossip misled about f3", Duration::from_secs(15), || {
        liveness_is(&lab, 0, "f3", "left")
    });
    wait::holds(
        "f3 staying a member (2 s grace, 8 s watched)",
        Duration::from_secs(8),
        || {
            let st = status(&lab, 0)?;
            if suffrages(&st) == all.map(|(n, s)| (n.to_string(), s.to_string())) {
                Ok(())
            } else {
                Err(format!("{}", st["members"]))
            }
        },
    );
    wait::until("the forger to stop", Duration::from_secs(20), || {
        lab.exited(p).ok_or_else(|| lab.log(p))
    });
    // And the real f3 is listed alive again once the forger is silent.
    wait::until(
        "f3 alive again on the leader",
        Duration::from_secs(15),
        || liveness_is(&lab, leader_host, "f3", "alive"),
    );
}
