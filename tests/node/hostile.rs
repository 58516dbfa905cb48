//! Hostile members in the lab: real agents, and a rogue built from the project's crates
//! (`support::rogue`) that runs in a process of its own on a member's host, with everything
//! that member holds.

use std::net::SocketAddr;
use std::time::Duration;

use quorate_discovery::{Advert, AdvertState, Advertisement, Interfaces, Mdns, MdnsConfig};
use serde_json::Value;

use crate::authority::three_voters_and_storage;
use crate::support::agents::{agent, leader_name, quic, status, wait_group};
use crate::support::http::Stats;
use crate::support::lab::Lab;
use crate::support::rogue::{Forge, ForgedVotes, Relay};
use crate::support::wait;
use crate::tokens::create;

/// The rogue process's settings, from the test that starts it.
const ROGUE_DIR: &str = "QLAB_ROGUE_DIR";
const ROGUE_LISTEN: &str = "QLAB_ROGUE_LISTEN";
const ROGUE_TO: &str = "QLAB_ROGUE_TO";
const ROGUE_LOG: &str = "QLAB_ROGUE_LOG";
const ROGUE_ID: &str = "QLAB_ROGUE_ID";
const ROGUE_FORGE: &str = "QLAB_ROGUE_FORGE";
const ROGUE_TARGET: &str = "QLAB_ROGUE_TARGET";
const ROGUE_VICTIM: &str = "QLAB_ROGUE_VICTIM";

/// Runs the minting rogue ([`rogue_mint`]) once in host `host`: a certificate for node
/// `as_id` minted with the CA key kept in the consensus directory `dir`, asking node `to_id`
/// (at `to`) to read the registry and to remove node `victim`. Each answer, or why none came.
pub(crate) fn minted_asks(
    lab: &Lab,
    host: usize,
    dir: &std::path::Path,
    as_id: &str,
    to_id: &str,
    to: &str,
    victim: &str,
) -> Vec<Result<Value, String>> {
    let env_args = rogue_command(
        &[
            (ROGUE_DIR, dir.display().to_string()),
            (ROGUE_ID, as_id.to_string()),
            (ROGUE_TARGET, to_id.to_string()),
            (ROGUE_TO, to.to_string()),
            (ROGUE_VICTIM, victim.to_string()),
        ],
        "hostile::rogue_mint",
    );
    let args: Vec<&str> = env_args.iter().map(String::as_str).collect();
    let out = lab.exec(host, "/usr/bin/env", &args);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let answers: Vec<Result<Value, String>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ROGUE ANSWER "))
        .map(|l| serde_json::from_str(l).expect("an answer line"))
        .collect();
    assert_eq!(
        answers.len(),
        2,
        "the minting rogue: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    answers
}

/// Not a test on its own: the minting rogue, which `minted_asks` runs in a lab host.
#[test]
#[ignore = "run by minted_asks as the rogue's process"]
fn rogue_mint() {
    let Ok(dir) = std::env::var(ROGUE_DIR) else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let id = |k: &str| var(k).parse::<quorate::NodeId>().expect("node id");
    let to: SocketAddr = var(ROGUE_TO).parse().expect("to");
    let answers = tokio::runtime::Runtime::new().expect("runtime").block_on(
        crate::support::rogue::minted_asks(
            std::path::Path::new(&dir),
            id(ROGUE_ID),
            id(ROGUE_TARGET),
            to,
            id(ROGUE_VICTIM),
        ),
    );
    for a in answers {
        println!("ROGUE ANSWER {}", serde_json::to_string(&a).expect("json"));
    }
}

/// `/usr/bin/env` arguments that run this test binary's ignored test `test` with `vars`.
fn rogue_command(vars: &[(&str, String)], test: &str) -> Vec<String> {
    let mut args: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
    args.push(
        std::env::current_exe()
            .expect("exe")
            .to_str()
            .expect("utf-8")
            .to_string(),
    );
    args.extend(["--ignored", "--exact", test, "--nocapture"].map(String::from));
    args
}

/// Not a test on its own: the forging rogue's process, which
/// `a_storage_host_forging_votes_cannot_depose_the_leader` starts in a lab host.
#[test]
#[ignore = "run by a_storage_host_forging_votes_cannot_depose_the_leader as the rogue's process"]
fn rogue_forge() {
    let Ok(dir) = std::env::var(ROGUE_DIR) else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let listen: SocketAddr = var(ROGUE_LISTEN).parse().expect("listen");
    let id: quorate::NodeId = var(ROGUE_ID).parse().expect("id");
    let mode = match var(ROGUE_FORGE).as_str() {
        "max" => Forge::MaxTerm,
        _ => Forge::NextTerm,
    };
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(ForgedVotes::run_process(
            std::path::Path::new(&dir),
            id,
            listen,
            mode,
            180,
        ));
}

/// Not a test on its own: the rogue's process, which
/// `a_storage_host_relaying_joins_learns_no_secret` starts in a lab host.
#[test]
#[ignore = "run by a_storage_host_relaying_joins_learns_no_secret as the rogue's process"]
fn rogue_relay() {
    let Ok(dir) = std::env::var(ROGUE_DIR) else {
        return;
    };
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k}"));
    let listen: SocketAddr = var(ROGUE_LISTEN).parse().expect("listen");
    let to: SocketAddr = var(ROGUE_TO).parse().expect("to");
    let log = std::path::PathBuf::from(var(ROGUE_LOG));
    let dir = std::path::Path::new(&dir);
    // It also advertises on mDNS, lying: a member voter of the cluster, under the storage
    // node's id, so that a zero-config joiner lists it first.
    let ca = std::fs::read_to_string(dir.join("ca.pem")).expect("ca.pem");
    let fingerprint = quorate_consensus::tls::ca_fingerprint(&ca).expect("fingerprint");
    let id: quorate::NodeId = var(ROGUE_ID).parse().expect("id");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let _in_runtime = rt.enter();
    let mdns = Mdns::start(MdnsConfig {
        service_type: quorate_discovery::DEFAULT_SERVICE_TYPE.to_string(),
        interfaces: Interfaces::default(),
        verify_every: None,
        verify_timeout: Duration::from_secs(1),
    })
    .expect("mdns");
    mdns.advertise(&Advertisement {
        instance: "rogue".into(),
        host: format!("q-{id}.local."),
        port: listen.port(),
        addrs: vec![listen.ip()],
        advert: Advert {
            id,
            cluster: "default".into(),
            role: quorate::Role::Voter,
            gossip_port: 7946,
            api_port: 7948,
            state: AdvertState::Member,
            ca: Some(fingerprint[..16].to_string()),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
    })
    .expect("advertise");
    rt.block_on(Relay::run_process(dir, listen, to, log, 180));
}

/// The names of the members host `host`'s status lists.
fn member_names(lab: &Lab, host: usize) -> Result<Vec<String>, String> {
    let st = status(lab, host)?;
    Ok(st["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// A storage node with id `0000000000000001` (the lowest there is, written into its data dir
/// before it first joined) is replaced on its host by a rogue with its identity that relays
/// every stranger's join to the voter and keeps what passes, and advertises itself on mDNS as
/// a member voter under that id (mDNS is not authenticated), so that it comes first. Three voters join a cluster
/// sealed with a cluster key, each with the rogue first in line: by `--peers` with the
/// cluster key, by a voter token whose `--peers` names the rogue, and with no flags but the
/// cluster key (mDNS, where the rogue's advertisement may come first). Each is admitted; a
/// joiner that tried the rogue refused it at the handshake (its certificate states the storage
/// role), and nothing the rogue captured holds the CA key, the cluster key or the token's
/// secret.
#[test]
fn a_storage_host_relaying_joins_learns_no_secret() {
    let mut lab = Lab::new(5);
    let key = lab.quorate(0, &["keygen"]);
    let key = String::from_utf8_lossy(&key.stdout).trim().to_string();
    agent(&mut lab, 0, "v0", &["--bootstrap", "--cluster-key", &key]);
    wait_group(&lab, &[0], &[("v0", "voter")], Duration::from_secs(30));
    let data = lab.host_dir(1).join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    std::fs::write(
        data.join("node.json"),
        r#"{"format":1,"node_id":"0000000000000001"}"#,
    )
    .expect("node.json");
    let storage = create(&lab, 0, &["--role", "storage"]);
    let s1 = agent(
        &mut lab,
        1,
        "s1",
        &["--role", "storage", "--join", &storage],
    );
    // Host 1 too: s1 shows the group only once it saved its identity (the rogue takes it).
    wait_group(
        &lab,
        &[0, 1],
        &[("v0", "voter"), ("s1", "learner")],
        Duration::from_secs(30),
    );
    lab.kill9(s1);

    let log = lab.host_dir(1).join("rogue.captured");
    let env_args = rogue_command(
        &[
            (ROGUE_DIR, data.join("consensus").display().to_string()),
            (ROGUE_LISTEN, quic(&lab, 1)),
            (ROGUE_TO, quic(&lab, 0)),
            (ROGUE_LOG, log.display().to_string()),
            (ROGUE_ID, "0000000000000001".to_string()),
        ],
        "hostile::rogue_relay",
    );
    let args: Vec<&str> = env_args.iter().map(String::as_str).collect();
    let rogue = lab.spawn_program(1, "rogue", "/usr/bin/env", &args);
    wait::until("the rogue to serve", Duration::from_secs(30), || {
        let l = lab.log(rogue);
        if l.contains("rogue relaying") {
            Ok(())
        } else {
            Err(l)
        }
    });

    let rogue_addr = quic(&lab, 1);
    let voter_addr = quic(&lab, 0);
    agent(
        &mut lab,
        2,
        "p2",
        &[
            "--cluster-key",
            &key,
            "--peers",
            &format!("{rogue_addr},{voter_addr}"),
        ],
    );
    let voter_token = create(&lab, 0, &["--role", "voter"]);
    let t3 = agent(
        &mut lab,
        3,
        "t3",
        &["--join", &voter_token, "--peers", &rogue_addr],
    );
    // The zero-config joiner starts once host 4 sees the rogue's advertisement.
    wait::until(
        "host 4 to see the rogue's advertisement",
        Duration::from_secs(30),
        || {
            let out = lab.quorate(4, &["discover", "--json"]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            if text.contains("0000000000000001") {
                Ok(())
            } else {
                Err(text)
            }
        },
    );
    let z4 = agent(&mut lab, 4, "z4", &["--cluster-key", &key]);
    wait::until(
        "every joiner to be a member",
        Duration::from_secs(60),
        || {
            let names = member_names(&lab, 0)?;
            if ["p2", "t3", "z4"]
                .iter()
                .all(|n| names.iter().any(|m| m == n))
            {
                Ok(())
            } else {
                Err(format!("{names:?}"))
            }
        },
    );

    // Each joiner that tried the rogue refused it at the handshake, for its role. The token
    // joiner always does (the rogue comes first in its --peers); the zero-config joiner when
    // the rogue's advertisement (a member voter with the lowest id) reached it before the
    // voter's did.
    for (name, p, must) in [("t3", t3, true), ("z4", z4, false)] {
        let tried: Vec<Value> = lab
            .log_events(p, "join: seed refused or unreachable; trying the next")
            .into_iter()
            .filter(|e| e["seed"] == rogue_addr.as_str())
            .collect();
        eprintln!("{name} tried the rogue {} times", tried.len());
        assert!(!must || !tried.is_empty(), "{name} never tried the rogue");
        assert!(
            tried.iter().all(|e| e["error"]
                .as_str()
                .is_some_and(|t| t.contains("not a voter"))),
            "{name} met the rogue otherwise than refusing its role: {tried:?}"
        );
    }
    let captured = std::fs::read(&log).unwrap_or_default();
    let holds = |needle: &str| {
        !needle.is_empty()
            && captured
                .windows(needle.len())
                .any(|w| w == needle.as_bytes())
    };
    let ca_key = std::fs::read_to_string(lab.host_dir(0).join("data/consensus/ca.key"))
        .expect("the CA key on the voter");
    let ca_line = ca_key
        .lines()
        .find(|l| l.len() >= 60 && !l.starts_with("-----"))
        .expect("a base64 line")
        .to_string();
    let secret = quorate::token::JoinToken::decode(&voter_token)
        .expect("token")
        .secret_hex();
    eprintln!("the rogue captured {} bytes", captured.len());
    for (what, needle) in [
        ("the CA key", ca_line.as_str()),
        ("the cluster key", key.as_str()),
        ("the token secret", secret.as_str()),
    ] {
        assert!(!holds(needle), "the rogue captured {what}");
    }
    let st: Value = status(&lab, 0).expect("status");
    assert!(
        st["members"].as_array().is_some_and(|m| m.len() == 5),
        "{st}"
    );
}

/// Writes `n` labels through host `host`'s agent with the CLI, one after another: the
/// milliseconds each took, and the failures.
fn timed_labels(lab: &Lab, host: usize, tag: &str, n: usize) -> (Stats, Vec<String>) {
    let mut took = Vec::new();
    let mut failed = Vec::new();
    for i in 0..n {
        let kv = format!("{tag}{i}=v");
        let started = std::time::Instant::now();
        let out = lab.quorate_admin(host, &["label", "set", &kv]);
        if out.status.success() {
            took.push(started.elapsed().as_secs_f64() * 1000.0);
        } else {
            failed.push(String::from_utf8_lossy(&out.stderr).to_string());
        }
    }
    (Stats(took), failed)
}

/// Each voter's (host, leader name, term) as its status gives them.
fn leaders(lab: &Lab, hosts: &[usize]) -> Vec<(usize, String, u64)> {
    hosts
        .iter()
        .map(|h| {
            let st = status(lab, *h).unwrap_or_default();
            (
                *h,
                leader_name(&st).unwrap_or_default(),
                st["term"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// A storage node's host runs a rogue with the node's identity on its address that answers
/// every append with a vote above the leader's: first the next term, then `u64::MAX`. The
/// voters keep one leader in one term, every label write through a follower commits (p99
/// within twice the figure with the honest storage node, plus scheduling slack), and the
/// leader counts the refused answers in `quorate_raft_answers_refused_total`.
#[test]
fn a_storage_host_forging_votes_cannot_depose_the_leader() {
    let mut lab = Lab::new(4);
    let s3 = three_voters_and_storage(&mut lab);
    let before = wait::until(
        "one leader seen by every voter",
        Duration::from_secs(10),
        || {
            let views = leaders(&lab, &[0, 1, 2]);
            let first = &views[0];
            if !first.1.is_empty() && views.iter().all(|v| (&v.1, v.2) == (&first.1, first.2)) {
                Ok(views)
            } else {
                Err(views)
            }
        },
    );
    let leader = before[0].1.clone();
    let follower = ["a0", "a1", "a2"]
        .iter()
        .position(|n| *n != leader)
        .expect("a follower");
    let (honest, failed) = timed_labels(&lab, follower, "honest", 20);
    assert!(failed.is_empty(), "honest writes failed: {failed:?}");
    let id = status(&lab, 3).expect("status")["node_id"]
        .as_str()
        .expect("a3's id")
        .to_string();
    lab.kill9(s3);
    let term = before[0].2;
    for (mode, tag) in [("next", "next"), ("max", "max")] {
        let env_args = rogue_command(
            &[
                (
                    ROGUE_DIR,
                    lab.host_dir(3).join("data/consensus").display().to_string(),
                ),
                (ROGUE_LISTEN, quic(&lab, 3)),
                (ROGUE_ID, id.clone()),
                (ROGUE_FORGE, mode.to_string()),
            ],
            "hostile::rogue_forge",
        );
        let args: Vec<&str> = env_args.iter().map(String::as_str).collect();
        let rogue = lab.spawn_program(3, &format!("rogue-{mode}"), "/usr/bin/env", &args);
        wait::until(
            &format!("the leader to hear the {mode} rogue"),
            Duration::from_secs(30),
            || {
                let l = lab.log(rogue);
                let n: u64 = l
                    .lines()
                    .filter_map(|l| l.strip_prefix("forged "))
                    .filter_map(|n| n.trim().parse().ok())
                    .max()
                    .unwrap_or(0);
                if n >= 5 { Ok(()) } else { Err(l) }
            },
        );
        let (took, failed) = timed_labels(&lab, follower, tag, 20);
        let views = leaders(&lab, &[0, 1, 2]);
        assert!(
            failed.is_empty(),
            "{tag}: writes failed: {failed:?}; views {views:?}"
        );
        let (honest_p99, rogue_p99) = (honest.pct(0.99), took.pct(0.99));
        let bound = (honest_p99 * 2.0).max(honest_p99 + 250.0);
        eprintln!(
            "{tag}: honest p99 {honest_p99:.1} ms, with the rogue p99 {rogue_p99:.1} ms (bound {bound:.1} ms); views {views:?}"
        );
        for (h, l, t) in &views {
            assert_eq!(
                (l.as_str(), *t),
                (leader.as_str(), term),
                "{tag}: host {h} no longer holds the leader in its term: {views:?}"
            );
        }
        assert!(
            rogue_p99 <= bound,
            "{tag}: p99 {rogue_p99:.1} ms above {bound:.1} ms"
        );
        lab.kill9(rogue);
    }
    let leader_host = ["a0", "a1", "a2"]
        .iter()
        .position(|n| *n == leader)
        .expect("the leader's host");
    let metrics = lab.in_host(leader_host, || {
        crate::support::http::get_text_at("127.0.0.1:7948", "/metrics", &[])
    });
    let refused: f64 = metrics
        .map(|m| m.body)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("quorate_raft_answers_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(
        refused >= 10.0,
        "the leader counted {refused} refused answers"
    );
}
