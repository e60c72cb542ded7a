//! Checks over the whole ledger at a consistent cut: the invariants of SPEC §2.5
//! ([`Engine::audit`]), state held for routing keys not owned ([`Engine::foreign`]), and
//! a fingerprint of the state for comparing a replay with the live run.
//!
//! Size: the invariants of every feature (purchases, the hold, promotions, reversals)
//! are checked at one cut, and the fingerprint prints every field they keep; split, the
//! parts would each need the whole cut.

use rust_decimal::Decimal;
use serde::Serialize;

use super::Engine;
use super::cut::Cut;
use super::event::{CreatorId, StreamId, VideoId};
pub use super::shard::PromotionSales;
use super::topk::TopK;
use crate::economy::Currency;

/// Ledger-wide counts and totals at a consistent cut.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LedgerTotals {
    pub last_seq: u64,
    pub wallets: u64,
    pub creators: u64,
    pub streams: u64,
    pub coins_recharged: u128,
    /// Coins recharge reversals took back (from balances, and as debt).
    pub coins_reversed: u128,
    pub coins_in_wallets: u128,
    /// Coins users owe (reversed recharges they had spent).
    pub coins_owed: u128,
    /// Users who owe coins.
    pub users_in_debt: u64,
    /// Recharges that can still be reversed.
    pub recharge_records: u64,
    /// Coins spent on gifts, gross (reversed gifts included; received by creators:
    /// `coins_spent − coins_refunded`).
    pub coins_spent: u128,
    /// Coins given back by gift reversals.
    pub coins_refunded: u128,
    /// Accepted gift reversals.
    pub gift_reversals: u64,
    /// Diamonds taken back by gift reversals, in billionths (exact; credited diamonds
    /// are net of them).
    pub diamonds_reversed_nanos: u128,
    /// Gift records kept for reversals, and those dropped early by the bound.
    pub gift_records: u64,
    pub gift_records_dropped: u64,
    /// Coins spent on purchases (`items`): the platform's revenue in coins, credited to
    /// no creator.
    pub coins_spent_on_purchases: u128,
    /// Per item code: items bought and the coins spent on them.
    pub purchases: Vec<(u32, u128, u128)>,
    pub coins_received_by_creators: u128,
    pub coins_received_by_streams: u128,
    /// Videos gifted on, and the coins they received (gifts on videos: counted in
    /// `coins_spent` and by creators, not by streams).
    pub videos: u64,
    pub coins_received_by_videos: u128,
    pub diamonds_credited: u128,
    /// Diamonds other cluster nodes credited this node's creators (reported here).
    pub diamonds_settled_in: u128,
    pub diamonds_paid: u128,
    /// Diamonds not released yet by the earnings hold, at the ledger's time.
    pub diamonds_held: u128,
    /// Diamonds a payout may spend: credited + settled in − held − paid.
    pub diamonds_available: u128,
    /// Money of the recharges sold, per currency (gross: reversals do not lower it).
    pub revenue: Vec<(Currency, Decimal)>,
    /// Money of the recharges reversed, per currency (net revenue = revenue − this).
    pub revenue_reversed: Vec<(Currency, Decimal)>,
    pub paid_out: Vec<(Currency, Decimal)>,
    /// Sales per promotion id (their coins and money are in the totals above too).
    pub promotions: Vec<(String, PromotionSales)>,
}

/// Result of [`Engine::foreign`]: how much state belongs to routing keys not owned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Foreign {
    pub wallets: u64,
    pub creators: u64,
    pub goals: u64,
    /// The first one found, in words ("the wallet of user 42").
    pub example: Option<String>,
}

impl Foreign {
    pub fn is_empty(&self) -> bool {
        self.example.is_none()
    }
}

/// Result of [`Engine::audit`]: the totals and every violated invariant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub totals: LedgerTotals,
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

impl Engine {
    /// Checks the ledger's invariants at a consistent cut (SPEC §2.5):
    /// coins recharged − reversed = coins in wallets − owed + coins spent on gifts + coins
    /// spent on purchases (each shard's item lines summing to its purchase total; a user
    /// who owes has a balance of 0); coins spent on gifts − refunded by gift reversals
    /// (of gifts on streams and videos) = coins received by creators = coins received
    /// by streams + by videos; per creator diamonds credited <= coins
    /// received (floor(coins received x share) under one share) and paid <= credited;
    /// per-gifter aggregates sum to the book totals; top-K lists equal the top of the
    /// aggregates; each battle side's score is the sum of its gifters'.
    pub fn audit(&self) -> AuditReport {
        let cut = self.lock_all();
        let mut report = AuditReport::default();
        let mut v = Vec::new();
        let t = &mut report.totals;
        t.last_seq = self.last_seq();
        let parts = self.audit_senders(&cut, t, &mut v);
        self.audit_creators(&cut, &parts.creators, t, &mut v);
        self.audit_holds(&cut, t, &mut v);
        audit_streams(&cut, &parts.streams, t, &mut v);
        // Each battle side is the sum of its gifters (what they gave inside the window).
        if let Err(e) = cut.battles.check() {
            v.push(e);
        }
        drop(cut);
        t.revenue = parts.revenue.into_iter().collect();
        t.revenue_reversed = parts.revenue_reversed.into_iter().collect();
        t.purchases = parts
            .purchases
            .into_iter()
            .map(|(item, (count, coins))| (item, count, coins))
            .collect();
        t.promotions = parts.promotions.into_iter().collect();
        audit_conservation(t, &mut v);
        audit_promotions(t, &mut v);
        report.violations = v;
        report
    }

    /// Totals of the sender shards, and their checks: credits merged, each shard's top
    /// gifters the top of its gifter totals.
    fn audit_senders(
        &self,
        cut: &Cut<'_>,
        t: &mut LedgerTotals,
        v: &mut Vec<String>,
    ) -> GifterParts {
        let mut revenue = std::collections::BTreeMap::<Currency, Decimal>::new();
        let mut revenue_reversed = std::collections::BTreeMap::<Currency, Decimal>::new();
        let mut promotions = std::collections::BTreeMap::<String, PromotionSales>::new();
        let mut creator_parts = std::collections::HashMap::<CreatorId, u128>::new();
        let mut stream_parts = std::collections::HashMap::<StreamId, u128>::new();
        let mut purchases = std::collections::BTreeMap::<u32, (u128, u128)>::new();
        let mut videos = std::collections::HashSet::<VideoId>::new();
        for (i, s) in cut.senders.iter().enumerate() {
            t.wallets += s.wallets.len() as u64;
            t.coins_recharged += s.totals.coins_recharged;
            t.coins_spent += s.totals.coins_spent;
            t.coins_refunded += s.gift_records.coins_refunded;
            t.gift_reversals += s.gift_records.reversals;
            t.diamonds_reversed_nanos += s.gift_records.nanos_reversed;
            t.gift_records += s.gift_records.len() as u64;
            t.gift_records_dropped += s.gift_records.dropped_early;
            t.coins_spent_on_purchases += s.purchases.coins;
            s.audit_reversals(i, t, &mut revenue_reversed, v);
            let mut by_items = 0u128;
            for (item, (count, coins)) in &s.purchases.items {
                let line = purchases.entry(item.0).or_default();
                line.0 += count;
                line.1 += coins;
                by_items += coins;
            }
            if by_items != s.purchases.coins {
                v.push(format!(
                    "sender shard {i}: purchases by item sum to {by_items} coins, its total is {}",
                    s.purchases.coins
                ));
            }
            t.coins_in_wallets += s
                .wallets
                .values()
                .map(|w| u128::from(w.coins))
                .sum::<u128>();
            for (c, amount) in &s.totals.revenue {
                *revenue.entry(*c).or_default() += *amount;
            }
            for (id, sales) in &s.promotions {
                let total = promotions.entry(id.clone()).or_default();
                total.recharges += sales.recharges;
                total.bonus_coins += sales.bonus_coins;
                for (c, amount) in &sales.revenue {
                    *total.revenue.entry(*c).or_default() += *amount;
                }
            }
            audit_spending(i, s, v);
            if !s.touched_creators.is_empty() || !s.touched_streams.is_empty() {
                v.push(format!("sender shard {i} has unmerged credits at a cut"));
            }
            let mut tops = std::collections::HashMap::<CreatorId, TopK<u64>>::new();
            for (&(creator, user), &coins) in &s.creator_gifters {
                *creator_parts.entry(creator).or_default() += coins.get();
                tops.entry(creator)
                    .or_default()
                    .offer(self.config.top_k, user.0, coins.0);
            }
            for (creator, part) in &s.creators {
                if tops.get(creator).map_or(&[][..], |t| t.entries()) != part.top.ranked() {
                    v.push(format!(
                        "creator {creator}: top gifters in shard {i} differ from its gifter totals"
                    ));
                }
            }
            for (&(stream, _), &coins) in &s.stream_gifters {
                *stream_parts.entry(stream).or_default() += coins.get();
            }
            videos.extend(s.videos.parts.keys().copied());
            t.coins_received_by_videos += s.videos.audit(i, self.config.top_k, v);
        }
        t.videos = videos.len() as u64;
        GifterParts {
            creators: creator_parts,
            streams: stream_parts,
            revenue,
            revenue_reversed,
            purchases,
            promotions,
        }
    }

    /// Totals of the creator books, and their checks: credited <= coins received, paid
    /// <= credited + settled in, gifter totals summing to coins received, the top
    /// creators list.
    fn audit_creators(
        &self,
        cut: &Cut<'_>,
        creator_parts: &std::collections::HashMap<CreatorId, u128>,
        t: &mut LedgerTotals,
        v: &mut Vec<String>,
    ) {
        let mut top_check = Vec::new();
        for c in cut.creators.iter() {
            t.creators += c.creators.len() as u64;
            for &creator in c.settled.keys() {
                t.diamonds_settled_in += c.settled_in(creator);
            }
            for (creator, totals) in &c.creators {
                t.coins_received_by_creators += totals.coins_received;
                let credited = c.credited(*creator);
                t.diamonds_credited += credited;
                // creator_share is at most 1, whatever economies were in force.
                if credited > totals.coins_received {
                    v.push(format!(
                        "creator {creator}: {credited} diamonds credited for {} coins",
                        totals.coins_received
                    ));
                }
                t.diamonds_paid += totals.diamonds_paid;
                let settled_in = c.settled_in(*creator);
                if totals.diamonds_paid > credited + settled_in {
                    v.push(format!(
                        "creator {creator}: paid {} > credited {credited} + settled in {settled_in}",
                        totals.diamonds_paid
                    ));
                }
                if creator_parts.get(creator).copied().unwrap_or(0) != totals.coins_received {
                    v.push(format!(
                        "creator {creator}: gifter totals do not sum to coins received"
                    ));
                }
                // A creator paid out only diamonds settled in from other nodes was never
                // credited here, so it is not ranked here.
                if totals.coins_received > 0 {
                    top_check.push((credited, creator.0));
                }
            }
            for (cur, amount) in &c.paid_value {
                t.paid_out.push((*cur, *amount));
            }
        }
        top_check.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        top_check.truncate(self.config.top_k);
        let parts: Vec<TopK> = cut.creators.iter().map(|c| c.top.clone()).collect();
        if TopK::merge(&parts, self.config.top_k) != top_check {
            v.push("top creators differ from creator totals".to_owned());
        }
    }
    /// The earnings hold's checks: per creator (credited or settled in here), credited +
    /// settled in = held + available + paid with none of them negative (paid never
    /// more than released); buckets in increasing release time, none empty, at most
    /// `HOLD_BUCKETS_MAX`; and the ledger's totals.
    fn audit_holds(&self, cut: &Cut<'_>, t: &mut LedgerTotals, v: &mut Vec<String>) {
        let clock = self.hold_clock.load(std::sync::atomic::Ordering::Acquire);
        for c in cut.creators.iter() {
            let mut creators: Vec<CreatorId> = c.creators.keys().copied().collect();
            creators.extend(c.settled.keys().copied());
            creators.extend(c.holds.creators.keys().copied());
            creators.sort_unstable();
            creators.dedup();
            for creator in creators {
                let d = c.diamonds_at(creator, clock);
                t.diamonds_held += d.held;
                t.diamonds_available += d.available;
                let whole = d.credited + d.settled_in;
                if d.held + d.available + d.paid != whole || d.held > whole {
                    v.push(format!(
                        "creator {creator}: credited {} + settled in {} != held {} + available {} + paid {}",
                        d.credited, d.settled_in, d.held, d.available, d.paid
                    ));
                }
                if d.paid > whole - d.held {
                    v.push(format!(
                        "creator {creator}: paid {} > released {}",
                        d.paid,
                        whole - d.held
                    ));
                }
            }
            for (creator, buckets) in &c.holds.creators {
                let ordered = buckets
                    .windows(2)
                    .all(|w| w[0].release_ms < w[1].release_ms);
                if !ordered
                    || buckets.is_empty()
                    || buckets.len() > super::hold::HOLD_BUCKETS_MAX
                    || buckets.iter().any(|b| b.nanos() == 0)
                {
                    v.push(format!(
                        "creator {creator}: {} held buckets, unordered, empty or over the bound",
                        buckets.len()
                    ));
                }
            }
        }
        if t.diamonds_held + t.diamonds_available + t.diamonds_paid
            != t.diamonds_credited + t.diamonds_settled_in
        {
            v.push(format!(
                "diamonds credited {} + settled in {} != held {} + available {} + paid {}",
                t.diamonds_credited,
                t.diamonds_settled_in,
                t.diamonds_held,
                t.diamonds_available,
                t.diamonds_paid
            ));
        }
    }

    /// The state held for routing keys `owns` rejects: wallets of other users, payouts
    /// or settlement reports of other creators, goals of streams whose creator is
    /// another's. A cluster node checks its recovered ledger with its partition map:
    /// anything found means the state is another ledger's (a snapshot directory copied
    /// to the wrong node) or the map changed under the ledger.
    pub fn foreign(&self, owns: impl Fn(u64) -> bool) -> Foreign {
        let mut found = Foreign::default();
        let mut note = |what: String| {
            found.example.get_or_insert(what);
        };
        for shard in self.senders.iter() {
            for user in shard.lock().wallets.keys().filter(|u| !owns(u.0)) {
                found.wallets += 1;
                note(format!("the wallet of user {user}"));
            }
        }
        for shard in self.creators.iter() {
            let shard = shard.lock();
            let paid = shard
                .creators
                .iter()
                .filter(|(_, t)| t.diamonds_paid > 0)
                .map(|(c, _)| *c);
            let mut creators: Vec<CreatorId> = paid.chain(shard.settled.keys().copied()).collect();
            creators.sort_unstable();
            creators.dedup();
            for creator in creators.into_iter().filter(|c| !owns(c.0)) {
                found.creators += 1;
                note(format!("the payouts of creator {creator}"));
            }
        }
        for shard in self.streams.iter() {
            for (stream, totals) in shard.lock().streams.iter() {
                if let (true, Some(creator)) = (totals.goal_set, totals.creator)
                    && !owns(creator.0)
                {
                    found.goals += 1;
                    note(format!("the goal of stream {stream} (creator {creator})"));
                }
            }
        }
        found
    }

    /// A fingerprint of the whole ledger state at a consistent cut, for replay checks:
    /// equal states give equal fingerprints. (Debug-formats sorted state; for tests and
    /// the audit, not for hot paths.)
    pub fn state_fingerprint(&self) -> String {
        self.fingerprint(true)
    }

    /// [`Engine::state_fingerprint`] as snapshot formats 1 to 6 could hold the state:
    /// wallets without their day and week counts (a month's count is kept; the day a
    /// migrated wallet counts from is the first of its month). What a ledger loaded
    /// from such a snapshot is compared on with one that ran the same events.
    pub fn state_fingerprint_v6(&self) -> String {
        self.fingerprint(false)
    }

    fn fingerprint(&self, windows: bool) -> String {
        use std::fmt::Write;
        let cut = self.lock_all();
        let mut out = String::new();
        // (The hold clock is not printed: a state of a format before 7 did not record it,
        // and it shows in what is held below and in every payout a replay checks.)
        let _ = writeln!(out, "seq {}", self.last_seq());
        for (i, s) in cut.senders.iter().enumerate() {
            let mut wallets: Vec<String> = s
                .wallets
                .iter()
                .map(|(u, w)| {
                    let b = s.budgets_of(*u, w);
                    if windows {
                        format!("{u:?}: {w:?} {b:?}")
                    } else {
                        let month = super::event::month_of_day(w.day);
                        let (coins, spent, region) = (w.coins, w.spent_this_month, w.region());
                        let monthly = b.monthly;
                        format!(
                            "{u:?}: {coins} {spent} {monthly} {month} {region:?} {}",
                            w.adult
                        )
                    }
                })
                .collect();
            wallets.sort_unstable();
            let mut hist: Vec<_> = s.histories.iter().collect();
            hist.sort_unstable_by_key(|(u, _)| **u);
            let mut creators: Vec<_> = s
                .creators
                .iter()
                .map(|(c, p)| (c, &p.gifts, p.top.ranked(), p.pending_coins))
                .collect();
            creators.sort_unstable_by_key(|e| *e.0);
            let mut streams: Vec<_> = s
                .streams
                .iter()
                .map(|(st, p)| (st, p.top.ranked(), p.pending_coins))
                .collect();
            streams.sort_unstable_by_key(|e| *e.0);
            let mut creator_gifters: Vec<_> = s.creator_gifters.iter().collect();
            creator_gifters.sort_unstable();
            let mut stream_gifters: Vec<_> = s.stream_gifters.iter().collect();
            stream_gifters.sort_unstable();
            let _ = writeln!(
                out,
                "sender {i}: {wallets:?} {hist:?} {creators:?} {streams:?} {creator_gifters:?} {stream_gifters:?} {:?} {:?}",
                s.totals, s.purchases
            );
            let mut videos: Vec<_> = s
                .videos
                .parts
                .iter()
                .map(|(id, p)| (id, p.coins, p.creator, &p.gifts, p.top.ranked()))
                .collect();
            videos.sort_unstable_by_key(|e| *e.0);
            let mut video_gifters: Vec<_> = s.videos.gifters.iter().collect();
            video_gifters.sort_unstable();
            let _ = writeln!(out, "videos {i}: {videos:?} {video_gifters:?}");
            // Not in what formats before 8 could hold: a state loaded from one has none.
            if windows {
                let mut debts: Vec<_> = s.debts.iter().collect();
                debts.sort_unstable();
                let records: Vec<_> = s.recharges.in_order().collect();
                let book = (&s.recharges.revenue_reversed, s.recharges.coins_reversed);
                let _ = writeln!(out, "reversals {i}: {records:?} {book:?} {debts:?}");
            }
            // (Formats before 8 recorded no gifts: compared only in the full fingerprint.)
            if windows {
                let g = &s.gift_records;
                let _ = writeln!(
                    out,
                    "gift records {i}: {:?} {} {} {} {}",
                    g.canonical(),
                    g.coins_refunded,
                    g.nanos_reversed,
                    g.reversals,
                    g.dropped_early
                );
            }
            // The windowed leaderboards and the gift hours (their windows): kept only
            // while on, in the full fingerprint (a ledger of a format before 10 has none).
            if windows && self.config.windows.enabled {
                let hours = s.gift_records.hours();
                let _ = writeln!(out, "windows {i}: {} {hours:?}", s.windows.canonical());
            }
        }
        for (i, c) in cut.creators.iter().enumerate() {
            let mut creators: Vec<_> = c.creators.iter().collect();
            creators.sort_unstable_by_key(|(id, _)| **id);
            let mut settled: Vec<_> = c.settled.iter().collect();
            settled.sort_unstable_by_key(|(id, _)| **id);
            let mut credited: Vec<_> = c.credited.iter().collect();
            credited.sort_unstable_by_key(|(id, _)| **id);
            let mut fractions: Vec<_> = c.settled_nanos.iter().collect();
            fractions.sort_unstable_by_key(|(id, _)| **id);
            let _ = writeln!(
                out,
                "creator {i}: {creators:?} {credited:?} {:?} {:?} {settled:?} {fractions:?}",
                c.top, c.paid_value
            );
            // Held diamonds as of the ledger's time (released buckets may linger until
            // their creator is touched again, which depends on the merge order).
            let hold_clock = self.hold_clock.load(std::sync::atomic::Ordering::Acquire);
            let _ = writeln!(out, "held {i}: {:?}", c.holds.canonical(hold_clock));
            if windows && self.config.windows.enabled {
                let _ = writeln!(out, "creator windows {i}: {}", c.windows.canonical());
            }
        }
        for (i, s) in cut.streams.iter().enumerate() {
            let mut streams: Vec<_> = s.streams.iter().collect();
            streams.sort_unstable_by_key(|(id, _)| **id);
            let _ = writeln!(out, "stream {i}: {streams:?}");
        }
        // The ids remembered at the newest stamp: the same set whatever order concurrent
        // chunks inserted them in (a replay inserts them in sequence order).
        // (Across shards: which id shard holds an id depends on the ledger's secret.)
        let newest = cut.ids.iter().map(|w| w.newest()).max().unwrap_or_default();
        let mut ids: Vec<_> = cut.ids.iter().flat_map(|w| w.canonical(newest)).collect();
        ids.sort_unstable_by_key(|&(check, number, outcome)| (outcome.seq, check, number));
        let _ = writeln!(out, "ids: {ids:?}");
        let _ = writeln!(out, "battles: {}", cut.battles.canonical());
        out
    }
}

/// The per-gifter totals summed across sender shards, the revenue, and the purchases
/// by item code.
struct GifterParts {
    creators: std::collections::HashMap<CreatorId, u128>,
    streams: std::collections::HashMap<StreamId, u128>,
    revenue: std::collections::BTreeMap<Currency, Decimal>,
    revenue_reversed: std::collections::BTreeMap<Currency, Decimal>,
    purchases: std::collections::BTreeMap<u32, (u128, u128)>,
    promotions: std::collections::BTreeMap<String, PromotionSales>,
}

/// Promotion sales are part of the totals: their bonus coins within the coins
/// recharged, their money within the revenue of each currency.
fn audit_promotions(t: &LedgerTotals, v: &mut Vec<String>) {
    let bonus: u128 = t.promotions.iter().map(|(_, s)| s.bonus_coins).sum();
    if bonus > t.coins_recharged {
        v.push(format!(
            "promotion bonus coins {bonus} exceed the coins recharged {}",
            t.coins_recharged
        ));
    }
    let mut by_currency = std::collections::BTreeMap::<Currency, Decimal>::new();
    for (_, sales) in &t.promotions {
        for (c, amount) in &sales.revenue {
            *by_currency.entry(*c).or_default() += *amount;
        }
    }
    for (c, promoted) in by_currency {
        let total = t
            .revenue
            .iter()
            .find(|(k, _)| *k == c)
            .map_or(Decimal::ZERO, |(_, a)| *a);
        if promoted > total {
            v.push(format!(
                "promotion revenue {promoted} {c} exceeds the revenue {total} {c}"
            ));
        }
    }
}

/// Totals of the stream books; gifter totals must sum to each stream's coins received.
fn audit_streams(
    cut: &Cut<'_>,
    stream_parts: &std::collections::HashMap<StreamId, u128>,
    t: &mut LedgerTotals,
    v: &mut Vec<String>,
) {
    for s in cut.streams.iter() {
        t.streams += s.streams.len() as u64;
        for (stream, totals) in &s.streams {
            t.coins_received_by_streams += totals.coins_received;
            if stream_parts.get(stream).copied().unwrap_or(0) != totals.coins_received {
                v.push(format!(
                    "stream {stream}: gifter totals do not sum to coins received"
                ));
            }
        }
    }
}

/// Spending counts and budgets: a day's count is within its week's and its month's (the
/// day lies in both, and a late gift counts in all three of the latest), the months'
/// counts sum to no more than the coins spent, and a wallet's budgets flag says exactly
/// whether it has budgets beside it (none of them unset, none over the bounds).
fn audit_spending(i: usize, s: &super::shard::SenderShard, v: &mut Vec<String>) {
    use super::rules::{Budgets, WINDOW_LIMIT_COINS_MAX};
    let mut spent_months = 0u128;
    for (user, w) in &s.wallets {
        spent_months += u128::from(w.spent_this_month);
        if w.spent_today > w.spent_this_week || u64::from(w.spent_today) > w.spent_this_month {
            v.push(format!(
                "user {user}: spent today {} exceeds this week's {} or this month's {}",
                w.spent_today, w.spent_this_week, w.spent_this_month
            ));
        }
        if w.budgets != s.budgets.contains_key(user) {
            v.push(format!(
                "user {user}: budgets flag {} disagrees with its budgets",
                w.budgets
            ));
        }
    }
    // The counters count gifts and purchases alike.
    let spent = s.totals.coins_spent + s.purchases.coins;
    if spent_months > spent {
        v.push(format!(
            "sender shard {i}: this month's spending {spent_months} exceeds coins spent {spent}"
        ));
    }
    for (user, b) in &s.budgets {
        let over = |l: u64| l != super::rules::NO_BUDGET && l > WINDOW_LIMIT_COINS_MAX;
        if !s.wallets.contains_key(user) || *b == Budgets::NONE || over(b.daily) || over(b.weekly) {
            v.push(format!(
                "user {user}: budgets {b:?} without a wallet, empty or out of bounds"
            ));
        }
    }
}

/// Coins are conserved: recharged − reversed = in wallets − owed + spent on gifts (net
/// of refunds) + spent on purchases (checked as recharged + owed = in wallets + gifts +
/// purchases + reversed: no side goes negative); gifts net of refunds = received by
/// creators = received by streams + received by videos.
fn audit_conservation(t: &LedgerTotals, v: &mut Vec<String>) {
    // Gifts net of refunds (a refund never exceeds what was spent: checked here).
    let gifts = t.coins_spent.saturating_sub(t.coins_refunded);
    if t.coins_refunded > t.coins_spent {
        v.push(format!(
            "coins refunded {} exceed the coins spent on gifts {}",
            t.coins_refunded, t.coins_spent
        ));
    }
    let (r, rev) = (t.coins_recharged, t.coins_reversed);
    let (w, o) = (t.coins_in_wallets, t.coins_owed);
    let p = t.coins_spent_on_purchases;
    if r + o != w + gifts + p + rev {
        v.push(format!(
            "coins recharged {r} - reversed {rev} != in wallets {w} - owed {o} + spent on gifts {} - refunded {} + spent on purchases {p}",
            t.coins_spent, t.coins_refunded
        ));
    }
    if gifts != t.coins_received_by_creators {
        v.push(format!(
            "coins spent {} − refunded {} != received by creators {}",
            t.coins_spent, t.coins_refunded, t.coins_received_by_creators
        ));
    }
    if gifts != t.coins_received_by_streams + t.coins_received_by_videos {
        v.push(format!(
            "coins spent {} − refunded {} != received by streams {} + received by videos {}",
            t.coins_spent,
            t.coins_refunded,
            t.coins_received_by_streams,
            t.coins_received_by_videos
        ));
    }
}
