//! Raft leader failover of quorate agents: three voters in three lab hosts; kill -9 the leader
//! while a survivor that is not the leader starts a registry write (`POST /v1/labels`) at the
//! same instant; the time from the kill until that write is acknowledged as committed. Also
//! the group it runs on ([`form`], [`whole`]), which the consensus bench's latency and
//! throughput parts use too. Used by the consensus bench and the peers bench (beside etcd).
//! Does not report: the bench does.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::settle_after_restart;
use crate::support::http::{Stats, admin, request};
use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

fn status(lab: &Lab, i: usize) -> Option<Value> {
    crate::support::http::get(lab, i, "/v1/status")
}

/// The body of a `POST /v1/labels` that sets label `key` to `value`.
pub fn label_write(key: &str, value: &str) -> String {
    serde_json::json!({ "set": { key: value } }).to_string()
}

/// Starts 3 voters (host 0 bootstraps, 1 and 2 join) and waits until the group is whole.
/// With `CONSENSUS_LOGS` set, the agents log openraft's story too.
pub fn form(lab: &mut Lab) -> Vec<ProcId> {
    let seed = format!("{}:7947", lab.host(0).ip);
    let mut procs = Vec::new();
    for i in 0..3 {
        let data = lab.host_dir(i).join("data");
        let data = data.to_str().expect("utf-8").to_string();
        let name = format!("r{i}");
        let mut args = vec!["agent", "--data-dir", &data, "--name", &name];
        let log_config = lab.host_dir(i).join("log.toml");
        let log_config = log_config.to_str().expect("utf-8").to_string();
        if std::env::var_os("CONSENSUS_LOGS").is_some() {
            std::fs::write(
                &log_config,
                "log = \"info,openraft=info,openraft::replication=off\"\n",
            )
            .expect("log config");
            args.extend(["--config", &log_config]);
        }
        if i == 0 {
            args.push("--bootstrap");
        } else {
            args.extend(["--peers", &seed]);
        }
        procs.push(lab.spawn(i, &name, &args));
        if i == 0 {
            wait::until("the bootstrap", Duration::from_secs(30), || {
                status(lab, 0).ok_or("no status")
            });
        }
    }
    whole(lab);
    procs
}

/// Waits until every host sees 3 voters, the same leader, and the same applied index as the
/// leader; returns the leader's host.
pub fn whole(lab: &Lab) -> usize {
    wait::until("a whole group", Duration::from_secs(60), || {
        let views: Vec<Value> = (0..3)
            .map(|i| status(lab, i).ok_or(format!("host {i}: no status")))
            .collect::<Result<_, _>>()?;
        let leader = views[0]["leader_id"].clone();
        let voters = |v: &Value| {
            v["members"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["suffrage"] == "voter").count())
        };
        let commits: Vec<Value> = views.iter().map(|v| v["commit_index"].clone()).collect();
        if leader.is_null()
            || views
                .iter()
                .any(|v| v["leader_id"] != leader || voters(v) != 3)
            || commits.iter().any(|c| *c != commits[0])
        {
            return Err(format!(
                "leaders/commits: {:?}",
                views
                    .iter()
                    .map(|v| (v["leader_id"].clone(), v["commit_index"].clone()))
                    .collect::<Vec<_>>()
            ));
        }
        views
            .iter()
            .position(|v| v["node_id"] == leader)
            .ok_or_else(|| "leader not among hosts".to_string())
    })
}

/// `trials` failovers on one group: the milliseconds of each acknowledged write, and how many
/// writes failed. The victim is restarted and the group is whole again between trials (3
/// voters caught up, one leader, the restarted voter past its first second). With
/// `CONSENSUS_LOGS=DIR`, the agents' logs are kept in DIR.
pub fn failover(trials: usize) -> (Stats, usize) {
    let mut lab = Lab::new(3);
    let procs = form(&mut lab);
    let mut samples = Vec::new();
    let mut failed = 0;
    for t in 0..trials {
        let leader = whole(&lab);
        let writer = (leader + 1) % 3;
        let body = label_write("failover", &t.to_string());
        let killed = Instant::now();
        lab.kill9(procs[leader]);
        // The write starts right after the kill (entering the host's namespace takes well
        // under a millisecond), and counts from the kill.
        let token = admin(&lab, writer);
        let (acked, code) = lab.in_host(writer, move || {
            let r = request("POST", "/v1/labels", &body, Some(&token));
            (Instant::now(), r.map(|(c, _)| c))
        });
        let ms = acked.duration_since(killed).as_secs_f64() * 1000.0;
        if code == Some(200) {
            samples.push(ms);
            println!("trial {t}: leader r{leader} killed, write committed after {ms:.1} ms");
        } else {
            failed += 1;
            println!("trial {t}: the write failed ({code:?}) after {ms:.1} ms");
        }
        lab.restart(procs[leader]);
        let restarted = Instant::now();
        whole(&lab);
        settle_after_restart(restarted);
    }
    if let Some(dir) = std::env::var_os("CONSENSUS_LOGS") {
        for (i, p) in procs.iter().enumerate() {
            let path = std::path::Path::new(&dir).join(format!("r{i}.log"));
            std::fs::write(&path, lab.log(*p)).expect("keep log");
        }
    }
    (Stats(samples), failed)
}
