//! `GET /metrics`: this node's metrics for a Prometheus server to scrape, open like the
//! health endpoints.
//!
//! The exposition is prometheus-client's: the OpenMetrics text format
//! (`application/openmetrics-text; version=1.0.0`) when the scraper's `Accept` asks for it (a
//! Prometheus server does), else the Prometheus text format 0.0.4 (`text/plain;
//! version=0.0.4`), which every Prometheus and `promtool` read. Counter names get their
//! `_total` from the encoder.
//!
//! Why a [`Collector`] over the live layers rather than metrics of our own: every figure here
//! is already kept by its layer (gossip's and QUIC's atomics, discovery's [`Stats`], the
//! member's [`Counts`], Raft's metrics watch, the registry), so one registry, made once, holds
//! one collector that reads them at each scrape: no second copy of a counter to keep in step,
//! nothing added to the paths that count, and the families come and go with the layers (a
//! node that is not a member yet shows gossip and discovery, and `quorate_cluster_member 0`).
//! The one figure no layer kept, commit latency, is a prometheus-client histogram kept by the
//! consensus layer ([`Consensus::commit_latency`]) and encoded here as it is.
//!
//! It reads only; it decides nothing and changes nothing. `/v1/metrics` (JSON) is `health`'s.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use quorate_consensus::{Consensus, Counts, Role, authority::Rule};
use quorate_discovery::Stats;
use quorate_gossip::{Gossip, MemberStatus};

use super::state::{ApiState, ConsensusCell, error};
use crate::handlers::HandlerStats;
use quorate_consensus::EventHub;

/// The content type of the OpenMetrics text format prometheus-client's `text` encoder writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The `/metrics` route, with its registry made once over the layers in `state`.
pub(super) fn router(state: &ApiState) -> Router {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Layers {
        gossip: state.gossip.clone(),
        discovery: state.discovery.clone(),
        consensus: state.consensus.clone(),
        events: state.events.clone(),
        handlers: state.handlers.clone(),
    }));
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(registry))
}

/// `GET /metrics`.
async fn scrape(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(wants_openmetrics);
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (text::encode(&mut body, &registry), OPENMETRICS)
    } else {
        (
            prometheus_text::encode(&mut body, &registry),
            prometheus_text::CONTENT_TYPE,
        )
    };
    match encoded {
        Ok(()) => ([(CONTENT_TYPE, content_type)], body).into_response(),
        Err(fmt::Error) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded",
        ),
    }
}

/// Whether an `Accept` header asks for OpenMetrics (and not with `q=0`).
fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let refused = parts.any(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0)
            })
        });
        media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
    })
}

/// The running layers, read at each scrape.
struct Layers {
    gossip: Arc<Gossip>,
    discovery: Option<Arc<Stats>>,
    consensus: ConsensusCell,
    events: Arc<EventHub>,
    handlers: Arc<HandlerStats>,
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layers")
            .field("discovery", &self.discovery.is_some())
            .field("member", &self.consensus.get().is_some())
            .finish_non_exhaustive()
    }
}

impl Collector for Layers {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        gossip(&mut enc, &self.gossip)?;
        if let Some(stats) = &self.discovery {
            discovery(&mut enc, stats)?;
        }
        events(&mut enc, &self.events, &self.handlers)?;
        let node = self.consensus.get();
        one(
            &mut enc,
            MetricType::Gauge,
            "quorate_cluster_member",
            "Whether this node is a member of a cluster (1) or not yet (0).",
            u64::from(node.is_some()),
        )?;
        if let Some(node) = node {
            let counts = node.counts();
            raft(&mut enc, node, &counts)?;
            member_counts(&mut enc, &counts)?;
            quic(&mut enc, node)?;
        }
        Ok(())
    }
}

/// A family of one series without labels.
fn one(enc: &mut DescriptorEncoder, ty: MetricType, name: &str, help: &str, v: u64) -> fmt::Result {
    value(enc.encode_descriptor(name, help, None, ty)?, ty, v)
}

/// A family of labelled series (none written when `series` is empty).
fn family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    ty: MetricType,
    name: &str,
    help: &str,
    series: &[(L, u64)],
) -> fmt::Result {
    if series.is_empty() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        value(m.encode_family(labels)?, ty, *v)?;
    }
    Ok(())
}

/// One series' value, as a counter or a gauge.
fn value(m: MetricEncoder, ty: MetricType, v: u64) -> fmt::Result {
    match ty {
        MetricType::Counter => ConstCounter::new(v).encode(m),
        _ => ConstGauge::new(v).encode(m),
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

fn gossip(enc: &mut DescriptorEncoder, gossip: &Gossip) -> fmt::Result {
    use MetricType::{Counter, Gauge};
    let members = gossip.members();
    let count = |st: MemberStatus| members.iter().filter(|m| m.status == st).count() as u64;
    family(
        enc,
        Gauge,
        "quorate_gossip_members",
        "Nodes in this node's gossip view, by liveness (alive, failed, left); this node included.",
        &[
            ([("status", "alive")], count(MemberStatus::Alive)),
            ([("status", "failed")], count(MemberStatus::Failed)),
            ([("status", "left")], count(MemberStatus::Left)),
        ],
    )?;
    let m = gossip.metrics();
    family(
        enc,
        Counter,
        "quorate_gossip_datagrams",
        "Gossip datagrams received (in) and sent (out).",
        &[
            ([("direction", "in")], load(&m.datagrams_in)),
            ([("direction", "out")], load(&m.datagrams_out)),
        ],
    )?;
    family(
        enc,
        Counter,
        "quorate_gossip_bytes",
        "Gossip bytes received (in) and sent (out).",
        &[
            ([("direction", "in")], load(&m.bytes_in)),
            ([("direction", "out")], load(&m.bytes_out)),
        ],
    )?;
    one(
        enc,
        Counter,
        "quorate_gossip_send_errors",
        "Gossip datagrams that could not be sent (unreachable peer, link down).",
        load(&m.send_errors),
    )?;
    one(
        enc,
        Counter,
        "quorate_gossip_syns_skipped",
        "Gossip SYNs not sent: above 128 live members a round gossips with fewer peers than three.",
        load(&m.syns_skipped),
    )?;
    family(
        enc,
        Counter,
        "quorate_gossip_datagrams_dropped",
        "Gossip datagrams dropped before chitchat read them, by cause: short (too short or not \
         sealed), unauthenticated (no installed key opens it), replayed (or from an older \
         incarnation), malformed (authentic but not a chitchat message).",
        &[
            ([("cause", "short")], load(&m.dropped_short)),
            ([("cause", "unauthenticated")], load(&m.dropped_auth)),
            ([("cause", "replayed")], load(&m.dropped_replay)),
            ([("cause", "malformed")], load(&m.dropped_malformed)),
        ],
    )
}

/// The event hub (its subscribers, SSE clients and handlers alike) and the handlers' runs.
fn events(enc: &mut DescriptorEncoder, hub: &EventHub, h: &HandlerStats) -> fmt::Result {
    use MetricType::Counter;
    let c: std::collections::BTreeMap<&str, u64> = hub.counters().into_iter().collect();
    let get = |k: &str| c.get(k).copied().unwrap_or(0);
    one(
        enc,
        Counter,
        "quorate_events_emitted",
        "Membership events this node emitted (decided ones from the log, and its own liveness \
         observations).",
        get("events_emitted"),
    )?;
    family(
        enc,
        Counter,
        "quorate_event_subscribers_lagged",
        "Event subscribers that fell behind the live broadcast, by outcome: caught_up (re-read \
         from the retained events, nothing lost), dropped (fell out of them: ended as compacted).",
        &[
            (
                [("outcome", "caught_up")],
                get("event_subscribers_caught_up"),
            ),
            ([("outcome", "dropped")], get("event_subscribers_dropped")),
        ],
    )?;
    family(
        enc,
        Counter,
        "quorate_event_handler_runs",
        "Event handler commands run, by outcome: succeeded (exit 0), failed (non-zero exit or \
         a signal), timed_out (killed at the timeout), not_started (could not be started).",
        &[
            ([("outcome", "succeeded")], load(&h.succeeded)),
            ([("outcome", "failed")], load(&h.failed)),
            ([("outcome", "timed_out")], load(&h.timed_out)),
            ([("outcome", "not_started")], load(&h.not_started)),
        ],
    )?;
    one(
        enc,
        Counter,
        "quorate_event_handler_events_missed",
        "Events a handler never saw because it fell behind what this node keeps.",
        load(&h.events_missed),
    )
}

fn discovery(enc: &mut DescriptorEncoder, stats: &Stats) -> fmt::Result {
    one(
        enc,
        MetricType::Counter,
        "quorate_discovery_resolutions",
        "mDNS resolutions of quorate nodes taken.",
        load(&stats.resolved),
    )?;
    one(
        enc,
        MetricType::Gauge,
        "quorate_discovery_browsing",
        "1 while this node browses mDNS for peers; a storage node stops once it is a member \
         (it keeps advertising).",
        load(&stats.browsing),
    )?;
    family(
        enc,
        MetricType::Counter,
        "quorate_discovery_skipped",
        "mDNS records and packets skipped, by cause: foreign (our service type, not quorate's \
         TXT), malformed (quorate's, broken), bad_packet (a DNS packet that could not be parsed).",
        &[
            ([("cause", "foreign")], load(&stats.foreign)),
            ([("cause", "malformed")], load(&stats.malformed)),
            ([("cause", "bad_packet")], load(&stats.bad_packets)),
        ],
    )
}

/// Raft's view from this node: term, indexes, leadership, membership, replication, latency.
fn raft(enc: &mut DescriptorEncoder, node: &Consensus, counts: &Counts) -> fmt::Result {
    use MetricType::{Counter, Gauge};
    let m = node.raft().metrics().borrow().clone();
    one(
        enc,
        Gauge,
        "quorate_raft_term",
        "The Raft term this node is in.",
        m.current_term,
    )?;
    one(
        enc,
        Gauge,
        "quorate_raft_commit_index",
        "The highest log index this node recorded as committed.",
        counts.commit_index.unwrap_or(0),
    )?;
    one(
        enc,
        Gauge,
        "quorate_raft_applied_index",
        "The highest log index applied to this node's registry.",
        m.last_applied.map_or(0, |l| l.index),
    )?;
    one(
        enc,
        Gauge,
        "quorate_raft_last_log_index",
        "The highest log index in this node's log.",
        m.last_log_index.unwrap_or(0),
    )?;
    let leads = m.current_leader == Some(m.id);
    one(
        enc,
        Gauge,
        "quorate_raft_leader",
        "Whether this node leads the Raft group (1) or not (0).",
        u64::from(leads),
    )?;
    one(
        enc,
        Counter,
        "quorate_raft_leader_changes",
        "Changes of the leader this node knows: the first leader it learnt, then each other node \
         it learnt leads.",
        counts.leader_changes,
    )?;

    let membership = m.membership_config.membership();
    let voters: BTreeSet<_> = membership.voter_ids().collect();
    let registry = node.local_registry();
    let mut tally = [[0u64; 3]; 2];
    for (id, _) in membership.nodes() {
        let suffrage = usize::from(!voters.contains(id));
        let role = match registry.nodes.get(id).map(|r| r.role) {
            Some(Role::Voter) => 0,
            Some(Role::Storage) => 1,
            None => 2,
        };
        tally[suffrage][role] += 1;
    }
    let mut members = Vec::new();
    for (s, suffrage) in ["voter", "learner"].into_iter().enumerate() {
        for (r, role) in ["voter", "storage", "unrecorded"].into_iter().enumerate() {
            // The unrecorded (in the Raft group, not yet in the registry) only while there are.
            if r < 2 || tally[s][r] > 0 {
                members.push(([("suffrage", suffrage), ("role", role)], tally[s][r]));
            }
        }
    }
    family(
        enc,
        Gauge,
        "quorate_raft_members",
        "Nodes of the Raft group as this node knows it, by suffrage (voter, learner) and by the \
         role the registry records (voter, storage; unrecorded while a node is not yet in it).",
        &members,
    )?;

    let last = m.last_log_index.unwrap_or(0);
    let lag: Vec<_> = m
        .replication
        .iter()
        .flatten()
        .filter(|(id, _)| **id != m.id)
        .map(|(id, matched)| {
            let matched = matched.as_ref().map_or(0, |l| l.index);
            ([("node", id.to_string())], last.saturating_sub(matched))
        })
        .collect();
    family(
        enc,
        Gauge,
        "quorate_raft_replication_lag_entries",
        "On the leader: log entries each other member of the group is behind this node's log.",
        &lag,
    )?;

    node.commit_latency().encode(enc.encode_descriptor(
        "quorate_raft_commit_latency_seconds",
        "How long this node's client writes took from the request until committed and applied \
         here.",
        None,
        MetricType::Histogram,
    )?)?;
    one(
        enc,
        Counter,
        "quorate_raft_writes",
        "Writes this node put to the Raft log as leader (its clients', forwarded ones, its own).",
        counts.writes,
    )?;
    one(
        enc,
        Counter,
        "quorate_raft_writes_forwarded",
        "Times a write from this node was sent on to the leader.",
        counts.writes_forwarded,
    )?;
    one(
        enc,
        Counter,
        "quorate_raft_writes_failed",
        "Writes from this node that no leader took by the write deadline.",
        counts.writes_failed,
    )?;
    one(
        enc,
        Counter,
        "quorate_raft_membership_changes",
        "Raft membership changes this node attempted as leader.",
        counts.membership_changes,
    )?;
    one(
        enc,
        Counter,
        "quorate_raft_quorum_checks",
        "Leadership confirmations this node ran as leader for reads and joins (heartbeats a \
         majority must answer); callers that arrive during one share the next.",
        counts.quorum_checks,
    )?;
    one(
        enc,
        Counter,
        "quorate_raft_campaigns",
        "Elections this node started, each after a pre-vote that a majority of voters granted.",
        counts.campaigns,
    )?;
    one(
        enc,
        Counter,
        "quorate_raft_pre_votes_lost",
        "Pre-votes this node asked for, having heard no leader, that found no majority: it did \
         not campaign (the leader was alive to the others, or this node's log was behind).",
        counts.pre_votes_lost,
    )
}

/// What the member counted outside Raft itself: joins, refusals, renewals, the autopilot.
fn member_counts(enc: &mut DescriptorEncoder, c: &Counts) -> fmt::Result {
    use MetricType::Counter;
    family(
        enc,
        Counter,
        "quorate_joins",
        "Join requests this node answered, by outcome: admitted, refused (bad token or proof, \
         refused by the registry), rate_limited (too many refused joins from the source).",
        &[
            ([("outcome", "admitted")], c.joins_admitted),
            ([("outcome", "refused")], c.joins_refused),
            ([("outcome", "rate_limited")], c.joins_rate_limited),
        ],
    )?;
    let by_rule: u64 = c.refused_by_rule.iter().map(|(_, n)| n).sum();
    let mut refused: Vec<_> = c
        .refused_by_rule
        .iter()
        .map(|(rule, n)| ([("rule", Rule::name(*rule))], *n))
        .collect();
    refused.push((
        [("rule", "none")],
        c.requests_refused.saturating_sub(by_rule),
    ));
    family(
        enc,
        Counter,
        "quorate_requests_refused",
        "Requests this node refused, by the authority rule that refused them; none: refusals no \
         rule names (unreadable, from a removed identity, naming another node than the \
         certificate's).",
        &refused,
    )?;
    one(
        enc,
        Counter,
        "quorate_raft_answers_refused",
        "Raft answers this node refused as leader or candidate: a higher vote from a node that \
         is not a voter, or a term far above this node's.",
        c.answers_refused,
    )?;
    one(
        enc,
        Counter,
        "quorate_certificate_renewals",
        "Certificates this node renewed for itself.",
        c.certificates_renewed,
    )?;
    one(
        enc,
        Counter,
        "quorate_autopilot_removals_held",
        "Removals of failed nodes the autopilot held back because no other voter confirmed the \
         failure.",
        c.removals_unconfirmed,
    )
}

fn quic(enc: &mut DescriptorEncoder, node: &Consensus) -> fmt::Result {
    use MetricType::Counter;
    let q = node.net_metrics();
    family(
        enc,
        Counter,
        "quorate_quic_connections_refused",
        "Inbound QUIC connections refused, by cause: tls (the handshake failed: another CA, a \
         bad certificate, a removed identity), stranger_limit (no certificate, and too many such \
         from the source or in all), rate_limit (too many attempts from the source).",
        &[
            ([("cause", "tls")], load(&q.handshakes_refused)),
            ([("cause", "stranger_limit")], load(&q.strangers_refused)),
            ([("cause", "rate_limit")], load(&q.handshakes_limited)),
        ],
    )?;
    one(
        enc,
        Counter,
        "quorate_quic_retries",
        "QUIC retries sent: new addresses asked to prove they receive before a handshake.",
        load(&q.retries_sent),
    )?;
    one(
        enc,
        Counter,
        "quorate_quic_requests_served",
        "Requests this node served over QUIC.",
        load(&q.requests_in),
    )?;
    one(
        enc,
        Counter,
        "quorate_quic_requests_unreadable",
        "QUIC requests that could not be read (too large, cut off, too slow).",
        load(&q.requests_unreadable),
    )?;
    one(
        enc,
        Counter,
        "quorate_quic_calls",
        "Calls this node made to other nodes over QUIC.",
        load(&q.calls_out),
    )?;
    one(
        enc,
        Counter,
        "quorate_quic_calls_failed",
        "Calls this node made over QUIC that failed.",
        load(&q.calls_failed),
    )?;
    family(
        enc,
        Counter,
        "quorate_quic_bytes",
        "QUIC bytes read (in: requests served, answers to calls) and sent (out).",
        &[
            ([("direction", "in")], load(&q.bytes_in)),
            ([("direction", "out")], load(&q.bytes_out)),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::wants_openmetrics;

    #[test]
    fn openmetrics_is_served_to_whoever_asks_for_it() {
        // What Prometheus 2.42 sends.
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(wants_openmetrics("Application/OpenMetrics-Text"));
        assert!(!wants_openmetrics("text/plain;version=0.0.4"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("application/openmetrics-text; q=0"));
        assert!(!wants_openmetrics(""));
    }
}
