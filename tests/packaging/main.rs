//! Packaging and deployment in the LAN lab, one module per area: discovery by DNS (a real
//! dnsmasq serving A and SRV records) and the Kubernetes manifests run as their pods would run.

#[path = "../support/mod.rs"]
mod support;

mod dns;
mod kubernetes;
