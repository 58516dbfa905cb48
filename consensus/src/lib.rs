//! quorate-consensus: the management plane's Raft group (openraft over mutual-TLS QUIC) and
//! the replicated membership registry it decides.
//!
//! Voters decide; storage-plane nodes replicate the registry as learners and never vote. It
//! knows nothing of mDNS or gossip.
