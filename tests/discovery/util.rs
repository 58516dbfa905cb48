//! Starting agents in lab hosts and running `quorate discover` there.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::agents;
use crate::support::lab::{Lab, ProcId};

/// Starts an agent in host `i` and waits until it advertises; returns it and its node id.
pub(crate) fn agent(lab: &mut Lab, i: usize, name: &str, extra: &[&str]) -> (ProcId, String) {
    // Announced: probing is over and the records are out, so queries get answers.
    let p = agents::start_until(
        lab,
        i,
        name,
        &format!("data-{name}"),
        extra,
        "mdns announced",
    );
    let id = lab.log_events(p, "node identity ready")[0]["node_id"]
        .as_str()
        .expect("node_id")
        .to_string();
    (p, id)
}

/// Runs `quorate discover ARGS` in host `i`; returns its output and how long it took.
pub(crate) fn discover(lab: &Lab, i: usize, args: &[&str]) -> (Output, Duration) {
    let mut all = vec!["discover"];
    all.extend_from_slice(args);
    let start = Instant::now();
    let out = lab.quorate(i, &all);
    (out, start.elapsed())
}

/// Parses `--json` output, failing with the whole output when it is not one JSON array.
pub(crate) fn json(out: &Output) -> Vec<serde_json::Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Array(a)) => a,
        other => panic!(
            "not a JSON array ({other:?}): {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The `id`s in a JSON listing, sorted.
pub(crate) fn ids(peers: &[serde_json::Value]) -> Vec<String> {
    let mut ids: Vec<String> = peers
        .iter()
        .map(|p| p["id"].as_str().unwrap_or_default().to_string())
        .collect();
    ids.sort();
    ids
}

/// Sorted copy.
pub(crate) fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}
