//! Backup and disaster recovery with real agents: a snapshot saved and inspected, the quorum
//! lost for good and recovered on the survivor, new voters joined, and the snapshot restored
//! through Raft (another cluster's refused).

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::support::agents::{agent, labels_of, leader_name, quic, status, wait_group};
use crate::support::lab::Lab;
use crate::support::wait;

/// stdout and stderr of a command, for assertions.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `quorate ARGS` with the admin credential in host `i`; asserts it succeeded.
fn ok(lab: &Lab, i: usize, args: &[&str]) -> String {
    let out = lab.quorate_admin(i, args);
    assert!(out.status.success(), "quorate {args:?}: {}", said(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Waits until host `i` shows `name`'s label `key` = `value`.
fn wait_label(lab: &Lab, i: usize, name: &str, key: &str, value: &str) {
    wait::until(
        &format!("host {i} to see {name}'s label {key}={value}"),
        Duration::from_secs(20),
        || {
            let labels = labels_of(&status(lab, i)?, name);
            if labels[key] == value {
                Ok(())
            } else {
                Err(labels.to_string())
            }
        },
    );
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// Three voters and a storage node (joined with a token) with labels: a snapshot is saved
/// (0600, never over a file without --force) and inspected offline. Two voters are killed
/// and their disks wiped: a write fails for want of a quorum. The survivor is stopped
/// (recover refuses while it runs), recovered with `quorate recover --yes` and started: it
/// leads alone, the storage node is still its learner, the lost voters are gone from the
/// registry; two new voters join with a voter token created on it and the autopilot makes the
/// group three voters again; every label of the surviving nodes is there. Restoring the
/// snapshot through Raft brings back a label changed after it was saved (on every node),
/// reports the lost voters as not re-added and the new ones as kept; a storage node's restore
/// is refused by rule admin-by-voters, and the snapshot of another cluster is refused
/// without --force.
#[test]
fn a_cluster_that_lost_its_quorum_is_recovered_and_its_snapshot_restored() {
    let mut lab = Lab::new(5);
    let seed = quic(&lab, 0);
    let v0 = agent(&mut lab, 0, "v0", &["--bootstrap"]);
    let v1 = agent(&mut lab, 1, "v1", &["--peers", &seed]);
    let v2 = agent(&mut lab, 2, "v2", &["--peers", &seed]);
    wait_group(
        &lab,
        &[0, 1, 2],
        &[("v0", "voter"), ("v1", "voter"), ("v2", "voter")],
        Duration::from_secs(60),
    );
    let storage = ok(
        &lab,
        0,
        &["token", "create", "--role", "storage", "--ttl", "1h"],
    );
    agent(
        &mut lab,
        3,
        "s3",
        &["--role", "storage", "--join", storage.trim()],
    );
    let all = [
        ("v0", "voter"),
        ("v1", "voter"),
        ("v2", "voter"),
        ("s3", "learner"),
    ];
    wait_group(&lab, &[0, 1, 2, 3], &all, Duration::from_secs(60));
    ok(&lab, 0, &["label", "set", "zone=a", "rack=r1"]);
    ok(&lab, 3, &["label", "set", "disk=ssd"]);
    for i in 0..4 {
        wait_label(&lab, i, "v0", "rack", "r1");
        wait_label(&lab, i, "s3", "disk", "ssd");
    }
    let cluster_id = status(&lab, 0).expect("status")["cluster_id"].clone();

    // Another cluster: one node, bootstrapped alone; its snapshot, for the refusal below.
    let other = agent(&mut lab, 4, "x4", &["--bootstrap", "--cluster", "other"]);
    wait_group(&lab, &[4], &[("x4", "voter")], Duration::from_secs(30));
    let foreign = lab.host_dir(4).join("other.snapshot");
    ok(&lab, 4, &["snapshot", "save", &path(&foreign)]);
    lab.stop(other, Duration::from_secs(30));

    // Save and inspect.
    let backup = lab.host_dir(0).join("backup.snapshot");
    let saved = json(&ok(
        &lab,
        0,
        &["snapshot", "save", &path(&backup), "--json"],
    ));
    assert_eq!(saved["cluster_id"], cluster_id, "{saved}");
    assert_eq!(saved["nodes"], 4, "{saved}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup)
            .expect("written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the snapshot is private");
    }
    let again = lab.quorate_admin(0, &["snapshot", "save", &path(&backup)]);
    assert!(!again.status.success(), "no overwrite without --force");
    assert!(said(&again).contains("--force"), "{}", said(&again));
    let inspected = json(&ok(
        &lab,
        0,
        &["snapshot", "inspect", &path(&backup), "--json"],
    ));
    assert_eq!(inspected["cluster_id"], cluster_id, "{inspected}");
    assert_eq!(inspected["index"], saved["index"], "{inspected}");
    let mut nodes: Vec<(String, String)> = inspected["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("?").into(),
                n["role"].as_str().unwrap_or("?").into(),
            )
        })
        .collect();
    nodes.sort();
    let want: Vec<(String, String)> = [
        ("s3", "storage"),
        ("v0", "voter"),
        ("v1", "voter"),
        ("v2", "voter"),
    ]
    .iter()
    .map(|(n, r)| (n.to_string(), r.to_string()))
    .collect();
    assert_eq!(nodes, want, "{inspected}");
    let truncated = lab.host_dir(0).join("truncated.snapshot");
    let bytes = std::fs::read(&backup).expect("read");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).expect("write");
    let bad = lab.quorate(0, &["snapshot", "inspect", &path(&truncated)]);
    assert_eq!(bad.status.code(), Some(1), "{}", said(&bad));
    assert!(said(&bad).contains("truncated"), "{}", said(&bad));

    // Disaster: two voters and their disks are gone.
    lab.kill9(v1);
    lab.kill9(v2);
    for i in [1, 2] {
        std::fs::remove_dir_all(lab.host_dir(i).join("data")).expect("wipe");
    }
    // A write fails without a quorum. (One that timed out rather than being refused may
    // still be in the survivor's log, and the recovery commits it: another key.)
    let refused = lab.quorate_admin(0, &["label", "set", "outage=1"]);
    assert!(
        !refused.status.success(),
        "no write without a quorum: {}",
        said(&refused)
    );
    let text = said(&refused);
    assert!(
        text.contains("quorum") || text.contains("no leader") || text.contains("not confirmed"),
        "{text}"
    );

    // Recover the survivor: refused while it runs, done once it is stopped.
    let data0 = path(&lab.host_dir(0).join("data"));
    let running = lab.quorate(0, &["recover", "--data-dir", &data0, "--yes"]);
    assert!(!running.status.success());
    assert!(said(&running).contains("in use"), "{}", said(&running));
    lab.stop(v0, Duration::from_secs(30));
    let recovered = lab.quorate(0, &["recover", "--data-dir", &data0, "--yes"]);
    assert!(recovered.status.success(), "recover: {}", said(&recovered));
    assert!(
        said(&recovered).contains("voters after"),
        "{}",
        said(&recovered)
    );
    lab.restart(v0);
    wait_group(
        &lab,
        &[0, 3],
        &[("v0", "voter"), ("s3", "learner")],
        Duration::from_secs(60),
    );
    assert_eq!(
        leader_name(&status(&lab, 0).expect("status")).as_deref(),
        Some("v0")
    );

    // New voters join with a voter token created on the survivor.
    let voter = ok(
        &lab,
        0,
        &["token", "create", "--role", "voter", "--ttl", "1h"],
    );
    agent(&mut lab, 1, "w1", &["--join", voter.trim()]);
    agent(&mut lab, 2, "w2", &["--join", voter.trim()]);
    let healed = [
        ("v0", "voter"),
        ("w1", "voter"),
        ("w2", "voter"),
        ("s3", "learner"),
    ];
    wait_group(&lab, &[0, 1, 2, 3], &healed, Duration::from_secs(90));
    for i in 0..4 {
        wait_label(&lab, i, "v0", "zone", "a");
        wait_label(&lab, i, "v0", "rack", "r1");
        wait_label(&lab, i, "s3", "disk", "ssd");
    }

    // Restore through Raft: a label changed since the save comes back everywhere.
    ok(&lab, 0, &["label", "set", "zone=changed"]);
    wait_label(&lab, 3, "v0", "zone", "changed");
    let from_storage = lab.quorate_admin(3, &["snapshot", "restore", &path(&backup)]);
    assert!(!from_storage.status.success());
    assert!(
        said(&from_storage).contains("admin-by-voters"),
        "{}",
        said(&from_storage)
    );
    let restored = json(&ok(
        &lab,
        1,
        &["snapshot", "restore", &path(&backup), "--json"],
    ));
    let names = |key: &str| {
        let mut v: Vec<String> = restored[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| n["name"].as_str().unwrap_or("?").to_string())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(names("labels_restored"), ["s3", "v0"], "{restored}");
    assert_eq!(names("nodes_skipped"), ["v1", "v2"], "{restored}");
    assert_eq!(names("nodes_kept"), ["w1", "w2"], "{restored}");
    for i in 0..4 {
        wait_label(&lab, i, "v0", "zone", "a");
    }
    wait_group(&lab, &[0, 1, 2, 3], &healed, Duration::from_secs(30));

    // Another cluster's snapshot: refused without --force, and nothing changes.
    let refused = lab.quorate_admin(0, &["snapshot", "restore", &path(&foreign)]);
    assert_eq!(refused.status.code(), Some(1), "{}", said(&refused));
    assert!(
        said(&refused).contains("not this cluster") && said(&refused).contains("--force"),
        "{}",
        said(&refused)
    );
    assert_eq!(
        labels_of(&status(&lab, 0).expect("status"), "v0")["zone"],
        "a"
    );
}
