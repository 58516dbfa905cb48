//! A member's files in its consensus directory: which cluster it belongs to, its TLS identity,
//! and (voters only) the CA key. Written atomically (temporary file, fsync, rename, fsync of
//! the directory); secrets are readable by the owner only.
//!
//! ```text
//! cluster.json   cluster id and name, CA fingerprint, this node's id and role
//! ca.pem         the CA certificates this node trusts: the current one, then, during a CA
//!                rotation, the next one
//! ca.key         the current CA's private key (voters only; 0600)
//! ca-next.key    the next CA's private key, during a CA rotation (voters only; 0600)
//! node.pem       this node's certificate
//! node.key       this node's private key (0600)
//! raft.redb      the Raft log, vote and snapshots
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::registry::Role;
use crate::tls::Identity;

/// Format of `cluster.json`.
pub(crate) const CLUSTER_FORMAT: u32 = 1;

/// What `cluster.json` holds: the proof that this data dir belongs to a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFile {
    /// Format version.
    pub format: u32,
    /// Cluster id.
    pub cluster_id: String,
    /// Cluster name.
    pub cluster_name: String,
    /// SHA-256 of the CA certificate, hex.
    pub ca_fingerprint: String,
    /// This node's id.
    pub node_id: quorate_base::NodeId,
    /// The role this node joined with.
    pub role: Role,
    /// Whether this node bootstrapped the cluster.
    pub bootstrapped: bool,
}

/// Why the consensus directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A file is damaged or of another format.
    #[error("{path}: {message}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> FilesError + '_ {
    move |source| FilesError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The files of one node.
#[derive(Clone, Debug)]
pub struct Files {
    dir: PathBuf,
}

impl Files {
    /// The files under `dir` (created, 0700, if missing).
    pub fn open(dir: &Path) -> Result<Files, FilesError> {
        fs::create_dir_all(dir).map_err(io_error(dir))?;
        set_mode(dir, 0o700)?;
        Ok(Files {
            dir: dir.to_path_buf(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The Raft database file.
    pub fn raft_db(&self) -> PathBuf {
        self.dir.join("raft.redb")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Result<Option<ClusterFile>, FilesError> {
        let path = self.path("cluster.json");
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path)(e)),
        };
        let file: ClusterFile =
            serde_json::from_slice(&text).map_err(|e| FilesError::Damaged {
                path: path.clone(),
                message: format!("unreadable ({e}); restore it from a backup or remove the node's consensus directory to join afresh"),
            })?;
        if file.format != CLUSTER_FORMAT {
            return Err(FilesError::Damaged {
                path,
                message: format!(
                    "format {} is not {CLUSTER_FORMAT}: written by another version of quorate",
                    file.format
                ),
            });
        }
        Ok(Some(file))
    }

    /// Records membership of a cluster. Written last, after the identity files.
    pub fn save_cluster(&self, file: &ClusterFile) -> Result<(), FilesError> {
        let bytes = serde_json::to_vec_pretty(file).map_err(|e| FilesError::Damaged {
            path: self.path("cluster.json"),
            message: e.to_string(),
        })?;
        save(&self.path("cluster.json"), &bytes, 0o644)
    }

    /// Saves this node's identity (and the CA key, for a voter).
    pub fn save_identity(
        &self,
        identity: &Identity,
        ca_key_pem: Option<&str>,
    ) -> Result<(), FilesError> {
        save(&self.path("ca.pem"), identity.ca_pem.as_bytes(), 0o644)?;
        save(&self.path("node.pem"), identity.cert_pem.as_bytes(), 0o644)?;
        save(&self.path("node.key"), identity.key_pem.as_bytes(), 0o600)?;
        if let Some(k) = ca_key_pem {
            save(&self.path("ca.key"), k.as_bytes(), 0o600)?;
        }
        Ok(())
    }

    fn read(&self, name: &str) -> Result<String, FilesError> {
        let path = self.path(name);
        fs::read_to_string(&path).map_err(io_error(&path))
    }

    /// Loads this node's identity.
    pub fn identity(&self) -> Result<Identity, FilesError> {
        Ok(Identity {
            ca_pem: self.read("ca.pem")?,
            cert_pem: self.read("node.pem")?,
            key_pem: self.read("node.key")?,
        })
    }

    /// Saves a renewed certificate (the key stays).
    pub fn save_cert(&self, cert_pem: &str) -> Result<(), FilesError> {
        save(&self.path("node.pem"), cert_pem.as_bytes(), 0o644)
    }

    /// The key this node asks to join with, made (0600) on the first attempt and kept across
    /// attempts and restarts until it is admitted: a join answered but lost on the way is asked
    /// again with the same key, which the leader recognises as the same identity.
    pub fn join_key(&self) -> Result<String, FilesError> {
        match self.read("join.key") {
            Ok(k) => Ok(k),
            Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let key = crate::tls::new_node_key().map_err(|e| FilesError::Damaged {
                    path: self.path("join.key"),
                    message: e.to_string(),
                })?;
                save(&self.path("join.key"), key.as_bytes(), 0o600)?;
                Ok(key)
            }
            Err(e) => Err(e),
        }
    }

    /// Forgets the join key once it became the node key.
    pub fn drop_join_key(&self) {
        let _ = fs::remove_file(self.path("join.key"));
    }

    /// Deletes the CA keys (a node that is no longer a voter-role member must not hold them);
    /// whether there was one.
    pub fn delete_ca_key(&self) -> Result<bool, FilesError> {
        let mut had = false;
        for name in ["ca.key", "ca-next.key"] {
            had |= self.remove(name)?;
        }
        Ok(had)
    }

    fn remove(&self, name: &str) -> Result<bool, FilesError> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error(&path)(e)),
        }
    }

    fn read_if_there(&self, name: &str) -> Result<Option<String>, FilesError> {
        match self.read(name) {
            Ok(k) => Ok(Some(k)),
            Err(FilesError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Loads the current CA's key, if this node holds it.
    pub fn ca_key(&self) -> Result<Option<String>, FilesError> {
        self.read_if_there("ca.key")
    }

    /// Loads the CA keys this node holds: the current CA's, then the next one's.
    pub fn ca_keys(&self) -> Result<Vec<String>, FilesError> {
        Ok([self.ca_key()?, self.read_if_there("ca-next.key")?]
            .into_iter()
            .flatten()
            .collect())
    }

    /// Saves the CAs this node trusts (`trusted`, PEM) and the keys it holds of them: the
    /// current CA's and the next one's (a key that is `None` is deleted).
    pub fn save_ca(
        &self,
        trusted: &str,
        current_key: Option<&str>,
        next_key: Option<&str>,
    ) -> Result<(), FilesError> {
        for (name, key) in [("ca.key", current_key), ("ca-next.key", next_key)] {
            match key {
                Some(k) => save(&self.path(name), k.as_bytes(), 0o600)?,
                None => {
                    self.remove(name)?;
                }
            }
        }
        save(&self.path("ca.pem"), trusted.as_bytes(), 0o644)
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), FilesError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_error(path))
}

/// Writes `data` to `path` whole and durably ([`quorate_base::durable`]).
fn save(path: &Path, data: &[u8], mode: u32) -> Result<(), FilesError> {
    quorate_base::durable::write(path, data, mode, quorate_base::durable::Existing::Replace)
        .map_err(io_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn cluster_and_identity_round_trip_with_private_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Files::open(&dir.path().join("consensus")).expect("open");
        assert_eq!(files.cluster().expect("read"), None);
        let id = Identity {
            ca_pem: "ca".into(),
            cert_pem: "cert".into(),
            key_pem: "key".into(),
        };
        files.save_identity(&id, Some("cakey")).expect("save");
        let file = ClusterFile {
            format: CLUSTER_FORMAT,
            cluster_id: "00000000000000ab".into(),
            cluster_name: "c".into(),
            ca_fingerprint: "f".repeat(64),
            node_id: quorate_base::NodeId::new(7),
            role: Role::Voter,
            bootstrapped: true,
        };
        files.save_cluster(&file).expect("save cluster");
        assert_eq!(files.cluster().expect("read"), Some(file));
        assert_eq!(files.identity().expect("identity").key_pem, "key");
        assert_eq!(files.ca_key().expect("ca key").as_deref(), Some("cakey"));
        for secret in ["node.key", "ca.key"] {
            let mode = fs::metadata(files.dir().join(secret))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{secret} is private");
        }
    }

    #[test]
    fn a_damaged_or_newer_cluster_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Files::open(dir.path()).expect("open");
        fs::write(dir.path().join("cluster.json"), b"{not json").expect("write");
        assert!(matches!(files.cluster(), Err(FilesError::Damaged { .. })));
        fs::write(
            dir.path().join("cluster.json"),
            br#"{"format":9,"cluster_id":"a","cluster_name":"c","ca_fingerprint":"f","node_id":1,"role":"voter","bootstrapped":false}"#,
        )
        .expect("write");
        let e = files.cluster().expect_err("newer format");
        assert!(e.to_string().contains("another version"), "{e}");
    }
}
