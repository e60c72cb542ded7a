//! The engine's use of [`EngineConfig`] (defined with giftstream.toml's other tables in
//! `config::engine`): how long the id index keeps an id, and when an event has expired.

use super::event::Stamp;
use super::window;
use crate::config::engine::{EngineConfig, ISSUED_AHEAD_MAX_MS};

impl EngineConfig {
    /// How long the index keeps an id after its stamp: the horizon, plus how far ahead
    /// an `issued_ms` may be.
    pub(super) fn id_keep_ms(&self) -> u64 {
        self.idempotency_horizon_ms
            .saturating_add(ISSUED_AHEAD_MAX_MS)
    }

    /// The longest the index keeps an id after its stamp: [`EngineConfig::id_keep_ms`]
    /// plus the epoch it is counted in (ids are kept per epoch of 1/64 of that, so up to
    /// one epoch longer, never shorter). At its stamp plus this, an id is forgotten.
    pub fn id_kept_max_ms(&self) -> u64 {
        let keep = self.id_keep_ms();
        keep.saturating_add(window::epoch_ms(keep))
    }

    /// Whether an event issued at `issued_ms` is refused at `stamp` (`EVENT_EXPIRED`):
    /// issued longer than the horizon ago, or further ahead than [`ISSUED_AHEAD_MAX_MS`].
    pub fn is_expired(&self, issued_ms: u64, stamp: Stamp) -> bool {
        stamp.0.saturating_sub(issued_ms) > self.idempotency_horizon_ms
            || issued_ms.saturating_sub(stamp.0) > ISSUED_AHEAD_MAX_MS
    }
}
