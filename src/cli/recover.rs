//! `quorate recover`: the quorum-lost recovery of a stopped surviving voter.
//!
//! It shows what will change (the voters before and after, the learners kept, the records
//! removed) and asks on the terminal, unless `--yes`; the work is `quorate::recover`'s.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use quorate::recover::Recover;

pub(crate) const ABOUT: &str = "Recover a cluster that lost its quorum for good.

When a majority of the voters is lost for good (their disks are gone), the survivors cannot
elect a leader and nothing can be written. Run this on ONE stopped surviving voter (the most
up to date): it rewrites that node's Raft membership so that it is the only voter, keeps every
other member (the storage nodes) as a learner, and removes the lost voters' records (their
old identities are refused from then on). The cluster id, the CA and its key, the certificates
and the registry stay. Start the agent again: it elects itself; then create a voter token on
it and join new voters (with fresh data dirs); the autopilot makes them voters.

  quorate recover --data-dir /var/lib/quorate          # asks before changing anything
  quorate recover --data-dir /var/lib/quorate --yes

Never run it while other voters of the group are alive: two groups would both accept writes.

Exit status: 0 recovered, 1 refused (the agent runs, no cluster, a storage node) or declined.";

#[derive(Debug, Args)]
pub(crate) struct RecoverArgs {
    /// The stopped survivor's data dir.
    #[arg(long = "data-dir", value_name = "DIR")]
    pub(crate) data_dir: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub(crate) yes: bool,
}

fn ids(set: impl IntoIterator<Item = quorate::NodeId>) -> String {
    let v: Vec<String> = set.into_iter().map(|id| id.to_string()).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// `quorate recover`.
pub(crate) fn run(args: &RecoverArgs) -> ExitCode {
    let recover = match Recover::open(&args.data_dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let p = recover.plan();
    say!(
        "cluster          {} ({})",
        p.cluster.cluster_name,
        p.cluster.cluster_id
    );
    say!("this node        {}", p.node);
    say!("voters before    {}", ids(p.voters_before.iter().copied()));
    say!("voters after     {}", ids(p.voters_after.iter().copied()));
    say!(
        "learners kept    {}",
        if p.learners.is_empty() {
            "none".to_string()
        } else {
            p.learners
                .iter()
                .map(|(id, addr)| format!("{id} at {addr}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    say!(
        "records removed  {}",
        ids(p.records_removed.iter().copied())
    );
    say!(
        "log              entries appended after index {}, term {} (the vote was term {})",
        p.last_index,
        p.term,
        p.vote_term
    );
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("error: not a terminal to confirm on; give --yes to recover without asking");
            return ExitCode::FAILURE;
        }
        print!("Make {} the only voter? Type yes to go on: ", p.node);
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer).is_err() || answer.trim() != "yes" {
            eprintln!("nothing changed");
            return ExitCode::FAILURE;
        }
    }
    match recover.apply() {
        Ok(p) => {
            say!(
                "recovered: {} is the only voter; start its agent, then join new voters with a voter token",
                p.node
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
