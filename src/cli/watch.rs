//! `quorate watch`: print the local agent's membership events as they happen.
//!
//! It follows `GET /v1/events` (Server-Sent Events) and prints each event on one line, or as
//! one JSON object per line with `--json`. It remembers the index of the last event the agent
//! sent (printed or filtered out) and, when the connection drops, reconnects with backoff and
//! resumes after it (`Last-Event-ID`), so nothing is lost or printed twice. A position the
//! agent no longer retains ends it with exit status 1. A stream that stays silent longer than
//! three keep-alive periods counts as dropped.

use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use quorate::api::wire::{Event, EventIndex, EventKind};
use quorate::client::ClientError;

use super::args::ApiArg;

pub(crate) const ABOUT: &str = "Print the local agent's membership events as they happen.

Events: joined, promoted, demoted, removed, left, leader_changed, labels_changed,
token_created, token_used, token_revoked (decided by Raft: every node numbers them alike),
and failed, recovered (what this node's failure detector sees).

Each event has an index: N for the N-th decided event, N.k for the k-th local event (failed,
recovered) after it; indexes only grow. Without --after, watching starts from now; with
--after N (or N.k) it starts after that event, replaying what the agent still retains (the
last 4096 events). When the connection drops (the agent restarts, say), watch says so on
stderr, reconnects with backoff and resumes after the last event the agent sent, so no event
is lost or printed twice. If the agent no longer retains events after that position (they
were compacted), watch stops with exit status 1: read the current state (quorate status)
and watch again from now.

Examples:
  quorate watch
  quorate watch --type failed --type removed
  quorate watch --json --after 120

Exit status: 1 compacted, refused, or the agent unreachable at the start; 2 usage error.";

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    /// Only events of these types (repeat the flag, or give a comma list).
    #[arg(long = "type", value_name = "TYPE", value_delimiter = ',',
          value_parser = clap::builder::PossibleValuesParser::new(EventKind::TYPES))]
    pub(crate) types: Vec<String>,
    /// Start after this event index (N or N.k) [default: from now]
    #[arg(long, value_name = "INDEX")]
    pub(crate) after: Option<EventIndex>,
    /// One JSON object per line (flushed per event).
    #[arg(long)]
    pub(crate) json: bool,
}

/// How long a stream may stay silent (the agent sends a keep-alive every 5 s).
const SILENCE: Duration = Duration::from_secs(15);

/// The first wait before reconnecting; it doubles up to [`BACKOFF_MAX`].
const BACKOFF: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// One Server-Sent Event as read off the wire.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) id: Option<String>,
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

/// Reads SSE lines into messages (the subset the agent writes: `id`, `event`, `data`,
/// comments).
#[derive(Debug, Default)]
pub(crate) struct Parser {
    current: Message,
    seen: bool,
}

impl Parser {
    /// Takes one line (without its line end); a blank line completes a message.
    pub(crate) fn line(&mut self, line: &str) -> Option<Message> {
        if line.is_empty() {
            return std::mem::take(&mut self.seen).then(|| std::mem::take(&mut self.current));
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        self.seen = true;
        match field {
            "id" => self.current.id = Some(value.to_string()),
            "event" => self.current.event = Some(value.to_string()),
            "data" => {
                if !self.current.data.is_empty() {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(value);
            }
            _ => {}
        }
        None
    }
}

/// The one-line human form of an event.
pub(crate) fn human(e: &Event) -> String {
    let what = match &e.kind {
        EventKind::Joined { node, name, role } => format!("node={node} name={name} role={role}"),
        EventKind::Promoted { node }
        | EventKind::Demoted { node }
        | EventKind::Removed { node }
        | EventKind::Left { node }
        | EventKind::Failed { node }
        | EventKind::Recovered { node } => format!("node={node}"),
        EventKind::LeaderChanged { node, term } => format!("node={node} term={term}"),
        EventKind::LabelsChanged { node, labels } => {
            let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("node={node} labels={}", labels.join(","))
        }
        EventKind::TokenCreated { id, role } => format!("id={id} role={role}"),
        EventKind::TokenUsed { id } | EventKind::TokenRevoked { id } => format!("id={id}"),
    };
    format!("{} {} {what}", e.index, e.kind.type_name())
}

/// How following one connection ended.
enum Ended {
    /// The connection dropped or went silent: reconnect.
    Lost(String),
    /// The agent no longer retains the position: stop.
    Compacted(String),
}

/// Prints one event; ends the process quietly when stdout is closed.
fn print(m: &Message, json: bool) -> Result<(), String> {
    let line = if json {
        m.data.clone()
    } else {
        let e: Event = serde_json::from_str(&m.data)
            .map_err(|e| format!("the agent sent an event this version cannot read: {e}"))?;
        human(&e)
    };
    let mut out = std::io::stdout().lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        std::process::exit(0);
    }
    Ok(())
}

/// Follows one connection's stream, printing events and moving `last`.
fn follow(
    body: ureq::BodyReader<'static>,
    last: &mut Option<EventIndex>,
    json: bool,
) -> Result<Ended, String> {
    let (tx, rx) = mpsc::sync_channel::<std::io::Result<String>>(64);
    // A blocked read cannot be interrupted: the reader is a thread of its own, left to end
    // with its connection when the stream is given up for silence.
    std::thread::spawn(move || {
        for line in BufReader::new(body).lines() {
            let failed = line.is_err();
            if tx.send(line).is_err() || failed {
                return;
            }
        }
    });
    let mut parser = Parser::default();
    loop {
        let line = match rx.recv_timeout(SILENCE) {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => return Ok(Ended::Lost(e.to_string())),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Ok(Ended::Lost(format!("silent for {}s", SILENCE.as_secs())));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Ok(Ended::Lost("the agent closed the stream".into()));
            }
        };
        let Some(m) = parser.line(line.trim_end_matches('\r')) else {
            continue;
        };
        if m.event.as_deref() == Some("compacted") {
            let why = serde_json::from_str::<serde_json::Value>(&m.data)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(m.data);
            return Ok(Ended::Compacted(why));
        }
        let index = match m.id.as_deref().map(str::parse::<EventIndex>) {
            Some(Ok(i)) => Some(i),
            Some(Err(e)) => return Err(format!("the agent sent a bad event id: {e}")),
            None => None,
        };
        if !m.data.is_empty() {
            print(&m, json)?;
        }
        if index.is_some() {
            *last = index;
        }
    }
}

/// `quorate watch`.
pub(crate) fn run(args: &WatchArgs) -> ExitCode {
    let client = args.api.client();
    let path = if args.types.is_empty() {
        "/v1/events".to_string()
    } else {
        format!("/v1/events?type={}", args.types.join(","))
    };
    let mut last = args.after;
    let mut connected = false;
    let mut backoff = BACKOFF;
    loop {
        let headers: Vec<(&str, String)> = last
            .iter()
            .map(|l| ("Last-Event-ID", l.to_string()))
            .collect();
        let why = match client.stream(&path, &headers) {
            Ok(body) => {
                if connected {
                    let from = last.map_or("now".to_string(), |l| format!("after {l}"));
                    eprintln!("reconnected; resuming {from}");
                }
                connected = true;
                backoff = BACKOFF;
                match follow(body, &mut last, args.json) {
                    Ok(Ended::Lost(why)) => why,
                    Ok(Ended::Compacted(why)) => {
                        eprintln!("error: {why}");
                        return ExitCode::FAILURE;
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            Err(ClientError::Unreachable { message, .. }) if connected => message,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        eprintln!(
            "connection to the agent lost ({why}); reconnecting in {}",
            humantime::format_duration(backoff)
        );
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_reads_messages_id_only_messages_and_skips_comments() {
        let mut p = Parser::default();
        let mut got = Vec::new();
        for line in [
            ": keep-alive",
            "",
            "id: 3",
            "",
            "id: 4.1",
            "event: failed",
            "data: {\"a\":1}",
            "",
        ] {
            got.extend(p.line(line));
        }
        assert_eq!(
            got,
            vec![
                Message {
                    id: Some("3".into()),
                    ..Message::default()
                },
                Message {
                    id: Some("4.1".into()),
                    event: Some("failed".into()),
                    data: "{\"a\":1}".into()
                }
            ]
        );
    }

    #[test]
    fn the_human_form_is_index_type_and_fields() {
        let e = Event {
            index: "7.2".parse().expect("index"),
            kind: EventKind::LabelsChanged {
                node: quorate::NodeId::new(0xab),
                labels: [("zone".to_string(), "a".to_string())].into(),
            },
            observed_ms: 0,
        };
        assert_eq!(
            human(&e),
            "7.2 labels_changed node=00000000000000ab labels=zone=a"
        );
    }
}
