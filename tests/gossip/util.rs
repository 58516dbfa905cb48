//! Agents with gossip in lab hosts, and their `quorate members` view.

use std::time::Duration;

use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

/// Starts an agent in host `i` with `extra` flags, seeded with host 0's gossip address (mDNS
/// would find the peers too; the seed makes the test independent of it).
pub(crate) fn agent(lab: &mut Lab, i: usize, label: &str, extra: &[&str]) -> ProcId {
    let seed = format!("{}:7946", lab.host(0).ip);
    let mut args = vec!["--gossip-seeds", &seed];
    args.extend_from_slice(extra);
    let p = lab.spawn_agent(i, label, "data", &args);
    wait::until(&format!("{label} to run"), Duration::from_secs(10), || {
        lab.log_events(p, "agent running")
            .pop()
            .ok_or_else(|| lab.log(p))
    });
    p
}

/// `quorate members --json` in host `i`: `(name, status, generation)` sorted by name.
pub(crate) fn members(lab: &Lab, i: usize) -> Result<Vec<(String, String, u64)>, String> {
    let out = lab.quorate(i, &["members", "--json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))?;
    let mut v: Vec<(String, String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["status"].as_str().unwrap_or_default().to_string(),
                r["generation"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Waits until host `i` sees exactly `want` as `(name, status)`, sorted by name.
pub(crate) fn wait_view(
    lab: &Lab,
    i: usize,
    want: &[(&str, &str)],
    within: Duration,
) -> Vec<(String, String, u64)> {
    wait::until(&format!("host {i} to see {want:?}"), within, || {
        let seen = members(lab, i)?;
        let pairs: Vec<(&str, &str)> = seen
            .iter()
            .map(|(n, s, _)| (n.as_str(), s.as_str()))
            .collect();
        if pairs == want {
            Ok(seen.clone())
        } else {
            Err(format!("{seen:?}"))
        }
    })
}

/// `/v1/metrics` of the agent in host `i`, gossip section.
pub(crate) fn metrics(lab: &Lab, i: usize) -> serde_json::Value {
    let body = http_get(lab, i, "/v1/metrics");
    serde_json::from_str::<serde_json::Value>(&body)
        .map(|v| v["gossip"].clone())
        .unwrap_or_default()
}

/// A GET to the agent's API inside host `i`: the body, empty when it does not answer.
pub(crate) fn http_get(lab: &Lab, i: usize, path: &str) -> String {
    let path = path.to_string();
    lab.in_host(i, move || {
        crate::support::http::request("GET", &path, "", None)
    })
    .map(|(_, v)| v.to_string())
    .unwrap_or_default()
}
