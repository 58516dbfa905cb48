//! The agent as a process in a lab host: it finds the host's address, survives kill -9, and
//! comes back with the same node id from its data dir.

use std::time::Duration;

use crate::support::lab::Lab;
use crate::support::wait;

/// Advertises the host's own lab address by default; after kill -9 and a restart on the same
/// data dir it keeps its node id; SIGTERM stops it cleanly with status 0.
#[test]
fn agent_keeps_its_node_id_across_kill9_and_stops_cleanly_on_sigterm() {
    let mut lab = Lab::new(1);
    let data = lab.host_dir(0).join("data");
    let data = data.to_str().expect("utf-8 path");
    let p = lab.spawn(
        0,
        "agent",
        &[
            "agent",
            "--data-dir",
            data,
            "--name",
            "h0",
            "--log-format",
            "json",
        ],
    );

    let ready = wait::until("the agent to run", Duration::from_secs(10), || {
        lab.log_events(p, "agent running")
            .pop()
            .ok_or_else(|| lab.log(p))
    });
    assert_eq!(
        ready["advertise"],
        lab.host(0).ip.to_string(),
        "advertises the host's lab address"
    );
    let first = lab.log_events(p, "node identity ready").remove(0);
    assert_eq!(first["first_start"], true);
    let id = first["node_id"].as_str().expect("node_id").to_string();

    lab.kill9(p);
    lab.restart(p);
    let again = wait::until(
        "the restarted agent's identity",
        Duration::from_secs(10),
        || {
            let seen = lab.log_events(p, "node identity ready");
            if seen.len() == 2 {
                Ok(seen[1].clone())
            } else {
                Err(seen)
            }
        },
    );
    assert_eq!(
        again["node_id"].as_str(),
        Some(id.as_str()),
        "same node id after kill -9"
    );
    assert_eq!(again["first_start"], false);
    wait::until(
        "the restarted agent to run",
        Duration::from_secs(10),
        || {
            let n = lab.log_events(p, "agent running").len();
            if n == 2 { Ok(()) } else { Err(n) }
        },
    );

    let status = lab.stop(p, Duration::from_secs(10));
    assert!(status.success(), "exit status after SIGTERM: {status}");
    assert_eq!(
        lab.log_events(p, "agent stopped").len(),
        1,
        "{}",
        lab.log(p)
    );
}
