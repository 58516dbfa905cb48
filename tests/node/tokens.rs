//! Join tokens: a good token admits a node in its role; every kind of bad token is refused
//! with its own message and changes nothing.

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::agents::{agent, mdns_browsing, quic, status, wait_group, wait_not_browsing};
use crate::support::lab::Lab;
use crate::support::wait;

/// `quorate token create ARGS` on host `i`: the token.
pub(crate) fn create(lab: &Lab, i: usize, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let out = lab.quorate_admin(i, &all);
    assert!(
        out.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        token.starts_with("qrt1-"),
        "only the token is printed: {token:?}"
    );
    token
}

fn tokens(lab: &Lab, i: usize) -> Vec<Value> {
    let out = lab.quorate_admin(i, &["token", "list", "--json"]);
    assert!(
        out.status.success(),
        "token list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Runs a joiner in host `i` to its end (it must stop by itself: a refusal).
fn refused_join(lab: &Lab, i: usize, dir: &str, args: &[&str]) -> Output {
    let data = lab.host_dir(i).join(dir);
    let data = data.to_str().expect("utf-8").to_string();
    let mut all = vec!["agent", "--data-dir", &data, "--name", "joiner"];
    all.extend_from_slice(args);
    lab.quorate(i, &all)
}

/// The registry's view that a refusal must leave alone: members and token uses.
fn registry(lab: &Lab) -> (Vec<String>, Vec<(String, u64, bool)>) {
    let st = status(lab, 0).expect("status");
    let mut members: Vec<String> = st["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|m| m["id"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    members.sort();
    let mut t: Vec<(String, u64, bool)> = tokens(lab, 0)
        .iter()
        .map(|t| {
            (
                t["id"].as_str().unwrap_or("").to_string(),
                t["uses"].as_u64().unwrap_or(0),
                t["revoked"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    t.sort();
    (members, t)
}

/// A storage token admits a node as a learner on every voter (timed from its process start;
/// the benchmark holds the figure); a voter token on a one-voter cluster gets the node promoted
/// once caught up; mutating requests without the admin credential get 401 and change nothing.
#[test]
fn good_tokens_admit_nodes_in_their_role() {
    let mut lab = Lab::new(4);
    agent(&mut lab, 0, "t0", &["--bootstrap"]);
    wait_group(&lab, &[0], &[("t0", "voter")], Duration::from_secs(30));

    // No credential: 401, and nothing is created.
    let out = lab.quorate(0, &["token", "create", "--admin-token", "wrong"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tokens(&lab, 0).is_empty(),
        "a refused request created a token"
    );

    let voter = create(&lab, 0, &["--role", "voter", "--ttl", "10m"]);
    agent(&mut lab, 1, "t1", &["--join", &voter]);
    wait_group(
        &lab,
        &[0, 1],
        &[("t0", "voter"), ("t1", "voter")],
        Duration::from_secs(30),
    );

    let storage = create(&lab, 0, &["--role", "storage", "--uses", "2"]);
    let started = Instant::now();
    agent(
        &mut lab,
        2,
        "t2",
        &["--role", "storage", "--join", &storage],
    );
    let took = wait::until(
        "t2 a learner on every voter",
        Duration::from_secs(15),
        || {
            for i in [0, 1] {
                let st = status(&lab, i)?;
                let ok = st["members"].as_array().is_some_and(|m| {
                    m.iter()
                        .any(|m| m["name"] == "t2" && m["suffrage"] == "learner")
                });
                if !ok {
                    return Err(format!("host {i}: {}", st["members"]));
                }
            }
            Ok(started.elapsed())
        },
    );
    println!("storage token join: a learner on every voter {took:?} after the process started");
    // A storage node whose token names the voters' addresses never browses mDNS (N browsers
    // refresh N² records), and still advertises: `quorate discover` on another host finds
    // it, a member. Voters browse on.
    wait_not_browsing(&lab, 2, Duration::from_secs(10));
    assert_eq!(mdns_browsing(&lab, 0), Ok(1), "a voter browses on");
    let out = lab.quorate(
        3,
        &[
            "discover",
            "--json",
            "--role",
            "storage",
            "--expect",
            "1",
            "--timeout",
            "5s",
        ],
    );
    let found: Vec<Value> = serde_json::from_slice(&out.stdout).expect("discover --json");
    assert!(
        found
            .iter()
            .any(|p| p["name"] == "t2" && p["state"] == "member"),
        "t2 still advertises, a member: {found:?}"
    );
    let listed = tokens(&lab, 0);
    assert!(
        listed
            .iter()
            .any(|t| t["role"] == "storage" && t["uses"] == 1 && t["state"] == "valid"),
        "{listed:?}"
    );
    assert!(
        !format!("{listed:?}").contains("qrt1-"),
        "the list never shows tokens"
    );
    // The joiner's gossip is the cluster's: it sees every member.
    wait::until(
        "t2's gossip to see all three",
        Duration::from_secs(15),
        || {
            let out = lab.quorate(2, &["members", "--json"]);
            let rows: Vec<Value> =
                serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            if rows.len() == 3 && rows.iter().all(|r| r["status"] == "alive") {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        },
    );
}

/// Expired, revoked, used-up, malformed, wrong-role and another cluster's tokens: each refused
/// with a message saying which, the agent exits, and the registry is unchanged.
#[test]
fn every_bad_token_is_refused_with_its_own_message() {
    let mut lab = Lab::new(3);
    agent(&mut lab, 0, "b0", &["--bootstrap"]);
    wait_group(&lab, &[0], &[("b0", "voter")], Duration::from_secs(30));

    let expired = create(&lab, 0, &["--role", "storage", "--ttl", "1s"]);
    let revoked = create(&lab, 0, &["--role", "storage"]);
    // Revoke the second token: its id is the newest one that is still valid.
    let list = tokens(&lab, 0);
    let newest = list
        .iter()
        .filter(|t| t["state"] == "valid")
        .max_by_key(|t| t["expires_ms"].as_u64().unwrap_or(0))
        .and_then(|t| t["id"].as_str())
        .expect("a valid token")
        .to_string();
    let out = lab.quorate_admin(0, &["token", "revoke", &newest]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let once = create(&lab, 0, &["--role", "storage", "--uses", "1"]);
    agent(&mut lab, 1, "b1", &["--role", "storage", "--join", &once]);
    wait_group(
        &lab,
        &[0],
        &[("b0", "voter"), ("b1", "learner")],
        Duration::from_secs(30),
    );
    let voter_only = create(&lab, 0, &["--role", "voter"]);
    wait::until("the short token to expire", Duration::from_secs(10), || {
        let list = tokens(&lab, 0);
        if list.iter().any(|t| t["state"] == "expired") {
            Ok(())
        } else {
            Err(format!("{list:?}"))
        }
    });

    // Another cluster's token: made by a one-node cluster in host 2, which then goes away.
    let other = agent(
        &mut lab,
        2,
        "other",
        &["--bootstrap", "--cluster", "default"],
    );
    wait_group(&lab, &[2], &[("other", "voter")], Duration::from_secs(30));
    let foreign = create(&lab, 2, &["--role", "storage"]);
    let st = lab.stop(other, Duration::from_secs(15));
    assert!(st.success());

    let before = registry(&lab);
    let seed = quic(&lab, 0);
    let mut malformed = once.clone();
    malformed.replace_range(10..11, if &once[10..11] == "A" { "B" } else { "A" });
    let cases: Vec<(&str, String, Vec<&str>, i32, &str)> = vec![
        ("expired", expired, vec!["--role", "storage"], 1, "expired"),
        ("revoked", revoked, vec!["--role", "storage"], 1, "revoked"),
        (
            "used up",
            once.clone(),
            vec!["--role", "storage"],
            1,
            "used up",
        ),
        (
            "wrong role",
            voter_only,
            vec!["--role", "storage"],
            1,
            "grants role",
        ),
        (
            "malformed",
            malformed,
            vec!["--role", "storage"],
            2,
            "malformed join token",
        ),
        (
            "another cluster",
            foreign,
            vec!["--role", "storage", "--peers", &seed],
            1,
            "another cluster",
        ),
    ];
    for (what, token, extra, code, says) in cases {
        let mut args = vec!["--join", token.as_str()];
        args.extend(extra.iter().copied());
        let out = refused_join(&lab, 2, &format!("bad-{}", what.replace(' ', "-")), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| l.starts_with("error:"))
            .unwrap_or_default();
        assert_eq!(out.status.code(), Some(code), "{what}: {err}");
        assert!(
            last.contains(says),
            "{what}: the refusal should say {says:?}; it said {last:?}"
        );
    }
    assert_eq!(registry(&lab), before, "refusals changed the registry");
}
