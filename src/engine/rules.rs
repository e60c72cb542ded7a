//! The checks of SPEC §1, in their fixed order: the event itself, then the account,
//! then limits, then funds. The first failing check is the outcome. Each function is
//! pure: it reads state and returns what the event would do, it changes nothing.

use rust_decimal::Decimal;

use super::event::{Channel, Gift, Payout, Purchase, Recharge, RejectCode, StreamGoal};
use crate::economy::{Economy, Region};

/// A user's account and coin state as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Wallet {
    pub coins: u64,
    /// Coins spent on gifts and purchases in `month`.
    pub spent_this_month: u64,
    /// `NO_BUDGET` when the user set none.
    pub monthly_budget_coins: u64,
    /// `Stamp::month_key` of the month `spent_this_month` counts.
    pub month: u32,
    pub region: Option<Region>,
    pub adult: bool,
}

/// A budget of `u64::MAX` coins cannot be exceeded, so it stands for "no budget".
pub(crate) const NO_BUDGET: u64 = u64::MAX;

impl Default for Wallet {
    /// A user never registered: an adult with no region and no budget (SPEC §1).
    fn default() -> Self {
        Wallet {
            coins: 0,
            spent_this_month: 0,
            monthly_budget_coins: NO_BUDGET,
            month: 0,
            region: None,
            adult: true,
        }
    }
}

impl Wallet {
    /// Coins spent (gifts and purchases) in `month`. The wallet counts one month, its
    /// latest: spending stamped in an earlier month than some already applied counts in
    /// the later month (never twice the budget across a month boundary).
    pub(crate) fn spent_in(&self, month: u32) -> u64 {
        if self.month >= month {
            self.spent_this_month
        } else {
            0
        }
    }

    pub(crate) fn budget(&self) -> Option<u64> {
        (self.monthly_budget_coins != NO_BUDGET).then_some(self.monthly_budget_coins)
    }
}

fn check_account(economy: &Economy, wallet: &Wallet) -> Result<(), RejectCode> {
    if !wallet.adult {
        return Err(RejectCode::AgeRestricted);
    }
    if let Some(region) = wallet.region
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
    match r.package {
        Some(package) => {
            let spec = economy
                .packages
                .get(package.0 as usize)
                .filter(|p| !p.retired)
                .ok_or(RejectCode::AmountOutOfRange)?;
            let (coins, price) = match economy.offer(package.0, wallet.region, r.channel, at_ms) {
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

/// A gift: returns its cost in coins.
pub(crate) fn gift(
    economy: &Economy,
    wallet: &Wallet,
    g: &Gift,
    month: u32,
) -> Result<u64, RejectCode> {
    let spec = economy
        .gifts
        .get(g.gift.0 as usize)
        .filter(|spec| !spec.retired)
        .ok_or(RejectCode::UnknownGift)?;
    if g.count == 0 || g.count > economy.max_gift_count {
        return Err(RejectCode::InvalidCount);
    }
    if g.sender == g.creator.as_user() {
        return Err(RejectCode::SelfGift);
    }
    let cost = spec
        .coins
        .checked_mul(u64::from(g.count))
        .ok_or(RejectCode::Overflow)?;
    spend(economy, wallet, cost, month)?;
    Ok(cost)
}

/// A purchase of an item of the `items` catalog: returns its cost in coins. Its event
/// checks, then the same [`spend`] as a gift.
pub(crate) fn purchase(
    economy: &Economy,
    wallet: &Wallet,
    p: &Purchase,
    month: u32,
) -> Result<u64, RejectCode> {
    let spec = economy
        .items
        .get(p.item.0 as usize)
        .filter(|spec| !spec.retired)
        .ok_or(RejectCode::UnknownItem)?;
    if p.count == 0 || p.count > economy.max_gift_count {
        return Err(RejectCode::InvalidCount);
    }
    let cost = spec
        .coins
        .checked_mul(u64::from(p.count))
        .ok_or(RejectCode::Overflow)?;
    spend(economy, wallet, cost, month)?;
    Ok(cost)
}

/// Spending `cost` coins stamped in `month` (a gift or a purchase), after the event's own
/// checks: the account, then the limits, then the funds (SPEC §1 order). Every way coins
/// are spent goes through here, so a limit added to [`check_limits`] holds for all.
#[inline]
pub(crate) fn spend(
    economy: &Economy,
    wallet: &Wallet,
    cost: u64,
    month: u32,
) -> Result<(), RejectCode> {
    check_account(economy, wallet)?;
    check_limits(wallet, cost, month)?;
    if wallet.coins < cost {
        return Err(RejectCode::InsufficientCoins);
    }
    Ok(())
}

/// The spending limits: the monthly budget counts gifts and purchases alike.
#[inline]
fn check_limits(wallet: &Wallet, cost: u64, month: u32) -> Result<(), RejectCode> {
    let spent = wallet.spent_in(month).checked_add(cost);
    if spent.is_none_or(|spent| spent > wallet.monthly_budget_coins) {
        return Err(RejectCode::BudgetExceeded);
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
