//! Hostile members in the lab: real agents, and a rogue built from the project's crates
//! (`support::rogue`) that runs in a process of its own on a member's host, with everything
//! that member holds.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;

use crate::support::agents::{agent, quic, status, wait_group};
use crate::support::lab::Lab;
use crate::support::rogue::Relay;
use crate::support::wait;
use crate::tokens::create;

/// The rogue process's settings, from the test that starts it.
const ROGUE_DIR: &str = "QLAB_ROGUE_DIR";
const ROGUE_LISTEN: &str = "QLAB_ROGUE_LISTEN";
const ROGUE_TO: &str = "QLAB_ROGUE_TO";
const ROGUE_LOG: &str = "QLAB_ROGUE_LOG";

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
    tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(Relay::run_process(
            std::path::Path::new(&dir),
            listen,
            to,
            log,
            180,
        ));
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
/// every stranger's join to the voter and keeps what passes. Three voters join a cluster
/// sealed with a cluster key, each with the rogue first in line: by `--peers` with the
/// cluster key, by a voter token whose `--peers` names the rogue, and with no flags but the
/// cluster key (mDNS, where the storage node's advertisement may still be cached). Each is
/// admitted, and nothing the rogue captured holds the CA key, the cluster key or the token's
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
    wait_group(
        &lab,
        &[0],
        &[("v0", "voter"), ("s1", "learner")],
        Duration::from_secs(30),
    );
    lab.kill9(s1);

    let log = lab.host_dir(1).join("rogue.captured");
    let env_args = [
        format!("{ROGUE_DIR}={}", data.join("consensus").display()),
        format!("{ROGUE_LISTEN}={}", quic(&lab, 1)),
        format!("{ROGUE_TO}={}", quic(&lab, 0)),
        format!("{ROGUE_LOG}={}", log.display()),
        std::env::current_exe()
            .expect("exe")
            .to_str()
            .expect("utf-8")
            .to_string(),
        "--ignored".into(),
        "--exact".into(),
        "hostile::rogue_relay".into(),
        "--nocapture".into(),
    ];
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
    agent(
        &mut lab,
        3,
        "t3",
        &["--join", &voter_token, "--peers", &rogue_addr],
    );
    agent(&mut lab, 4, "z4", &["--cluster-key", &key]);
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
