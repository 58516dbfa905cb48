//! Gossip failure detection of quorate agents: N agents gossiping through one seed, one killed
//! with kill -9, and the time until every survivor's gossip view (`/v1/members`, what
//! `quorate members` shows) reports it `failed`. Used by the gossip bench (at several sizes
//! and timings) and the peers bench (beside Serf). Does not report: the bench does.

use std::time::{Duration, Instant};

use crate::support::http::{Stats, get};
use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

/// The status host `i`'s gossip view gives the member named `name`.
pub fn status_of(lab: &Lab, i: usize, name: &str) -> Option<String> {
    let rows = get(lab, i, "/v1/members")?;
    rows.as_array()?
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| r["status"].as_str().unwrap_or("").to_string())
}

/// Starts `n` agents named `b0`.. in hosts 0.., gossiping through host 0 as their seed, with
/// the config file text `config` when given, and waits until every one sees all alive.
pub fn start(lab: &mut Lab, n: usize, config: Option<&str>) -> Vec<ProcId> {
    let seed = format!("{}:7946", lab.host(0).ip);
    let mut procs = Vec::new();
    for i in 0..n {
        let dir = lab.host_dir(i);
        let data = dir.join("data").to_str().expect("utf-8").to_string();
        let name = format!("b{i}");
        let mut args = vec![
            "agent".to_string(),
            "--data-dir".into(),
            data,
            "--name".into(),
            name.clone(),
        ];
        args.extend([
            "--log-format".into(),
            "json".into(),
            "--gossip-seeds".into(),
            seed.clone(),
        ]);
        if let Some(toml) = config {
            let path = dir.join("bench.toml");
            std::fs::write(&path, toml).expect("write config");
            args.extend(["--config".into(), path.to_str().expect("utf-8").into()]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        procs.push(lab.spawn(i, &name, &refs));
    }
    all_alive(lab, n);
    procs
}

/// Waits until each of the `n` hosts sees `n` members, all alive.
pub fn all_alive(lab: &Lab, n: usize) {
    for i in 0..n {
        wait::until("all members alive", Duration::from_secs(60), || {
            let rows = get(lab, i, "/v1/members").ok_or("no answer")?;
            let rows = rows.as_array().ok_or("not an array")?.clone();
            if rows.len() == n && rows.iter().all(|r| r["status"] == "alive") {
                Ok(())
            } else {
                Err(format!("{rows:?}"))
            }
        });
    }
}

/// Kills `proc` (host `victim` of `n`) with SIGKILL; the seconds until `failed(lab, i)` holds
/// for every other host `i` (60 s at most, else it panics with the hosts still waiting).
pub fn kill_until_reported(
    lab: &mut Lab,
    proc: ProcId,
    victim: usize,
    n: usize,
    failed: impl Fn(&Lab, usize) -> bool,
) -> f64 {
    lab.kill9(proc);
    let killed = Instant::now();
    let mut pending: Vec<usize> = (0..n).filter(|i| *i != victim).collect();
    while !pending.is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no failure report within 60 s: {pending:?}"
        );
        pending.retain(|i| !failed(lab, *i));
    }
    killed.elapsed().as_secs_f64()
}

/// `trials` times: kill -9 one of `n` agents (never the seed, a different one each time), and
/// measure the seconds until every survivor reports it `failed`; the victim is restarted and
/// all are alive again between trials.
pub fn detect(n: usize, config: Option<&str>, trials: usize) -> Stats {
    let mut lab = Lab::new(n);
    let procs = start(&mut lab, n, config);
    let mut samples = Vec::new();
    for t in 0..trials {
        let victim = 1 + t % (n - 1);
        let name = format!("b{victim}");
        let secs = kill_until_reported(&mut lab, procs[victim], victim, n, |lab, i| {
            status_of(lab, i, &name).as_deref() == Some("failed")
        });
        samples.push(secs);
        lab.restart(procs[victim]);
        all_alive(&lab, n);
    }
    Stats(samples)
}
