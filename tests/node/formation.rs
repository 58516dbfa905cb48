//! Zero-configuration formation: no --bootstrap, no --peers, no token.

use std::time::Duration;

use crate::support::agents::{agent, mdns_browsing, status, wait_group, wait_not_browsing};
use crate::support::lab::Lab;
use crate::support::wait;

/// Three agents with no cluster flags form one cluster (one leader, three voters); two more
/// with no flags become standby learners (voter role, beyond the target), and one with
/// `--role storage` a storage learner.
#[test]
fn agents_without_flags_form_one_cluster_with_standbys_and_storage() {
    let mut lab = Lab::new(6);
    for (i, name) in ["z0", "z1", "z2"].iter().enumerate() {
        agent(&mut lab, i, name, &[]);
    }
    let voters = [("z0", "voter"), ("z1", "voter"), ("z2", "voter")];
    wait_group(&lab, &[0, 1, 2], &voters, Duration::from_secs(30));

    agent(&mut lab, 3, "z3", &[]);
    agent(&mut lab, 4, "z4", &[]);
    agent(&mut lab, 5, "z5", &["--role", "storage"]);
    let all = [
        voters[0],
        voters[1],
        voters[2],
        ("z3", "learner"),
        ("z4", "learner"),
        ("z5", "learner"),
    ];
    wait_group(&lab, &[0, 1, 2, 3, 4, 5], &all, Duration::from_secs(30));
    let st = status(&lab, 0).expect("status");
    let role = |name: &str| {
        st["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .map(|m| m["role"].clone())
    };
    assert_eq!(
        role("z3"),
        Some("voter".into()),
        "a standby keeps the voter role"
    );
    assert_eq!(role("z5"), Some("storage".into()));
    // z5 found the cluster by browsing mDNS; a member storage node stops browsing (N browsers
    // refresh N² records) and keeps advertising. Voters and standbys browse on.
    wait_not_browsing(&lab, 5, Duration::from_secs(10));
    assert_eq!(mdns_browsing(&lab, 3), Ok(1), "a standby browses on");
    assert_eq!(
        st["open"], true,
        "a cluster formed with no key is open, and says so"
    );
}

/// Three agents started at the same instant, ten times over (fresh data dirs each time): they
/// always end in one cluster of three voters, never two.
#[test]
fn simultaneous_starts_never_form_two_clusters() {
    let mut lab = Lab::new(3);
    for round in 0..10 {
        // Started behind a gate and released together: the same instant, not one after another.
        let mut gate = lab.gate(&format!("round-{round}"));
        let procs: Vec<_> = (0..3)
            .map(|i| {
                let name = format!("s{i}");
                // A cluster name per round: a goodbye missed by the last round cannot matter.
                lab.spawn_agent_gated(
                    i,
                    &format!("{name}-{round}"),
                    &gate,
                    &name,
                    &format!("data-{round}"),
                    &["--cluster", &format!("round{round}")],
                )
            })
            .collect();
        gate.release(procs.len());
        let ids = wait::until(
            &format!("round {round}: one cluster of three voters"),
            Duration::from_secs(30),
            || {
                let views: Vec<serde_json::Value> = (0..3)
                    .map(|i| status(&lab, i).map_err(|e| format!("host {i}: {e}")))
                    .collect::<Result<_, _>>()?;
                let ids: Vec<String> = views
                    .iter()
                    .map(|v| v["cluster_id"].as_str().unwrap_or("").to_string())
                    .collect();
                let voters = |v: &serde_json::Value| {
                    v["members"]
                        .as_array()
                        .map_or(0, |m| m.iter().filter(|m| m["suffrage"] == "voter").count())
                };
                if views.iter().all(|v| voters(v) == 3) && ids.iter().all(|i| *i == ids[0]) {
                    Ok(ids)
                } else {
                    Err(format!(
                        "clusters {ids:?}, voters {:?}",
                        views.iter().map(voters).collect::<Vec<_>>()
                    ))
                }
            },
        );
        assert!(ids.iter().all(|i| *i == ids[0]), "round {round}: {ids:?}");
        for p in procs {
            let st = lab.stop(p, Duration::from_secs(15));
            assert!(st.success(), "round {round}: clean stop: {st}");
        }
    }
}

/// With the same cluster key on every node, flagless agents form a sealed cluster (status says
/// joins need the key or a token), and a node with another key is refused and stays out while
/// the cluster carries on.
#[test]
fn a_cluster_key_seals_formation_and_keeps_other_keys_out() {
    let mut lab = Lab::new(4);
    let key = String::from_utf8_lossy(&lab.quorate(0, &["keygen"]).stdout)
        .trim()
        .to_string();
    let other = String::from_utf8_lossy(&lab.quorate(0, &["keygen"]).stdout)
        .trim()
        .to_string();
    for (i, name) in ["k0", "k1", "k2"].iter().enumerate() {
        agent(&mut lab, i, name, &["--cluster-key", &key]);
    }
    let voters = [("k0", "voter"), ("k1", "voter"), ("k2", "voter")];
    wait_group(&lab, &[0, 1, 2], &voters, Duration::from_secs(30));
    let st = status(&lab, 0).expect("status");
    assert_eq!(st["open"], false, "a keyed cluster is not open: {st}");

    let stranger = agent(&mut lab, 3, "k3", &["--cluster-key", &other]);
    wait::until(
        "the stranger to be refused",
        Duration::from_secs(30),
        || {
            let refused = lab
                .log(stranger)
                .lines()
                .any(|l| l.contains("refused this node") && l.contains("not this cluster's"));
            if refused {
                Ok(())
            } else {
                Err(lab.log(stranger))
            }
        },
    );
    wait::holds("the stranger staying out", Duration::from_secs(3), || {
        let st = status(&lab, 0)?;
        let names: Vec<String> = st["members"]
            .as_array()
            .map(|m| {
                m.iter()
                    .map(|m| m["name"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        if names.iter().any(|n| n == "k3") {
            Err(format!("k3 admitted: {names:?}"))
        } else {
            Ok(())
        }
    });
}
