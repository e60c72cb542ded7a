//! Which keys a ledger uses: a single node's or one cluster node's, every key
//! hash-tagged into the journal's Redis Cluster slot (`giftstream:{ledger}:…`, or
//! `giftstream:{ledger-<node>}:…` on a cluster node), so that the lease script and the
//! append touch one slot. The journal, the lease (`owner`), the head of the last append,
//! the recorded shard count, partition map layout, pinned engine limits and economy
//! versions: see [`Ledger`].

use crate::engine::Engine;

/// The journal of a single node. A cluster node's is `giftstream:{ledger-<node>}:journal`
/// ([`Ledger::journal_key`]): one slot per node, so its commit is one command on one
/// Redis Cluster master and the nodes' journals spread over the masters.
pub const JOURNAL_KEY: &str = "giftstream:{ledger}:journal";

/// Which ledger's keys a process uses: a single node's, or one cluster node's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    /// The cluster node's name (`cluster.node`); `None` for a single node.
    pub node: Option<String>,
    /// The cluster's partition map (which gifters are this node's).
    pub map: Option<crate::cluster::PartitionMap>,
}

impl Ledger {
    /// The ledger `config` runs: its cluster node, if it is one.
    pub fn of(config: &crate::config::Config) -> Ledger {
        Ledger {
            node: (!config.cluster.node.is_empty()).then(|| config.cluster.node.clone()),
            map: crate::cluster::PartitionMap::from_config(&config.cluster)
                .ok()
                .flatten(),
        }
    }

    pub fn journal_key(&self) -> String {
        match &self.node {
            None => JOURNAL_KEY.to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:journal"),
        }
    }

    /// The ledger lease, in the journal's slot.
    pub fn owner_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:owner".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:owner"),
        }
    }

    /// The ledger's shard count, recorded at each start, in the journal's slot.
    pub fn shards_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:shards".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:shards"),
        }
    }

    /// The `[engine]` values pinned with the ledger (a hash from config key, e.g.
    /// `engine.history_per_user`, to its value, and `seq`: the last sequence number when
    /// they were recorded), in the journal's slot. See `config::engine` "Pinned values".
    pub fn limits_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:limits".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:limits"),
        }
    }

    /// A cluster node's recorded partition map layout, in the journal's slot (`None` on a
    /// single node, which owns everything).
    pub fn map_key(&self) -> Option<String> {
        self.node
            .as_ref()
            .map(|n| format!("giftstream:{{ledger-{n}}}:map"))
    }

    /// Why this ledger's recovered `engine` must not be served by this node: it holds
    /// state of partitions the node does not own (`None` on a single node, or when all
    /// is its own). `dir` names where the snapshot came from.
    pub fn foreign_state(&self, engine: &Engine, dir: &std::path::Path) -> Option<String> {
        let (map, node) = (self.map.as_ref()?, self.node.as_ref()?);
        let foreign = engine.foreign(|key| map.owns(key));
        let example = foreign.example?;
        Some(format!(
            "the ledger loaded from {} for node {node} holds state of partitions this node \
             does not own ({} wallets, {} creators' payouts or settlements, {} stream goals; \
             e.g. {example}): it is another node's, or the partition map changed. Nothing was \
             served; give node {node} its own snapshot directory",
            dir.display(),
            foreign.wallets,
            foreign.creators,
            foreign.goals
        ))
    }

    /// The ledger's economy versions: a hash from digest (16 hex digits) to the
    /// [`EconomyDoc`](crate::economy::EconomyDoc) bytes, in the journal's slot. Written
    /// before the change is applied, so a journaled change always finds its document;
    /// content-addressed, so a write is never overwritten with other content. Field
    /// `base`: the first version's digest; `file`: the digest of the economy.toml the
    /// last start saw.
    pub fn economies_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:economies".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:economies"),
        }
    }

    /// The id of the journal's last append, written by the same script as the append (so
    /// a failover that loses an append loses its head too), in the journal's slot.
    pub fn head_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:head".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:head"),
        }
    }

    /// The change stream (`persist::downstream`), in the journal's slot: one per node.
    pub fn changes_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:changes".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:changes"),
        }
    }

    /// The last sequence number the durable history wrote, in the journal's slot.
    pub fn history_seq_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:history:seq".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:history:seq"),
        }
    }

    /// The durable history's time marks (the first seq of each UTC hour, scored by
    /// stamp), in the journal's slot.
    pub fn history_marks_key(&self) -> String {
        match &self.node {
            None => "giftstream:{ledger}:history:marks".to_owned(),
            Some(n) => format!("giftstream:{{ledger-{n}}}:history:marks"),
        }
    }
}
