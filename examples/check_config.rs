//! Loads a quorate config the way `quorate agent` does (defaults < file < `QUORATE_*`
//! environment), validates it, and prints the effective settings as JSON, or the one-line
//! error the agent would stop with.
//!
//! ```text
//! cargo run --example check_config -- packaging/quorate.toml
//! QUORATE_GOSSIP_PORT=8000 cargo run --example check_config -- packaging/quorate.toml
//! ```

use std::process::ExitCode;

use quorate::config::{self, Sources};

fn main() -> ExitCode {
    let sources = Sources {
        file: std::env::args_os().nth(1).map(Into::into),
        env: Sources::env_from(std::env::vars()),
        flags: Vec::new(),
    };
    match config::load(&sources) {
        Ok(cfg) => {
            match serde_json::to_string_pretty(&cfg) {
                Ok(json) => println!("{json}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
