//! [`EventFingerprint`]: a fixed 64-bit digest of every field of an event but its id,
//! which tells an exact retry from an id reused for other content. Snapshots keep
//! fingerprints, so the function must never change between builds.

use serde::{Deserialize, Serialize};

use super::{Event, EventKind};

/// Folds 64-bit words into a fingerprint: a fixed function (snapshots keep fingerprints,
/// so it must not change between builds), well mixed (splitmix64's finalizer per word).
struct Fingerprint(u64);

impl Fingerprint {
    fn new(kind: EventKind) -> Self {
        Fingerprint(0x6A09_E667_F3BC_C908 ^ kind as u64)
    }

    fn word(mut self, w: u64) -> Self {
        let mut z = self.0 ^ w.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        self.0 = z ^ (z >> 31);
        self
    }

    fn bytes(self, bytes: &[u8]) -> Self {
        bytes.chunks(8).fold(self.word(bytes.len() as u64), |f, c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            f.word(u64::from_le_bytes(w))
        })
    }

    fn option(self, v: Option<u64>) -> Self {
        match v {
            Some(v) => self.word(1).word(v),
            None => self.word(0),
        }
    }

    /// Never a legacy fingerprint (the top bit is clear).
    fn finish(self) -> EventFingerprint {
        EventFingerprint(self.0 & !EventFingerprint::LEGACY)
    }
}

/// A 64-bit digest of every field of an event but its id: two events with one id and
/// equal fingerprints are the same event (an exact retry); different fingerprints mean
/// the id was reused for other content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventFingerprint(pub u64);

impl EventFingerprint {
    /// The top bit marks a legacy fingerprint.
    const LEGACY: u64 = 1 << 63;

    /// The fingerprint of an id remembered before fingerprints were kept (snapshot format
    /// 2 and older kept ids per routing shard): it matches any event routed where the
    /// original was (`route`, see [`EventFingerprint::matches`]), as those ids did then.
    pub fn legacy(route: u32) -> EventFingerprint {
        EventFingerprint(Self::LEGACY | u64::from(route))
    }

    /// Whether an event with fingerprint `other`, routed to `route`, is the event
    /// remembered with this fingerprint.
    pub fn matches(self, other: EventFingerprint, route: u32) -> bool {
        if self.0 & Self::LEGACY != 0 {
            self == Self::legacy(route)
        } else {
            self == other
        }
    }
}

impl Event {
    /// The fingerprint of everything in the event but its id.
    pub fn fingerprint(&self) -> EventFingerprint {
        let f = Fingerprint::new(self.kind());
        match self {
            Event::Recharge(r) => f
                .word(r.user.0)
                .word(r.coins)
                .bytes(&r.price.normalize().serialize())
                .bytes(r.currency.as_str().as_bytes())
                .option(r.package.get().map(|p| u64::from(p.0)))
                .word(r.channel as u64),
            Event::Gift(g) => f
                .word(g.sender.0)
                .word(g.creator.0)
                .word(g.stream.0)
                .word(u64::from(g.gift.0))
                .word(u64::from(g.count)),
            Event::Payout(p) => f
                .word(p.creator.0)
                .word(p.diamonds)
                .bytes(p.currency.as_str().as_bytes()),
            Event::Account(a) => {
                let f = f
                    .word(a.user.0)
                    .option(a.region.map(|r| {
                        let b = r.as_str().as_bytes();
                        u64::from(b[0]) << 8 | u64::from(b[1])
                    }))
                    .word(u64::from(a.adult))
                    .option(a.monthly_budget_coins.get());
                // Only when set: a setting without them fingerprints as it always did.
                if a.has_window_budgets() {
                    f.option(a.daily_budget_coins.get())
                        .option(a.weekly_budget_coins.get())
                } else {
                    f
                }
            }
            Event::StreamGoal(g) => f.word(g.stream.0).word(g.creator.0).word(g.coins_target),
            Event::Settlement(s) if s.nanos == 0 => f
                .word(s.creator.0)
                .word(u64::from(s.source))
                .word(s.diamonds),
            Event::Settlement(s) => f
                .word(s.creator.0)
                .word(u64::from(s.source))
                .word(s.diamonds)
                .word(u64::from(s.nanos)),
            Event::Economy(e) => f.word(u64::from(e.version)).word(e.digest),
            Event::Purchase(p) => f
                .word(p.user.0)
                .word(u64::from(p.item.0))
                .word(u64::from(p.count)),
            Event::VideoGift(v) => f
                .word(v.sender.0)
                .word(v.creator.0)
                .word(v.video.0)
                .word(u64::from(v.gift.0))
                .word(u64::from(v.count)),
            Event::RechargeReversal(r) => f
                .word(r.user.0)
                .word(r.recharge.0 as u64)
                .word((r.recharge.0 >> 64) as u64),
            // What the engine found (`reversed`) is not content.
            Event::GiftReversal(r) => f
                .word(r.sender.0)
                .word(r.gift.0 as u64)
                .word((r.gift.0 >> 64) as u64),
            Event::Battle(b) => b
                .streams()
                .iter()
                .fold(f.word(b.battle.0), |f, s| f.word(s.0))
                .word(b.start_ms)
                .word(b.end_ms()),
            Event::BattleClose(c) => f.word(c.battle.0),
        }
        .finish()
    }
}
