//! Elections with a pre-vote (the Raft thesis, section 9.6; etcd's `PreVote`).
//!
//! openraft 0.9 campaigns as soon as a voter has heard no leader for its election timeout:
//! it takes a new term first and asks for votes after. One voter that hears its leader late
//! (a busy host, a lossy link) then deposes a leader the others still follow, since the leader
//! steps down when it meets the higher term; and a voter whose log is behind, unable to win,
//! takes term after term and keeps the voter that could win from winning. At 200 hosts on one
//! machine that was hundreds of terms during a bulk join.
//!
//! Here openraft's own timer is off, and this module campaigns instead: a voter that has heard
//! no leader for its election timeout (the leader lease plus a random 100 to 200 ms, as
//! openraft's timer was) first asks the other voters whether they would vote for it. A voter
//! says yes only when it is no leader, has heard no leader itself for the leader lease (when
//! openraft would grant the vote, too) and holds no entry the candidate lacks. Only with a
//! majority of yeses (in each half of a joint configuration) does the candidate ask openraft to
//! campaign. The pre-vote changes no term and no vote, so a refused one leaves the group as it
//! was; safety stays openraft's (its vote rules are untouched).
//!
//! **A voter that was itself stalled does not count its stall as the leader's silence.** On a
//! host short of CPU a process can be kept off the cores for hundreds of milliseconds; when
//! it runs again, the leader's heartbeats may still wait in its socket, unread, and the
//! silence it measures is its own. The loop wakes every [`TICK`]; the time by which a wake
//! came late (beyond [`STALL`]) is set against the silence until the next leader contact, so
//! a stalled voter waits for that much more (memberlist's Lifeguard does the like for its
//! probes: a node that sees itself slow widens its timeouts). A leader that is really gone is
//! still replaced: the timeout runs on in the time the voter does run.
//!
//! **A leader whose heartbeats come unevenly gets more patience.** A voter times the gaps
//! between one leader's messages (entries or heartbeats, stamped when they arrive, before
//! they wait for this node's log). Its election timeout is at least twice the widest gap of
//! the last [`WINDOW`] or two, up to [`PATIENCE_MAX`]: on a quiet LAN the gaps are the 50 ms
//! heartbeat interval and nothing changes, while a leader on a host short of CPU, whose
//! heartbeats come 150 to 250 ms apart, is not deposed for a gap a little wider than the
//! ones before (each election there costs the new leader a round of dials and streams to every
//! member, which widens the next gaps: a storm). Only one leader's gaps count, so the silence
//! of a failover does not make the next failover slower. A voter that grants a pre-vote holds
//! to the same patience (the same rule as openraft's leader lease, widened).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, LogId, RaftMetrics, ServerState, Vote};
use tracing::{debug, info};

use quorate_base::Role;

use super::state::Inner;
use crate::NodeId;
use crate::proto::{PreVote, Reply, Rpc};

/// How often the campaign loop looks.
const TICK: Duration = Duration::from_millis(20);
/// How long a pre-vote waits for the other voters' answers.
const ASK_WITHIN: Duration = Duration::from_millis(150);
/// A wake of the loop later than this after its [`TICK`] is a stall of this node's own.
const STALL: Duration = Duration::from_millis(40);
/// How long a gap between a leader's messages is remembered: for this window and the next.
const WINDOW: Duration = Duration::from_secs(5);
/// The most patience uneven heartbeats earn: a leader that is gone is replaced within it.
const PATIENCE_MAX: Duration = Duration::from_secs(2);

/// The gaps between one leader's messages (see the module's documentation); times in
/// milliseconds since the campaign's epoch.
#[derive(Debug, Default)]
pub(super) struct Gaps {
    /// The leader (its vote) whose messages are timed.
    leader: Option<Vote<NodeId>>,
    /// Its last message.
    last: u64,
    /// When the current window began.
    window: u64,
    /// The widest gap in the current window, and in the one before.
    widest: u64,
    before: u64,
}

impl Gaps {
    /// A message from the leader `vote` at `now`.
    pub(super) fn contact(&mut self, vote: Vote<NodeId>, now: u64) {
        let window = WINDOW.as_millis() as u64;
        if self.leader != Some(vote) {
            *self = Gaps {
                leader: Some(vote),
                last: now,
                window: now,
                widest: 0,
                before: 0,
            };
            return;
        }
        let age = now.saturating_sub(self.window);
        if age >= window {
            self.before = if age >= 2 * window { 0 } else { self.widest };
            self.widest = 0;
            self.window = now;
        }
        self.widest = self.widest.max(now.saturating_sub(self.last));
        self.last = now;
    }

    /// The election timeout these gaps ask for at `now`: twice the widest remembered, at most
    /// [`PATIENCE_MAX`].
    pub(super) fn patience(&self, now: u64) -> Duration {
        let window = WINDOW.as_millis() as u64;
        let age = now.saturating_sub(self.window);
        let widest = match age {
            a if a < window => self.widest.max(self.before),
            a if a < 2 * window => self.widest,
            _ => 0,
        };
        Duration::from_millis(2 * widest).min(PATIENCE_MAX)
    }
}

/// This node's own stalls since it last heard a leader (see the module's documentation).
#[derive(Debug)]
pub(super) struct Stalls {
    /// When the loop last woke.
    woke: Instant,
    /// The last leader contact seen (`Campaign::heard`'s stamp).
    heard: u64,
    /// The time the loop's wakes came late since that contact.
    stalled: Duration,
}

impl Stalls {
    pub(super) fn new(now: Instant, heard: u64) -> Stalls {
        Stalls {
            woke: now,
            heard,
            stalled: Duration::ZERO,
        }
    }

    /// A wake at `now`, with the leader contact stamp `heard`; the stall time since it.
    pub(super) fn woke(&mut self, now: Instant, heard: u64) -> Duration {
        if heard != self.heard {
            self.heard = heard;
            self.stalled = Duration::ZERO;
        }
        let late = now
            .saturating_duration_since(self.woke)
            .saturating_sub(TICK);
        if late > STALL {
            self.stalled += late;
        }
        self.woke = now;
        self.stalled
    }
}

/// What a voter knows of itself when asked for a pre-vote.
#[derive(Clone, Debug)]
pub(super) struct Standing {
    pub(super) voter: bool,
    pub(super) leader: bool,
    /// How long since it last heard a leader.
    pub(super) silent: Duration,
    /// The followers' leader lease: openraft grants no vote before it ran out.
    pub(super) lease: Duration,
    pub(super) last_log_id: Option<LogId<NodeId>>,
}

/// Whether a voter standing as `me` would vote for a candidate whose last entry is
/// `candidate_last`; `Err` says why not.
pub(super) fn grants(me: &Standing, candidate_last: Option<&LogId<NodeId>>) -> Result<(), String> {
    if !me.voter {
        return Err("not a voter".into());
    }
    if me.leader {
        return Err("this node leads".into());
    }
    if me.silent < me.lease {
        return Err(format!("heard the leader {} ms ago", me.silent.as_millis()));
    }
    if candidate_last < me.last_log_id.as_ref() {
        return Err("this node holds entries the candidate lacks".into());
    }
    Ok(())
}

/// Whether `id` is a voter of the membership `m` shows.
fn is_voter(m: &RaftMetrics<NodeId, BasicNode>, id: NodeId) -> bool {
    m.membership_config
        .membership()
        .voter_ids()
        .any(|v| v == id)
}

/// Whether the nodes in `granted` are a majority of every configuration in `joint`.
pub(super) fn is_quorum(joint: &[BTreeSet<NodeId>], granted: &BTreeSet<NodeId>) -> bool {
    !joint.is_empty()
        && joint
            .iter()
            .all(|c| c.iter().filter(|id| granted.contains(id)).count() * 2 > c.len())
}

/// What the campaign loop and the request handler share.
pub(super) struct Campaign {
    /// Whether this node may campaign: not while it holds its candidacy after a restart, nor
    /// while it hands its leadership over, nor once it was removed.
    allowed: AtomicBool,
    /// When this node last heard a leader (took its entries, heartbeat or snapshot) or granted
    /// a vote or a pre-vote, in milliseconds since `epoch`.
    heard: AtomicU64,
    /// The gaps between the current leader's messages.
    gaps: Mutex<Gaps>,
    epoch: Instant,
    /// openraft's `election_timeout_min` and `_max` (the latter is also the followers'
    /// leader lease).
    timeout: (Duration, Duration),
}

impl Campaign {
    /// A campaign on `config`'s election timeouts.
    pub(super) fn new(allowed: bool, config: &openraft::Config) -> Campaign {
        Campaign {
            allowed: AtomicBool::new(allowed),
            heard: AtomicU64::new(0),
            gaps: Mutex::new(Gaps::default()),
            epoch: Instant::now(),
            timeout: (
                Duration::from_millis(config.election_timeout_min),
                Duration::from_millis(config.election_timeout_max),
            ),
        }
    }

    /// The followers' leader lease: openraft grants no vote before it ran out.
    pub(super) fn lease(&self) -> Duration {
        self.timeout.1
    }

    pub(super) fn allow(&self, allowed: bool) {
        self.allowed.store(allowed, Ordering::Relaxed);
    }

    fn allowed(&self) -> bool {
        self.allowed.load(Ordering::Relaxed)
    }

    /// This node heard a leader, or granted a vote or a pre-vote: its election timer starts
    /// again.
    pub(super) fn heard(&self) {
        self.heard.store(self.now(), Ordering::Relaxed);
    }

    /// Milliseconds since `epoch`: the clock of `heard` and of the gaps.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A message (entries or a heartbeat) arrived from the leader `vote`, the one this node
    /// follows: its election timer starts again, and the gap since the last one is timed.
    pub(super) fn heard_leader(&self, vote: Vote<NodeId>) {
        let now = self.now();
        self.gaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contact(vote, now);
        self.heard.store(now, Ordering::Relaxed);
    }

    /// The election timeout the current leader's uneven messages ask for (zero when even).
    fn patience(&self) -> Duration {
        let now = self.now();
        self.gaps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .patience(now)
    }

    fn silent(&self) -> Duration {
        let now = self.now();
        Duration::from_millis(now.saturating_sub(self.heard.load(Ordering::Relaxed)))
    }

    /// The stamp of the last leader contact.
    fn heard_stamp(&self) -> u64 {
        self.heard.load(Ordering::Relaxed)
    }

    /// A new election timeout: the lease, then a random share of openraft's range.
    fn next_timeout(&self) -> Duration {
        let (min, max) = self.timeout;
        let spread = max.saturating_sub(min).as_millis() as u64;
        self.lease() + min + Duration::from_millis(rand::random_range(0..=spread))
    }
}

impl Inner {
    /// The answer to a voter's pre-vote.
    pub(super) async fn answer_pre_vote(&self, q: &PreVote) -> Reply {
        let m = self.metrics();
        let last_log_id = match self.log.clone().get_log_state().await {
            Ok(s) => s.last_log_id,
            Err(e) => {
                return Reply::PreVoted {
                    granted: false,
                    reason: format!("cannot read this node's log: {e}"),
                };
            }
        };
        let me = Standing {
            voter: is_voter(&m, self.id),
            leader: m.state == ServerState::Leader,
            silent: self.campaign.silent(),
            lease: self.campaign.lease().max(self.campaign.patience()),
            last_log_id,
        };
        let answer = grants(&me, q.last_log_id.as_ref());
        debug!(candidate = %q.candidate, term = q.term, granted = answer.is_ok(), why = ?answer.as_ref().err(), "pre-vote asked");
        match answer {
            Ok(()) => {
                // The candidate is about to campaign: this node holds its own campaign back
                // for a timeout, so that the two do not split the vote.
                self.campaign.heard();
                Reply::PreVoted {
                    granted: true,
                    reason: String::new(),
                }
            }
            Err(reason) => Reply::PreVoted {
                granted: false,
                reason,
            },
        }
    }

    /// Asks the other voters of `m`'s membership for a pre-vote; the voters that would vote
    /// for this node, this one included (asking stops at a majority).
    async fn pre_vote(&self, m: &RaftMetrics<NodeId, BasicNode>) -> BTreeSet<NodeId> {
        let mut granted = BTreeSet::from([self.id]);
        let last_log_id = match self.log.clone().get_log_state().await {
            Ok(s) => s.last_log_id,
            Err(_) => return BTreeSet::new(),
        };
        // No term near the top is ever taken (answers and requests above the ceiling are
        // refused), so there is always a next one; without it, no campaign.
        let Some(term) = m.vote.leader_id().term.checked_add(1) else {
            return BTreeSet::new();
        };
        let q = PreVote {
            candidate: self.id,
            term,
            last_log_id,
        };
        let Ok(body) = serde_json::to_vec(&Rpc::PreVote { q }) else {
            return BTreeSet::new();
        };
        let body = Arc::new(body);
        let membership = m.membership_config.membership();
        let mut asks = tokio::task::JoinSet::new();
        for v in membership.voter_ids().filter(|v| *v != self.id) {
            let Some(addr) = membership
                .get_node(&v)
                .and_then(|n| n.addr.parse::<SocketAddr>().ok())
            else {
                continue;
            };
            let (net, body) = (self.net.clone(), body.clone());
            asks.spawn(async move {
                let answer = net.call(v, addr, &body, ASK_WITHIN).await;
                let yes = matches!(
                    answer.as_deref().map(serde_json::from_slice::<Reply>),
                    Ok(Ok(Reply::PreVoted { granted: true, .. }))
                );
                (v, yes)
            });
        }
        let joint = membership.get_joint_config();
        while !is_quorum(joint, &granted)
            && let Some(Ok((v, yes))) = asks.join_next().await
        {
            if yes {
                granted.insert(v);
            }
        }
        granted
    }
}

/// Campaigns for this node, after a pre-vote, when it has heard no leader for its election
/// timeout (see the module's documentation); runs on voter-role nodes (a storage node is never
/// a voter, and hundreds of them need not wake every 20 ms), campaigns only as a voter.
pub(super) async fn campaign_loop(inner: Arc<Inner>) {
    // The role it runs as: a voter restarted as a storage node does not campaign (one
    // candidate fewer costs no safety).
    if inner.me.info.role != Role::Voter {
        return;
    }
    let c = &inner.campaign;
    c.heard();
    let mut timeout = c.next_timeout();
    let mut last_try = Instant::now();
    let mut stalls = Stalls::new(Instant::now(), c.heard_stamp());
    loop {
        tokio::time::sleep(TICK).await;
        let stalled = stalls.woke(Instant::now(), c.heard_stamp());
        let (leads, votes) = {
            let m = inner.raft.metrics();
            let m = m.borrow();
            (m.state == ServerState::Leader, is_voter(&m, inner.id))
        };
        if leads {
            // A leader hears itself: once it steps down, its timer starts from then.
            c.heard();
            continue;
        }
        let silent = c.silent().saturating_sub(stalled);
        let patience = timeout.max(c.patience());
        if !votes || !c.allowed() || silent < patience || last_try.elapsed() < timeout {
            continue;
        }
        let m = inner.metrics();
        last_try = Instant::now();
        timeout = c.next_timeout();
        let granted = inner.pre_vote(&m).await;
        if !is_quorum(
            m.membership_config.membership().get_joint_config(),
            &granted,
        ) {
            inner
                .counters
                .pre_votes_lost
                .fetch_add(1, Ordering::Relaxed);
            debug!(granted = ?granted, silent_ms = c.silent().as_millis() as u64, "pre-vote without a majority; not campaigning");
            continue;
        }
        // A leader may have been heard while the pre-vote ran.
        if !c.allowed() || c.silent() < c.lease() {
            continue;
        }
        inner.counters.campaigns.fetch_add(1, Ordering::Relaxed);
        info!(
            term = m.vote.leader_id().term.saturating_add(1),
            silent_ms = c.silent().as_millis() as u64,
            stalled_ms = stalled.as_millis() as u64,
            patience_ms = patience.as_millis() as u64,
            "no leader heard; a majority would vote for this node: campaigning"
        );
        if inner.raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn log(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, NodeId::new(1)), index)
    }

    fn standing() -> Standing {
        Standing {
            voter: true,
            leader: false,
            silent: Duration::from_millis(300),
            lease: Duration::from_millis(200),
            last_log_id: Some(log(2, 10)),
        }
    }

    /// A follower that has heard no leader for the lease grants a candidate with as much log.
    #[test]
    fn a_silent_follower_grants_a_candidate_with_as_much_log() {
        assert_eq!(grants(&standing(), Some(&log(2, 10))), Ok(()));
        assert_eq!(grants(&standing(), Some(&log(3, 4))), Ok(()));
    }

    /// Refused: by a follower that heard its leader within the lease, by the leader, by a
    /// learner, and when the candidate lacks entries the voter holds.
    #[test]
    fn a_leader_heard_a_leader_a_learner_or_a_shorter_log_refuse() {
        let heard = Standing {
            silent: Duration::from_millis(150),
            ..standing()
        };
        assert!(grants(&heard, Some(&log(2, 10))).is_err());
        let leader = Standing {
            leader: true,
            ..standing()
        };
        assert!(grants(&leader, Some(&log(2, 10))).is_err());
        let learner = Standing {
            voter: false,
            ..standing()
        };
        assert!(grants(&learner, Some(&log(2, 10))).is_err());
        assert!(grants(&standing(), Some(&log(2, 9))).is_err());
        assert!(grants(&standing(), Some(&log(1, 50))).is_err());
        assert!(grants(&standing(), None).is_err());
    }

    /// Wakes on time add no stall; a late wake adds its lateness beyond the tick, until the
    /// next leader contact clears it.
    #[test]
    fn late_wakes_count_as_stalls_until_a_leader_is_heard() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        let mut s = Stalls::new(t, 7);
        assert_eq!(s.woke(t + ms(21), 7), Duration::ZERO, "on time");
        assert_eq!(
            s.woke(t + ms(21 + 50), 7),
            Duration::ZERO,
            "late within STALL"
        );
        assert_eq!(s.woke(t + ms(71 + 320), 7), ms(300), "kept off the cores");
        assert_eq!(s.woke(t + ms(391 + 20), 7), ms(300), "the stall stays");
        assert_eq!(s.woke(t + ms(411 + 120), 7), ms(400), "stalls add up");
        assert_eq!(
            s.woke(t + ms(531 + 20), 8),
            Duration::ZERO,
            "a leader was heard"
        );
    }

    fn vote(term: u64, node: u64) -> Vote<NodeId> {
        Vote::new_committed(term, NodeId::new(node))
    }

    /// Even 50 ms heartbeats ask for no more than the base timeout; one wide gap asks for twice
    /// it, for its window and the next, and is forgotten after.
    #[test]
    fn a_wide_gap_between_one_leaders_messages_widens_the_timeout_for_a_while() {
        let mut g = Gaps::default();
        let w = WINDOW.as_millis() as u64;
        for t in (0..=1000).step_by(50) {
            g.contact(vote(2, 1), t);
        }
        assert_eq!(g.patience(1000), Duration::from_millis(100));
        g.contact(vote(2, 1), 1250);
        assert_eq!(g.patience(1250), Duration::from_millis(500));
        for t in (1300..=w + 100).step_by(50) {
            g.contact(vote(2, 1), t);
        }
        assert_eq!(
            g.patience(w + 100),
            Duration::from_millis(500),
            "in the next window"
        );
        for t in (w + 150..=2 * w + 200).step_by(50) {
            g.contact(vote(2, 1), t);
        }
        assert_eq!(
            g.patience(2 * w + 200),
            Duration::from_millis(100),
            "forgotten"
        );
        // Silence since the last contact does not count until a message ends it.
        assert_eq!(g.patience(2 * w + 1200), Duration::from_millis(100));
        assert_eq!(
            g.patience(4 * w + 1200),
            Duration::ZERO,
            "nothing remembered"
        );
    }

    /// The silence between two leaders (a failover) is no gap; patience is capped.
    #[test]
    fn a_new_leader_starts_afresh_and_patience_is_capped() {
        let mut g = Gaps::default();
        g.contact(vote(2, 1), 0);
        g.contact(vote(2, 1), 50);
        g.contact(vote(3, 2), 450);
        g.contact(vote(3, 2), 500);
        assert_eq!(g.patience(500), Duration::from_millis(100));
        g.contact(vote(3, 2), 3500);
        assert_eq!(g.patience(3500), PATIENCE_MAX);
    }

    /// A majority of each configuration is needed; half is not a majority.
    #[test]
    fn a_quorum_is_a_majority_of_every_configuration() {
        let set = |ids: &[u64]| ids.iter().map(|i| NodeId::new(*i)).collect::<BTreeSet<_>>();
        assert!(is_quorum(&[set(&[1, 2, 3])], &set(&[1, 3])));
        assert!(!is_quorum(&[set(&[1, 2, 3])], &set(&[1])));
        assert!(!is_quorum(&[set(&[1, 2, 3, 4])], &set(&[1, 2])));
        assert!(is_quorum(&[set(&[1])], &set(&[1])));
        assert!(!is_quorum(
            &[set(&[1, 2, 3]), set(&[3, 4, 5])],
            &set(&[1, 2])
        ));
        assert!(is_quorum(
            &[set(&[1, 2, 3]), set(&[3, 4, 5])],
            &set(&[1, 3, 4])
        ));
        assert!(!is_quorum(&[], &set(&[1])));
    }
}
