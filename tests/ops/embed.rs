//! Embedding and handlers with real processes: `examples/storage_node.rs`, a storage service
//! that runs a quorate node inside itself, joins a lab cluster with a token and prints the
//! events and membership views it is given; and `--on-event` handlers that record what the
//! event stream shows, while a failing and a slow handler neither block them nor the agent.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::agents::{agent, quic, status, wait_group};
use crate::support::http::request;
use crate::support::lab::Lab;
use crate::support::wait;

/// The example's executable, built with the same cargo and profile as this test (a no-op
/// when `cargo test` has built the examples already, as it does by default).
fn example(name: &str) -> PathBuf {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([
        "build",
        "--example",
        name,
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if env!("CARGO_BIN_EXE_quorate").contains("/release/") {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build --example {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("no executable for example {name} in cargo's messages"))
}

/// The JSON lines of a log whose `kind` is `kind` (what the example prints on stdout; the
/// node's own log lines have no `kind`).
fn printed(log: &str, kind: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["kind"] == kind)
        .collect()
}

/// The embedding example joins a one-voter lab cluster with a storage token, shows itself as
/// a learner in its membership view, and prints a `joined` event for a storage node started
/// after it; the events it prints carry indexes that only grow.
#[test]
fn the_embedding_example_joins_and_prints_a_later_join() {
    let program = example("storage_node");
    let mut lab = Lab::new(3);
    agent(&mut lab, 0, "v0", &["--bootstrap"]);
    wait_group(&lab, &[0], &[("v0", "voter")], Duration::from_secs(30));
    let out = lab.quorate_admin(0, &["token", "create", "--role", "storage", "--ttl", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let config = lab.host_dir(1).join("svc.toml");
    std::fs::write(&config, "name = \"svc\"\nlog_format = \"json\"\n").expect("config");
    let data = lab.host_dir(1).join("svc-data");
    let svc = lab.spawn_program(
        1,
        "svc",
        program.to_str().expect("utf-8 path"),
        &[
            "--join",
            &token,
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--config",
            config.to_str().expect("utf-8 path"),
        ],
    );
    wait::until(
        "the example to show itself a learner",
        Duration::from_secs(30),
        || {
            let log = lab.log(svc);
            printed(&log, "membership")
                .into_iter()
                .find(|v| {
                    v["members"].as_array().is_some_and(|ms| {
                        ms.iter()
                            .any(|m| m["name"] == "svc" && m["suffrage"] == "learner")
                    })
                })
                .ok_or(log)
        },
    );

    agent(&mut lab, 2, "s2", &["--role", "storage", "--join", &token]);
    let joined = wait::until(
        "the example to print s2's joined event",
        Duration::from_secs(30),
        || {
            let log = lab.log(svc);
            printed(&log, "event")
                .into_iter()
                .find(|e| e["type"] == "joined" && e["name"] == "s2")
                .ok_or(log)
        },
    );
    assert_eq!(joined["role"], "storage", "{joined}");
    let v0 = status(&lab, 0).expect("status");
    let s2_id = v0["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == "s2"))
        .map(|m| m["id"].clone())
        .expect("s2 in v0's status");
    assert_eq!(joined["node"], s2_id, "the event names s2's id");
    let events = printed(&lab.log(svc), "event");
    let decided: Vec<u64> = events
        .iter()
        .filter_map(|e| e["index"].as_str()?.parse().ok())
        .collect();
    assert!(
        decided.windows(2).all(|w| w[0] < w[1]),
        "indexes only grow, none twice: {decided:?}"
    );
}

/// The indexes and types of the decided events in a list of event JSON objects.
fn decided(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| {
            Some((
                e["index"].as_str()?.to_string(),
                e["type"].as_str()?.to_string(),
            ))
        })
        .filter(|(i, _)| !i.contains('.'))
        .collect()
}

/// Reads a handler's record (one event JSON per line).
fn record(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A voter runs three handlers: one records every event it is given (stdin JSON, and the
/// `QUORATE_EVENT_*` variables), one fails on every event, one outlives its timeout. The
/// recorder's list is the event stream's (the same decided events, in order, none twice), a
/// storage node killed -9 reaches it as `failed` then `removed`, the failures and the timeouts
/// are counted, and after the agent is killed -9 right after a handler ran and restarted, the
/// recorder gets the next event once, without the events it handled before again.
#[test]
fn handlers_record_the_stream_and_a_failing_or_slow_one_holds_nothing_up() {
    let mut lab = Lab::new(3);
    let dir = lab.host_dir(0);
    let log = dir.join("handled.jsonl");
    let vars = dir.join("vars.txt");
    let config = dir.join("handlers.toml");
    std::fs::write(
        &config,
        format!(
            "event_handler_timeout = \"1s\"\non_event = [\n  \"*=cat >> {log}\",\n  \"*=echo \\\"$QUORATE_EVENT_INDEX $QUORATE_EVENT_TYPE $QUORATE_EVENT_NODE\\\" >> {vars}\",\n  \"labels_changed,failed=exit 3\",\n  \"removed=sleep 30\",\n]\n[raft]\nfailed_grace = \"3s\"\nvoter_target = 1\n",
            log = log.display(),
            vars = vars.display()
        ),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8").to_string();
    let v0 = agent(&mut lab, 0, "v0", &["--bootstrap", "--config", &config]);
    let seed = quic(&lab, 0);
    agent(&mut lab, 1, "s1", &["--peers", &seed, "--role", "storage"]);
    let s2 = agent(&mut lab, 2, "s2", &["--peers", &seed, "--role", "storage"]);
    wait_group(
        &lab,
        &[0, 1, 2],
        &[("v0", "voter"), ("s1", "learner"), ("s2", "learner")],
        Duration::from_secs(30),
    );
    let ok = lab.quorate_admin(0, &["label", "set", "zone=a"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    wait::until("s2 alive on v0", Duration::from_secs(15), || {
        let st = status(&lab, 0)?;
        let alive = st["members"].as_array().is_some_and(|ms| {
            ms.iter()
                .any(|m| m["name"] == "s2" && m["liveness"] == "alive")
        });
        if alive { Ok(()) } else { Err(st.to_string()) }
    });
    lab.kill9(s2);
    let removed = wait::until(
        "the recorder to get s2's removal",
        Duration::from_secs(40),
        || {
            let got = record(&log);
            got.iter()
                .find(|e| e["type"] == "removed")
                .cloned()
                .ok_or(format!("{got:?}"))
        },
    );
    let mut got = record(&log);
    let pos = |t: &str| {
        got.iter()
            .position(|e| e["type"] == t && e["node"] == removed["node"])
    };
    assert!(
        pos("failed").is_some() && pos("failed") < pos("removed"),
        "failed before removed: {got:?}"
    );
    got.truncate(pos("removed").map_or(0, |p| p + 1));

    // The stream from the beginning has exactly the recorder's decided events.
    // The stream of everything the node retains, through `quorate watch`.
    let from_start = lab
        .in_host(0, || {
            Command::new(env!("CARGO_BIN_EXE_quorate"))
                .args(["watch", "--json", "--after", "0"])
                .stdout(std::process::Stdio::piped())
                .spawn()
        })
        .expect("quorate watch");
    let watched = watch_until(from_start, &removed);
    assert_eq!(
        decided(&got),
        decided(&watched),
        "the recorder's decided events are the stream's"
    );
    let unique: BTreeSet<String> = got
        .iter()
        .filter_map(|e| e["index"].as_str().map(String::from))
        .collect();
    assert_eq!(unique.len(), got.len(), "no event handled twice: {got:?}");
    let lines = std::fs::read_to_string(&vars).unwrap_or_default();
    assert!(
        lines.lines().any(|l| l.ends_with(&format!(
            "removed {}",
            removed["node"].as_str().expect("node")
        ))),
        "the variables name the event: {lines}"
    );

    let counted = wait::until(
        "the handler outcomes counted",
        Duration::from_secs(10),
        || {
            let m = lab
                .in_host(0, || request("GET", "/v1/metrics", "", None))
                .ok_or("no answer")?
                .1;
            let h = &m["handlers"];
            if h["handler_runs_failed"].as_u64() >= Some(2)
                && h["handler_runs_timed_out"].as_u64() >= Some(1)
            {
                Ok(h.clone())
            } else {
                Err(m.to_string())
            }
        },
    );
    assert!(
        counted["handler_runs_succeeded"].as_u64() >= Some(got.len() as u64),
        "{counted}"
    );

    // Killed -9 right after the recorder handled its last event and saved its position, the
    // agent restarts: the recorder resumes after what it handled, so the events re-applied at
    // start are not handed to it again; the next write reaches it once.
    let handled = record(&log);
    let before = handled.len();
    let last: u64 = decided(&handled)
        .last()
        .and_then(|(i, _)| i.parse().ok())
        .expect("a decided event handled");
    let key = format!("*=cat >> {}", log.display());
    let positions = dir.join("data").join(quorate::handlers::POSITIONS_FILE);
    wait::until(
        "the recorder's position saved",
        Duration::from_secs(10),
        || {
            let saved: Value = std::fs::read(&positions)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or("no positions file yet")?;
            match saved[&key].as_u64() {
                Some(p) if p >= last => Ok(()),
                _ => Err(format!("{saved} (handled up to {last})")),
            }
        },
    );
    lab.kill9(v0);
    lab.restart(v0);
    wait_group(
        &lab,
        &[0],
        &[("s1", "learner"), ("v0", "voter")],
        Duration::from_secs(30),
    );
    let ok = lab.quorate_admin(0, &["label", "set", "zone=b"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let after = wait::until(
        "the write after the restart handled",
        Duration::from_secs(20),
        || {
            let got = record(&log);
            if got
                .iter()
                .any(|e| e["type"] == "labels_changed" && e["labels"]["zone"] == "b")
            {
                Ok(got)
            } else {
                Err(format!("{got:?}"))
            }
        },
    );
    // Decided indexes only: local ones are this run's observations and may be numbered anew.
    let old: BTreeSet<(String, String)> = decided(&after[..before]).into_iter().collect();
    let fresh = decided(&after[before..]);
    assert!(
        !fresh.is_empty() && fresh.iter().all(|e| !old.contains(e)),
        "nothing handled before the restart is handled again: {fresh:?}"
    );
}

/// Reads `quorate watch --json` until an event equal in index to `last` arrives; returns them.
fn watch_until(mut child: std::process::Child, last: &Value) -> Vec<Value> {
    use std::io::BufRead;
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                let done = v["index"] == last["index"];
                seen.push(v);
                if done {
                    break;
                }
            }
            Err(_) => {
                let _ = child.kill();
                panic!("watch did not reach {last} within 20 s; saw {seen:?}");
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}
