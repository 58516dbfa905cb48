//! The node's data directory: created on first start, locked while an agent runs, and marked
//! with a small metadata file that holds the format version and the node id.
//!
//! The directory is refused, with a message saying what to do, when it cannot be created or
//! written, when another agent holds it, when it belongs to a newer format, or when it is a
//! non-empty directory that was never a quorate data dir (pointing `--data-dir` at a home
//! directory by mistake must not scatter files in it).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::NodeId;
use crate::keys::{KeyKind, StoredKeys};

/// The data dir format this build writes and reads.
pub(crate) const FORMAT: u32 = 1;
/// Name of the metadata file inside the data dir.
pub(crate) const META_FILE: &str = "node.json";
/// Name of the lock file inside the data dir.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// The last gossip generation used.
const GENERATION_FILE: &str = "gossip-generation";
/// The gossip keyring: secret, readable by the agent's user only.
const KEYRING_FILE: &str = "gossip-keyring.json";
/// The node's admin credential, read by the CLI on the same machine.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Why a data dir was refused.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// The directory could not be created.
    #[error("cannot create data dir {path}: {source}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The directory exists but cannot be written.
    #[error(
        "data dir {path} is not writable: {source}; fix its permissions or choose another --data-dir"
    )]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Another agent holds the lock.
    #[error("data dir {path} is in use by another quorate agent{}; stop it or choose another --data-dir", holder.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The pid written by the holder, if readable.
        holder: Option<String>,
    },
    /// The metadata file says a newer format.
    #[error(
        "data dir {path} has format {found}, newer than this build reads ({FORMAT}); upgrade quorate or choose another --data-dir"
    )]
    NewerFormat {
        /// The directory.
        path: PathBuf,
        /// The format found.
        found: u32,
    },
    /// The metadata file is damaged.
    #[error(
        "data dir {path}: {META_FILE} is damaged ({message}); restore it from a backup or choose another --data-dir"
    )]
    Damaged {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A non-empty directory that was never a data dir.
    #[error(
        "{path} is not empty and is not a quorate data dir (no {META_FILE}); choose an empty or new directory"
    )]
    Foreign {
        /// The directory.
        path: PathBuf,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    format: u32,
    node_id: String,
}

/// An open, locked data dir. The lock is released when this is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    node_id: NodeId,
    created: bool,
    _lock: File,
}

impl DataDir {
    /// The default data dir of the running user: `~/.local/share/quorate` (or
    /// `$XDG_DATA_HOME/quorate`); `None` when the user has no home directory.
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "quorate").map(|d| d.data_dir().to_path_buf())
    }

    /// Opens (creating if needed) and locks the data dir at `path`, drawing and persisting a
    /// node id on first use.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        let path = path.to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(|source| DataDirError::Create {
                path: path.clone(),
                source,
            })?;
        if !path.is_dir() {
            return Err(DataDirError::Create {
                path: path.clone(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "it is not a directory"),
            });
        }

        let lock_path = path.join(LOCK_FILE);
        let meta_path = path.join(META_FILE);
        let fresh = !meta_path.exists();
        if fresh && !is_empty_enough(&path) {
            return Err(DataDirError::Foreign { path });
        }

        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|source| DataDirError::NotWritable {
                path: path.clone(),
                source,
            })?;
        if let Err(e) = lock.try_lock() {
            return Err(match e {
                fs::TryLockError::WouldBlock => DataDirError::Locked {
                    holder: fs::read_to_string(&lock_path)
                        .ok()
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty()),
                    path,
                },
                fs::TryLockError::Error(source) => DataDirError::NotWritable { path, source },
            });
        }
        lock.set_len(0)
            .and_then(|()| writeln!(lock, "{}", std::process::id()))
            .map_err(|source| DataDirError::NotWritable {
                path: path.clone(),
                source,
            })?;

        let node_id = if fresh {
            let id = NodeId::random();
            let meta = Meta {
                format: FORMAT,
                node_id: id.to_string(),
            };
            save(
                &meta_path,
                &serde_json::to_vec_pretty(&meta).unwrap_or_default(),
            )
            .map_err(|source| DataDirError::NotWritable {
                path: path.clone(),
                source,
            })?;
            id
        } else {
            read_meta(&path, &meta_path)?
        };
        Ok(DataDir {
            path,
            node_id,
            created: fresh,
            _lock: lock,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This node's id, drawn on first start.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// The gossip generation for this start: the start time in milliseconds, or one more than
    /// the last generation used if the clock went back. Persisted before it is returned, so it
    /// grows on every restart.
    pub fn next_generation(&self, now_ms: u64) -> io::Result<u64> {
        let path = self.path.join(GENERATION_FILE);
        let last = match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e),
        };
        let next = now_ms.max(last + 1);
        save(&path, next.to_string().as_bytes())?;
        Ok(next)
    }

    /// The keyring kept in the data dir, if there is one: cluster keys on a voter-role node,
    /// gossip keys on a storage node (see [`crate::keys`]). A file of an earlier version (a
    /// plain list) holds cluster keys.
    pub fn load_keyring(&self) -> Result<Option<StoredKeys>, DataDirError> {
        let path = self.path.join(KEYRING_FILE);
        let damaged = |e: serde_json::Error| DataDirError::Damaged {
            path: self.path.clone(),
            message: format!("{KEYRING_FILE}: {e}"),
        };
        match fs::read(&path) {
            Ok(bytes) => {
                if let Ok(list) = serde_json::from_slice::<Vec<String>>(&bytes) {
                    let keys = list
                        .iter()
                        .map(|k| quorate_gossip::Key::from_base64(k))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| DataDirError::Damaged {
                            path: self.path.clone(),
                            message: format!("{KEYRING_FILE}: {e}"),
                        })?;
                    return Ok(Some(StoredKeys {
                        kind: KeyKind::Cluster,
                        keys,
                    }));
                }
                serde_json::from_slice::<StoredKeys>(&bytes)
                    .map(Some)
                    .map_err(damaged)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DataDirError::NotWritable {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the kept keyring (mode 0600).
    pub fn save_keyring(&self, keys: &StoredKeys) -> io::Result<()> {
        save(
            &self.path.join(KEYRING_FILE),
            &serde_json::to_vec_pretty(keys).unwrap_or_default(),
        )
    }

    /// The admin credential of this node's API: made at the node's first start (32 random
    /// bytes, hex), kept in `admin-token` readable by the agent's user only.
    pub fn admin_token(&self) -> io::Result<String> {
        let path = self.path.join(ADMIN_TOKEN_FILE);
        match fs::read_to_string(&path) {
            Ok(t) if t.trim().len() == 64 => Ok(t.trim().to_string()),
            Ok(_) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is damaged; remove it and restart the agent to make a new one",
                    path.display()
                ),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let token = hex::encode(rand::random::<[u8; 32]>());
                save(&path, format!("{token}\n").as_bytes())?;
                Ok(token)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether this open created the node's identity (first start).
    pub fn created(&self) -> bool {
        self.created
    }
}

fn read_meta(dir: &Path, meta_path: &Path) -> Result<NodeId, DataDirError> {
    let damaged = |message: String| DataDirError::Damaged {
        path: dir.to_path_buf(),
        message,
    };
    let bytes = fs::read(meta_path).map_err(|e| match e.kind() {
        io::ErrorKind::PermissionDenied => DataDirError::NotWritable {
            path: dir.to_path_buf(),
            source: e,
        },
        _ => damaged(e.to_string()),
    })?;
    // Read the format on its own first, so that a newer layout is reported as newer, not damaged.
    #[derive(Deserialize)]
    struct FormatOnly {
        format: u32,
    }
    let format: FormatOnly = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    if format.format > FORMAT {
        return Err(DataDirError::NewerFormat {
            path: dir.to_path_buf(),
            found: format.format,
        });
    }
    let meta: Meta = serde_json::from_slice(&bytes).map_err(|e| damaged(e.to_string()))?;
    meta.node_id
        .parse()
        .map_err(|e: crate::ParseNodeIdError| damaged(e.to_string()))
}

/// A fresh data dir may hold nothing but our own lock file and a file system's `lost+found`.
fn is_empty_enough(dir: &Path) -> bool {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .all(|e| e.file_name() == LOCK_FILE || e.file_name() == "lost+found"),
        Err(_) => true, // unreadable: the lock file step reports the real error
    }
}

/// Writes a file (0600) whole and durably ([`quorate_base::durable`]).
pub(crate) fn save(path: &Path, data: &[u8]) -> io::Result<()> {
    quorate_base::durable::write(path, data, 0o600, quorate_base::durable::Existing::Replace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_open_creates_and_later_opens_keep_the_node_id() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/b/data");
        let first = DataDir::open(&dir).expect("create");
        assert!(first.created());
        let id = first.node_id();
        drop(first);
        let again = DataDir::open(&dir).expect("reopen");
        assert!(!again.created());
        assert_eq!(again.node_id(), id);
        let mode = fs::metadata(&dir).expect("meta").permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
    }

    #[test]
    fn a_second_open_while_locked_is_refused_with_the_holder_pid() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let _held = DataDir::open(tmp.path()).expect("first");
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(
            matches!(err, DataDirError::Locked { holder: Some(ref p), .. } if *p == std::process::id().to_string()),
            "{err:?}"
        );
    }

    #[test]
    fn a_newer_format_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let meta = tmp.path().join(META_FILE);
        let body = r#"{"format": 7, "node_id": "00000000000000aa", "whatever": true}"#;
        fs::write(&meta, body).expect("write");
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(
            matches!(err, DataDirError::NewerFormat { found: 7, .. }),
            "{err:?}"
        );
        assert_eq!(
            fs::read_to_string(&meta).expect("read"),
            body,
            "the newer file is untouched"
        );
    }

    #[test]
    fn damaged_metadata_is_refused_not_replaced() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join(META_FILE), "{ not json").expect("write");
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(matches!(err, DataDirError::Damaged { .. }), "{err:?}");
        fs::write(
            tmp.path().join(META_FILE),
            r#"{"format":1,"node_id":"0000000000000000"}"#,
        )
        .expect("write");
        assert!(matches!(
            DataDir::open(tmp.path()).unwrap_err(),
            DataDirError::Damaged { .. }
        ));
    }

    #[test]
    fn generations_grow_even_when_the_clock_goes_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = DataDir::open(tmp.path()).expect("open");
        assert_eq!(d.next_generation(1000).expect("gen"), 1000);
        assert_eq!(d.next_generation(2000).expect("gen"), 2000);
        assert_eq!(
            d.next_generation(1500).expect("gen"),
            2001,
            "clock went back"
        );
    }

    #[test]
    fn the_keyring_round_trips_and_is_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let d = DataDir::open(tmp.path()).expect("open");
        assert_eq!(d.load_keyring().expect("load"), None);
        let keys = StoredKeys::from_cluster_keys(
            vec![
                quorate_gossip::Key::from_bytes([1; 32]),
                quorate_gossip::Key::from_bytes([2; 32]),
            ],
            crate::Role::Storage,
        );
        d.save_keyring(&keys).expect("save");
        assert_eq!(d.load_keyring().expect("load"), Some(keys));
        // A keyring of an earlier version: a list of cluster keys.
        let k = quorate_gossip::Key::from_bytes([3; 32]);
        fs::write(
            tmp.path().join(KEYRING_FILE),
            serde_json::to_vec(&vec![k.to_base64()]).expect("json"),
        )
        .expect("write");
        assert_eq!(
            d.load_keyring().expect("load"),
            Some(StoredKeys {
                kind: KeyKind::Cluster,
                keys: vec![k]
            })
        );
        let mode = fs::metadata(tmp.path().join(KEYRING_FILE))
            .expect("meta")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
    }

    #[test]
    fn a_foreign_non_empty_directory_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::write(tmp.path().join("notes.txt"), "mine").expect("write");
        let err = DataDir::open(tmp.path()).unwrap_err();
        assert!(matches!(err, DataDirError::Foreign { .. }), "{err:?}");
        assert!(!tmp.path().join(META_FILE).exists());
    }

    #[test]
    fn a_path_below_a_file_cannot_be_created() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("file");
        fs::write(&file, "x").expect("write");
        let err = DataDir::open(&file.join("data")).unwrap_err();
        assert!(matches!(err, DataDirError::Create { .. }), "{err:?}");
        let err = DataDir::open(&file).unwrap_err();
        assert!(matches!(err, DataDirError::Create { .. }), "{err:?}");
    }
}
