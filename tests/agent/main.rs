//! The `quorate` binary as an operator meets it: help texts, refusals of bad configuration
//! and bad data dirs, and a clean stop. Everything here stays on loopback (dev mode) or never
//! gets as far as the network.

#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn quorate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorate"));
    cmd.args(args).stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("QUORATE_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("run quorate")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a refusal: the exit code, exactly one line on stderr, and the words it must hold.
fn assert_refused(out: &Output, code: i32, words: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(code), "exit status; stderr: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line of error, got: {err}"
    );
    for w in words {
        assert!(err.contains(w), "error should mention {w:?}: {err}");
    }
}

/// The top-level help names the agent; the agent's help explains layering and every flag with
/// its variable and key.
#[test]
fn help_explains_commands_and_settings() {
    let top = quorate(&["--help"], &[]);
    assert!(top.status.success());
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(text.contains("agent") && text.contains("Raft"), "{text}");

    let agent = quorate(&["agent", "--help"], &[]);
    assert!(agent.status.success());
    let text = String::from_utf8_lossy(&agent.stdout);
    for needle in [
        "--data-dir",
        "QUORATE_DATA_DIR",
        "--gossip-port",
        "[default: 7946]",
        "--dev",
        "SIGTERM",
        "Exit status",
    ] {
        assert!(
            text.contains(needle),
            "agent --help lacks {needle:?}:\n{text}"
        );
    }
}

/// An unknown key in the config file stops the agent with exit 2, naming key, file and the
/// key that was probably meant.
#[test]
fn unknown_config_key_is_refused_with_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("q.toml");
    std::fs::write(&file, "gosip_port = 7000\n").expect("write");
    let out = quorate(
        &["agent", "--dev", "--config", file.to_str().expect("utf-8")],
        &[],
    );
    assert_refused(
        &out,
        2,
        &[
            "unknown key `gosip_port`",
            &file.display().to_string(),
            "gossip_port",
        ],
    );
}

/// Bad ports are refused, naming where they came from: the environment, a file, a flag.
#[test]
fn bad_ports_are_refused_naming_their_source() {
    let out = quorate(&["agent", "--dev"], &[("QUORATE_GOSSIP_PORT", "70000")]);
    assert_refused(&out, 2, &["QUORATE_GOSSIP_PORT", "gossip_port"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("q.toml");
    std::fs::write(&file, "quic_port = 0\n").expect("write");
    let out = quorate(
        &["agent", "--dev", "--config", file.to_str().expect("utf-8")],
        &[],
    );
    assert_refused(
        &out,
        2,
        &["quic_port", "port 0", &file.display().to_string()],
    );

    let out = quorate(&["agent", "--dev", "--gossip-port", "7947"], &[]);
    assert_refused(&out, 2, &["--gossip-port", "cannot share port 7947"]);

    let out = quorate(&["agent", "--dev", "--quic-port", "99999"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--quic-port"), "{}", stderr(&out));
}

/// Contradictory cluster formation settings are refused, naming the setting and its source:
/// bootstrapping and joining at once, dev mode with peers, a bad voter target, a bad peer.
#[test]
fn contradictory_formation_settings_are_refused() {
    let out = quorate(&["agent", "--bootstrap", "--peers", "10.0.0.1"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--peers"), "{}", stderr(&out));

    // The flag is the higher layer of the two, so the message names it.
    let out = quorate(&["agent", "--bootstrap"], &[("QUORATE_PEERS", "10.0.0.1")]);
    assert_refused(&out, 2, &["--bootstrap", "give one of them"]);
    let out = quorate(
        &["agent", "--peers", "10.0.0.1"],
        &[("QUORATE_BOOTSTRAP", "true")],
    );
    assert_refused(&out, 2, &["--peers", "give one of them"]);

    let out = quorate(&["agent", "--dev", "--peers", "10.0.0.1:7947"], &[]);
    assert_refused(&out, 2, &["--peers", "dev mode"]);

    let out = quorate(&["agent", "--dev"], &[("QUORATE_RAFT__VOTER_TARGET", "4")]);
    assert_refused(
        &out,
        2,
        &[
            "QUORATE_RAFT__VOTER_TARGET",
            "raft.voter_target",
            "1, 3, 5 or 7",
        ],
    );

    let out = quorate(&["agent", "--peers", "nowhere:x"], &[]);
    assert_refused(&out, 2, &["--peers", "\"x\" is not a port number"]);
    let out = quorate(&["agent", "--peers", "srv:quorate.example"], &[]);
    assert_refused(&out, 2, &["--peers", "_service._proto"]);
}

/// The CLI's cluster commands say clearly when no agent answers, with exit 1.
#[test]
fn cluster_commands_without_an_agent_say_so() {
    for args in [
        vec!["status"],
        vec!["label", "set", "zone=a"],
        vec!["step-down"],
        vec!["promote", "00000000000000aa"],
    ] {
        let mut all = args.clone();
        all.extend(["--api", "http://127.0.0.1:9"]);
        let out = quorate(&all, &[]);
        assert_refused(&out, 1, &["cannot reach the agent", "--api"]);
    }
    let out = quorate(
        &["promote", "not-an-id", "--api", "http://127.0.0.1:9"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

/// A data dir that cannot be created, or that the agent's user cannot write, stops it with
/// exit 1 and one line naming the directory.
#[test]
fn unusable_data_dirs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    let below_file = file.join("data");
    let out = quorate(
        &[
            "agent",
            "--dev",
            "--data-dir",
            below_file.to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_refused(
        &out,
        1,
        &["cannot create data dir", &below_file.display().to_string()],
    );

    // Root writes anywhere, so run the agent as `nobody` against a root-owned directory.
    let root_owned = dir.path().join("root-owned");
    std::fs::create_dir(&root_owned).expect("mkdir");
    set_mode(dir.path(), 0o755);
    set_mode(&root_owned, 0o755);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_quorate"),
        ])
        .args([
            "agent",
            "--dev",
            "--data-dir",
            root_owned.to_str().expect("utf-8"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("setpriv (util-linux)");
    assert_refused(
        &out,
        1,
        &["not writable", &root_owned.display().to_string()],
    );
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A data dir written by a newer format is refused and left as it was.
#[test]
fn a_newer_data_dir_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let meta = dir.path().join("node.json");
    std::fs::write(&meta, r#"{"format": 99, "node_id": "00000000000000aa"}"#).expect("write");
    let out = quorate(
        &[
            "agent",
            "--dev",
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
        ],
        &[],
    );
    assert_refused(&out, 1, &["format 99", "upgrade quorate"]);
}

/// Two agents on one data dir: the second is refused while the first runs, naming its pid;
/// the first stops cleanly on SIGINT.
#[test]
fn a_data_dir_in_use_is_refused_and_sigint_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let log = dir.path().join("first.log");
    let (gossip, quic, http) = loopback_ports();
    let mut first = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["agent", "--dev", "--data-dir", data, "--log-format", "json"])
        .args([
            "--gossip-port",
            &gossip,
            "--quic-port",
            &quic,
            "--http-addr",
            &http,
        ])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    support::wait::until("the first agent to run", Duration::from_secs(10), || {
        let text = read_log();
        if text.contains("\"agent running\"") {
            Ok(())
        } else {
            Err(text)
        }
    });

    let out = quorate(&["agent", "--dev", "--data-dir", data], &[]);
    assert_refused(
        &out,
        1,
        &[
            "in use by another quorate agent",
            &format!("pid {}", first.id()),
        ],
    );

    let sent = Command::new("kill")
        .args(["-INT", &first.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let status = support::wait::until(
        "the agent to exit after SIGINT",
        Duration::from_secs(10),
        || first.try_wait().expect("wait").ok_or_else(read_log),
    );
    assert!(
        status.success(),
        "exit after SIGINT: {status}; log: {}",
        read_log()
    );
    assert!(read_log().contains("\"agent stopped\""), "{}", read_log());
}

/// `--check-config` loads and validates every layer and starts nothing: the packaged config
/// passes, its effective settings printed as JSON, and no data dir is made; a bad value is
/// refused as the agent would refuse it (exit 2, one line naming the key).
#[test]
fn check_config_validates_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let packaged = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/quorate.toml");
    let out = quorate(
        &[
            "agent",
            "--config",
            packaged,
            "--data-dir",
            data,
            "--check-config",
        ],
        &[],
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", stderr(&out));
    let effective: serde_json::Value = serde_json::from_str(&said).expect("the settings as JSON");
    assert_eq!(effective["data_dir"], data, "{said}");
    assert_eq!(effective["cluster"], "default", "{said}");
    assert!(!Path::new(data).exists(), "a check makes no data dir");
    let out = quorate(
        &["agent", "--config", packaged, "--check-config"],
        &[("QUORATE_GOSSIP_PORT", "70000")],
    );
    assert_refused(&out, 2, &["QUORATE_GOSSIP_PORT", "gossip_port"]);
}

/// Loopback ports nobody uses (gossip, QUIC, the HTTP address), so that a dev-mode agent does
/// not depend on 7946-7948 being free.
fn loopback_ports() -> (String, String, String) {
    let udp = |s: &std::net::UdpSocket| s.local_addr().map(|a| a.port().to_string()).expect("port");
    let (a, b) = (
        std::net::UdpSocket::bind("127.0.0.1:0").expect("udp"),
        std::net::UdpSocket::bind("127.0.0.1:0").expect("udp"),
    );
    let t = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    (
        udp(&a),
        udp(&b),
        t.local_addr().map(|a| a.to_string()).expect("addr"),
    )
}

/// systemd's notify protocol, with the test as the service manager: an agent started with
/// `NOTIFY_SOCKET` (and `WATCHDOG_USEC`) sends `READY=1` once it serves, a `STATUS=` line once
/// it is a member, `WATCHDOG=1` again and again at half the interval, and `STOPPING=1` after
/// SIGTERM, then stops cleanly.
#[test]
fn systemd_is_told_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("notify.sock");
    let manager = UnixDatagram::bind(&socket).expect("bind the notify socket");
    manager.set_nonblocking(true).expect("nonblocking");
    let log = dir.path().join("agent.log");
    let (gossip, quic, http) = loopback_ports();
    let data = dir.path().join("data");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["agent", "--dev", "--log-format", "json"])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--gossip-port",
            &gossip,
            "--quic-port",
            &quic,
            "--http-addr",
            &http,
        ])
        .env("NOTIFY_SOCKET", &socket)
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("spawn");
    // Every line the agent sent so far, in order (one datagram may carry several).
    let mut heard: Vec<String> = Vec::new();
    let listen = |heard: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        loop {
            match manager.recv(&mut buf) {
                Ok(n) => heard.extend(
                    String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_string),
                ),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("notify socket: {e}"),
            }
        }
    };
    let wait_for = |what: &str, heard: &mut Vec<String>, done: &dyn Fn(&[String]) -> bool| {
        support::wait::until(what, Duration::from_secs(30), || {
            listen(heard);
            if done(heard) {
                Ok(())
            } else {
                Err((
                    heard.clone(),
                    std::fs::read_to_string(&log).unwrap_or_default(),
                ))
            }
        })
    };
    wait_for("READY=1", &mut heard, &|h| h.iter().any(|l| l == "READY=1"));
    let ready = heard.iter().position(|l| l == "READY=1").expect("ready");
    assert!(
        heard[ready + 1..]
            .first()
            .is_some_and(|l| l.starts_with("STATUS=serving")),
        "READY=1 comes with the status: {heard:?}"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("\"agent running\""),
        "ready only once the agent runs"
    );
    wait_for("a STATUS= line naming the membership", &mut heard, &|h| {
        h.iter().any(|l| l.starts_with("STATUS=member of cluster"))
    });
    let pings = |h: &[String]| h.iter().filter(|l| *l == "WATCHDOG=1").count();
    let before = pings(&heard);
    wait_for("five more WATCHDOG=1", &mut heard, &|h| {
        pings(h) >= before + 5
    });
    assert!(!heard.iter().any(|l| l == "STOPPING=1"), "{heard:?}");

    let sent = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    wait_for("STOPPING=1", &mut heard, &|h| {
        h.iter().any(|l| l == "STOPPING=1")
    });
    let status = support::wait::until(
        "the agent to exit after SIGTERM",
        Duration::from_secs(15),
        || agent.try_wait().expect("wait").ok_or(()),
    );
    assert!(
        status.success(),
        "exit after SIGTERM: {status}; log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// Runs `shell` with `args`, the script on stdin or as a file; returns (ok, output).
fn shell(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program} (CI installs it): {e}"))
}

#[test]
fn bash_completion_completes_commands_flags_and_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("quorate.bash");
    let out = quorate(&["completions", "bash"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(&script, &out.stdout).expect("write script");
    // Ask bash's completion function what it offers, as bash would on <Tab>.
    let probe = format!(
        r#"source {s}
complete -p quorate || exit 9
ask() {{ COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=(); _quorate quorate "${{@: -1}}" "${{@: -2:1}}"; echo "${{COMPREPLY[*]}}"; }}
ask quorate sta
ask quorate agent --ro
ask quorate agent --role ''
ask quorate completions ''"#,
        s = script.display()
    );
    let out = shell("bash", &["-c", &probe]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "bash: {}{text}", stderr(&out));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.get(1..4),
        Some(&["status", "--role", "voter storage"][..]),
        "completions offered: {text}"
    );
    let shells: Vec<&str> = lines.get(4).map_or(Vec::new(), |l| {
        l.split(' ').filter(|w| !w.starts_with('-')).collect()
    });
    assert_eq!(
        shells,
        ["bash", "zsh", "fish"],
        "completions offered: {text}"
    );
}

#[test]
fn zsh_and_fish_accept_their_completion_scripts() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (sh, check) in [("zsh", ["-n"]), ("fish", ["--no-execute"])] {
        let out = quorate(&["completions", sh], &[]);
        assert!(out.status.success(), "{}", stderr(&out));
        let file = dir.path().join(format!("quorate.{sh}"));
        std::fs::write(&file, &out.stdout).expect("write script");
        let parsed = shell(sh, &[check[0], file.to_str().expect("utf-8 path")]);
        assert!(
            parsed.status.success(),
            "{sh} refuses its script: {}",
            stderr(&parsed)
        );
    }
}

#[test]
fn man_pages_render_without_warnings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_dir = dir.path().join("man1");
    let out = quorate(&["man", "--out", out_dir.to_str().expect("utf-8")], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    for page in [
        "quorate.1",
        "quorate-agent.1",
        "quorate-discover.1",
        "quorate-man.1",
    ] {
        assert!(listed.contains(page), "{page} not written: {listed}");
    }
    for page in listed.lines() {
        // -ww: every warning; -z: no output. groff prints nothing for a clean page.
        let out = shell("groff", &["-man", "-Tutf8", "-ww", "-z", page]);
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff on {page}: {}",
            stderr(&out)
        );
    }
    let page = quorate(&["man"], &[]);
    let rendered = Command::new("groff")
        .args(["-man", "-Tutf8"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().expect("stdin").write_all(&page.stdout)?;
            child.wait_with_output()
        })
        .expect("groff");
    let text = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        text.contains("cluster membership") && text.contains("discover"),
        "{text}"
    );
}

/// The backup commands refuse what they cannot use with exit 1 and say what is wrong,
/// offline: a snapshot file that is not one, or is missing; `recover` on a directory that is
/// no data dir; `snapshot save` with no agent to ask (and no file left behind).
#[test]
fn backup_commands_refuse_what_they_cannot_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let foreign = dir.path().join("foreign.json");
    std::fs::write(&foreign, "{\"hello\": \"world\"}").expect("write");
    let foreign = foreign.to_str().expect("utf-8");
    for sub in ["inspect", "restore"] {
        let out = quorate(
            &["snapshot", sub, foreign, "--api", "http://127.0.0.1:9"],
            &[],
        );
        assert_refused(&out, 1, &["not a quorate snapshot", foreign]);
    }
    let missing = dir.path().join("missing.snapshot");
    let missing = missing.to_str().expect("utf-8");
    let out = quorate(&["snapshot", "inspect", missing], &[]);
    assert_refused(&out, 1, &[missing]);
    let out = quorate(
        &[
            "recover",
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--yes",
        ],
        &[],
    );
    assert_refused(&out, 1, &["is not a quorate data dir"]);
    let out = quorate(
        &["snapshot", "save", missing, "--api", "http://127.0.0.1:9"],
        &[],
    );
    assert_refused(&out, 1, &["cannot reach the agent"]);
    assert!(!std::path::Path::new(missing).exists(), "no file written");
}
