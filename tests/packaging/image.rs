//! The container image (`packaging/container`): built by `packaging/container/build` with
//! buildah (vfs storage in a temporary root, removed at the end, also on failure), its
//! configuration read back (user, volume, ports, health check, entrypoint and command), and
//! its root filesystem run in lab hosts the way an engine runs a container: the image's
//! environment only (`env -i`), its own host name (a UTS namespace), a data dir of its own
//! bind-mounted at the volume (a mount namespace), `chroot` into the image as the image's
//! user, the image's entrypoint with the command. Commands "in the container" (the health
//! check, `quorate token create`) enter the agent's namespaces with `nsenter` and run the
//! same way, as `docker exec` does. The Compose file's services run like this too: their
//! commands, environment and host names, in hosts of one lab network.
//!
//! Not tested here: a container engine (none runs on the build machines) and the Compose
//! file's own networking (its network and mDNS across it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;

use crate::support::agents::{status, wait_group};
use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

const TAG: &str = "localhost/quorate:lab";

/// The repository's root (this package's manifest dir).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

/// A program on this machine's PATH, or a panic saying which package has it.
fn tool(name: &str, package: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .expect("run sh");
    let path = text(&out.stdout);
    assert!(
        out.status.success() && !path.is_empty(),
        "the image tests need `{name}`: apt-get install -y {package}"
    );
    path
}

const ROOT_PREFIX: &str = "quorate-image-";

/// buildah's storage for one test: vfs in a temporary root named after the test process.
/// Dropping it removes the containers, the images and the whole root; a root left by a test
/// process that was killed is removed by the next one.
struct Store {
    root: tempfile::TempDir,
    buildah: String,
}

impl Store {
    fn new() -> Store {
        let buildah = tool("buildah", "buildah");
        sweep_stale_roots();
        let root = tempfile::Builder::new()
            .prefix(&format!("{ROOT_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("buildah root");
        Store { root, buildah }
    }

    fn root(&self) -> &Path {
        self.root.path()
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.buildah);
        let root = self.root().to_str().expect("utf-8 path");
        cmd.args(["--storage-driver", "vfs", "--root", root, "--runroot"])
            .arg(self.root().join("run"));
        cmd
    }

    /// `buildah ARGS`, which must succeed: its stdout.
    fn run(&self, args: &[&str]) -> String {
        let out = self.command().args(args).output().expect("run buildah");
        assert!(
            out.status.success(),
            "buildah {}: {}",
            args.join(" "),
            text(&out.stderr)
        );
        text(&out.stdout)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.command().args(["rm", "--all"]).output();
        let _ = self.command().args(["rmi", "--all", "--force"]).output();
        // The TempDir removes the root, layers and all.
    }
}

/// Removes the buildah roots of test processes that no longer run.
fn sweep_stale_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = name
            .strip_prefix(ROOT_PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// What the image says about how to run it (its docker-format config).
#[derive(Debug)]
struct ImageConfig {
    env: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    /// `uid:gid`.
    user: String,
    /// The health check command, without its leading `CMD`.
    health: Vec<String>,
    raw: Value,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The image built, its config, and its root filesystem mounted.
struct Image {
    /// Held to the end: dropping it removes the container, the image and the storage.
    _store: Store,
    config: ImageConfig,
    rootfs: PathBuf,
    chroot: String,
}

/// Builds the image from the test's own `quorate` binary with the build script, as README
/// says, and mounts a container's root filesystem of it.
fn build_image() -> Image {
    let store = Store::new();
    let out = Command::new(repo().join("packaging/container/build"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_quorate"),
            "--tag",
            TAG,
            "--root",
        ])
        .arg(store.root())
        .output()
        .expect("run packaging/container/build");
    assert!(
        out.status.success(),
        "packaging/container/build: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let inspect: Value =
        serde_json::from_str(&store.run(&["inspect", "--type", "image", TAG])).expect("json");
    let c = &inspect["Docker"]["config"];
    let health = strings(&c["Healthcheck"]["Test"]);
    assert_eq!(
        health.first().map(String::as_str),
        Some("CMD"),
        "an exec-form health check: {c}"
    );
    let config = ImageConfig {
        env: strings(&c["Env"]),
        entrypoint: strings(&c["Entrypoint"]),
        cmd: strings(&c["Cmd"]),
        user: c["User"].as_str().unwrap_or("").to_string(),
        health: health[1..].to_vec(),
        raw: c.clone(),
    };
    let container = store.run(&["from", TAG]);
    let rootfs = PathBuf::from(store.run(&["mount", &container]));
    Image {
        _store: store,
        config,
        rootfs,
        chroot: tool("chroot", "coreutils"),
    }
}

impl Image {
    fn ids(&self) -> (u32, u32) {
        let (u, g) = self.config.user.split_once(':').expect("user uid:gid");
        (
            u.parse().expect("numeric uid"),
            g.parse().expect("numeric gid"),
        )
    }

    /// `env -i IMAGE-ENV EXTRA chroot --userspec=USER ROOTFS ARGV`: a process as the image
    /// runs one.
    fn argv(&self, extra_env: &[String], argv: &[String]) -> Vec<String> {
        let mut v = vec!["env".to_string(), "-i".to_string()];
        v.extend(self.config.env.iter().cloned());
        v.extend(extra_env.iter().cloned());
        v.push(self.chroot.clone());
        v.push(format!("--userspec={}", self.config.user));
        v.push(self.rootfs.display().to_string());
        v.extend(argv.iter().cloned());
        v
    }

    /// The entrypoint followed by `command` (the image's CMD when `None`).
    fn entry(&self, command: Option<&[String]>) -> Vec<String> {
        let mut v = self.config.entrypoint.clone();
        v.extend(command.map_or_else(|| self.config.cmd.clone(), <[String]>::to_vec));
        v
    }

    /// A fresh volume for host `i`: as an engine makes a named volume from the image's
    /// `/var/lib/quorate` (empty, 0700, the image's user's).
    fn volume(&self, lab: &Lab, i: usize) -> PathBuf {
        let dir = lab.host_dir(i).join("data");
        std::fs::create_dir_all(&dir).expect("volume");
        let (uid, gid) = self.ids();
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown volume");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        dir
    }

    /// Starts a "container" in host `i`: host name `hostname`, host `i`'s volume at
    /// `/var/lib/quorate`, `env` beside the image's, `command` after the entrypoint.
    fn run(
        &self,
        lab: &mut Lab,
        i: usize,
        hostname: &str,
        env: &[String],
        command: Option<&[String]>,
    ) -> ProcId {
        let volume = self.volume(lab, i);
        let mut args: Vec<String> = [
            "--mount",
            "--uts",
            "sh",
            "-c",
            r#"echo "$1" > /proc/sys/kernel/hostname && mount --bind "$2" "$3/var/lib/quorate" && shift 3 && exec "$@""#,
            "sh",
            hostname,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(volume.display().to_string());
        args.push(self.rootfs.display().to_string());
        args.extend(self.argv(env, &self.entry(command)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.spawn_program(i, hostname, &tool("unshare", "util-linux"), &args)
    }

    /// `docker exec`: `argv` in the namespaces of the container process `p` (its network,
    /// mounts and host name), as the image's user in its root filesystem.
    fn exec(&self, lab: &Lab, p: ProcId, argv: &[String]) -> Output {
        let pid = lab.pid(p).to_string();
        let mut args = vec![
            "-t".to_string(),
            pid,
            "-n".into(),
            "-m".into(),
            "-u".into(),
            "--".into(),
        ];
        args.extend(self.argv(&[], argv));
        Command::new(tool("nsenter", "util-linux"))
            .args(&args)
            .output()
            .expect("run nsenter")
    }

    /// The image's HEALTHCHECK in container `p`.
    fn health(&self, lab: &Lab, p: ProcId) -> Output {
        self.exec(lab, p, &self.config.health)
    }
}

/// Waits until the image's health check passes in container `p` (`who`, for the message).
fn wait_healthy(image: &Image, lab: &Lab, p: ProcId, who: &str) {
    wait::until(
        &format!("{who}'s health check"),
        Duration::from_secs(20),
        || {
            let out = image.health(lab, p);
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| format!("{out:?}"))
        },
    );
}

/// The image holds the binary, what it links and the user's files, and says how to run it:
/// a numeric non-root user named in /etc/passwd, the data dir as a volume that user owns,
/// gossip, QUIC and HTTP ports, a health check on readiness, `quorate agent`.
fn check_image(image: &Image) {
    let c = &image.config;
    assert_eq!(c.entrypoint, ["quorate"], "{:?}", c.raw);
    assert_eq!(c.cmd, ["agent"], "{:?}", c.raw);
    assert_eq!(c.health, ["quorate", "health", "--ready"], "{:?}", c.raw);
    let (uid, gid) = image.ids();
    assert!(uid != 0 && gid != 0, "a non-root user: {}", c.user);
    for port in ["7946/udp", "7947/udp", "7948/tcp"] {
        assert!(
            c.raw["ExposedPorts"].get(port).is_some(),
            "{port} exposed: {}",
            c.raw["ExposedPorts"]
        );
    }
    assert!(
        c.raw["Volumes"].get("/var/lib/quorate").is_some(),
        "{}",
        c.raw["Volumes"]
    );
    for want in [
        "QUORATE_DATA_DIR=/var/lib/quorate",
        "QUORATE_HTTP_ADDR=0.0.0.0:7948",
    ] {
        assert!(c.env.iter().any(|e| e == want), "{want} in {:?}", c.env);
    }

    let root = &image.rootfs;
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).expect("/etc/passwd");
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("quorate:x:{uid}:{gid}:"))),
        "{passwd}"
    );
    let group = std::fs::read_to_string(root.join("etc/group")).expect("/etc/group");
    assert!(group.contains(&format!("quorate:x:{gid}:")), "{group}");
    let meta = std::fs::metadata(root.join("var/lib/quorate")).expect("the data dir");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (uid, gid, 0o700)
    );

    // Exactly the binary, the libraries ldd resolves for it, and the user's files.
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_quorate"))
        .output()
        .expect("ldd");
    let mut want: Vec<String> = text(&ldd.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.as_slice() {
                [_, "=>", path, ..] if path.starts_with('/') => Some(path.to_string()),
                [path, ..] if path.starts_with('/') => Some(path.to_string()),
                _ => None,
            }
        })
        .collect();
    want.extend(["/etc/group", "/etc/passwd", "/usr/bin/quorate"].map(String::from));
    want.sort();
    let mut files = Vec::new();
    let mut dirs = vec![root.clone()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read rootfs") {
            let e = e.expect("entry");
            let path = e.path();
            if e.file_type().expect("type").is_dir() {
                dirs.push(path);
            } else {
                let inside = path.strip_prefix(root).expect("under rootfs");
                files.push(format!("/{}", inside.display()));
            }
        }
    }
    files.sort();
    assert_eq!(files, want, "the image's files");
}

/// The Compose file as JSON (python3's yaml reads it: `python3-yaml`).
fn compose() -> Value {
    let out = Command::new(tool("python3", "python3"))
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(repo().join("packaging/container/compose.yaml"))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "compose.yaml does not read as YAML (needs python3-yaml): {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}` with `vars`.
fn interpolate(value: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closed ${") + start;
        let inner = &rest[start + 2..end];
        let name = inner.split(':').next().unwrap_or(inner);
        let given = vars.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let value = match (given, inner.split_once(":-")) {
            (Some(v), _) if !v.is_empty() => v.to_string(),
            (_, Some((_, default))) => default.to_string(),
            _ => String::new(),
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// One Compose service as the test runs it.
#[derive(Debug)]
struct Service {
    hostname: String,
    command: Option<Vec<String>>,
    env: Vec<String>,
    health: Vec<String>,
}

fn service(compose: &Value, name: &str, vars: &[(&str, &str)]) -> Service {
    let s = &compose["services"][name];
    assert!(s.is_object(), "service {name} in compose.yaml");
    assert_eq!(
        interpolate(s["image"].as_str().unwrap_or(""), &[]),
        "quorate:latest",
        "{name}'s image is the one the build script tags by default"
    );
    assert_eq!(s["restart"], "unless-stopped", "{name}");
    let volumes = strings(&s["volumes"]);
    assert_eq!(volumes, [format!("{name}:/var/lib/quorate")], "{name}");
    assert!(
        compose["volumes"].get(name).is_some(),
        "{name}'s volume is declared"
    );
    assert_eq!(
        strings(&s["networks"]),
        ["lan"],
        "{name} on the one network"
    );
    let health = strings(&s["healthcheck"]["test"]);
    assert_eq!(health.first().map(String::as_str), Some("CMD"), "{name}");
    let env = s["environment"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", interpolate(v.as_str().unwrap_or(""), vars)))
                .collect()
        })
        .unwrap_or_default();
    Service {
        hostname: s["hostname"].as_str().unwrap_or(name).to_string(),
        command: s.get("command").map(strings),
        env,
        health: health[1..].to_vec(),
    }
}

/// `quorate health` without an agent to ask says so and fails: a health check never passes
/// by default.
#[test]
fn health_without_an_agent_fails() {
    let out = Command::new(env!("CARGO_BIN_EXE_quorate"))
        .args(["health", "--ready", "--api", "http://127.0.0.1:1"])
        .output()
        .expect("run quorate");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        text(&out.stderr).contains("cannot reach the agent"),
        "{out:?}"
    );
}

/// The Compose file reads as YAML and describes the cluster: three flagless voters and two
/// storage nodes on one network, and a token-joined storage node in the `token` profile; and
/// every service's command line and environment pass `quorate agent --check-config` (the
/// token service refused, naming the token, while no token is given).
#[test]
fn compose_services_are_valid_agent_command_lines() {
    let compose = compose();
    let names: Vec<&String> = compose["services"]
        .as_object()
        .expect("services")
        .keys()
        .collect();
    assert_eq!(
        names,
        [
            "storage-1",
            "storage-2",
            "storage-token",
            "voter-1",
            "voter-2",
            "voter-3"
        ]
    );
    assert_eq!(
        strings(&compose["services"]["storage-token"]["profiles"]),
        ["token"]
    );
    let image_env = [
        "QUORATE_DATA_DIR=/var/lib/quorate",
        "QUORATE_HTTP_ADDR=0.0.0.0:7948",
    ];
    let check = |s: &Service| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_quorate"));
        cmd.env_clear();
        for kv in image_env
            .iter()
            .map(|s| s.to_string())
            .chain(s.env.iter().cloned())
        {
            let (k, v) = kv.split_once('=').expect("K=V");
            cmd.env(k, v);
        }
        cmd.args(s.command.clone().unwrap_or_else(|| vec!["agent".into()]))
            .arg("--check-config")
            .output()
            .expect("run quorate")
    };
    for name in ["voter-1", "voter-2", "voter-3", "storage-1", "storage-2"] {
        let s = service(&compose, name, &[]);
        assert_eq!(s.health, ["quorate", "health", "--ready"], "{name}");
        let out = check(&s);
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        let cfg: Value = serde_json::from_slice(&out.stdout).expect("config json");
        let role = if name.starts_with("voter") {
            "voter"
        } else {
            "storage"
        };
        assert_eq!(cfg["role"], role, "{name}");
        assert_eq!(
            cfg["join"],
            Value::Null,
            "{name} forms by mDNS, with no token"
        );
        assert_eq!(cfg["peers"], serde_json::json!([]), "{name}");
        assert_eq!(cfg["data_dir"], "/var/lib/quorate", "{name}");
    }
    let s = service(&compose, "storage-token", &[]);
    let out = check(&s);
    assert_eq!(out.status.code(), Some(2), "no token: refused, {out:?}");
    assert!(
        text(&out.stderr).contains("QUORATE_JOIN"),
        "{}",
        text(&out.stderr)
    );
}

/// The image, built by the build script and mounted: its files and config are what the
/// Containerfile says; the Compose file's services run from its root filesystem in lab hosts
/// (chroot as the image's user, each with its own volume and host name) form one cluster:
/// the three voters with no flags (one leader, three voters; the health check fails before
/// and passes after), the two storage nodes as learners, and the token service, given a token
/// made by `quorate token create` in the voter-1 container, joins as a learner too.
#[test]
fn the_image_runs_the_compose_cluster_in_lab_hosts() {
    let image = build_image();
    check_image(&image);
    let compose = compose();
    let mut lab = Lab::new(6);

    let voter1 = service(&compose, "voter-1", &[]);
    let first = image.run(
        &mut lab,
        0,
        &voter1.hostname,
        &voter1.env,
        voter1.command.as_deref(),
    );
    wait::until(
        "voter-1 to answer its live check",
        Duration::from_secs(20),
        || {
            let out = image.exec(&lab, first, &["quorate".into(), "health".into()]);
            out.status
                .success()
                .then_some(())
                .ok_or_else(|| format!("{out:?}"))
        },
    );
    let out = image.exec(&lab, first, &voter1.health);
    assert_eq!(
        out.status.code(),
        Some(1),
        "not ready alone, waiting for 3 voters: {out:?}"
    );
    assert!(text(&out.stdout).contains("not ready"), "{out:?}");

    let mut procs = vec![first];
    for (i, name) in [(1, "voter-2"), (2, "voter-3")] {
        let s = service(&compose, name, &[]);
        procs.push(image.run(&mut lab, i, &s.hostname, &s.env, s.command.as_deref()));
    }
    let voters = [
        ("voter-1", "voter"),
        ("voter-2", "voter"),
        ("voter-3", "voter"),
    ];
    wait_group(&lab, &[0, 1, 2], &voters, Duration::from_secs(60));
    // The agents ran as the image's user: what they wrote in their volumes is that user's.
    let (uid, gid) = image.ids();
    for i in 0..3 {
        use std::os::unix::fs::MetadataExt;
        let node = std::fs::metadata(lab.host_dir(i).join("data/node.json")).expect("node.json");
        assert_eq!((node.uid(), node.gid()), (uid, gid), "host {i}'s node.json");
    }
    for (i, &p) in procs.iter().enumerate() {
        wait_healthy(&image, &lab, p, &format!("host {i}"));
    }

    for (i, name) in [(3, "storage-1"), (4, "storage-2")] {
        let s = service(&compose, name, &[]);
        procs.push(image.run(&mut lab, i, &s.hostname, &s.env, s.command.as_deref()));
    }
    let out = image.exec(
        &lab,
        first,
        &["quorate", "token", "create", "--role", "storage"].map(String::from),
    );
    assert!(out.status.success(), "token create in voter-1: {out:?}");
    let token = text(&out.stdout);
    let s = service(&compose, "storage-token", &[("QUORATE_JOIN_TOKEN", &token)]);
    assert_eq!(s.env, [format!("QUORATE_JOIN={token}")]);
    procs.push(image.run(&mut lab, 5, &s.hostname, &s.env, s.command.as_deref()));

    let all = [
        voters[0],
        voters[1],
        voters[2],
        ("storage-1", "learner"),
        ("storage-2", "learner"),
        ("storage-token", "learner"),
    ];
    wait_group(&lab, &[0, 1, 2, 3, 4, 5], &all, Duration::from_secs(60));
    let st = status(&lab, 5).expect("status");
    let role = |name: &str| {
        st["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .map(|m| m["role"].clone())
    };
    for name in ["storage-1", "storage-2", "storage-token"] {
        assert_eq!(role(name), Some("storage".into()), "{name}");
    }
    wait_healthy(&image, &lab, procs[5], "storage-token");
}
