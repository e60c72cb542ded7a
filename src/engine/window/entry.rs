//! One remembered id packed in 20 bytes (a `u128` of key, check, epoch tag, kind and
//! sequence offset, plus a 32-bit value): the bit layout of the module doc of `window`.

use super::{TAGS, WORDS};

// The fields fill the 128 bits (key, check, tag, kind, sequence offset), and an entry's
// words hold them and the 32-bit value.
const _: () = assert!(KEY_BITS + CHECK_BITS + 8 + 3 + SEQ_BITS == 128);
const _: () = assert!(TAGS == 1 << 8 && PENDING < 1 << 3);
const _: () = assert!(WORDS * 32 == 128 + 32);

pub(super) const KEY_BITS: u32 = crate::engine::idhash::KEY_BITS;
pub(super) const CHECK_BITS: u32 = 32;
/// The check's width in snapshots of format 5.
pub(super) const CHECK_BITS_V5: u32 = 40;
pub(super) const SEQ_BITS: u32 = 29;
pub(super) const KEY_MASK: u128 = (1 << KEY_BITS) - 1;
pub(super) const CHECK_SHIFT: u32 = KEY_BITS;
pub(super) const CHECK_MASK: u128 = (1 << CHECK_BITS) - 1;
pub(super) const TAG_SHIFT: u32 = CHECK_SHIFT + CHECK_BITS;
pub(super) const KIND_SHIFT: u32 = TAG_SHIFT + 8;
pub(super) const SEQ_SHIFT: u32 = KIND_SHIFT + 3;
pub(super) const SEQ_SPAN: u64 = 1 << SEQ_BITS;

pub(super) const COINS: u32 = 0;
pub(super) const STORED: u32 = 1;
pub(super) const SETTLED: u32 = 2;
pub(super) const REJECTED: u32 = 3;
pub(super) const WIDE: u32 = 4;
pub(super) const PENDING: u32 = 5;

/// One remembered id (see the module doc for the bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Entry {
    pub(super) bits: u128,
    pub(super) value: u32,
}

impl Entry {
    pub(super) const EMPTY: Entry = Entry { bits: 0, value: 0 };

    pub(super) fn new(
        key: u64,
        check: u64,
        tag: usize,
        kind: u32,
        seq_delta: u64,
        value: u32,
    ) -> Entry {
        debug_assert!(key != 0 && u128::from(key) <= KEY_MASK);
        debug_assert!(u128::from(check) <= CHECK_MASK && tag < TAGS && seq_delta < SEQ_SPAN);
        Entry {
            bits: u128::from(key)
                | u128::from(check) << CHECK_SHIFT
                | (tag as u128) << TAG_SHIFT
                | u128::from(kind) << KIND_SHIFT
                | u128::from(seq_delta) << SEQ_SHIFT,
            value,
        }
    }

    pub(super) fn is_empty(self) -> bool {
        self.key() == 0
    }

    pub(super) fn key(self) -> u64 {
        (self.bits & KEY_MASK) as u64
    }

    pub(super) fn check(self) -> u64 {
        (self.bits >> CHECK_SHIFT & CHECK_MASK) as u64
    }

    pub(super) fn tag(self) -> usize {
        (self.bits >> TAG_SHIFT & 0xFF) as usize
    }

    pub(super) fn kind(self) -> u32 {
        (self.bits >> KIND_SHIFT & 0b111) as u32
    }

    pub(super) fn seq_delta(self) -> u64 {
        (self.bits >> SEQ_SHIFT) as u64
    }

    pub(super) fn pending(self) -> bool {
        self.kind() == PENDING
    }

    /// The same id with another kind, sequence offset and value.
    pub(super) fn with(self, kind: u32, seq_delta: u64, value: u32) -> Entry {
        Entry::new(self.key(), self.check(), self.tag(), kind, seq_delta, value)
    }
}
