//! The snapshot file: a backup of the registry, as `quorate snapshot save` writes it and
//! `inspect` and `restore` read it.
//!
//! One JSON object: `format` (`quorate-snapshot`), `version`, `sha256` and `payload`. The
//! payload is a JSON document kept as a string, so that the checksum covers its exact bytes:
//! cluster id and name, the log index and term the registry reflects, when and on which node
//! it was taken, the quorate version, and the registry (join tokens as hashes of their
//! secrets, never the secrets). Pure: no IO here; reading tells a truncated, a damaged and a
//! foreign file apart.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use quorate_consensus::{Registry, RegistryAt};

/// What the `format` field of every snapshot file says.
pub const SNAPSHOT_FORMAT: &str = "quorate-snapshot";
/// The version of the snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The file as it is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// Always [`SNAPSHOT_FORMAT`].
    pub format: String,
    /// The format version.
    pub version: u32,
    /// SHA-256 of the payload's bytes, hex.
    pub sha256: String,
    /// The [`Payload`], as JSON text.
    pub payload: String,
}

/// What a snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Cluster id.
    pub cluster_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// The index of the last log entry the registry reflects.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// When it was taken (ms since the epoch, the serving node's clock).
    pub taken_ms: u64,
    /// The node that served it, hex.
    pub taken_on: String,
    /// The leader that answered the read, hex.
    pub leader: String,
    /// The quorate version that took it.
    pub quorate_version: String,
    /// The registry.
    pub registry: Registry,
}

/// Why a snapshot file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The file ends early.
    #[error("the snapshot is truncated ({0}); it was not written completely: use another copy")]
    Truncated(String),
    /// Not a quorate snapshot at all.
    #[error("not a quorate snapshot: {0}")]
    Foreign(String),
    /// A snapshot of a format this build does not read.
    #[error(
        "snapshot format version {found} is not {SNAPSHOT_VERSION}: written by another version of quorate"
    )]
    Version {
        /// The version found.
        found: u32,
    },
    /// The payload does not match its checksum.
    #[error(
        "the snapshot is corrupted: its payload's SHA-256 is {actual}, the file says {expected}"
    )]
    Checksum {
        /// What the file says.
        expected: String,
        /// What the payload hashes to.
        actual: String,
    },
    /// The checksum matches, but the payload cannot be read.
    #[error("the snapshot's payload is unreadable: {0}")]
    Payload(String),
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Payload {
    /// The payload of a linearizable read `at` of cluster `cluster_id`/`cluster_name`, taken on
    /// node `taken_on` at `taken_ms`.
    pub fn of(
        at: RegistryAt,
        cluster_id: &str,
        cluster_name: &str,
        taken_on: crate::NodeId,
        taken_ms: u64,
    ) -> Payload {
        Payload {
            cluster_id: cluster_id.to_string(),
            cluster_name: cluster_name.to_string(),
            index: at.index,
            term: at.term,
            taken_ms,
            taken_on: taken_on.to_string(),
            leader: at.leader.to_string(),
            quorate_version: env!("CARGO_PKG_VERSION").to_string(),
            registry: at.registry,
        }
    }

    /// The file that holds this payload, with its checksum.
    pub fn seal(&self) -> SnapshotFile {
        let payload = serde_json::to_string(self).unwrap_or_default();
        SnapshotFile {
            format: SNAPSHOT_FORMAT.to_string(),
            version: SNAPSHOT_VERSION,
            sha256: sha256_hex(payload.as_bytes()),
            payload,
        }
    }
}

impl SnapshotFile {
    /// The file's bytes (pretty JSON, ending in a newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = serde_json::to_vec_pretty(self).unwrap_or_default();
        b.push(b'\n');
        b
    }

    /// Reads a file's bytes: the format, the version and the checksum are checked.
    pub fn from_bytes(bytes: &[u8]) -> Result<SnapshotFile, SnapshotError> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            if e.is_eof() {
                SnapshotError::Truncated(e.to_string())
            } else {
                SnapshotError::Foreign(format!("not JSON ({e})"))
            }
        })?;
        if value.get("format").and_then(|f| f.as_str()) != Some(SNAPSHOT_FORMAT) {
            return Err(SnapshotError::Foreign(format!(
                "no \"format\": \"{SNAPSHOT_FORMAT}\" field"
            )));
        }
        let file: SnapshotFile =
            serde_json::from_value(value).map_err(|e| SnapshotError::Payload(e.to_string()))?;
        file.verify()?;
        Ok(file)
    }

    /// Checks the version and the checksum.
    pub fn verify(&self) -> Result<(), SnapshotError> {
        if self.format != SNAPSHOT_FORMAT {
            return Err(SnapshotError::Foreign(format!("format {:?}", self.format)));
        }
        if self.version != SNAPSHOT_VERSION {
            return Err(SnapshotError::Version {
                found: self.version,
            });
        }
        let actual = sha256_hex(self.payload.as_bytes());
        if !quorate_consensus::constant_time_eq(&actual, &self.sha256) {
            return Err(SnapshotError::Checksum {
                expected: self.sha256.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// The payload, once verified.
    pub fn payload(&self) -> Result<Payload, SnapshotError> {
        self.verify()?;
        serde_json::from_str(&self.payload).map_err(|e| SnapshotError::Payload(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_consensus::{ClusterInfo, Request};

    fn sample() -> SnapshotFile {
        let mut registry = Registry::default();
        registry
            .apply(&Request::InitCluster {
                cluster: ClusterInfo {
                    id: "00000000000000ab".into(),
                    name: "lab".into(),
                    created_ms: 1,
                },
            })
            .expect("init");
        let at = RegistryAt {
            registry,
            index: 42,
            term: 3,
            leader: crate::NodeId::new(7),
        };
        Payload::of(at, "00000000000000ab", "lab", crate::NodeId::new(7), 1000).seal()
    }

    /// A sealed file reads back to the same payload.
    #[test]
    fn a_snapshot_round_trips() {
        let file = sample();
        let back = SnapshotFile::from_bytes(&file.to_bytes()).expect("reads");
        let p = back.payload().expect("payload");
        assert_eq!((p.index, p.term, p.cluster_name.as_str()), (42, 3, "lab"));
        assert_eq!(p.registry.cluster.expect("cluster").id, "00000000000000ab");
    }

    /// A truncated, a corrupted, a foreign and a newer file are each refused with their own
    /// error.
    #[test]
    fn damage_is_named() {
        let bytes = sample().to_bytes();
        assert!(matches!(
            SnapshotFile::from_bytes(&bytes[..bytes.len() / 2]),
            Err(SnapshotError::Truncated(_))
        ));
        let text = String::from_utf8(bytes.clone()).expect("utf-8");
        let corrupted = text.replacen("\\\"index\\\":42", "\\\"index\\\":43", 1);
        assert_ne!(corrupted, text, "the payload holds the index");
        assert!(matches!(
            SnapshotFile::from_bytes(corrupted.as_bytes()),
            Err(SnapshotError::Checksum { .. })
        ));
        assert!(matches!(
            SnapshotFile::from_bytes(b"{\"hello\": 1}"),
            Err(SnapshotError::Foreign(_))
        ));
        assert!(matches!(
            SnapshotFile::from_bytes(b"\x7fELF\x02\x01"),
            Err(SnapshotError::Foreign(_))
        ));
        let newer = text.replacen("\"version\": 1", "\"version\": 2", 1);
        assert!(matches!(
            SnapshotFile::from_bytes(newer.as_bytes()),
            Err(SnapshotError::Version { found: 2 })
        ));
    }
}
