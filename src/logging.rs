//! Log set-up for the binary: `tracing` to standard error, as text or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter when none is configured: quorate's own events at `info`; openraft, which
/// narrates every election and membership step at `info` and every failed heartbeat to a
/// down peer at `warn` and `error`, only at `error`, and its replication retries not at all
/// (quorate logs once when a peer goes and once when it comes back, and the decisions that
/// matter itself); chitchat at `warn`: at `info` it tells of each delta it skips while a peer
/// resyncs, per peer and per round (hundreds of lines a minute on a cluster of 200).
pub const DEFAULT_FILTER: &str = "info,openraft=error,openraft::replication=off,chitchat=warn";

/// Installs the global subscriber. `filter` is the configured filter (`QUORATE_LOG`, the `log`
/// key); `rust_log` is the `RUST_LOG` fallback; with neither, [`DEFAULT_FILTER`].
pub fn init(format: LogFormat, filter: Option<&str>, rust_log: Option<&str>) {
    let directives = filter.or(rust_log).unwrap_or(DEFAULT_FILTER);
    // The configured filter was validated at load; a bad RUST_LOG falls back to `info`.
    let filter = EnvFilter::builder()
        .parse(directives)
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
