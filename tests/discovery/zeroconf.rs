//! Interoperation with an independent mDNS stack, python-zeroconf: it resolves what quorate
//! advertises, and its foreign or broken services do not disturb quorate's listing.

use std::time::Duration;

use crate::support::lab::{Lab, ProcId};
use crate::support::wait;
use crate::util::{agent, discover, ids, json, sorted};

const PY: &str = "/usr/bin/python3";

fn helper() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/zeroconf_peer.py"
    )
    .to_string()
}

fn publish(lab: &mut Lab, i: usize, label: &str, name: &str, txt: &[&str]) -> ProcId {
    let addr = lab.host(i).ip.to_string();
    let script = helper();
    let mut args = vec![script.as_str(), "publish", "--name", name, "--addr", &addr];
    for t in txt {
        args.push("--txt");
        args.push(t);
    }
    let p = lab.spawn_program(i, label, PY, &args);
    wait::until(
        &format!("{label} to register"),
        Duration::from_secs(15),
        || {
            if lab.log(p).lines().any(|l| l == "ready") {
                Ok(())
            } else {
                Err(lab.log(p))
            }
        },
    );
    p
}

/// A foreign service of the same type with unrelated TXT, and a service with quorate's keys
/// but broken values, are skipped and counted; the agents are listed as before.
#[test]
fn foreign_and_malformed_services_are_skipped_and_counted() {
    let mut lab = Lab::new(5);
    let (_, a0) = agent(&mut lab, 0, "good-0", &[]);
    let (_, a1) = agent(&mut lab, 1, "good-1", &[]);
    publish(
        &mut lab,
        2,
        "printer",
        "office-printer",
        &["path=/ipp", "model=LaserJet"],
    );
    publish(
        &mut lab,
        3,
        "broken",
        "broken-node",
        &[
            "v=1",
            "id=not-a-node-id",
            "cl=default",
            "role=emperor",
            "g=99999",
            "a=7948",
            "st=forming",
        ],
    );

    let (out, _) = discover(&lab, 4, &["--timeout", "1500ms"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("good-0") && stdout.contains("good-1"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("printer") && !stdout.contains("broken"),
        "{stdout}"
    );
    let counts = stderr.split('(').nth(1).unwrap_or_default();
    let foreign: u64 = counts
        .split(" foreign")
        .next()
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0);
    let malformed: u64 = counts
        .split(" and ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_default()
        .parse()
        .unwrap_or(0);
    assert!(
        foreign >= 1 && malformed >= 1,
        "skipped records are counted: {stderr}"
    );

    let (out, _) = discover(&lab, 4, &["--json", "--expect", "2", "--timeout", "5s"]);
    assert_eq!(ids(&json(&out)), sorted(vec![a0, a1]));
}

/// python-zeroconf, browsing and resolving on its own, finds each agent with the SRV port,
/// the host's address and the TXT keys quorate advertises.
#[test]
fn an_independent_browser_resolves_quorate_advertisements() {
    let mut lab = Lab::new(3);
    let (_, a0) = agent(&mut lab, 0, "node-0", &[]);
    let (_, a1) = agent(&mut lab, 1, "node-1", &["--quic-port", "9047"]);
    let script = helper();
    let addr = lab.host(2).ip.to_string();
    let out = lab.exec(
        2,
        PY,
        &[
            &script,
            "browse",
            "--addr",
            &addr,
            "--timeout",
            "15",
            "--expect",
            "2",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for (i, id, name, port) in [(0, &a0, "node-0", 7947), (1, &a1, "node-1", 9047)] {
        let s = found
            .iter()
            .find(|s| s["properties"]["id"] == **id)
            .unwrap_or_else(|| panic!("zeroconf did not resolve {id}: {text}"));
        assert_eq!(s["name"], format!("{name}._cluster._tcp.local."), "{s}");
        assert_eq!(s["port"], port, "{s}");
        assert_eq!(s["server"], format!("q-{id}.local."), "{s}");
        assert!(
            s["addresses"]
                .as_array()
                .is_some_and(|a| a.contains(&lab.host(i).ip.to_string().into())),
            "{s}"
        );
        for key in ["v", "cl", "role", "g", "a", "st", "ver"] {
            assert!(
                s["properties"][key].is_string(),
                "TXT key {key} missing: {s}"
            );
        }
    }
}

/// python-zeroconf, browsing before the cluster forms, sees every agent's advertisement change
/// from `forming` to `member`: a changed TXT record is announced (with the cache-flush bit)
/// without probing the names again, and an independent cache takes the new record.
#[test]
fn an_independent_browser_follows_advertisements_turning_member() {
    let mut lab = Lab::new(4);
    agent(&mut lab, 0, "node-0", &[]);
    agent(&mut lab, 1, "node-1", &[]);
    let script = helper();
    let addr = lab.host(3).ip.to_string();
    let browser = lab.spawn_program(
        3,
        "zeroconf-browser",
        PY,
        &[
            &script,
            "browse",
            "--addr",
            &addr,
            "--timeout",
            "60",
            "--expect",
            "3",
            "--until",
            "st=member",
        ],
    );
    let lines = |lab: &Lab| -> Vec<serde_json::Value> {
        lab.log(browser)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // Two forming nodes cannot form a cluster of three: the browser sees them forming first.
    wait::until(
        "the browser to resolve the two forming agents",
        Duration::from_secs(30),
        || {
            let forming = lines(&lab)
                .iter()
                .filter(|s| s["properties"]["st"] == "forming")
                .count();
            if forming >= 2 {
                Ok(())
            } else {
                Err(lab.log(browser))
            }
        },
    );
    agent(&mut lab, 2, "node-2", &[]);
    let status = wait::until(
        "the browser to see all three agents turn member",
        Duration::from_secs(60),
        || lab.exited(browser).ok_or_else(|| lab.log(browser)),
    );
    assert!(status.success(), "{}", lab.log(browser));
    let members: std::collections::BTreeSet<String> = lines(&lab)
        .iter()
        .filter(|s| s["properties"]["st"] == "member")
        .filter_map(|s| s["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(members.len(), 3, "{}", lab.log(browser));
}
