//! Benchmark: how fast `quorate discover --expect N --json` finds N agents in the LAN lab,
//! over back-to-back calls, beside a naive multicast browse (mdns-sd `browse` in a fresh
//! daemon per call). Writes the figures to `benches/results/discover.md`.
//!
//! Run as root: `cargo bench --bench discover`. Needs `ip` and `nft` (see README).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use support::lab::Lab;
use support::wait;

/// Back-to-back calls of `quorate discover` per cluster size (enough for a p99).
const CALLS: usize = 200;
/// Calls of the naive browse (about a second each: a comparison, not a distribution).
const NAIVE_CALLS: usize = 40;

struct Figures {
    samples: Vec<Duration>,
}

impl Figures {
    fn pct(&self, p: f64) -> Duration {
        let mut s = self.samples.clone();
        s.sort();
        let idx = ((s.len() as f64 - 1.0) * p).round() as usize;
        s[idx]
    }
    fn row(&self, label: &str, goal: &str) -> String {
        let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
        format!(
            "| {label} | {} | {} | {} | {} | {} | {goal} |",
            self.samples.len(),
            ms(self.pct(0.5)),
            ms(self.pct(0.99)),
            ms(self.pct(0.0)),
            ms(self.pct(1.0))
        )
    }
}

fn start_agents(lab: &mut Lab, n: usize) {
    let mut procs = Vec::new();
    for i in 0..n {
        let data = lab.host_dir(i).join("data");
        let data = data.to_str().expect("utf-8").to_string();
        let name = format!("bench-{i}");
        procs.push(lab.spawn(
            i,
            &name,
            &[
                "agent",
                "--data-dir",
                &data,
                "--name",
                &name,
                "--log-format",
                "json",
            ],
        ));
    }
    for p in procs {
        wait::until("an agent to be announced", Duration::from_secs(30), || {
            if lab.log(p).contains("mdns announced") {
                Ok(())
            } else {
                Err(lab.log(p))
            }
        });
    }
}

fn ours(lab: &Lab, host: usize, n: usize) -> Figures {
    let expect = n.to_string();
    let mut samples = Vec::new();
    for _ in 0..CALLS {
        let mut cmd = lab.command_in(host, env!("CARGO_BIN_EXE_quorate"));
        cmd.args(["discover", "--expect", &expect, "--json", "--timeout", "5s"]);
        let start = Instant::now();
        let out = cmd.output().expect("run quorate discover");
        let took = start.elapsed();
        let peers: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert!(
            out.status.success() && peers.as_array().map(Vec::len) == Some(n),
            "found {peers}"
        );
        samples.push(took);
    }
    Figures { samples }
}

fn naive(lab: &Lab, host: usize, n: usize) -> Figures {
    lab.in_host(host, || {
        let mut samples = Vec::new();
        for _ in 0..NAIVE_CALLS {
            let start = Instant::now();
            let daemon = mdns_sd::ServiceDaemon::new().expect("daemon");
            let rx = daemon.browse("_cluster._tcp.local.").expect("browse");
            let mut resolved = HashSet::new();
            while resolved.len() < n && start.elapsed() < Duration::from_secs(5) {
                if let Ok(mdns_sd::ServiceEvent::ServiceResolved(r)) =
                    rx.recv_timeout(Duration::from_millis(50))
                {
                    resolved.insert(r.fullname.clone());
                }
            }
            samples.push(start.elapsed());
            if let Ok(done) = daemon.shutdown() {
                let _ = done.recv_timeout(Duration::from_secs(1));
            }
        }
        Figures { samples }
    })
}

fn main() {
    let mut report = String::from(
        "# Discovery speed\n\n\
         Time from starting a discovery to having all N agents resolved, over back-to-back calls\n\
         from one lab host, with N agents already running in other lab hosts (`cargo bench --bench\n\
         discover`). `quorate discover` is timed as a whole process, from spawn (straight into the\n\
         host's namespace) to exit; the naive browse is mdns-sd's `browse` in a fresh daemon per call, in-process.\n\
         The agents are started with no flags just before the calls, so they form a cluster while\n\
         the calls run and change their advertisements (forming to member, the leader) meanwhile.\n\n\
         | what | calls | p50 ms | p99 ms | min ms | max ms | goal |\n|---|---|---|---|---|---|---|\n",
    );
    for n in [3usize, 20] {
        let mut lab = Lab::new(n + 1);
        start_agents(&mut lab, n);
        let o = ours(&lab, n, n);
        let b = naive(&lab, n, n);
        let _ = writeln!(
            report,
            "{}",
            o.row(
                &format!("quorate discover --expect {n} --json, N = {n}"),
                "p99 <= 150, max <= 300"
            )
        );
        let _ = writeln!(
            report,
            "{}",
            b.row(&format!("naive mdns-sd browse, N = {n}"), "")
        );
        println!(
            "{}\n{}",
            o.row(&format!("ours N={n}"), ""),
            b.row(&format!("naive N={n}"), "")
        );
    }
    report.push_str(
        "\nA responder answers a legacy unicast query at once, but not while it probes its names,\n\
         about 750 ms: mdns-sd probed again at every change of a node's TXT record, so a call that\n\
         met a change (a node turning member, a new leader) waited for the resend after the probe,\n\
         about a second. A change of the TXT record alone is now announced without a new probe\n\
         (RFC 6762 section 8.4); only a new name, host, port or address set is probed.\n",
    );
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/results/discover.md");
    std::fs::write(path, &report).expect("write results");
    println!("wrote {path}");
}
