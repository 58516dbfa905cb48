//! Waiting on conditions with a deadline, never on the clock alone.
//!
//! One contract, in a blocking and an async form: poll a probe until it says yes, and when the
//! deadline passes, panic naming what was awaited and what the last probe saw ([`try_until`]:
//! return what it saw instead, for a condition that may rightly never come). Beside it, the
//! two deliberate checks over a window: [`holds`] (an invariant stays true) and [`never`] (an
//! event does not happen). Those are the only places a test watches the clock for a while on
//! purpose; everything else waits for a condition.
//!
//! Independent of the lab: the crate tests include this file with
//! `#[path = "../../tests/support/wait.rs"] mod wait;`. It needs only std, and tokio for the
//! async forms.
#![allow(dead_code, unreachable_pub)]

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How often a probe is polled.
const POLL: Duration = Duration::from_millis(20);

fn timed_out(what: &str, within: Duration, seen: &dyn Debug) -> ! {
    panic!("timed out after {within:?} waiting for {what}; last seen: {seen:?}")
}

/// Polls `probe` until it returns `Ok`, or panics once `within` has passed, printing what the
/// last probe saw. `probe` returns `Err(seen)` to keep waiting. Blocks the thread: use
/// [`until_async`] inside a tokio runtime.
pub fn until<T, S: Debug>(what: &str, within: Duration, probe: impl FnMut() -> Result<T, S>) -> T {
    try_until(within, probe).unwrap_or_else(|seen| timed_out(what, within, &seen))
}

/// [`until`], polling every `every` instead of every 20 ms: for a probe that costs the system
/// under test enough to disturb it (a benchmark asking a hundred agents for their status).
pub fn until_every<T, S: Debug>(
    what: &str,
    within: Duration,
    every: Duration,
    probe: impl FnMut() -> Result<T, S>,
) -> T {
    try_until_every(within, every, probe).unwrap_or_else(|seen| timed_out(what, within, &seen))
}

/// [`until`] for a condition that may rightly never come (a benchmark's peer that does not
/// form within its deadline): polls `probe` until it returns `Ok`, and once `within` has
/// passed returns the last probe's `Err(seen)` instead of panicking.
pub fn try_until<T, S>(within: Duration, probe: impl FnMut() -> Result<T, S>) -> Result<T, S> {
    try_until_every(within, POLL, probe)
}

/// [`try_until`], polling every `every`.
pub fn try_until_every<T, S>(
    within: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> Result<T, S> {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return Ok(v),
            Err(seen) if start.elapsed() >= within => return Err(seen),
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// [`until`] for async tests: the same contract, yielding to the runtime between probes.
pub async fn until_async<T, S: Debug>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if start.elapsed() >= within => timed_out(what, within, &seen),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Checks that `probe` keeps returning `Ok` for the whole of `window`, polling; panics with
/// what it saw the first time it does not. For invariants ("stays whole"), not for waiting.
pub fn holds<S: Debug>(what: &str, window: Duration, mut probe: impl FnMut() -> Result<(), S>) {
    let start = Instant::now();
    while start.elapsed() < window {
        if let Err(seen) = probe() {
            panic!(
                "{what} stopped holding after {:?}; seen: {seen:?}",
                start.elapsed()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Checks that something never happens during `window`, polling: `probe` returns `Some(seen)`
/// when it happened, and the check panics with it. An absence can only be shown over a window;
/// choose one longer than the thing would take to happen if it could (for gossip, a few
/// failure-detection periods).
pub fn never<S: Debug>(what: &str, window: Duration, mut probe: impl FnMut() -> Option<S>) {
    let start = Instant::now();
    while start.elapsed() < window {
        if let Some(seen) = probe() {
            panic!("{what} happened after {:?}: {seen:?}", start.elapsed());
        }
        std::thread::sleep(POLL);
    }
}

/// [`never`] for async tests.
pub async fn never_async<S: Debug>(
    what: &str,
    window: Duration,
    mut probe: impl FnMut() -> Option<S>,
) {
    let start = Instant::now();
    while start.elapsed() < window {
        if let Some(seen) = probe() {
            panic!("{what} happened after {:?}: {seen:?}", start.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
}
