//! What a cluster-wide rotation (of the cluster key, or of the CA) reports: each step run on
//! every recorded member before the next, and who confirmed it. A step that a member does not
//! confirm stops the rotation before the next step and names the member; each step is
//! idempotent, so running the rotation again once the member is back completes it.

use std::future::Future;

use quorate_base::{NodeId, Role};
use serde::{Deserialize, Serialize};

/// A recorded member a rotation goes through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its id.
    pub id: NodeId,
    /// Its role in the registry.
    pub role: Role,
    /// Its name in the registry.
    pub name: String,
}

impl Member {
    /// Every member the registry records, in id order.
    pub fn all(registry: &crate::Registry) -> Vec<Member> {
        registry
            .nodes
            .values()
            .map(|n| Member {
                id: n.id,
                role: n.role,
                name: n.name.clone(),
            })
            .collect()
    }
}

/// What one step of a rotation reached.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepReport {
    /// The step's name.
    pub step: String,
    /// How many members it was run on.
    pub members: usize,
    /// The members that confirmed it.
    #[serde(with = "quorate_base::hex_id::list")]
    pub confirmed: Vec<NodeId>,
    /// The members that did not, with why.
    pub missing: Vec<Missing>,
}

impl StepReport {
    /// Whether every member confirmed it.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// What a rotation did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// The fingerprint of what it rotates to (the new key's, the new CA's).
    pub fingerprint: String,
    /// The fingerprint of what it replaces.
    pub replaced: String,
    /// The steps run, in order; the last one stopped the rotation unless it is complete.
    pub steps: Vec<StepReport>,
    /// Whether every member confirmed every step.
    pub complete: bool,
}

impl Report {
    /// A rotation from `replaced` to `fingerprint`, no step run yet.
    pub fn new(fingerprint: String, replaced: String) -> Report {
        Report {
            fingerprint,
            replaced,
            steps: Vec::new(),
            complete: false,
        }
    }

    /// Records a step; whether the rotation goes on (every member confirmed it).
    pub fn record(&mut self, step: StepReport) -> bool {
        let on = step.complete();
        self.steps.push(step);
        on
    }
}

/// A member that did not confirm a step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Missing {
    /// The member.
    #[serde(with = "quorate_base::hex_id")]
    pub id: NodeId,
    /// Its name in the registry.
    pub name: String,
    /// Why.
    pub error: String,
}

/// How many times a step is tried on a member before it counts as not confirmed, and the
/// pause before the next try (doubled each time): a member slow to answer or a lost packet is
/// not a member down. Each step is idempotent, so a try that did its work but lost its answer
/// is harmless.
const TRIES: u32 = 3;
const FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs step `name` on every member of `members` at once (`run` does it for one member,
/// tried again on failure) and reports who confirmed it.
pub async fn step<'a, F, Fut>(name: &str, members: &'a [Member], run: F) -> StepReport
where
    F: Fn(&'a Member) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let run = &run;
    let done = futures_util::future::join_all(members.iter().map(|m| async move {
        let mut pause = FIRST_PAUSE;
        let mut tried = 1;
        loop {
            match run(m).await {
                Ok(()) => return Ok(()),
                Err(e) if tried >= TRIES => return Err(e),
                Err(e) => {
                    tracing::debug!(step = name, member = %m.id, error = %e, "rotation step not confirmed; trying again");
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    tried += 1;
                }
            }
        }
    }))
    .await;
    let mut report = StepReport {
        step: name.to_string(),
        members: members.len(),
        confirmed: Vec::new(),
        missing: Vec::new(),
    };
    for (m, res) in members.iter().zip(done) {
        match res {
            Ok(()) => report.confirmed.push(m.id),
            Err(error) => report.missing.push(Missing {
                id: m.id,
                name: m.name.clone(),
                error,
            }),
        }
    }
    tracing::info!(
        step = name,
        confirmed = report.confirmed.len(),
        members = report.members,
        "rotation step"
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_tries_again_and_names_each_member_that_did_not_confirm() {
        let members: Vec<Member> = [(1, Role::Voter, "a"), (2, Role::Storage, "b")]
            .into_iter()
            .map(|(id, role, name)| Member {
                id: NodeId::new(id),
                role,
                name: name.into(),
            })
            .collect();
        let tries = std::sync::atomic::AtomicU32::new(0);
        let tries = &tries;
        let report = step("install", &members, |m| async move {
            match m.role {
                // A slow voter: confirms at its third try.
                Role::Voter if tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < 2 => {
                    Err("slow".to_string())
                }
                Role::Voter => Ok(()),
                Role::Storage => Err("down".to_string()),
            }
        })
        .await;
        assert_eq!(report.confirmed, [NodeId::new(1)]);
        assert_eq!(report.missing.len(), 1);
        assert_eq!(
            (
                report.missing[0].name.as_str(),
                report.missing[0].error.as_str()
            ),
            ("b", "down")
        );
        assert!(!report.complete());
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["confirmed"], serde_json::json!(["0000000000000001"]));
    }
}
