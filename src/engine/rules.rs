//! The checks of SPEC §1, in their fixed order: the event itself, then the account,
//! then limits, then funds. The first failing check is the outcome. Each function is
//! pure: it reads state and returns what the event would do, it changes nothing.

use rust_decimal::Decimal;

use super::event::{
    AccountSettings, BudgetCap, Channel, CreatorId, Gift, GiftId, Payout, Period, Purchase,
    Recharge, RejectCode, StreamGoal, UserId, VideoGift, first_day_of_month,
};
use crate::economy::{Economy, Region};

/// A user's account and coin state as the rules see it: 32 bytes (the memory target is
/// <= 100 bytes per wallet). Budgets live beside it ([`Budgets`], only for the users who
/// set one), so a wallet pays for them with one flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Wallet {
    pub coins: u64,
    /// Coins spent on gifts and purchases in the month of `day`.
    pub spent_this_month: u64,
    /// Coins spent on gifts on `day`, held at `u32::MAX` (no daily limit may be higher,
    /// [`WINDOW_LIMIT_COINS_MAX`], so a held count is over every one, exactly as the
    /// true count would be).
    pub spent_today: u32,
    /// Coins spent on gifts in the ISO week of `day`, held likewise.
    pub spent_this_week: u32,
    /// The latest UTC day (days since 1970-01-01) a gift was counted in; its week and
    /// month are the ones the other counters count (0: none yet).
    pub day: u32,
    /// The region's two letters, `[0, 0]` for none (2 bytes where `Option<Region>`
    /// takes 3: what keeps the wallet at 32).
    pub region: [u8; 2],
    pub adult: bool,
    /// The user has an entry in the shard's budgets ([`Budgets`]).
    pub budgets: bool,
}

const _: () = assert!(std::mem::size_of::<Wallet>() == 32);

/// A budget of `u64::MAX` coins cannot be exceeded, so it stands for "no budget".
pub(crate) const NO_BUDGET: u64 = u64::MAX;

/// The largest daily or weekly budget or platform cap, in coins: the day and week
/// counters are `u32`s held at `u32::MAX`, exact below every limit allowed.
pub const WINDOW_LIMIT_COINS_MAX: u64 = u32::MAX as u64;
// The economy's caps are bounded alike (it validates them: a lower layer).
const _: () = assert!(crate::economy::SPENDING_CAP_COINS_MAX == WINDOW_LIMIT_COINS_MAX);
// `WindowBudget` keeps every budget above it as one "too large" value.
const _: () = assert!(WINDOW_LIMIT_COINS_MAX == u32::MAX as u64);

impl Default for Wallet {
    /// A user never registered: an adult with no region and no budget (SPEC §1).
    fn default() -> Self {
        Wallet {
            coins: 0,
            spent_this_month: 0,
            spent_today: 0,
            spent_this_week: 0,
            day: 0,
            region: [0; 2],
            adult: true,
            budgets: false,
        }
    }
}

/// What a user has spent in the day, ISO week and month of a gift, as the limits see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Spent {
    pub day: u64,
    pub week: u64,
    pub month: u64,
}

impl Wallet {
    /// The region set, if any.
    pub(crate) fn region(&self) -> Option<Region> {
        Region::from_bytes(self.region)
    }

    /// Coins spent in the day, week and month of `period`. The wallet counts its latest
    /// day (and that day's week and month): a gift stamped earlier than one already
    /// applied (batches are stamped before they take the locks) counts in the later
    /// day, week and month — never twice a limit across a boundary.
    pub(crate) fn spent_in(&self, period: Period) -> Spent {
        if period.day <= self.day {
            return Spent {
                day: u64::from(self.spent_today),
                week: u64::from(self.spent_this_week),
                month: self.spent_this_month,
            };
        }
        let same_week = period.same_week(self.day);
        let same_month = period.same_month(self.day);
        Spent {
            day: 0,
            week: if same_week {
                u64::from(self.spent_this_week)
            } else {
                0
            },
            month: if same_month { self.spent_this_month } else { 0 },
        }
    }

    /// Counts `cost` coins spent at `period` (after the limits passed).
    pub(crate) fn count_spent(&mut self, period: Period, cost: u64) {
        let spent = self.spent_in(period);
        let held = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let month = spent.month.checked_add(cost);
        self.spent_this_month = month.expect("the budget rule keeps a month's spending in range");
        self.spent_today = held(spent.day.saturating_add(cost));
        self.spent_this_week = held(spent.week.saturating_add(cost));
        self.day = self.day.max(period.day);
    }

    /// A wallet of snapshot formats 1 to 6: its month's spending, counted from the first
    /// day of that month; nothing counted for its day and week (those formats did not
    /// count them).
    pub(crate) fn of_v6(w: WalletV6) -> (Wallet, Budgets) {
        let wallet = Wallet {
            coins: w.coins,
            spent_this_month: w.spent_this_month,
            spent_today: 0,
            spent_this_week: 0,
            day: if w.month == 0 {
                0
            } else {
                first_day_of_month(w.month)
            },
            region: w.region.map_or([0; 2], Region::to_bytes),
            adult: w.adult,
            budgets: w.monthly_budget_coins != NO_BUDGET,
        };
        let budgets = Budgets {
            monthly: w.monthly_budget_coins,
            ..Budgets::NONE
        };
        (wallet, budgets)
    }
}

/// A wallet as snapshot formats 1 to 6 encoded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub(crate) struct WalletV6 {
    coins: u64,
    spent_this_month: u64,
    monthly_budget_coins: u64,
    month: u32,
    region: Option<Region>,
    adult: bool,
}

/// A user's own budgets, in coins (`NO_BUDGET`: none). Kept beside the wallets for the
/// users who set at least one (most set none: a wallet stays 32 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Budgets {
    pub monthly: u64,
    pub weekly: u64,
    pub daily: u64,
}

impl Budgets {
    pub(crate) const NONE: Budgets = Budgets {
        monthly: NO_BUDGET,
        weekly: NO_BUDGET,
        daily: NO_BUDGET,
    };

    pub(crate) fn of(a: &AccountSettings) -> Budgets {
        Budgets {
            // A monthly budget of `u64::MAX` (kept as `u64::MAX - 1` in the event) is no
            // budget, as it was before budgets were compact (review of #31, F): neither
            // can be spent, and a snapshot from then shows none.
            monthly: a
                .monthly_budget_coins
                .get()
                .filter(|&m| m < u64::MAX - 1)
                .unwrap_or(NO_BUDGET),
            weekly: a.weekly_budget_coins.get().unwrap_or(NO_BUDGET),
            daily: a.daily_budget_coins.get().unwrap_or(NO_BUDGET),
        }
    }

    fn get(limit: u64) -> Option<u64> {
        (limit != NO_BUDGET).then_some(limit)
    }

    pub(crate) fn monthly(&self) -> Option<u64> {
        Budgets::get(self.monthly)
    }

    pub(crate) fn weekly(&self) -> Option<u64> {
        Budgets::get(self.weekly)
    }

    pub(crate) fn daily(&self) -> Option<u64> {
        Budgets::get(self.daily)
    }
}

/// Why a rule refused an event: its code and, for `BUDGET_EXCEEDED`, the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub code: RejectCode,
    pub cap: Option<BudgetCap>,
}

impl From<RejectCode> for Refusal {
    fn from(code: RejectCode) -> Self {
        Refusal { code, cap: None }
    }
}

impl From<BudgetCap> for Refusal {
    fn from(cap: BudgetCap) -> Self {
        Refusal {
            code: RejectCode::BudgetExceeded,
            cap: Some(cap),
        }
    }
}

fn check_account(economy: &Economy, wallet: &Wallet) -> Result<(), RejectCode> {
    if !wallet.adult {
        return Err(RejectCode::AgeRestricted);
    }
    if let Some(region) = wallet.region()
        && economy.restricted_regions.contains(&region)
    {
        return Err(RejectCode::RegionUnavailable);
    }
    Ok(())
}

/// What an accepted recharge does: the new balance, and the promotion it was sold under
/// (an index into the economy's `promotions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recharged {
    pub balance: u64,
    pub promotion: Option<usize>,
}

/// A recharge, judged at `at_ms` (when the user paid): a package's coins and price must
/// be the terms in force then for the user's region and the channel — the promotion's
/// when one is, the package's otherwise.
pub(crate) fn recharge(
    economy: &Economy,
    wallet: &Wallet,
    r: &Recharge,
    at_ms: u64,
) -> Result<Recharged, RejectCode> {
    if r.coins == 0 {
        return Err(RejectCode::AmountOutOfRange);
    }
    let mut promotion = None;
    match r.package.get() {
        Some(package) => {
            let spec = economy
                .packages
                .get(package.0 as usize)
                .filter(|p| !p.retired)
                .ok_or(RejectCode::AmountOutOfRange)?;
            let offer = economy.offer(package.0, wallet.region(), r.channel, at_ms);
            // An offer that changes nothing for this currency (no bonus, no price in it)
            // is not what the user bought under.
            let offer = offer.filter(|o| o.bonus_coins > 0 || o.prices.contains_key(&r.currency));
            let (coins, price) = match offer {
                Some(offer) => {
                    promotion = economy
                        .promotions
                        .iter()
                        .position(|p| std::ptr::eq(p, offer));
                    // Validated: the sum does not overflow.
                    let coins = spec.coins.saturating_add(offer.bonus_coins);
                    let price = offer
                        .prices
                        .get(&r.currency)
                        .or(spec.prices.get(&r.currency));
                    (coins, price)
                }
                None => (spec.coins, spec.prices.get(&r.currency)),
            };
            if coins != r.coins || price != Some(&r.price) {
                return Err(RejectCode::AmountOutOfRange);
            }
        }
        None => {
            let in_bounds =
                (economy.custom_min_coins..=economy.custom_max_coins).contains(&r.coins);
            // A custom amount is paid in a currency coins are sold in (one a package is
            // priced in), not any three letters.
            let sold = economy
                .packages
                .iter()
                .any(|p| !p.retired && p.prices.contains_key(&r.currency));
            if r.channel != Channel::Web || !in_bounds || r.price <= Decimal::ZERO || !sold {
                return Err(RejectCode::AmountOutOfRange);
            }
        }
    }
    // OVERFLOW is an event check: before the account's (SPEC §1 order).
    let balance = wallet
        .coins
        .checked_add(r.coins)
        .ok_or(RejectCode::Overflow)?;
    check_account(economy, wallet)?;
    Ok(Recharged { balance, promotion })
}

/// The limits a spend of `cost` coins at `period` must pass (SPEC §1's "limits" step,
/// `BUDGET_EXCEEDED`): the user's monthly, weekly and daily budgets and the economy's
/// weekly and daily platform caps per user, checked in [`BudgetCap::PRECEDENCE`] order;
/// the first exceeded is the one named. The one place a spend of coins is limited: every
/// kind of event that spends coins (gifts; purchases) goes through it, with the same
/// counters.
pub(crate) fn limits(
    economy: &Economy,
    wallet: &Wallet,
    budgets: &Budgets,
    cost: u64,
    period: Period,
) -> Result<(), BudgetCap> {
    let spent = wallet.spent_in(period);
    // As before daily and weekly limits: a month's spending that would not fit a u64 is
    // over the budget, set or not.
    if spent
        .month
        .checked_add(cost)
        .is_none_or(|spent| spent > budgets.monthly)
    {
        return Err(BudgetCap::MonthlyBudget);
    }
    // A held count (u32::MAX) plus any cost (at least 1 coin) is over every limit, as
    // the true count is.
    let over =
        |spent: u64, limit: Option<u64>| limit.is_some_and(|l| spent.saturating_add(cost) > l);
    let checks = [
        (
            spent.week,
            economy.weekly_cap_coins,
            BudgetCap::WeeklyPlatformCap,
        ),
        (spent.week, budgets.weekly(), BudgetCap::WeeklyBudget),
        (
            spent.day,
            economy.daily_cap_coins,
            BudgetCap::DailyPlatformCap,
        ),
        (spent.day, budgets.daily(), BudgetCap::DailyBudget),
    ];
    match checks
        .into_iter()
        .find(|&(spent, limit, _)| over(spent, limit))
    {
        Some((_, _, cap)) => Err(cap),
        None => Ok(()),
    }
}

/// What the rules read of a gift, on a stream or a video alike: the target (stream or
/// video) is not checked, so both kinds pass the same checks in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GiftSend {
    pub sender: UserId,
    pub creator: CreatorId,
    pub gift: GiftId,
    pub count: u32,
}

impl From<&Gift> for GiftSend {
    #[inline]
    fn from(g: &Gift) -> Self {
        GiftSend {
            sender: g.sender,
            creator: g.creator,
            gift: g.gift,
            count: g.count,
        }
    }
}

impl From<&VideoGift> for GiftSend {
    #[inline]
    fn from(v: &VideoGift) -> Self {
        GiftSend {
            sender: v.sender,
            creator: v.creator,
            gift: v.gift,
            count: v.count,
        }
    }
}

/// A gift (on a stream or a video): returns its cost in coins. `in_debt`: the sender
/// owes coins (a reversed recharge it had spent).
#[inline]
pub(crate) fn gift(
    economy: &Economy,
    wallet: &Wallet,
    budgets: &Budgets,
    in_debt: bool,
    g: GiftSend,
    period: Period,
) -> Result<u64, Refusal> {
    let spec = economy
        .gifts
        .get(g.gift.0 as usize)
        .filter(|spec| !spec.retired)
        .ok_or(RejectCode::UnknownGift)?;
    if g.count == 0 || g.count > economy.max_gift_count {
        return Err(RejectCode::InvalidCount.into());
    }
    if g.sender == g.creator.as_user() {
        return Err(RejectCode::SelfGift.into());
    }
    let cost = spec
        .coins
        .checked_mul(u64::from(g.count))
        .ok_or(RejectCode::Overflow)?;
    spend(economy, wallet, budgets, in_debt, cost, period)?;
    Ok(cost)
}

/// A purchase of an item of the `items` catalog: returns its cost in coins. Its event
/// checks, then the same [`spend`] as a gift.
pub(crate) fn purchase(
    economy: &Economy,
    wallet: &Wallet,
    budgets: &Budgets,
    in_debt: bool,
    p: &Purchase,
    period: Period,
) -> Result<u64, Refusal> {
    let spec = economy
        .items
        .get(p.item.0 as usize)
        .filter(|spec| !spec.retired)
        .ok_or(RejectCode::UnknownItem)?;
    if p.count == 0 || p.count > economy.max_gift_count {
        return Err(RejectCode::InvalidCount.into());
    }
    let cost = spec
        .coins
        .checked_mul(u64::from(p.count))
        .ok_or(RejectCode::Overflow)?;
    spend(economy, wallet, budgets, in_debt, cost, period)?;
    Ok(cost)
}

/// Spending `cost` coins stamped in `period` (a gift or a purchase), after the event's
/// own checks: the account (age, region, then `ACCOUNT_IN_DEBT` when the user owes
/// coins), then the limits ([`limits`]: the budgets and the platform's caps count gifts
/// and purchases alike), then the funds (SPEC §1 order). Every way coins are spent goes
/// through here, so a limit added to [`limits`] holds for all.
#[inline]
pub(crate) fn spend(
    economy: &Economy,
    wallet: &Wallet,
    budgets: &Budgets,
    in_debt: bool,
    cost: u64,
    period: Period,
) -> Result<(), Refusal> {
    check_account(economy, wallet)?;
    if in_debt {
        return Err(RejectCode::AccountInDebt.into());
    }
    limits(economy, wallet, budgets, cost, period)?;
    if wallet.coins < cost {
        return Err(RejectCode::InsufficientCoins.into());
    }
    Ok(())
}

/// Account settings: a daily or weekly budget above [`WINDOW_LIMIT_COINS_MAX`] is
/// `AMOUNT_OUT_OF_RANGE` (nothing stored).
pub(crate) fn account(a: &AccountSettings) -> Result<(), RejectCode> {
    let too_large = |b: Option<u64>| b.is_some_and(|b| b > WINDOW_LIMIT_COINS_MAX);
    if too_large(a.daily_budget_coins.get()) || too_large(a.weekly_budget_coins.get()) {
        return Err(RejectCode::AmountOutOfRange);
    }
    Ok(())
}

/// A payout against `diamonds_available`: returns its value in the payout's currency.
pub(crate) fn payout(
    economy: &Economy,
    diamonds_available: u128,
    p: &Payout,
) -> Result<Decimal, RejectCode> {
    if p.diamonds == 0 {
        return Err(RejectCode::AmountOutOfRange);
    }
    let unit = economy
        .diamond_value
        .get(&p.currency)
        .ok_or(RejectCode::UnsupportedCurrency)?;
    let value = Decimal::from(p.diamonds)
        .checked_mul(*unit)
        .ok_or(RejectCode::Overflow)?;
    if let Some(minimum) = economy.payout_minimum.get(&p.currency)
        && value < *minimum
    {
        return Err(RejectCode::BelowPayoutMinimum);
    }
    if diamonds_available < u128::from(p.diamonds) {
        return Err(RejectCode::InsufficientDiamonds);
    }
    Ok(value)
}

pub(crate) fn stream_goal(g: &StreamGoal) -> Result<(), RejectCode> {
    if g.coins_target == 0 {
        return Err(RejectCode::AmountOutOfRange);
    }
    Ok(())
}
