//! `quorate discover --watch`: found, and lost after a goodbye or after a silent death.

use std::time::{Duration, Instant};

use crate::support::lab::{Lab, ProcId};
use crate::support::wait;
use crate::util::agent;

/// The watch events seen so far for node `id`, as `(event, time seen)`.
fn watch_events(lab: &Lab, watch: ProcId, id: &str) -> Vec<String> {
    lab.log(watch)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["peer"]["id"] == id)
        .map(|v| v["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_event(lab: &Lab, watch: ProcId, id: &str, event: &str, within: Duration) -> Duration {
    let start = Instant::now();
    wait::until(&format!("a {event} event for {id}"), within, || {
        let seen = watch_events(lab, watch, id);
        if seen.iter().any(|e| e == event) {
            Ok(())
        } else {
            Err(lab.log(watch))
        }
    });
    start.elapsed()
}

/// A new agent is reported `found`; after a clean stop (goodbye) it is reported `lost` within
/// 2 s; another agent killed with -9 (no goodbye) is reported `lost` within 10 s.
#[test]
fn watch_reports_found_then_lost_after_goodbye_and_after_kill9() {
    let mut lab = Lab::new(3);
    let watch = lab.spawn(2, "watch", &["discover", "--watch"]);

    let (a, a_id) = agent(&mut lab, 0, "clean", &[]);
    wait_event(&lab, watch, &a_id, "found", Duration::from_secs(10));
    let stopped = Instant::now();
    let status = lab.stop(a, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    wait::until("lost after a clean stop", Duration::from_secs(2), || {
        if watch_events(&lab, watch, &a_id).iter().any(|e| e == "lost") {
            Ok(())
        } else {
            Err(lab.log(watch))
        }
    });
    println!("lost {:?} after SIGTERM", stopped.elapsed());

    let (b, b_id) = agent(&mut lab, 1, "killed", &[]);
    wait_event(&lab, watch, &b_id, "found", Duration::from_secs(10));
    lab.kill9(b);
    let took = wait_event(&lab, watch, &b_id, "lost", Duration::from_secs(10));
    println!("lost {took:?} after kill -9");
    assert!(lab.exited(watch).is_none(), "the watcher is still running");
}
