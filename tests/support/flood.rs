//! A flood of strangers: many QUIC connections without a certificate to one node, each asking
//! something (a malformed join) every 100 ms and redialling when refused. Used by the test and
//! the benchmark of the limits for strangers, each from a process of its own. Its loops are
//! bounded: it stops by itself after the time it is given.
#![allow(unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use quorate_consensus::Trust;
use quorate_consensus::quic::QuicNet;
use quorate_consensus::tls::JoinVerifier;

/// Floods `target` from `connections` connections bound to `from`, for `secs` seconds.
/// Prints `flooding` once every connection has tried once (a waiting process can start then).
pub async fn run(from: SocketAddr, target: SocketAddr, connections: usize, secs: u64) {
    let tried = Arc::new(AtomicUsize::new(0));
    let all = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for i in 0..connections {
        let tried = tried.clone();
        let all = all.clone();
        tasks.push(tokio::spawn(async move {
            let verifier = JoinVerifier::new(Trust::FirstUse);
            let Ok(net) = QuicNet::joiner(from, &verifier) else {
                return;
            };
            let junk = format!("{{\"join\": {{\"junk\": {i}}}}}");
            let mut first = true;
            loop {
                let _ = net
                    .call_addr(target, junk.as_bytes(), Duration::from_secs(2))
                    .await;
                if first && tried.fetch_add(1, Ordering::Relaxed) + 1 == connections {
                    all.notify_one();
                }
                first = false;
                // Paced: a test machine's cores are the attacker's and the cluster's alike.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }
    all.notified().await;
    println!("flooding {target} from {connections} connections");
    tokio::time::sleep(Duration::from_secs(secs)).await;
    for t in tasks {
        t.abort();
    }
}
