//! Membership events in the lab: `GET /v1/events` sees a killed node fail and then be
//! removed, a resumed client misses nothing and repeats nothing, a voter and a storage
//! learner number the same events alike, `quorate watch` follows a join and an agent restart,
//! a blocking `/v1/status` answers on a registry change and not before, and a node that is
//! not a member yet streams (and waits) all the same.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::agents::{agent, quic, status, wait_group};
use crate::support::http::{admin, request};
use crate::support::lab::{Lab, ProcId};
use crate::support::wait;

/// What a stream client has read.
#[derive(Debug, Default)]
struct Seen {
    /// The status code of the answer.
    code: Option<u16>,
    /// The events (the `data` JSON), in order.
    events: Vec<Value>,
    /// The last `id:` the server sent (with or without data).
    last_id: Option<String>,
    /// Whether the stream ended.
    ended: bool,
}

/// A client of `/v1/events` on a host's agent, reading on a thread of its own (HTTP/1.0, so
/// the body is the bare event stream).
struct Stream {
    seen: Arc<Mutex<Seen>>,
    socket: TcpStream,
}

impl Stream {
    fn open(lab: &Lab, i: usize, path: &str, last_event_id: Option<&str>) -> Stream {
        let socket = connect(lab, i);
        let header = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        write!(
            &socket,
            "GET {path} HTTP/1.0\r\nHost: localhost\r\nAccept: text/event-stream\r\n{header}\r\n"
        )
        .expect("send the request");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let reader = socket.try_clone().expect("clone the socket");
        let into = seen.clone();
        std::thread::spawn(move || read_stream(reader, &into));
        Stream { seen, socket }
    }

    fn events(&self) -> Vec<Value> {
        self.seen.lock().expect("seen").events.clone()
    }

    fn last_id(&self) -> Option<String> {
        self.seen.lock().expect("seen").last_id.clone()
    }

    /// Waits until the answer's status is known.
    fn code(&self) -> u16 {
        wait::until("the events answer", Duration::from_secs(10), || {
            let s = self.seen.lock().expect("seen");
            s.code.ok_or(format!("{s:?}"))
        })
    }

    /// Waits until an event satisfies `f`; returns it.
    fn wait_for(&self, what: &str, within: Duration, f: impl Fn(&Value) -> bool) -> Value {
        wait::until(what, within, || {
            let s = self.seen.lock().expect("seen");
            s.events
                .iter()
                .find(|e| f(e))
                .cloned()
                .ok_or_else(|| format!("{:?}", s.events))
        })
    }

    fn close(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
        wait::until("the stream to end", Duration::from_secs(5), || {
            let s = self.seen.lock().expect("seen");
            if s.ended { Ok(()) } else { Err("open") }
        });
    }
}

fn read_stream(socket: TcpStream, seen: &Mutex<Seen>) {
    let mut lines = BufReader::new(socket).lines();
    if let Some(Ok(status)) = lines.next() {
        let code = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok());
        seen.lock().expect("seen").code = code;
    }
    // The headers, up to the blank line.
    for line in lines.by_ref() {
        match line {
            Ok(l) if l.trim().is_empty() => break,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let (mut id, mut data) = (None, String::new());
    for line in lines {
        let Ok(line) = line else { break };
        if line.is_empty() {
            let mut s = seen.lock().expect("seen");
            if let Some(i) = id.take() {
                s.last_id = Some(i);
            }
            if !data.is_empty() {
                s.events
                    .push(serde_json::from_str(&data).unwrap_or(Value::String(data.clone())));
                data.clear();
            }
        } else if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    seen.lock().expect("seen").ended = true;
}

/// The node id of the member named `name` in host `i`'s status.
fn id_of(lab: &Lab, i: usize, name: &str) -> String {
    let st = status(lab, i).expect("status");
    st["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .and_then(|m| m["id"].as_str())
        .unwrap_or_else(|| panic!("{name} in {st}"))
        .to_string()
}

/// An admin `POST` to host `i`'s agent; panics unless it answers 200.
fn post(lab: &Lab, i: usize, path: &str, body: Value) -> Value {
    let token = admin(lab, i);
    let path = path.to_string();
    let (code, v) = lab
        .in_host(i, move || {
            request("POST", &path, &body.to_string(), Some(&token))
        })
        .expect("the agent answers");
    assert_eq!(code, 200, "POST: {v}");
    v
}

fn set_label(lab: &Lab, i: usize, key: &str, value: &str) {
    post(
        lab,
        i,
        "/v1/labels",
        json!({"set": {key: value}, "remove": []}),
    );
}

/// Creates a storage token on host `i`; returns its id.
fn create_token(lab: &Lab, i: usize) -> String {
    let v = post(
        lab,
        i,
        "/v1/tokens",
        json!({"role": "storage", "ttl": "1h", "uses": null}),
    );
    v["id"].as_str().expect("a token id").to_string()
}

/// The config file of the lab's agents: a 3 s failure grace, one voter.
fn config(lab: &Lab) -> String {
    let path = lab.host_dir(0).join("events.toml");
    std::fs::write(&path, "[raft]\nfailed_grace = \"3s\"\nvoter_target = 1\n").expect("config");
    path.to_str().expect("utf-8").to_string()
}

/// Host 0 bootstraps a voter; hosts 1.. join through it as storage nodes.
fn form(lab: &mut Lab, names: &[&str]) -> Vec<ProcId> {
    let config = config(lab);
    let seed = quic(lab, 0);
    let mut procs = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut args = vec!["--config", config.as_str()];
        if i == 0 {
            args.push("--bootstrap");
        } else {
            args.extend(["--peers", seed.as_str(), "--role", "storage"]);
        }
        procs.push(agent(lab, i, name, &args));
    }
    let want: Vec<(&str, &str)> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, if i == 0 { "voter" } else { "learner" }))
        .collect();
    let hosts: Vec<usize> = (0..names.len()).collect();
    wait_group(lab, &hosts, &want, Duration::from_secs(30));
    procs
}

/// The decided events of a list, without the local observation time.
fn decided(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| !e["index"].as_str().unwrap_or("").contains('.'))
        .map(|e| {
            let mut e = e.clone();
            e.as_object_mut().map(|o| o.remove("observed_ms"));
            e
        })
        .collect()
}

/// A client that was listening before a storage node is killed -9 sees it `failed` (by the
/// voter's failure detector), then `removed` once the autopilot takes it out after the grace.
#[test]
fn a_killed_storage_node_is_seen_failed_then_removed() {
    let mut lab = Lab::new(3);
    let procs = form(&mut lab, &["v0", "s1", "s2"]);
    let victim = id_of(&lab, 0, "s2");
    wait::until("s2 alive by gossip on v0", Duration::from_secs(15), || {
        let st = status(&lab, 0)?;
        let m = st["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == "s2").cloned());
        match m {
            Some(m) if m["liveness"] == "alive" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let stream = Stream::open(&lab, 0, "/v1/events", None);
    assert_eq!(stream.code(), 200);
    lab.kill9(procs[2]);
    let failed = stream.wait_for("s2 failed", Duration::from_secs(30), |e| {
        e["type"] == "failed" && e["node"] == victim.as_str()
    });
    let removed = stream.wait_for("s2 removed", Duration::from_secs(30), |e| {
        e["type"] == "removed" && e["node"] == victim.as_str()
    });
    let events = stream.events();
    let pos = |e: &Value| events.iter().position(|x| x == e).expect("listed");
    assert!(
        pos(&failed) < pos(&removed),
        "failed before removed: {events:?}"
    );
    let (f, r) = (
        failed["index"].as_str().expect("index"),
        removed["index"].as_str().expect("index"),
    );
    assert!(f.contains('.'), "failed is a local event: {f}");
    assert!(!r.contains('.'), "removed is decided: {r}");
    stream.close();
}

/// A client that drops its connection and resumes from its last index, by `Last-Event-ID` or
/// by `?after=`, receives every event it missed and none twice: its list is the list of a
/// client that never left, over writes of labels and tokens made while it was away.
#[test]
fn a_resumed_client_misses_nothing_and_repeats_nothing() {
    let mut lab = Lab::new(1);
    form(&mut lab, &["v0"]);
    let steady = Stream::open(&lab, 0, "/v1/events?after=0", None);
    let leaving = Stream::open(&lab, 0, "/v1/events?after=0", None);
    set_label(&lab, 0, "step", "1");
    leaving.wait_for("the first label", Duration::from_secs(10), |e| {
        e["type"] == "labels_changed" && e["labels"]["step"] == "1"
    });
    leaving.close();
    let last = leaving.last_id().expect("an id was sent");
    let before = leaving.events();

    // Written while it is away.
    set_label(&lab, 0, "step", "2");
    let token = create_token(&lab, 0);
    post(&lab, 0, &format!("/v1/tokens/{token}/revoke"), json!({}));
    set_label(&lab, 0, "step", "3");

    let by_header = Stream::open(&lab, 0, "/v1/events", Some(&last));
    let by_query = Stream::open(&lab, 0, &format!("/v1/events?after={last}"), None);
    set_label(&lab, 0, "step", "end");
    let end = |e: &Value| e["type"] == "labels_changed" && e["labels"]["step"] == "end";
    for s in [&steady, &by_header, &by_query] {
        s.wait_for("the last label", Duration::from_secs(10), end);
    }
    let all = steady.events();
    assert!(
        all.iter()
            .any(|e| e["type"] == "token_revoked" && e["id"] == token.as_str()),
        "the writes are there: {all:?}"
    );
    for resumed in [&by_header, &by_query] {
        let mut joined = before.clone();
        joined.extend(resumed.events());
        assert_eq!(joined, all, "resumed after {last}");
    }
}

/// A voter and a storage learner give the same decided events with the same indexes, in the
/// same order, for the whole history of the cluster.
#[test]
fn a_voter_and_a_storage_learner_number_the_same_events() {
    let mut lab = Lab::new(2);
    form(&mut lab, &["v0", "s1"]);
    set_label(&lab, 0, "zone", "a");
    set_label(&lab, 1, "rack", "r1");
    let token = create_token(&lab, 0);
    post(&lab, 0, &format!("/v1/tokens/{token}/revoke"), json!({}));
    let voter = Stream::open(&lab, 0, "/v1/events?after=0", None);
    let learner = Stream::open(&lab, 1, "/v1/events?after=0", None);
    let revoked = |e: &Value| e["type"] == "token_revoked" && e["id"] == token.as_str();
    let on_voter = voter.wait_for(
        "the revocation on the voter",
        Duration::from_secs(10),
        revoked,
    );
    learner.wait_for(
        "the revocation on the learner",
        Duration::from_secs(10),
        revoked,
    );
    let upto = |events: Vec<Value>| {
        let n = events
            .iter()
            .position(|e| *e == on_voter || revoked(e))
            .expect("listed");
        decided(&events[..=n])
    };
    let (v, l) = (upto(voter.events()), upto(learner.events()));
    let types: Vec<&str> = v.iter().filter_map(|e| e["type"].as_str()).collect();
    for t in [
        "leader_changed",
        "joined",
        "labels_changed",
        "token_created",
        "token_revoked",
    ] {
        assert!(types.contains(&t), "{t} in {types:?}");
    }
    assert_eq!(v, l, "the voter's events, then the learner's");
}

/// `quorate watch --json`, run as a process in a host, prints a `joined` line for a node
/// started after it, and resumes across a restart of the agent it talks to: every decided
/// index appears exactly once, and it said on stderr that it reconnected.
#[test]
fn watch_prints_a_join_and_resumes_across_an_agent_restart() {
    let mut lab = Lab::new(2);
    let procs = form(&mut lab, &["v0"]);
    let watch = lab.spawn(0, "watch", &["watch", "--json", "--after", "0"]);
    let lines = |lab: &Lab| -> Vec<Value> {
        lab.log(watch)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect()
    };
    wait::until(
        "watch to print the history",
        Duration::from_secs(10),
        || {
            let l = lines(&lab);
            if l.iter().any(|e| e["type"] == "joined") {
                Ok(())
            } else {
                Err(lab.log(watch))
            }
        },
    );
    let config = config(&lab);
    let seed = quic(&lab, 0);
    agent(
        &mut lab,
        1,
        "s1",
        &["--config", &config, "--peers", &seed, "--role", "storage"],
    );
    wait::until("watch to print s1 joined", Duration::from_secs(30), || {
        let l = lines(&lab);
        if l.iter().any(|e| e["type"] == "joined" && e["name"] == "s1") {
            Ok(())
        } else {
            Err(lab.log(watch))
        }
    });

    lab.stop(procs[0], Duration::from_secs(20));
    lab.restart(procs[0]);
    wait::until("watch to reconnect", Duration::from_secs(30), || {
        let log = lab.log(watch);
        if log.contains("reconnected; resuming after") {
            Ok(())
        } else {
            Err(log)
        }
    });
    wait::until("v0 to lead again", Duration::from_secs(30), || {
        status(&lab, 0).and_then(|st| {
            if st["leader_id"].is_string() {
                Ok(())
            } else {
                Err(st.to_string())
            }
        })
    });
    set_label(&lab, 0, "after", "restart");
    wait::until(
        "watch to print the label written after the restart",
        Duration::from_secs(15),
        || {
            let l = lines(&lab);
            if l.iter()
                .any(|e| e["type"] == "labels_changed" && e["labels"]["after"] == "restart")
            {
                Ok(())
            } else {
                Err(lab.log(watch))
            }
        },
    );
    let printed = lines(&lab);
    let indexes: Vec<u64> = decided(&printed)
        .iter()
        .filter_map(|e| e["index"].as_str()?.parse().ok())
        .collect();
    let want: Vec<u64> = (1..=indexes.len() as u64).collect();
    assert_eq!(
        indexes, want,
        "every decided index once, in order: {printed:?}"
    );
    let after_restart = printed
        .iter()
        .filter(|e| e["type"] == "labels_changed" && e["labels"]["after"] == "restart")
        .count();
    assert_eq!(
        after_restart, 1,
        "the write after the restart once: {printed:?}"
    );
    lab.kill9(watch);
}

/// `GET path` on a connection to an agent's API: the status code and the registry index of
/// `X-Quorate-Index`.
fn get_index(mut s: TcpStream, path: &str) -> Option<(u16, u64)> {
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let index = text.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("x-quorate-index: ")
            .and_then(|v| v.trim().parse().ok())
    })?;
    Some((code, index))
}

fn connect(lab: &Lab, i: usize) -> TcpStream {
    lab.in_host(i, || TcpStream::connect("127.0.0.1:7948"))
        .expect("connect to the agent's api")
}

/// A blocking `/v1/status?index=N` does not answer while the registry stays at N, and answers
/// promptly once a label write moves it, with the new index in `X-Quorate-Index`.
#[test]
fn a_blocking_status_answers_after_a_label_write_and_not_before() {
    let mut lab = Lab::new(1);
    form(&mut lab, &["v0"]);
    let (code, index) = get_index(connect(&lab, 0), "/v1/status").expect("status answers");
    assert_eq!(code, 200);
    let answer: Arc<Mutex<Option<(u16, u64)>>> = Arc::default();
    let socket_answer = answer.clone();
    let path = format!("/v1/status?index={index}&wait=60s");
    let asking = connect(&lab, 0);
    std::thread::spawn(move || {
        let got = get_index(asking, &path);
        *socket_answer.lock().expect("answer") = Some(got.unwrap_or((0, 0)));
    });
    wait::never(
        "the blocking query answered before any write",
        Duration::from_secs(3),
        || *answer.lock().expect("answer"),
    );
    set_label(&lab, 0, "blocking", "woken");
    let (code, moved) = wait::until(
        "the blocking query to answer",
        Duration::from_secs(5),
        || answer.lock().expect("answer").ok_or("waiting"),
    );
    assert_eq!(code, 200);
    assert!(moved > index, "the index moved past {index}: {moved}");
}

/// Before a node is a member, its event stream is open and waits (the hub is there from the
/// agent's start), and a blocking status answers 503 with the index 0 once its wait runs out.
#[test]
fn before_membership_the_stream_is_open_and_waits() {
    let mut lab = Lab::new(1);
    // A storage node whose only peer does not exist: it never becomes a member.
    agent(
        &mut lab,
        0,
        "s0",
        &["--role", "storage", "--peers", "10.99.0.200:7947"],
    );
    let stream = Stream::open(&lab, 0, "/v1/events", None);
    assert_eq!(stream.code(), 200);
    let (code, index) =
        get_index(connect(&lab, 0), "/v1/status?index=0&wait=1s").expect("status answers");
    assert_eq!((code, index), (503, 0));
    wait::never(
        "the stream to end or carry an event",
        Duration::from_secs(2),
        || {
            let s = stream.seen.lock().expect("seen");
            (s.ended || !s.events.is_empty()).then(|| format!("{s:?}"))
        },
    );
    stream.close();
}
