//! The journal's format: one stream entry per run, entry id `<last seq of the run>-0`,
//! one field `b` holding a [`JournalBatch`] in the bincode format (the "standard"
//! configuration: little-endian, variable-length integers). Older formats (1 to 3)
//! still read. The records are the journal's own types ([`super::record`]).
//!
//! Size: the batch encoding and the one test that reads every older version back are one
//! on-disk contract.

use bincode::config::{Configuration, LittleEndian, Varint};
use bincode::{Decode, Encode};

use super::record::{JournalEvent, JournalOutcome};
use crate::engine::{Event, GiftTotals, LogEntry, Stamp};
use crate::persist::journal::JournalError;

/// Format version of [`JournalBatch`]. Version 2 added [`JournalRecord::totals`]
/// (version 1 batches are still read; their gifts have no totals); version 3 added the
/// settlement event (`JournalEvent::Settlement`; version 2 batches, which cannot hold one,
/// are read as they are); version 4 added the economy change (`JournalEvent::Economy`;
/// version 3 batches are read as they are); version 5 added the purchase
/// (`JournalEvent::Purchase`), the recharge with its payment time
/// (`JournalEvent::RechargePaid`) and account settings with daily and weekly budgets
/// (`JournalEvent::AccountV2`; version 4 batches are read as they are; a
/// `BUDGET_EXCEEDED`'s cap rides in its outcome's `coins`, 0 before); version 6 added the
/// recharge reversal (`JournalEvent::RechargeReversal`, kind 11), the gift reversal
/// (`JournalEvent::GiftReversal`, kind 12) and the gift on a video
/// (`JournalEvent::VideoGift`, kind 13, whose record's totals are the sender's
/// `(creator, video)` totals; version 5 batches are read as they are); version 7 added
/// the accepted reversal of a gift on a video (`JournalEvent::VideoGiftReversal`, kind
/// 14, whose record's totals are the sender's `(creator, video)` totals after it; a
/// version 6 batch's reversals are all of gifts on streams and read as they are);
/// version 8 added the PK battle (`JournalEvent::Battle`, kind 15; version 7 batches are
/// read as they are); version 9 added the accepted gift reversal with its gift's hour
/// (`JournalEvent::GiftReversalAt`, kind 16, for the read model's windowed leaderboards;
/// an older batch's reversals read as they are, their gift's hour unknown); version 10
/// added the PK battle's close (`JournalEvent::BattleClose`, kind 17; version 8 and 9
/// batches are read as they are, their battles closed by no event). A build that
/// cannot read a variant refuses the batch by its version, clearly.
pub const JOURNAL_VERSION: u8 = 10;

/// The decode limit of journal entries (written by this service, capped at
/// [`super::JOURNAL_ENTRY_RECORDS_MAX`] records, ~200 bytes each in memory): far above
/// any entry, so an entry the journal accepted always reads back.
pub const JOURNAL_DECODE_BYTES_MAX: usize = 1 << 30;

/// The journal's bincode configuration. The limit bounds what a length prefix inside an
/// entry can make the decoder allocate; it does not change the encoding.
const CONFIG: Configuration<
    LittleEndian,
    Varint,
    bincode::config::Limit<JOURNAL_DECODE_BYTES_MAX>,
> = bincode::config::standard().with_limit::<JOURNAL_DECODE_BYTES_MAX>();

/// Why journal bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("undecodable payload: {0}")]
    Bincode(#[from] bincode::error::DecodeError),
    #[error("{0} trailing bytes after the payload")]
    Trailing(usize),
}

/// Encodes a value of the journal format.
fn encode<T: Encode>(value: &T) -> Vec<u8> {
    bincode::encode_to_vec(value, CONFIG).expect("encoding into a Vec cannot fail")
}

/// Decodes a whole value of the journal format: trailing bytes are an error.
fn decode<T: Decode<()>>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, used) = bincode::decode_from_slice(bytes, CONFIG)?;
    if used != bytes.len() {
        return Err(DecodeError::Trailing(bytes.len() - used));
    }
    Ok(value)
}

/// One journaled event with its outcome and stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct JournalRecord {
    pub seq: u64,
    pub stamp: u64,
    pub event: JournalEvent,
    pub outcome: JournalOutcome,
    /// An accepted gift's `(creator, stream)` totals after it ([`GiftTotals`]).
    pub totals: Option<(u64, u64)>,
}

/// One group commit.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct JournalBatch {
    pub version: u8,
    pub records: Vec<JournalRecord>,
}

/// A record of journal format 1 (no totals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
struct JournalRecordV1 {
    seq: u64,
    stamp: u64,
    event: JournalEvent,
    outcome: JournalOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct JournalBatchV1 {
    version: u8,
    records: Vec<JournalRecordV1>,
}

impl JournalBatch {
    pub fn from_entries(entries: &[LogEntry]) -> JournalBatch {
        JournalBatch {
            version: JOURNAL_VERSION,
            records: entries
                .iter()
                .map(|e| JournalRecord {
                    seq: e.seq,
                    stamp: e.stamp.0,
                    event: JournalEvent::of_entry(e),
                    outcome: JournalOutcome::from(&e.outcome),
                    totals: e.totals.map(|t| (t.creator, t.stream)),
                })
                .collect(),
        }
    }

    /// The batch in the journal format (what an append writes in field `b`).
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Decodes a batch of any format this build reads (the version is its first byte).
    pub fn decode(bytes: &[u8]) -> Result<JournalBatch, DecodeError> {
        match bytes.first() {
            Some(&1) => {}
            Some(&2) | Some(&3) | Some(&4) | Some(&5) | Some(&6) | Some(&7) | Some(&8)
            | Some(&9) => {
                let mut batch: JournalBatch = decode(bytes)?;
                batch.version = JOURNAL_VERSION;
                return Ok(batch);
            }
            _ => return decode(bytes),
        }
        let v1: JournalBatchV1 = decode(bytes)?;
        Ok(JournalBatch {
            version: JOURNAL_VERSION,
            records: v1
                .records
                .into_iter()
                .map(|r| JournalRecord {
                    seq: r.seq,
                    stamp: r.stamp,
                    event: r.event,
                    outcome: r.outcome,
                    totals: None,
                })
                .collect(),
        })
    }

    pub fn into_entries(self) -> Result<Vec<LogEntry>, JournalError> {
        if self.version != JOURNAL_VERSION {
            return Err(JournalError::Format(format!(
                "journal batch version {} (this build reads 1 to {JOURNAL_VERSION})",
                self.version
            )));
        }
        self.records
            .into_iter()
            .map(|r| {
                let event = Event::try_from(r.event)
                    .map_err(|e| JournalError::Format(format!("seq {}: {e}", r.seq)))?;
                let outcome = r
                    .outcome
                    .to_outcome(&event)
                    .map_err(|e| JournalError::Format(format!("seq {}: {e}", r.seq)))?;
                Ok(LogEntry {
                    seq: r.seq,
                    stamp: Stamp(r.stamp),
                    event,
                    outcome,
                    totals: r
                        .totals
                        .map(|(creator, stream)| GiftTotals { creator, stream }),
                    reversed: r.event.reversed(),
                })
            })
            .collect()
    }
}

/// A stream entry as `XRANGE` returns it: id and field/value pairs.
pub(super) type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Decodes one stream entry into its run, checking that it ends at the entry's id.
pub(super) fn decode_entry((id, fields): &StreamEntry) -> Result<Vec<LogEntry>, JournalError> {
    let bytes = fields
        .iter()
        .find(|(k, _)| k == "b")
        .map(|(_, v)| v)
        .ok_or_else(|| JournalError::Format(format!("journal entry {id} has no field b")))?;
    let batch = JournalBatch::decode(bytes)
        .map_err(|e| JournalError::Format(format!("journal entry {id}: {e}")))?;
    let entries = batch.into_entries()?;
    if entries.last().map(|e| e.seq) != Some(entry_seq(id)) {
        return Err(JournalError::Format(format!(
            "journal entry {id} does not end at its id"
        )));
    }
    Ok(entries)
}

/// The sequence number in an entry id `<seq>-0`.
pub(super) fn entry_seq(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{
        CreatorId, Effect, EventId, Gift, GiftId, Outcome, Settlement, Status, StreamId, UserId,
    };
    use crate::protocol::{self, WireEvent, WireOutcome};

    /// A record as journal formats 1 to 4 declared it, with the wire's types.
    #[derive(Encode)]
    struct WireRecord {
        seq: u64,
        stamp: u64,
        event: WireEvent,
        outcome: WireOutcome,
        totals: Option<(u64, u64)>,
    }

    #[derive(Encode)]
    struct WireBatch {
        version: u8,
        records: Vec<WireRecord>,
    }

    #[test]
    fn a_batch_encodes_to_the_bytes_of_the_wire_typed_batch_and_the_old_config() {
        let entries: Vec<LogEntry> = [(1, 40u64), (2, 0)]
            .into_iter()
            .map(|(seq, coins)| LogEntry {
                seq,
                stamp: Stamp(1_796_083_200_000 + seq),
                event: Event::Gift(Gift {
                    id: EventId(u128::from(seq) << 70),
                    sender: UserId(3),
                    creator: CreatorId(4),
                    stream: StreamId(5),
                    gift: GiftId(1),
                    count: 2,
                }),
                outcome: Outcome {
                    seq,
                    status: Status::Accepted(Effect::Coins(coins)),
                    duplicate: false,
                    cap: None,
                },
                totals: Some(GiftTotals {
                    creator: 12 * seq,
                    stream: 2,
                }),
                reversed: None,
            })
            .collect();
        let old = WireBatch {
            version: JOURNAL_VERSION,
            records: entries
                .iter()
                .map(|e| WireRecord {
                    seq: e.seq,
                    stamp: e.stamp.0,
                    event: WireEvent::from(&e.event),
                    outcome: WireOutcome::from(&e.outcome),
                    totals: e.totals.map(|t| (t.creator, t.stream)),
                })
                .collect(),
        };
        let batch = JournalBatch::from_entries(&entries);
        assert_eq!(batch.encode(), protocol::encode(&old));
        assert_eq!(batch.encode(), protocol::encode(&batch));
        let back = JournalBatch::decode(&protocol::encode(&old)).unwrap();
        assert_eq!(back.into_entries().unwrap(), entries);
    }

    #[test]
    fn journal_batches_of_formats_1_to_7_still_read_and_format_8_keeps_totals_settlements_economy_changes_purchases_and_reversals()
     {
        let gift = LogEntry {
            seq: 7,
            stamp: Stamp(1_796_083_200_000),
            event: Event::Gift(Gift {
                id: EventId(99),
                sender: UserId(3),
                creator: CreatorId(4),
                stream: StreamId(5),
                gift: GiftId(0),
                count: 2,
            }),
            outcome: Outcome {
                seq: 7,
                status: Status::Accepted(Effect::Coins(40)),
                duplicate: false,
                cap: None,
            },
            totals: Some(GiftTotals {
                creator: 12,
                stream: 2,
            }),
            reversed: None,
        };
        let settlement = LogEntry {
            seq: 8,
            stamp: Stamp(1_796_083_200_001),
            event: Event::Settlement(Settlement {
                id: Settlement::id_for(CreatorId(4), 1, 250),
                creator: CreatorId(4),
                source: 1,
                diamonds: 250,
                nanos: 0,
            }),
            outcome: Outcome {
                seq: 8,
                status: Status::Accepted(Effect::Settled { credited: 200 }),
                duplicate: false,
                cap: None,
            },
            totals: None,
            reversed: None,
        };
        let v3 = JournalBatch::from_entries(&[gift.clone(), settlement.clone()]).encode();
        assert_eq!(v3[0], JOURNAL_VERSION);
        let back = JournalBatch::decode(&v3).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![gift.clone(), settlement.clone()]);

        // Format 2 is format 3 without settlements: same bytes but the version.
        let mut v2 = JournalBatch::from_entries(std::slice::from_ref(&gift)).encode();
        v2[0] = 2;
        let back = JournalBatch::decode(&v2).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![gift.clone()]);

        let record = JournalBatch::from_entries(std::slice::from_ref(&gift)).records[0];
        let v1 = encode(&JournalBatchV1 {
            version: 1,
            records: vec![JournalRecordV1 {
                seq: record.seq,
                stamp: record.stamp,
                event: record.event,
                outcome: record.outcome,
            }],
        });
        let back = JournalBatch::decode(&v1).unwrap().into_entries().unwrap();
        assert_eq!(
            back,
            vec![LogEntry {
                totals: None,
                reversed: None,
                ..gift.clone()
            }]
        );

        // Format 3 is format 4 without economy changes: same bytes but the version.
        let mut v3_only = v3.clone();
        v3_only[0] = 3;
        let back = JournalBatch::decode(&v3_only)
            .unwrap()
            .into_entries()
            .unwrap();
        assert_eq!(back, vec![gift.clone(), settlement.clone()]);
        let change = LogEntry {
            seq: 9,
            stamp: Stamp(1_796_083_200_002),
            event: Event::Economy(crate::engine::EconomyChange {
                version: 2,
                digest: 0xFEED,
            }),
            outcome: Outcome {
                seq: 9,
                status: Status::Accepted(Effect::Stored),
                duplicate: false,
                cap: None,
            },
            totals: None,
            reversed: None,
        };
        let v4 = JournalBatch::from_entries(std::slice::from_ref(&change)).encode();
        let back = JournalBatch::decode(&v4).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![change.clone()]);

        // Format 4 is format 5 without purchases, payment times and daily and weekly
        // budgets: same bytes but the version.
        let mut v4_only = v4.clone();
        v4_only[0] = 4;
        let back = JournalBatch::decode(&v4_only)
            .unwrap()
            .into_entries()
            .unwrap();
        assert_eq!(back, vec![change.clone()]);
        let purchase = LogEntry {
            seq: 10,
            stamp: Stamp(1_796_083_200_003),
            event: Event::Purchase(crate::engine::Purchase {
                id: EventId(100),
                user: UserId(3),
                item: crate::engine::ItemId(1),
                count: 2,
            }),
            outcome: Outcome::new(10, Status::Accepted(Effect::Coins(400)), false),
            totals: None,
            reversed: None,
        };
        let v6 = JournalBatch::from_entries(std::slice::from_ref(&purchase)).encode();
        assert_eq!(v6[0], JOURNAL_VERSION);
        assert_eq!(v6[0], JOURNAL_VERSION);
        let back = JournalBatch::decode(&v6).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![purchase.clone()]);
        // Format 5 is format 6 without reversals or video gifts: same bytes but the
        // version.
        let mut v5 = v6.clone();
        v5[0] = 5;
        let back = JournalBatch::decode(&v5).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![purchase.clone()]);
        let video_gift = LogEntry {
            seq: 12,
            stamp: Stamp(1_796_083_200_004),
            event: Event::VideoGift(crate::engine::VideoGift {
                id: EventId(101),
                sender: UserId(3),
                creator: CreatorId(4),
                video: crate::engine::VideoId(77),
                gift: GiftId(0),
                count: 2,
            }),
            outcome: Outcome::new(12, Status::Accepted(Effect::Coins(390)), false),
            totals: Some(GiftTotals {
                creator: 10,
                stream: 10,
            }),
            reversed: None,
        };
        let v6 = JournalBatch::from_entries(std::slice::from_ref(&video_gift)).encode();
        assert_eq!(v6[0], JOURNAL_VERSION);
        let back = JournalBatch::decode(&v6).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![video_gift.clone()]);

        let account = LogEntry {
            seq: 10,
            stamp: Stamp(1_796_083_200_003),
            event: Event::Account(crate::engine::AccountSettings {
                id: EventId(1),
                user: UserId(3),
                region: None,
                adult: true,
                monthly_budget_coins: None.into(),
                daily_budget_coins: Some(100).into(),
                weekly_budget_coins: Some(500).into(),
            }),
            outcome: Outcome::new(10, Status::Accepted(Effect::Stored), false),
            totals: None,
            reversed: None,
        };
        let over = LogEntry {
            seq: 11,
            outcome: Outcome::over_budget(11, crate::engine::BudgetCap::WeeklyPlatformCap),
            totals: None,
            reversed: None,
            ..gift.clone()
        };
        let v5 = JournalBatch::from_entries(&[account.clone(), over.clone()]).encode();
        assert_eq!(v5[0], JOURNAL_VERSION);
        let back = JournalBatch::decode(&v5).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![account.clone(), over.clone()]);

        let reversal = LogEntry {
            seq: 12,
            stamp: Stamp(1_796_083_200_004),
            event: Event::RechargeReversal(crate::engine::RechargeReversal {
                id: EventId(12),
                user: UserId(3),
                recharge: EventId(1),
            }),
            outcome: Outcome::new(
                12,
                Status::Accepted(Effect::Reversed { coins: 0, owed: 40 }),
                false,
            ),
            totals: None,
            reversed: None,
        };
        let v6 = JournalBatch::from_entries(std::slice::from_ref(&reversal)).encode();
        assert_eq!(v6[0], JOURNAL_VERSION);
        let back = JournalBatch::decode(&v6).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![reversal.clone()]);
        let v6 = JournalBatch::from_entries(&[account.clone(), over.clone()]).encode();
        assert_eq!(v6[0], JOURNAL_VERSION);
        let back = JournalBatch::decode(&v6).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![account.clone(), over.clone()]);

        // Format 6: a gift reversal, as journaled (kind 12, with what it took back).
        let reversal = LogEntry {
            seq: 12,
            stamp: Stamp(1_796_083_200_004),
            event: Event::GiftReversal(crate::engine::GiftReversal::new(
                EventId(7),
                UserId(3),
                EventId(99),
            )),
            outcome: Outcome::new(12, Status::Accepted(Effect::Coins(401)), false),
            totals: Some(GiftTotals {
                creator: 0,
                stream: 0,
            }),
            reversed: Some(Box::new(crate::engine::ReversedGift {
                creator: CreatorId(4),
                target: crate::engine::GiftTarget::Stream(StreamId(5)),
                gift: GiftId(0),
                count: 1,
                coins: 1,
                nanos: 500_000_000,
                hour: None,
            })),
        };
        let v6 = JournalBatch::from_entries(std::slice::from_ref(&reversal)).encode();
        let back = JournalBatch::decode(&v6).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![reversal.clone()]);
        let record = JournalBatch::from_entries(std::slice::from_ref(&reversal)).records[0];
        assert_eq!(protocol::encode(&record.event)[0], 12, "kind 12");
        // Format 6 is format 7 without reversals of gifts on videos: same bytes but the
        // version, its reversals on streams.
        let mut v6_only = v6.clone();
        v6_only[0] = 6;
        let back = JournalBatch::decode(&v6_only)
            .unwrap()
            .into_entries()
            .unwrap();
        assert_eq!(back, vec![reversal.clone()]);

        // Format 7: a reversal of a gift on a video (kind 14, the video's id its target;
        // totals on the video).
        let on_video = LogEntry {
            event: Event::GiftReversal(crate::engine::GiftReversal::new(
                EventId(8),
                UserId(3),
                EventId(101),
            )),
            seq: 13,
            outcome: Outcome::new(13, Status::Accepted(Effect::Coins(402)), false),
            reversed: Some(Box::new(crate::engine::ReversedGift {
                target: crate::engine::GiftTarget::Video(crate::engine::VideoId(5)),
                ..**reversal.reversed.as_ref().unwrap()
            })),
            ..reversal.clone()
        };
        let mut v7 = JournalBatch::from_entries(&[reversal.clone(), on_video.clone()]).encode();
        assert_eq!(v7[0], JOURNAL_VERSION);
        v7[0] = 7;
        let back = JournalBatch::decode(&v7).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![reversal.clone(), on_video.clone()]);
        let record = JournalBatch::from_entries(std::slice::from_ref(&on_video)).records[0];
        assert_eq!(protocol::encode(&record.event)[0], 14, "kind 14");
        // Format 8: a battle, kind 15.
        let streams = [crate::engine::StreamId(1), crate::engine::StreamId(2)];
        let battle = LogEntry {
            seq: 14,
            stamp: Stamp(1_796_083_200_009),
            event: Event::Battle(
                crate::engine::Battle::new(crate::engine::BattleId(9), &streams, 10, 20).unwrap(),
            ),
            outcome: Outcome::new(14, Status::Accepted(Effect::Stored), false),
            totals: None,
            reversed: None,
        };
        let v8 = JournalBatch::from_entries(std::slice::from_ref(&battle)).encode();
        let back = JournalBatch::decode(&v8).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![battle.clone()]);
        let record = JournalBatch::from_entries(std::slice::from_ref(&battle)).records[0];
        assert_eq!(protocol::encode(&record.event)[0], 15, "kind 15");

        // Format 9: a reversal whose gift's hour is known (kind 16), on a stream and on
        // a video, reads back with its hour.
        let at = |e: &LogEntry| LogEntry {
            reversed: Some(Box::new(crate::engine::ReversedGift {
                hour: Some(498_900),
                ..**e.reversed.as_ref().unwrap()
            })),
            ..e.clone()
        };
        let (reversal, on_video) = (at(&reversal), at(&on_video));
        let mut v9 = JournalBatch::from_entries(&[reversal.clone(), on_video.clone()]).encode();
        assert_eq!(v9[0], JOURNAL_VERSION);
        v9[0] = 9;
        let back = JournalBatch::decode(&v9).unwrap().into_entries().unwrap();
        assert_eq!(back, vec![reversal.clone(), on_video.clone()]);
        let record = JournalBatch::from_entries(std::slice::from_ref(&on_video)).records[0];
        assert_eq!(protocol::encode(&record.event)[0], 16, "kind 16");

        // Format 10: a battle's close (kind 17), accepted and refused.
        let close = |seq: u64, status: Status| LogEntry {
            seq,
            stamp: Stamp(1_796_083_200_020),
            event: Event::BattleClose(crate::engine::BattleClose {
                battle: crate::engine::BattleId(9),
            }),
            outcome: Outcome::new(seq, status, false),
            totals: None,
            reversed: None,
        };
        let closes = [
            close(
                15,
                Status::Rejected(crate::engine::RejectCode::BattleNotEnded),
            ),
            close(16, Status::Accepted(Effect::Stored)),
        ];
        let v10 = JournalBatch::from_entries(&closes).encode();
        assert_eq!(v10[0], 10);
        let back = JournalBatch::decode(&v10).unwrap().into_entries().unwrap();
        assert_eq!(back, closes.to_vec());
        let record = JournalBatch::from_entries(&closes).records[0];
        assert_eq!(protocol::encode(&record.event)[0], 17, "kind 17");

        let mut v11 = v3.clone();
        v11[0] = 11;
        let err = JournalBatch::decode(&v11)
            .unwrap()
            .into_entries()
            .unwrap_err();
        assert!(err.to_string().contains("version 11"), "{err}");
    }
}
