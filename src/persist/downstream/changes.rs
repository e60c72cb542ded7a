//! The change stream: every committed event with its outcome, exactly once and in
//! sequence order, as JSON on a versioned schema ([`SCHEMA_VERSION`], documented in
//! docs/operations.md "The change stream"), in the Redis stream
//! `giftstream:{ledger}:changes` (a cluster node's: `giftstream:{ledger-<node>}:changes`,
//! in its journal's slot: one stream per node).
//!
//! Each entry's id is `<seq>-0` and its one field `event` holds the JSON document. The
//! ids make a write idempotent: one script checks the stream's last id and adds only the
//! entries after it, so a batch written again (a retry whose reply was lost, a restart
//! after a crash) adds nothing twice, and a batch after a gap is refused. Only committed
//! runs are written, so the stream never shows an event that is not durable.
//! Retention: `XADD ... MAXLEN ~ change_stream.events_max`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::economy::Economy;
use crate::engine::{Effect, Event, EventId, GiftTarget, LogEntry, Outcome, RejectCode, Status};
use crate::persist::follow::{Sink, SinkMetrics};
use crate::persist::journal::JournalError;
use crate::persist::redis::{Ledger, RedisConn};
use crate::telemetry;

/// The schema version every document carries as `"v"`. A change of a field's meaning
/// or a removed field is a new version; a new field or event type is not.
pub const SCHEMA_VERSION: u32 = 1;

/// The stream entries' one field.
pub const FIELD: &str = "event";

/// The economy an event numbered `seq` was applied under (gift, package and item names).
pub type EconomyAt = Arc<dyn Fn(u64) -> Arc<Economy> + Send + Sync>;

/// An event id as UUID text.
fn id_text(id: EventId) -> String {
    uuid::Uuid::from_u128(id.0).to_string()
}

/// The JSON document of one committed entry (schema version 1):
/// `{"v", "seq", "stamp_ms", "type", "event_id", "event": {...}, "outcome": {...}}`.
pub fn document(e: &LogEntry, economy: &Economy) -> Value {
    json!({
        "v": SCHEMA_VERSION,
        "seq": e.seq,
        "stamp_ms": e.stamp.0,
        "type": e.event.kind().as_str(),
        "event_id": id_text(e.event.id()),
        "event": event_fields(e, economy),
        "outcome": outcome_fields(&e.outcome),
    })
}

fn named<T>(list: &[T], code: u32, id: impl Fn(&T) -> &str) -> Value {
    list.get(code as usize)
        .map_or(Value::Null, |x| Value::String(id(x).to_owned()))
}

/// The event's own fields: ids as numbers (event ids as UUID text), money as decimal
/// strings, catalog entries by code and by name (the economy's string id; null for a
/// code it does not know).
fn event_fields(e: &LogEntry, economy: &Economy) -> Value {
    let gift_name = |code: u32| named(&economy.gifts, code, |g| g.id.as_str());
    match &e.event {
        Event::Recharge(r) => json!({
            "user": r.user.0,
            "coins": r.coins,
            "price": r.price.to_string(),
            "currency": r.currency.as_str(),
            "package_code": r.package.get().map(|p| p.0),
            "package": r.package.get().map_or(Value::Null, |p| named(&economy.packages, p.0, |x| x.id.as_str())),
            "channel": r.channel.as_str(),
            "paid_ms": (r.paid_ms != 0).then_some(r.paid_ms),
        }),
        Event::Gift(g) => json!({
            "sender": g.sender.0,
            "creator": g.creator.0,
            "stream": g.stream.0,
            "gift_code": g.gift.0,
            "gift": gift_name(g.gift.0),
            "count": g.count,
        }),
        Event::VideoGift(g) => json!({
            "sender": g.sender.0,
            "creator": g.creator.0,
            "video": g.video.0,
            "gift_code": g.gift.0,
            "gift": gift_name(g.gift.0),
            "count": g.count,
        }),
        Event::Purchase(p) => json!({
            "user": p.user.0,
            "item_code": p.item.0,
            "item": named(&economy.items, p.item.0, |x| x.id.as_str()),
            "count": p.count,
        }),
        Event::RechargeReversal(r) => json!({
            "user": r.user.0,
            "recharge_event_id": id_text(r.recharge),
        }),
        Event::GiftReversal(r) => {
            let reversed = e.reversed.as_deref().map(|g| {
                let (kind, target) = match g.target {
                    GiftTarget::Stream(s) => ("stream", s.0),
                    GiftTarget::Video(v) => ("video", v.0),
                };
                json!({
                    "creator": g.creator.0,
                    kind: target,
                    "gift_code": g.gift.0,
                    "gift": gift_name(g.gift.0),
                    "count": g.count,
                    "coins": g.coins,
                    "diamonds_nanos": g.nanos.to_string(),
                })
            });
            json!({
                "sender": r.sender.0,
                "gift_event_id": id_text(r.gift),
                "reversed": reversed,
            })
        }
        Event::Payout(p) => json!({
            "creator": p.creator.0,
            "diamonds": p.diamonds,
            "currency": p.currency.as_str(),
        }),
        Event::Account(a) => json!({
            "user": a.user.0,
            "region": a.region.map(|r| r.as_str().to_owned()),
            "adult": a.adult,
            "monthly_budget_coins": a.monthly_budget_coins.get(),
            "weekly_budget_coins": a.weekly_budget_coins.get(),
            "daily_budget_coins": a.daily_budget_coins.get(),
        }),
        Event::StreamGoal(g) => json!({
            "stream": g.stream.0,
            "creator": g.creator.0,
            "coins_target": g.coins_target,
        }),
        Event::Battle(b) => json!({
            "battle": b.battle.0,
            "streams": b.streams().iter().map(|s| s.0).collect::<Vec<u64>>(),
            "start_ms": b.start_ms,
            "end_ms": b.end_ms(),
        }),
        Event::BattleClose(c) => json!({
            "battle": c.battle.0,
        }),
        Event::Settlement(s) => json!({
            "creator": s.creator.0,
            "source_node_index": s.source,
            "diamonds": s.diamonds,
            "nanos": s.nanos,
        }),
        Event::Economy(c) => json!({
            "version": c.version,
            "digest": format!("{:016x}", c.digest),
        }),
    }
}

/// `{"status": "accepted", ...effect}` or `{"status": "rejected", "code", "cap"?}`.
fn outcome_fields(o: &Outcome) -> Value {
    match o.status {
        Status::Accepted(effect) => {
            let mut v = match effect {
                Effect::Coins(coins) => json!({ "coins": coins }),
                Effect::PaidOut {
                    diamonds_available,
                    value,
                } => json!({
                    "diamonds_available": diamonds_available,
                    "value": value.to_string(),
                }),
                Effect::Stored => json!({}),
                Effect::Settled { credited } => json!({ "diamonds_credited": credited }),
                Effect::Reversed { coins, owed } => json!({ "coins": coins, "coins_owed": owed }),
            };
            v["status"] = json!("accepted");
            v
        }
        Status::Rejected(code) => {
            let mut v = json!({ "status": "rejected", "code": code.as_str() });
            if code == RejectCode::BudgetExceeded {
                v["cap"] = json!(o.cap.map(|c| c.as_str()));
            }
            v
        }
    }
}

/// Adds a batch's entries after the stream's last id, refusing to leave a gap.
/// KEYS[1] the stream; ARGV[1] `MAXLEN ~` bound, ARGV[2] the first seq, then per entry
/// its seq and document. Returns `{1, added}`, or `{0, last}` when the stream's last seq
/// is before the first one minus one (nothing added).
const WRITE: &str = r"
local top = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      top = tonumber(string.match(info[i + 1], '^(%d+)'))
    end
  end
end
if top < tonumber(ARGV[2]) - 1 then
  return {0, top}
end
local added = 0
for i = 3, #ARGV, 2 do
  if tonumber(ARGV[i]) > top then
    redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i] .. '-0', 'event', ARGV[i + 1])
    added = added + 1
  end
end
return {1, added}
";

/// Where the stream is: its last id's seq. KEYS[1] the stream, ARGV[1] a seq, ARGV[2]
/// `1` to move the last id up to ARGV[1] if it is below (events skipped), `0` to do so
/// only for a stream that does not exist yet — made empty, with its last id at ARGV[1]
/// (the events committed before the change stream was switched on are not in it).
const POSITION: &str = r"
local function top()
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      return tonumber(string.match(info[i + 1], '^(%d+)'))
    end
  end
  return 0
end
local new = redis.call('EXISTS', KEYS[1]) == 0
if new then
  redis.call('XGROUP', 'CREATE', KEYS[1], 'giftstream-init', '$', 'MKSTREAM')
  redis.call('XGROUP', 'DESTROY', KEYS[1], 'giftstream-init')
end
local t = top()
if (new or ARGV[2] == '1') and t < tonumber(ARGV[1]) then
  redis.call('XSETID', KEYS[1], ARGV[1] .. '-0')
  t = tonumber(ARGV[1])
end
return t
";

/// The change stream's writer.
pub struct ChangeStream {
    key: String,
    events_max: u64,
    economy_at: EconomyAt,
    write: redis::Script,
    position: redis::Script,
}

impl ChangeStream {
    pub fn new(ledger: &Ledger, events_max: u64, economy_at: EconomyAt) -> ChangeStream {
        ChangeStream {
            key: ledger.changes_key(),
            events_max,
            economy_at,
            write: redis::Script::new(WRITE),
            position: redis::Script::new(POSITION),
        }
    }
}

impl Sink for ChangeStream {
    fn name(&self) -> &'static str {
        "change-stream"
    }

    fn metrics(&self) -> SinkMetrics {
        SinkMetrics {
            lag_seconds: telemetry::CHANGE_STREAM_LAG_SECONDS,
            events_total: telemetry::CHANGE_STREAM_EVENTS_TOTAL,
            write_failures_total: telemetry::CHANGE_STREAM_WRITE_FAILURES_TOTAL,
            skipped_total: telemetry::CHANGE_STREAM_SKIPPED_TOTAL,
        }
    }

    async fn resume(&mut self, conn: &mut RedisConn, committed: u64) -> Result<u64, JournalError> {
        let held: u64 = self
            .position
            .key(&self.key)
            .arg(committed)
            .arg(0)
            .invoke_async(conn)
            .await?;
        Ok(held)
    }

    async fn skip_to(&mut self, conn: &mut RedisConn, seq: u64) -> Result<(), JournalError> {
        let _: u64 = self
            .position
            .key(&self.key)
            .arg(seq)
            .arg(1)
            .invoke_async(conn)
            .await?;
        Ok(())
    }

    async fn write(
        &mut self,
        conn: &mut RedisConn,
        entries: &[LogEntry],
    ) -> Result<Option<u64>, JournalError> {
        let Some(first) = entries.first() else {
            return Ok(None);
        };
        let mut economy = (self.economy_at)(first.seq);
        let mut call = self.write.prepare_invoke();
        call.key(&self.key).arg(self.events_max).arg(first.seq);
        for e in entries {
            if let Event::Economy(_) = e.event {
                // (The change itself is numbered under the version before it.)
                economy = (self.economy_at)(e.seq + 1);
            }
            call.arg(e.seq).arg(document(e, &economy).to_string());
        }
        let (ok, n): (u8, u64) = call.invoke_async(conn).await?;
        Ok((ok == 0).then_some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CreatorId, Gift, GiftId, Stamp, StreamId, UserId};

    #[test]
    fn a_gift_document_has_the_documented_fields() {
        let economy = Economy::embedded();
        let e = LogEntry {
            seq: 7,
            stamp: Stamp(1_000),
            event: Event::Gift(Gift {
                id: EventId(0x2a),
                sender: UserId(1),
                creator: CreatorId(2),
                stream: StreamId(3),
                gift: GiftId(0),
                count: 2,
            }),
            outcome: Outcome::new(7, Status::Rejected(RejectCode::InsufficientCoins), false),
            totals: None,
            reversed: None,
        };
        let d = document(&e, &economy);
        assert_eq!(d["v"], 1);
        assert_eq!(d["seq"], 7);
        assert_eq!(d["stamp_ms"], 1_000);
        assert_eq!(d["type"], "gift");
        assert_eq!(d["event_id"], "00000000-0000-0000-0000-00000000002a");
        assert_eq!(d["event"]["sender"], 1);
        assert_eq!(d["event"]["gift"], economy.gifts[0].id.as_str());
        assert_eq!(d["outcome"]["status"], "rejected");
        assert_eq!(d["outcome"]["code"], "INSUFFICIENT_COINS");
    }
}
