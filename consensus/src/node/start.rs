//! How a member starts: [`Consensus::bootstrap`] makes a new cluster (its CA, its identity,
//! a Raft group of this one voter), [`Consensus::open`] resumes a node whose directory holds a
//! cluster; both end in `start`, which opens storage, binds QUIC and spawns the member's tasks.
//! Joining is [`super::joiner`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{BasicNode, Raft};
use tracing::{info, warn};

use super::ca::follow_ca;
use super::campaign::{Campaign, campaign_loop};
use super::join::Admission;
use super::membership::autopilot_loop;
use super::state::{Counters, Inner, Locks, Me, PilotInput};
use super::trust::CaSet;
use super::upkeep::{
    count_leader_changes, follow_quiet_targets, follow_removals, keep_record, release_election,
    renew_certificate,
};
use super::{Consensus, ConsensusConfig, StartError};
use crate::files::{CLUSTER_FORMAT, ClusterFile, Files};
use crate::network::RaftNet;
use crate::proto::NodeInfo;
use crate::quic::QuicNet;
use crate::registry::{Request, Role, Settings};
use crate::tls::{self, CertSpec, DenyList, Identity};
use crate::{LogStore, StateMachineStore, open_db};

impl Consensus {
    /// The cluster a directory belongs to, if any.
    pub fn stored(dir: &std::path::Path) -> Result<Option<ClusterFile>, StartError> {
        Ok(Files::open(dir)?.cluster()?)
    }

    pub(super) fn refuse_if_member(files: &Files) -> Result<(), StartError> {
        if let Some(c) = files.cluster()? {
            return Err(StartError::AlreadyMember {
                cluster_id: c.cluster_id,
                cluster_name: c.cluster_name,
            });
        }
        if files.raft_db().exists() {
            return Err(StartError::Damaged(format!(
                "{} holds Raft state but no cluster.json (a bootstrap or join that did not finish); remove the directory to start afresh",
                files.dir().display()
            )));
        }
        Ok(())
    }

    /// Makes a new cluster named `cluster_name` with this node as its one voter, and records
    /// the cluster, the settings and the node in the registry.
    pub async fn bootstrap(
        config: ConsensusConfig,
        info: NodeInfo,
        cluster_name: &str,
        settings: Settings,
    ) -> Result<Consensus, StartError> {
        let files = Files::open(&config.dir)?;
        Self::refuse_if_member(&files)?;
        if info.role != Role::Voter {
            return Err(StartError::Bootstrap(
                "a storage node cannot bootstrap a cluster: it never votes".into(),
            ));
        }
        let cluster_id = format!("{:016x}", rand::random::<u64>() | 1);
        let (ca_pem, ca_key) = tls::new_ca(&cluster_id)?;
        let spec = CertSpec {
            role: Role::Voter,
            lifetime: config.cert_lifetime,
        };
        let (cert_pem, key_pem) = tls::issue_node_cert(&ca_pem, &ca_key, config.node_id, &spec)?;
        let identity = Identity {
            ca_pem: ca_pem.clone(),
            cert_pem,
            key_pem,
        };
        files.save_identity(&identity, Some(&ca_key))?;
        files.save_cluster(&ClusterFile {
            format: CLUSTER_FORMAT,
            cluster_id: cluster_id.clone(),
            cluster_name: cluster_name.to_string(),
            ca_fingerprint: tls::ca_fingerprint(&ca_pem)?,
            node_id: config.node_id,
            role: Role::Voter,
            bootstrapped: true,
        })?;
        let node = Self::start(config.clone(), info, false).await?;
        let members = BTreeMap::from([(
            config.node_id,
            BasicNode {
                addr: config.advertise.to_string(),
            },
        )]);
        if let Err(e) = node.inner.raft.initialize(members).await {
            node.shutdown().await;
            return Err(StartError::Bootstrap(e.to_string()));
        }
        let leader = node
            .inner
            .raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(|m| m.current_leader == Some(m.id), "leadership")
            .await;
        if let Err(e) = leader {
            node.shutdown().await;
            return Err(StartError::Bootstrap(format!(
                "this node did not become the leader of its new cluster: {e}"
            )));
        }
        let recorded = async {
            node.inner.ensure_cluster().await?;
            node.inner.write_ok(Request::SetSettings { settings }).await
        };
        if let Err(e) = recorded.await {
            node.shutdown().await;
            return Err(StartError::Bootstrap(e.to_string()));
        }
        if let Err(e) = node.inner.ensure_self_record().await {
            node.shutdown().await;
            return Err(StartError::Bootstrap(e.to_string()));
        }
        info!(cluster_id = %cluster_id, cluster = cluster_name, "cluster bootstrapped");
        Ok(node)
    }

    /// Resumes a node whose directory holds a cluster.
    pub async fn open(config: ConsensusConfig, info: NodeInfo) -> Result<Consensus, StartError> {
        Self::start(config, info, true).await
    }

    /// Starts Raft on the node's files. With `hold`, the node does not campaign for
    /// [`HOLD_ELECTION`]: a voter that restarts while the cluster has a leader would otherwise
    /// campaign before the leader's heartbeats reach it, disrupt the group with a higher term,
    /// be refused for its shorter log, and carry openraft's "seen a greater log" penalty (two
    /// election timeouts more) into the next failover.
    pub(super) async fn start(
        config: ConsensusConfig,
        info: NodeInfo,
        hold: bool,
    ) -> Result<Consensus, StartError> {
        let files = Files::open(&config.dir)?;
        let Some(cluster) = files.cluster()? else {
            return Err(StartError::Damaged(format!(
                "{} holds no cluster; bootstrap or join one",
                files.dir().display()
            )));
        };
        if cluster.node_id != config.node_id {
            return Err(StartError::Damaged(format!(
                "{} belongs to node {}, not {}",
                files.dir().display(),
                cluster.node_id,
                config.node_id
            )));
        }
        let identity = files.identity()?;
        tls::check_node_cert(&identity.cert_pem, &identity.key_pem, config.node_id)?;
        let key = tls::own_key_fingerprint(&identity.key_pem)?;
        // Only voter-role nodes hold CA keys: one that now runs as a storage node drops them.
        let ca_keys = match info.role {
            Role::Voter => files.ca_keys()?,
            Role::Storage => {
                if files.delete_ca_key()? {
                    warn!("this node runs as a storage node now: its CA key was deleted");
                }
                Vec::new()
            }
        };
        let raft_config = match &config.raft {
            Some(c) => c.clone(),
            None => crate::raft_config(&cluster.cluster_name)
                .map_err(|e| StartError::Raft(e.to_string()))?,
        };
        let db_path = files.raft_db();
        let db = open_db(&db_path)
            .map_err(|e| StartError::Storage(format!("{}: {e}", db_path.display())))?;
        let sm = StateMachineStore::open_with_events(db.clone(), config.events.clone())
            .map_err(|e| StartError::Storage(e.to_string()))?;
        // Removed identities are refused from the first handshake on, and only the CAs the
        // registry names are trusted.
        let deny = DenyList::default();
        let ca = {
            let data = sm.data();
            let applied = data
                .read()
                .map_err(|_| StartError::Storage("the state machine is unavailable".into()))?;
            deny.set(applied.registry.removed.clone());
            CaSet::load(
                &identity.ca_pem,
                &ca_keys,
                &cluster.ca_fingerprint,
                &applied.registry,
            )?
        };
        let identity = Identity {
            ca_pem: ca.trusted(),
            ..identity
        };
        let net = QuicNet::bind(config.listen, &identity, &deny)?;
        let log = LogStore::new(db);
        let raft_net = RaftNet::new(net.clone());
        let quiet = raft_net.quiet();
        let answers = raft_net.guard();
        // openraft's own election timer is off: this node campaigns after a pre-vote
        // ([`super::campaign`]), on openraft's timings.
        let campaign = Campaign::new(!hold, &raft_config);
        let mut raft_config = raft_config;
        raft_config.enable_elect = false;
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            raft_net,
            log.clone(),
            sm.clone(),
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let inner = Arc::new(Inner {
            id: config.node_id,
            raft,
            sm,
            log,
            net: net.clone(),
            me: Me {
                cluster,
                ca: tokio::sync::watch::Sender::new(ca),
                ca_change: Mutex::new(()),
                info,
                advertise: config.advertise,
                key,
                cert_lifetime: config.cert_lifetime,
                dir: config.dir.clone(),
            },
            write_timeout: config.write_timeout,
            campaign,
            locks: Locks::default(),
            quorum_ok: Mutex::new(None),
            pilot: PilotInput::default(),
            admission: Admission::new(config.admission.clone()),
            deny,
            answers,
            secrets: Default::default(),
            counters: Counters::default(),
        });
        let serve = net.serve(inner.clone());
        let campaigner = tokio::spawn(campaign_loop(inner.clone()));
        let pilot = tokio::spawn(autopilot_loop(inner.clone(), config.autopilot_every));
        let gate = tokio::spawn(release_election(inner.clone()));
        let keeper = tokio::spawn(keep_record(inner.clone()));
        let removals = tokio::spawn(follow_removals(inner.clone()));
        let renewal = tokio::spawn(renew_certificate(inner.clone()));
        let cas = tokio::spawn(follow_ca(inner.clone()));
        let leaders = tokio::spawn(count_leader_changes(inner.clone()));
        let quiet = tokio::spawn(follow_quiet_targets(inner.clone(), quiet));
        Ok(Consensus {
            inner,
            tasks: vec![
                serve, campaigner, pilot, keeper, gate, removals, renewal, cas, leaders, quiet,
            ],
        })
    }
}
