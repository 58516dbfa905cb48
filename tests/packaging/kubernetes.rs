//! The Kubernetes manifests (`packaging/kubernetes/`): parsed (python3's yaml, to JSON) and
//! checked for what a cluster there needs, then run in the LAN lab as their pods would run:
//! each pod a lab host, started with the exact command and environment its container gives
//! (the downward API's pod name, namespace and IP, and the Secrets' values, substituted as the
//! kubelet does, `$(VAR)` included), its volume a host directory, and a dnsmasq serving the
//! names the headless Services would (an A record per pod, the Service's name with every pod,
//! the SRV record of each named port).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::dns::LabDns;
use crate::support::agents::{leader_name, suffrages};
use crate::support::http;
use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/kubernetes")
}

/// Every document of every manifest, by file name.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir()).expect("packaging/kubernetes") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let run = std::process::Command::new("python3")
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
            ])
            .arg(&path)
            .output()
            .expect("python3 (with python3-yaml) runs");
        assert!(
            run.status.success(),
            "{} does not parse: {}",
            path.display(),
            String::from_utf8_lossy(&run.stderr)
        );
        let docs: Vec<Value> = serde_json::from_slice(&run.stdout).expect("json");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        out.insert(name, docs.into_iter().filter(|d| !d.is_null()).collect());
    }
    out
}

/// The object of `kind` named `name`, from any manifest.
fn object<'a>(all: &'a BTreeMap<String, Vec<Value>>, kind: &str, name: &str) -> &'a Value {
    all.values()
        .flatten()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the manifests"))
}

/// The value of env var `name` of a container (`value`, or the `valueFrom` object).
fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no env {name}"))
}

/// MiB of a quantity such as `64Mi` or `1Gi`.
fn mib(q: &Value) -> f64 {
    let q = q.as_str().expect("a quantity");
    let (n, unit) = q.split_at(q.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(q.len()));
    let n: f64 = n.parse().expect("a number");
    n * match unit {
        "Ki" => 1.0 / 1024.0,
        "Mi" => 1.0,
        "Gi" => 1024.0,
        other => panic!("unit {other:?}"),
    }
}

/// The largest value of `column` in the at-rest table of `benches/results/scale.md`.
fn scale_max(column: &str) -> f64 {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/results/scale.md"),
    )
    .expect("benches/results/scale.md");
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.trim_matches('|').split('|').map(str::trim).collect())
        .collect();
    let header = rows
        .iter()
        .position(|r| r.contains(&column))
        .unwrap_or_else(|| panic!("no column {column:?} in scale.md"));
    let col = rows[header].iter().position(|c| *c == column).unwrap();
    rows[header + 1..]
        .iter()
        .take_while(|r| r.len() == rows[header].len())
        .filter_map(|r| r[col].parse::<f64>().ok())
        .fold(0.0, f64::max)
}

/// Every manifest parses, and gives what the cluster needs: the voters' headless Service
/// publishes not-ready addresses with the UDP port named `quorate` (so the SRV record the
/// voters resolve exists), 3 voters started in parallel with mDNS off, `--peers` naming that
/// SRV record and `bootstrap_expect` 3, the HTTP API on the pod IP with the readiness and
/// liveness probes on it, a PodDisruptionBudget of one voter, storage nodes joined by a token
/// from a Secret, non-root and read-only containers, a volume claim for the data dir, and
/// resources no smaller than the scale benchmark's measured RSS.
#[test]
fn manifests_parse_and_give_what_a_cluster_needs() {
    let all = manifests();
    let kustomization = &all["kustomization.yaml"][0];
    let listed: Vec<&str> = kustomization["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for file in all.keys().filter(|f| *f != "kustomization.yaml") {
        assert!(
            listed.contains(&file.as_str()),
            "kustomization misses {file}"
        );
    }

    let svc = object(&all, "Service", "quorate-voters");
    assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
    assert_eq!(svc["spec"]["publishNotReadyAddresses"], true);
    let quic = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "quorate")
        .expect("a port named quorate");
    assert_eq!(quic["protocol"], "UDP");
    assert_eq!(quic["port"], 7947);
    let ns = svc["metadata"]["namespace"].as_str().unwrap();

    let voters = object(&all, "StatefulSet", "quorate-voter");
    let storage = object(&all, "StatefulSet", "quorate-storage");
    assert_eq!(voters["spec"]["replicas"], 3);
    assert_eq!(voters["spec"]["serviceName"], "quorate-voters");
    assert_eq!(voters["spec"]["podManagementPolicy"], "Parallel");
    assert_eq!(
        voters["spec"]["selector"]["matchLabels"], svc["spec"]["selector"],
        "the Service selects the voters"
    );
    for (set, role) in [(voters, "voter"), (storage, "storage")] {
        let pod = &set["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        assert_eq!(env(c, "QUORATE_DISCOVERY__ENABLED")["value"], "false");
        assert_eq!(env(c, "QUORATE_HTTP_ADDR")["value"], "$(POD_IP):7948");
        assert_eq!(env(c, "QUORATE_ADVERTISE")["value"], "$(POD_IP)");
        assert_eq!(
            env(c, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
            "status.podIP"
        );
        let peers = env(c, "QUORATE_PEERS")["value"].as_str().unwrap();
        assert_eq!(
            peers,
            "srv:_quorate._udp.quorate-voters.$(POD_NAMESPACE).svc.cluster.local"
        );
        assert_eq!(
            env(c, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        for (probe, path) in [
            ("readinessProbe", "/health/ready"),
            ("livenessProbe", "/health/live"),
        ] {
            assert_eq!(c[probe]["httpGet"]["path"], path, "{role} {probe}");
            assert_eq!(c[probe]["httpGet"]["port"], "http", "{role} {probe}");
        }
        let http_port = c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "http")
            .expect("a container port named http");
        assert_eq!(http_port["containerPort"], 7948);
        let sc = &pod["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert!(sc["runAsUser"].as_u64().unwrap() > 0);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
        let mount = &c["volumeMounts"][0];
        assert_eq!(mount["mountPath"], "/var/lib/quorate");
        assert_eq!(env(c, "QUORATE_DATA_DIR")["value"], "/var/lib/quorate");
        assert_eq!(
            set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
            mount["name"]
        );
        let r = &c["resources"];
        let measured = match role {
            "voter" => scale_max("leader RSS MiB"),
            _ => scale_max("storage RSS mean MiB"),
        };
        assert!(measured > 0.0, "scale.md gives the {role} RSS");
        let (req, lim) = (mib(&r["requests"]["memory"]), mib(&r["limits"]["memory"]));
        assert!(
            req >= measured && lim >= 2.0 * req,
            "{role}: requests {req} MiB and limits {lim} MiB against a measured {measured} MiB"
        );
        assert!(r["requests"]["cpu"].is_string() && r["limits"]["cpu"].is_string());
    }
    let vc = &voters["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(vc, "QUORATE_BOOTSTRAP_EXPECT")["value"], "3");
    assert_eq!(
        env(vc, "QUORATE_CLUSTER_KEY")["valueFrom"]["secretKeyRef"]["name"],
        "quorate-cluster-key"
    );
    let sc = &storage["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(env(sc, "QUORATE_ROLE")["value"], "storage");
    assert_eq!(
        env(sc, "QUORATE_JOIN")["valueFrom"]["secretKeyRef"]["name"],
        "quorate-join"
    );

    let pdb = object(&all, "PodDisruptionBudget", "quorate-voters");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        voters["spec"]["template"]["metadata"]["labels"]
    );
    assert!(ns == "quorate" && object(&all, "Namespace", ns)["kind"] == "Namespace");
}

/// A pod as the test runs it: the set's pod `ordinal`, in lab host `host`.
struct Pod<'a> {
    set: &'a Value,
    ordinal: usize,
    host: usize,
}

impl Pod<'_> {
    fn name(&self) -> String {
        format!(
            "{}-{}",
            self.set["metadata"]["name"].as_str().unwrap(),
            self.ordinal
        )
    }

    fn container(&self) -> &Value {
        &self.set["spec"]["template"]["spec"]["containers"][0]
    }

    /// The pod's DNS name under its headless Service.
    fn fqdn(&self) -> String {
        let m = &self.set["metadata"];
        format!(
            "{}.{}.{}.svc.cluster.local",
            self.name(),
            self.set["spec"]["serviceName"].as_str().unwrap(),
            m["namespace"].as_str().unwrap()
        )
    }

    /// The volume's mount path, and the host directory that stands for it.
    fn volume(&self, lab: &Lab) -> (String, PathBuf) {
        let mount = self.container()["volumeMounts"][0]["mountPath"]
            .as_str()
            .unwrap()
            .to_string();
        let d = lab.host_dir(self.host).join(format!("pvc-{}", self.name()));
        std::fs::create_dir_all(&d).expect("volume dir");
        (mount, d)
    }

    /// The container's environment as the kubelet makes it: the downward API, the Secrets,
    /// and `$(VAR)` references to variables defined before; the mount path is the host dir.
    fn env(&self, lab: &Lab, secrets: &BTreeMap<(&str, &str), String>) -> Vec<(String, String)> {
        let m = &self.set["metadata"];
        let (mount, volume) = self.volume(lab);
        let mut out: Vec<(String, String)> = Vec::new();
        for e in self.container()["env"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap().to_string();
            let value = if let Some(v) = e["value"].as_str() {
                let mut v = v.to_string();
                for (k, val) in &out {
                    v = v.replace(&format!("$({k})"), val);
                }
                v
            } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                match path {
                    "metadata.name" => self.name(),
                    "metadata.namespace" => m["namespace"].as_str().unwrap().to_string(),
                    "status.podIP" => lab.host(self.host).ip.to_string(),
                    other => panic!("field {other} is not given by this test"),
                }
            } else if let Some(r) = e["valueFrom"].get("secretKeyRef") {
                let key = (r["name"].as_str().unwrap(), r["key"].as_str().unwrap());
                secrets
                    .get(&key)
                    .unwrap_or_else(|| panic!("no secret {key:?}"))
                    .clone()
            } else {
                panic!("env {name}: neither a value nor a known valueFrom")
            };
            let value = if value.starts_with(&mount) {
                value.replacen(&mount, volume.to_str().unwrap(), 1)
            } else {
                value
            };
            out.push((name, value));
        }
        out
    }

    /// Starts the container's command with its environment (and nothing else) in its host.
    fn start(&self, lab: &mut Lab, secrets: &BTreeMap<(&str, &str), String>) -> ProcId {
        let env = self.env(lab, secrets);
        let mut args: Vec<String> = vec!["-i".into()];
        args.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        let command: Vec<&str> = self.container()["command"]
            .as_array()
            .unwrap()
            .iter()
            .chain(self.container()["args"].as_array().into_iter().flatten())
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(command[0], "quorate", "the image's quorate binary");
        args.push(env!("CARGO_BIN_EXE_quorate").to_string());
        args.extend(command[1..].iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let name = self.name();
        lab.spawn_program(self.host, &name, "/usr/bin/env", &args)
    }

    /// The pod's HTTP API, as the kubelet's probes reach it.
    fn api(&self, lab: &Lab) -> String {
        format!("{}:7948", lab.host(self.host).ip)
    }

    /// The status code of a probe's `httpGet` path.
    fn probe(&self, lab: &Lab, probe: &str) -> Option<u16> {
        let path = self.container()[probe]["httpGet"]["path"]
            .as_str()
            .unwrap()
            .to_string();
        let addr = self.api(lab);
        lab.in_host(self.host, move || {
            http::request_within(&addr, "GET", &path, "", None, Some(Duration::from_secs(5)))
        })
        .map(|(code, _)| code)
    }
}

/// `quorate ARGS --api http://ADDR` in `host`, with `env` (a pod's) as the environment.
fn cli(lab: &Lab, host: usize, env: &[(String, String)], args: &[&str]) -> std::process::Output {
    let mut all: Vec<String> = vec!["-i".into()];
    all.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    all.push(env!("CARGO_BIN_EXE_quorate").into());
    all.extend(args.iter().map(|s| s.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    lab.exec(host, "/usr/bin/env", &all)
}

/// The manifests run as pods: 3 voters started at once with their command and environment,
/// mDNS off, find each other through the SRV record a headless Service would publish, form
/// one cluster sealed with the cluster key from the Secret (one leader, 3 voters; every
/// readiness and liveness probe answers 200); a storage token made with the command the
/// storage manifest gives goes into the Secret, and a storage pod joins with it, ready too.
#[test]
fn the_manifests_run_as_pods_form_a_cluster_and_a_storage_pod_joins() {
    let all = manifests();
    let voters_set = object(&all, "StatefulSet", "quorate-voter");
    let storage_set = object(&all, "StatefulSet", "quorate-storage");
    let mut lab = Lab::new(5);
    let voters: Vec<Pod> = (0..3)
        .map(|o| Pod {
            set: voters_set,
            ordinal: o,
            host: o + 1,
        })
        .collect();
    let store = Pod {
        set: storage_set,
        ordinal: 0,
        host: 4,
    };

    // What the headless Services publish: an A record per pod (ready or not), the Service's
    // name with every pod, and the SRV record of each named port.
    let mut srv: Vec<(String, String, u16)> = Vec::new();
    let mut records: Vec<(Ipv4Addr, String)> = Vec::new();
    for (svc_name, pods) in [
        ("quorate-voters", &voters[..]),
        ("quorate-storage", std::slice::from_ref(&store)),
    ] {
        let svc = object(&all, "Service", svc_name);
        let ns = svc["metadata"]["namespace"].as_str().unwrap();
        let domain = format!("{svc_name}.{ns}.svc.cluster.local");
        for p in pods {
            let ip = lab.host(p.host).ip;
            records.push((ip, p.fqdn()));
            records.push((ip, domain.clone()));
            for port in svc["spec"]["ports"].as_array().unwrap() {
                let proto = port["protocol"].as_str().unwrap().to_lowercase();
                srv.push((
                    format!("_{}._{proto}.{domain}", port["name"].as_str().unwrap()),
                    p.fqdn(),
                    port["port"].as_u64().unwrap() as u16,
                ));
            }
        }
    }
    let srv_refs: Vec<(&str, &str, u16)> = srv
        .iter()
        .map(|(n, t, p)| (n.as_str(), t.as_str(), *p))
        .collect();
    let dns = LabDns::start(&mut lab, 0, &srv_refs);
    let rec_refs: Vec<(Ipv4Addr, &str)> = records.iter().map(|(ip, n)| (*ip, n.as_str())).collect();
    dns.set_hosts(&lab, "cluster", &rec_refs);
    dns.wait_resolves(&lab, 0, &voters[2].fqdn(), &[lab.host(3).ip]);

    let key = std::process::Command::new(env!("CARGO_BIN_EXE_quorate"))
        .arg("keygen")
        .output()
        .expect("quorate keygen");
    assert!(key.status.success());
    let mut secrets: BTreeMap<(&str, &str), String> = BTreeMap::new();
    secrets.insert(
        ("quorate-cluster-key", "cluster-key"),
        String::from_utf8_lossy(&key.stdout).trim().to_string(),
    );

    let procs: Vec<ProcId> = voters
        .iter()
        .map(|p| {
            dns.serve(&lab, p.host);
            p.start(&mut lab, &secrets)
        })
        .collect();
    let group = |lab: &Lab, pods: &[&Pod], want: &[(String, String)]| {
        wait::until(
            &format!("{want:?}, one leader, every probe 200"),
            Duration::from_secs(90),
            || {
                let mut leaders = Vec::new();
                for p in pods {
                    for probe in ["readinessProbe", "livenessProbe"] {
                        let code = p.probe(lab, probe);
                        if code != Some(200) {
                            return Err(format!("{} {probe}: {code:?}", p.name()));
                        }
                    }
                    let url = format!("http://{}", p.api(lab));
                    let out = lab.quorate(p.host, &["status", "--json", "--api", &url]);
                    let st: Value = serde_json::from_slice(&out.stdout)
                        .map_err(|_| String::from_utf8_lossy(&out.stderr).to_string())?;
                    if suffrages(&st) != want {
                        return Err(format!("{} sees {:?}", p.name(), suffrages(&st)));
                    }
                    leaders.push(leader_name(&st));
                }
                if leaders.iter().all(|l| l.is_some() && *l == leaders[0]) {
                    Ok(())
                } else {
                    Err(format!("leaders {leaders:?}"))
                }
            },
        )
    };
    let mut want: Vec<(String, String)> = voters
        .iter()
        .map(|p| (p.name(), "voter".to_string()))
        .collect();
    let pods: Vec<&Pod> = voters.iter().collect();
    group(&lab, &pods, &want);
    for p in &procs {
        let sealed = lab.log(*p);
        assert!(
            !sealed.contains("the cluster is open"),
            "the cluster key seals it"
        );
    }

    // The storage manifest's command for the token, in voter 0's pod (`kubectl exec`).
    let comment = std::fs::read_to_string(dir().join("storage.yaml")).expect("storage.yaml");
    let exec: String = comment
        .lines()
        .skip_while(|l| !l.contains("kubectl exec"))
        .take_while(|l| l.starts_with('#') && !l.contains("kubectl create"))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .trim_end_matches('\\')
                .trim()
        })
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<&str> = exec.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "--")
        .expect("kubectl exec ... --");
    assert_eq!(words[at - 1], voters[0].name(), "run in the first voter");
    assert_eq!(words[at + 1], "quorate");
    let out = cli(
        &lab,
        voters[0].host,
        &voters[0].env(&lab, &secrets),
        &words[at + 2..],
    );
    assert!(
        out.status.success(),
        "{exec}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("qrt1-"), "{token}");
    secrets.insert(("quorate-join", "storage-token"), token);

    dns.serve(&lab, store.host);
    store.start(&mut lab, &secrets);
    want.push((store.name(), "learner".to_string()));
    want.sort();
    let pods: Vec<&Pod> = voters.iter().chain([&store]).collect();
    group(&lab, &pods, &want);
}
