//! `GET /metrics` in the lab: every node's exposition passes `promtool check metrics` without a
//! complaint and tells what the cluster is, before and after the node is a member; and a real
//! Prometheus server scrapes three agents and sees one leader.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::agents::{agent, status, wait_group};
use crate::support::http::{self, Answer};
use crate::support::lab::Lab;
use crate::support::wait;

/// Where an agent's API listens in its host unless told otherwise.
const LOCAL_API: &str = "127.0.0.1:7948";

/// What a Prometheus server sends (2.42), which asks for OpenMetrics first.
const PROMETHEUS_ACCEPT: &str = "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The families a node shows whether or not it is a member (as 0.0.4 `TYPE` lines name them).
const NODE_FAMILIES: &[&str] = &[
    "quorate_cluster_member",
    "quorate_gossip_members",
    "quorate_gossip_datagrams_total",
    "quorate_gossip_bytes_total",
    "quorate_gossip_send_errors_total",
    "quorate_gossip_syns_skipped_total",
    "quorate_gossip_datagrams_dropped_total",
    "quorate_discovery_resolutions_total",
    "quorate_discovery_browsing",
    "quorate_discovery_skipped_total",
];

/// The families every member shows besides.
const MEMBER_FAMILIES: &[&str] = &[
    "quorate_raft_term",
    "quorate_raft_commit_index",
    "quorate_raft_applied_index",
    "quorate_raft_last_log_index",
    "quorate_raft_leader",
    "quorate_raft_leader_changes_total",
    "quorate_raft_members",
    "quorate_raft_commit_latency_seconds",
    "quorate_raft_writes_total",
    "quorate_raft_writes_forwarded_total",
    "quorate_raft_writes_failed_total",
    "quorate_raft_membership_changes_total",
    "quorate_raft_quorum_checks_total",
    "quorate_raft_campaigns_total",
    "quorate_raft_pre_votes_lost_total",
    "quorate_joins_total",
    "quorate_requests_refused_total",
    "quorate_certificate_renewals_total",
    "quorate_autopilot_removals_held_total",
    "quorate_quic_connections_refused_total",
    "quorate_quic_retries_total",
    "quorate_quic_requests_served_total",
    "quorate_quic_requests_unreadable_total",
    "quorate_quic_calls_total",
    "quorate_quic_calls_failed_total",
    "quorate_quic_bytes_total",
];

/// An exposition in the Prometheus text format, read: the families its `TYPE` lines name and
/// every sample by series (`name` or `name{labels}`, as written).
#[derive(Debug)]
struct Exposition {
    families: BTreeSet<String>,
    samples: BTreeMap<String, f64>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut families = BTreeSet::new();
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some(name) = rest.split_whitespace().next() {
                    families.insert(name.to_string());
                }
            } else if !line.starts_with('#')
                && let Some((series, v)) = line.rsplit_once(' ')
            {
                let v = v.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
                samples.insert(series.to_string(), v);
            }
        }
        Exposition { families, samples }
    }

    /// The value of one series, as written.
    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// The series of family `name` that carry every one of `labels` (`key="value"`).
    fn series(&self, name: &str, labels: &[&str]) -> Vec<(&str, f64)> {
        self.samples
            .iter()
            .filter(|(k, _)| {
                (k.as_str() == name || k.starts_with(&format!("{name}{{")))
                    && labels.iter().all(|l| k.contains(l))
            })
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }

    /// The sum of those series.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.series(name, labels).iter().map(|(_, v)| v).sum()
    }
}

/// `GET /metrics` from the agent at `addr`, inside host `i`, with `headers`: a 200 answer.
fn scrape(lab: &Lab, i: usize, addr: &str, headers: &[&str]) -> Result<Answer, String> {
    let addr = addr.to_string();
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let answer = lab.in_host(i, move || {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        http::get_text_at(&addr, "/metrics", &headers)
    });
    match answer {
        Some(a) if a.code == 200 => Ok(a),
        Some(a) => Err(format!("host {i}: {} {}", a.code, a.body)),
        None => Err(format!("host {i}: no answer")),
    }
}

/// `promtool check metrics` on `text`: passes, and says nothing (no error, no lint complaint).
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) runs");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("the exposition written to promtool");
    let out = child.wait_with_output().expect("promtool finishes");
    if out.status.success() && out.stdout.is_empty() && out.stderr.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn assert_families(e: &Exposition, families: &[&str], host: usize) {
    for f in families {
        assert!(
            e.families.contains(*f),
            "host {host} shows no {f}; it shows {:?}",
            e.families
        );
    }
}

/// Every node of a three-voter cluster, formed zero-config and written to from each node,
/// serves a `/metrics` that `promtool check metrics` passes with no error and no lint
/// complaint, in the 0.0.4 text format by default and OpenMetrics when asked; its families
/// are all there and say what the cluster is: exactly one leader, three voters, a term,
/// applied and committed entries, the leader's lag per follower, each node's commit latency.
/// Before the cluster forms, the first node already serves its gossip and discovery figures.
#[test]
fn every_node_serves_metrics_that_promtool_passes_and_that_tell_the_cluster() {
    let mut lab = Lab::new(3);
    agent(&mut lab, 0, "m0", &[]);
    // Alone, m0 waits for two more voters: it is forming, not a member. Its API can answer
    // before its gossip view's first look has counted itself, so the scrape is taken once it
    // has (the assertions below still hold it to the rest).
    let forming = wait::until(
        "m0's gossip view counts m0",
        Duration::from_secs(30),
        || {
            let a = scrape(&lab, 0, LOCAL_API, &[])?;
            let alive =
                Exposition::parse(&a.body).sum("quorate_gossip_members", &[r#"status="alive""#]);
            if alive == 1.0 {
                Ok(a)
            } else {
                Err(format!("{alive} alive"))
            }
        },
    );
    promtool(&forming.body).unwrap_or_else(|e| {
        panic!(
            "promtool on a forming node's metrics: {e}\n{}",
            forming.body
        )
    });
    let e = Exposition::parse(&forming.body);
    assert_families(&e, NODE_FAMILIES, 0);
    assert_eq!(e.get("quorate_cluster_member"), Some(0.0), "{e:?}");
    assert_eq!(e.sum("quorate_gossip_members", &[r#"status="alive""#]), 1.0);
    assert!(
        !e.families.contains("quorate_raft_term"),
        "no Raft figures before membership: {:?}",
        e.families
    );

    agent(&mut lab, 1, "m1", &[]);
    agent(&mut lab, 2, "m2", &[]);
    let voters = [("m0", "voter"), ("m1", "voter"), ("m2", "voter")];
    wait_group(&lab, &[0, 1, 2], &voters, Duration::from_secs(60));
    for i in 0..3 {
        let kv = format!("written-by=m{i}");
        let out = lab.quorate_admin(i, &["label", "set", &kv]);
        assert!(
            out.status.success(),
            "label set on m{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let st = status(&lab, 0).expect("status");
    let id_of = |name: &str| {
        st["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .and_then(|m| m["id"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| panic!("{name} in {st}"))
    };
    let ids: Vec<String> = (0..3).map(|i| id_of(&format!("m{i}"))).collect();

    let (texts, leader) = wait::until(
        "every node's metrics to tell one leader, three voters and the writes",
        Duration::from_secs(30),
        || {
            let mut texts = Vec::new();
            let mut leaders = Vec::new();
            let (mut forwarded, mut admitted) = (0.0, 0.0);
            for i in 0..3 {
                let text = scrape(&lab, i, LOCAL_API, &[])?.body;
                let e = Exposition::parse(&text);
                let got = |s: &str| e.get(s).unwrap_or(-1.0);
                let applied = got("quorate_raft_applied_index");
                let seen = format!(
                    "host {i}: member {}, leader {}, term {}, applied {applied}, committed {}, \
                     voters {}, alive {}, leader changes {}, latency count {}",
                    got("quorate_cluster_member"),
                    got("quorate_raft_leader"),
                    got("quorate_raft_term"),
                    got("quorate_raft_commit_index"),
                    e.sum("quorate_raft_members", &[r#"suffrage="voter""#]),
                    e.sum("quorate_gossip_members", &[r#"status="alive""#]),
                    got("quorate_raft_leader_changes_total"),
                    got("quorate_raft_commit_latency_seconds_count"),
                );
                let sane = got("quorate_cluster_member") == 1.0
                    && got("quorate_raft_term") >= 1.0
                    && applied > 0.0
                    && got("quorate_raft_commit_index") >= applied
                    && e.sum("quorate_raft_members", &[r#"suffrage="voter""#]) == 3.0
                    && e.sum(
                        "quorate_raft_members",
                        &[r#"suffrage="voter""#, r#"role="voter""#],
                    ) == 3.0
                    && e.sum("quorate_gossip_members", &[r#"status="alive""#]) == 3.0
                    && got("quorate_raft_leader_changes_total") >= 1.0
                    && got("quorate_raft_commit_latency_seconds_count") >= 1.0;
                if !sane {
                    return Err(seen);
                }
                if got("quorate_raft_leader") == 1.0 {
                    leaders.push(i);
                }
                forwarded += got("quorate_raft_writes_forwarded_total");
                admitted += e.sum("quorate_joins_total", &[r#"outcome="admitted""#]);
                texts.push(text);
            }
            if leaders.len() != 1 {
                return Err(format!("leaders {leaders:?}"));
            }
            let leader = leaders[0];
            let lag = Exposition::parse(&texts[leader]);
            let lagging: BTreeSet<String> = lag
                .series("quorate_raft_replication_lag_entries", &[])
                .iter()
                .map(|(k, _)| k.to_string())
                .collect();
            let followers: BTreeSet<String> = (0..3)
                .filter(|i| *i != leader)
                .map(|i| {
                    format!(
                        "quorate_raft_replication_lag_entries{{node=\"{}\"}}",
                        ids[i]
                    )
                })
                .collect();
            if lagging != followers {
                return Err(format!(
                    "the leader's lag series {lagging:?}, not {followers:?}"
                ));
            }
            // Two of the three label writes were made on followers and forwarded; the two
            // nodes that joined were admitted.
            if forwarded < 2.0 || admitted < 2.0 {
                return Err(format!("forwarded {forwarded}, admitted {admitted}"));
            }
            Ok((texts, leader))
        },
    );

    for (i, text) in texts.iter().enumerate() {
        promtool(text).unwrap_or_else(|e| panic!("promtool on host {i}'s metrics: {e}\n{text}"));
        let e = Exposition::parse(text);
        assert_families(&e, NODE_FAMILIES, i);
        assert_families(&e, MEMBER_FAMILIES, i);
        if i == leader {
            assert_families(&e, &["quorate_raft_replication_lag_entries"], i);
        }
    }

    let plain = scrape(&lab, 1, LOCAL_API, &[]).expect("metrics");
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let open = scrape(&lab, 1, LOCAL_API, &[PROMETHEUS_ACCEPT]).expect("metrics");
    assert_eq!(
        open.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        open.body.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF: {}",
        open.body
    );
    assert!(
        open.body.contains("# TYPE quorate_raft_writes counter\n"),
        "OpenMetrics names the counter family without _total: {}",
        open.body
    );
}

/// A GET to the Prometheus server at `web`, from inside host `i`: its JSON answer.
fn prometheus_api(lab: &Lab, i: usize, web: &str, path: &str) -> Result<Value, String> {
    let (web, path) = (web.to_string(), path.to_string());
    match lab.in_host(i, move || http::request_at(&web, "GET", &path, "", None)) {
        Some((200, v)) => Ok(v),
        Some((code, v)) => Err(format!("{code} {v}")),
        None => Err("Prometheus does not answer yet".into()),
    }
}

/// The one value of an instant query's answer.
fn single_value(v: &Value) -> Option<&str> {
    let result = v["data"]["result"].as_array()?;
    match result.as_slice() {
        [one] => one["value"][1].as_str(),
        _ => None,
    }
}

/// A real Prometheus server (2.42, in a fourth host) scrapes three agents whose API listens
/// on their lab addresses, every second: it reports all three targets up, and by its own
/// query the cluster has exactly one leader among three members.
#[test]
fn a_prometheus_server_scrapes_three_agents_and_counts_one_leader() {
    let mut lab = Lab::new(4);
    let targets: Vec<String> = (0..3).map(|i| format!("{}:7948", lab.host(i).ip)).collect();
    for (i, target) in targets.iter().enumerate() {
        agent(&mut lab, i, &format!("p{i}"), &["--http-addr", target]);
    }
    let dir = lab.host_dir(3);
    let config = dir.join("prometheus.yml");
    let listed: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: quorate\n    static_configs:\n      - targets: [{}]\n",
            listed.join(", ")
        ),
    )
    .expect("prometheus.yml");
    let web = format!("{}:9090", lab.host(3).ip);
    let args = [
        format!("--config.file={}", config.display()),
        format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
        format!("--web.listen-address={web}"),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn_program(3, "prometheus", "/usr/bin/prometheus", &args);

    wait::until(
        "Prometheus to report the three agents up",
        Duration::from_secs(90),
        || {
            let v = prometheus_api(&lab, 3, &web, "/api/v1/targets")?;
            let seen: Vec<(String, String, String)> = v["data"]["activeTargets"]
                .as_array()
                .map(|ts| {
                    ts.iter()
                        .map(|t| {
                            let s = |k: &str| t[k].as_str().unwrap_or("?").to_string();
                            (s("scrapeUrl"), s("health"), s("lastError"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if seen.len() == 3 && seen.iter().all(|(_, health, _)| health == "up") {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    for (query, want) in [
        ("sum(quorate_raft_leader)", "1"),
        ("count(quorate_raft_term)", "3"),
    ] {
        wait::until(
            &format!("Prometheus to answer {query} with {want}"),
            Duration::from_secs(90),
            || {
                let v = prometheus_api(&lab, 3, &web, &format!("/api/v1/query?query={query}"))?;
                match single_value(&v) {
                    Some(got) if got == want => Ok(()),
                    _ => Err(v.to_string()),
                }
            },
        );
    }
}
