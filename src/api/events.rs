//! `GET /v1/events`: this node's membership events as Server-Sent Events.
//!
//! Each event is `id: <index>`, `event: <type>`, `data: <event JSON>` (the index `N` or
//! `N.k`, see [`quorate_consensus::events`]). A client resumes after the last index it
//! received: the `Last-Event-ID` header (what a reconnecting `EventSource` sends) or
//! `?after=N` (the header wins when both are given); without either it starts from now.
//! `?type=failed,removed` (a comma list, or `type=` repeated) keeps only those types. Events
//! left out by the filter, and the position a stream starts after, are sent as an `id:` with
//! no data: a client's last id then moves past them (SSE dispatches no event for it), so a
//! resume does not scan them again. A comment every 5 s keeps the connection alive.
//!
//! A position that is no longer retained answers 410 Gone with a JSON error (after etcd's
//! "compacted"); a subscriber that falls out of the ring while streaming gets a final
//! `event: compacted` with the same JSON, and the stream ends. A bad index or an unknown type
//! answers 400. Before the node is a member the stream is open and waits: the hub exists from
//! the agent's start. When the API stops (the agent stops), open streams end.
//!
//! It reads the hub only; it changes nothing.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use quorate_consensus::{Compacted, Event, EventIndex, EventKind, Subscription};

use super::state::{ApiState, error};

/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// What a request for the stream asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct EventsQuery {
    /// Resume after this index.
    pub(super) after: Option<EventIndex>,
    /// Only these types (`None`: all).
    pub(super) types: Option<BTreeSet<&'static str>>,
}

/// Reads the query pairs and the `Last-Event-ID` header; the error is the 400 answer's text.
pub(super) fn parse(
    pairs: &[(String, String)],
    last_event_id: Option<&str>,
) -> Result<EventsQuery, String> {
    let mut q = EventsQuery::default();
    for (key, value) in pairs {
        match key.as_str() {
            "after" => q.after = Some(value.parse().map_err(|e| format!("after: {e}"))?),
            "type" => {
                let types = q.types.get_or_insert_with(BTreeSet::new);
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    let known = EventKind::TYPES.iter().find(|k| **k == t).ok_or_else(|| {
                        format!(
                            "unknown event type {t:?}; the types are {}",
                            EventKind::TYPES.join(", ")
                        )
                    })?;
                    types.insert(*known);
                }
            }
            other => {
                return Err(format!(
                    "unknown parameter {other:?}; the parameters are after and type"
                ));
            }
        }
    }
    if let Some(id) = last_event_id.map(str::trim).filter(|s| !s.is_empty()) {
        q.after = Some(id.parse().map_err(|e| format!("Last-Event-ID: {e}"))?);
    }
    Ok(q)
}

/// The JSON of a compacted position, for the 410 answer and the final stream event.
fn compacted_json(c: &Compacted) -> serde_json::Value {
    serde_json::json!({ "error": c.to_string(), "oldest": c.oldest })
}

/// One event on the wire: in full if the filter keeps it, else its id alone.
fn sse_event(e: &Event, types: Option<&BTreeSet<&'static str>>) -> SseEvent {
    let id = SseEvent::default().id(e.index.to_string());
    if types.is_some_and(|t| !t.contains(e.kind.type_name())) {
        return id;
    }
    match id.clone().event(e.kind.type_name()).json_data(e) {
        Ok(full) => full,
        // An event always serializes; were it not to, the client still moves past it.
        Err(_) => id,
    }
}

enum Step {
    /// Say where the stream starts.
    Start(Subscription),
    /// Follow the subscription.
    Follow(Subscription),
    /// The stream ended (compacted).
    Done,
}

/// `GET /v1/events`.
pub(super) async fn events(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let last = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let q = match parse(&pairs, last) {
        Ok(q) => q,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let sub = match s.events.subscribe(q.after) {
        Ok(sub) => sub,
        Err(c) => {
            return (StatusCode::GONE, axum::Json(compacted_json(&c))).into_response();
        }
    };
    let types = q.types;
    let stream = futures_util::stream::unfold(Step::Start(sub), move |step| {
        let types = types.clone();
        let s = s.clone();
        async move {
            let follow = |sub| async {
                tokio::select! {
                    next = next(sub, types.as_ref()) => next,
                    // The API stops: the stream ends, and the client reconnects elsewhere or later.
                    () = s.closed() => None,
                }
            };
            match step {
                Step::Start(sub) => match sub.position() {
                    Some(p) => Some((
                        Ok::<_, Infallible>(SseEvent::default().id(p.to_string())),
                        Step::Follow(sub),
                    )),
                    None => follow(sub).await,
                },
                Step::Follow(sub) => follow(sub).await,
                Step::Done => None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

async fn next(
    mut sub: Subscription,
    types: Option<&BTreeSet<&'static str>>,
) -> Option<(Result<SseEvent, Infallible>, Step)> {
    match sub.next().await {
        Ok(e) => Some((Ok(sse_event(&e, types)), Step::Follow(sub))),
        Err(c) => {
            let last = SseEvent::default()
                .event("compacted")
                .data(compacted_json(&c).to_string());
            Some((Ok(last), Step::Done))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::tests::pairs;

    #[test]
    fn types_come_as_a_list_or_repeated_and_the_header_wins_over_after() {
        let q = parse(
            &pairs(&[
                ("type", "failed,removed"),
                ("type", "joined"),
                ("after", "3"),
            ]),
            Some("7.2"),
        )
        .expect("valid");
        assert_eq!(
            q.types,
            Some(BTreeSet::from(["failed", "removed", "joined"]))
        );
        assert_eq!(q.after, Some("7.2".parse().expect("index")));
        let q = parse(&pairs(&[("after", "3")]), None).expect("valid");
        assert_eq!(q.after, Some(EventIndex::decided(3)));
        assert_eq!(parse(&[], None).expect("valid"), EventsQuery::default());
    }

    #[test]
    fn a_bad_index_or_an_unknown_type_is_refused_with_the_known_types() {
        let e = parse(&pairs(&[("type", "failed,nope")]), None).expect_err("unknown type");
        assert!(
            e.contains("\"nope\"") && e.contains("leader_changed"),
            "{e}"
        );
        assert!(parse(&pairs(&[("after", "x")]), None).is_err());
        assert!(parse(&[], Some("1.x")).is_err());
        assert!(parse(&pairs(&[("since", "1")]), None).is_err());
    }
}
