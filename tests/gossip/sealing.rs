//! Keys: separate clusters, rotation without a split, and junk on the gossip port.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use quorate_gossip::{Key, Keyring};

use crate::support::http;
use crate::support::lab::Lab;
use crate::support::wait;
use crate::util::{agent, members, metrics, wait_view};

fn keygen(lab: &Lab) -> String {
    let out = lab.quorate(0, &["keygen"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn keyring(lab: &Lab, i: usize, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["keyring", "--json"];
    all.extend_from_slice(args);
    let out = lab.quorate_admin(i, &all);
    assert!(
        out.status.success(),
        "keyring {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("keyring json")
}

/// Agents with different keys never see each other, even on one LAN with mDNS (which hands
/// each side the other's address, so both keep sending): over a window of several
/// failure-detection periods after the sealed three have converged, the stranger never lists
/// anyone but itself and no sealed agent ever lists the stranger; its datagrams are refused
/// and counted.
#[test]
fn different_keys_stay_apart() {
    let mut lab = Lab::new(4);
    let (k1, other) = (keygen(&lab), keygen(&lab));
    for i in 0..3 {
        agent(&mut lab, i, &format!("k{i}"), &["--cluster-key", &k1]);
    }
    agent(&mut lab, 3, "stranger", &["--cluster-key", &other]);
    let three = [("k0", "alive"), ("k1", "alive"), ("k2", "alive")];
    for i in 0..3 {
        wait_view(&lab, i, &three, Duration::from_secs(15));
    }
    wait_view(&lab, 3, &[("stranger", "alive")], Duration::from_secs(5));
    wait::until(
        "the stranger's datagrams to be refused",
        Duration::from_secs(10),
        || {
            let m = metrics(&lab, 0);
            if m["dropped_auth"].as_u64().unwrap_or(0) > 0 {
                Ok(())
            } else {
                Err(m.to_string())
            }
        },
    );
    // Failure detection takes about 1.2 s and a round 200 ms: 4 s is many chances to be wrong.
    wait::never("an agent seen across keys", Duration::from_secs(4), || {
        let names = |i: usize| -> Vec<String> {
            members(&lab, i)
                .map(|m| m.into_iter().map(|(n, _, _)| n).collect())
                .unwrap_or_else(|e| vec![format!("error: {e}")])
        };
        let stranger = names(3);
        if stranger != ["stranger"] {
            return Some(format!("the stranger lists {stranger:?}"));
        }
        (0..3).find_map(|i| {
            let seen = names(i);
            seen.iter()
                .any(|n| n == "stranger" || n.starts_with("error"))
                .then(|| format!("host {i} lists {seen:?}"))
        })
    });
}

/// Rotating the key of a running three-node cluster (install everywhere, use everywhere,
/// remove everywhere) never splits it: after every step on every node, each node's view stays
/// whole for longer than failure detection takes; at the end only the new key is installed.
#[test]
fn key_rotation_never_splits_a_running_cluster() {
    let mut lab = Lab::new(3);
    let (k1, k2) = (keygen(&lab), keygen(&lab));
    for i in 0..3 {
        agent(&mut lab, i, &format!("k{i}"), &["--cluster-key", &k1]);
    }
    let three = [("k0", "alive"), ("k1", "alive"), ("k2", "alive")];
    for i in 0..3 {
        wait_view(&lab, i, &three, Duration::from_secs(15));
    }

    // Keys are named by the fingerprint of the gossip key derived from each cluster key.
    let fp2 = quorate::keys::gossip_key(&Key::from_base64(&k2).expect("key")).fingerprint();
    let fp1 = quorate::keys::gossip_key(&Key::from_base64(&k1).expect("key")).fingerprint();
    for step in [
        vec!["install", k2.as_str()],
        vec!["use", fp2.as_str()],
        vec!["remove", fp1.as_str()],
    ] {
        for i in 0..3 {
            keyring(&lab, i, &step);
            // Mid-step the cluster is mixed: it must stay whole, on every node, for longer than
            // failure detection takes (about 1.2 s).
            wait::holds(
                "a whole three-node view",
                Duration::from_millis(1500),
                || {
                    for j in 0..3 {
                        let seen = members(&lab, j)?;
                        let pairs: Vec<(&str, &str)> = seen
                            .iter()
                            .map(|(n, s, _)| (n.as_str(), s.as_str()))
                            .collect();
                        if pairs != three {
                            return Err(format!("host {j} after {step:?} on host {i}: {seen:?}"));
                        }
                    }
                    Ok(())
                },
            );
        }
    }
    for i in 0..3 {
        let view = keyring(&lab, i, &["list"]);
        assert_eq!(view["keys"], serde_json::json!([fp2]), "host {i}");
    }
}

/// Random bytes, truncated and replayed datagrams sent to an agent's gossip port are dropped
/// and counted; the agent stays up and its view stays right.
#[test]
fn junk_truncated_and_replayed_datagrams_are_dropped_and_counted() {
    let mut lab = Lab::new(3);
    let key = keygen(&lab);
    agent(&mut lab, 0, "j0", &["--cluster-key", &key]);
    agent(&mut lab, 1, "j1", &["--cluster-key", &key]);
    let two = [("j0", "alive"), ("j1", "alive")];
    wait_view(&lab, 0, &two, Duration::from_secs(15));

    let members = http::get(&lab, 0, "/v1/members").expect("members");
    let j1 = members
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == "j1"))
        .expect("j1");
    let (j1_id, j1_generation) = (
        j1["id"].as_str().expect("id").to_string(),
        j1["generation"].as_u64().expect("gen"),
    );

    let dst: SocketAddr = (lab.host(0).ip, 7946).into();
    // Gossip is sealed with the gossip key derived from the cluster key.
    let ring = Keyring::new(vec![quorate::keys::gossip_key(
        &Key::from_base64(&key).expect("key"),
    )]);
    let sent = lab.in_host(2, move || {
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let mut short = 0;
        for len in [0usize, 1, 7, 40, 58] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            s.send_to(&bytes, dst).expect("send");
            short += 1;
        }
        let mut random = 0;
        for len in [100usize, 600, 1400] {
            let mut bytes: Vec<u8> = (0..len).map(|i| (i * 131 % 253) as u8).collect();
            bytes[0] = 0x71; // our magic and format, so that authentication, not framing, fails
            bytes[1] = 1;
            s.send_to(&bytes, dst).expect("send");
            random += 1;
        }
        // Sealed under the real key, claiming j1's first datagram: a replay.
        let replay = ring
            .seal([5; 24], &j1_id, j1_generation, 1, b"anything")
            .expect("seal");
        s.send_to(&replay, dst).expect("send");
        // A real sealed datagram cut short.
        let fresh = ring
            .seal([6; 24], &j1_id, j1_generation + 1_000_000, 1, b"anything")
            .expect("seal");
        s.send_to(&fresh[..fresh.len() - 5], dst).expect("send");
        (short, random + 1)
    });
    wait::until("the junk to be counted", Duration::from_secs(10), || {
        let m = metrics(&lab, 0);
        let ok = m["dropped_short"].as_u64().unwrap_or(0) >= sent.0
            && m["dropped_auth"].as_u64().unwrap_or(0) >= sent.1
            && m["dropped_replay"].as_u64().unwrap_or(0) >= 1;
        if ok { Ok(()) } else { Err(m.to_string()) }
    });
    wait_view(&lab, 0, &two, Duration::from_secs(5));
    wait_view(&lab, 1, &two, Duration::from_secs(5));
}
