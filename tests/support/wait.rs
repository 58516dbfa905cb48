//! Waiting on conditions with a deadline, never on the clock alone.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// Polls `probe` until it returns `Ok`, or panics once `within` has passed, printing what the
/// last probe saw. `probe` returns `Err(seen)` to keep waiting.
pub fn until<T, S: Debug>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Result<T, S>,
) -> T {
    let start = Instant::now();
    loop {
        match probe() {
            Ok(v) => return v,
            Err(seen) if start.elapsed() >= within => {
                panic!("timed out after {within:?} waiting for {what}; last seen: {seen:?}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(25)),
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
        std::thread::sleep(Duration::from_millis(50));
    }
}
