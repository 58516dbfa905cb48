//! Agents in lab hosts: starting one and waiting until it runs, and reading and awaiting the
//! Raft group it reports through `quorate status`. Shared by the consensus and node binaries
//! (and the agent start by every binary that runs agents).

use std::time::Duration;

use serde_json::Value;

use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

/// The QUIC address of host `i`'s agent.
pub fn quic(lab: &Lab, i: usize) -> String {
    format!("{}:7947", lab.host(i).ip)
}

/// Starts `quorate agent` named `name` in host `i` with data dir `host_dir(i)/DATA` and `extra`
/// flags, and waits until it logs `event` (e.g. `agent running`, `mdns announced`).
pub fn start_until(
    lab: &mut Lab,
    i: usize,
    name: &str,
    data: &str,
    extra: &[&str],
    event: &str,
) -> ProcId {
    let p = lab.spawn_agent(i, name, data, extra);
    wait::until(
        &format!("{name} to log {event:?}"),
        Duration::from_secs(10),
        || lab.log_events(p, event).pop().ok_or_else(|| lab.log(p)),
    );
    p
}

/// Starts an agent named `name` in host `i` (data dir `data`) with `extra` flags and waits
/// until it runs.
pub fn agent(lab: &mut Lab, i: usize, name: &str, extra: &[&str]) -> ProcId {
    start_until(lab, i, name, "data", extra, "agent running")
}

/// `quorate status --json` in host `i`.
pub fn status(lab: &Lab, i: usize) -> Result<Value, String> {
    let out = lab.quorate(i, &["status", "--json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Whether host `i`'s agent browses mDNS (`discovery.browsing` in `/v1/metrics`: 1 or 0).
pub fn mdns_browsing(lab: &Lab, i: usize) -> Result<u64, String> {
    let m = crate::support::http::get(lab, i, "/v1/metrics").ok_or("no metrics")?;
    m["discovery"]["browsing"]
        .as_u64()
        .ok_or_else(|| format!("no discovery.browsing in {}", m["discovery"]))
}

/// Waits until host `i`'s agent does not browse mDNS.
pub fn wait_not_browsing(lab: &Lab, i: usize, within: Duration) {
    wait::until(
        &format!("host {i} not to browse mdns"),
        within,
        || match mdns_browsing(lab, i)? {
            0 => Ok(()),
            b => Err(format!("browsing = {b}")),
        },
    );
}

/// `(name, suffrage)` of every member in a status, sorted by name.
pub fn suffrages(status: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = status["members"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        m["name"].as_str().unwrap_or("?").to_string(),
                        m["suffrage"].as_str().unwrap_or("?").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The name of the leader in a status.
pub fn leader_name(status: &Value) -> Option<String> {
    let leader = status["leader_id"].as_str()?;
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == leader)
        .and_then(|m| m["name"].as_str())
        .map(str::to_string)
}

/// The labels of the member named `name` in a status.
pub fn labels_of(status: &Value, name: &str) -> Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .map(|m| m["labels"].clone())
        .unwrap_or(Value::Null)
}

/// Waits until every host in `hosts` sees exactly `want` as `(name, suffrage)` and the same
/// leader; returns that leader's name.
pub fn wait_group(lab: &Lab, hosts: &[usize], want: &[(&str, &str)], within: Duration) -> String {
    wait_group_led(lab, hosts, want, None, within)
}

/// As [`wait_group`], with a leader other than `not`.
pub fn wait_group_led(
    lab: &Lab,
    hosts: &[usize],
    want: &[(&str, &str)],
    not: Option<&str>,
    within: Duration,
) -> String {
    let mut want: Vec<(String, String)> = want
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    want.sort();
    wait::until(
        &format!("hosts {hosts:?} to agree on {want:?} and one leader"),
        within,
        || {
            let mut leaders = Vec::new();
            for &i in hosts {
                let st = status(lab, i).map_err(|e| format!("host {i}: {e}"))?;
                let seen = suffrages(&st);
                if seen != want {
                    return Err(format!("host {i} sees {seen:?}"));
                }
                leaders.push(leader_name(&st));
            }
            match leaders.first() {
                Some(Some(l))
                    if Some(l.as_str()) != not
                        && leaders.iter().all(|x| x.as_deref() == Some(l.as_str())) =>
                {
                    Ok(l.clone())
                }
                _ => Err(format!("leaders {leaders:?}")),
            }
        },
    )
}
