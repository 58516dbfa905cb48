//! HTTP/1.0 to an agent's API (or another server) inside a lab host, as JSON or as text, and
//! the figures benchmarks report.

use serde_json::Value;

use crate::support::lab::Lab;

/// One request to the agent on this host's loopback (call it inside a host, see
/// [`Lab::in_host`]), with `admin` as the bearer credential when given: the status code and
/// the JSON body (`Null` when the body is not JSON). `None` when no agent answers.
pub fn request(method: &str, path: &str, body: &str, admin: Option<&str>) -> Option<(u16, Value)> {
    request_at("127.0.0.1:7948", method, path, body, admin)
}

/// As [`request`], to any HTTP server at `addr` (another system's, in the same host).
pub fn request_at(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    admin: Option<&str>,
) -> Option<(u16, Value)> {
    request_within(addr, method, path, body, admin, None)
}

/// As [`request_at`], giving up (`None`) when the answer takes longer than `within`.
pub fn request_within(
    addr: &str,
    method: &str,
    path: &str,
    body: &str,
    admin: Option<&str>,
    within: Option<std::time::Duration>,
) -> Option<(u16, Value)> {
    let auth = admin
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!("{auth}Content-Type: application/json\r\n");
    let answer = exchange(addr, method, path, &head, body, within)?;
    let value = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    Some((answer.code, value))
}

/// An HTTP answer as text.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub code: u16,
    /// The header lines, as sent.
    pub headers: Vec<String>,
    /// The body.
    pub body: String,
}

impl Answer {
    /// The value of header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (k, v) = h.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` at `addr` with the extra header lines `headers` (`Name: value`), the answer as
/// text (call it inside a host). `None` when no server answers.
pub fn get_text_at(addr: &str, path: &str, headers: &[&str]) -> Option<Answer> {
    let head: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    exchange(addr, "GET", path, &head, "", None)
}

/// One HTTP/1.0 exchange: `head` holds extra header lines, each ending in CRLF.
fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    head: &str,
    body: &str,
    within: Option<std::time::Duration>,
) -> Option<Answer> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(within).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{head}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (top, body) = text.split_once("\r\n\r\n")?;
    let mut lines = top.split("\r\n");
    let code = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    Some(Answer {
        code,
        headers: lines.map(str::to_string).collect(),
        body: body.to_string(),
    })
}

/// `GET path` on host `i`'s agent: the JSON body of a 200 answer.
pub fn get(lab: &Lab, i: usize, path: &str) -> Option<Value> {
    let path = path.to_string();
    lab.in_host(i, move || request("GET", &path, "", None))
        .filter(|(code, _)| *code == 200)
        .map(|(_, v)| v)
}

/// The admin credential of host `i`'s agent (its data dir is `host_dir(i)/data`).
pub fn admin(lab: &Lab, i: usize) -> String {
    std::fs::read_to_string(lab.host_dir(i).join("data/admin-token"))
        .expect("the agent's admin credential")
        .trim()
        .to_string()
}

/// Samples and the percentiles benchmarks report.
pub struct Stats(pub Vec<f64>);

impl Stats {
    /// The `p` quantile (0 to 1), nearest rank.
    pub fn pct(&self, p: f64) -> f64 {
        let mut s = self.0.clone();
        s.sort_by(f64::total_cmp);
        s[((s.len() as f64 - 1.0) * p).round() as usize]
    }

    /// A markdown row: label, count, median, p99, min, max, with `digits` decimals.
    pub fn row(&self, label: &str, digits: usize) -> String {
        format!(
            "| {label} | {} | {:.d$} | {:.d$} | {:.d$} | {:.d$} |",
            self.0.len(),
            self.pct(0.5),
            self.pct(0.99),
            self.pct(0.0),
            self.pct(1.0),
            d = digits
        )
    }
}
