//! How quorate is packaged for operators, one module per kind of package: `deb`, the Debian
//! package (built, checked by lintian and systemd-analyze, installed into a Debian root).

#[path = "../support/mod.rs"]
mod support;

mod deb;
