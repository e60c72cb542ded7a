//! The keyed hash the idempotency index files event ids under.
//!
//! A ledger draws a 128-bit [`IdSecret`] when it is created and keeps it in its
//! snapshots. An id's [`IdHash`] is SipHash-1-3 (128-bit output) of its 16 bytes under
//! that secret: 56 bits of one half are the key the index keeps, the other half chooses
//! the id shard. A
//! client that does not know the secret can neither craft a second id with a remembered
//! id's key (a fresh event then answered as another's duplicate or refused) nor aim its
//! ids at one shard to fill it.
//!
//! A ledger restored from a snapshot written before the secret existed (formats 3 to 5)
//! holds ids under the unkeyed hash ([`IdHash::unkeyed`]; format 5 kept only keys, which
//! cannot be computed again under a secret). It draws a secret for new ids, and its
//! claims also look under the unkeyed hash until the ids filed so are past the horizon
//! (`Engine::legacy_claim`).

use crate::engine::EventId;
use serde::{Deserialize, Serialize};
use siphasher::sip128::{Hasher128, SipHasher13};
use std::hash::Hasher;

/// Bits of a key (the index's entry holds this many).
pub(crate) const KEY_BITS: u32 = 56;
/// Bits of the unkeyed hash that chose the id shard (`engine.shards` is at most 2^10).
const SHARD_BITS: u32 = 16;
const _: () = assert!(super::SHARDS_MAX <= 1 << SHARD_BITS);

/// A ledger's secret key for [`IdHash::keyed`].
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdSecret(pub [u64; 2]);

impl IdSecret {
    /// A new secret from the operating system's generator.
    pub fn random() -> IdSecret {
        IdSecret(rand::random())
    }

    /// The secret of the derived ids' domain (`Engine::event_hash`): this one with
    /// fixed words mixed in, so SipHash under it is independent of SipHash under this.
    pub(crate) fn derived(&self) -> IdSecret {
        IdSecret([
            self.0[0] ^ 0x6465_7269_7665_6421,
            self.0[1] ^ 0x5045_4b20_6261_7474,
        ])
    }
}

impl std::fmt::Debug for IdSecret {
    /// Never printed: a log line must not give the key away.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdSecret(..)")
    }
}

/// An event id's hash: the index key and the bits that choose the id shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct IdHash {
    key: u64,
    shard: u64,
}

impl IdHash {
    pub(crate) fn keyed(id: EventId, secret: &IdSecret) -> IdHash {
        let mut hasher = SipHasher13::new_with_keys(secret.0[0], secret.0[1]);
        // Two words (siphasher's fast path for integers): the id's 16 bytes, little end
        // first, on every platform.
        let [hi, lo] = id.to_words();
        hasher.write_u64(lo);
        hasher.write_u64(hi);
        let hash = hasher.finish128();
        IdHash {
            key: (hash.h1 >> (64 - KEY_BITS)).max(1),
            shard: hash.h2,
        }
    }

    /// The fixed hash of snapshot formats 3 to 5: the same key (48 bits then) and id
    /// shard as then.
    pub(crate) fn unkeyed(id: EventId) -> IdHash {
        let [hi, lo] = id.to_words();
        let key = mix(hi ^ mix(lo.wrapping_add(0x9E37_79B9_7F4A_7C15))) >> SHARD_BITS;
        let shard = ((hi ^ lo).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) & 0xFFFF;
        IdHash {
            key: key.max(1),
            shard,
        }
    }

    /// The key the index keeps: at most [`KEY_BITS`] bits, never 0.
    pub(crate) fn key(self) -> u64 {
        self.key
    }

    /// The id shard, of `mask + 1` (a power of two, at most 2^16).
    pub(crate) fn shard(self, mask: usize) -> usize {
        (self.shard & 0xFFFF) as usize & mask
    }
}

/// splitmix64's finalizer.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unkeyed hash is the one formats 3 to 5 filed ids under: its key and shard are
    /// those the index and the engine computed then.
    #[test]
    fn the_unkeyed_hash_keeps_the_old_key_and_shard() {
        for raw in [
            1u128,
            2,
            1 << 64,
            u128::MAX,
            0x5f0c_6c1e_0000_4000_8000_0000_0000_0001,
        ] {
            let id = EventId(raw);
            let [hi, lo] = id.to_words();
            let old_key = (mix(hi ^ mix(lo.wrapping_add(0x9E37_79B9_7F4A_7C15))) >> 16).max(1);
            let old_shard =
                |mask: usize| ((hi ^ lo).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize & mask;
            let h = IdHash::unkeyed(id);
            assert_eq!(h.key(), old_key);
            for mask in [0, 1, 15, 1023] {
                assert_eq!(h.shard(mask), old_shard(mask));
            }
        }
    }

    /// Keyed keys use all 56 bits (a fresh event meets a remembered key with 2^-56 per id
    /// held), never 0; unkeyed ones are the 48 bits formats 3 to 5 kept.
    #[test]
    fn keyed_keys_have_56_bits_and_unkeyed_ones_48() {
        let secret = IdSecret([7, 9]);
        let keys: Vec<u64> = (0..4096u128)
            .map(|i| IdHash::keyed(EventId(i), &secret).key())
            .collect();
        assert!(keys.iter().all(|&k| k != 0 && k >> KEY_BITS == 0));
        assert!(keys.iter().filter(|&&k| k >> 48 != 0).count() > 4000);
        assert!((0..4096u128).all(|i| IdHash::unkeyed(EventId(i)).key() >> 48 == 0));
    }

    /// Under two secrets one id hashes apart, and under one secret the hash is stable.
    #[test]
    fn the_keyed_hash_depends_on_the_secret() {
        let id = EventId(42);
        let a = IdSecret([1, 2]);
        let b = IdSecret([1, 3]);
        assert_eq!(IdHash::keyed(id, &a), IdHash::keyed(id, &a));
        assert_ne!(IdHash::keyed(id, &a), IdHash::keyed(id, &b));
        assert_ne!(IdHash::keyed(id, &a), IdHash::unkeyed(id));
        assert_eq!(format!("{a:?}"), "IdSecret(..)");
    }
}
