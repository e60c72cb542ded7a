//! `[cluster]` of `giftstream.toml`: the nodes and the partitions each owns, validated.
//! [`crate::cluster::PartitionMap`] is built from a validated table.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The most partitions a map may have.
pub const PARTITIONS_MAX: u32 = 65_536;

/// Bounds of `cluster.settle_interval_ms`.
pub const SETTLE_INTERVAL_MS_MIN: u64 = 50;
pub const SETTLE_INTERVAL_MS_MAX: u64 = 60_000;

/// `[cluster]` in `giftstream.toml`; no `nodes` = a single node owning everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name in `nodes` (`GIFTSTREAM_CLUSTER_NODE`); "" on a client.
    pub node: String,
    /// The partition count; fixed for the life of the ledger (keys hash into it).
    pub partitions: u32,
    /// Every node and the partitions it owns.
    pub nodes: Vec<NodeConfig>,
    /// How often a node reports to each creator's owner the diamonds it credited that
    /// creator since its last report (settlements), in milliseconds.
    pub settle_interval_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node: String::new(),
            partitions: 0,
            nodes: Vec::new(),
            settle_interval_ms: 1000,
        }
    }
}

/// One node of the map.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// A name unique in the map: `[A-Za-z0-9_-]{1,32}`. It names the node's Redis keys.
    pub name: String,
    /// Where clients reach its binary protocol, `host:port`.
    pub tcp_addr: String,
    /// Where clients reach its HTTP API, `host:port`.
    pub http_addr: String,
    /// The partitions it owns: ranges and numbers, e.g. `"0-7"` or `"0-3,8,10-11"`.
    pub partitions: String,
}

/// A validated `[cluster]` table's owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Partition -> index in `nodes`.
    pub owner: Vec<u16>,
    /// This node's index, when the table names a node.
    pub local: Option<usize>,
}

impl ClusterConfig {
    /// Validates the table: which node owns each partition and which node this is, or
    /// `None` for a single node (no `nodes`). Errors name the key.
    pub fn assignment(&self) -> Result<Option<Assignment>, ConfigError> {
        let config = self;
        if config.nodes.is_empty() {
            if !config.node.is_empty() {
                return Err(ConfigError::new(
                    "cluster.node",
                    "is set but cluster.nodes is empty",
                ));
            }
            return Ok(None);
        }
        if !(SETTLE_INTERVAL_MS_MIN..=SETTLE_INTERVAL_MS_MAX).contains(&config.settle_interval_ms) {
            return Err(ConfigError::new(
                "cluster.settle_interval_ms",
                format!(
                    "must be in {SETTLE_INTERVAL_MS_MIN}..={SETTLE_INTERVAL_MS_MAX}, got {}",
                    config.settle_interval_ms
                ),
            ));
        }
        let n = config.partitions;
        if n == 0 || n > PARTITIONS_MAX {
            return Err(ConfigError::new(
                "cluster.partitions",
                format!("must be in 1..={PARTITIONS_MAX}, got {n}"),
            ));
        }
        if config.nodes.len() > usize::from(u16::MAX) {
            return Err(ConfigError::new("cluster.nodes", "too many nodes"));
        }
        let mut owner: Vec<Option<u16>> = vec![None; n as usize];
        for (i, node) in config.nodes.iter().enumerate() {
            let key = format!("cluster.nodes[{i}]");
            let name_ok = (1..=32).contains(&node.name.len())
                && node
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("{:?} must be 1 to 32 of [A-Za-z0-9_-]", node.name),
                ));
            }
            if config.nodes[..i].iter().any(|o| o.name == node.name) {
                return Err(ConfigError::new(
                    format!("{key}.name"),
                    format!("{:?} appears twice", node.name),
                ));
            }
            for (field, addr) in [("tcp_addr", &node.tcp_addr), ("http_addr", &node.http_addr)] {
                if addr
                    .rsplit_once(':')
                    .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
                {
                    return Err(ConfigError::new(
                        format!("{key}.{field}"),
                        format!("{addr:?} is not host:port"),
                    ));
                }
            }
            for p in parse_partitions(&node.partitions, n)
                .map_err(|m| ConfigError::new(format!("{key}.partitions"), m))?
            {
                if let Some(other) = owner[p as usize] {
                    return Err(ConfigError::new(
                        format!("{key}.partitions"),
                        format!(
                            "partition {p} is also owned by node {:?}",
                            config.nodes[usize::from(other)].name
                        ),
                    ));
                }
                owner[p as usize] = Some(i as u16);
            }
        }
        if let Some(p) = owner.iter().position(Option::is_none) {
            return Err(ConfigError::new(
                "cluster.nodes",
                format!("partition {p} has no owner (every partition in 0..{n} needs one)"),
            ));
        }
        let local = if config.node.is_empty() {
            None
        } else {
            Some(
                config
                    .nodes
                    .iter()
                    .position(|node| node.name == config.node)
                    .ok_or_else(|| {
                        ConfigError::new(
                            "cluster.node",
                            format!("{:?} is not in cluster.nodes", config.node),
                        )
                    })?,
            )
        };
        Ok(Some(Assignment {
            owner: owner.into_iter().map(|o| o.unwrap_or_default()).collect(),
            local,
        }))
    }
}

/// Parses `"0-3,8,10-11"` into partition numbers below `n`.
fn parse_partitions(spec: &str, n: u32) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{part:?} in {spec:?} is not a partition or a range a-b"))
        };
        let (lo, hi) = (num(lo)?, num(hi)?);
        if lo > hi || hi >= n {
            return Err(format!(
                "{part:?}: partitions run from 0 to {} and a range a-b needs a <= b",
                n - 1
            ));
        }
        out.extend(lo..=hi);
    }
    Ok(out)
}
