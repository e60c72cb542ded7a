//! Seeded simulation of the engine against an independent model of SPEC §1, in the
//! spirit of TigerBeetle's VOPR.
//!
//! # The model
//! [`Model`] is a plain sequential ledger written from SPEC §1 alone: it calls none of
//! the engine's rules, only reads the economy's configuration data (catalog, packages,
//! share, diamond values, minimums, regions). It keeps
//! - wallets: coins, region, adult flag, monthly budget, and the coins spent on gifts in
//!   the wallet's month. A wallet's month never goes back: a gift stamped in an earlier
//!   UTC month than one already applied counts toward the later month; and (#31,
//!   feature 5) daily and weekly budgets and the coins spent in the wallet's latest UTC
//!   day and ISO week (the model's own Thursday-rule week), checked with the economy's
//!   platform caps after the monthly budget: weekly before daily, the platform's cap
//!   before the user's, the outcome naming the cap. A run's clock crosses one of
//!   [`BOUNDARIES`] by seed: a day and month, a day and week, a year inside one ISO
//!   week (2026-12-31 to 2027-01-01, both in 2026-W53), all at once;
//! - creators: coins received, diamonds credited = floor(Σ coins of each gift × the
//!   `creator_share` in force when it was applied) (kept exactly, in billionths: shares
//!   have at most 9 decimals), diamonds paid, gift counts; streams (coins, goal) and
//!   per-gifter totals;
//! - the earnings hold: each credit's `(release time, billionths)` under the hold in
//!   force when it was credited, the ledger's time (newest stamp of the numbered
//!   recharges, gifts, account settings and payouts); a payout spends released diamonds
//!   only (economy versions draw holds of 0 to 45 s, so payouts race releases);
//! - promotions: a package recharge is judged at its payment time (`paid_ms`, else its
//!   stamp): while a version's offer on the package is in force for the wallet's region
//!   and the channel (`start <= t < end`), its coins are the package's plus the bonus
//!   and its price the offer's (or the package's in a currency the offer leaves alone);
//!   otherwise the package's terms. Sales per promotion (recharges, bonus coins, money)
//!   are compared with the audit's;
//! - the economy in force: a journaled economy change puts its version's terms in force
//!   for every later sequence number. The model resolves a gift or package code to its
//!   string id with its own registry (the embedded catalog's order, then each new id in
//!   order of first appearance) and looks the id up in the terms in force: an id a
//!   version left out is `UNKNOWN_GIFT` (a package: `AMOUNT_OUT_OF_RANGE`);
//! - purchases (issue #31, feature 7): an item's code resolves through the model's own
//!   item registry like a gift's; a purchase spends coins under the same account,
//!   budget (one monthly budget for gifts and purchases) and funds checks, credits no
//!   creator, and the coins spent on purchases are the audit's platform revenue;
//! - gifts on videos (issue #31, feature 6): a gift naming a video instead of a stream
//!   passes the same checks and credits its creator alike; it counts in the video's own
//!   coins, smallest creator, gift counts and per-gifter totals (its top gifters), never
//!   in a stream's; the audit's coins received by videos are the model's;
//! - recharge reversals (issue #31, feature 2): every accepted recharge is remembered
//!   (user, coins credited, stamp); a reversal naming one of the user's, stamped within
//!   the economy's `recharge_reversal_window_ms` of it and not reversed yet, takes
//!   min(balance, coins) from the wallet and the rest becomes the model's own debt;
//!   otherwise `ORIGINAL_NOT_FOUND` / `ALREADY_REVERSED`. A recharge repays the debt
//!   before the balance; a gift or purchase of a user who owes is `ACCOUNT_IN_DEBT`
//!   (after the age and region checks). Reversals name recharges of any earlier batch
//!   (spent or not, twice, other users', gifts), so they race payouts, cuts and restarts;
//! - gift reversals (issue #31, feature 3): per accepted gift under a hold — on a
//!   stream or a video —, its sender, creator, target, code, count, coins, billionths
//!   and release time (the hold in force when it was credited). A reversal naming a gift
//!   of its sender whose release time is after the ledger's time gives the coins back
//!   (a debt repaid first) and takes back the credit (creator, the stream's or the
//!   video's coins, pair totals, gift counts — a video's too —, the held credit; no
//!   stream for a video's gift) — `ALREADY_REVERSED` the second time; otherwise
//!   `NOT_REVERSIBLE` when no hold is in force or the gift is an accepted gift in the
//!   sender's last `history_per_user` lines, else `ORIGINAL_NOT_FOUND`. The model keeps
//!   those lines itself;
//! - ids reused after the retry horizon (review F6): a gift whose (sender, id) names a
//!   gift record still held at the gift's stamp is not recorded (the first record stays,
//!   reversed or not); another sender's gift under the id is that sender's own record
//!   (review G: whatever the shards); a recharge whose (user, id) names a recharge still within the reversal
//!   window at its stamp likewise. The main sweep keeps every id (no reuse past the
//!   horizon); the horizon sweep below reuses ids under a hold and a short horizon;
//! - ONE global idempotency map `event id -> (event content, original outcome)`, across
//!   users, event types and shards: an exact retry gets the original outcome with
//!   `duplicate: true` and changes nothing; the same id with other content gets
//!   `EVENT_ID_REUSED` with `seq: 0`, is not journaled and changes nothing. Every fresh
//!   event takes the next sequence number.
//!
//! A batch is applied in two passes (PROTOCOL.md "Order within a request"): its sender
//! events (recharges, gifts, video gifts, purchases, account settings, recharge
//! reversals) first, each sender's in batch order; then payouts, goals and gift
//! reversals in batch order. The model checks it on every batch's fresh answers
//! (`check_batch_order`): so a gift after a reversal in its batch is judged without the
//! refund, as the seq order the model replays says.
//!
//! Checks run in SPEC order: the event (`UNKNOWN_GIFT`, `INVALID_COUNT`,
//! `AMOUNT_OUT_OF_RANGE`, `UNSUPPORTED_CURRENCY`, `SELF_GIFT`, `OVERFLOW`), the account
//! (`AGE_RESTRICTED`, `REGION_UNAVAILABLE`), limits (`BUDGET_EXCEEDED`,
//! `BELOW_PAYOUT_MINIMUM`), funds (`INSUFFICIENT_COINS`, `INSUFFICIENT_DIAMONDS`).
//!
//! # The check: linearizability by sequence number
//! Three or four threads apply pre-generated random batches to one engine at once,
//! draining the log and taking a snapshot in between. Afterwards the drained log,
//! sorted by seq, must be gap-free `1..=last_seq`, and the model run over it IN SEQ
//! ORDER must produce every journaled outcome exactly (balances, diamonds available,
//! payout values): the sequence numbers must describe an order in which the events
//! could have run one at a time. Every answer a thread got live must be the journaled
//! outcome of its event (exactly one non-duplicate answer per journaled id), an exact
//! retry's answer the original's, a reused id's answer `EVENT_ID_REUSED`. Final
//! wallets, creators, streams and top lists must equal the model's, the audit must be
//! clean, and the ledger must restart: a replay of the whole log, and snapshot state +
//! replay of the rest, must both succeed and give the live engine's
//! `state_fingerprint`; the restarted engines still answer retries and reused ids.
//!
//! # Seeds
//! `simulation_seed_sweep` runs seeds 0..200 (a few seconds in release). A seed
//! fixes the workload: engine config, thread count, every batch, stamp and event id.
//! The interleaving of the threads is the OS's, so a concurrency failure may need its
//! seed run a few times; `GIFTSTREAM_SIM_SERIAL=1` applies the same batches from one
//! thread (fully deterministic), which tells a concurrency bug from a rule bug.
//!
//! ```text
//! # replay one seed (the failure message prints this line)
//! GIFTSTREAM_SIM_SEED=7 cargo test --release --test it simulation -- --nocapture
//! # the long sweep: seeds 0..5000, or a range of them
//! GIFTSTREAM_SIM_SEEDS=5000 nice -n 5 cargo test --release --test it simulation_seed_sweep -- --nocapture
//! GIFTSTREAM_SIM_SEEDS=5000..10000 nice -n 5 cargo test --release --test it simulation_seed_sweep -- --nocapture
//! ```
//!
//! The deterministic regression tests below pin the defects the sweep found: an id
//! reused by another user or as another event type, a full idempotency window that
//! forgot an id, a payout racing gifts that made the log unreplayable, and a gift
//! stamped in an earlier month than one already applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use giftstream::economy::{Economy, EconomyFile, Region, SpendingCapsFile};
use giftstream::engine::{
    AccountSettings, Battle, BattleClose, BattleId, BudgetCap, Channel, CreatorId, Effect, Engine,
    EngineConfig, EngineState, Event, EventId, Gift, GiftId, GiftReversal, GiftTarget, IdSecret,
    ItemId, LogEntry, Outcome, PackageId, Payout, Purchase, Recharge, RechargeReversal, RejectCode,
    ReversedGift, Stamp, Status, StreamGoal, StreamId, UserId, VideoGift, VideoId,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use crate::support::*;

/// Users `1..=USERS`; the first `CREATORS` of them are also creators.
const USERS: u64 = 12;
const CREATORS: u64 = 4;
/// Creators that receive no gifts (payouts to them are refused).
const UNFUNDED_CREATORS: [u64; 2] = [5, 6];
/// `support::gift` sends creator `c`'s gifts in stream `STREAM_BASE + c`.
const STREAM_BASE: u64 = 9000;
/// Gifts on videos go to videos `VIDEO_BASE + 1 ..= VIDEO_BASE + VIDEOS` (some numbered
/// like streams that get gifts and goals: their aggregates must stay apart).
const VIDEO_BASE: u64 = 9000;
const VIDEOS: u64 = 6;
/// A stream that gets a goal but no gifts.
const GOAL_ONLY_STREAM: u64 = 9100;
const SWEEP_SEEDS: u64 = 200;
const BATCHES_PER_THREAD: usize = 40;
const BATCH_EVENTS_MAX: usize = 12;
/// Half the span of the run's stamps around the month boundary `DEC`.
const SPAN_MS: u64 = 60_000;

/// The answer to an event id reused with other content (SPEC §1).
const EVENT_ID_REUSED: RejectCode = RejectCode::EventIdReused;

/// Returns `Err(message)` from the enclosing function unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($message:tt)+) => {
        if !$cond {
            return Err(format!($($message)+));
        }
    };
}

// ---- the model ------------------------------------------------------------------

#[derive(Debug, Clone, Copy)]
struct ModelWallet {
    coins: u64,
    /// Coins spent on gifts in `month` (`utc_month`).
    spent: u64,
    month: u32,
    budget: Option<u64>,
    region: Option<Region>,
    adult: bool,
    /// Daily and weekly spending (feature 5 of #31): [`ModelWindows`].
    windows: ModelWindows,
}

impl Default for ModelWallet {
    /// A user never registered: an adult with no region and no budget.
    fn default() -> Self {
        ModelWallet {
            coins: 0,
            spent: 0,
            month: 0,
            budget: None,
            region: None,
            adult: true,
            windows: ModelWindows::default(),
        }
    }
}

// ---- spending caps: the model's day and ISO week (issue #31, feature 5) ----------

/// A wallet's daily and weekly budgets and what it spent in its latest UTC day and ISO
/// week. Like the month, each key never goes back: a gift stamped in an earlier day
/// (week) than one already applied counts toward the later one.
#[derive(Debug, Clone, Copy, Default)]
struct ModelWindows {
    daily: Option<u64>,
    weekly: Option<u64>,
    /// `utc_day` of the latest gift, and the coins spent on gifts that day.
    day: u64,
    spent_day: u64,
    /// `iso_week` of the latest gift, and the coins spent on gifts that week.
    week: u64,
    spent_week: u64,
}

impl ModelWindows {
    fn spent_on(&self, day: u64) -> u64 {
        if self.day >= day { self.spent_day } else { 0 }
    }

    fn spent_in_week(&self, week: u64) -> u64 {
        if self.week >= week {
            self.spent_week
        } else {
            0
        }
    }

    /// Counts a gift of `cost` coins stamped `stamp`.
    fn count(&mut self, stamp: Stamp, cost: u64) {
        let (day, week) = (utc_day(stamp), iso_week(stamp));
        self.spent_day = self.spent_on(day) + cost;
        self.spent_week = self.spent_in_week(week) + cost;
        self.day = self.day.max(day);
        self.week = self.week.max(week);
    }
}

/// The UTC day of a stamp: days since 1970-01-01.
fn utc_day(stamp: Stamp) -> u64 {
    stamp.0 / 86_400_000
}

/// The ISO 8601 week of a stamp as `iso_year * 100 + week`, by the rule that defines it:
/// weeks run Monday to Sunday, and a week belongs to the year of its Thursday (week 1
/// holds the year's first Thursday). Counted by the model itself from 1970.
fn iso_week(stamp: Stamp) -> u64 {
    let days = utc_day(stamp);
    // 1970-01-01 was a Thursday: weekday 0 = Monday.
    let weekday = (days + 3) % 7;
    let thursday = days + 3 - weekday;
    let year = u64::from(utc_month(Stamp(thursday * 86_400_000)) / 12);
    let leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let jan1: u64 = (1970..year).map(|y| if leap(y) { 366 } else { 365 }).sum();
    year * 100 + (thursday - jan1) / 7 + 1
}

/// The platform's caps in force: `(daily, weekly)` coins per user.
fn platform_caps(economy: &Economy) -> (Option<u64>, Option<u64>) {
    let caps = economy.to_file().spending_caps;
    (
        caps.as_ref().and_then(|c| c.daily_coins),
        caps.as_ref().and_then(|c| c.weekly_coins),
    )
}

/// The limits a gift of `cost` must pass after the monthly budget, in SPEC order of
/// precedence: weekly before daily, the platform's cap before the user's own budget.
fn window_limits(
    w: &ModelWallet,
    economy: &Economy,
    stamp: Stamp,
    cost: u64,
) -> Result<(), BudgetCap> {
    let (daily_cap, weekly_cap) = platform_caps(economy);
    let week = w.windows.spent_in_week(iso_week(stamp)) + cost;
    let day = w.windows.spent_on(utc_day(stamp)) + cost;
    let over = |spent: u64, limit: Option<u64>| limit.is_some_and(|l| spent > l);
    if over(week, weekly_cap) {
        return Err(BudgetCap::WeeklyPlatformCap);
    }
    if over(week, w.windows.weekly) {
        return Err(BudgetCap::WeeklyBudget);
    }
    if over(day, daily_cap) {
        return Err(BudgetCap::DailyPlatformCap);
    }
    if over(day, w.windows.daily) {
        return Err(BudgetCap::DailyBudget);
    }
    Ok(())
}

#[test]
fn the_models_iso_weeks_follow_the_thursday_rule() {
    let at = |ms: u64| Stamp(ms);
    let wk = |year: u64, week: u64| year * 100 + week;
    // 2026-12-31 (Thu) and 2027-01-01 (Fri) are in 2026-W53; 2027-01-04 (Mon) is W01.
    assert_eq!(iso_week(at(1_798_761_600_000 - 1)), wk(2026, 53));
    assert_eq!(iso_week(at(1_798_761_600_000)), wk(2026, 53));
    assert_eq!(
        iso_week(at(1_798_761_600_000 + 3 * 86_400_000)),
        wk(2027, 1)
    );
    // 2026-12-06 (Sun) 23:59:59.999 is W49, 2026-12-07 (Mon) 00:00 W50.
    assert_eq!(iso_week(at(1_796_601_600_000 - 1)), wk(2026, 49));
    assert_eq!(iso_week(at(1_796_601_600_000)), wk(2026, 50));
    // 2029-01-01 is a Monday: 2029-W01, and 2028-12-31 ends 2028-W52.
    assert_eq!(iso_week(at(1_861_920_000_000)), wk(2029, 1));
    assert_eq!(iso_week(at(1_861_920_000_000 - 1)), wk(2028, 52));
    assert_eq!(iso_week(at(0)), wk(1970, 1));
}

// ---- the model, continued --------------------------------------------------------

impl ModelWallet {
    /// Spent in `month`: the wallet's month never goes back, so an earlier month counts
    /// toward the wallet's.
    fn spent_in(&self, month: u32) -> u64 {
        if self.month >= month { self.spent } else { 0 }
    }
}

#[derive(Debug, Clone, Default)]
struct ModelCreator {
    coins_received: u128,
    /// Diamonds credited, in billionths of a diamond.
    credited_nanos: u128,
    diamonds_paid: u128,
    gifts: BTreeMap<u32, u128>,
    /// Earnings hold: `(release time, billionths, gift id)` of every credit made under a
    /// hold.
    held: Vec<(u64, u128, EventId)>,
}

/// A video's totals (gifts on videos, #31 feature 6).
#[derive(Debug, Clone, Default)]
struct ModelVideo {
    coins: u128,
    /// The smallest creator gifted to on it.
    lowest_creator: Option<CreatorId>,
    gifts: BTreeMap<u32, u128>,
}

/// A video as compared: creator, coins received, gift counts.
type VideoFields = (Option<CreatorId>, u128, Vec<(GiftId, u128)>);

#[derive(Debug, Clone, Copy, Default)]
struct ModelStream {
    coins: u128,
    /// The smallest creator gifted to here.
    lowest_creator: Option<CreatorId>,
    /// `(creator, coins_target)` of the last goal set.
    goal: Option<(CreatorId, u64)>,
}

/// A wallet as compared: coins, spent this month, budget, region, adult; spent today,
/// spent this week, daily and weekly budgets.
type WalletFields = (
    u64,
    u64,
    Option<u64>,
    Option<Region>,
    bool,
    (u64, u64, Option<u64>, Option<u64>),
    u64,
);
/// A creator as compared: coins received, diamonds credited, available, gift counts.
type CreatorFields = (u128, u128, u128, Vec<(GiftId, u128)>);
/// A stream as compared: creator, coins received, `(target, progress)`.
type StreamFields = (Option<CreatorId>, u128, Option<(u64, u128)>);

/// A gift the simulation's economy versions may add: never in the embedded catalog.
const NEW_GIFT: &str = "meteor";
/// An item the simulation's economy versions may add: never in the embedded catalog.
const NEW_ITEM: &str = "boost";

/// Economy versions by digest, as the run put them in force.
type Versions = HashMap<u64, Economy>;

/// The sequential ledger of SPEC §1 (see the module doc).
struct Model {
    /// The terms in force (read by string id only: `gifts`, `packages`).
    economy: Economy,
    /// The model's own registry: catalog string ids by code.
    gift_codes: Vec<String>,
    package_codes: Vec<String>,
    /// The `items` catalog's string ids by code (purchases).
    item_codes: Vec<String>,
    /// Coins spent on purchases: the platform's revenue in coins.
    purchased: u128,
    /// Accepted recharges by (user, event id): (coins credited, stamp, reversed). An id
    /// is unique within the horizon only: another user's recharge under a reused id is
    /// another recharge.
    recharges: HashMap<(UserId, EventId), (u64, u64, bool)>,
    /// Coins owed, per user who owes.
    debts: BTreeMap<UserId, u64>,
    /// Coins reversals took back.
    reversed: u128,
    /// Coins given back by gift reversals.
    refunded: u128,
    versions: Versions,
    wallets: BTreeMap<UserId, ModelWallet>,
    creators: BTreeMap<CreatorId, ModelCreator>,
    streams: BTreeMap<StreamId, ModelStream>,
    creator_gifters: BTreeMap<(CreatorId, UserId), u128>,
    stream_gifters: BTreeMap<(StreamId, UserId), u128>,
    videos: BTreeMap<VideoId, ModelVideo>,
    video_gifters: BTreeMap<(VideoId, UserId), u128>,
    ids: HashMap<IdKey, (Event, Outcome)>,
    last_seq: u64,
    /// Earnings hold: the ledger's time, the newest stamp of every numbered recharge,
    /// gift, account setting and payout (never goes back).
    hold_clock: u64,
    /// Per promotion id: (recharges, bonus coins, money per currency).
    promotion_sales: BTreeMap<String, (u64, u128, BTreeMap<String, Decimal>)>,
    /// Gift reversals: every accepted gift made under a hold, by id.
    /// By (sender, gift id): a reversal names both (review G).
    gift_records: HashMap<(UserId, EventId), ModelGiftRecord>,
    /// Whether the last gift applied got a gift record of its own (`battle_gift`).
    last_gift_recorded: bool,
    /// PK battles held, by battle id (`ModelBattle`).
    battles: BTreeMap<u64, ModelBattle>,
    /// Per user with a wallet, its last `history_per_user` events: `(id, an accepted
    /// gift)`.
    histories: HashMap<UserId, std::collections::VecDeque<(EventId, bool)>>,
    history_per_user: usize,
    /// What the last accepted reversal took back (compared with its journaled event).
    last_reversed: Option<ReversedGift>,
    /// Windowed leaderboards (#32 feature 1): per (kind, the model's own key of the
    /// window, board), per id (gifter, or creator on `Board::Creators`), its coins and
    /// the number of the event that last changed them (a creator's: the largest).
    windowed: BTreeMap<WindowBoard, BTreeMap<u64, (u128, u64)>>,
    /// Gift popularity (#32 feature 6): per (kind, key, creator or `None` for all,
    /// gift code), gifts sent and their coins.
    gift_counts: BTreeMap<GiftLine, (u64, u64)>,
}

/// A window's board in the model: (kind, the model's key, board).
type WindowBoard = (usize, u64, Board);
/// A window's gift line in the model: (kind, key, creator or `None`, gift code).
type GiftLine = (usize, u64, Option<CreatorId>, u32);

/// A windowed leaderboard of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Board {
    Creator(CreatorId),
    Stream(StreamId),
    Creators,
}

/// The model's keys of the hour, the day, the ISO week and the month holding `stamp`:
/// its own counting (the week as `iso_year * 100 + week`), growing with time.
fn model_windows(stamp: u64) -> [u64; 4] {
    [
        stamp / 3_600_000,
        utc_day(Stamp(stamp)),
        iso_week(Stamp(stamp)),
        u64::from(utc_month(Stamp(stamp))),
    ]
}

/// The oldest key of `kind` kept `kept` windows back from the ledger's time `now` (the
/// model's keys grow with time: a key at or after it is kept). `None`: nothing kept.
fn model_oldest_kept(kind: usize, now: u64, kept: u32) -> Option<u64> {
    let back = u64::from(kept.checked_sub(1)?);
    Some(match kind {
        0 => (now / 3_600_000).saturating_sub(back),
        1 => utc_day(Stamp(now)).saturating_sub(back),
        2 => iso_week(Stamp(now.saturating_sub(back * 7 * 86_400_000))),
        _ => u64::from(utc_month(Stamp(now))).saturating_sub(back),
    })
}

/// A gift as the model keeps it for reversals.
#[derive(Debug, Clone, Copy)]
struct ModelGiftRecord {
    sender: UserId,
    creator: CreatorId,
    target: GiftTarget,
    gift: GiftId,
    count: u32,
    coins: u64,
    nanos: u128,
    release: u64,
    reversed: bool,
    /// The gift's stamp: the windows it counted in.
    stamp: u64,
}

/// An event's content as a client sends it: a journaled reversal carries what it took
/// back, which is not content.
fn content(event: &Event) -> Event {
    match event {
        Event::GiftReversal(r) => Event::GiftReversal(GiftReversal::new(r.id, r.sender, r.gift)),
        other => *other,
    }
}

/// An id as the engine's index files it: a client's, or one the service derives (a
/// battle's: its own hash domain, review B11 — a client event with the same 128 bits is
/// another id).
type IdKey = (bool, EventId);

fn id_key(event: &Event) -> IdKey {
    (matches!(event, Event::Battle(_)), event.id())
}

fn rejected(code: RejectCode) -> Status {
    Status::Rejected(code)
}

/// A PK battle in the model: per side, per gifter (coins, the seq that reached them);
/// while open under a hold, the counted gifts a reversal lowers it by.
#[derive(Debug, Clone)]
struct ModelBattle {
    spec: Battle,
    seq: u64,
    sides: Vec<BTreeMap<u64, (u128, u64)>>,
    closed: bool,
    counted: HashMap<(UserId, EventId), (usize, u64)>,
    /// The number of its accepted close: from it on no gift counts, no reversal lowers
    /// (review B2).
    close_seq: Option<u64>,
}

/// A battle side as the simulation compares it: coins and the top gifters.
type BattleSideModel = (u128, Vec<(UserId, u128)>);

/// Battle ids the simulation draws (few: reuse and retries happen).
const BATTLE_IDS: u64 = 12;

fn reused_answer() -> Outcome {
    Outcome {
        seq: 0,
        status: rejected(EVENT_ID_REUSED),
        duplicate: false,
        cap: None,
    }
}

impl Model {
    fn new(economy: Economy, versions: Versions) -> Model {
        Model {
            gift_codes: economy.gifts.iter().map(|g| g.id.clone()).collect(),
            package_codes: economy.packages.iter().map(|p| p.id.clone()).collect(),
            item_codes: economy.items.iter().map(|i| i.id.clone()).collect(),
            purchased: 0,
            recharges: HashMap::new(),
            debts: BTreeMap::new(),
            reversed: 0,
            refunded: 0,
            economy,
            versions,
            wallets: BTreeMap::new(),
            creators: BTreeMap::new(),
            streams: BTreeMap::new(),
            creator_gifters: BTreeMap::new(),
            stream_gifters: BTreeMap::new(),
            videos: BTreeMap::new(),
            video_gifters: BTreeMap::new(),
            ids: HashMap::new(),
            last_seq: 0,
            hold_clock: 0,
            promotion_sales: BTreeMap::new(),
            gift_records: HashMap::new(),
            last_gift_recorded: false,
            battles: BTreeMap::new(),
            histories: HashMap::new(),
            history_per_user: 0,
            last_reversed: None,
            windowed: BTreeMap::new(),
            gift_counts: BTreeMap::new(),
        }
    }

    /// Counts accepted gift `g` (on `video` or its stream), numbered `seq`, in the
    /// windows of `stamp`: the sender's totals with the creator and (a stream's gift)
    /// the stream, and the creator's coins.
    fn count_windows(&mut self, g: &Gift, video: Option<VideoId>, cost: u64, at: (u64, u64)) {
        let (stamp, seq) = at;
        let coins = u128::from(cost);
        for (kind, key) in model_windows(stamp).into_iter().enumerate() {
            let mut boards = vec![(Board::Creator(g.creator), g.sender.0)];
            if video.is_none() {
                boards.push((Board::Stream(g.stream), g.sender.0));
            }
            boards.push((Board::Creators, g.creator.0));
            for of in [None, Some(g.creator)] {
                let e = self
                    .gift_counts
                    .entry((kind, key, of, g.gift.0))
                    .or_default();
                e.0 += u64::from(g.count);
                e.1 += cost;
            }
            for (board, id) in boards {
                let e = self
                    .windowed
                    .entry((kind, key, board))
                    .or_default()
                    .entry(id)
                    .or_default();
                e.0 += coins;
                e.1 = e.1.max(seq);
            }
        }
    }

    /// Takes reversed gift `rec` (stamped `stamp`) off its windows, the reversal
    /// numbered `seq`.
    fn uncount_windows(&mut self, rec: &ModelGiftRecord, sender: UserId, seq: u64) {
        for (kind, key) in model_windows(rec.stamp).into_iter().enumerate() {
            let mut boards = vec![(Board::Creator(rec.creator), sender.0)];
            if let GiftTarget::Stream(stream) = rec.target {
                boards.push((Board::Stream(stream), sender.0));
            }
            boards.push((Board::Creators, rec.creator.0));
            for of in [None, Some(rec.creator)] {
                let line = (kind, key, of, rec.gift.0);
                let e = self.gift_counts.get_mut(&line).expect("a counted gift");
                e.0 -= u64::from(rec.count);
                e.1 -= rec.coins;
                if *e == (0, 0) {
                    self.gift_counts.remove(&line);
                }
            }
            for (board, id) in boards {
                let scores = self.windowed.get_mut(&(kind, key, board)).expect("a board");
                let e = scores.get_mut(&id).expect("a score");
                e.0 -= u128::from(rec.coins);
                e.1 = e.1.max(seq);
                if e.0 == 0 {
                    scores.remove(&id);
                }
            }
        }
    }

    /// Gifts sent per code in a window, of every creator (`None`) or one: most sent
    /// first, then most coins, then the code.
    fn gift_stats(&self, kind: usize, key: u64, of: Option<CreatorId>) -> Vec<(u32, u64, u64)> {
        let mut all: Vec<(u32, u64, u64)> = self
            .gift_counts
            .iter()
            .filter(|((k, w, c, _), _)| (*k, *w, *c) == (kind, key, of))
            .map(|(&(_, _, _, g), &(n, coins))| (g, n, coins))
            .collect();
        all.sort_by(|a, b| (b.1, b.2, a.0).cmp(&(a.1, a.2, b.0)));
        all
    }

    /// The top `k` of a window's board: more coins first, then reached first.
    fn window_top(&self, kind: usize, key: u64, board: Board, k: usize) -> Vec<(u64, u128)> {
        let mut all: Vec<(u64, (u128, u64))> = self
            .windowed
            .get(&(kind, key, board))
            .map(|b| b.iter().map(|(&id, &s)| (id, s)).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.1.1.cmp(&b.1.1)));
        all.truncate(k);
        all.into_iter()
            .map(|(id, (coins, _))| (id, coins))
            .collect()
    }

    /// The answer to an event whose id is known: the original outcome for an exact
    /// retry, `EVENT_ID_REUSED` for other content.
    fn known(&self, event: &Event) -> Option<Outcome> {
        let (original, outcome) = self.ids.get(&id_key(event))?;
        Some(if *original == content(event) {
            Outcome {
                duplicate: true,
                ..*outcome
            }
        } else {
            reused_answer()
        })
    }

    fn apply(&mut self, event: &Event, stamp: Stamp) -> Outcome {
        // A battle held with this very content answers as recorded (other content under
        // its id: EVENT_ID_REUSED while the id is known, below).
        if let Event::Battle(b) = event
            && let Some(held) = self.battles.get(&b.battle.0)
            && held.spec == *b
        {
            return Outcome {
                seq: held.seq,
                status: Status::Accepted(Effect::Stored),
                duplicate: true,
                cap: None,
            };
        }
        // A close of a closed battle answers the accepted close; closes are not
        // idempotency keys (by the battle's state: an early one is judged again).
        if let Event::BattleClose(c) = event
            && let Some(seq) = self.battles.get(&c.battle.0).and_then(|b| b.close_seq)
        {
            return Outcome {
                seq,
                status: Status::Accepted(Effect::Stored),
                duplicate: true,
                cap: None,
            };
        }
        if let Some(answer) = self.known(event) {
            return answer;
        }
        if !matches!(
            event,
            Event::Economy(_) | Event::StreamGoal(_) | Event::Battle(_) | Event::BattleClose(_)
        ) {
            self.hold_clock = self.hold_clock.max(stamp.0);
        }
        let mut cap = None;
        let status = match event {
            Event::Recharge(r) => self.recharge(r, stamp),
            Event::Gift(g) => {
                let (status, gift_cap) = self.gift(g, None, stamp);
                cap = gift_cap;
                status
            }
            // The model's gift with the video as its target (the stream field unused).
            Event::VideoGift(v) => {
                let as_gift = Gift {
                    id: v.id,
                    sender: v.sender,
                    creator: v.creator,
                    stream: StreamId(u64::MAX),
                    gift: v.gift,
                    count: v.count,
                };
                let (status, gift_cap) = self.gift(&as_gift, Some(v.video), stamp);
                cap = gift_cap;
                status
            }
            Event::Payout(p) => self.payout(p),
            Event::Account(a) => self.account(a),
            Event::StreamGoal(g) => self.goal(g),
            Event::Settlement(_) => panic!("the simulation sends no settlements"),
            Event::Economy(change) => self.economy_change(change.version, change.digest),
            Event::Purchase(p) => {
                let (status, purchase_cap) = self.purchase(p, stamp);
                cap = purchase_cap;
                status
            }
            Event::RechargeReversal(r) => self.reversal(r, stamp),
            Event::GiftReversal(r) => self.gift_reversal(r),
            Event::Battle(b) => self.battle(b, stamp),
            Event::BattleClose(c) => self.battle_close(c.battle.0, stamp),
        };
        self.last_seq += 1;
        if let Event::Battle(b) = event
            && status == Status::Accepted(Effect::Stored)
        {
            self.battles.insert(
                b.battle.0,
                ModelBattle {
                    spec: *b,
                    seq: self.last_seq,
                    sides: vec![BTreeMap::new(); b.streams().len()],
                    closed: false,
                    counted: HashMap::new(),
                    close_seq: None,
                },
            );
        }
        if let Event::BattleClose(c) = event
            && status == Status::Accepted(Effect::Stored)
        {
            let b = self.battles.get_mut(&c.battle.0).expect("a closed battle");
            b.close_seq = Some(self.last_seq);
        }
        match (event, status) {
            (Event::Gift(g), Status::Accepted(_)) => self.battle_gift(g, self.last_seq, stamp),
            (Event::GiftReversal(r), Status::Accepted(_)) => {
                if let Some(GiftTarget::Stream(stream)) =
                    self.gift_records.get(&(r.sender, r.gift)).map(|g| g.target)
                {
                    self.battle_reversal(r, stream, self.last_seq, stamp);
                }
            }
            _ => {}
        }
        let outcome = Outcome {
            seq: self.last_seq,
            status,
            duplicate: false,
            cap,
        };
        // An economy change is not an idempotency key (the operator's, by version), nor
        // is a battle's close (by the battle's state).
        if !matches!(event, Event::Economy(_) | Event::BattleClose(_)) {
            self.ids.insert(id_key(event), (content(event), outcome));
        }
        let user = match event {
            Event::Recharge(r) => Some((r.user, false)),
            Event::Gift(g) => Some((g.sender, outcome.is_accepted())),
            // An accepted video gift is a gift too (released or unrecorded, its reversal
            // is NOT_REVERSIBLE while in the history).
            Event::VideoGift(v) => Some((v.sender, outcome.is_accepted())),
            Event::Purchase(p) => Some((p.user, false)),
            Event::RechargeReversal(r) => Some((r.user, false)),
            Event::GiftReversal(r) => Some((r.sender, false)),
            _ => None,
        };
        if let Some((user, gift)) = user
            && self.history_per_user > 0
            && self.wallets.contains_key(&user)
        {
            let h = self.histories.entry(user).or_default();
            if h.len() == self.history_per_user {
                h.pop_front();
            }
            h.push_back((event.id(), gift));
        }
        outcome
    }

    // ---- PK battles (issue #32, feature 2) ----

    /// Closes the battles ended at `stamp` (a battle or an accepted reversal of a gift on
    /// a stream, applied with the gate exclusive): reversals no longer lower them.
    fn close_battles(&mut self, stamp: Stamp) {
        for b in self.battles.values_mut() {
            if b.spec.end_ms() <= stamp.0 {
                b.closed = true;
                b.counted.clear();
            }
        }
    }

    /// A battle's checks in their order: content, the id, the streams, the bound (after
    /// dropping those ended a retention ago).
    fn battle(&mut self, b: &Battle, stamp: Stamp) -> Status {
        let defaults = EngineConfig::default();
        self.close_battles(stamp);
        let retention = defaults.battle_retention_ms;
        self.battles
            .retain(|_, held| held.spec.end_ms() + retention > stamp.0);
        let streams = b.streams();
        let distinct = streams
            .iter()
            .enumerate()
            .all(|(i, s)| !streams[..i].contains(s));
        let valid = (2..=4).contains(&streams.len())
            && distinct
            && b.end_ms() - b.start_ms <= 24 * 3_600_000
            && b.end_ms() > stamp.0;
        let overlaps = self.battles.values().any(|h| {
            h.spec.streams().iter().any(|s| streams.contains(s))
                && h.spec.start_ms < b.end_ms()
                && b.start_ms < h.spec.end_ms()
        });
        if !valid {
            rejected(RejectCode::InvalidBattle)
        } else if self.battles.contains_key(&b.battle.0) {
            rejected(RejectCode::BattleExists)
        } else if overlaps {
            rejected(RejectCode::StreamInBattle)
        } else if self.battles.len() >= defaults.battles_max {
            rejected(RejectCode::BattlesFull)
        } else {
            Status::Accepted(Effect::Stored)
        }
    }

    /// A close's checks: the battle held, the close stamped at or after its end (every
    /// battle ended by the stamp is frozen for reversals, as by any exclusive event).
    fn battle_close(&mut self, battle: u64, stamp: Stamp) -> Status {
        self.close_battles(stamp);
        match self.battles.get(&battle) {
            None => rejected(RejectCode::BattleNotFound),
            Some(b) if stamp.0 < b.spec.end_ms() => rejected(RejectCode::BattleNotEnded),
            Some(_) => Status::Accepted(Effect::Stored),
        }
    }

    /// An accepted gift numbered `seq`: counted by the battle of its stream whose window
    /// holds its stamp, if numbered after it and before the battle's close. A reversal
    /// lowers the battle by it only if the gift got a record of its own (review B3: a
    /// sender reusing its own held id keeps the first gift's record, which a reversal of
    /// the id reverses).
    fn battle_gift(&mut self, g: &Gift, seq: u64, stamp: Stamp) {
        let coins = self.gift_cost(g).expect("an accepted gift has a cost");
        let reversible = self.economy.earnings_hold_ms > 0 && self.last_gift_recorded;
        for b in self.battles.values_mut() {
            let Some(side) = b.spec.streams().iter().position(|s| *s == g.stream) else {
                continue;
            };
            if seq <= b.seq
                || b.close_seq.is_some()
                || !(b.spec.start_ms..b.spec.end_ms()).contains(&stamp.0)
            {
                continue;
            }
            let gifter = b.sides[side].entry(g.sender.0).or_insert((0, 0));
            gifter.0 += u128::from(coins);
            gifter.1 = seq;
            if reversible && !b.closed {
                b.counted.insert((g.sender, g.id), (side, coins));
            }
        }
    }

    /// An accepted reversal of a gift on `stream`: lowers the battle that counted it
    /// while open.
    fn battle_reversal(&mut self, r: &GiftReversal, stream: StreamId, seq: u64, stamp: Stamp) {
        self.close_battles(stamp);
        for b in self.battles.values_mut() {
            if b.closed || !b.spec.streams().contains(&stream) {
                continue;
            }
            if let Some((side, coins)) = b.counted.remove(&(r.sender, r.gift)) {
                let gifter = b.sides[side]
                    .get_mut(&r.sender.0)
                    .expect("a counted gifter");
                gifter.0 -= u128::from(coins);
                gifter.1 = seq;
            }
        }
    }

    /// A battle's scores and top gifters as the engine shows them: per side, coins and
    /// the top 10 (more coins first, then reached first, then the user).
    fn battle_view(&self, id: u64) -> Option<Vec<BattleSideModel>> {
        let b = self.battles.get(&id)?;
        Some(
            b.sides
                .iter()
                .map(|gifters| {
                    let coins = gifters.values().map(|g| g.0).sum();
                    let mut top: Vec<(u64, (u128, u64))> = gifters
                        .iter()
                        .filter(|g| g.1.0 > 0)
                        .map(|(&u, &g)| (u, g))
                        .collect();
                    top.sort_by(|a, b| {
                        b.1.0
                            .cmp(&a.1.0)
                            .then(a.1.1.cmp(&b.1.1))
                            .then(a.0.cmp(&b.0))
                    });
                    top.truncate(10);
                    (
                        coins,
                        top.into_iter().map(|(u, (c, _))| (UserId(u), c)).collect(),
                    )
                })
                .collect(),
        )
    }

    /// Puts a version's terms in force; new string ids get the next codes.
    fn economy_change(&mut self, version: u32, digest: u64) -> Status {
        let next = self
            .versions
            .get(&digest)
            .unwrap_or_else(|| {
                panic!("economy version {version} ({digest:016x}) was not made by the run")
            })
            .clone();
        self.hold_carry_over(&next);
        let file = next.to_file();
        for g in &file.gifts {
            if !self.gift_codes.contains(&g.id) {
                self.gift_codes.push(g.id.clone());
            }
        }
        for p in &file.packages {
            if !self.package_codes.contains(&p.id) {
                self.package_codes.push(p.id.clone());
            }
        }
        for i in &file.items {
            if !self.item_codes.contains(&i.id) {
                self.item_codes.push(i.id.clone());
            }
        }
        self.economy = next;
        Status::Accepted(Effect::Stored)
    }

    /// The terms in force of the gift with code `code` (`None`: unknown or left out).
    fn gift_terms(&self, code: GiftId) -> Option<u64> {
        let id = self.gift_codes.get(code.0 as usize)?;
        self.economy
            .to_file()
            .gifts
            .into_iter()
            .find(|g| &g.id == id)
            .map(|g| g.coins)
    }

    /// The terms in force of the package with code `code`: coins and prices.
    fn package_terms(&self, code: PackageId) -> Option<(u64, BTreeMap<String, String>)> {
        let id = self.package_codes.get(code.0 as usize)?;
        self.economy
            .to_file()
            .packages
            .into_iter()
            .find(|p| &p.id == id)
            .map(|p| (p.coins, p.prices))
    }

    /// `creator_share` in billionths.
    fn share_nanos(&self) -> u128 {
        (self.economy.creator_share * Decimal::from(1_000_000_000u64))
            .to_u128()
            .expect("a share has at most 9 decimals")
    }

    fn wallet(&self, user: UserId) -> ModelWallet {
        self.wallets.get(&user).copied().unwrap_or_default()
    }

    fn account_check(&self, w: &ModelWallet) -> Result<(), RejectCode> {
        if !w.adult {
            return Err(RejectCode::AgeRestricted);
        }
        match w.region {
            Some(r) if self.economy.restricted_regions.contains(&r) => {
                Err(RejectCode::RegionUnavailable)
            }
            _ => Ok(()),
        }
    }

    /// The offer on package `id` in force at `at` for a buyer in `region` on `channel`:
    /// its id, bonus coins and price in `currency` (`None`: the package's price).
    fn offer(
        &self,
        id: &str,
        region: Option<Region>,
        channel: Channel,
        currency: &str,
        at: u64,
    ) -> Option<(String, u64, Option<Decimal>)> {
        self.economy
            .promotions
            .iter()
            .find(|p| {
                p.package == id
                    && p.start_ms <= at
                    && at < p.end_ms
                    && (p.regions.is_empty() || region.is_some_and(|r| p.regions.contains(&r)))
                    && (p.channels.is_empty() || p.channels.contains(&channel))
            })
            .map(|p| {
                let price = p
                    .prices
                    .iter()
                    .find(|(c, _)| c.as_str() == currency)
                    .map(|(_, v)| *v);
                (p.id.clone(), p.bonus_coins, price)
            })
            // An offer that changes nothing in this currency is no sale under it.
            .filter(|(_, bonus, price)| *bonus > 0 || price.is_some())
    }

    /// A package must match its coins and its price in the currency — the offer's while
    /// one is in force at the payment time — a custom amount is web only, within the
    /// bounds, at a positive price, in a currency packages are sold in. `Ok(promotion)`.
    fn recharge_amount_ok(&self, r: &Recharge, stamp: Stamp) -> Result<Option<String>, ()> {
        let e = &self.economy;
        let at = if r.paid_ms == 0 { stamp.0 } else { r.paid_ms };
        let ok = match r.package.get() {
            Some(p) => {
                let Some((coins, prices)) = self.package_terms(p) else {
                    return Err(());
                };
                let id = &self.package_codes[p.0 as usize];
                let regular = prices
                    .get(r.currency.as_str())
                    .and_then(|price| price.parse::<Decimal>().ok());
                let region = self.wallet(r.user).region;
                let (want_coins, want_price, promotion) =
                    match self.offer(id, region, r.channel, r.currency.as_str(), at) {
                        Some((promo, bonus, price)) => {
                            (coins + bonus, price.or(regular), Some(promo))
                        }
                        None => (coins, regular, None),
                    };
                if want_coins == r.coins && want_price == Some(r.price) && r.coins > 0 {
                    return Ok(promotion);
                }
                false
            }
            None => {
                r.channel == Channel::Web
                    && (e.custom_min_coins..=e.custom_max_coins).contains(&r.coins)
                    && r.price > Decimal::ZERO
                    && e.to_file()
                        .packages
                        .iter()
                        .any(|p| p.prices.contains_key(r.currency.as_str()))
            }
        };
        if ok && r.coins > 0 { Ok(None) } else { Err(()) }
    }

    fn recharge(&mut self, r: &Recharge, stamp: Stamp) -> Status {
        let Ok(promotion) = self.recharge_amount_ok(r, stamp) else {
            return rejected(RejectCode::AmountOutOfRange);
        };
        let w = self.wallet(r.user);
        if let Err(code) = self.account_check(&w) {
            return rejected(code);
        }
        if w.coins.checked_add(r.coins).is_none() {
            return rejected(RejectCode::Overflow);
        }
        // A debt is repaid first; only the rest reaches the balance.
        let owed = self.debts.get(&r.user).copied().unwrap_or(0);
        let repaid = owed.min(r.coins);
        if repaid == owed {
            self.debts.remove(&r.user);
        } else {
            self.debts.insert(r.user, owed - repaid);
        }
        let coins = w.coins + (r.coins - repaid);
        self.wallets.entry(r.user).or_default().coins = coins;
        // A (user, id) whose recharge is still within the window keeps its first record
        // (an id reused past the horizon).
        let window = self.economy.recharge_reversal_window_ms;
        let live = self
            .recharges
            .get(&(r.user, r.id))
            .is_some_and(|&(_, at, _)| at.saturating_add(window) > stamp.0);
        if !live {
            self.recharges
                .insert((r.user, r.id), (r.coins, stamp.0, false));
        }
        if let Some(id) = promotion {
            let package = self
                .package_terms(r.package.get().expect("a package"))
                .expect("known");
            let sales = self.promotion_sales.entry(id).or_default();
            sales.0 += 1;
            sales.1 += u128::from(r.coins - package.0);
            *sales.2.entry(r.currency.to_string()).or_default() += r.price;
        }
        Status::Accepted(Effect::Coins(coins))
    }

    /// A recharge reversal: the named recharge must be the user's, accepted, within the
    /// window and not reversed; what the balance lacks becomes debt.
    fn reversal(&mut self, r: &RechargeReversal, stamp: Stamp) -> Status {
        let window = self.economy.recharge_reversal_window_ms;
        let Some(original) = self.recharges.get_mut(&(r.user, r.recharge)) else {
            return rejected(RejectCode::OriginalNotFound);
        };
        let (coins, at, done) = *original;
        if stamp.0 >= at + window {
            return rejected(RejectCode::OriginalNotFound);
        }
        if done {
            return rejected(RejectCode::AlreadyReversed);
        }
        original.2 = true;
        let w = self.wallets.entry(r.user).or_default();
        let taken = w.coins.min(coins);
        w.coins -= taken;
        let balance = w.coins;
        let owed = self.debts.get(&r.user).copied().unwrap_or(0) + (coins - taken);
        if owed > 0 {
            self.debts.insert(r.user, owed);
        }
        self.reversed += u128::from(coins);
        Status::Accepted(Effect::Reversed {
            coins: balance,
            owed,
        })
    }

    /// Whether the user owes coins: its gifts and purchases are refused.
    fn in_debt(&self, user: UserId) -> bool {
        self.debts.get(&user).is_some_and(|&owed| owed > 0)
    }

    /// The event checks of a gift: its cost.
    fn gift_cost(&self, g: &Gift) -> Result<u64, RejectCode> {
        let coins = self.gift_terms(g.gift).ok_or(RejectCode::UnknownGift)?;
        if g.count == 0 || g.count > self.economy.max_gift_count {
            return Err(RejectCode::InvalidCount);
        }
        if g.sender.0 == g.creator.0 {
            return Err(RejectCode::SelfGift);
        }
        coins
            .checked_mul(u64::from(g.count))
            .ok_or(RejectCode::Overflow)
    }

    /// Every check of a gift, in order: its cost and the sender's spending after it.
    /// A `BUDGET_EXCEEDED` names its cap.
    fn gift_check(
        &self,
        g: &Gift,
        stamp: Stamp,
    ) -> Result<(u64, u64), (RejectCode, Option<BudgetCap>)> {
        let month = utc_month(stamp);
        let cost = self.gift_cost(g).map_err(|c| (c, None))?;
        let w = self.wallet(g.sender);
        self.account_check(&w).map_err(|c| (c, None))?;
        if self.in_debt(g.sender) {
            return Err((RejectCode::AccountInDebt, None));
        }
        let over = (RejectCode::BudgetExceeded, Some(BudgetCap::MonthlyBudget));
        let spent = w.spent_in(month).checked_add(cost);
        match (spent, w.budget) {
            (None, _) => return Err(over),
            (Some(spent), Some(budget)) if spent > budget => return Err(over),
            _ => {}
        }
        window_limits(&w, &self.economy, stamp, cost)
            .map_err(|cap| (RejectCode::BudgetExceeded, Some(cap)))?;
        if w.coins < cost {
            return Err((RejectCode::InsufficientCoins, None));
        }
        Ok((cost, spent.unwrap_or_default()))
    }

    /// A gift in `g.stream`, or on `video` when it names one.
    fn gift(
        &mut self,
        g: &Gift,
        video: Option<VideoId>,
        stamp: Stamp,
    ) -> (Status, Option<BudgetCap>) {
        let month = utc_month(stamp);
        let (cost, spent) = match self.gift_check(g, stamp) {
            Ok(v) => v,
            Err((code, cap)) => return (rejected(code), cap),
        };
        let w = self.wallets.entry(g.sender).or_default();
        w.coins -= cost;
        w.spent = spent;
        w.month = w.month.max(month);
        w.windows.count(stamp, cost);
        let balance = w.coins;
        self.credit(g, video, cost, stamp);
        // Numbered next (the model numbers an event once it is answered).
        self.count_windows(g, video, cost, (stamp.0, self.last_seq + 1));
        let hold = self.economy.earnings_hold_ms;
        // Gifts on streams and videos are reversible while held. An id whose record is
        // still held at this stamp (reused past the horizon) keeps its first record.
        let held = self
            .gift_records
            .get(&(g.sender, g.id))
            .is_some_and(|r| r.release > stamp.0);
        self.last_gift_recorded = hold > 0 && !held;
        if hold > 0 && !held {
            let record = ModelGiftRecord {
                sender: g.sender,
                creator: g.creator,
                target: video.map_or(GiftTarget::Stream(g.stream), GiftTarget::Video),
                gift: g.gift,
                count: g.count,
                coins: cost,
                nanos: u128::from(cost) * self.share_nanos(),
                release: model_release_at(stamp.0, hold),
                reversed: false,
                stamp: stamp.0,
            };
            self.gift_records.insert((g.sender, g.id), record);
        }
        (Status::Accepted(Effect::Coins(balance)), None)
    }

    fn credit(&mut self, g: &Gift, video: Option<VideoId>, cost: u64, stamp: Stamp) {
        let coins = u128::from(cost);
        let share = self.share_nanos();
        let hold = self.economy.earnings_hold_ms;
        let c = self.creators.entry(g.creator).or_default();
        c.coins_received += coins;
        c.credited_nanos += coins * share;
        if hold > 0 {
            c.held
                .push((model_release_at(stamp.0, hold), coins * share, g.id));
        }
        *c.gifts.entry(g.gift.0).or_default() += u128::from(g.count);
        *self
            .creator_gifters
            .entry((g.creator, g.sender))
            .or_default() += coins;
        if let Some(video) = video {
            *self.video_gifters.entry((video, g.sender)).or_default() += coins;
            let v = self.videos.entry(video).or_default();
            v.coins += coins;
            v.lowest_creator = Some(v.lowest_creator.map_or(g.creator, |c| c.min(g.creator)));
            *v.gifts.entry(g.gift.0).or_default() += u128::from(g.count);
            return;
        }
        *self.stream_gifters.entry((g.stream, g.sender)).or_default() += coins;
        let s = self.streams.entry(g.stream).or_default();
        s.coins += coins;
        s.lowest_creator = Some(s.lowest_creator.map_or(g.creator, |c| c.min(g.creator)));
    }

    fn diamonds_credited(&self, creator: CreatorId) -> u128 {
        self.creators
            .get(&creator)
            .map_or(0, |c| c.credited_nanos / 1_000_000_000)
    }

    fn diamonds_available(&self, creator: CreatorId) -> u128 {
        let paid = self.creators.get(&creator).map_or(0, |c| c.diamonds_paid);
        self.diamonds_released(creator) - paid
    }

    /// Every check of a payout, in order: its value.
    fn payout_check(&self, p: &Payout) -> Result<Decimal, RejectCode> {
        if p.diamonds == 0 {
            return Err(RejectCode::AmountOutOfRange);
        }
        let unit = self
            .economy
            .diamond_value
            .get(&p.currency)
            .ok_or(RejectCode::UnsupportedCurrency)?;
        let value = Decimal::from(p.diamonds)
            .checked_mul(*unit)
            .ok_or(RejectCode::Overflow)?;
        if self
            .economy
            .payout_minimum
            .get(&p.currency)
            .is_some_and(|minimum| value < *minimum)
        {
            return Err(RejectCode::BelowPayoutMinimum);
        }
        if self.diamonds_available(p.creator) < u128::from(p.diamonds) {
            return Err(RejectCode::InsufficientDiamonds);
        }
        Ok(value)
    }

    fn payout(&mut self, p: &Payout) -> Status {
        let value = match self.payout_check(p) {
            Ok(value) => value,
            Err(code) => return rejected(code),
        };
        self.creators.entry(p.creator).or_default().diamonds_paid += u128::from(p.diamonds);
        let after = self.diamonds_available(p.creator);
        Status::Accepted(Effect::PaidOut {
            diamonds_available: u64::try_from(after).expect("diamonds fit u64"),
            value,
        })
    }

    fn account(&mut self, a: &AccountSettings) -> Status {
        // Daily and weekly budgets are at most u32::MAX coins (the wallets' counters).
        let too_large = |b: Option<u64>| b.is_some_and(|b| b > u64::from(u32::MAX));
        if too_large(a.daily_budget_coins.get()) || too_large(a.weekly_budget_coins.get()) {
            return rejected(RejectCode::AmountOutOfRange);
        }
        let w = self.wallets.entry(a.user).or_default();
        w.region = a.region;
        w.adult = a.adult;
        w.budget = a.monthly_budget_coins.get();
        w.windows.daily = a.daily_budget_coins.get();
        w.windows.weekly = a.weekly_budget_coins.get();
        Status::Accepted(Effect::Stored)
    }

    fn goal(&mut self, g: &StreamGoal) -> Status {
        if g.coins_target == 0 {
            return rejected(RejectCode::AmountOutOfRange);
        }
        self.streams.entry(g.stream).or_default().goal = Some((g.creator, g.coins_target));
        Status::Accepted(Effect::Stored)
    }

    // ---- purchases (issue #31, feature 7) ----

    /// The price in force of the item with code `code` (`None`: unknown or left out).
    fn item_terms(&self, code: ItemId) -> Option<u64> {
        let id = self.item_codes.get(code.0 as usize)?;
        self.economy
            .to_file()
            .items
            .into_iter()
            .find(|i| &i.id == id)
            .map(|i| i.coins)
    }

    /// The checks of spending `cost` coins after the event's own: the account, the
    /// limits (the monthly budget, then the daily/weekly budgets and platform caps — one
    /// set of counters for gifts and purchases), the funds — as `gift_check` does after
    /// a gift's cost. The month's spending after it.
    fn spend_check(
        &self,
        w: &ModelWallet,
        stamp: Stamp,
        cost: u64,
    ) -> Result<u64, (RejectCode, Option<BudgetCap>)> {
        let month = utc_month(stamp);
        self.account_check(w).map_err(|c| (c, None))?;
        let over = (RejectCode::BudgetExceeded, Some(BudgetCap::MonthlyBudget));
        let spent = w.spent_in(month).checked_add(cost).ok_or(over)?;
        if w.budget.is_some_and(|budget| spent > budget) {
            return Err(over);
        }
        window_limits(w, &self.economy, stamp, cost)
            .map_err(|cap| (RejectCode::BudgetExceeded, Some(cap)))?;
        if w.coins < cost {
            return Err((RejectCode::InsufficientCoins, None));
        }
        Ok(spent)
    }

    /// Every check of a purchase, in order: its cost and the user's spending after it.
    fn purchase_check(
        &self,
        p: &Purchase,
        stamp: Stamp,
    ) -> Result<(u64, u64), (RejectCode, Option<BudgetCap>)> {
        let coins = self
            .item_terms(p.item)
            .ok_or((RejectCode::UnknownItem, None))?;
        if p.count == 0 || p.count > self.economy.max_gift_count {
            return Err((RejectCode::InvalidCount, None));
        }
        let cost = coins
            .checked_mul(u64::from(p.count))
            .ok_or((RejectCode::Overflow, None))?;
        let w = self.wallet(p.user);
        self.account_check(&w).map_err(|c| (c, None))?;
        if self.in_debt(p.user) {
            return Err((RejectCode::AccountInDebt, None));
        }
        let spent = self.spend_check(&w, stamp, cost)?;
        Ok((cost, spent))
    }

    fn purchase(&mut self, p: &Purchase, stamp: Stamp) -> (Status, Option<BudgetCap>) {
        let month = utc_month(stamp);
        let (cost, spent) = match self.purchase_check(p, stamp) {
            Ok(v) => v,
            Err((code, cap)) => return (rejected(code), cap),
        };
        let w = self.wallets.entry(p.user).or_default();
        w.coins -= cost;
        w.spent = spent;
        w.month = w.month.max(month);
        w.windows.count(stamp, cost);
        self.purchased += u128::from(cost);
        (Status::Accepted(Effect::Coins(w.coins)), None)
    }

    // ---- gift reversals (issue #31, feature 3) ----

    fn gift_reversal(&mut self, r: &GiftReversal) -> Status {
        self.last_reversed = None;
        let record = self.gift_records.get(&(r.sender, r.gift)).copied();
        let Some(rec) = record.filter(|g| g.sender == r.sender && g.release > self.hold_clock)
        else {
            let in_history = self
                .histories
                .get(&r.sender)
                .is_some_and(|h| h.contains(&(r.gift, true)));
            return if self.economy.earnings_hold_ms == 0 || in_history {
                rejected(RejectCode::NotReversible)
            } else {
                rejected(RejectCode::OriginalNotFound)
            };
        };
        if rec.reversed {
            return rejected(RejectCode::AlreadyReversed);
        }
        let w = self.wallets.entry(r.sender).or_default();
        if w.coins.checked_add(rec.coins).is_none() {
            return rejected(RejectCode::Overflow);
        }
        // A refund repays a debt first, as a recharge does; only the rest reaches the
        // balance.
        let owed = self.debts.get(&r.sender).copied().unwrap_or(0);
        let repaid = owed.min(rec.coins);
        if repaid == owed {
            self.debts.remove(&r.sender);
        } else {
            self.debts.insert(r.sender, owed - repaid);
        }
        let w = self.wallets.entry(r.sender).or_default();
        w.coins += rec.coins - repaid;
        let balance = w.coins;
        let coins = u128::from(rec.coins);
        let c = self
            .creators
            .get_mut(&rec.creator)
            .expect("a gifted creator");
        c.coins_received -= coins;
        c.credited_nanos -= rec.nanos;
        let n = c.gifts.get_mut(&rec.gift.0).expect("a counted gift");
        *n -= u128::from(rec.count);
        if *n == 0 {
            c.gifts.remove(&rec.gift.0);
        }
        let at = c
            .held
            .iter()
            .position(|h| h.2 == r.gift && h.0 == rec.release);
        c.held.remove(at.expect("held"));
        let t = self
            .creator_gifters
            .get_mut(&(rec.creator, r.sender))
            .expect("a pair");
        *t -= coins;
        if *t == 0 {
            self.creator_gifters.remove(&(rec.creator, r.sender));
        }
        match rec.target {
            GiftTarget::Stream(stream) => {
                let t = self
                    .stream_gifters
                    .get_mut(&(stream, r.sender))
                    .expect("a pair");
                *t -= coins;
                if *t == 0 {
                    self.stream_gifters.remove(&(stream, r.sender));
                }
                self.streams.get_mut(&stream).expect("a stream").coins -= coins;
            }
            GiftTarget::Video(video) => {
                let t = self
                    .video_gifters
                    .get_mut(&(video, r.sender))
                    .expect("a pair");
                *t -= coins;
                if *t == 0 {
                    self.video_gifters.remove(&(video, r.sender));
                }
                let v = self.videos.get_mut(&video).expect("a video");
                v.coins -= coins;
                let n = v.gifts.get_mut(&rec.gift.0).expect("a counted gift");
                *n -= u128::from(rec.count);
                if *n == 0 {
                    v.gifts.remove(&rec.gift.0);
                }
            }
        }
        self.gift_records
            .get_mut(&(r.sender, r.gift))
            .expect("a record")
            .reversed = true;
        self.uncount_windows(&rec, r.sender, self.last_seq + 1);
        self.refunded += coins;
        self.last_reversed = Some(ReversedGift {
            creator: rec.creator,
            target: rec.target,
            gift: rec.gift,
            count: rec.count,
            coins: rec.coins,
            nanos: rec.nanos,
            hour: Some((rec.stamp / 3_600_000) as u32),
        });
        Status::Accepted(Effect::Coins(balance))
    }

    // ---- the model's views, shaped like the engine's reads ----

    fn wallet_fields(&self, user: UserId, now: Stamp) -> WalletFields {
        let w = self.wallet(user);
        let spent = w.spent_in(utc_month(now));
        let windows = (
            w.windows.spent_on(utc_day(now)),
            w.windows.spent_in_week(iso_week(now)),
            w.windows.daily,
            w.windows.weekly,
        );
        let owed = self.debts.get(&user).copied().unwrap_or(0);
        (w.coins, spent, w.budget, w.region, w.adult, windows, owed)
    }

    fn creator_fields(&self, creator: CreatorId) -> CreatorFields {
        let c = self.creators.get(&creator).cloned().unwrap_or_default();
        let gifts = c.gifts.iter().map(|(&g, &n)| (GiftId(g), n)).collect();
        let credited = self.diamonds_credited(creator);
        (
            c.coins_received,
            credited,
            self.diamonds_available(creator),
            gifts,
        )
    }

    fn stream_fields(&self, stream: StreamId) -> StreamFields {
        let s = self.streams.get(&stream).copied().unwrap_or_default();
        let creator = s.goal.map(|(c, _)| c).or(s.lowest_creator);
        (
            creator,
            s.coins,
            s.goal.map(|(_, target)| (target, s.coins)),
        )
    }

    fn video_fields(&self, video: VideoId) -> VideoFields {
        let v = self.videos.get(&video).cloned().unwrap_or_default();
        let gifts = v.gifts.iter().map(|(&g, &n)| (GiftId(g), n)).collect();
        (v.lowest_creator, v.coins, gifts)
    }

    fn video_top(&self, video: VideoId, k: usize) -> Vec<(UserId, u128)> {
        let scores = self
            .video_gifters
            .iter()
            .filter(|((v, _), _)| *v == video)
            .map(|((_, u), &coins)| (*u, coins));
        top(scores, k)
    }

    fn creator_top(&self, creator: CreatorId, k: usize) -> Vec<(UserId, u128)> {
        let scores = self
            .creator_gifters
            .iter()
            .filter(|((c, _), _)| *c == creator)
            .map(|((_, u), &coins)| (*u, coins));
        top(scores, k)
    }

    fn stream_top(&self, stream: StreamId, k: usize) -> Vec<(UserId, u128)> {
        let scores = self
            .stream_gifters
            .iter()
            .filter(|((s, _), _)| *s == stream)
            .map(|((_, u), &coins)| (*u, coins));
        top(scores, k)
    }

    fn top_creators(&self, k: usize) -> Vec<(CreatorId, u128)> {
        let scores = self
            .creators
            .iter()
            .filter(|(_, c)| c.coins_received > 0)
            .map(|(&c, _)| (c, self.diamonds_credited(c)));
        top(scores, k)
    }
}

// ---- the model: earnings hold (issue #31 feature 4) ----------------------------------
//
// Each credit under a hold is released at `stamp + hold` rounded up to a multiple of
// `ceil(hold / 15)` ms (the hold in force when it was credited), once the ledger's time
// (the newest stamp of the numbered recharges, gifts, account settings and payouts) has
// reached it. Released whole diamonds = floor((credited − held) billionths); a payout
// spends released less paid. When an economy change brings a hold with another grid,
// each creator's held release times are cut to 16: the 15 soonest stay, every later
// credit waits for the latest.

/// When a credit at `stamp` under a hold of `hold` ms is released.
fn model_release_at(stamp: u64, hold: u64) -> u64 {
    let grid = hold.div_ceil(15);
    (stamp + hold).div_ceil(grid) * grid
}

impl Model {
    /// Billionths of `creator`'s diamonds still held at the ledger's time.
    fn held_nanos(&self, creator: CreatorId) -> u128 {
        self.creators.get(&creator).map_or(0, |c| {
            c.held
                .iter()
                .filter(|(release, _, _)| *release > self.hold_clock)
                .map(|(_, nanos, _)| nanos)
                .sum()
        })
    }

    /// Whole diamonds released: credited less held, exactly, rounded down.
    fn diamonds_released(&self, creator: CreatorId) -> u128 {
        let credited = self.creators.get(&creator).map_or(0, |c| c.credited_nanos);
        (credited - self.held_nanos(creator)) / 1_000_000_000
    }

    fn diamonds_held(&self, creator: CreatorId) -> u128 {
        self.diamonds_credited(creator) - self.diamonds_released(creator)
    }

    /// An economy change to a hold with another grid: 16 release times per creator.
    fn hold_carry_over(&mut self, next: &Economy) {
        let grid = |hold: u64| (hold > 0).then(|| hold.div_ceil(15));
        let new = grid(next.earnings_hold_ms);
        if new.is_none() || new == grid(self.economy.earnings_hold_ms) {
            return;
        }
        let clock = self.hold_clock;
        for c in self.creators.values_mut() {
            c.held.retain(|(release, _, _)| *release > clock);
            let mut times: Vec<u64> = c.held.iter().map(|(release, _, _)| *release).collect();
            times.sort_unstable();
            times.dedup();
            if times.len() > 16 {
                let (kept, latest) = (times[14], times[times.len() - 1]);
                for (release, _, _) in c.held.iter_mut() {
                    if *release > kept {
                        *release = latest;
                    }
                }
            }
        }
    }
}

/// The engine's held diamonds equal the model's.
fn check_holds(engine: &Engine, model: &Model) -> Result<(), String> {
    for c in all_creators() {
        let (got, want) = (engine.creator(c).diamonds_held, model.diamonds_held(c));
        ensure!(
            got == want,
            "{c:?} diamonds held: engine {got}, model {want}"
        );
    }
    Ok(())
}

/// The best `k` by score, then by lower id.
fn top<I: Ord + Copy>(scores: impl Iterator<Item = (I, u128)>, k: usize) -> Vec<(I, u128)> {
    let mut all: Vec<(I, u128)> = scores.filter(|(_, s)| *s > 0).collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(k);
    all
}

/// The UTC calendar month of a stamp as `year * 12 + month - 1`, counted from 1970 by
/// the model itself (bounded: one step per year since 1970).
fn utc_month(stamp: Stamp) -> u32 {
    let leap = |y: u32| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut days = stamp.0 / 86_400_000;
    let mut year = 1970;
    let year_days = |y: u32| if leap(y) { 366 } else { 365 };
    while days >= year_days(year) {
        days -= year_days(year);
        year += 1;
    }
    let february = if leap(year) { 29 } else { 28 };
    let lengths = [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let mut month = 0;
    for len in lengths {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    year * 12 + month
}

// ---- the workload ----------------------------------------------------------------

/// What a thread does after applying a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    Nothing,
    Drain,
    Snapshot,
}

#[derive(Debug, Clone)]
struct Batch {
    /// An economy change the operator makes before the batch (thread 0 only, so that
    /// changes never race each other; they race every other thread's batches).
    economy: Option<EconomyFile>,
    events: Vec<Event>,
    stamp: Stamp,
    after: After,
}

/// Everything a seed decides.
struct Plan {
    config: EngineConfig,
    threads: Vec<Vec<Batch>>,
    /// After every stamp of the run: the time the final reads use.
    now: Stamp,
}

/// Draws events from a seed. Every event drawn goes to `pool`, which retries and
/// reused ids pick from: across threads, and within a batch.
struct Generator {
    rng: ChaCha8Rng,
    economy: Economy,
    seed: u64,
    next_id: u64,
    pool: Vec<Event>,
    /// The stamp of the batch being drawn (a recharge's payment time is before it).
    now: u64,
    /// The boundary the run's clock crosses ([`BOUNDARIES`], by seed).
    around: Stamp,
    /// Whether battles' closes are drawn (not by the horizon run, whose bookkeeping is
    /// of ids: a close is judged by its battle's state).
    closes: bool,
}

/// The UTC midnights a run's clock crosses, one per seed in turn: a day and month
/// (2026-12-01, a Tuesday), a day and ISO week (2026-12-07, a Monday), a day, month and
/// year inside one ISO week (2027-01-01, a Friday: 2026-W53 goes on), and all of them
/// at once (2029-01-01, a Monday: 2028-W52 ends).
const BOUNDARIES: [Stamp; 4] = [
    DEC,
    Stamp(1_796_601_600_000),
    Stamp(1_798_761_600_000),
    Stamp(1_861_920_000_000),
];

impl Generator {
    fn new(seed: u64) -> Generator {
        Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            economy: economy(),
            seed,
            next_id: 0,
            pool: Vec::new(),
            now: 0,
            around: BOUNDARIES[(seed % BOUNDARIES.len() as u64) as usize],
            closes: true,
        }
    }

    fn id(&mut self) -> u128 {
        self.next_id += 1;
        u128::from(self.seed) << 64 | u128::from(self.next_id)
    }

    fn user(&mut self) -> u64 {
        self.rng.random_range(1..=USERS)
    }

    fn creator(&mut self) -> u64 {
        self.rng.random_range(1..=CREATORS)
    }

    fn event(&mut self) -> Event {
        let event = match self.rng.random_range(0..100u32) {
            0..14 => self.package_recharge(),
            14..24 => self.custom_recharge(),
            24..48 => self.gift(),
            48..50 => self.recharge_reversal(),
            50..52 => self.gift_reversal(),
            52..60 => self.purchase(),
            60..72 => self.payout(),
            72..76 => self.account(),
            76..79 => self.goal(),
            79..80 => self.battle(),
            80..91 => self.retry(),
            _ => self.reuse(),
        };
        self.pool.push(event);
        event
    }

    /// A package at its USD price; sometimes at a promotion's terms (which economy
    /// versions may offer: [`Generator::promotions`]), sometimes saying when it was paid
    /// (40 to 60 s before its batch's stamp, so that no retry of it is issued ahead of
    /// its stamp).
    fn package_recharge(&mut self) -> Event {
        let i = self.rng.random_range(0..self.economy.packages.len());
        let package = self.economy.packages[i].id.clone();
        let (id, user) = (self.id(), self.user());
        let mut event = recharge(id, user, &package);
        if let Event::Recharge(r) = &mut event {
            match package.as_str() {
                "coins_500" if self.rng.random_bool(0.5) => {
                    r.coins = 600;
                    r.price = dec("4.99");
                }
                "coins_100" if self.rng.random_bool(0.5) => {
                    r.price = dec("0.99");
                    r.channel = Channel::Web;
                }
                _ => {}
            }
            if self.rng.random_bool(0.4) {
                r.paid_ms = self.now - 40_000 - self.rng.random_range(0..=20_000);
                // Often exactly at a window's edge (see `promotions`), when that is
                // early enough.
                const EDGES: [i64; 8] = [
                    -50_001, -50_000, 4_999, 5_000, -30_001, -30_000, 29_999, 30_000,
                ];
                let edge =
                    (self.around.0 as i64 + EDGES[self.rng.random_range(0..EDGES.len())]) as u64;
                if self.rng.random_bool(0.5) && edge <= self.now - 40_000 {
                    r.paid_ms = edge;
                }
            }
        }
        event
    }

    /// Offers an economy version may hold: 100 bonus coins and 4.99 USD on coins_500 for
    /// everyone, and coins_100 at 0.99 USD for US buyers on the web; windows across the
    /// run's stamps and payment times.
    fn promotions(&mut self) -> Vec<giftstream::economy::PromotionFile> {
        let around = self.around.0 as i64;
        let at = |ms: i64| giftstream::economy::format_time((around + ms) as u64);
        let mut out = Vec::new();
        if self.rng.random_bool(0.6) {
            out.push(giftstream::economy::PromotionFile {
                id: "bonus_500".to_owned(),
                package: "coins_500".to_owned(),
                start: at(-50_000),
                end: at(5_000),
                bonus_coins: 100,
                prices: [("USD".to_owned(), "4.99".to_owned())].into(),
                regions: Vec::new(),
                channels: Vec::new(),
            });
        }
        if self.rng.random_bool(0.4) {
            out.push(giftstream::economy::PromotionFile {
                id: "us_web_100".to_owned(),
                package: "coins_100".to_owned(),
                start: at(-30_000),
                end: at(30_000),
                bonus_coins: 0,
                prices: [("USD".to_owned(), "0.99".to_owned())].into(),
                regions: vec!["US".to_owned()],
                channels: vec![Channel::Web],
            });
        }
        out
    }

    fn custom_recharge(&mut self) -> Event {
        let (id, user) = (self.id(), self.user());
        let (coins, price) = match self.rng.random_range(0..100u32) {
            0..4 => (self.rng.random_range(1..30), "0.10"), // below the custom minimum
            4..7 => (2_500_001, "30000"),                   // above the maximum
            7..10 => (1_000, "0"),                          // no price
            10..30 => (self.rng.random_range(300_000..=2_500_000), "3000"),
            _ => (self.rng.random_range(1_000..=300_000), "100"),
        };
        custom(id, user, coins, price)
    }

    /// A battle between 2 or 3 creators' streams (sometimes one, or one twice) over a
    /// window near the batch's stamp (sometimes over already), under a few ids.
    fn battle(&mut self) -> Event {
        let id = self.rng.random_range(1..=BATTLE_IDS);
        // A close (the service's, or a client's: early ones are refused) now and then.
        if self.closes && self.rng.random_bool(0.4) {
            return Event::BattleClose(BattleClose {
                battle: BattleId(id),
            });
        }
        let sides = match self.rng.random_range(0..10u32) {
            0 => 1,
            1..7 => 2,
            _ => 3,
        };
        let mut streams: Vec<StreamId> = (0..sides)
            .map(|_| StreamId(STREAM_BASE + self.creator()))
            .collect();
        if self.rng.random_bool(0.7) {
            streams.sort_unstable();
            streams.dedup();
            if streams.len() == 1 && sides > 1 {
                streams.push(StreamId(STREAM_BASE + CREATORS + 1));
            }
        }
        let start = self.now.saturating_sub(20_000) + self.rng.random_range(0..=40_000);
        let end = start + self.rng.random_range(1..=30_000);
        Event::Battle(Battle::new(BattleId(id), &streams, start, end).expect("a window"))
    }

    fn gift(&mut self) -> Event {
        const NAMES: [(&str, u32); 10] = [
            ("rose", 15),
            ("panda", 10),
            ("finger_heart", 5),
            ("rainbow_puke", 10),
            ("concert", 15),
            ("drama_queen", 20),
            ("planet", 12),
            ("universe", 10),
            (NEW_GIFT, 6),
            ("no_such_gift", 3),
        ];
        let mut roll = self.rng.random_range(0..100u32);
        let name = NAMES
            .iter()
            .find(|(_, weight)| {
                let hit = roll < *weight;
                roll = roll.saturating_sub(*weight);
                hit
            })
            .map_or("rose", |(name, _)| *name);
        let max = self.economy.max_gift_count;
        let count = match self.rng.random_range(0..100u32) {
            0..2 => 0,
            2..4 => max + 1,
            4..5 => max,
            5..30 => self.rng.random_range(1..=30),
            _ => self.rng.random_range(1..=3),
        };
        let (id, sender, creator) = (self.id(), self.user(), self.creator());
        let mut event = gift(id, sender, creator, name, count);
        if let Event::Gift(g) = &mut event
            && name == NEW_GIFT
        {
            // The first id any version adds: the next code after the embedded catalog.
            g.gift = GiftId(self.economy.gifts.len() as u32);
        }
        // A third of the gifts are on videos (#31 feature 6).
        if let Event::Gift(g) = event
            && self.rng.random_range(0..3u32) == 0
        {
            let video = VideoId(VIDEO_BASE + self.rng.random_range(1..=VIDEOS));
            return Event::VideoGift(VideoGift {
                id: g.id,
                sender: g.sender,
                creator: g.creator,
                video,
                gift: g.gift,
                count: g.count,
            });
        }
        event
    }

    /// A gift reversal: mostly of a recent gift by its sender (held or released by
    /// now, accepted or rejected), sometimes of another sender's gift, of a recharge, or
    /// of an id never used.
    fn gift_reversal(&mut self) -> Event {
        let id = self.id();
        let gifts: Vec<(u128, u64)> = self
            .pool
            .iter()
            .rev()
            .filter_map(|e| match e {
                Event::Gift(g) => Some((g.id.0, g.sender.0)),
                Event::VideoGift(v) => Some((v.id.0, v.sender.0)),
                _ => None,
            })
            .take(24)
            .collect();
        let roll = self.rng.random_range(0..100u32);
        let (gift, sender) = match (gifts.is_empty(), roll) {
            (false, 0..75) => gifts[self.rng.random_range(0..gifts.len())],
            (false, 75..85) => {
                let (gift, sender) = gifts[self.rng.random_range(0..gifts.len())];
                (gift, sender % USERS + 1)
            }
            (_, 85..92) => match self.earlier() {
                Some(e) => (e.id().0, self.user()),
                None => (u128::MAX, self.user()),
            },
            _ => (u128::from(self.seed) << 64 | 1 << 63, self.user()),
        };
        Event::GiftReversal(GiftReversal::new(
            EventId(id),
            UserId(sender),
            EventId(gift),
        ))
    }

    /// A purchase: items of the catalog, one a version may add, an unknown one; counts
    /// as a gift's (0, over the maximum, the maximum, small ones).
    fn purchase(&mut self) -> Event {
        const NAMES: [(&str, u32); 5] = [
            ("sticker_pack", 40),
            ("profile_frame", 30),
            ("ad_free_month", 15),
            (NEW_ITEM, 10),
            ("no_such_item", 5),
        ];
        let mut roll = self.rng.random_range(0..100u32);
        let name = NAMES
            .iter()
            .find(|(_, weight)| {
                let hit = roll < *weight;
                roll = roll.saturating_sub(*weight);
                hit
            })
            .map_or("sticker_pack", |(name, _)| *name);
        let max = self.economy.max_gift_count;
        let count = match self.rng.random_range(0..100u32) {
            0..2 => 0,
            2..4 => max + 1,
            4..5 => max,
            5..20 => self.rng.random_range(1..=30),
            _ => self.rng.random_range(1..=3),
        };
        let (id, user) = (self.id(), self.user());
        let mut event = purchase(id, user, name, count);
        if let Event::Purchase(p) = &mut event
            && name == NEW_ITEM
        {
            // The first id any version adds: the next code after the embedded catalog.
            p.item = ItemId(self.economy.items.len() as u32);
        }
        event
    }

    /// The purchase terms a version changes: an item left out, one added, a price, the
    /// order (which changes nothing).
    fn change_items(&mut self, file: &mut EconomyFile) {
        if self.rng.random_bool(0.3) {
            file.items.retain(|i| i.id != "sticker_pack");
        }
        if self.rng.random_bool(0.5) {
            file.items.push(giftstream::economy::ItemFile {
                id: NEW_ITEM.to_owned(),
                name: "Boost".to_owned(),
                coins: 20,
            });
        }
        if self.rng.random_bool(0.3) {
            let frame = file.items.iter_mut().find(|i| i.id == "profile_frame");
            frame.expect("profile_frame").coins = 350;
        }
        if self.rng.random_bool(0.3) {
            file.items.reverse();
        }
    }

    /// The embedded economy with some terms changed: the share, a gift left out or
    /// added, a package's price, the catalog's order (which changes nothing).
    fn economy_change(&mut self) -> EconomyFile {
        let mut file = economy().to_file();
        file.promotions = self.promotions();
        file.creator_share =
            ["0.5", "0.7", "0.333333333", "0.25", "1"][self.rng.random_range(0..5usize)].to_owned();
        if self.rng.random_bool(0.4) {
            file.gifts.retain(|g| g.id != "panda");
        }
        if self.rng.random_bool(0.5) {
            file.gifts.push(giftstream::economy::GiftFile {
                id: NEW_GIFT.to_owned(),
                name: "Meteor".to_owned(),
                coins: 7,
            });
        }
        if self.rng.random_bool(0.3) {
            let p = file
                .packages
                .iter_mut()
                .find(|p| p.id == "coins_100")
                .expect("coins_100");
            p.prices.insert("USD".to_owned(), "1.49".to_owned());
        }
        if self.rng.random_bool(0.3) {
            file.gifts.reverse();
            file.packages.reverse();
        }
        self.change_items(&mut file);
        // Earnings hold: none, or one that releases within the run (grids of 2 ms to 3 s).
        file.earnings_hold_ms = [0, 0, 30, 4_000, 15_000, 45_000][self.rng.random_range(0..6usize)];
        // Platform caps per user per day and ISO week, or none (spent counts carry over
        // a change: a cap put in force mid-day counts what was spent that day already).
        if self.rng.random_bool(0.6) {
            let daily = self
                .rng
                .random_bool(0.7)
                .then(|| self.rng.random_range(1_000..=80_000));
            let weekly = self
                .rng
                .random_bool(0.7)
                .then(|| self.rng.random_range(5_000..=200_000));
            file.spending_caps = Some(SpendingCapsFile {
                daily_coins: daily,
                weekly_coins: weekly,
            });
        }
        file
    }

    fn payout(&mut self) -> Event {
        let id = self.id();
        let creator = if self.rng.random_bool(0.1) {
            UNFUNDED_CREATORS[self.rng.random_range(0..UNFUNDED_CREATORS.len())]
        } else {
            self.creator()
        };
        let currency = if self.rng.random_bool(0.3) {
            "EUR"
        } else {
            "USD"
        };
        let (diamonds, currency) = match self.rng.random_range(0..100u32) {
            0..4 => (0, currency),
            4..8 => (self.rng.random_range(20_000..=40_000), "JPY"),
            8..18 => (self.rng.random_range(1..20_000), currency), // below the minimum
            18..22 => (50_000_000, currency),
            _ => (self.rng.random_range(20_000..=80_000), currency),
        };
        payout(id, creator, diamonds, currency)
    }

    fn account(&mut self) -> Event {
        let (id, user) = (self.id(), self.user());
        let region = match self.rng.random_range(0..100u32) {
            0..50 => None,
            50..75 => Some("US"),
            75..85 => Some("DE"),
            85..93 => Some("KP"),
            _ => Some("CU"),
        };
        let adult = !self.rng.random_bool(0.1);
        let budget = if self.rng.random_bool(0.5) {
            Some(self.rng.random_range(0..=300_000))
        } else {
            None
        };
        let mut event = account(id, user, region, adult, budget);
        if let Event::Account(a) = &mut event {
            a.daily_budget_coins = self.window_budget(20_000).into();
            a.weekly_budget_coins = self.window_budget(60_000).into();
        }
        event
    }

    /// A daily or weekly budget: often none, mostly up to `max`, sometimes the largest
    /// allowed (u32::MAX) or one above it (AMOUNT_OUT_OF_RANGE).
    fn window_budget(&mut self, max: u64) -> Option<u64> {
        match self.rng.random_range(0..100u32) {
            0..50 => None,
            50..95 => Some(self.rng.random_range(0..=max)),
            95..98 => Some(u64::from(u32::MAX)),
            _ => Some(u64::from(u32::MAX) + 1),
        }
    }

    fn goal(&mut self) -> Event {
        let (id, creator) = (self.id(), self.creator());
        let stream = if self.rng.random_bool(0.8) {
            STREAM_BASE + creator
        } else {
            GOAL_ONLY_STREAM
        };
        let target = if self.rng.random_bool(0.1) {
            0
        } else {
            self.rng.random_range(1..=1_000_000)
        };
        goal(id, stream, creator, target)
    }

    /// An earlier event: often a recent one (same batch or thread), else any.
    fn earlier(&mut self) -> Option<Event> {
        let n = self.pool.len();
        if n == 0 {
            return None;
        }
        let from = if self.rng.random_bool(0.3) {
            n.saturating_sub(8)
        } else {
            0
        };
        Some(self.pool[self.rng.random_range(from..n)])
    }

    /// A recharge reversal: mostly of an earlier recharge by its user (spent or not,
    /// maybe reversed already), sometimes naming it for another user, or naming any
    /// earlier event (a gift, a rejected recharge, a reversal).
    fn recharge_reversal(&mut self) -> Event {
        let recharges: Vec<(EventId, UserId)> = self
            .pool
            .iter()
            .filter_map(|e| match e {
                Event::Recharge(r) => Some((r.id, r.user)),
                _ => None,
            })
            .collect();
        let pick = self.rng.random_range(0..10u32);
        let (recharge, user) = if recharges.is_empty() || pick == 9 {
            let any = self.earlier().map_or(EventId(1), |e| e.id());
            (any, UserId(self.user()))
        } else {
            let (id, user) = recharges[self.rng.random_range(0..recharges.len())];
            let user = if pick == 8 { UserId(self.user()) } else { user };
            (id, user)
        };
        Event::RechargeReversal(RechargeReversal {
            id: EventId(self.id()),
            user,
            recharge,
        })
    }

    /// An exact retry of an earlier event (same id, same content).
    fn retry(&mut self) -> Event {
        self.earlier().unwrap_or_else(|| self.gift())
    }

    /// An earlier event's id with other content: another user's recharge, a gift's id
    /// as a payout, any other id as a gift.
    fn reuse(&mut self) -> Event {
        let Some(original) = self.earlier() else {
            return self.custom_recharge();
        };
        let id = original.id().0;
        match original {
            Event::Recharge(r) => Event::Recharge(Recharge {
                user: UserId(r.user.0 % USERS + 1),
                ..r
            }),
            Event::Gift(g) => payout(id, g.creator.0, 20_000, "USD"),
            // A battle's id is derived, in a domain of its own: a client event carrying
            // it is a fresh id (b11 in battles.rs); a close is no idempotency key.
            Event::Battle(_) | Event::BattleClose(_) => self.custom_recharge(),
            _ => {
                let (sender, creator) = (self.user(), self.creator());
                gift(id, sender, creator, "rose", 1)
            }
        }
    }

    /// A batch's stamp: moving from `around - SPAN_MS` to `around + SPAN_MS` over the
    /// run, with jitter, and sometimes well before batches applied earlier.
    fn stamp(&mut self, k: u64, total: u64) -> Stamp {
        let base = self.around.0 - SPAN_MS + k * 2 * SPAN_MS / total.max(1);
        let jitter = self.rng.random_range(0..=4_000);
        let back = if self.rng.random_bool(0.1) {
            self.rng.random_range(5_000..=30_000)
        } else {
            0
        };
        Stamp(base + jitter - 2_000 - back)
    }

    fn batch(&mut self, k: u64, total: u64, after: After) -> Batch {
        let stamp = self.stamp(k, total);
        self.now = stamp.0;
        let n = self.rng.random_range(1..=BATCH_EVENTS_MAX);
        let events = (0..n).map(|_| self.event()).collect();
        Batch {
            economy: None,
            events,
            stamp,
            after,
        }
    }

    fn config(&mut self, ids_bound: usize) -> EngineConfig {
        let shards = [1, 2, 4][self.rng.random_range(0..3usize)];
        EngineConfig {
            shards,
            // Room for every id of the run in any one shard: a run forgets nothing, as
            // the model does (the window's own bound has a test of its own below).
            idempotency_entries_max: ids_bound * 4,
            history_per_user: self.rng.random_range(0..=4),
            top_k: self.rng.random_range(1..=3),
            // Windowed leaderboards on, with a retention of one or two windows of each
            // kind (no draw of its own: every seed's workload stays as it was).
            windows: giftstream::config::engine::WindowsConfig {
                enabled: true,
                hours: 1 + (shards as u32 % 2),
                days: 2 - (shards as u32 % 2),
                weeks: 1,
                months: 1 + (ids_bound as u32 % 2),
            },
            ..EngineConfig::default()
        }
    }
}

impl Plan {
    fn generate(seed: u64) -> Plan {
        let mut g = Generator::new(seed);
        let threads = g.rng.random_range(3..=4usize);
        let config = g.config(threads * BATCHES_PER_THREAD * BATCH_EVENTS_MAX);
        let total = (threads * BATCHES_PER_THREAD) as u64;
        let mut plans = vec![Vec::new(); threads];
        for b in 0..BATCHES_PER_THREAD {
            for (t, plan) in plans.iter_mut().enumerate() {
                let after = if t == 0 && b == BATCHES_PER_THREAD / 2 {
                    After::Snapshot
                } else if g.rng.random_bool(0.05) {
                    After::Drain
                } else {
                    After::Nothing
                };
                let k = (b * threads + t) as u64;
                let mut batch = g.batch(k, total, after);
                if t == 0 && g.rng.random_bool(0.12) {
                    batch.economy = Some(g.economy_change());
                }
                plan.push(batch);
            }
        }
        Plan {
            config,
            threads: plans,
            now: Stamp(g.around.0 + 2 * SPAN_MS),
        }
    }

    fn events(&self) -> usize {
        self.threads.iter().flatten().map(|b| b.events.len()).sum()
    }
}

// ---- running it ------------------------------------------------------------------

/// What a run left to check.
struct Run {
    /// Every event a thread sent, with the answer it got.
    answers: Vec<(Event, Outcome)>,
    /// The whole drained log (drains, the snapshot's, the final one), sorted by seq.
    log: Vec<LogEntry>,
    snapshot: Option<EngineState>,
    /// Every economy version the run put in force.
    versions: Versions,
}

/// Cuts taken while the threads run.
#[derive(Default)]
struct Cuts {
    log: Mutex<Vec<LogEntry>>,
    snapshot: Mutex<Option<EngineState>>,
    versions: Mutex<Versions>,
    /// Batches whose answers break the batch order ([`check_batch_order`]).
    order: Mutex<Vec<String>>,
}

/// The sender a sender event is applied for (its shard's pass); `None` for the events
/// applied after every sender event of their batch (payouts, goals, settlements, gift
/// reversals).
fn first_pass_sender(event: &Event) -> Option<UserId> {
    match event {
        Event::Recharge(r) => Some(r.user),
        Event::Gift(g) => Some(g.sender),
        Event::VideoGift(v) => Some(v.sender),
        Event::Purchase(p) => Some(p.user),
        Event::Account(a) => Some(a.user),
        Event::RechargeReversal(r) => Some(r.user),
        _ => None,
    }
}

/// The order a batch is applied in, from its fresh answers' sequence numbers: every
/// sender event before every payout, goal and gift reversal; each sender's events in
/// batch order; the second pass in batch order.
fn check_batch_order(events: &[Event], outcomes: &[Outcome]) -> Result<(), String> {
    let fresh = events
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| !o.duplicate && o.seq != 0);
    let mut last_of: HashMap<UserId, u64> = HashMap::new();
    let (mut first_pass_max, mut second_pass_last) = (0u64, None::<(u64, &Event)>);
    for (event, outcome) in fresh {
        match first_pass_sender(event) {
            Some(sender) => {
                let last = last_of.entry(sender).or_default();
                ensure!(
                    outcome.seq > *last,
                    "{event:?} (seq {}) was applied before an earlier event of its sender in its batch (seq {last})",
                    outcome.seq
                );
                *last = outcome.seq;
                first_pass_max = first_pass_max.max(outcome.seq);
            }
            None => {
                if let Some((seq, before)) = second_pass_last {
                    ensure!(
                        outcome.seq > seq,
                        "{event:?} (seq {}) was applied before {before:?} (seq {seq}), earlier in its batch",
                        outcome.seq
                    );
                }
                second_pass_last = Some((outcome.seq, event));
            }
        }
    }
    let second: Vec<(u64, &Event)> = events
        .iter()
        .zip(outcomes)
        .filter(|(e, o)| !o.duplicate && o.seq != 0 && first_pass_sender(e).is_none())
        .map(|(e, o)| (o.seq, e))
        .collect();
    if let Some(&(seq, event)) = second.iter().find(|(seq, _)| *seq < first_pass_max) {
        return Err(format!(
            "{event:?} (seq {seq}) was applied before a sender event of its batch (seq {first_pass_max})"
        ));
    }
    Ok(())
}

fn apply_planned(engine: &Engine, batch: &Batch, cuts: &Cuts) -> Vec<(Event, Outcome)> {
    if let Some(file) = &batch.economy
        && let Some(next) = engine
            .economy_successor(file.clone())
            .expect("the simulation's economies are valid")
    {
        let digest = next.to_doc().digest();
        cuts.versions.lock().unwrap().insert(digest, next.clone());
        engine
            .change_economy(next, batch.stamp)
            .expect("one operator: every change follows the one in force");
    }
    let outcomes = engine.apply_batch(&batch.events, batch.stamp);
    assert_eq!(outcomes.len(), batch.events.len(), "one outcome per event");
    if let Err(e) = check_batch_order(&batch.events, &outcomes) {
        cuts.order.lock().unwrap().push(e);
    }
    match batch.after {
        After::Nothing => {}
        After::Drain => cuts.log.lock().unwrap().extend(engine.drain_log()),
        After::Snapshot => {
            let (state, log) = engine.snapshot();
            cuts.log.lock().unwrap().extend(log);
            *cuts.snapshot.lock().unwrap() = Some(state);
        }
    }
    batch.events.iter().copied().zip(outcomes).collect()
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic".to_owned())
}

/// Applies every thread's batches on its own thread, all at once.
fn run_concurrently(
    engine: &Engine,
    plan: &Plan,
    cuts: &Cuts,
) -> Result<Vec<(Event, Outcome)>, String> {
    std::thread::scope(|scope| {
        let workers: Vec<_> = plan
            .threads
            .iter()
            .map(|batches| {
                scope.spawn(move || {
                    let answers: Vec<_> = batches
                        .iter()
                        .map(|b| apply_planned(engine, b, cuts))
                        .collect();
                    answers.concat()
                })
            })
            .collect();
        let mut answers = Vec::new();
        for worker in workers {
            let got = worker
                .join()
                .map_err(|p| format!("a worker panicked: {}", panic_text(&*p)))?;
            answers.extend(got);
        }
        Ok(answers)
    })
}

/// Applies the same batches from one thread, round-robin (`GIFTSTREAM_SIM_SERIAL`).
fn run_serially(engine: &Engine, plan: &Plan, cuts: &Cuts) -> Vec<(Event, Outcome)> {
    let mut answers = Vec::new();
    for b in 0..BATCHES_PER_THREAD {
        for batches in &plan.threads {
            answers.extend(apply_planned(engine, &batches[b], cuts));
        }
    }
    answers
}

fn run(engine: &Engine, plan: &Plan) -> Result<Run, String> {
    let cuts = Cuts::default();
    let answers = if std::env::var_os("GIFTSTREAM_SIM_SERIAL").is_some() {
        run_serially(engine, plan, &cuts)
    } else {
        run_concurrently(engine, plan, &cuts)?
    };
    let mut log = cuts.log.into_inner().unwrap();
    log.extend(engine.drain_log());
    log.sort_by_key(|e| e.seq);
    if let Some(e) = cuts.order.into_inner().unwrap().first() {
        return Err(format!("batch order: {e}"));
    }
    Ok(Run {
        answers,
        log,
        snapshot: cuts.snapshot.into_inner().unwrap(),
        versions: cuts.versions.into_inner().unwrap(),
    })
}

// ---- the checks ------------------------------------------------------------------

/// The log holds every number `1..=last_seq` exactly once.
fn check_gap_free(log: &[LogEntry], last_seq: u64) -> Result<(), String> {
    for (i, entry) in log.iter().enumerate() {
        ensure!(
            entry.seq == i as u64 + 1,
            "the drained log is not gap-free: entry {i} has seq {} (previous {:?})",
            entry.seq,
            i.checked_sub(1).map(|p| log[p].seq)
        );
    }
    ensure!(
        log.len() as u64 == last_seq,
        "last_seq {last_seq} but {} entries were journaled",
        log.len()
    );
    Ok(())
}

/// Runs the model over the log in seq order: every journaled outcome must be the
/// model's, and no id may be journaled twice.
fn check_log_with_model(
    log: &[LogEntry],
    versions: &Versions,
    history_per_user: usize,
) -> Result<Model, String> {
    let mut model = Model::new(economy(), versions.clone());
    model.history_per_user = history_per_user;
    for entry in log {
        if let Some((first, outcome)) = model.ids.get(&id_key(&entry.event))
            && !matches!(entry.event, Event::BattleClose(_))
        {
            return Err(format!(
                "event id {:?} journaled twice: seq {} {first:?} and seq {} {:?} (stamp {})",
                entry.event.id(),
                outcome.seq,
                entry.seq,
                entry.event,
                entry.stamp.0
            ));
        }
        let expected = model.apply(&entry.event, entry.stamp);
        ensure!(
            expected == entry.outcome,
            "seq {}: {:?} at stamp {} was journaled as {:?}, the model (run in seq order) says {:?}",
            entry.seq,
            entry.event,
            entry.stamp.0,
            entry.outcome,
            expected
        );
        if let Event::GiftReversal(_) = entry.event {
            let reversed = entry.reversed.as_deref().copied();
            ensure!(
                reversed == model.last_reversed,
                "seq {}: the reversal journaled {:?} as taken back, the model {:?}",
                entry.seq,
                reversed,
                model.last_reversed
            );
        }
    }
    Ok(model)
}

/// Every live answer agrees with the log: the applying answer of each journaled id is
/// its journaled outcome (exactly one), every other answer the model's answer to a
/// retry of that id.
fn check_answers(model: &Model, answers: &[(Event, Outcome)]) -> Result<(), String> {
    let mut applied: HashMap<IdKey, u32> = HashMap::new();
    for (event, got) in answers {
        if let Event::BattleClose(c) = event {
            // Judged by the battle's state (the log holds each applied one): a duplicate
            // is the accepted close.
            let closed = model.battles.get(&c.battle.0).and_then(|b| b.close_seq);
            ensure!(
                !got.duplicate || closed == Some(got.seq),
                "{event:?} answered {got:?} as the close, the model's is {closed:?}"
            );
            continue;
        }
        let Some((original, outcome)) = model.ids.get(&id_key(event)) else {
            return Err(format!(
                "{event:?} was answered {got:?}, but its id was never journaled"
            ));
        };
        if original == event && got == outcome {
            *applied.entry(id_key(event)).or_default() += 1;
            continue;
        }
        let expected = model.known(event).expect("a journaled id");
        ensure!(
            *got == expected,
            "{event:?} was answered {got:?}; id {:?} was journaled at seq {} as {original:?}, so the answer must be {expected:?}",
            event.id(),
            outcome.seq
        );
    }
    for (id, (event, outcome)) in &model.ids {
        let n = applied.get(id).copied().unwrap_or(0);
        ensure!(
            n == 1,
            "{event:?} (seq {}) was answered as applied {n} times",
            outcome.seq
        );
    }
    Ok(())
}

fn engine_wallet(engine: &Engine, user: UserId, now: Stamp) -> WalletFields {
    let w = engine.wallet(user, now);
    (
        w.coins,
        w.spent_this_month,
        w.monthly_budget_coins,
        w.region,
        w.adult,
        (
            w.spent_today,
            w.spent_this_week,
            w.daily_budget_coins,
            w.weekly_budget_coins,
        ),
        w.coins_owed,
    )
}

fn engine_creator(engine: &Engine, creator: CreatorId) -> CreatorFields {
    let c = engine.creator(creator);
    (
        c.coins_received,
        c.diamonds_total,
        c.diamonds_available,
        c.gifts.into_iter().filter(|(_, n)| *n > 0).collect(),
    )
}

fn engine_stream(engine: &Engine, stream: StreamId) -> StreamFields {
    let s = engine.stream(stream);
    (s.creator, s.coins_received, s.goal)
}

fn all_creators() -> impl Iterator<Item = CreatorId> {
    (1..=CREATORS).chain(UNFUNDED_CREATORS).map(CreatorId)
}

fn all_streams() -> impl Iterator<Item = StreamId> {
    all_creators()
        .map(|c| StreamId(STREAM_BASE + c.0))
        .chain([StreamId(GOAL_ONLY_STREAM)])
}

/// The engine's reads equal the model's.
fn check_state(engine: &Engine, model: &Model, now: Stamp, k: usize) -> Result<(), String> {
    for user in (1..=USERS).map(UserId) {
        let (got, want) = (
            engine_wallet(engine, user, now),
            model.wallet_fields(user, now),
        );
        ensure!(
            got == want,
            "wallet of {user:?}: engine {got:?}, model {want:?}"
        );
    }
    for c in all_creators() {
        let (got, want) = (engine_creator(engine, c), model.creator_fields(c));
        ensure!(
            got == want,
            "{c:?} (coins, diamonds, available, gifts): engine {got:?}, model {want:?}"
        );
        let (got, want) = (engine.creator_top_gifters(c, k), model.creator_top(c, k));
        ensure!(
            got == want,
            "top gifters of {c:?}: engine {got:?}, model {want:?}"
        );
    }
    for s in all_streams() {
        let (got, want) = (engine_stream(engine, s), model.stream_fields(s));
        ensure!(
            got == want,
            "{s:?} (creator, coins, goal): engine {got:?}, model {want:?}"
        );
        let (got, want) = (engine.stream_top_gifters(s, k), model.stream_top(s, k));
        ensure!(
            got == want,
            "top gifters of {s:?}: engine {got:?}, model {want:?}"
        );
    }
    for v in (1..=VIDEOS).map(|n| VideoId(VIDEO_BASE + n)) {
        let view = engine.video(v);
        let (got, want) = (
            (view.creator, view.coins_received, view.gifts),
            model.video_fields(v),
        );
        ensure!(
            got == want,
            "{v:?} (creator, coins, gifts): engine {got:?}, model {want:?}"
        );
        let (got, want) = (engine.video_top_gifters(v, k), model.video_top(v, k));
        ensure!(
            got == want,
            "top gifters of {v:?}: engine {got:?}, model {want:?}"
        );
    }
    let (got, want) = (engine.top_creators(k), model.top_creators(k));
    ensure!(got == want, "top creators: engine {got:?}, model {want:?}");
    for id in 1..=BATTLE_IDS {
        let got = engine.battle(BattleId(id), 10).map(|v| {
            v.sides
                .into_iter()
                .map(|s| (s.coins, s.top_gifters))
                .collect::<Vec<_>>()
        });
        let want = model.battle_view(id);
        ensure!(got == want, "battle {id}: engine {got:?}, model {want:?}");
    }
    check_windows(engine, model, k)?;
    check_holds(engine, model)?;
    let audit = engine.audit();
    ensure!(audit.is_clean(), "audit: {:?}", audit.violations);
    let videos: u128 = model.videos.values().map(|v| v.coins).sum();
    ensure!(
        audit.totals.coins_received_by_videos == videos,
        "coins received by videos: engine {}, model {videos}",
        audit.totals.coins_received_by_videos
    );
    let got: BTreeMap<String, (u64, u128, BTreeMap<String, Decimal>)> = audit
        .totals
        .promotions
        .iter()
        .map(|(id, s)| {
            let money = s.revenue.iter().map(|(c, a)| (c.to_string(), *a)).collect();
            (id.clone(), (s.recharges, s.bonus_coins, money))
        })
        .collect();
    ensure!(
        got == model.promotion_sales,
        "promotion sales: engine {got:?}, model {:?}",
        model.promotion_sales
    );
    check_purchases(&audit.totals, model)
}

/// The windowed leaderboards (#32 feature 1) of the windows holding the ledger's time
/// and of those an hour, a day, a week and a month before it (past their retention or
/// not): the engine's lists are the model's, or refused as expired exactly when the
/// model's retention says so.
fn check_windows(engine: &Engine, model: &Model, k: usize) -> Result<(), String> {
    use giftstream::engine::{TimeWindow, WindowError, WindowKind};
    let config = &engine.config().windows;
    if !config.enabled {
        return Ok(());
    }
    let now = model.hold_clock;
    let kept = [config.hours, config.days, config.weeks, config.months];
    let back = [3_600_000, 86_400_000, 7 * 86_400_000, 31 * 86_400_000];
    for (kind_at, kind) in WindowKind::ALL.into_iter().enumerate() {
        for stamp in [
            now,
            now.saturating_sub(back[kind_at]),
            now.saturating_sub(1),
        ] {
            let window = TimeWindow::of(kind, Stamp(stamp));
            let key = model_windows(stamp)[kind_at];
            let retained = model_oldest_kept(kind_at, now, kept[kind_at]).is_some_and(|o| key >= o);
            let users = |l: Vec<(u64, u128)>| -> Vec<(UserId, u128)> {
                l.into_iter().map(|(u, c)| (UserId(u), c)).collect()
            };
            let want = |got: Result<Vec<(UserId, u128)>, WindowError>, board: Board| {
                let want = if retained {
                    Ok(users(model.window_top(kind_at, key, board, k)))
                } else {
                    Err(WindowError::Expired)
                };
                (got, want)
            };
            for c in all_creators() {
                let (got, want) = want(
                    engine.creator_top_gifters_in(c, window, k),
                    Board::Creator(c),
                );
                ensure!(
                    got == want,
                    "top gifters of {c:?} in {window:?} (now {now}): engine {got:?}, model {want:?}"
                );
            }
            for s in all_streams() {
                let (got, want) =
                    want(engine.stream_top_gifters_in(s, window, k), Board::Stream(s));
                ensure!(
                    got == want,
                    "top gifters of {s:?} in {window:?} (now {now}): engine {got:?}, model {want:?}"
                );
            }
            let got = engine.top_creators_in(window, k).map(|l| {
                l.into_iter()
                    .map(|(c, coins)| (UserId(c.0), coins))
                    .collect::<Vec<_>>()
            });
            let (got, want) = want(got, Board::Creators);
            ensure!(
                got == want,
                "top creators in {window:?} (now {now}): engine {got:?}, model {want:?}"
            );
            for of in std::iter::once(None).chain(all_creators().map(Some)) {
                let got = engine.gift_stats_in(window, of).map(|l| {
                    l.into_iter()
                        .map(|(g, n)| (g.0, n.count, n.coins))
                        .collect::<Vec<_>>()
                });
                let want = if retained {
                    Ok(model.gift_stats(kind_at, key, of))
                } else {
                    Err(WindowError::Expired)
                };
                ensure!(
                    got == want,
                    "gift stats of {of:?} in {window:?} (now {now}): engine {got:?}, model {want:?}"
                );
            }
        }
    }
    Ok(())
}

/// The audit's purchase revenue is the model's, and every coin recharged is in a wallet
/// or spent on a gift or a purchase.
fn check_purchases(t: &giftstream::engine::LedgerTotals, model: &Model) -> Result<(), String> {
    ensure!(
        t.coins_spent_on_purchases == model.purchased,
        "coins spent on purchases: engine {}, model {}",
        t.coins_spent_on_purchases,
        model.purchased
    );
    let by_item: u128 = t.purchases.iter().map(|&(_, _, coins)| coins).sum();
    ensure!(
        by_item == model.purchased,
        "purchases by item sum to {by_item}, the model spent {}",
        model.purchased
    );
    ensure!(
        t.coins_refunded == model.refunded,
        "coins refunded by gift reversals: engine {}, model {}",
        t.coins_refunded,
        model.refunded
    );
    let in_wallets: u128 = model.wallets.values().map(|w| u128::from(w.coins)).sum();
    ensure!(
        t.coins_in_wallets == in_wallets,
        "coins in wallets: engine {}, model {in_wallets}",
        t.coins_in_wallets
    );
    let owed: u128 = model.debts.values().map(|&o| u128::from(o)).sum();
    ensure!(
        (t.coins_reversed, t.coins_owed, t.users_in_debt)
            == (model.reversed, owed, model.debts.len() as u64),
        "reversed, owed, users in debt: engine {:?}, model {:?}",
        (t.coins_reversed, t.coins_owed, t.users_in_debt),
        (model.reversed, owed, model.debts.len())
    );
    Ok(())
}

/// Where two fingerprints first differ, shortly.
fn first_difference(a: &str, b: &str) -> String {
    let short = |s: &str| s.chars().take(400).collect::<String>();
    match a
        .lines()
        .zip(b.lines())
        .enumerate()
        .find(|(_, (x, y))| x != y)
    {
        Some((i, (x, y))) => format!("line {i}: live {} / restarted {}", short(x), short(y)),
        None => format!(
            "{} lines live, {} restarted",
            a.lines().count(),
            b.lines().count()
        ),
    }
}

fn check_same_state(live: &Engine, restarted: &Engine, how: &str) -> Result<(), String> {
    let (a, b) = (live.state_fingerprint(), restarted.state_fingerprint());
    ensure!(
        a == b,
        "{how}: state differs from the live engine's: {}",
        first_difference(&a, &b)
    );
    Ok(())
}

/// A restarted engine still answers retries of journaled events with their original
/// outcomes and refuses their ids with other content, changing nothing.
fn check_retries(
    engine: &Engine,
    model: &Model,
    log: &[LogEntry],
    now: Stamp,
    how: &str,
) -> Result<(), String> {
    let before = engine.state_fingerprint();
    let step = (log.len() / 16).max(1);
    for entry in log.iter().step_by(step) {
        // Neither an economy change nor a battle's close is an idempotency key (a close
        // is judged by its battle's state: an early one again, anew).
        if let Event::Economy(_) | Event::BattleClose(_) = entry.event {
            continue;
        }
        let other = Event::Account(AccountSettings {
            id: entry.event.id(),
            user: UserId(USERS + 1),
            region: None,
            adult: true,
            monthly_budget_coins: Some(1).into(),
            daily_budget_coins: None.into(),
            weekly_budget_coins: None.into(),
        });
        // A battle's derived id is a domain of its own: a client event with its bits is
        // another id (review B11), not a retry.
        let others: &[Event] = match entry.event {
            Event::Battle(_) => &[],
            _ => std::slice::from_ref(&other),
        };
        for &event in std::iter::once(&entry.event).chain(others) {
            let got = engine.apply_batch(&[event], now)[0];
            let want = model.known(&event).expect("a journaled id");
            ensure!(
                got == want,
                "{how}: {event:?} was answered {got:?}, must be {want:?}"
            );
        }
    }
    let after = engine.state_fingerprint();
    ensure!(
        before == after,
        "{how}: retries changed the state: {}",
        first_difference(&before, &after)
    );
    Ok(())
}

/// Restarts from the whole log, and from the snapshot plus the rest of the log.
fn check_restarts(engine: &Engine, plan: &Plan, run: &Run, model: &Model) -> Result<(), String> {
    let replayed = Engine::new(economy(), plan.config.clone()).map_err(|e| e.to_string())?;
    let know = |engine: &Engine| {
        for version in run.versions.values() {
            engine.know_economy(std::sync::Arc::new(version.clone()));
        }
    };
    know(&replayed);
    replayed
        .replay(&run.log)
        .map_err(|e| format!("replay of the whole log failed: {e}"))?;
    check_same_state(engine, &replayed, "replay of the whole log")?;
    let state = run.snapshot.clone().ok_or("no snapshot was taken")?;
    let from = state.last_seq() as usize;
    let restored =
        Engine::from_state(economy(), plan.config.clone(), state).map_err(|e| e.to_string())?;
    know(&restored);
    restored
        .replay(&run.log[from..])
        .map_err(|e| format!("replay after the snapshot at seq {from} failed: {e}"))?;
    check_same_state(engine, &restored, "snapshot + replay")?;
    check_retries(&replayed, model, &run.log, plan.now, "after replay")?;
    check_retries(
        &restored,
        model,
        &run.log,
        plan.now,
        "after snapshot + replay",
    )
}

/// Counts that show what a run exercised.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    events: usize,
    journaled: usize,
    payouts_accepted: usize,
    duplicates: usize,
    reused: usize,
    budget_exceeded: usize,
    economy_changes: usize,
    unknown_gifts: usize,
    purchases_accepted: usize,
    /// Gift reversals accepted (of gifts on videos among them), and refused because the
    /// diamonds were released.
    reversals_accepted: usize,
    video_reversals_accepted: usize,
    reversals_late: usize,
    /// Recharges sold under a promotion (the model's count, equal to the audit's).
    promoted: usize,
    /// BUDGET_EXCEEDED outcomes by the cap they name (`BudgetCap` number).
    caps_named: [usize; 6],
}

impl Stats {
    fn of(run: &Run) -> Stats {
        let journaled = |f: &dyn Fn(&LogEntry) -> bool| run.log.iter().filter(|e| f(e)).count();
        Stats {
            events: run.answers.len(),
            journaled: run.log.len(),
            payouts_accepted: journaled(&|e| {
                matches!(e.outcome.status, Status::Accepted(Effect::PaidOut { .. }))
            }),
            duplicates: run.answers.iter().filter(|(_, o)| o.duplicate).count(),
            reused: run
                .answers
                .iter()
                .filter(|(_, o)| o.code() == Some(EVENT_ID_REUSED))
                .count(),
            budget_exceeded: journaled(&|e| e.outcome.code() == Some(RejectCode::BudgetExceeded)),
            economy_changes: journaled(&|e| matches!(e.event, Event::Economy(_))),
            unknown_gifts: journaled(&|e| e.outcome.code() == Some(RejectCode::UnknownGift)),
            purchases_accepted: journaled(&|e| {
                matches!(e.event, Event::Purchase(_)) && e.outcome.is_accepted()
            }),
            reversals_accepted: journaled(&|e| {
                matches!(e.event, Event::GiftReversal(_)) && e.outcome.is_accepted()
            }),
            video_reversals_accepted: journaled(&|e| {
                matches!(e.event, Event::GiftReversal(_))
                    && matches!(
                        e.reversed.as_deref(),
                        Some(ReversedGift {
                            target: GiftTarget::Video(_),
                            ..
                        })
                    )
            }),
            reversals_late: journaled(&|e| e.outcome.code() == Some(RejectCode::NotReversible)),
            promoted: 0,
            caps_named: [0; 6],
        }
        .with_caps(run)
    }

    fn with_caps(mut self, run: &Run) -> Stats {
        for e in &run.log {
            if let Some(cap) = e.outcome.cap {
                self.caps_named[cap as usize] += 1;
            }
        }
        self
    }

    fn add(&mut self, o: Stats) {
        self.events += o.events;
        self.journaled += o.journaled;
        self.payouts_accepted += o.payouts_accepted;
        self.duplicates += o.duplicates;
        self.reused += o.reused;
        self.budget_exceeded += o.budget_exceeded;
        self.economy_changes += o.economy_changes;
        self.reversals_accepted += o.reversals_accepted;
        self.video_reversals_accepted += o.video_reversals_accepted;
        self.reversals_late += o.reversals_late;
        self.unknown_gifts += o.unknown_gifts;
        self.purchases_accepted += o.purchases_accepted;
        self.promoted += o.promoted;
        for (total, n) in self.caps_named.iter_mut().zip(o.caps_named) {
            *total += n;
        }
    }
}

/// One seed: generate, run, check.
fn simulate(seed: u64) -> Result<Stats, String> {
    let plan = Plan::generate(seed);
    // The id index's secret from the seed: a seed replays with the same id shards.
    let secret = IdSecret([seed, !seed]);
    let engine = Engine::with_id_secret(economy(), plan.config.clone(), secret)
        .map_err(|e| e.to_string())?;
    let run = run(&engine, &plan)?;
    ensure!(run.answers.len() == plan.events(), "answers missing");
    check_gap_free(&run.log, engine.last_seq())?;
    let model = check_log_with_model(&run.log, &run.versions, plan.config.history_per_user)?;
    check_answers(&model, &run.answers)?;
    check_state(&engine, &model, plan.now, plan.config.top_k)?;
    check_restarts(&engine, &plan, &run, &model)?;
    let promoted = model.promotion_sales.values().map(|s| s.0 as usize).sum();
    Ok(Stats {
        promoted,
        ..Stats::of(&run)
    })
}

/// `GIFTSTREAM_SIM_SEED=n`: that seed; `GIFTSTREAM_SIM_SEEDS=n` or `a..b`: seeds `0..n`
/// or `a..b`; else `0..SWEEP_SEEDS`.
fn sweep_seeds() -> std::ops::Range<u64> {
    let parse = |name: &str, s: &str| -> u64 {
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number or a range a..b, got {s:?}"))
    };
    if let Ok(s) = std::env::var("GIFTSTREAM_SIM_SEED") {
        let seed = parse("GIFTSTREAM_SIM_SEED", &s);
        return seed..seed + 1;
    }
    match std::env::var("GIFTSTREAM_SIM_SEEDS") {
        Ok(s) => match s.split_once("..") {
            Some((a, b)) => parse("GIFTSTREAM_SIM_SEEDS", a)..parse("GIFTSTREAM_SIM_SEEDS", b),
            None => 0..parse("GIFTSTREAM_SIM_SEEDS", &s),
        },
        Err(_) => 0..SWEEP_SEEDS,
    }
}

/// A failed seed and the command that runs it again.
fn replay_hint(seed: u64, error: &str) -> String {
    format!(
        "seed {seed}: {error}\n  replay: GIFTSTREAM_SIM_SEED={seed} cargo test --release --test it simulation -- --nocapture"
    )
}

#[test]
fn simulation_seed_sweep() {
    let started = Instant::now();
    let seeds = sweep_seeds();
    let mut totals = Stats::default();
    let mut failures = Vec::new();
    for seed in seeds.clone() {
        match std::panic::catch_unwind(|| simulate(seed)) {
            Ok(Ok(stats)) => totals.add(stats),
            Ok(Err(e)) => failures.push(replay_hint(seed, &e)),
            Err(panic) => failures.push(replay_hint(seed, &panic_text(&*panic))),
        }
    }
    println!(
        "simulation: seeds {seeds:?} in {:?}, {} failed; passing seeds: {totals:?}",
        started.elapsed(),
        failures.len()
    );
    // The sweep's seeds cross every boundary and name every cap (a few seeds alone
    // need not).
    if seeds.end - seeds.start >= SWEEP_SEEDS {
        for cap in BudgetCap::ALL {
            assert!(
                totals.caps_named[cap as usize] > 0,
                "no seed named {cap:?}: {totals:?}"
            );
        }
    }
    assert!(
        seeds.end - seeds.start < 100 || totals.promoted > 0,
        "no recharge was sold under a promotion: the sweep does not exercise them"
    );
    assert!(
        failures.is_empty(),
        "{} of {} simulation seeds failed; the first ones:\n{}",
        failures.len(),
        seeds.end - seeds.start,
        failures
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        seeds.end - seeds.start < 20 || totals.purchases_accepted > 0,
        "the sweep accepted no purchase: {totals:?}"
    );
    assert!(
        seeds.end - seeds.start < 20
            || (totals.reversals_accepted > 0
                && totals.video_reversals_accepted > 0
                && totals.reversals_late > 0),
        "the sweep reversed no held gift (or none on a video), or refused none as released: {totals:?}"
    );
}

// ---- deterministic regression tests ----------------------------------------------

fn engine_with(shards: usize, idempotency_entries_max: usize) -> Engine {
    let config = EngineConfig {
        shards,
        idempotency_entries_max,
        ..EngineConfig::default()
    };
    Engine::new(economy(), config).unwrap()
}

fn apply_one(engine: &Engine, event: Event, stamp: Stamp) -> Outcome {
    engine.apply_batch(&[event], stamp)[0]
}

fn coins_of(engine: &Engine, user: u64) -> u64 {
    engine.wallet(UserId(user), NOV).coins
}

/// The drained log is gap-free and the model agrees with every entry.
fn assert_log_is_the_models(engine: &Engine) -> Vec<LogEntry> {
    let log = engine.drain_log();
    check_gap_free(&log, engine.last_seq()).unwrap();
    if let Err(e) = check_log_with_model(&log, &Versions::new(), engine.config().history_per_user) {
        panic!("{e}");
    }
    log
}

#[test]
fn an_id_reused_by_another_user_is_refused_on_any_shard() {
    let engine = engine_with(4, 1 << 10);
    let x = 0xA11CE;
    let first = apply_one(&engine, recharge(x, 1, "coins_500"), NOV);
    assert_eq!(first.status, Status::Accepted(Effect::Coins(500)));
    // Users 2..=9 spread over the 4 shards: with today's shard hash users 3 and 8 share
    // user 1's shard, the others do not.
    for user in 2..=9 {
        let got = apply_one(&engine, recharge(x, user, "coins_500"), NOV);
        assert_eq!(
            got,
            reused_answer(),
            "user {user} sent user 1's event id {x:#x}: refused, revealing nothing of user 1's outcome {first:?}"
        );
        assert_eq!(
            coins_of(&engine, user),
            0,
            "user {user}'s balance unchanged"
        );
    }
    // In one batch, across shards, and with the same user but other content.
    let batch = [
        recharge(0xB0B, 3, "coins_70"),
        recharge(0xB0B, 4, "coins_70"),
    ];
    let got = engine.apply_batch(&batch, NOV);
    assert!(got[0].is_accepted(), "{:?}", got[0]);
    assert_eq!(
        got[1],
        reused_answer(),
        "the same id twice in one batch, other user"
    );
    let got = apply_one(&engine, recharge(x, 1, "coins_100"), NOV);
    assert_eq!(got, reused_answer(), "the same user, another package");
    // An exact retry is still answered with the original outcome.
    let retry = apply_one(&engine, recharge(x, 1, "coins_500"), NOV);
    assert_eq!(
        retry,
        Outcome {
            duplicate: true,
            ..first
        }
    );
    assert_eq!(coins_of(&engine, 1), 500, "user 1 credited once");
    assert_eq!(coins_of(&engine, 4), 0);
    let log = assert_log_is_the_models(&engine);
    assert_eq!(
        log.len(),
        2,
        "only the two first uses are journaled: {log:?}"
    );
}

#[test]
fn a_gift_id_reused_as_a_payout_id_is_refused() {
    let engine = engine_with(4, 1 << 10);
    apply_one(&engine, custom(1, 1, 200_000, "2000"), NOV);
    let g = 0x6111;
    let gifted = apply_one(&engine, gift(g, 1, 2, "universe", 2), NOV);
    assert_eq!(
        gifted.status,
        Status::Accepted(Effect::Coins(200_000 - 69_998))
    );
    // A payout that would be accepted (34_999 diamonds available, 20_000 >= minimum).
    let got = apply_one(&engine, payout(g, 2, 20_000, "USD"), NOV);
    assert_eq!(
        got,
        reused_answer(),
        "the gift's id {g:#x} reused as a payout's id"
    );
    assert_eq!(
        engine.creator(CreatorId(2)).diamonds_available,
        34_999,
        "nothing paid out"
    );
    // And the other way: a payout's id reused as a gift's.
    let p = 0x9A1D;
    let paid = apply_one(&engine, payout(p, 2, 20_000, "USD"), NOV);
    assert!(paid.is_accepted(), "{paid:?}");
    let got = apply_one(&engine, gift(p, 1, 2, "rose", 1), NOV);
    assert_eq!(
        got,
        reused_answer(),
        "the payout's id {p:#x} reused as a gift's id"
    );
    assert_eq!(coins_of(&engine, 1), 200_000 - 69_998, "nothing debited");
    let retry = apply_one(&engine, payout(p, 2, 20_000, "USD"), NOV);
    assert_eq!(
        retry,
        Outcome {
            duplicate: true,
            ..paid
        }
    );
    let log = assert_log_is_the_models(&engine);
    assert_eq!(log.len(), 3, "recharge, gift, payout: {log:?}");
}

#[test]
fn a_full_window_never_forgets_an_id_early() {
    // One shard remembering two ids: [R1], [R2], [R3, R1].
    let engine = engine_with(1, 2);
    let (r1, r2, r3) = (
        recharge(1, 1, "coins_100"),
        recharge(2, 1, "coins_70"),
        recharge(3, 1, "coins_350"),
    );
    let o1 = apply_one(&engine, r1, NOV);
    let o2 = apply_one(&engine, r2, NOV);
    assert_eq!(
        (o1.seq, o1.status),
        (1, Status::Accepted(Effect::Coins(100)))
    );
    assert_eq!(
        (o2.seq, o2.status),
        (2, Status::Accepted(Effect::Coins(170)))
    );
    let last = engine.apply_batch(&[r3, r1], NOV);
    assert_eq!(
        last[1],
        Outcome {
            duplicate: true,
            ..o1
        },
        "R1 retried after R3 filled the window: the original outcome, not applied again"
    );
    // A full window is backpressure: R3 is either applied (seq 3) or refused without a
    // number (UNAVAILABLE), never admitted by forgetting R1.
    let r3_applied = match last[0].status {
        Status::Accepted(_) => {
            assert_eq!(last[0].seq, 3, "{:?}", last[0]);
            true
        }
        Status::Rejected(code) => {
            assert_eq!(last[0].seq, 0, "a refused R3 ({code}) keeps no number");
            false
        }
    };
    let want = 170 + if r3_applied { 350 } else { 0 };
    assert_eq!(coins_of(&engine, 1), want, "R1 credited once");
    let log = assert_log_is_the_models(&engine);
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=engine.last_seq()).collect::<Vec<_>>(),
        "unique numbers"
    );
}

/// The race: `GIFT_THREADS` threads each send `RACE_ROUNDS` batches of `RACE_CHUNK`
/// gifts from their own `RACE_GIFTERS` gifters, half to creator 1 and half to creator
/// 2, while one thread pays both creators out as fast as finished batches allow.
const GIFT_THREADS: u64 = 3;
const RACE_GIFTERS: u64 = 8;
const RACE_GIFTERS_BASE: u64 = 100;
const RACE_ROUNDS: u64 = 400;
const RACE_CHUNK: u64 = 64;
const RACE_GIFT: (&str, u64) = ("drama_queen", 5_000);
/// Diamonds one gift batch credits each creator (creator_share 0.5).
const RACE_BATCH_DIAMONDS: u64 = RACE_CHUNK / 2 * RACE_GIFT.1 / 2;
const RACE_PAYOUT: u64 = 20_000;
const RACE_POLLS_MAX: u64 = 50_000_000;

/// Custom recharges that fund every gifter for all its gifts.
fn race_funding() -> Vec<Event> {
    let per_gifter = RACE_ROUNDS * RACE_CHUNK / RACE_GIFTERS * RACE_GIFT.1;
    let recharges = per_gifter.div_ceil(2_500_000);
    let gifters = RACE_GIFTERS_BASE..RACE_GIFTERS_BASE + GIFT_THREADS * RACE_GIFTERS;
    gifters
        .flat_map(|u| {
            (0..recharges).map(move |r| custom(u128::from(u << 8 | r), u, 2_500_000, "30000"))
        })
        .collect()
}

/// One gift thread; counts its finished batches in `done`.
fn race_gifts(engine: &Engine, t: u64, done: &AtomicU64) {
    for round in 0..RACE_ROUNDS {
        let batch: Vec<Event> = (0..RACE_CHUNK)
            .map(|i| {
                let id = u128::from(t + 1) << 64 | u128::from(round * RACE_CHUNK + i);
                let sender = RACE_GIFTERS_BASE + t * RACE_GIFTERS + i % RACE_GIFTERS;
                gift(id, sender, 1 + i % 2, RACE_GIFT.0, 1)
            })
            .collect();
        engine.apply_batch(&batch, NOV);
        done.fetch_add(1, Ordering::AcqRel);
    }
}

/// The payout thread: pays creators 1 and 2 `RACE_PAYOUT` diamonds at a time out of
/// what finished gift batches surely credited them, until the gifts end (bounded
/// polls). Every payout it sends is covered, so each must be accepted; returns how many.
fn race_payouts(engine: &Engine, done: &AtomicU64) -> u64 {
    let mut paid = [0u64; 2];
    for poll in 0..RACE_POLLS_MAX {
        let finished = done.load(Ordering::Acquire);
        if finished == GIFT_THREADS * RACE_ROUNDS {
            break;
        }
        let c = (poll % 2) as usize;
        if finished * RACE_BATCH_DIAMONDS < paid[c] + RACE_PAYOUT {
            std::thread::yield_now();
            continue;
        }
        let id = 0xFA_u128 << 64 | u128::from(poll);
        let outcome = apply_one(engine, payout(id, c as u64 + 1, RACE_PAYOUT, "USD"), NOV);
        assert!(
            outcome.is_accepted(),
            "a covered payout was refused: {outcome:?}"
        );
        paid[c] += RACE_PAYOUT;
    }
    (paid[0] + paid[1]) / RACE_PAYOUT
}

#[test]
fn accepted_payouts_racing_gifts_keep_the_log_replayable() {
    let config = EngineConfig {
        shards: 4,
        top_k: 3,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config.clone()).unwrap();
    let funded = engine.apply_batch(&race_funding(), NOV);
    assert!(funded.iter().all(|o| o.is_accepted()));
    let done = AtomicU64::new(0);
    let accepted = std::thread::scope(|scope| {
        let payouts = scope.spawn(|| race_payouts(&engine, &done));
        let gifts: Vec<_> = (0..GIFT_THREADS)
            .map(|t| {
                let (engine, done) = (&engine, &done);
                scope.spawn(move || race_gifts(engine, t, done))
            })
            .collect();
        gifts.into_iter().for_each(|g| g.join().unwrap());
        payouts.join().unwrap()
    });
    assert!(
        accepted > 100,
        "only {accepted} payouts accepted: the race did not run"
    );
    let log = engine.drain_log();
    check_gap_free(&log, engine.last_seq()).unwrap();
    let fresh = Engine::new(economy(), config).unwrap();
    if let Err(e) = fresh.replay(&log) {
        panic!(
            "the ledger cannot restart: {e} ({accepted} payouts accepted; a payout numbered after gifts did not see their credits)"
        );
    }
    assert_eq!(fresh.state_fingerprint(), engine.state_fingerprint());
    if let Err(e) = check_log_with_model(&log, &Versions::new(), fresh.config().history_per_user) {
        panic!("not linearizable by seq: {e}");
    }
}

#[test]
fn a_gift_stamped_in_an_earlier_month_counts_toward_the_later_month() {
    let engine = engine_with(2, 1 << 10);
    apply_one(&engine, account(1, 1, Some("US"), true, Some(800)), NOV);
    apply_one(&engine, custom(2, 1, 5_000, "50"), NOV);
    let in_dec = apply_one(&engine, gift(3, 1, 2, "concert", 1), DEC);
    assert_eq!(in_dec.status, Status::Accepted(Effect::Coins(4_500)));
    // Stamped a millisecond before December, applied after the December gift: it
    // counts toward December, where 500 + 500 exceeds the budget of 800.
    let late = apply_one(&engine, gift(4, 1, 2, "concert", 1), Stamp(DEC.0 - 1));
    assert_eq!(
        late.status,
        Status::Rejected(RejectCode::BudgetExceeded),
        "a gift stamped in November, applied after a December one, counts toward December: 500 + 500 > budget 800"
    );
    let w = engine.wallet(UserId(1), DEC);
    assert_eq!((w.coins, w.spent_this_month), (4_500, 500));
    assert_log_is_the_models(&engine);
}

#[test]
fn model_months_follow_the_utc_calendar() {
    assert_eq!(utc_month(DEC), 2026 * 12 + 11);
    assert_eq!(utc_month(Stamp(DEC.0 - 1)), 2026 * 12 + 10);
    assert_eq!(utc_month(NOV), 2026 * 12 + 10);
    // 2024-02-29T12:00:00Z, and the epoch.
    assert_eq!(utc_month(Stamp(1_709_208_000_000)), 2024 * 12 + 1);
    assert_eq!(utc_month(Stamp(0)), 1970 * 12);
}

#[test]
fn plans_are_fixed_by_their_seed() {
    let (a, b) = (Plan::generate(7), Plan::generate(7));
    let events = |p: &Plan| -> Vec<(Vec<Event>, Stamp)> {
        p.threads
            .iter()
            .flatten()
            .map(|b| (b.events.clone(), b.stamp))
            .collect()
    };
    assert_eq!(events(&a), events(&b));
    assert_eq!(a.config, b.config);
    assert_ne!(events(&a), events(&Plan::generate(8)));
}

// ---- the retry horizon: issued_ms, a small window, restarts mid-run ------------------

/// Seeds of [`horizon_simulation_seed_sweep`] in CI.
const HORIZON_SEEDS: u64 = 60;
/// Events a horizon run sends, one batch each (so that the model's order is the
/// engine's; batches are the main sweep's business).
const HORIZON_STEPS: usize = 700;

/// What a horizon run exercised.
#[derive(Debug, Default, Clone, Copy)]
struct HorizonStats {
    applied: usize,
    duplicates: usize,
    reused: usize,
    expired_by_issued: usize,
    forgotten: usize,
    unavailable: usize,
    applied_again_past_horizon: usize,
    restarts: usize,
    edge_retries: usize,
    /// Reversals naming a gift or recharge applied again past the horizon (review F6),
    /// and those of them refused ALREADY_REVERSED.
    reversals_of_reused: usize,
    reused_already_reversed: usize,
}

/// One serial run against the model with the retry horizon made short (1–4 s) and the
/// id index small (4–24 ids a shard), stamps moving forward by up to half a horizon a
/// step (and sometimes past the whole horizon at once), events carrying `issued_ms`
/// (sometimes none, sometimes older than the horizon or too far ahead), retries and
/// reuses of any earlier id, and a restart from a snapshot mid-run. Every answer is
/// checked as it comes:
/// - an `issued_ms` older than the horizon (or over 10 s ahead) is `EVENT_EXPIRED`;
/// - an id applied within the horizon (+ the 10 s allowance) answers the original
///   outcome, or `EVENT_ID_REUSED` for other content — NEVER applied again;
/// - up to one index epoch later the id may be answered so or forgotten;
/// - a fresh application takes the next number and equals the model's, which forgets
///   the id only when the engine may have;
/// - `EVENT_EXPIRED` for a fresh id only when an id as old as it may be was dropped;
///   `UNAVAILABLE` only when the index may be full.
///
/// Under an earnings hold of 20 to 90 s (longer than an id is kept), a gift or recharge
/// applied again past the horizon meets its first's record still held (review F6), and
/// reversals name such ids now and then (gift reversals by the gift's sender, recharge
/// reversals by its user).
///
/// Then the state equals the model's, and the whole journal replays to the live state
/// (also under an edited config: a longer horizon, a smaller index).
fn simulate_horizon(seed: u64) -> Result<HorizonStats, String> {
    let mut g = Generator::new(seed);
    g.closes = false;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4859_5249_5a4f_4e00);
    let shards = [1, 2, 4][rng.random_range(0..3usize)];
    let horizon = rng.random_range(1_000..=4_000u64);
    let hold = rng.random_range(20..=90u64) * 1_000;
    let economy = || {
        let mut file = economy().to_file();
        file.earnings_hold_ms = hold;
        Economy::from_file(file).expect("a held economy")
    };
    let per_shard = rng.random_range(4..=24usize);
    let config = EngineConfig {
        shards,
        idempotency_horizon_ms: horizon,
        idempotency_entries_max: per_shard * shards,
        history_per_user: 2,
        top_k: 2,
        ..EngineConfig::default()
    };
    let ahead = giftstream::engine::ISSUED_AHEAD_MAX_MS;
    let keep = horizon + ahead;
    let kept_max = config.id_kept_max_ms();
    let epoch = kept_max - keep;
    let secret = IdSecret([seed, !seed]);
    let mut engine =
        Engine::with_id_secret(economy(), config.clone(), secret).map_err(|e| e.to_string())?;
    let mut model = Model::new(economy(), Versions::new());
    // Under a hold, a reversal's answer reads the sender's recent history.
    model.history_per_user = config.history_per_user;
    // Gifts and recharges applied again past the horizon: reversals name them.
    let mut reapplied: Vec<Event> = Vec::new();
    // Per id: the stamp it was last applied at; per id: the issued_ms it was sent with.
    let mut applied_at: HashMap<EventId, u64> = HashMap::new();
    let mut every_application: Vec<u64> = Vec::new();
    let mut issued_of: HashMap<EventId, u64> = HashMap::new();
    let mut log = Vec::new();
    let mut stats = HorizonStats::default();
    let restart_at = rng.random_range(HORIZON_STEPS / 4..HORIZON_STEPS * 3 / 4);
    let mut stamp = DEC.0;
    for step in 0..HORIZON_STEPS {
        stamp += if rng.random_bool(0.02) {
            kept_max + rng.random_range(0..=horizon)
        } else {
            rng.random_range(0..=horizon / 8)
        };
        // Now and then a retry at the edge of its id's horizon: just inside it (must be
        // answered), or up to an epoch past it (answered or applied again). Only ids
        // sent without issued_ms can be retried there (with one, it is EVENT_EXPIRED).
        let edge = rng
            .random_bool(0.2)
            .then(|| {
                applied_at
                    .iter()
                    .filter(|&(id, &t0)| issued_of[id] == 0 && t0 + kept_max >= stamp)
                    .min_by_key(|&(id, &t0)| (t0, *id))
                    .map(|(&id, &t0)| (id, t0))
            })
            .flatten();
        let of_reused =
            (edge.is_none() && !reapplied.is_empty() && rng.random_bool(0.1)).then(|| {
                let id = EventId(g.id());
                match reapplied[rng.random_range(0..reapplied.len())] {
                    Event::Gift(x) => Event::GiftReversal(GiftReversal::new(id, x.sender, x.id)),
                    Event::VideoGift(x) => {
                        Event::GiftReversal(GiftReversal::new(id, x.sender, x.id))
                    }
                    Event::Recharge(x) => Event::RechargeReversal(RechargeReversal {
                        id,
                        user: x.user,
                        recharge: x.id,
                    }),
                    other => unreachable!("{other:?}"),
                }
            });
        let event = match (edge, of_reused) {
            (Some((id, t0)), _) => {
                let target = if rng.random_bool(0.7) {
                    t0 + keep - rng.random_range(0..=epoch.min(keep))
                } else {
                    t0 + keep + rng.random_range(1..=epoch + 5)
                };
                stamp = stamp.max(target);
                // (Ids are distinct across domains here: no event reuses a battle's.)
                let known = model.ids.get(&(false, id));
                known
                    .or_else(|| model.ids.get(&(true, id)))
                    .expect("applied")
                    .0
            }
            (None, Some(reversal)) => {
                stats.reversals_of_reused += 1;
                reversal
            }
            (None, None) => g.event(),
        };
        stats.edge_retries += usize::from(edge.is_some());
        let id = event.id();
        let issued = match (issued_of.get(&id), rng.random_range(0..100u32)) {
            // A retry carries the issued_ms of the first attempt (or, now and then,
            // another one: a reuse may say anything).
            (Some(&first), 0..90) => first,
            (_, 0..20) => 0,
            (_, 20..26) => stamp - horizon - rng.random_range(1..=2_000),
            (_, 26..29) => stamp + ahead + rng.random_range(1..=2_000),
            _ => stamp - rng.random_range(0..=horizon / 2),
        };
        issued_of.entry(id).or_insert(issued);
        let got = engine.apply_issued(&[event], &[issued], Stamp(stamp))[0];
        let expired = issued != 0 && engine.config().is_expired(issued, Stamp(stamp));
        let since = if issued == 0 { stamp } else { issued }.saturating_sub(ahead);
        let unrecorded = |code| Outcome {
            seq: 0,
            status: rejected(code),
            duplicate: false,
            cap: None,
        };
        let at = |what: &str| format!("step {step}, stamp +{} ms: {what}", stamp - DEC.0);
        if expired {
            ensure!(
                got == unrecorded(RejectCode::EventExpired),
                "{}",
                at(&format!(
                    "{event:?} issued {issued} must be EVENT_EXPIRED, got {got:?}"
                ))
            );
            stats.expired_by_issued += 1;
            continue;
        }
        let held = applied_at.get(&id).copied();
        let known = model.known(&event);
        if let Some(t0) = held
            && stamp <= t0 + keep
        {
            ensure!(
                Some(got) == known,
                "{}",
                at(&format!(
                    "{event:?}: its id was applied {} ms ago (kept {keep} ms), so the answer is {known:?}; got {got:?}",
                    stamp - t0
                ))
            );
        } else if got.duplicate || got == reused_answer() {
            let t0 = held.ok_or_else(|| at(&format!("{got:?} for a new id: {event:?}")))?;
            ensure!(
                stamp <= t0 + kept_max && Some(got) == known,
                "{}",
                at(&format!(
                    "{event:?} answered {got:?} {} ms after its id was applied (kept at most {kept_max} ms; the model says {known:?})",
                    stamp - t0
                ))
            );
        } else if got == unrecorded(RejectCode::EventExpired) {
            ensure!(
                every_application
                    .iter()
                    .any(|&t| t + keep < stamp && t + epoch >= since),
                "{}",
                at(&format!(
                    "{event:?} refused EVENT_EXPIRED, but no id as old as {since} was dropped"
                ))
            );
            stats.forgotten += 1;
        } else if got == unrecorded(RejectCode::Unavailable) {
            let live = applied_at
                .values()
                .filter(|&&t| t + kept_max >= stamp)
                .count();
            ensure!(
                live >= per_shard,
                "{}",
                at(&format!(
                    "UNAVAILABLE with {live} ids kept, {per_shard} a shard"
                ))
            );
            stats.unavailable += 1;
        } else {
            // Applied: the next number, and the model's outcome for it.
            if held.is_some() {
                model.ids.remove(&id_key(&event));
                stats.applied_again_past_horizon += 1;
                if matches!(
                    event,
                    Event::Gift(_) | Event::VideoGift(_) | Event::Recharge(_)
                ) {
                    reapplied.push(event);
                }
            }
            let want = model.apply(&event, Stamp(stamp));
            ensure!(
                got == want,
                "{}",
                at(&format!(
                    "{event:?} applied as {got:?}, the model says {want:?}"
                ))
            );
            applied_at.insert(id, stamp);
            every_application.push(stamp);
            stats.applied += 1;
            let reversal = matches!(event, Event::GiftReversal(_) | Event::RechargeReversal(_));
            if reversal && got.code() == Some(RejectCode::AlreadyReversed) {
                stats.reused_already_reversed +=
                    usize::from(reapplied.iter().any(|e| match (e, event) {
                        (Event::Gift(x), Event::GiftReversal(r)) => x.id == r.gift,
                        (Event::VideoGift(x), Event::GiftReversal(r)) => x.id == r.gift,
                        (Event::Recharge(x), Event::RechargeReversal(r)) => x.id == r.recharge,
                        _ => false,
                    }));
            }
        }
        if got.duplicate {
            stats.duplicates += 1;
        } else if got == reused_answer() {
            stats.reused += 1;
        }
        if step == restart_at {
            // A restart from a snapshot: the ids come back with the state.
            let (state, rest) = engine.snapshot();
            log.extend(rest);
            engine =
                Engine::from_state(economy(), config.clone(), state).map_err(|e| e.to_string())?;
            stats.restarts += 1;
        }
    }
    log.extend(engine.drain_log());
    log.sort_unstable_by_key(|e| e.seq);
    check_gap_free(&log, engine.last_seq())?;
    check_state(&engine, &model, Stamp(stamp), config.top_k)?;
    let replayed = Engine::new(economy(), config.clone()).map_err(|e| e.to_string())?;
    replayed
        .replay(&log)
        .map_err(|e| format!("replay of the whole log failed: {e}"))?;
    check_same_state(&engine, &replayed, "replay of the whole log")?;
    let edited = EngineConfig {
        idempotency_horizon_ms: horizon * 3,
        idempotency_entries_max: shards,
        ..config
    };
    let replayed = Engine::new(economy(), edited).map_err(|e| e.to_string())?;
    replayed
        .replay(&log)
        .map_err(|e| format!("replay under an edited config failed: {e}"))?;
    Ok(stats)
}

#[test]
fn horizon_simulation_seed_sweep() {
    let seeds = match std::env::var("GIFTSTREAM_SIM_SEED") {
        Ok(_) => sweep_seeds(),
        Err(_) => 0..HORIZON_SEEDS,
    };
    let mut failures = Vec::new();
    let mut totals = Vec::new();
    for seed in seeds.clone() {
        match std::panic::catch_unwind(|| simulate_horizon(seed)) {
            Ok(Ok(stats)) => totals.push(stats),
            Ok(Err(e)) => failures.push(format!(
                "seed {seed}: {e}\n  replay: GIFTSTREAM_SIM_SEED={seed} cargo test --release --test it horizon_simulation -- --nocapture"
            )),
            Err(panic) => failures.push(format!("seed {seed}: {}", panic_text(&*panic))),
        }
    }
    let sum = |f: fn(&HorizonStats) -> usize| totals.iter().map(f).sum::<usize>();
    println!(
        "horizon simulation: seeds {seeds:?}, {} failed; applied {}, duplicates {}, reused {}, expired by issued_ms {}, forgotten {}, unavailable {}, applied again past the horizon {}, restarts {}, retries at the horizon's edge {}, reversals of reused ids {} ({} already reversed)",
        failures.len(),
        sum(|s| s.applied),
        sum(|s| s.duplicates),
        sum(|s| s.reused),
        sum(|s| s.expired_by_issued),
        sum(|s| s.forgotten),
        sum(|s| s.unavailable),
        sum(|s| s.applied_again_past_horizon),
        sum(|s| s.restarts),
        sum(|s| s.edge_retries),
        sum(|s| s.reversals_of_reused),
        sum(|s| s.reused_already_reversed),
    );
    assert!(
        failures.is_empty(),
        "{} horizon seeds failed; the first ones:\n{}",
        failures.len(),
        failures
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The sweep must exercise what it is for.
    for (what, n) in [
        ("duplicates", sum(|s| s.duplicates)),
        ("unavailable", sum(|s| s.unavailable)),
        (
            "applied again past the horizon",
            sum(|s| s.applied_again_past_horizon),
        ),
        ("expired by issued_ms", sum(|s| s.expired_by_issued)),
        ("reversals of reused ids", sum(|s| s.reversals_of_reused)),
        (
            "reversals of reused ids refused as reversed already",
            sum(|s| s.reused_already_reversed),
        ),
    ] {
        assert!(
            seeds.end - seeds.start < 10 || n > 0,
            "no {what} in the sweep"
        );
    }
}
