//! `quorate discover`: its flags and the command, which finds peers with the library's
//! `quorate::discover` (one-shot or watch) and prints them.
//!
//! How peers are found and filtered is the library's; how they are shown is `table`'s.

use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::args::parse_txt_filter;
use super::table::{self, Format};
use quorate::Role;

pub(crate) const ABOUT: &str = "Find quorate nodes on the local network with mDNS (DNS-SD).

Sends mDNS queries on every multicast-capable interface (or those named with --interface) and
lists the nodes that answer, with their addresses and ports. Needs no agent and no
configuration. Other services of the same type, and records that are not quorate's, are skipped
and counted.

Output: a table; --json for one JSON array ([] when nothing is found); --quiet for one line of
comma-separated ip:port (QUIC port) ready for --peers; --format lines for one ip:port per line;
--watch for JSON lines of found/updated/lost events until interrupted.

Exit status: 0 when peers were found (at least --expect of them when given), 1 when none or
fewer than --expect were found by the timeout (what was found is still printed), 2 for a usage
or runtime error.

Examples:
  quorate discover
  quorate discover --expect 3 --timeout 5s --json
  quorate discover --quiet --cluster prod --role voter    (one line of ip:port)
  quorate discover --watch | jq -c 'select(.event == \"lost\")'";

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    /// Aligned columns.
    Table,
    /// One JSON array.
    Json,
    /// One ip:port per line.
    Lines,
    /// One line of comma-separated ip:port.
    Quiet,
}

#[derive(Debug, Args)]
pub(crate) struct DiscoverArgs {
    /// How long to wait for answers, e.g. 500ms, 2s [default: 2s]. With --watch: stop after
    /// this long (default: until interrupted).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Option<std::time::Duration>,

    /// Exit as soon as this many matching peers are found.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) expect: Option<u32>,

    /// Only peers of this cluster.
    #[arg(long, value_name = "NAME")]
    pub(crate) cluster: Option<String>,

    /// Only peers of this role.
    #[arg(long, value_enum, value_name = "ROLE")]
    pub(crate) role: Option<Role>,

    /// Only peers whose TXT record has KEY=VALUE (repeatable; all must match).
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_txt_filter)]
    pub(crate) txt: Vec<(String, String)>,

    /// Query only on this interface (repeatable) [default: every interface].
    #[arg(long, value_name = "IFACE")]
    pub(crate) interface: Vec<String>,

    /// Never query on this interface (repeatable).
    #[arg(long, value_name = "IFACE")]
    pub(crate) exclude_interface: Vec<String>,

    /// DNS-SD service type to look for.
    #[arg(long, value_name = "TYPE", default_value = quorate_discovery::DEFAULT_SERVICE_TYPE)]
    pub(crate) service_type: String,

    /// Query over IPv4 only.
    #[arg(long)]
    pub(crate) no_ipv6: bool,

    /// Print one JSON array (same as --format json).
    #[arg(long, conflicts_with_all = ["quiet", "format", "watch"])]
    pub(crate) json: bool,

    /// Print one line of comma-separated ip:port (same as --format quiet).
    #[arg(long, short, conflicts_with_all = ["format", "watch"])]
    pub(crate) quiet: bool,

    /// Output format.
    #[arg(long, value_enum, value_name = "FORMAT", conflicts_with = "watch")]
    pub(crate) format: Option<FormatArg>,

    /// Print found/updated/lost events as JSON lines until interrupted.
    #[arg(long)]
    pub(crate) watch: bool,
}

impl DiscoverArgs {
    pub(crate) fn format(&self) -> Format {
        match (self.json, self.quiet, self.format) {
            (true, _, _) | (_, _, Some(FormatArg::Json)) => Format::Json,
            (_, true, _) | (_, _, Some(FormatArg::Quiet)) => Format::Quiet,
            (_, _, Some(FormatArg::Lines)) => Format::Lines,
            _ => Format::Table,
        }
    }

    pub(crate) fn filter(&self) -> quorate::discover::Filter {
        quorate::discover::Filter {
            cluster: self.cluster.clone(),
            role: self.role,
            txt: self.txt.clone(),
        }
    }

    pub(crate) fn interfaces(&self) -> quorate_discovery::Interfaces {
        quorate_discovery::Interfaces {
            include: self.interface.clone(),
            exclude: self.exclude_interface.clone(),
            loopback_only: false,
        }
    }
}

/// `quorate discover`: 0 found, 1 none or too few, 2 error.
pub(crate) fn run(args: &DiscoverArgs) -> ExitCode {
    use std::io::Write;
    let service_type = match quorate_discovery::check_service_type(&args.service_type) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: --service-type: {e}");
            return ExitCode::from(2);
        }
    };
    if args.watch {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                eprintln!("error: cannot start the async runtime: {e}");
                return ExitCode::from(2);
            }
        };
        let timeout = args.timeout;
        let stop = async move {
            let signal = async {
                let _ = quorate::agent::shutdown_signal().await;
            };
            match timeout {
                Some(t) => {
                    let _ = tokio::time::timeout(t, signal).await;
                }
                None => signal.await,
            }
        };
        let mut out = std::io::stdout();
        let run = quorate::discover::watch(
            service_type,
            args.interfaces(),
            args.filter(),
            &mut out,
            stop,
        );
        return match runtime.block_on(run) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    let once = quorate::discover::Once {
        query: quorate_discovery::QueryOptions {
            service_type,
            interfaces: args.interfaces(),
            timeout: args.timeout.unwrap_or(std::time::Duration::from_secs(2)),
            ipv6: !args.no_ipv6,
        },
        expect: args.expect.map(|n| n as usize),
        filter: args.filter(),
    };
    let started = std::time::Instant::now();
    let (peers, stats) = match quorate::discover::once(&once) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let format = args.format();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(table::render(&peers, format).as_bytes());
    let _ = stdout.flush();
    if format == Format::Table {
        let s = stats.snapshot();
        eprintln!(
            "{} found in {:.2}s ({} foreign and {} malformed records skipped)",
            match peers.len() {
                1 => "1 peer".to_string(),
                n => format!("{n} peers"),
            },
            started.elapsed().as_secs_f64(),
            s["foreign"],
            s["malformed"],
        );
    }
    let wanted = args.expect.map_or(1, |n| n as usize);
    if peers.len() >= wanted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
