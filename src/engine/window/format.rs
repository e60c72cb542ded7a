//! How snapshots encode a window: from format 5 on, its remembered ids as (key, check,
//! epoch, outcome) plus its bounds and time ([`IdWindowRepr`]); format 5's wider checks
//! ([`IdWindowV5`]); formats 3 and 4's whole ids ([`IdWindowV4`]); and formats 1 and 2's
//! per-shard windows ([`LegacyWindow`], always written empty).

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use super::entry::{CHECK_BITS, CHECK_BITS_V5, CHECK_MASK, KEY_MASK};
use super::{EPOCHS_PER_HORIZON, IdWindow};
use crate::engine::event::{EventFingerprint, EventId, Outcome, Stamp};
use crate::engine::idhash::IdHash;

/// The window as snapshots (format 5 on) encode it.
#[derive(Deserialize)]
pub(crate) struct IdWindowRepr {
    /// (key, check, epoch number, outcome)
    ids: Vec<(u64, u64, u64, Outcome)>,
    entries_max: usize,
    horizon_ms: u64,
    epoch_ms: u64,
    newest: Stamp,
    forgot_through: Stamp,
}

impl TryFrom<IdWindowRepr> for IdWindow {
    type Error = String;

    fn try_from(repr: IdWindowRepr) -> Result<Self, String> {
        if repr.epoch_ms == 0 || repr.horizon_ms / repr.epoch_ms > 2 * EPOCHS_PER_HORIZON {
            return Err(format!(
                "an id window of {} ms epochs for a {} ms horizon",
                repr.epoch_ms, repr.horizon_ms
            ));
        }
        let mut window = IdWindow::new(repr.entries_max, repr.horizon_ms);
        window.epoch_ms = repr.epoch_ms;
        window.advance(repr.newest);
        window.forgot_through = repr.forgot_through;
        for (key, check, number, outcome) in repr.ids {
            if key == 0 || u128::from(key) > KEY_MASK || u128::from(check) > CHECK_MASK {
                return Err("an id window entry out of range".to_owned());
            }
            if number > window.epoch_of(window.newest) {
                return Err("an id window entry newer than the window".to_owned());
            }
            window.put(key, check, number, outcome);
        }
        Ok(window)
    }
}

impl<'de> Deserialize<'de> for IdWindow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IdWindowRepr::deserialize(deserializer)
            .and_then(|repr| IdWindow::try_from(repr).map_err(serde::de::Error::custom))
    }
}

impl Serialize for IdWindow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Ids<'a>(&'a IdWindow);
        impl Serialize for Ids<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                // The bincode format needs the length first: count, then write.
                let mut seq = serializer.serialize_seq(Some(self.0.iter().count()))?;
                for entry in self.0.iter() {
                    seq.serialize_element(&entry)?;
                }
                seq.end()
            }
        }
        let mut s = serializer.serialize_struct("IdWindow", 6)?;
        s.serialize_field("ids", &Ids(self))?;
        s.serialize_field("entries_max", &self.entries_max)?;
        s.serialize_field("horizon_ms", &self.horizon_ms)?;
        s.serialize_field("epoch_ms", &self.epoch_ms)?;
        s.serialize_field("newest", &self.newest)?;
        s.serialize_field("forgot_through", &self.forgot_through)?;
        s.end()
    }
}

/// The window as snapshot format 5 encoded it: checks of 40 bits, whose top 32 are
/// today's check of the same content.
#[derive(Deserialize)]
#[serde(try_from = "IdWindowRepr")]
pub struct IdWindowV5(IdWindow);

impl TryFrom<IdWindowRepr> for IdWindowV5 {
    type Error = String;

    fn try_from(mut repr: IdWindowRepr) -> Result<Self, String> {
        for entry in &mut repr.ids {
            if entry.1 >> CHECK_BITS_V5 != 0 {
                return Err("an id window entry out of range".to_owned());
            }
            entry.1 >>= CHECK_BITS_V5 - CHECK_BITS;
        }
        IdWindow::try_from(repr).map(IdWindowV5)
    }
}

impl From<IdWindowV5> for IdWindow {
    fn from(v5: IdWindowV5) -> Self {
        v5.0
    }
}

/// The window as snapshot formats 3 and 4 encoded it: whole ids, fingerprints and stamps.
#[derive(Deserialize)]
pub(crate) struct IdWindowV4 {
    ids: Vec<(EventId, EventFingerprint, Stamp, Outcome)>,
    entries_max: usize,
    horizon_ms: u64,
    forgot_through: Stamp,
}

impl From<IdWindowV4> for IdWindow {
    fn from(v4: IdWindowV4) -> Self {
        let mut window = IdWindow::new(v4.entries_max, v4.horizon_ms);
        // Filed under the unkeyed hash, as the ids of format 5 (see `idhash`).
        for (id, fingerprint, stamp, outcome) in v4.ids {
            window.remember(IdHash::unkeyed(id), fingerprint, outcome, stamp);
        }
        window.forgot_through = window.forgot_through.max(v4.forgot_through);
        window
    }
}

/// The per-shard windows of snapshot formats 1 and 2 (ids kept by routing shard, without
/// fingerprints). Read so that such a snapshot loads: its ids move to the id index with
/// [`EventFingerprint::UNKNOWN`]. Written empty from format 3 on.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct LegacyWindow {
    outcomes: FxHashMap<EventId, Outcome>,
    order: VecDeque<(EventId, Stamp)>,
    #[expect(dead_code, reason = "decoded with the window, not used since")]
    entries_max: usize,
    age_ms: u64,
}

impl LegacyWindow {
    /// Its ids, oldest first, emptying it.
    pub(crate) fn take(&mut self) -> Vec<(EventId, Stamp, Outcome)> {
        let outcomes = std::mem::take(&mut self.outcomes);
        std::mem::take(&mut self.order)
            .into_iter()
            .filter_map(|(id, stamp)| outcomes.get(&id).map(|&o| (id, stamp, o)))
            .collect()
    }
}

impl Serialize for LegacyWindow {
    /// Always empty (its ids moved to the id index when it was loaded).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("IdempotencyWindow", 4)?;
        s.serialize_field("outcomes", &FxHashMap::<EventId, Outcome>::default())?;
        s.serialize_field("order", &VecDeque::<(EventId, Stamp)>::new())?;
        s.serialize_field("entries_max", &0usize)?;
        s.serialize_field("age_ms", &self.age_ms)?;
        s.end()
    }
}
