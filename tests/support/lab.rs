//! The LAN lab: a private bridge and network namespaces, each a host with its own address,
//! running real `quorate` processes.
//!
//! Every lab takes a machine-wide lock (lab tests run one at a time on 2-core machines), names
//! everything it makes after the test process's pid and a counter (so two labs never collide),
//! and removes all of it in `Drop`, also when the test panics; then it prints the logs of the
//! processes it ran. A lab left behind by a test process that was killed is swept by the next
//! lab. Nothing in the lab is reachable from the machine's root namespace: the bridge has no
//! address and no IPv6, so lab traffic never leaves the lab.
//!
//! Hosts sit on 10.99.0.0/16 (host `i` has the address 10.99.0.0 + `i + 1`), with an `eth0` that carries
//! multicast (the bridge does not snoop, so every multicast frame reaches every host). A host
//! may get its own resolver configuration (`Lab::set_resolv_conf`), for a DNS server in the
//! lab; the machine's own `/etc/resolv.conf` is never touched.

#![allow(unsafe_code)] // setns(2): entering a host's network namespace from a test thread

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const NS_PREFIX: &str = "qlab-";
const NFT_TABLE: &str = "quorate_lab";
const NFT_BLACKHOLE: &str = "quorate_lab_blackhole";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One host of the lab.
#[derive(Debug, Clone)]
pub struct Host {
    /// Index in the lab.
    pub index: usize,
    /// Name of its network namespace.
    pub netns: String,
    /// Its address on the lab subnet.
    pub ip: Ipv4Addr,
    /// The root-namespace end of its veth pair (its "cable").
    veth: String,
}

/// A `quorate` process running in a host.
#[derive(Debug)]
pub struct Proc {
    /// The host it runs in.
    pub host: usize,
    program: String,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
    label: String,
}

/// Handle to a process of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcId(usize);

/// A lab of hosts on one bridge.
pub struct Lab {
    tag: String,
    bridge: String,
    hosts: Vec<Host>,
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
    /// Machine-wide settings this lab changed, with the values to put back on drop.
    restore: Vec<(String, String)>,
    _lock: File,
}

impl Lab {
    /// Makes a lab of `n` hosts. Panics, saying why, without root or without `ip` and `nft`.
    pub fn new(n: usize) -> Lab {
        assert!((1..=4096).contains(&n), "a lab has 1 to 4096 hosts");
        preflight();
        let lock_path = std::env::temp_dir().join("quorate-lab.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("cannot open the lab lock {}: {e}", lock_path.display()));
        lock.lock()
            .unwrap_or_else(|e| panic!("cannot take the lab lock: {e}"));
        sweep_stale();

        let counter = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xff;
        let tag = format!("{:06x}{:02x}", std::process::id(), counter);
        let bridge = format!("qb{tag}");
        let dir = tempfile::Builder::new()
            .prefix("quorate-lab-")
            .tempdir()
            .expect("lab temp dir");
        let mut lab = Lab {
            tag,
            bridge,
            hosts: Vec::new(),
            procs: Vec::new(),
            dir,
            restore: Vec::new(),
            _lock: lock,
        };

        ip(&[
            "link",
            "add",
            &lab.bridge,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
            "stp_state",
            "0",
        ]);
        write_sysctl_root(&format!("net/ipv6/conf/{}/disable_ipv6", lab.bridge), "1");
        ip(&["link", "set", &lab.bridge, "up"]);
        for i in 0..n {
            lab.add_host(i);
        }
        lab
    }

    fn add_host(&mut self, i: usize) {
        let netns = format!("{NS_PREFIX}{}-{i}", self.tag);
        let veth = format!("qv{}{i:x}", self.tag);
        let ipaddr = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 99, 0, 0)) + i as u32 + 1);
        ip(&["netns", "add", &netns]);
        let host = Host {
            index: i,
            netns: netns.clone(),
            ip: ipaddr,
            veth: veth.clone(),
        };
        // Before eth0 exists, so that it starts with these: no duplicate-address wait for the
        // IPv6 link-local address that mDNS over IPv6 uses.
        in_netns(&netns, || {
            for key in ["all", "default"] {
                let _ = fs::write(format!("/proc/sys/net/ipv6/conf/{key}/accept_dad"), "0");
            }
        });
        ip(&["-n", &netns, "link", "set", "lo", "up"]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ]);
        write_sysctl_root(&format!("net/ipv6/conf/{veth}/disable_ipv6"), "1");
        ip(&["link", "set", &veth, "master", &self.bridge, "up"]);
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{ipaddr}/16"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &netns, "link", "set", "eth0", "up"]);
        ip(&["-n", &netns, "route", "add", "224.0.0.0/4", "dev", "eth0"]);
        self.hosts.push(host);
    }

    /// The lab's hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Gives host `i` its own `/etc/resolv.conf`, with `text` as its contents, for the processes
    /// started there from now on: `ip netns exec` bind-mounts `/etc/netns/<netns>/resolv.conf`
    /// over `/etc/resolv.conf` when that file exists. The machine's own `/etc/resolv.conf` is
    /// never touched; the file goes with the host's namespace.
    pub fn set_resolv_conf(&self, i: usize, text: &str) {
        let dir = Path::new("/etc/netns").join(&self.hosts[i].netns);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot make {}: {e}", dir.display()));
        fs::write(dir.join("resolv.conf"), text)
            .unwrap_or_else(|e| panic!("cannot write {}/resolv.conf: {e}", dir.display()));
    }

    /// A directory for host `i`'s files (data dirs, configs), inside the lab's temporary dir.
    pub fn host_dir(&self, i: usize) -> PathBuf {
        let d = self.dir.path().join(format!("h{i}"));
        fs::create_dir_all(&d).expect("host dir");
        d
    }

    /// Runs `f` on a thread inside host `i`'s network namespace and returns its result. Sockets
    /// made inside stay in that namespace when used from other threads afterwards.
    pub fn in_host<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.hosts[i].netns, f)
    }

    /// Runs a command inside host `i` to completion.
    pub fn exec(&self, i: usize, program: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.hosts[i].netns, program])
            .args(args);
        scrub_env(&mut cmd);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {program} in host {i}: {e}"))
    }

    /// A command that starts directly inside host `i`'s network namespace (setns before exec),
    /// without the mount work of `ip netns exec`: for timing a process from start to exit.
    pub fn command_in(&self, i: usize, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let ns = File::open(format!("/run/netns/{}", self.hosts[i].netns)).expect("open netns");
        let mut cmd = Command::new(program);
        scrub_env(&mut cmd);
        // SAFETY: the closure runs in the forked child before exec and only calls setns(2),
        // which is async-signal-safe; the fd stays open until the Command is dropped.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        cmd
    }

    /// Runs the built `quorate` binary inside host `i` to completion.
    pub fn quorate(&self, i: usize, args: &[&str]) -> Output {
        self.exec(i, env!("CARGO_BIN_EXE_quorate"), args)
    }

    /// Runs a `quorate` command that needs the admin credential in host `i`, pointing it at
    /// the data dir the test agents use there (`host_dir(i)/data`), where the agent keeps it.
    pub fn quorate_admin(&self, i: usize, args: &[&str]) -> Output {
        let dir = self.host_dir(i).join("data");
        let mut all: Vec<&str> = args.to_vec();
        let dir = dir.to_str().expect("utf-8 path").to_string();
        all.extend(["--data-dir", &dir]);
        self.quorate(i, &all)
    }

    /// Starts `quorate agent --data-dir host_dir(i)/DATA --name NAME --log-format json EXTRA`
    /// in host `i`.
    pub fn spawn_agent(&mut self, i: usize, name: &str, data: &str, extra: &[&str]) -> ProcId {
        let args = self.agent_args(i, name, data, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(i, name, &args)
    }

    /// [`Lab::spawn_agent`] behind `gate` ([`Lab::spawn_gated`]), its log under `label` (a
    /// name per round when the same agent name is started again with another data dir).
    pub fn spawn_agent_gated(
        &mut self,
        i: usize,
        label: &str,
        gate: &Gate,
        name: &str,
        data: &str,
        extra: &[&str],
    ) -> ProcId {
        let args = self.agent_args(i, name, data, extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn_gated(i, label, gate, env!("CARGO_BIN_EXE_quorate"), &args)
    }

    fn agent_args(&self, i: usize, name: &str, data: &str, extra: &[&str]) -> Vec<String> {
        let dir = self.host_dir(i).join(data);
        let dir = dir.to_str().expect("utf-8 path");
        let mut args = vec![
            "agent",
            "--data-dir",
            dir,
            "--name",
            name,
            "--log-format",
            "json",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_string).collect()
    }

    /// Starts `quorate ARGS` in host `i`; its stdout and stderr go to a log file.
    pub fn spawn(&mut self, i: usize, label: &str, args: &[&str]) -> ProcId {
        self.spawn_program(i, label, env!("CARGO_BIN_EXE_quorate"), args)
    }

    /// Starts any program in host `i`; its stdout and stderr go to a log file.
    pub fn spawn_program(&mut self, i: usize, label: &str, program: &str, args: &[&str]) -> ProcId {
        let log = self.dir.path().join(format!("{label}.log"));
        let mut proc = Proc {
            host: i,
            program: program.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            log,
            label: label.to_string(),
        };
        start_proc(&self.hosts[i].netns, &mut proc);
        self.procs.push(proc);
        ProcId(self.procs.len() - 1)
    }

    /// A start gate in the lab's directory: processes spawned through it
    /// ([`Lab::spawn_gated`]) wait, already started, until [`Gate::release`] lets them all go
    /// at once (a FIFO each reads a line from before it execs the program).
    pub fn gate(&self, name: &str) -> Gate {
        let path = self.dir.path().join(format!("{name}.gate"));
        let _ = fs::remove_file(&path);
        let out = Command::new("mkfifo")
            .arg(&path)
            .output()
            .expect("run mkfifo");
        assert!(
            out.status.success(),
            "mkfifo {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Gate { path, writer: None }
    }

    /// Starts `program ARGS` in host `i` behind `gate`: the process runs, but execs the
    /// program only when the gate is released (the pid stays the same).
    pub fn spawn_gated(
        &mut self,
        i: usize,
        label: &str,
        gate: &Gate,
        program: &str,
        args: &[&str],
    ) -> ProcId {
        let path = gate.path.to_str().expect("utf-8 path");
        let mut all = vec!["-c", "read _ < \"$0\"; exec \"$@\"", path, program];
        all.extend_from_slice(args);
        self.spawn_program(i, label, "/bin/sh", &all)
    }

    /// The process's pid.
    pub fn pid(&self, p: ProcId) -> u32 {
        self.procs[p.0]
            .child
            .as_ref()
            .map(Child::id)
            .expect("process is running")
    }

    /// Everything the process has logged, over all its restarts.
    pub fn log(&self, p: ProcId) -> String {
        fs::read_to_string(&self.procs[p.0].log).unwrap_or_default()
    }

    /// The JSON log lines (`--log-format json`) of a process whose message is `message`.
    pub fn log_events(&self, p: ProcId, message: &str) -> Vec<serde_json::Value> {
        self.log(p)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Kills the process with SIGKILL and reaps it.
    pub fn kill9(&mut self, p: ProcId) {
        if let Some(mut child) = self.procs[p.0].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit; returns its status.
    pub fn stop(&mut self, p: ProcId, within: Duration) -> ExitStatus {
        let mut child = self.procs[p.0].child.take().expect("process is running");
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if start.elapsed() > within {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {within:?} of SIGTERM",
                    self.procs[p.0].label
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process has exited (reaping it if so).
    pub fn exited(&mut self, p: ProcId) -> Option<ExitStatus> {
        match self.procs[p.0].child.as_mut() {
            Some(child) => child.try_wait().expect("wait"),
            None => None,
        }
    }

    /// Starts a stopped or killed process again with the same arguments (so the same data dir).
    pub fn restart(&mut self, p: ProcId) {
        let proc = &mut self.procs[p.0];
        assert!(
            proc.child.is_none(),
            "{} is still running; kill or stop it first",
            proc.label
        );
        let netns = self.hosts[proc.host].netns.clone();
        start_proc(&netns, proc);
    }

    /// Starts a stopped or killed process again with other arguments.
    pub fn restart_with(&mut self, p: ProcId, args: &[&str]) {
        self.procs[p.0].args = args.iter().map(|s| s.to_string()).collect();
        self.restart(p);
    }

    /// The arguments a process was (last) started with.
    pub fn args(&self, p: ProcId) -> Vec<String> {
        self.procs[p.0].args.clone()
    }

    /// Pulls host `i`'s cable: its link goes down, its addresses stay.
    pub fn cut(&self, i: usize) {
        ip(&["link", "set", &self.hosts[i].veth, "down"]);
    }

    /// Plugs host `i`'s cable back in.
    pub fn heal(&self, i: usize) {
        ip(&["link", "set", &self.hosts[i].veth, "up"]);
    }

    /// Drops `percent` of the packets host `i` sends and of those it receives on `eth0`, at
    /// random (nftables `numgen random`); 0 removes the rule.
    pub fn drop_share(&self, i: usize, percent: u32) {
        assert!(percent <= 100, "a share is 0 to 100 percent");
        let mut rules = format!("table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n");
        if percent > 0 {
            rules.push_str(&format!(
                "table inet {NFT_TABLE} {{\n\
                 chain input {{ type filter hook input priority 0; policy accept; iifname \"eth0\" numgen random mod 100 < {percent} drop; }}\n\
                 chain output {{ type filter hook output priority 0; policy accept; oifname \"eth0\" numgen random mod 100 < {percent} drop; }}\n\
                 }}\n"
            ));
        }
        self.nft(i, &rules);
    }

    /// Blackholes host `i` (`on`) or ends it: every frame `eth0` receives or would send is
    /// dropped silently at the device (nftables `netdev` ingress and egress hooks, so ARP too,
    /// no ICMP answer, and the host's own sends still succeed). The link stays up, unlike
    /// [`Lab::cut`]: peers see nothing go down, only silence. Independent of
    /// [`Lab::drop_share`], which has its own table.
    pub fn blackhole(&self, i: usize, on: bool) {
        let mut rules =
            format!("table netdev {NFT_BLACKHOLE}\ndelete table netdev {NFT_BLACKHOLE}\n");
        if on {
            rules.push_str(&format!(
                "table netdev {NFT_BLACKHOLE} {{\n\
                 chain ingress {{ type filter hook ingress device \"eth0\" priority 0; policy drop; }}\n\
                 chain egress {{ type filter hook egress device \"eth0\" priority 0; policy drop; }}\n\
                 }}\n"
            ));
        }
        self.nft(i, &rules);
    }

    /// Loads an nftables ruleset (`nft -f -`) in host `i`.
    fn nft(&self, i: usize, rules: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.hosts[i].netns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(rules.as_bytes())
            .expect("write rules");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft failed in host {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts a thread inside host `i`'s network namespace that runs `f` (a client that
    /// works beside the test, such as a writer or a sampler of the agents' status), and returns
    /// its handle. Unlike [`Lab::in_host`], it does not borrow the lab, so the test may kill,
    /// restart or cut meanwhile.
    pub fn spawn_in_host<T: Send + 'static>(
        &self,
        i: usize,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let netns = self.hosts[i].netns.clone();
        std::thread::spawn(move || {
            enter_netns(&netns);
            f()
        })
    }

    /// Makes room for `entries` ARP entries in all: the kernel keeps one neighbour table for
    /// every network namespace of the machine (its `gc_thresh*` limits exist in the root
    /// namespace only, 1024 entries by default), so a lab of N hosts that all talk to each
    /// other needs about N² entries where N real machines need N each. Put back on drop.
    pub fn raise_neighbour_limits(&mut self, entries: u64) {
        for (key, want) in [
            ("net/ipv4/neigh/default/gc_thresh1", entries),
            ("net/ipv4/neigh/default/gc_thresh2", entries * 2),
            ("net/ipv4/neigh/default/gc_thresh3", entries * 4),
        ] {
            let path = format!("/proc/sys/{key}");
            let was = fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string();
            if was.parse::<u64>().is_ok_and(|v| v >= want) {
                continue;
            }
            if !self.restore.iter().any(|(k, _)| k == key) {
                self.restore.push((key.to_string(), was));
            }
            write_sysctl_root(key, &want.to_string());
        }
    }

    /// The names of the network namespaces this lab made (to check that they are gone).
    pub fn netns_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.netns.clone()).collect()
    }

    fn print_logs(&self) {
        for proc in &self.procs {
            let text = fs::read_to_string(&proc.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            eprintln!(
                "===== log of {} (host {}, last {} lines) =====",
                proc.label,
                proc.host,
                tail.len()
            );
            for l in tail {
                eprintln!("{l}");
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for proc in &mut self.procs {
            if let Some(mut child) = proc.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            self.print_logs();
        }
        // QLAB_KEEP_LOGS=DIR: every process's log is copied there (to study a run afterwards).
        if let Ok(keep) = std::env::var("QLAB_KEEP_LOGS") {
            let _ = fs::create_dir_all(&keep);
            for proc in &self.procs {
                let to = std::path::Path::new(&keep).join(format!("{}.log", proc.label));
                let _ = fs::copy(&proc.log, to);
            }
        }
        for host in &self.hosts {
            remove_netns(&host.netns);
            let _ = quiet_ip(&["link", "del", &host.veth]);
        }
        let _ = quiet_ip(&["link", "del", &self.bridge]);
        for (key, was) in self.restore.iter().rev() {
            let _ = fs::write(format!("/proc/sys/{key}"), was);
        }
    }
}

fn start_proc(netns: &str, proc: &mut Proc) {
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&proc.log)
        .expect("log file");
    let _ = writeln!(
        log,
        "--- start in host {}: {} {}",
        proc.host,
        proc.program,
        proc.args.join(" ")
    );
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, &proc.program])
        .args(&proc.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log);
    scrub_env(&mut cmd);
    proc.child = Some(cmd.spawn().expect("spawn quorate"));
}

/// Lists the network namespaces on the machine.
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn preflight() {
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the LAN lab needs root (network namespaces, veth pairs, nftables); run the tests as root, as CI does"
    );
    for (tool, arg, package) in [("ip", "-V", "iproute2"), ("nft", "--version", "nftables")] {
        let ok = Command::new(tool)
            .arg(arg)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            ok,
            "the LAN lab needs `{tool}`: apt-get install -y {package}"
        );
    }
}

/// Removes labs left behind by test processes that no longer exist.
fn sweep_stale() {
    for ns in netns_list() {
        let Some(rest) = ns.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.get(..6).and_then(|h| u32::from_str_radix(h, 16).ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        remove_netns(&ns);
        if let Some(tag) = rest.get(..8) {
            let _ = quiet_ip(&["link", "del", &format!("qb{tag}")]);
        }
    }
}

fn remove_netns(netns: &str) {
    // Processes keep a namespace alive after its name is gone: kill them first.
    if let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<libc::pid_t>() {
                // SAFETY: kill(2) has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    let _ = quiet_ip(&["netns", "del", netns]);
    // A resolver configuration the lab gave the host (`Lab::set_resolv_conf`).
    if netns.starts_with(NS_PREFIX) {
        let _ = fs::remove_dir_all(Path::new("/etc/netns").join(netns));
    }
}

fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(netns);
            f()
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    })
}

/// Moves the calling thread into a network namespace (for good: call it on a thread of its
/// own, which ends in it).
fn enter_netns(netns: &str) {
    let path = format!("/run/netns/{netns}");
    let fd = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
    // SAFETY: setns(2) on a valid namespace fd changes only this thread's network namespace.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {netns}: {}",
        std::io::Error::last_os_error()
    );
}

fn write_sysctl_root(key: &str, value: &str) {
    let path = format!("/proc/sys/{key}");
    fs::write(&path, value).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
}

fn ip(args: &[&str]) {
    let out = quiet_ip(args);
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn quiet_ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

/// Processes in the lab get no `QUORATE_*` variable from the test's environment.
fn scrub_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("QUORATE_") {
            cmd.env_remove(k);
        }
    }
}

/// A start gate made by [`Lab::gate`].
pub struct Gate {
    path: PathBuf,
    writer: Option<File>,
}

impl Gate {
    /// Releases `n` processes waiting at the gate at once: one line each, written together;
    /// the FIFO stays open (until the gate is dropped) for any still on its way to it.
    pub fn release(&mut self, n: usize) {
        let mut w = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .expect("open the gate");
        w.write_all("go\n".repeat(n).as_bytes())
            .expect("release the gate");
        self.writer = Some(w);
    }
}
