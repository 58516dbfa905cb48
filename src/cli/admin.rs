//! The admin commands whose answer is one message: `step-down`, `leave`, `promote`,
//! `demote` and `remove`.
//!
//! Each is one POST to the agent; consensus decides, and the message says what it did.

use std::process::ExitCode;

use super::args::{ApiArg, NodeArgs, client_failed};

pub(crate) const STEP_DOWN_ABOUT: &str = "Ask the leader to hand leadership over to another voter.

The leader picks the most caught-up voter, lets it catch up fully, and has it win an election;
writes wait meanwhile and then go to the new leader. Run it on any node: the request goes to
the leader. Useful before maintenance of the leader's machine.

Exit status: 0 handed over, 1 refused (no other voter, no quorum) or unreachable.";

pub(crate) const LEAVE_ABOUT: &str = "Leave the cluster: deregister this node, then stop the agent.

The node is marked leaving, taken out of the Raft group (a leader hands leadership to another
voter first) and removed from the registry; gossip reports it left. Its cluster state is set
aside in the data dir, so a restart starts afresh and may join again.";

/// A POST whose answer is `{"message": ...}`.
pub(crate) fn message(api: &ApiArg, path: &str) -> ExitCode {
    let client = api.client();
    match client.post::<_, serde_json::Value>(path, &serde_json::json!({})) {
        Ok(v) => {
            say!("{}", v["message"].as_str().unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => client_failed(e),
    }
}

/// `quorate promote|demote|remove ID`.
pub(crate) fn node_op(args: &NodeArgs, op: &str) -> ExitCode {
    if let Err(e) = args.id.parse::<quorate::NodeId>() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    message(&args.api, &format!("/v1/nodes/{}/{op}", args.id))
}
