//! A hash map split into [`PARTS`] parts by an independent mix of the key, so that it
//! grows in small steps.
//!
//! A hash map doubles all at once: rehashing a few hundred thousand entries holds the
//! shard's lock for milliseconds, and with uniform senders every shard's per-pair map
//! doubles at about the same moment, so one batch (which touches every shard) waited
//! ~1.3 s at 36 s of a 100k events/s run (BENCHMARKS.md "Map growth stalls"). Split in
//! 256, each doubling moves 1/256 of the entries, and the parts cross their thresholds at
//! slightly different times.
//!
//! Serializes exactly like one map (a length, then the entries), so snapshots are the
//! same format either way.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;

use rustc_hash::FxHashMap;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::event::{CreatorId, StreamId, UserId, VideoId};

/// Parts per map.
pub(crate) const PARTS: usize = 256;

/// Coins one sender gave one creator (or in one stream) in total: a `u64` in memory, so
/// a per-pair map entry is 24 bytes instead of 32 (these maps grow with every new
/// sender-creator pair: they are most of the engine's memory under uniform load). It
/// saturates at `u64::MAX` coins (unreachable in practice; the journaled totals of a
/// gift were already capped there). Encoded as the `u128` it used to be, so snapshots
/// keep their format; a larger value in a snapshot is refused, not truncated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PairCoins(pub u64);

impl PairCoins {
    pub(crate) fn get(self) -> u128 {
        u128::from(self.0)
    }
}

impl Serialize for PairCoins {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u128(self.get())
    }
}

impl<'de> Deserialize<'de> for PairCoins {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let coins = u128::deserialize(deserializer)?;
        u64::try_from(coins).map(PairCoins).map_err(|_| {
            serde::de::Error::custom(format!("a gifter's coin total {coins} exceeds 64 bits"))
        })
    }
}

/// A key that picks its part, independently of the bits the map's own hasher uses.
pub(crate) trait PartKey {
    fn part(&self) -> usize;
}

/// A multiply-xor mix of both ids of a pair key, top 8 bits.
fn mix(a: u64, b: u64) -> usize {
    let mixed = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    (mixed.wrapping_mul(0xD6E8_FEB8_6659_FD93) >> 56) as usize
}

impl PartKey for (CreatorId, UserId) {
    fn part(&self) -> usize {
        mix(self.0.0, self.1.0)
    }
}

impl PartKey for (StreamId, UserId) {
    fn part(&self) -> usize {
        mix(self.0.0, self.1.0)
    }
}

impl PartKey for (VideoId, UserId) {
    fn part(&self) -> usize {
        mix(self.0.0, self.1.0)
    }
}

#[cfg(test)]
impl PartKey for (u64, u64) {
    fn part(&self) -> usize {
        mix(self.0, self.1)
    }
}

#[derive(Clone)]
pub(crate) struct SplitMap<K, V> {
    parts: Box<[FxHashMap<K, V>]>,
}

impl<K, V> Default for SplitMap<K, V> {
    fn default() -> Self {
        SplitMap {
            parts: (0..PARTS).map(|_| FxHashMap::default()).collect(),
        }
    }
}

impl<K: Hash + Eq + PartKey, V> SplitMap<K, V> {
    pub(crate) fn entry(&mut self, key: K) -> std::collections::hash_map::Entry<'_, K, V> {
        self.parts[key.part()].entry(key)
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.parts[key.part()].get(key)
    }

    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.parts[key.part()].insert(key, value)
    }

    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        self.parts[key.part()].remove(key)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.parts[key.part()].get_mut(key)
    }
}

/// Equal when they hold the same entries (a key's part depends on the key alone).
impl<K: Hash + Eq, V: PartialEq> PartialEq for SplitMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl<K: Hash + Eq, V: Eq> Eq for SplitMap<K, V> {}

impl<K: Hash + Eq + PartKey + Copy> SplitMap<K, PairCoins> {
    /// Lowers a per-pair total by `coins` (a gift reversal), removing the pair at zero
    /// (a pair exists while its total is positive); returns the total after.
    pub(crate) fn lower(&mut self, key: K, coins: u64) -> u64 {
        let after = self.get(&key).map_or(0, |t| t.0.saturating_sub(coins));
        if after == 0 {
            self.remove(&key);
        } else {
            self.insert(key, PairCoins(after));
        }
        after
    }
}

impl<K, V> SplitMap<K, V> {
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.parts.iter().flat_map(|p| p.iter())
    }

    pub(crate) fn len(&self) -> usize {
        self.parts.iter().map(|p| p.len()).sum()
    }
}

impl<'a, K, V> IntoIterator for &'a SplitMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = std::iter::FlatMap<
        std::slice::Iter<'a, FxHashMap<K, V>>,
        std::collections::hash_map::Iter<'a, K, V>,
        fn(&'a FxHashMap<K, V>) -> std::collections::hash_map::Iter<'a, K, V>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.parts.iter().flat_map(|p| p.iter())
    }
}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for SplitMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Serialize, V: Serialize> Serialize for SplitMap<K, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // The length up front (the bincode format needs it; a chained iterator's size
        // hint is not exact).
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K, V> Deserialize<'de> for SplitMap<K, V>
where
    K: Deserialize<'de> + Hash + Eq + PartKey,
    V: Deserialize<'de>,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<K, V>(PhantomData<(K, V)>);

        impl<'de, K, V> Visitor<'de> for MapVisitor<K, V>
        where
            K: Deserialize<'de> + Hash + Eq + PartKey,
            V: Deserialize<'de>,
        {
            type Value = SplitMap<K, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = SplitMap::default();
                while let Some((k, v)) = access.next_entry()? {
                    map.insert(k, v);
                }
                Ok(map)
            }
        }

        deserializer.deserialize_map(MapVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_one_map_and_encodes_like_one() {
        let mut split: SplitMap<(u64, u64), u128> = SplitMap::default();
        let mut one: FxHashMap<(u64, u64), u128> = FxHashMap::default();
        for i in 0..10_000u64 {
            let key = (i % 97, i * 7919);
            *split.entry(key).or_default() += u128::from(i);
            *one.entry(key).or_default() += u128::from(i);
        }
        assert_eq!(split.len(), one.len());
        for (k, v) in &one {
            assert_eq!(split.get(k), Some(v));
        }
        // Every part is used, none holds most of the keys.
        let sizes: Vec<usize> = split.parts.iter().map(|p| p.len()).collect();
        assert!(
            sizes.iter().all(|&n| n > 0 && n < one.len() / 64),
            "{sizes:?}"
        );
        // Encoded as one map: decodes into either type with the same content.
        use crate::protocol::{decode_serde, encode_serde};
        let back: FxHashMap<(u64, u64), u128> =
            decode_serde(&encode_serde(&split).unwrap()).unwrap();
        assert_eq!(back, one);
        let back: SplitMap<(u64, u64), u128> = decode_serde(&encode_serde(&one).unwrap()).unwrap();
        assert_eq!(back.len(), one.len());
        assert!(one.iter().all(|(k, v)| back.get(k) == Some(v)));
    }
}
