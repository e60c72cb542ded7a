//! Recharge reversals (chargebacks) and the debt they leave: [`RechargeBook`], a sender
//! shard's records of the recharges it may still reverse, and the shard's
//! [`SenderShard::credit_coins`] (every credit of coins repays a debt first) and
//! [`SenderShard::reverse_recharge`].
//!
//! - A recharge accepted is recorded (its user, coins credited — a promotion's bonus
//!   included —, price, currency and stamp). Records are dropped in the order they were
//!   made once older than the economy's `recharge_reversal_window_ms` (judged at the
//!   next recharge of the shard, by the ledger's stamps, so a replay drops the same), and
//!   the oldest is dropped for a new one when the shard holds
//!   `engine.recharge_records_per_shard_max` (counted: [`RechargeBook::evicted`]).
//! - A record is keyed by (user, event id), and an event id is unique within the retry
//!   horizon only: a recharge of the user reusing the id of one still within the window
//!   is not recorded, and the first's record stays, reversed or not (review F6:
//!   replacing it lost a reversal, so the first recharge could be reversed again). A
//!   reversal naming the id judges the first recharge (`ALREADY_REVERSED` once
//!   reversed); the second cannot be reversed by id. A record past the window is
//!   replaced (its recharge is no longer reversible).
//! - A reversal takes `min(balance, coins credited)` from the wallet; the rest becomes
//!   the user's debt, kept beside the wallets (`SenderShard::debts`, only for users who
//!   owe). Invariant: a user who owes coins has a balance of 0, so a gift or purchase
//!   looks at the debts only when the balance is 0 (no cost for funded users).
//! - Revenue is not netted in place: what reversals took back is its own line
//!   (`coins_reversed`, `revenue_reversed` per currency), so recharged and revenue stay
//!   what was sold. Promotion sales stay gross (a reversed promoted sale still counts in
//!   its promotion's sales; its money is in `revenue_reversed`).

use std::collections::{BTreeMap, VecDeque};

use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::SenderShard;
use crate::economy::{Currency, Economy};
use crate::engine::event::{
    Effect, EventId, Recharge, RechargeReversal, RejectCode, Stamp, Status, UserId,
};

/// An accepted recharge, as a reversal needs it: 40 bytes (its key, the user and the
/// event id, 32 more).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RechargeRecord {
    /// Coins it credited (a promotion's bonus included).
    pub coins: u64,
    /// When it was applied (the ledger's stamp): the window counts from here.
    pub stamp: Stamp,
    pub price: Decimal,
    pub currency: Currency,
    pub reversed: bool,
}

const _: () = assert!(std::mem::size_of::<RechargeRecord>() == 40);

/// A record's key: the user and the recharge's event id. An event id is unique within
/// the retry horizon only, and a reversal comes weeks later: it names the recharge of
/// *this* user with that id (an id another user reused is another recharge).
pub(crate) type RechargeKey = (UserId, EventId);

/// A sender shard's recharge records and what reversals took back. Snapshotted apart
/// (`EngineState::recharge_records`, format 8), so the shard encodes as before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RechargeBookRepr", into = "RechargeBookRepr")]
pub(crate) struct RechargeBook {
    records: FxHashMap<RechargeKey, RechargeRecord>,
    /// The records' keys in the order they were made (dropped from the front).
    order: VecDeque<RechargeKey>,
    /// Coins the reversals accepted took back (from balances and as debt).
    pub coins_reversed: u128,
    /// The money of the reversed recharges, per currency.
    pub revenue_reversed: BTreeMap<Currency, Decimal>,
    /// Records dropped because the shard held `engine.recharge_records_per_shard_max`
    /// (not by age).
    pub evicted: u64,
}

/// How a [`RechargeBook`] is encoded: its records in the order they were made.
#[derive(Serialize, Deserialize)]
struct RechargeBookRepr {
    records: Vec<(RechargeKey, RechargeRecord)>,
    coins_reversed: u128,
    revenue_reversed: BTreeMap<Currency, Decimal>,
    evicted: u64,
}

impl From<RechargeBook> for RechargeBookRepr {
    fn from(b: RechargeBook) -> Self {
        let records = b.order.iter().map(|id| (*id, b.records[id])).collect();
        RechargeBookRepr {
            records,
            coins_reversed: b.coins_reversed,
            revenue_reversed: b.revenue_reversed,
            evicted: b.evicted,
        }
    }
}

impl TryFrom<RechargeBookRepr> for RechargeBook {
    type Error = String;

    fn try_from(r: RechargeBookRepr) -> Result<Self, String> {
        let mut book = RechargeBook {
            coins_reversed: r.coins_reversed,
            revenue_reversed: r.revenue_reversed,
            evicted: r.evicted,
            ..RechargeBook::default()
        };
        for (key, record) in r.records {
            if book.records.insert(key, record).is_some() {
                return Err(format!(
                    "the recharge record of user {} and event {} appears twice",
                    key.0, key.1.0
                ));
            }
            book.order.push_back(key);
        }
        Ok(book)
    }
}

impl RechargeBook {
    /// Records held.
    pub(crate) fn len(&self) -> usize {
        self.records.len()
    }

    /// The records in the order they were made (for the state's fingerprint).
    pub(crate) fn in_order(&self) -> impl Iterator<Item = (&RechargeKey, &RechargeRecord)> {
        self.order.iter().map(|id| (id, &self.records[id]))
    }

    /// Records an accepted recharge stamped `stamp`: first drops the records older than
    /// `window_ms`, then the oldest while the book holds `max` records. A key whose
    /// record is still within the window keeps it (module doc, F6): the recharge is not
    /// recorded and `false` returned.
    fn record(
        &mut self,
        key: RechargeKey,
        record: RechargeRecord,
        window_ms: u64,
        max: usize,
    ) -> bool {
        if self
            .records
            .get(&key)
            .is_some_and(|old| old.stamp.0.saturating_add(window_ms) > record.stamp.0)
        {
            return false;
        }
        while let Some(front) = self.order.front() {
            let made = self.records[front].stamp.0;
            if made.saturating_add(window_ms) > record.stamp.0 {
                break;
            }
            let front = self.order.pop_front().expect("a front");
            self.records.remove(&front);
        }
        while self.records.len() >= max {
            let Some(front) = self.order.pop_front() else {
                break;
            };
            self.records.remove(&front);
            self.evicted += 1;
        }
        // An id the user reused after the window: the old record (past it, no longer
        // reversible) goes.
        if self.records.insert(key, record).is_some() {
            self.order.retain(|o| *o != key);
        }
        self.order.push_back(key);
        true
    }
}

/// What a credit of coins did: the part that went to the balance, the part that repaid
/// debt, and the balance after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Credit {
    pub to_balance: u64,
    pub repaid: u64,
    pub balance: u64,
}

impl SenderShard {
    /// The coins `user` owes (0: none). Looks at the debts only when the balance is 0
    /// (a user who owes has none): a funded user costs no lookup.
    #[inline]
    pub(crate) fn owed_at(&self, user: UserId, coins: u64) -> u64 {
        if coins != 0 || self.debts.is_empty() {
            return 0;
        }
        self.debts.get(&user).copied().unwrap_or(0)
    }

    /// Credits `coins` to `user` (a recharge; a gift refund): repays the user's debt
    /// first, and only the rest reaches the balance. `OVERFLOW` (nothing changed) if the
    /// balance would not fit. Creates the wallet of a user never seen.
    pub(crate) fn credit_coins(&mut self, user: UserId, coins: u64) -> Result<Credit, RejectCode> {
        let balance = self.wallets.get(&user).map_or(0, |w| w.coins);
        let owed = self.owed_at(user, balance);
        let repaid = owed.min(coins);
        let to_balance = coins - repaid;
        let after = balance
            .checked_add(to_balance)
            .ok_or(RejectCode::Overflow)?;
        if repaid > 0 {
            if repaid == owed {
                self.debts.remove(&user);
            } else {
                *self.debts.get_mut(&user).expect("owed") -= repaid;
            }
        }
        self.wallets.entry(user).or_default().coins = after;
        Ok(Credit {
            to_balance,
            repaid,
            balance: after,
        })
    }

    /// Records recharge `r`, accepted at `stamp`, so that it can be reversed.
    pub(crate) fn record_recharge(
        &mut self,
        economy: &Economy,
        max: usize,
        r: &Recharge,
        stamp: Stamp,
    ) {
        let record = RechargeRecord {
            coins: r.coins,
            stamp,
            price: r.price,
            currency: r.currency,
            reversed: false,
        };
        self.recharges.record(
            (r.user, r.id),
            record,
            economy.recharge_reversal_window_ms,
            max,
        );
    }

    /// A recharge reversal stamped `stamp`; returns its status and the coins it took
    /// from the balance (0 when rejected). Checks (SPEC §1 order; a reversal has only
    /// event checks — a chargeback is the payment's, whatever the account's state):
    /// the recharge must be recorded, this user's and within the window
    /// (`ORIGINAL_NOT_FOUND`), not reversed yet (`ALREADY_REVERSED`), and the debt must
    /// fit (`OVERFLOW`).
    pub(crate) fn reverse_recharge(
        &mut self,
        economy: &Economy,
        r: &RechargeReversal,
        stamp: Stamp,
    ) -> (Status, u64) {
        let window = economy.recharge_reversal_window_ms;
        let record = match self.recharges.records.get(&(r.user, r.recharge)) {
            Some(rec) if rec.stamp.0.saturating_add(window) > stamp.0 => *rec,
            _ => return (Status::Rejected(RejectCode::OriginalNotFound), 0),
        };
        if record.reversed {
            return (Status::Rejected(RejectCode::AlreadyReversed), 0);
        }
        let balance = self.wallets.get(&r.user).map_or(0, |w| w.coins);
        let taken = balance.min(record.coins);
        let owed = self.owed_at(r.user, balance);
        let Some(owed_after) = owed.checked_add(record.coins - taken) else {
            return (Status::Rejected(RejectCode::Overflow), 0);
        };
        let after = balance - taken;
        self.wallets.entry(r.user).or_default().coins = after;
        if owed_after > 0 {
            self.debts.insert(r.user, owed_after);
        }
        let book = &mut self.recharges;
        let done = book.records.get_mut(&(r.user, r.recharge));
        done.expect("looked up above").reversed = true;
        book.coins_reversed += u128::from(record.coins);
        let money = book.revenue_reversed.entry(record.currency).or_default();
        *money = money.saturating_add(record.price);
        (
            Status::Accepted(Effect::Reversed {
                coins: after,
                owed: owed_after,
            }),
            taken,
        )
    }
}

impl SenderShard {
    /// The audit's part for this shard (number `i`): adds its reversed coins and money,
    /// its debts and records to `t`; checks that every user who owes has a wallet with a
    /// balance of 0 and a debt above 0, and that reversed coins are coins recharged.
    pub(crate) fn audit_reversals(
        &self,
        i: usize,
        t: &mut crate::engine::LedgerTotals,
        revenue_reversed: &mut BTreeMap<Currency, Decimal>,
        v: &mut Vec<String>,
    ) {
        let book = &self.recharges;
        t.coins_reversed += book.coins_reversed;
        t.recharge_records += book.len() as u64;
        for (c, amount) in &book.revenue_reversed {
            *revenue_reversed.entry(*c).or_default() += *amount;
        }
        t.users_in_debt += self.debts.len() as u64;
        for (user, &owed) in &self.debts {
            t.coins_owed += u128::from(owed);
            let coins = self.wallets.get(user).map(|w| w.coins);
            if owed == 0 || coins != Some(0) {
                v.push(format!(
                    "sender shard {i}: user {user} owes {owed} coins with a balance of {coins:?}"
                ));
            }
        }
        if book.coins_reversed > self.totals.coins_recharged {
            v.push(format!(
                "sender shard {i}: {} coins reversed, only {} recharged",
                book.coins_reversed, self.totals.coins_recharged
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stamp: u64) -> RechargeRecord {
        RechargeRecord {
            coins: 100,
            stamp: Stamp(stamp),
            price: Decimal::new(129, 2),
            currency: Currency::USD,
            reversed: false,
        }
    }

    #[test]
    fn records_are_dropped_by_age_then_by_count_and_encode_in_order() {
        let mut book = RechargeBook::default();
        let key = |i: u64| (UserId(i % 2), EventId(u128::from(i)));
        for i in 0..5u64 {
            book.record(key(i), record(1_000 + i), 10, 3);
        }
        // Held at 3: ids 0 and 1 evicted.
        assert_eq!(book.len(), 3);
        assert_eq!(book.evicted, 2);
        let ids: Vec<u128> = book.in_order().map(|(k, _)| k.1.0).collect();
        assert_eq!(ids, vec![2, 3, 4]);
        // At 1_013 the records of 1_002 and 1_003 are 10 ms old or more: dropped by age.
        book.record(key(9), record(1_013), 10, 3);
        let ids: Vec<u128> = book.in_order().map(|(k, _)| k.1.0).collect();
        assert_eq!(ids, vec![4, 9]);
        assert_eq!(book.evicted, 2);
        let bytes = crate::protocol::encode_serde(&book).unwrap();
        let back: RechargeBook = crate::protocol::decode_serde(&bytes).unwrap();
        assert_eq!(back, book);
        // An id its user reused while its record is within the window keeps the first
        // record (F6); another user's is another record.
        assert!(!book.record(key(4), record(1_013), 10, 3));
        assert_eq!(book.records[&key(4)].stamp, Stamp(1_004));
        assert!(book.record((UserId(7), EventId(4)), record(1_013), 10, 3));
        let ids: Vec<u128> = book.in_order().map(|(k, _)| k.1.0).collect();
        assert_eq!(ids, vec![4, 9, 4]);
    }

    /// Review finding F6: a recharge reusing the id of the user's recharge still within
    /// the window — reversed or not — leaves its record as it was; once the first is past
    /// the window, the id is recorded again (at the back).
    #[test]
    fn an_id_reused_within_the_window_keeps_the_first_record() {
        let mut book = RechargeBook::default();
        let key = (UserId(1), EventId(5));
        assert!(book.record(key, record(1_000), 100, 8));
        book.records.get_mut(&key).unwrap().reversed = true;
        let mut second = record(1_050);
        second.coins = 900;
        assert!(!book.record(key, second, 100, 8));
        assert_eq!(
            book.records[&key],
            RechargeRecord {
                reversed: true,
                ..record(1_000)
            }
        );
        assert_eq!(book.len(), 1);
        // Not dropped by age yet (the front is another user's newer record): at 1_100
        // the first is past the window and replaced.
        let mut book2 = book.clone();
        book2.order.push_front((UserId(2), EventId(6)));
        book2.records.insert((UserId(2), EventId(6)), record(1_090));
        assert!(book2.record(
            key,
            RechargeRecord {
                coins: 900,
                ..record(1_100)
            },
            100,
            8
        ));
        assert_eq!(book2.records[&key].coins, 900);
        assert!(!book2.records[&key].reversed);
        let order: Vec<_> = book2.in_order().map(|(k, _)| *k).collect();
        assert_eq!(order, vec![(UserId(2), EventId(6)), key]);
    }
}
