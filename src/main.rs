//! The `quorate` binary: parses the arguments and hands each command to its module in `cli`,
//! which calls the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

/// jemalloc, not glibc's allocator: glibc kept in its per-thread arenas what a burst freed (a
/// bulk join, an election that redials every learner), so that a leader's size at rest was the
/// burst's peak; jemalloc hands freed pages back over seconds (benches/results/scale.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Agent(args) => cli::agent::run(&args),
        Command::Discover(args) => cli::discover::run(&args),
        Command::Members(args) => cli::members::run(&args),
        Command::Keyring(args) => cli::keyring::run(&args),
        Command::Keygen => cli::keyring::keygen(),
        Command::Ca(args) => cli::ca::run(&args),
        Command::Status(args) => cli::status::run(&args),
        Command::Label(args) => cli::label::run(&args),
        Command::StepDown(args) => cli::admin::message(&args.api, "/v1/step-down"),
        Command::Promote(args) => cli::admin::node_op(&args, "promote"),
        Command::Demote(args) => cli::admin::node_op(&args, "demote"),
        Command::Remove(args) => cli::admin::node_op(&args, "remove"),
        Command::Token(args) => cli::token::run(&args),
        Command::Leave(args) => cli::admin::message(&args.api, "/v1/leave"),
        Command::Completions(args) => cli::docs::completions(&args),
        Command::Man(args) => cli::docs::man(&args),
        Command::Watch(args) => cli::watch::run(&args),
        Command::Snapshot(args) => cli::snapshot::run(&args),
        Command::Recover(args) => cli::recover::run(&args),
        Command::Health(args) => cli::health::run(&args),
    }
}
