//! One-shot listings: fields, formats, filters, `--expect` and exit codes.

use std::time::Duration;

use crate::support::lab::Lab;
use crate::util::{agent, discover, ids, json, sorted};

/// With nobody out there `--json` prints `[]` and exits 1.
#[test]
fn nothing_found_prints_an_empty_list_and_exits_1() {
    let lab = Lab::new(1);
    let (out, _) = discover(&lab, 0, &["--json", "--timeout", "500ms"]);
    assert_eq!(out.status.code(), Some(1), "nothing found is exit 1");
    assert_eq!(json(&out).len(), 0);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
}

/// Three agents in hosts 0 to 2 (two clusters, both roles); returns their ids.
fn three_agents(lab: &mut Lab) -> (String, String, String) {
    let (_, a0) = agent(lab, 0, "alpha-0", &[]);
    let (_, a1) = agent(lab, 1, "alpha-1", &["--role", "storage"]);
    let (_, a2) = agent(
        lab,
        2,
        "beta-2",
        &[
            "--cluster",
            "beta",
            "--gossip-port",
            "8946",
            "--quic-port",
            "8947",
        ],
    );
    (a0, a1, a2)
}

/// With three agents (two clusters, both roles), `--expect 3 --json` from a fourth host lists
/// exactly those three with the right fields.
#[test]
fn three_agents_are_listed_with_their_fields() {
    let mut lab = Lab::new(4);
    let (a0, a1, a2) = three_agents(&mut lab);
    let (out, took) = discover(&lab, 3, &["--expect", "3", "--json", "--timeout", "10s"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers = json(&out);
    assert_eq!(
        ids(&peers),
        sorted(vec![a0.clone(), a1.clone(), a2.clone()]),
        "exactly the three agents"
    );
    for (i, id, name, cluster, role, quic, gossip) in [
        (0, &a0, "alpha-0", "default", "voter", 7947, 7946),
        (1, &a1, "alpha-1", "default", "storage", 7947, 7946),
        (2, &a2, "beta-2", "beta", "voter", 8947, 8946),
    ] {
        let p = peers.iter().find(|p| p["id"] == **id).expect("listed");
        let ip = lab.host(i).ip.to_string();
        assert_eq!(p["name"], name, "{p}");
        assert_eq!(p["cluster"], cluster, "{p}");
        assert_eq!(p["role"], role, "{p}");
        assert_eq!(p["state"], "forming", "{p}");
        assert_eq!(p["port"], quic, "{p}");
        assert_eq!(p["gossip_port"], gossip, "{p}");
        assert_eq!(p["api_port"], 7948, "{p}");
        assert_eq!(p["version"], env!("CARGO_PKG_VERSION"), "{p}");
        assert_eq!(p["txt"]["id"], **id, "{p}");
        assert_eq!(
            p["addrs"][0], ip,
            "the host's IPv4 address comes first: {p}"
        );
    }
    println!("discover --expect 3 took {took:?}");
}

/// `--quiet` and `--format lines` give the same addresses as `--json`.
#[test]
fn quiet_and_lines_give_the_addresses_json_gives() {
    let mut lab = Lab::new(4);
    three_agents(&mut lab);
    let (out, _) = discover(&lab, 3, &["--expect", "3", "--json", "--timeout", "10s"]);
    let peers = json(&out);
    let expected_addrs = sorted(
        peers
            .iter()
            .map(|p| format!("{}:{}", p["addrs"][0].as_str().expect("addr"), p["port"]))
            .collect(),
    );
    assert_eq!(expected_addrs.len(), 3, "{peers:?}");
    let (out, _) = discover(&lab, 3, &["--expect", "3", "--quiet", "--timeout", "10s"]);
    assert_eq!(out.status.code(), Some(0));
    let quiet = String::from_utf8_lossy(&out.stdout);
    assert_eq!(quiet.lines().count(), 1, "one line: {quiet:?}");
    assert_eq!(
        sorted(quiet.trim().split(',').map(str::to_string).collect()),
        expected_addrs
    );
    let (out, _) = discover(
        &lab,
        3,
        &["--expect", "3", "--format", "lines", "--timeout", "10s"],
    );
    let lines = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        sorted(lines.lines().map(str::to_string).collect()),
        expected_addrs
    );
}

/// Each filter selects exactly its peers; a filter that matches nobody waits out the timeout
/// and exits 1 with `[]`.
#[test]
fn each_filter_selects_exactly_its_peers() {
    let mut lab = Lab::new(4);
    let (a0, a1, a2) = three_agents(&mut lab);
    for (filter, want) in [
        (
            vec!["--cluster", "default", "--expect", "2"],
            vec![&a0, &a1],
        ),
        (vec!["--role", "storage", "--expect", "1"], vec![&a1]),
        (vec!["--txt", "cl=beta", "--expect", "1"], vec![&a2]),
        (
            vec!["--cluster", "default", "--role", "voter", "--expect", "1"],
            vec![&a0],
        ),
    ] {
        let mut args = vec!["--json", "--timeout", "10s"];
        args.extend(filter.iter());
        let (out, _) = discover(&lab, 3, &args);
        assert_eq!(out.status.code(), Some(0), "{filter:?}");
        assert_eq!(
            ids(&json(&out)),
            sorted(want.into_iter().cloned().collect()),
            "filter {filter:?}"
        );
    }
    let (out, _) = discover(
        &lab,
        3,
        &["--json", "--timeout", "300ms", "--cluster", "nobody"],
    );
    assert_eq!((out.status.code(), json(&out).len()), (Some(1), 0));
}

/// `--expect 5 --timeout 1s` with three agents out there exits 1 after about a second and still
/// prints the three it found.
#[test]
fn too_few_peers_exit_1_after_the_timeout_with_what_was_found() {
    let mut lab = Lab::new(4);
    three_agents(&mut lab);
    // All three are heard first, so that the wait below is the timeout's alone.
    let (out, _) = discover(&lab, 3, &["--expect", "3", "--json", "--timeout", "10s"]);
    assert_eq!(json(&out).len(), 3);
    let (out, took) = discover(&lab, 3, &["--expect", "5", "--timeout", "1s", "--json"]);
    assert_eq!(out.status.code(), Some(1), "fewer than --expect is exit 1");
    assert_eq!(json(&out).len(), 3, "still prints what it found");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1800),
        "took {took:?}"
    );
}

/// A dev-mode agent keeps to loopback: a browser on another host never hears of it, while it
/// hears of a normal agent.
#[test]
fn a_dev_agent_is_not_advertised_on_the_lan() {
    let mut lab = Lab::new(3);
    let dev = lab.spawn(0, "dev", &["agent", "--dev", "--log-format", "json"]);
    crate::support::wait::until(
        "the dev agent to advertise",
        Duration::from_secs(10),
        || {
            if lab.log(dev).contains("mdns announced") {
                Ok(())
            } else {
                Err(lab.log(dev))
            }
        },
    );
    let (_, normal) = agent(&mut lab, 1, "normal", &[]);
    let (out, _) = discover(&lab, 2, &["--json", "--timeout", "1500ms"]);
    assert_eq!(
        ids(&json(&out)),
        vec![normal],
        "only the normal agent is on the LAN"
    );
}
