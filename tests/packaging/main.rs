//! Packaging and deployment in the LAN lab, one module per area: `deb.rs`, the Debian package
//! (built, checked by lintian and systemd-analyze, installed into a Debian root); `image.rs`,
//! the container image built with buildah and its root filesystem run in lab hosts, and the
//! Compose file's services; discovery by DNS (a real dnsmasq serving A and SRV records); the
//! Kubernetes manifests run as their pods would run.

#[path = "../support/mod.rs"]
mod support;

mod deb;
mod dns;
mod image;
mod kubernetes;
