//! The wall clock, read in one place.
//!
//! `now_ms` is the only reading of "now in milliseconds since the epoch" in this crate: the
//! gossip generation and token expiry take it as an argument, so the logic that uses it stays
//! testable without a clock. It does not keep monotonic time (`std::time::Instant` does that).

/// Milliseconds since the Unix epoch by the system clock; 0 if the clock is before the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
