//! The durable history: every user's events — recharges, gifts (sent, on streams and
//! videos), purchases, reversals, account settings, and a creator's payouts — in a Redis
//! stream per user, written from committed runs off the ack path and kept for
//! `history.retention_ms`.
//!
//! Keys: `giftstream:{hist-<b>}:history:<user>` (b = user id mod `history.buckets`, one
//! Redis Cluster slot per bucket), entry id `<seq>-0`, fields `t` (type), `ms` (stamp),
//! `id` (event id, 32 hex digits), `s` (reject code, "" when accepted), `d` (change of
//! the coin balance), `b` (the balance after it, carried over by lines that do not
//! change it; internal: it gives a recharge reversal its change), `x` (diamonds: minus
//! what a payout paid). Beside the journal (its slot): `history:seq` (the last seq
//! written) and `history:marks` (a sorted set: the first seq of each UTC hour, by stamp),
//! from which a write's `MINID ~` cutoff (the first seq younger than the retention) is
//! taken. Each key expires a retention after its last line (`PEXPIRE`).
//!
//! Exactly once: an entry whose id is not above its stream's last is skipped (a batch
//! written again after a retry or a crash adds nothing), and `history:seq` moves only
//! after every bucket's write of a batch.

use std::collections::VecDeque;

use super::changes::EconomyAt;
use crate::engine::{Effect, Event, EventId, EventKind, LogEntry, Status, UserId};
use crate::persist::follow::{Sink, SinkMetrics};
use crate::persist::journal::JournalError;
use crate::persist::redis::{Ledger, RedisConn};
use crate::telemetry;

/// One hour, ms: the spacing of the time marks.
const HOUR_MS: u64 = 3_600_000;
/// The most time marks kept in memory (the longest retention in hours, and a day).
const MARKS_MAX: usize =
    (crate::config::downstream::HISTORY_RETENTION_MS_MAX / HOUR_MS) as usize + 24;

/// A user's history key in bucket `user mod buckets`.
pub fn user_key(user: UserId, buckets: u32) -> String {
    format!(
        "giftstream:{{hist-{}}}:history:{}",
        user.0 % u64::from(buckets.max(1)),
        user.0
    )
}

/// A line as the history writes it: whose, and its fields. `delta` `None`: taken from
/// the previous line's balance (a recharge reversal); `balance` `None`: the previous
/// line's (the line does not change it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    pub user: UserId,
    pub kind: EventKind,
    pub seq: u64,
    pub stamp_ms: u64,
    pub id: EventId,
    pub code: &'static str,
    pub delta: Option<i128>,
    pub balance: Option<u64>,
    pub diamonds: i64,
}

/// The history line of a committed entry, if it has one (settlements, goals and economy
/// changes have none). The coin change is what the engine's own history line shows: a
/// gift's or purchase's cost (at the economy in force), what of a recharge or a refunded
/// gift reached the balance (a debt is repaid first, and a user in debt has a balance of
/// 0: the smaller of the amount and the balance after), a recharge reversal's fall of
/// the balance (from the previous line's balance).
pub(crate) fn line_of(e: &LogEntry, economy: &crate::economy::Economy) -> Option<Line> {
    let (user, accepted) = (
        match &e.event {
            Event::Recharge(r) => r.user,
            Event::Gift(g) => g.sender,
            Event::VideoGift(g) => g.sender,
            Event::Purchase(p) => p.user,
            Event::RechargeReversal(r) => r.user,
            Event::GiftReversal(r) => r.sender,
            Event::Account(a) => a.user,
            Event::Payout(p) => UserId(p.creator.0),
            Event::StreamGoal(_)
            | Event::Settlement(_)
            | Event::Economy(_)
            | Event::Battle(_)
            | Event::BattleClose(_) => {
                return None;
            }
        },
        match e.outcome.status {
            Status::Accepted(effect) => Some(effect),
            Status::Rejected(_) => None,
        },
    );
    let mut line = Line {
        user,
        kind: e.event.kind(),
        seq: e.seq,
        stamp_ms: e.stamp.0,
        id: e.event.id(),
        code: e.outcome.code().map_or("", |c| c.as_str()),
        delta: Some(0),
        balance: None,
        diamonds: 0,
    };
    let cost = |price: Option<u64>, count: u32| -> i128 {
        -(i128::from(price.unwrap_or(0)) * i128::from(count))
    };
    match (accepted, &e.event) {
        (Some(Effect::Coins(balance)), event) => {
            line.balance = Some(balance);
            line.delta = Some(match event {
                Event::Recharge(r) => i128::from(r.coins.min(balance)),
                Event::Gift(g) => cost(
                    economy.gifts.get(g.gift.0 as usize).map(|s| s.coins),
                    g.count,
                ),
                Event::VideoGift(g) => cost(
                    economy.gifts.get(g.gift.0 as usize).map(|s| s.coins),
                    g.count,
                ),
                Event::Purchase(p) => cost(
                    economy.items.get(p.item.0 as usize).map(|s| s.coins),
                    p.count,
                ),
                Event::GiftReversal(_) => {
                    let coins = e.reversed.as_deref().map_or(0, |r| r.coins);
                    i128::from(coins.min(balance))
                }
                _ => 0,
            });
        }
        (Some(Effect::Reversed { coins, .. }), _) => {
            line.balance = Some(coins);
            line.delta = None;
        }
        (Some(Effect::PaidOut { .. }), Event::Payout(p)) => {
            line.diamonds = -i64::try_from(p.diamonds).unwrap_or(i64::MAX);
        }
        _ => {}
    }
    Some(line)
}

/// Writes one bucket's lines. KEYS: the users' keys; ARGV[1] the retention (PEXPIRE,
/// ms), ARGV[2] the `MINID ~` cutoff seq (0: none); then per line: its key's index,
/// seq, t, ms, id, s, d ("" = from the previous line's balance), b ("" = the previous
/// line's), x. A line whose seq is not above its stream's last id is skipped, and so is
/// a rejected event's line for a user who has none (as the engine's history, which
/// keeps none for a user without a wallet).
const WRITE: &str = r"
local touched = {}
local added = 0
for i = 3, #ARGV, 9 do
  local key = KEYS[tonumber(ARGV[i])]
  local seq = tonumber(ARGV[i + 1])
  local d, b = ARGV[i + 6], ARGV[i + 7]
  local top, prev = 0, nil
  local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if #last > 0 then
    top = tonumber(string.match(last[1][1], '^(%d+)'))
    local f = last[1][2]
    for j = 1, #f, 2 do
      if f[j] == 'b' then prev = f[j + 1] end
    end
  end
  -- A rejected event of a user without lines leaves none (hostile ids cost no memory).
  if seq > top and not (ARGV[i + 5] ~= '' and #last == 0) then
    if b == '' then b = prev or '' end
    if d == '' then
      if prev ~= nil and prev ~= '' then
        d = tostring(tonumber(b) - tonumber(prev))
      else
        d = '0'
      end
    end
    redis.call('XADD', key, 'MINID', '~', ARGV[2] .. '-0', ARGV[i + 1] .. '-0',
      't', ARGV[i + 2], 'ms', ARGV[i + 3], 'id', ARGV[i + 4], 's', ARGV[i + 5],
      'd', d, 'b', b, 'x', ARGV[i + 8])
    added = added + 1
    if not touched[key] then
      touched[key] = true
      redis.call('PEXPIRE', key, ARGV[1])
    end
  end
end
return added
";

/// The durable history's writer.
pub struct History {
    ledger: Ledger,
    buckets: u32,
    retention_ms: u64,
    economy_at: EconomyAt,
    write: redis::Script,
    /// (stamp ms, first seq) of each UTC hour seen, oldest first (`history:marks`).
    marks: VecDeque<(u64, u64)>,
}

impl History {
    pub fn new(ledger: &Ledger, buckets: u32, retention_ms: u64, economy_at: EconomyAt) -> History {
        History {
            ledger: ledger.clone(),
            buckets: buckets.max(1),
            retention_ms,
            economy_at,
            write: redis::Script::new(WRITE),
            marks: VecDeque::new(),
        }
    }

    /// The first seq younger than the retention as the marks tell (0: none known).
    fn cutoff(&self, now_ms: u64) -> u64 {
        let oldest_kept = now_ms.saturating_sub(self.retention_ms);
        self.marks
            .iter()
            .take_while(|(ms, _)| *ms <= oldest_kept)
            .last()
            .map_or(0, |&(_, seq)| seq)
    }

    /// Marks `(stamp, seq)` if it opens a later hour than the last mark; returns whether.
    fn mark(&mut self, stamp_ms: u64, seq: u64) -> bool {
        let hour = stamp_ms / HOUR_MS;
        if self
            .marks
            .back()
            .is_some_and(|(ms, _)| ms / HOUR_MS >= hour)
        {
            return false;
        }
        self.marks.push_back((stamp_ms, seq));
        while self.marks.len() > MARKS_MAX {
            self.marks.pop_front();
        }
        true
    }
}

impl Sink for History {
    fn name(&self) -> &'static str {
        "history"
    }

    fn metrics(&self) -> SinkMetrics {
        SinkMetrics {
            lag_seconds: telemetry::HISTORY_LAG_SECONDS,
            events_total: telemetry::HISTORY_EVENTS_TOTAL,
            write_failures_total: telemetry::HISTORY_WRITE_FAILURES_TOTAL,
            skipped_total: telemetry::HISTORY_SKIPPED_TOTAL,
        }
    }

    async fn resume(&mut self, conn: &mut RedisConn, committed: u64) -> Result<u64, JournalError> {
        let seq_key = self.ledger.history_seq_key();
        // A history switched on now begins after what is committed.
        let _: () = redis::cmd("SET")
            .arg(&seq_key)
            .arg(committed)
            .arg("NX")
            .query_async(conn)
            .await?;
        let held: u64 = redis::cmd("GET").arg(&seq_key).query_async(conn).await?;
        let marks: Vec<(u64, f64)> = redis::cmd("ZRANGE")
            .arg(self.ledger.history_marks_key())
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await?;
        self.marks = marks
            .into_iter()
            .map(|(seq, ms)| (ms as u64, seq))
            .collect();
        Ok(held)
    }

    async fn skip_to(&mut self, conn: &mut RedisConn, seq: u64) -> Result<(), JournalError> {
        let _: () = redis::cmd("SET")
            .arg(self.ledger.history_seq_key())
            .arg(seq)
            .query_async(conn)
            .await?;
        Ok(())
    }

    async fn write(
        &mut self,
        conn: &mut RedisConn,
        entries: &[LogEntry],
    ) -> Result<Option<u64>, JournalError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(None);
        };
        let held: Option<u64> = redis::cmd("GET")
            .arg(self.ledger.history_seq_key())
            .query_async(conn)
            .await?;
        if let Some(held) = held.filter(|&h| h + 1 < first.seq) {
            return Ok(Some(held));
        }
        let mut economy = (self.economy_at)(first.seq);
        let mut buckets: Vec<Vec<Line>> = vec![Vec::new(); self.buckets as usize];
        let mut new_marks = Vec::new();
        for e in entries {
            if let Event::Economy(_) = e.event {
                // (The change itself is numbered under the version before it.)
                economy = (self.economy_at)(e.seq + 1);
            }
            if self.mark(e.stamp.0, e.seq) {
                new_marks.push((e.stamp.0, e.seq));
            }
            if let Some(line) = line_of(e, &economy) {
                buckets[(line.user.0 % u64::from(self.buckets)) as usize].push(line);
            }
        }
        let cutoff = self.cutoff(crate::clock::now().0);
        let writes = buckets
            .iter()
            .filter(|lines| !lines.is_empty())
            .map(|lines| {
                let mut conn = conn.clone();
                let call = self.invocation(lines, cutoff);
                async move { call.invoke_async::<u64>(&mut conn).await }
            });
        for written in futures::future::join_all(writes).await {
            written?;
        }
        let mut done = redis::pipe();
        done.cmd("SET")
            .arg(self.ledger.history_seq_key())
            .arg(last.seq)
            .ignore();
        let marks_key = self.ledger.history_marks_key();
        for (ms, seq) in new_marks {
            done.cmd("ZADD").arg(&marks_key).arg(ms).arg(seq).ignore();
            done.cmd("ZREMRANGEBYSCORE")
                .arg(&marks_key)
                .arg("-inf")
                .arg(format!(
                    "({}",
                    ms.saturating_sub(self.retention_ms + 24 * HOUR_MS)
                ))
                .ignore();
        }
        let _: () = done.query_async(conn).await?;
        Ok(None)
    }
}

impl History {
    /// One bucket's script call for `lines`.
    fn invocation(&self, lines: &[Line], cutoff: u64) -> redis::ScriptInvocation<'_> {
        let mut call = self.write.prepare_invoke();
        let mut keys: Vec<UserId> = Vec::new();
        call.arg(self.retention_ms).arg(cutoff);
        for line in lines {
            let index = match keys.iter().position(|&u| u == line.user) {
                Some(i) => i,
                None => {
                    keys.push(line.user);
                    call.key(user_key(line.user, self.buckets));
                    keys.len() - 1
                }
            };
            call.arg(index + 1)
                .arg(line.seq)
                .arg(line.kind.as_str())
                .arg(line.stamp_ms)
                .arg(format!("{:032x}", line.id.0))
                .arg(line.code)
                .arg(line.delta.map_or(String::new(), |d| d.to_string()))
                .arg(line.balance.map_or(String::new(), |b| b.to_string()))
                .arg(line.diamonds);
        }
        call
    }
}

/// A line as read back for `GET /v1/users/{id}/transactions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryLine {
    pub seq: u64,
    pub stamp_ms: u64,
    pub kind: EventKind,
    pub event_id: EventId,
    /// The reject code's string (`None`: accepted).
    pub code: Option<String>,
    pub coins_delta: i128,
    /// Minus the diamonds a payout paid out (0 for every other line).
    pub diamonds_delta: i64,
}

/// Reads users' durable history pages (the HTTP route's reads).
#[derive(Clone)]
pub struct HistoryReader {
    /// Multiplexed: each read clones it.
    conn: RedisConn,
    buckets: u32,
    retention_ms: u64,
}

impl HistoryReader {
    pub fn new(conn: RedisConn, buckets: u32, retention_ms: u64) -> HistoryReader {
        HistoryReader {
            conn,
            buckets,
            retention_ms,
        }
    }

    /// Up to `limit` of `user`'s lines numbered before `before` (all: `None`), newest
    /// first, none older than the retention at `now_ms`.
    pub async fn page(
        &self,
        user: UserId,
        before: Option<u64>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<HistoryLine>, crate::persist::read_model::ReadError> {
        let end = before.map_or("+".to_owned(), |b| format!("({b}-0"));
        let mut conn = self.conn.clone();
        let page: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(user_key(user, self.buckets))
            .arg(end)
            .arg("-")
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await?;
        let oldest = now_ms.saturating_sub(self.retention_ms);
        Ok(page
            .into_iter()
            .filter_map(|(id, fields)| parse(&id, &fields))
            .filter(|l| l.stamp_ms >= oldest)
            .collect())
    }
}

/// A stream entry read back as a line (`None`: not one this build wrote).
fn parse(id: &str, fields: &[(String, String)]) -> Option<HistoryLine> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let kind = field("t")?;
    Some(HistoryLine {
        seq: id.split('-').next()?.parse().ok()?,
        stamp_ms: field("ms")?.parse().ok()?,
        kind: EventKind::ALL.into_iter().find(|k| k.as_str() == kind)?,
        event_id: EventId(u128::from_str_radix(field("id")?, 16).ok()?),
        code: field("s").filter(|s| !s.is_empty()).map(str::to_owned),
        coins_delta: field("d")?.parse().ok()?,
        diamonds_delta: field("x").unwrap_or("0").parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_the_first_seq_of_the_newest_hour_older_than_the_retention() {
        let economy: EconomyAt =
            std::sync::Arc::new(|_| std::sync::Arc::new(crate::economy::Economy::embedded()));
        let mut h = History::new(&Ledger::default(), 4, 2 * HOUR_MS, economy);
        assert!(h.mark(10, 1));
        assert!(!h.mark(20, 2), "same hour");
        assert!(h.mark(HOUR_MS + 5, 30));
        assert!(h.mark(3 * HOUR_MS, 70));
        assert_eq!(h.cutoff(HOUR_MS), 0, "nothing older than two hours");
        assert_eq!(h.cutoff(2 * HOUR_MS + 10), 1);
        assert_eq!(h.cutoff(3 * HOUR_MS + 5), 30);
        assert_eq!(h.cutoff(10 * HOUR_MS), 70);
    }

    #[test]
    fn a_written_line_parses_back() {
        let fields: Vec<(String, String)> = [
            ("t", "gift"),
            ("ms", "123"),
            ("id", "0000000000000000000000000000002a"),
            ("s", "INSUFFICIENT_COINS"),
            ("d", "-5"),
            ("b", "7"),
            ("x", "0"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let line = parse("42-0", &fields).unwrap();
        assert_eq!(line.seq, 42);
        assert_eq!(line.kind, EventKind::Gift);
        assert_eq!(line.event_id, EventId(42));
        assert_eq!(line.code.as_deref(), Some("INSUFFICIENT_COINS"));
        assert_eq!(line.coins_delta, -5);
    }
}
