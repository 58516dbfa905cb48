//! Discovery in the LAN lab: agents advertise, `quorate discover` finds them in every output
//! format, `--watch` reports arrivals and departures, records that are not ours are skipped,
//! and an independent mDNS stack (python-zeroconf) resolves what quorate advertises.

#[path = "../support/mod.rs"]
mod support;

mod listing;
mod util;
mod watch;
mod zeroconf;
