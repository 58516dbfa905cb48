//! quorate-discovery: finds quorate peers on a LAN with mDNS/DNS-SD (`_cluster._tcp.local.`).
//!
//! It advertises this node and browses for others, and turns what it hears into hints: who
//! might be out there, at which addresses, claiming which cluster and role. It decides nothing:
//! the node uses these hints as gossip seeds and join candidates. It knows nothing of gossip or
//! Raft.
