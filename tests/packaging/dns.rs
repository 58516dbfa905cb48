//! Discovery beyond multicast: agents with mDNS off find each other through `--peers` DNS
//! names served by a real DNS server (dnsmasq) in a lab host, form one cluster over the peers
//! gossip then shows, and a node whose name resolves only later still joins.
//!
//! [`LabDns`] is the lab's DNS server, shared with the Kubernetes test: dnsmasq listening on
//! its host's lab address only (never on loopback or outside the lab), answering for `lab.`
//! names from a hosts directory it re-reads on change, and for the SRV records it is given.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::agents::{agent, wait_group};
use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

/// dnsmasq in a lab host.
pub(crate) struct LabDns {
    host: usize,
    hosts_dir: PathBuf,
    proc: ProcId,
}

impl LabDns {
    /// Starts dnsmasq in host `host`, serving the SRV records `srv` (`name`, `target`, `port`)
    /// and the A records written with [`LabDns::set_hosts`]; waits until it answers.
    pub(crate) fn start(lab: &mut Lab, host: usize, srv: &[(&str, &str, u16)]) -> LabDns {
        let dir = lab.host_dir(host).join("dns");
        let hosts_dir = dir.join("hosts.d");
        std::fs::create_dir_all(&hosts_dir).expect("dns hosts dir");
        let ip = lab.host(host).ip;
        let mut args = vec![
            "--keep-in-foreground".to_string(),
            "--conf-file=/dev/null".into(),
            "--no-resolv".into(),
            "--no-hosts".into(),
            "--user=root".into(),
            format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
            format!("--listen-address={ip}"),
            "--bind-interfaces".into(),
            // Names under lab. are ours: what is not there does not exist (no upstream).
            "--local=/lab/".into(),
            "--log-facility=-".into(),
            "--log-queries".into(),
            format!("--hostsdir={}", hosts_dir.display()),
            // Answers are not cached by the resolvers that ask: records appear at once.
            "--local-ttl=0".into(),
        ];
        for (name, target, port) in srv {
            args.push(format!("--srv-host={name},{target},{port}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let proc = lab.spawn_program(host, "dnsmasq", "/usr/sbin/dnsmasq", &args);
        let dns = LabDns {
            host,
            hosts_dir,
            proc,
        };
        dns.set_hosts(lab, "probe", &[(ip, "dns.lab")]);
        lab.set_resolv_conf(host, &dns.resolv_conf(lab));
        wait::until("dnsmasq to answer", Duration::from_secs(10), || {
            let out = lab.exec(host, "getent", &["hosts", "dns.lab"]);
            if out.status.success() {
                Ok(())
            } else {
                Err(lab.log(dns.proc))
            }
        });
        dns
    }

    /// The resolver configuration that points at this server.
    pub(crate) fn resolv_conf(&self, lab: &Lab) -> String {
        format!(
            "nameserver {}\noptions timeout:1 attempts:2\n",
            lab.host(self.host).ip
        )
    }

    /// Makes host `i` resolve through this server (for the processes started there next).
    pub(crate) fn serve(&self, lab: &Lab, i: usize) {
        lab.set_resolv_conf(i, &self.resolv_conf(lab));
    }

    /// Writes (or replaces) the hosts file `file` of the server with these A records; dnsmasq
    /// re-reads its hosts directory when a file appears in it.
    pub(crate) fn set_hosts(&self, lab: &Lab, file: &str, records: &[(Ipv4Addr, &str)]) {
        let text: String = records
            .iter()
            .map(|(ip, name)| format!("{ip} {name}\n"))
            .collect();
        // Written beside the directory, then renamed into it: dnsmasq never reads half a file.
        let tmp = lab.host_dir(self.host).join(format!("{file}.tmp"));
        std::fs::write(&tmp, text).expect("write hosts file");
        std::fs::rename(&tmp, self.hosts_dir.join(file)).expect("rename hosts file");
    }

    /// Waits until `name` resolves from host `i` to exactly `want`.
    pub(crate) fn wait_resolves(&self, lab: &Lab, i: usize, name: &str, want: &[Ipv4Addr]) {
        let mut want: Vec<String> = want.iter().map(Ipv4Addr::to_string).collect();
        want.sort();
        wait::until(
            &format!("{name} to resolve to {want:?} in host {i}"),
            Duration::from_secs(10),
            || {
                let out = lab.exec(i, "getent", &["ahostsv4", name]);
                let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.contains("STREAM"))
                    .filter_map(|l| l.split_whitespace().next().map(str::to_string))
                    .collect();
                got.sort();
                got.dedup();
                if got == want { Ok(()) } else { Err(got) }
            },
        );
    }
}

/// A config file with mDNS off, for host `i`.
fn no_mdns_config(lab: &Lab, i: usize) -> String {
    let path = lab.host_dir(i).join("no-mdns.toml");
    std::fs::write(&path, "[discovery]\nenabled = false\n").expect("config");
    path.to_str().expect("utf-8").to_string()
}

/// Three agents with mDNS off and `--peers srv:_quorate._udp.voters.lab` (an SRV record whose
/// targets are the three hosts) form one cluster: one leader, three voters. A fourth agent
/// given a name with no record yet logs that it does not resolve and waits; once the name is
/// added to the DNS server (several A records: the voters' addresses), it joins as a learner.
#[test]
fn agents_find_each_other_by_srv_record_and_a_late_name_still_joins() {
    let mut lab = Lab::new(5);
    let srv = "_quorate._udp.voters.lab";
    let dns = LabDns::start(
        &mut lab,
        0,
        &[
            (srv, "q1.voters.lab", 7947),
            (srv, "q2.voters.lab", 7947),
            (srv, "q3.voters.lab", 7947),
        ],
    );
    let records: Vec<(Ipv4Addr, String)> = (1..=3)
        .map(|i| (lab.host(i).ip, format!("q{i}.voters.lab")))
        .collect();
    let refs: Vec<(Ipv4Addr, &str)> = records.iter().map(|(ip, n)| (*ip, n.as_str())).collect();
    dns.set_hosts(&lab, "voters", &refs);
    dns.wait_resolves(&lab, 0, "q3.voters.lab", &[lab.host(3).ip]);
    let peers = format!("srv:{srv}");
    for i in 1..=3 {
        dns.serve(&lab, i);
        let config = no_mdns_config(&lab, i);
        agent(
            &mut lab,
            i,
            &format!("q{i}"),
            &["--config", &config, "--peers", &peers],
        );
    }
    let voters = [("q1", "voter"), ("q2", "voter"), ("q3", "voter")];
    wait_group(&lab, &[1, 2, 3], &voters, Duration::from_secs(60));

    dns.serve(&lab, 4);
    let config = no_mdns_config(&lab, 4);
    let late = agent(
        &mut lab,
        4,
        "q4",
        &["--config", &config, "--peers", "members.voters.lab"],
    );
    wait::until(
        "q4 to say its peer does not resolve yet",
        Duration::from_secs(20),
        || {
            lab.log_events(late, "a peer does not resolve yet; retrying")
                .pop()
                .ok_or_else(|| lab.log(late))
        },
    );
    let members: Vec<(Ipv4Addr, &str)> = (1..=3)
        .map(|i| (lab.host(i).ip, "members.voters.lab"))
        .collect();
    dns.set_hosts(&lab, "members", &members);
    let all = [voters[0], voters[1], voters[2], ("q4", "learner")];
    wait_group(&lab, &[1, 2, 3, 4], &all, Duration::from_secs(60));
}

/// Three agents with mDNS off and `--peers voters.lab`, a plain name with one A record per
/// agent, form one cluster (one leader, three voters); the third agent's record is added only
/// after all three started, and the cluster still forms with it, never without it (the
/// expected count is three) and never twice.
#[test]
fn agents_find_each_other_by_a_name_with_several_a_records() {
    let mut lab = Lab::new(4);
    let dns = LabDns::start(&mut lab, 0, &[]);
    let ips: Vec<Ipv4Addr> = lab.hosts().iter().map(|h| h.ip).collect();
    let ip = |i: usize| ips[i];
    dns.set_hosts(
        &lab,
        "voters",
        &[(ip(1), "voters.lab"), (ip(2), "voters.lab")],
    );
    dns.wait_resolves(&lab, 0, "voters.lab", &[ip(1), ip(2)]);
    let mut procs = Vec::new();
    for i in 1..=3 {
        dns.serve(&lab, i);
        let config = no_mdns_config(&lab, i);
        procs.push(agent(
            &mut lab,
            i,
            &format!("a{i}"),
            &["--config", &config, "--peers", "voters.lab"],
        ));
    }
    dns.set_hosts(
        &lab,
        "voters",
        &[
            (ip(1), "voters.lab"),
            (ip(2), "voters.lab"),
            (ip(3), "voters.lab"),
        ],
    );
    let voters = [("a1", "voter"), ("a2", "voter"), ("a3", "voter")];
    wait_group(&lab, &[1, 2, 3], &voters, Duration::from_secs(60));
    let formed: usize = procs
        .iter()
        .map(|p| {
            lab.log_events(
                *p,
                "--peers: this node has the lowest id of the forming voters and forms the cluster",
            )
            .len()
        })
        .sum();
    assert_eq!(formed, 1, "exactly one node formed the cluster");
}
