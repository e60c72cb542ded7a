//! Scale-out (SPEC §6): the partition map that says which node owns which senders.
//!
//! Every event has a *routing key*: the sender (`user`) of a recharge, a gift or an
//! account setting; the creator of a payout or a stream goal. The key's partition is
//! [`partition_of`] — a fixed 64-bit mix of the id modulo the partition count, stable
//! across versions because clients compute it too. Each partition is owned by exactly one
//! node; a node applies only events whose partition it owns and refuses a batch holding
//! any other with `WRONG_PARTITION`, naming the owner (as Redis answers `MOVED`). Nothing
//! of a refused batch is applied.
//!
//! The same `[cluster]` table configures the nodes (with `node` naming which one this
//! is, usually through `GIFTSTREAM_CLUSTER_NODE`) and the routing clients
//! ([`crate::client::ClusterClient`], `giftload --cluster`).

use crate::config::ConfigError;
pub use crate::config::cluster::{
    ClusterConfig, NodeConfig, PARTITIONS_MAX, SETTLE_INTERVAL_MS_MAX, SETTLE_INTERVAL_MS_MIN,
};
use crate::engine::Event;

/// The partition of a routing key: a splitmix64 finalizer of the id, modulo `partitions`.
pub fn partition_of(key: u64, partitions: u32) -> u32 {
    let mut z = key.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z % u64::from(partitions)) as u32
}

/// The routing key of an event: the sender, or the creator for payouts and goals.
pub fn routing_key(event: &Event) -> u64 {
    match event {
        Event::Recharge(r) => r.user.0,
        Event::Gift(g) => g.sender.0,
        Event::Account(a) => a.user.0,
        Event::Purchase(p) => p.user.0,
        Event::VideoGift(v) => v.sender.0,
        Event::RechargeReversal(r) => r.user.0,
        Event::GiftReversal(r) => r.sender.0,
        Event::Payout(p) => p.creator.0,
        Event::StreamGoal(g) => g.creator.0,
        Event::Settlement(s) => s.creator.0,
        // A node's own (never sent between nodes).
        Event::Economy(_) => 0,
        // Battles are refused on a cluster node (`BATTLES_UNAVAILABLE`): routed by their
        // first stream so that a batch holding one is checked like any other.
        Event::Battle(b) => b.streams().first().map_or(0, |s| s.0),
        Event::BattleClose(c) => c.battle.0,
    }
}

/// An event this node does not own.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "event {index}: partition {partition} is owned by node {node} (tcp {tcp_addr}, http {http_addr}); nothing was applied"
)]
pub struct WrongPartition {
    /// The first such event's index in the batch.
    pub index: usize,
    pub partition: u32,
    pub node: String,
    pub tcp_addr: String,
    pub http_addr: String,
}

/// A validated map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMap {
    partitions: u32,
    nodes: Vec<NodeConfig>,
    /// Partition -> index in `nodes`.
    owner: Vec<u16>,
    /// This node's index, when the map configures a node.
    local: Option<usize>,
}

impl PartitionMap {
    /// The map of `config`, or `None` for a single node (no `nodes`). Errors name the key.
    pub fn from_config(config: &ClusterConfig) -> Result<Option<PartitionMap>, ConfigError> {
        Ok(config.assignment()?.map(|a| PartitionMap {
            partitions: config.partitions,
            nodes: config.nodes.clone(),
            owner: a.owner,
            local: a.local,
        }))
    }

    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    pub fn nodes(&self) -> &[NodeConfig] {
        &self.nodes
    }

    /// This node (a node's map), or `None` (a client's map).
    pub fn local(&self) -> Option<&NodeConfig> {
        self.local.map(|i| &self.nodes[i])
    }

    /// This node's index in [`PartitionMap::nodes`] (a node's map).
    pub fn local_index(&self) -> Option<usize> {
        self.local
    }

    /// What a node's ledger depends on, in a canonical form: the partition count and
    /// each node's name and partitions, in map order (settlement reports name their
    /// source node by its index). Addresses are left out: they may change (a node's
    /// ledger moved to another machine). Equal maps give equal layouts, however their
    /// ranges are written ("0-3,4-7" and "0-7").
    pub fn layout(&self) -> String {
        let mut out = format!("{} partitions:", self.partitions);
        for (i, node) in self.nodes.iter().enumerate() {
            let mut ranges: Vec<String> = Vec::new();
            let mut p = 0;
            while p < self.owner.len() {
                if usize::from(self.owner[p]) != i {
                    p += 1;
                    continue;
                }
                let start = p;
                while p < self.owner.len() && usize::from(self.owner[p]) == i {
                    p += 1;
                }
                ranges.push(match p - 1 - start {
                    0 => start.to_string(),
                    _ => format!("{start}-{}", p - 1),
                });
            }
            out.push_str(&format!(" {} {};", node.name, ranges.join(",")));
        }
        out.pop();
        out
    }

    /// The index in [`PartitionMap::nodes`] of the node that owns routing key `key`.
    pub fn owner_of(&self, key: u64) -> usize {
        usize::from(self.owner[partition_of(key, self.partitions) as usize])
    }

    /// The index of the node named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// The index in [`PartitionMap::nodes`] of the node that owns `event`.
    pub fn owner_index(&self, event: &Event) -> usize {
        let p = partition_of(routing_key(event), self.partitions);
        usize::from(self.owner[p as usize])
    }

    /// How many partitions this node owns (all of them on a client's map).
    pub fn owned(&self) -> usize {
        match self.local {
            None => self.owner.len(),
            Some(l) => self.owner.iter().filter(|&&o| usize::from(o) == l).count(),
        }
    }

    /// Whether this node owns `key`'s partition (true on a client's map).
    pub fn owns(&self, key: u64) -> bool {
        self.local.is_none_or(|l| {
            usize::from(self.owner[partition_of(key, self.partitions) as usize]) == l
        })
    }

    /// `Ok` when this node owns every event of the batch; else the first one it does not.
    pub fn check(&self, events: &[Event]) -> Result<(), WrongPartition> {
        events.iter().enumerate().try_for_each(|(index, e)| {
            self.check_key(routing_key(e))
                .map_err(|w| WrongPartition { index, ..w })
        })
    }

    /// `Ok` when this node owns `key` (always on a client's map); else its owner (with
    /// index 0).
    pub fn check_key(&self, key: u64) -> Result<(), WrongPartition> {
        let Some(local) = self.local else {
            return Ok(());
        };
        let partition = partition_of(key, self.partitions);
        let owner = usize::from(self.owner[partition as usize]);
        if owner == local {
            return Ok(());
        }
        let node = &self.nodes[owner];
        Err(WrongPartition {
            index: 0,
            partition,
            node: node.name.clone(),
            tcp_addr: node.tcp_addr.clone(),
            http_addr: node.http_addr.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, partitions: &str) -> NodeConfig {
        NodeConfig {
            name: name.into(),
            tcp_addr: "127.0.0.1:7070".into(),
            http_addr: "127.0.0.1:8080".into(),
            partitions: partitions.into(),
        }
    }

    fn config(node_name: &str, nodes: Vec<NodeConfig>) -> ClusterConfig {
        ClusterConfig {
            node: node_name.into(),
            partitions: 8,
            nodes,
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn partition_of_is_stable_and_spreads() {
        // Clients compute it too: these values are a contract.
        assert_eq!(partition_of(0, 16), partition_of(0, 16));
        let expected: Vec<u32> = (0..8).map(|k| partition_of(k, 1024)).collect();
        assert_eq!(expected, vec![431, 193, 718, 1005, 714, 858, 0, 471]);
        let mut counts = [0u32; 8];
        for k in 0..80_000 {
            counts[partition_of(k, 8) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_map_needs_every_partition_owned_once() {
        let ok = config("a", vec![node("a", "0-3"), node("b", "4-7")]);
        let map = PartitionMap::from_config(&ok).unwrap().unwrap();
        assert_eq!(map.local().unwrap().name, "a");
        let owned = (0..1000u64).filter(|&k| map.owns(k)).count();
        assert!((400..600).contains(&owned), "{owned}");

        let err = |c: ClusterConfig| PartitionMap::from_config(&c).unwrap_err().key;
        assert_eq!(
            err(config("a", vec![node("a", "0-3"), node("b", "4-6")])),
            "cluster.nodes"
        );
        assert_eq!(
            err(config("a", vec![node("a", "0-4"), node("b", "4-7")])),
            "cluster.nodes[1].partitions"
        );
        assert_eq!(
            err(config("a", vec![node("a", "0-3"), node("b", "4-8")])),
            "cluster.nodes[1].partitions"
        );
        assert_eq!(
            err(config("a", vec![node("a", "0-3"), node("a", "4-7")])),
            "cluster.nodes[1].name"
        );
        assert_eq!(
            err(config("c", vec![node("a", "0-3"), node("b", "4-7")])),
            "cluster.node"
        );
        assert_eq!(err(config("a", vec![])), "cluster.node");
        assert!(
            PartitionMap::from_config(&config("", vec![]))
                .unwrap()
                .is_none()
        );
        let mut bad_addr = node("b", "4-7");
        bad_addr.tcp_addr = "nowhere".into();
        assert_eq!(
            err(config("a", vec![node("a", "0-3"), bad_addr])),
            "cluster.nodes[1].tcp_addr"
        );
        for ms in [SETTLE_INTERVAL_MS_MIN - 1, SETTLE_INTERVAL_MS_MAX + 1] {
            let mut c = ok.clone();
            c.settle_interval_ms = ms;
            assert_eq!(err(c), "cluster.settle_interval_ms");
        }
    }

    #[test]
    fn a_layout_names_partitions_in_map_order_and_leaves_out_addresses() {
        let map = |nodes| {
            PartitionMap::from_config(&config("a", nodes))
                .unwrap()
                .unwrap()
                .layout()
        };
        let plain = map(vec![node("a", "0-2,7"), node("b", "3-6")]);
        assert_eq!(plain, "8 partitions: a 0-2,7; b 3-6");
        let mut moved = node("b", "3,4-6");
        moved.tcp_addr = "10.0.0.9:7070".into();
        assert_eq!(map(vec![node("a", "7,0-2"), moved]), plain);
        assert_ne!(map(vec![node("b", "3-6"), node("a", "0-2,7")]), plain);
        assert_ne!(map(vec![node("a", "0-3,7"), node("b", "4-6")]), plain);
    }

    #[test]
    fn check_names_the_owner_of_the_first_foreign_event() {
        use crate::engine::{Event, EventId, Recharge, UserId};
        let map = PartitionMap::from_config(&config("a", vec![node("a", "0-3"), node("b", "4-7")]))
            .unwrap()
            .unwrap();
        let recharge = |user: u64| {
            Event::Recharge(Recharge {
                id: EventId(u128::from(user)),
                user: UserId(user),
                coins: 1,
                package: None.into(),
                price: rust_decimal::Decimal::ONE,
                currency: "USD".parse().unwrap(),
                channel: crate::engine::Channel::Web,
                paid_ms: 0,
            })
        };
        let mine = (0..).find(|&u| map.owns(u)).unwrap();
        let theirs = (0..).find(|&u| !map.owns(u)).unwrap();
        assert_eq!(map.check(&[recharge(mine)]), Ok(()));
        let e = map.check(&[recharge(mine), recharge(theirs)]).unwrap_err();
        assert_eq!((e.index, e.node.as_str()), (1, "b"));
        assert!(e.to_string().contains("owned by node b"), "{e}");
    }
}
