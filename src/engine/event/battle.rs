//! [`Battle`]: a PK battle between live streams, as an event.

use serde::{Deserialize, Serialize};

use super::{BattleId, EventId, StreamId};

/// The fewest streams a battle has.
pub const BATTLE_SIDES_MIN: usize = 2;
/// The most streams a battle has (the event keeps them inline: [`super::Event`] stays
/// 64 bytes).
pub const BATTLE_SIDES_MAX: usize = 4;
/// The longest battle window: 24 hours (a PK battle lasts minutes; the bound keeps a
/// battle's per-gifter totals to one day of gifts).
pub const BATTLE_LENGTH_MS_MAX: u64 = 24 * 3_600_000;

const _: () = assert!(BATTLE_LENGTH_MS_MAX <= u32::MAX as u64);
const _: () = assert!(BATTLE_SIDES_MIN <= BATTLE_SIDES_MAX);

/// A PK battle: streams `streams()` compete for coins received from gifts stamped in
/// `[start_ms, end_ms)`. Its event id is derived from the battle id
/// ([`Battle::event_id`]), so a retried `PUT /v1/battles/{id}` is the same event.
/// Compact (56 bytes): the window as a start and a length, the streams inline.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct Battle {
    pub battle: BattleId,
    /// The first `sides` are the battle's streams, in the order given (the rest 0).
    streams: [StreamId; BATTLE_SIDES_MAX],
    pub start_ms: u64,
    length_ms: u32,
    sides: u8,
}

impl Battle {
    /// A battle of `streams` over `[start_ms, end_ms)`; `None` when it cannot be held
    /// in an event at all (more than four streams, `end_ms` not after `start_ms`, or a
    /// window longer than `u32::MAX` ms). The rules (2 to 4 distinct streams, at most
    /// [`BATTLE_LENGTH_MS_MAX`]) are the engine's: such a battle is `INVALID_BATTLE`.
    pub fn new(
        battle: BattleId,
        streams: &[StreamId],
        start_ms: u64,
        end_ms: u64,
    ) -> Option<Battle> {
        if streams.len() > BATTLE_SIDES_MAX || end_ms <= start_ms {
            return None;
        }
        let length_ms = u32::try_from(end_ms - start_ms).ok()?;
        let mut inline = [StreamId(0); BATTLE_SIDES_MAX];
        inline[..streams.len()].copy_from_slice(streams);
        Some(Battle {
            battle,
            streams: inline,
            start_ms,
            length_ms,
            sides: streams.len() as u8,
        })
    }

    /// The battle's streams, in the order given.
    pub fn streams(&self) -> &[StreamId] {
        &self.streams[..usize::from(self.sides).min(BATTLE_SIDES_MAX)]
    }

    /// The end of the window (exclusive), UTC ms.
    pub fn end_ms(&self) -> u64 {
        self.start_ms.saturating_add(u64::from(self.length_ms))
    }

    pub fn length_ms(&self) -> u64 {
        u64::from(self.length_ms)
    }

    /// Whether a gift stamped `stamp_ms` is inside the window.
    pub fn holds(&self, stamp_ms: u64) -> bool {
        self.start_ms <= stamp_ms && stamp_ms < self.end_ms()
    }

    /// The event id of this battle's event: derived from the battle id (a UUIDv8 in a
    /// namespace of its own), so every retry of a PUT is the same event and one battle id
    /// is one idempotency key.
    pub fn id(&self) -> EventId {
        Battle::event_id(self.battle)
    }

    /// The event id for battle `battle`: bijective in the battle id (the two bits the
    /// UUID variant takes from the low word move into the high word). The engine files
    /// it in the id index under a hash domain of its own (review B11), so a client event
    /// that happens to carry this id never takes the battle's place.
    pub fn event_id(battle: BattleId) -> EventId {
        derived_id(*b"PKbattl\0", battle)
    }

    /// Whether the rules of a battle's content hold: 2 to 4 distinct streams and a window
    /// of at most [`BATTLE_LENGTH_MS_MAX`].
    pub fn is_valid(&self) -> bool {
        let streams = self.streams();
        let distinct = streams
            .iter()
            .enumerate()
            .all(|(i, s)| !streams[..i].contains(s));
        (BATTLE_SIDES_MIN..=BATTLE_SIDES_MAX).contains(&streams.len())
            && usize::from(self.sides) <= BATTLE_SIDES_MAX
            && distinct
            && self.length_ms > 0
            && self.length_ms() <= BATTLE_LENGTH_MS_MAX
    }
}

/// A UUIDv8 derived from a battle id in the namespace `namespace` (its high word less
/// the two bits the UUID variant takes from the low word, which move there).
fn derived_id(namespace: [u8; 8], battle: BattleId) -> EventId {
    let high = u64::from_be_bytes(namespace) | (battle.0 >> 62);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&battle.0.to_be_bytes());
    EventId(
        uuid::Builder::from_custom_bytes(bytes)
            .into_uuid()
            .as_u128(),
    )
}

/// The close of a PK battle (review B2): made by the service once its clock passes the
/// battle's `end_ms` (a client may send one too). Applied with the gate exclusive, it is
/// accepted only when the battle is held, not closed yet and the close is stamped at or
/// after `end_ms` (else `BATTLE_NOT_FOUND` / `BATTLE_NOT_ENDED`, recorded); from its
/// number on the battle is frozen: no gift counts, no reversal lowers it. Idempotent by
/// the battle's state, not by the id index (a close of a closed battle answers the
/// accepted close): its event id ([`BattleClose::event_id`]) is derived from the battle
/// id and never claimed there, so an early close can not hold the real one off.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct BattleClose {
    pub battle: BattleId,
}

impl BattleClose {
    pub fn id(&self) -> EventId {
        BattleClose::event_id(self.battle)
    }

    /// The close's event id for battle `battle`: bijective in the battle id, in a
    /// namespace apart from the battle's.
    pub fn event_id(battle: BattleId) -> EventId {
        derived_id(*b"PKclose\0", battle)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_battle_event_id_is_one_per_battle_id() {
        let ids = [0, 1, u64::MAX, 1 << 62, 1 << 63, (1 << 62) | 1];
        let mut seen = std::collections::HashSet::new();
        for b in ids {
            for id in [
                Battle::event_id(BattleId(b)),
                BattleClose::event_id(BattleId(b)),
            ] {
                assert!(seen.insert(id), "{b}");
                assert_eq!(uuid::Uuid::from_u128(id.0).get_version_num(), 8);
            }
        }
    }

    #[test]
    fn the_window_and_streams_read_back() {
        let s = [StreamId(5), StreamId(9)];
        let b = Battle::new(BattleId(1), &s, 1_000, 61_000).unwrap();
        assert_eq!(b.streams(), &s);
        assert_eq!(b.end_ms(), 61_000);
        assert!(b.holds(1_000) && b.holds(60_999) && !b.holds(61_000) && !b.holds(999));
        assert!(b.is_valid());
        assert!(Battle::new(BattleId(1), &s, 5, 5).is_none());
        let one = Battle::new(BattleId(1), &s[..1], 0, 1).unwrap();
        assert!(!one.is_valid());
        let twice = Battle::new(BattleId(1), &[StreamId(5), StreamId(5)], 0, 1).unwrap();
        assert!(!twice.is_valid());
        let long = Battle::new(BattleId(1), &s, 0, BATTLE_LENGTH_MS_MAX + 1).unwrap();
        assert!(!long.is_valid());
    }
}
