//! `quorate ca rotate`: rotate the cluster CA on every member, from a voter.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use quorate_consensus::rotation::Report;

use super::args::{ApiArg, client_failed};

pub(crate) const ABOUT: &str = "Rotate the cluster CA on every member (run on one voter).

  quorate ca rotate

A new CA is made and its key handed to every voter; every member then trusts it beside the
old one, renews its certificate under it with the key it has, and finally trusts it only.
Each step runs on every member before the next. Afterwards a certificate of the old CA (one
that a removed voter mints with the CA key it kept) is refused by every member, and join
tokens made before the rotation admit no one: create new ones (quorate token create).
Storage nodes never receive a CA key. A member that does not confirm a step stops the
rotation there and is named; run the same command again once it is back (it resumes with
the same new CA), or remove it first. Rotate the cluster key as well (quorate keyring
rotate) when a voter was removed or lost.";

#[derive(Debug, Args)]
pub(crate) struct CaArgs {
    #[command(flatten)]
    pub(crate) api: ApiArg,
    /// Print JSON.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) op: CaCmd,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCmd {
    /// Rotate the CA on every member: key, trust, renew, switch.
    ///
    /// Exit status: 0 when every member confirmed every step; 1 when a member did not (the
    /// rotation stopped at that step; the report names it) or the rotation could not start.
    Rotate,
}

/// `quorate ca`.
pub(crate) fn run(args: &CaArgs) -> ExitCode {
    let CaCmd::Rotate = args.op;
    let client = args.api.client();
    let report: Report = match client.post("/v1/ca/rotate", &serde_json::json!({})) {
        Ok(r) => r,
        Err(e) => return client_failed(e),
    };
    let done = format!(
        "rotated: every member trusts CA {} only ({} is refused)",
        report.fingerprint, report.replaced
    );
    super::keyring::finish_rotation(args.json, &report, &done)
}
