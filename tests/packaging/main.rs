//! Packaging in the LAN lab, one module per area: `image.rs`, the container image built with
//! buildah and its root filesystem run in lab hosts, and the Compose file's services.

#[path = "../support/mod.rs"]
mod support;

mod image;
