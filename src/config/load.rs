//! Loading the configuration from its four layers.
//!
//! Precedence, lowest first: built-in defaults < the config file (`--config FILE`) < `QUORATE_*`
//! environment variables < command-line flags. Every layer is checked on its own before the
//! layers are merged, so an unknown key or a value of the wrong type is reported with the place
//! it came from (the file's path, the variable's name or the flag). After the merge,
//! [`Config::validate`] checks what depends on several keys at once, and the error names the
//! layer that set the offending key.
//!
//! It reads only the file it is given: the environment and the flags come from the caller
//! ([`Sources`]). It does not define the settings themselves; those are [`Config`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use config::Source as _;

use super::settings::Config;

/// Prefix of the environment variables that set config keys (`QUORATE_GOSSIP_PORT`).
pub const ENV_PREFIX: &str = "QUORATE_";

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The config file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(String),
    /// This command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(p) => write!(f, "config file {}", p.display()),
            Origin::Env(v) => write!(f, "environment variable {v}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Why the configuration was refused. Each message names the key and where it came from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    #[error("cannot read {origin}: {message}")]
    Unreadable {
        /// The file.
        origin: Origin,
        /// The reader's or parser's words.
        message: String,
    },
    /// A key that no setting has.
    #[error("{origin}: unknown key `{key}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownKey {
        /// Where it was found.
        origin: Origin,
        /// The unknown key.
        key: String,
        /// The closest known key, if one is close.
        suggestion: Option<String>,
    },
    /// A value of the wrong type or breaking a rule.
    #[error("{origin}: invalid value for `{key}`: {message}")]
    InvalidValue {
        /// The layer that set the value.
        origin: Origin,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// A command-line flag that sets a config key.
#[derive(Clone, Debug)]
pub struct FlagValue {
    /// The flag as typed, e.g. `--gossip-port`.
    pub flag: &'static str,
    /// The config key it sets, e.g. `gossip_port`.
    pub key: &'static str,
    /// The value, already type-checked by the argument parser.
    pub value: config::Value,
}

/// The layers above the defaults, as the caller found them.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The config file, if one was named.
    pub file: Option<PathBuf>,
    /// Environment variables; only those starting with [`ENV_PREFIX`] are read.
    pub env: BTreeMap<String, String>,
    /// Flags given on the command line.
    pub flags: Vec<FlagValue>,
}

impl Sources {
    /// Collects the `QUORATE_*` variables out of an environment listing.
    pub fn env_from(vars: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
        vars.into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect()
    }
}

/// One layer, parsed on its own, with the keys it sets.
struct Layer {
    origin: Origin,
    config: config::Config,
    keys: BTreeSet<String>,
}

/// Builds the configuration from defaults and the given sources, and validates it.
pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
    let known = known_keys();
    let mut layers = Vec::new();

    if let Some(path) = &sources.file {
        let origin = Origin::File(path.clone());
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("toml") | None => config::FileFormat::Toml,
            Some(other) => {
                return Err(ConfigError::Unreadable {
                    origin,
                    message: format!(
                        "unsupported file type .{other}: write the config in TOML (.toml)"
                    ),
                });
            }
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        let built = config::Config::builder()
            .add_source(config::File::from_str(&text, format))
            .build()
            .map_err(|e| ConfigError::Unreadable {
                origin: origin.clone(),
                message: one_line(&e.to_string()),
            })?;
        layers.push(layer(origin, built, &known)?);
    }

    for (var, value) in &sources.env {
        let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        let origin = Origin::Env(var.clone());
        if rest.is_empty() {
            return Err(ConfigError::UnknownKey {
                origin,
                key: String::new(),
                suggestion: None,
            });
        }
        let key = env_key(var);
        let value = if LIST_KEYS.contains(&key.as_str()) {
            let items: Vec<String> = value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
                .collect();
            config::Value::from(items)
        } else {
            config::Value::from(value.as_str())
        };
        let built = config::Config::builder()
            .set_override(&key, value)
            .and_then(|b| b.build())
            .map_err(|e| ConfigError::InvalidValue {
                origin: origin.clone(),
                key: key.clone(),
                message: e.to_string(),
            })?;
        layers.push(layer(origin, built, &known)?);
    }

    for flag in &sources.flags {
        let built = config::Config::builder()
            .set_override(flag.key, flag.value.clone())
            .and_then(|b| b.build())
            .map_err(|e| ConfigError::InvalidValue {
                origin: Origin::Flag(flag.flag.to_string()),
                key: flag.key.to_string(),
                message: e.to_string(),
            })?;
        layers.push(layer(Origin::Flag(flag.flag.to_string()), built, &known)?);
    }

    let mut merged = config::Config::builder();
    for l in &layers {
        merged = merged.add_source(l.config.clone());
    }
    let origin_of = |key: &str| {
        layers
            .iter()
            .rev()
            .find(|l| l.keys.contains(key))
            .map(|l| l.origin.clone())
            .unwrap_or(Origin::Default)
    };
    let mut cfg: Config = merged
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError::InvalidValue {
            origin: Origin::Default,
            key: String::new(),
            message: e.to_string(),
        })?;

    if cfg.dev {
        // Dev mode keeps to loopback unless told otherwise (and validate refuses otherwise).
        if origin_of("bind") == Origin::Default {
            cfg.bind = IpAddr::V4(Ipv4Addr::LOCALHOST);
        }
        if origin_of("advertise") == Origin::Default {
            cfg.advertise = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
    }

    cfg.validate().map_err(|inv| {
        // Blame whichever involved key the highest layer set.
        let rank = |key: &str| layers.iter().rposition(|l| l.keys.contains(key));
        let key = match inv.other {
            Some(other) if rank(other) > rank(inv.key) => other,
            _ => inv.key,
        };
        ConfigError::InvalidValue {
            origin: origin_of(key),
            key: key.to_string(),
            message: inv.message,
        }
    })?;
    Ok(cfg)
}

/// Checks one layer alone: unknown keys first, then the types of the values it sets.
fn layer(
    origin: Origin,
    config: config::Config,
    known: &BTreeSet<String>,
) -> Result<Layer, ConfigError> {
    let map = config.collect().map_err(|e| ConfigError::Unreadable {
        origin: origin.clone(),
        message: e.to_string(),
    })?;
    let mut keys = BTreeSet::new();
    flatten_keys("", &map, &mut keys);
    if let Some(unknown) = keys.iter().find(|k| !known.contains(*k)) {
        let suggestion = known
            .iter()
            .map(|k| (strsim::jaro_winkler(unknown, k), k))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k.clone());
        return Err(ConfigError::UnknownKey {
            origin,
            key: unknown.clone(),
            suggestion,
        });
    }
    if let Err(e) = config.clone().try_deserialize::<Config>() {
        let (key, message) = match e {
            config::ConfigError::Type {
                key,
                unexpected,
                expected,
                ..
            } => (
                key.unwrap_or_default(),
                format!("expected {expected}, found {unexpected}"),
            ),
            other => {
                // Enum and address parse errors arrive as messages; the layer's single key (for
                // env and flags) or the first key names the culprit well enough.
                let key = if keys.len() == 1 {
                    keys.iter().next().cloned().unwrap_or_default()
                } else {
                    String::new()
                };
                (key, strip_key_suffix(&other.to_string()))
            }
        };
        let key = if key.is_empty() {
            keys.iter().next().cloned().unwrap_or_default()
        } else {
            key
        };
        let message = match CHOICES.iter().find(|(k, _)| *k == key) {
            Some((_, choices)) => match config.get_string(&key) {
                Ok(found) => format!("expected {choices}, found {found:?}"),
                Err(_) => format!("expected {choices}"),
            },
            None => message,
        };
        return Err(ConfigError::InvalidValue {
            origin,
            key,
            message,
        });
    }
    Ok(Layer {
        origin,
        config,
        keys,
    })
}

/// Parser errors draw the offending line over several lines; an operator's log wants one.
fn one_line(message: &str) -> String {
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let drawing = |l: &&str| {
        l.starts_with('|') || l.starts_with('^') || l.starts_with(|c: char| c.is_ascii_digit())
    };
    match lines.rfind(|l| !drawing(l)) {
        Some(last) => format!("{first}: {last}"),
        None => first.to_string(),
    }
}

/// Keys that hold lists; their environment variables are comma-separated.
const LIST_KEYS: &[&str] = &[
    "peers",
    "discovery.interfaces",
    "discovery.exclude_interfaces",
    "gossip.seeds",
];

/// Keys that hold maps: their inner keys are free-form.
pub(super) const MAP_KEYS: &[&str] = &["labels"];

/// Keys whose values are one of a few words, for a better message than the deserializer's.
const CHOICES: &[(&str, &str)] = &[
    ("role", "`voter` or `storage`"),
    ("log_format", "`text` or `json`"),
];

/// The config crate appends " for key `x`" and an origin to some messages; we say those ourselves.
fn strip_key_suffix(message: &str) -> String {
    match message.find(" for key `") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

fn flatten_keys(
    prefix: &str,
    map: &config::Map<String, config::Value>,
    out: &mut BTreeSet<String>,
) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match &v.kind {
            _ if MAP_KEYS.contains(&key.as_str()) => {
                out.insert(key);
            }
            config::ValueKind::Table(inner) if !inner.is_empty() => flatten_keys(&key, inner, out),
            _ => {
                out.insert(key);
            }
        }
    }
}

/// Every key [`Config`] accepts, as dotted paths.
pub(super) fn known_keys() -> BTreeSet<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeSet<String>) {
        if let serde_json::Value::Object(map) = v {
            for (k, inner) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                match inner {
                    serde_json::Value::Object(_) if !MAP_KEYS.contains(&key.as_str()) => {
                        walk(&key, inner, out)
                    }
                    _ => {
                        out.insert(key);
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    // Serializing plain data with derived impls cannot fail.
    if let Ok(v) = serde_json::to_value(Config::default()) {
        walk("", &v, &mut out);
    }
    out
}

/// The config key an environment variable sets: `QUORATE_GOSSIP_PORT` -> `gossip_port`.
pub(super) fn env_key(var: &str) -> String {
    var.strip_prefix(ENV_PREFIX)
        .unwrap_or(var)
        .to_lowercase()
        .replace("__", ".")
}

/// The environment variable that sets a config key: `gossip_port` -> `QUORATE_GOSSIP_PORT`.
pub fn env_var(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_uppercase().replace('.', "__"))
}
