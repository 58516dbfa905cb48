//! Files written whole and durably: a crash leaves the old contents or the new ones, never a
//! part, and a write that returned survives a power loss (the data and the directory entry
//! are synced). The one way the workspace writes a file it must not lose.

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`write`] does with a file that is there already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it.
    Replace,
    /// Leave it, and fail with [`io::ErrorKind::AlreadyExists`].
    Keep,
}

fn directory_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `data` to `path` with permissions `mode`: into a new temporary file beside it,
/// synced, then renamed (or, with [`Existing::Keep`], linked) into place, then the directory
/// synced. The temporary file is removed when anything fails.
pub fn write(path: &Path, data: &[u8], mode: u32, existing: Existing) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a path without a file name"))?
        .to_string_lossy();
    let tmp = directory_of(path).join(format!(
        ".{name}.{}.{:08x}.tmp",
        std::process::id(),
        rand::random::<u32>()
    ));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode asked for, whatever the umask took away.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        match existing {
            Existing::Replace => fs::rename(&tmp, path),
            Existing::Keep => fs::hard_link(&tmp, path),
        }
    })();
    // Left behind by a failure, or the second name of a linked file.
    if written.is_err() || existing == Existing::Keep {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_directory(path)
}

/// Renames `from` (a complete file, already synced) to `to` and syncs the directory, so that
/// a crash leaves either name, never neither.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_directory(to)
}

fn sync_directory(path: &Path) -> io::Result<()> {
    fs::File::open(directory_of(path))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "quorate-durable-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn a_write_replaces_whole_with_the_mode_and_leaves_no_temporary_file() {
        let dir = scratch();
        let f = dir.join("a.json");
        write(&f, b"one", 0o600, Existing::Replace).expect("write");
        write(&f, b"two", 0o644, Existing::Replace).expect("write again");
        assert_eq!(fs::read(&f).expect("read"), b"two");
        let mode = fs::metadata(&f).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        let names: Vec<_> = fs::read_dir(&dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["a.json"]);
        fs::remove_dir_all(&dir).expect("clean");
    }

    #[test]
    fn keep_refuses_an_existing_file_and_changes_nothing() {
        let dir = scratch();
        let f = dir.join("snap");
        write(&f, b"first", 0o600, Existing::Keep).expect("a new file");
        let e = write(&f, b"second", 0o600, Existing::Keep).expect_err("there already");
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&f).expect("read"), b"first");
        assert_eq!(
            fs::read_dir(&dir).expect("list").count(),
            1,
            "no temporary file left"
        );
        let missing = write(&dir.join("no/such/dir/f"), b"x", 0o600, Existing::Replace);
        assert!(missing.is_err());
        fs::remove_dir_all(&dir).expect("clean");
    }
}
