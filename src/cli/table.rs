//! Presentation for people and scripts: aligned columns ([`columns`]) and the output formats
//! of `quorate discover` ([`Format`], [`render`]).
//!
//! Pure string building: it neither finds peers nor asks the agent, and prints nothing itself.

use std::fmt::Write as _;

use quorate::discover::dial_addr;
use quorate_discovery::Peer;

/// Output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON array.
    Json,
    /// One `ip:port` per line.
    Lines,
    /// One line of comma-separated `ip:port`, for `--peers`.
    Quiet,
}

/// Renders peers in a format. JSON is always one valid array (`[]` when empty).
pub(crate) fn render(peers: &[Peer], format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(peers).unwrap_or_else(|_| "[]".into()) + "\n",
        Format::Lines => peers
            .iter()
            .filter_map(dial_addr)
            .map(|a| a + "\n")
            .collect(),
        Format::Quiet => {
            let line = peers
                .iter()
                .filter_map(dial_addr)
                .collect::<Vec<_>>()
                .join(",");
            if line.is_empty() {
                String::new()
            } else {
                line + "\n"
            }
        }
        Format::Table => table(peers),
    }
}

fn table(peers: &[Peer]) -> String {
    let header = [
        "ID", "NAME", "CLUSTER", "ROLE", "STATE", "ADDRESS", "VERSION",
    ];
    let rows: Vec<Vec<String>> = peers
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                p.name.clone(),
                p.cluster.clone(),
                p.role.to_string(),
                p.state.to_string(),
                dial_addr(p).unwrap_or_default(),
                p.version.clone(),
            ]
        })
        .collect();
    columns(&header, &rows)
}

/// Aligned columns under a header, two spaces apart, no trailing spaces.
pub(crate) fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(&widths) {
            let _ = write!(l, "{c:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_discovery::{AdvertState, Role};

    fn peer(id: &str, name: &str, cluster: &str, role: Role, addrs: &[&str]) -> Peer {
        Peer {
            id: id.parse().expect("a node id"),
            name: name.into(),
            cluster: cluster.into(),
            role,
            state: AdvertState::Forming,
            addrs: addrs.iter().map(|a| a.parse().expect("ip")).collect(),
            port: 7947,
            gossip_port: 7946,
            api_port: 7948,
            version: "0.1.0".into(),
            ca: None,
            txt: [("zone".to_string(), "a".to_string())].into(),
        }
    }

    #[test]
    fn formats_agree_on_addresses() {
        let peers = vec![
            peer(
                "0000000000000001",
                "n1",
                "c",
                Role::Voter,
                &["10.0.0.1", "fe80::1"],
            ),
            peer("0000000000000002", "n2", "c", Role::Voter, &["fe80::2"]),
        ];
        assert_eq!(
            render(&peers, Format::Quiet),
            "10.0.0.1:7947,[fe80::2]:7947\n"
        );
        assert_eq!(
            render(&peers, Format::Lines),
            "10.0.0.1:7947\n[fe80::2]:7947\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&render(&peers, Format::Json)).expect("json");
        assert_eq!(json[0]["addrs"], serde_json::json!(["10.0.0.1", "fe80::1"]));
        assert_eq!(json[1]["role"], "voter");
        let table = render(&peers, Format::Table);
        assert!(
            table.starts_with("ID") && table.contains("10.0.0.1:7947"),
            "{table}"
        );
    }

    #[test]
    fn nothing_found_is_an_empty_array_and_empty_lines() {
        assert_eq!(render(&[], Format::Json).trim(), "[]");
        assert_eq!(render(&[], Format::Quiet), "");
        assert_eq!(render(&[], Format::Lines), "");
    }
}
