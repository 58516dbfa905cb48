//! The Debian package, as an operator gets it: built by `packaging/deb/build` (the command
//! README gives, here for the debug build the tests already made, so nothing is compiled
//! twice), checked by `lintian` and `systemd-analyze`, and installed with apt into a throwaway
//! Debian root made by debootstrap, where its files, its user, its conffile and the installed
//! binary are checked.
//!
//! Why debootstrap and not `dpkg --root` on an empty directory: dpkg runs the maintainer
//! scripts chrooted into the root, so `postinst` needs a shell, `getent` and `adduser` there;
//! a minimal bookworm root (about 300 MB, a few minutes) is the smallest real one. It is made
//! once per test run, by the one test that needs it, and removed when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The `.deb`, built once per test run by the build script.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let bin = Path::new(env!("CARGO_BIN_EXE_quorate"));
        // <target dir>/debug/quorate: the build script packages that profile's binary.
        let target = bin
            .parent()
            .and_then(Path::parent)
            .expect("the binary lies in <target>/debug");
        let out = run(Command::new(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/deb/build"),
        )
        .args(["--profile", "dev", "--no-build", "--fast"])
        .env("CARGO_TARGET_DIR", target));
        let path = PathBuf::from(stdout(&out).lines().last().unwrap_or_default().trim());
        assert!(
            path.is_file()
                && path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("quorate_0.1.0-1_")),
            "the build script names the .deb it made: {path:?}"
        );
        path
    })
}

/// Runs `cmd`, panicking with its output unless it succeeds.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?} (CI installs it): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The files an operator relies on, as paths inside the package or an installed root.
const FILES: &[&str] = &[
    "usr/bin/quorate",
    "etc/quorate/quorate.toml",
    "usr/lib/systemd/system/quorate.service",
    "usr/lib/systemd/system/quorate@.service",
    "usr/share/man/man1/quorate.1.gz",
    "usr/share/man/man1/quorate-agent.1.gz",
    "usr/share/bash-completion/completions/quorate",
    "usr/share/zsh/vendor-completions/_quorate",
    "usr/share/fish/vendor_completions.d/quorate.fish",
    "usr/share/doc/quorate/copyright",
    "usr/share/doc/quorate/changelog.Debian.gz",
];

/// The package holds the binary, config, units, manual pages and completions, depends on
/// adduser (its postinst makes the user), marks the config as a conffile, and lintian finds
/// no error or warning in it (the one warning it cannot fix is overridden with a reason).
#[test]
fn the_package_is_complete_and_lintian_clean() {
    let deb = deb();
    let listing = stdout(&run(Command::new("dpkg-deb").arg("--contents").arg(deb)));
    for f in FILES {
        assert!(
            listing.contains(&format!("./{f}\n")),
            "the package lacks {f}:\n{listing}"
        );
    }
    let field = |name: &str| {
        stdout(&run(Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .arg(name)))
        .trim()
        .to_string()
    };
    assert_eq!(field("Package"), "quorate");
    assert_eq!(field("Version"), "0.1.0-1");
    let depends = field("Depends");
    assert!(
        depends.contains("adduser") && depends.contains("libc6"),
        "Depends: {depends}"
    );
    let control = tempfile::tempdir().expect("tempdir");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb)
        .arg(control.path()));
    let conffiles = std::fs::read_to_string(control.path().join("conffiles")).expect("conffiles");
    assert_eq!(conffiles.trim(), "/etc/quorate/quorate.toml");
    let postinst = std::fs::read_to_string(control.path().join("postinst")).expect("postinst");
    assert!(
        postinst.contains("adduser --system --group --home /var/lib/quorate"),
        "{postinst}"
    );

    let out = run(Command::new("lintian")
        .args(["--fail-on", "error,warning", "--display-level", ">=warning"])
        .arg(deb));
    let report = stdout(&out);
    assert!(
        !report
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian: {report}"
    );
}

/// Both units, as the package installs them, pass `systemd-analyze verify` without a word
/// (the binary and the manual page they name exist in the root), and the hardening keeps the
/// service's exposure, as `systemd-analyze security` scores it, at 2.0 or below ("OK").
#[test]
fn the_units_verify_and_are_hardened() {
    let root = tempfile::Builder::new()
        .prefix("quorate-units-")
        .tempdir()
        .expect("tempdir");
    run(Command::new("dpkg-deb")
        .arg("--extract")
        .arg(deb())
        .arg(root.path()));
    // The units refer to systemd's own targets (network-online, multi-user): take the host's.
    let units = root.path().join("usr/lib/systemd/system");
    for entry in std::fs::read_dir("/usr/lib/systemd/system").expect("the host's systemd units") {
        let entry = entry.expect("entry");
        let to = units.join(entry.file_name());
        if entry.file_type().expect("type").is_file() && !to.exists() {
            std::fs::copy(entry.path(), &to).expect("copy a unit");
        }
    }
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .args(["quorate.service", "quorate@a.service"])
        .env("MANPATH", root.path().join("usr/share/man"))
        .current_dir(root.path()));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.trim().is_empty(), "systemd-analyze verify: {said}");
    for unit in ["quorate.service", "quorate@a.service"] {
        run(Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--threshold=20"])
            .arg(format!("--root={}", root.path().display()))
            .arg(unit));
    }
}

/// A Debian root that is deleted when dropped, after unmounting anything left mounted inside
/// it (debootstrap mounts /proc and /sys while it works), and never while a mount remains.
struct DebianRoot {
    dir: Option<tempfile::TempDir>,
}

impl DebianRoot {
    /// `debootstrap --variant=minbase --include=adduser bookworm`.
    fn bootstrap() -> DebianRoot {
        let dir = tempfile::Builder::new()
            .prefix("quorate-debroot-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let root = DebianRoot { dir: Some(dir) };
        run(Command::new("debootstrap")
            .args(["--variant=minbase", "--include=adduser", "bookworm"])
            .arg(root.path())
            .arg("http://deb.debian.org/debian"));
        root
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("root").path()
    }

    /// Runs a command chrooted in the root (as `user`, if given).
    fn chroot(&self, user: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new("chroot");
        if let Some(u) = user {
            cmd.arg(format!("--userspec={u}"));
        }
        run(cmd
            .arg(self.path())
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    }

    fn mounts_inside(&self) -> Vec<String> {
        let root = self.path().to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&format!("{root}/")))
            .collect()
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        for m in self.mounts_inside().into_iter().rev() {
            let _ = Command::new("umount").arg("--lazy").arg(&m).status();
        }
        let left = self.mounts_inside();
        if left.is_empty() {
            drop(self.dir.take());
        } else if let Some(dir) = self.dir.take() {
            // Never delete through a mount: keep the directory and say so.
            let kept = dir.keep();
            eprintln!(
                "kept {} because these stay mounted: {left:?}",
                kept.display()
            );
        }
    }
}

/// Installed with apt into a minimal bookworm root, as README's "Install" does: the files are
/// in place, the `quorate` system user and group exist with the data dir as home, dpkg lists
/// the config as a conffile, the installed binary runs and accepts the packaged config as the
/// `quorate` user (with no network); installing again keeps one user (postinst is
/// idempotent); removing keeps the conffile, purging takes it.
#[test]
fn the_package_installs_into_a_debian_root() {
    let deb = deb();
    let root = DebianRoot::bootstrap();
    let name = deb
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    std::fs::copy(deb, root.path().join("tmp").join(&name)).expect("copy the .deb");
    let inside = format!("/tmp/{name}");
    root.chroot(None, &["apt-get", "install", "--yes", &inside]);

    for f in FILES {
        assert!(root.path().join(f).is_file(), "{f} is not installed");
    }
    let status = stdout(&root.chroot(
        None,
        &["dpkg-query", "--show", "--showformat=${Status}", "quorate"],
    ));
    assert_eq!(status, "install ok installed");
    let conffiles = stdout(&root.chroot(
        None,
        &[
            "dpkg-query",
            "--show",
            "--showformat=${Conffiles}",
            "quorate",
        ],
    ));
    assert!(
        conffiles.contains("/etc/quorate/quorate.toml "),
        "dpkg's conffiles: {conffiles:?}"
    );

    let user = |root: &DebianRoot| stdout(&root.chroot(None, &["getent", "passwd", "quorate"]));
    let entry = user(&root);
    let fields: Vec<&str> = entry.trim().split(':').collect();
    assert_eq!(fields.len(), 7, "{entry}");
    let uid: u32 = fields[2].parse().expect("uid");
    assert!(uid < 1000, "a system user: {entry}");
    assert_eq!(fields[5], "/var/lib/quorate", "home: {entry}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "shell: {entry}");
    let group = stdout(&root.chroot(None, &["getent", "group", "quorate"]));
    assert_eq!(group.split(':').nth(2), Some(fields[3]), "group: {group}");

    let version = stdout(&root.chroot(Some("quorate:quorate"), &["quorate", "--version"]));
    assert_eq!(version.trim(), "quorate 0.1.0");
    let check = stdout(&root.chroot(
        Some("quorate:quorate"),
        &[
            "quorate",
            "agent",
            "--config",
            "/etc/quorate/quorate.toml",
            "--check-config",
        ],
    ));
    let effective: serde_json::Value = serde_json::from_str(&check).expect("the settings as JSON");
    assert_eq!(effective["data_dir"], "/var/lib/quorate", "{check}");

    root.chroot(None, &["dpkg", "--install", &inside]);
    assert_eq!(user(&root), entry, "a second install keeps the one user");

    root.chroot(None, &["dpkg", "--remove", "quorate"]);
    assert!(!root.path().join("usr/bin/quorate").exists());
    assert!(root.path().join("etc/quorate/quorate.toml").is_file());
    root.chroot(None, &["dpkg", "--purge", "quorate"]);
    assert!(!root.path().join("etc/quorate/quorate.toml").exists());
}
