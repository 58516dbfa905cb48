//! Zero-configuration formation of quorate agents: three agents with no cluster flags started
//! at the same instant (behind a start gate released at once) in three lab hosts (fresh data dirs, a cluster name per trial), timed
//! until every node's `quorate status` shows one cluster, one leader and three voters, with
//! what each node logged when. Used by the formation bench (with the timeline) and the peers
//! bench (beside Serf). Does not report: the bench does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::support::agents::status;
use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

/// One trial: how long formation took, and what each node logged when.
pub struct Trial {
    /// From the start of the three agents until all showed one formed cluster.
    pub took: Duration,
    /// Per node name: (ms since the start, message), first occurrence of each message.
    pub timeline: BTreeMap<String, Vec<(f64, String)>>,
}

/// Whether every host shows one cluster, one leader and three voters.
pub fn formed(lab: &Lab) -> Result<(), String> {
    let views: Vec<Value> = (0..3)
        .map(|i| status(lab, i).map_err(|e| format!("host {i}: {e}")))
        .collect::<Result<_, _>>()?;
    let ids: Vec<&str> = views
        .iter()
        .map(|v| v["cluster_id"].as_str().unwrap_or(""))
        .collect();
    let voters = |v: &Value| {
        v["members"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["suffrage"] == "voter").count())
    };
    let leaders: Vec<&str> = views
        .iter()
        .map(|v| v["leader_id"].as_str().unwrap_or(""))
        .collect();
    if views.iter().all(|v| voters(v) == 3)
        && ids.iter().all(|i| *i == ids[0])
        && leaders.iter().all(|l| !l.is_empty() && *l == leaders[0])
    {
        Ok(())
    } else {
        Err(format!("clusters {ids:?}, leaders {leaders:?}"))
    }
}

/// The first time each message appears in a process's JSON log, in ms after `start`.
fn timeline(lab: &Lab, p: ProcId, start: SystemTime) -> Vec<(f64, String)> {
    let mut seen: Vec<(f64, String)> = Vec::new();
    for line in lab.log(p).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let (Some(ts), Some(msg)) = (v["timestamp"].as_str(), v["message"].as_str()) else {
            continue;
        };
        let Ok(at) = humantime::parse_rfc3339_weak(ts) else {
            continue;
        };
        let ms = match at.duration_since(start) {
            Ok(d) => d.as_secs_f64() * 1000.0,
            Err(e) => -(e.duration().as_secs_f64() * 1000.0),
        };
        if !seen.iter().any(|(_, m)| m == msg) {
            seen.push((ms, msg.to_string()));
        }
    }
    seen
}

/// Trial number `round` in a lab of three hosts: starts the agents, waits (60 s at most) until
/// they formed, then stops them.
pub fn trial(lab: &mut Lab, round: usize) -> Trial {
    // Started behind a gate, released together: the same instant, not one after another.
    let mut gate = lab.gate(&format!("formation-{round}"));
    let procs: Vec<(String, ProcId)> = (0..3)
        .map(|i| {
            let name = format!("f{i}");
            let p = lab.spawn_agent_gated(
                i,
                &format!("{name}-{round}"),
                &gate,
                &name,
                &format!("data-{round}"),
                &["--cluster", &format!("bench{round}")],
            );
            (name, p)
        })
        .collect();
    let start_wall = SystemTime::now();
    let start = Instant::now();
    gate.release(procs.len());
    wait::until(
        &format!("trial {round}: one cluster of three voters"),
        Duration::from_secs(60),
        || formed(lab),
    );
    let took = start.elapsed();
    let timeline = procs
        .iter()
        .map(|(name, p)| (name.clone(), timeline(lab, *p, start_wall)))
        .collect();
    for (_, p) in procs {
        lab.stop(p, Duration::from_secs(15));
    }
    Trial { took, timeline }
}
