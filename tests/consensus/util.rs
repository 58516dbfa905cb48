//! Consensus-only helpers: labels written and awaited through the agents' CLI.

use std::time::Duration;

use crate::support::agents::{labels_of, status};
use crate::support::lab::Lab;
use crate::support::wait;

/// `quorate label set KEY=VALUE` in host `i`: the exit status and what it printed.
pub(crate) fn set_label(lab: &Lab, i: usize, kv: &str) -> (bool, String) {
    let out = lab.quorate_admin(i, &["label", "set", kv]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text.trim().to_string())
}

/// Waits until host `i` shows `name` with label `key` = `value`.
pub(crate) fn wait_label(
    lab: &Lab,
    i: usize,
    name: &str,
    key: &str,
    value: &str,
    within: Duration,
) {
    wait::until(
        &format!("host {i} to see {name}'s label {key}={value}"),
        within,
        || {
            let st = status(lab, i)?;
            let labels = labels_of(&st, name);
            if labels[key] == value {
                Ok(())
            } else {
                Err(format!("{labels}"))
            }
        },
    );
}
