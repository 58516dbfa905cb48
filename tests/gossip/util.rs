//! Agents with gossip in lab hosts, and their `quorate members` view.

use std::time::Duration;

use crate::support::lab::{Lab, ProcId};
use crate::support::{agents, http, wait};

/// Starts an agent in host `i` with `extra` flags, seeded with host 0's gossip address (mDNS
/// would find the peers too; the seed makes the test independent of it), and waits until it
/// runs.
pub(crate) fn agent(lab: &mut Lab, i: usize, label: &str, extra: &[&str]) -> ProcId {
    let seed = format!("{}:7946", lab.host(0).ip);
    let mut args = vec!["--gossip-seeds", &seed];
    args.extend_from_slice(extra);
    agents::agent(lab, i, label, &args)
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

/// `/v1/metrics` of the agent in host `i`, gossip section (`Null` when it does not answer).
pub(crate) fn metrics(lab: &Lab, i: usize) -> serde_json::Value {
    http::get(lab, i, "/v1/metrics")
        .map(|v| v["gossip"].clone())
        .unwrap_or_default()
}
