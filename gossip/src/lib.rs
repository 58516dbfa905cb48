//! quorate-gossip: liveness and metadata of every node, spread by gossip (chitchat).
//!
//! It reports facts (who is alive, what each node says about itself) and never adds or removes
//! a member: only the consensus layer decides membership. It knows nothing of mDNS or Raft.
