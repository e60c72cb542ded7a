//! Seeded events: batch `n` of a run is a pure function of (scenario, nonce, n), so the
//! same scenario sends the same events to giftstream and to the baseline.

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{
    AccountSettings, Battle, BattleId, Channel, CreatorId, Event, EventId, Gift, GiftId,
    GiftReversal, ItemId, PackageId, Payout, Purchase, Recharge, RechargeReversal, StreamId,
    UserId, VideoGift, VideoId,
};
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Zipf, weighted::WeightedIndex};
use rust_decimal::Decimal;

use crate::scenario::Scenario;

/// Creator ids start here, so a creator is never one of the users (no `SELF_GIFT`).
pub const CREATOR_BASE: u64 = 1_000_000_000;

pub struct Workload {
    scenario: Scenario,
    /// Distinguishes runs: event ids are `nonce << 64 | n << 16 | i`.
    pub nonce: u64,
    gifts: Vec<(GiftId, u64)>,
    gift_index: WeightedIndex<u32>,
    combos: Vec<u32>,
    combo_index: WeightedIndex<u32>,
    zipf: Option<Zipf<f64>>,
    /// The items purchases buy, and their weights (`None`: the scenario has no purchases).
    items: Option<(Vec<ItemId>, WeightedIndex<u32>)>,
    /// The package recharges buy: (id, coins, USD price).
    package: (PackageId, u64, Decimal),
    usd: Currency,
}

/// What one gift costs, for the tool's own accounting.
#[derive(Debug, Clone, Copy)]
pub struct GiftCost {
    pub creator: u64,
    pub coins: u64,
    /// A reversal: the creator loses `coins`.
    pub refund: bool,
}

impl Workload {
    pub fn new(scenario: &Scenario, economy: &Economy, nonce: u64) -> anyhow::Result<Workload> {
        let usd: Currency = "USD".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        let gifts = scenario
            .gifts
            .iter()
            .map(|g| {
                let i = economy.gift_index(&g.value).ok_or_else(|| {
                    anyhow::anyhow!("gifts: {:?} is not in the economy's catalog", g.value)
                })?;
                Ok((GiftId(i), economy.gifts[i as usize].coins))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (package, spec) = economy
            .packages
            .iter()
            .enumerate()
            .find(|(_, p)| p.prices.contains_key(&usd))
            .ok_or_else(|| anyhow::anyhow!("the economy has no package priced in USD"))?;
        // A scenario's promotion: its package on the offer's terms (in force all run).
        let promotion = scenario.economy.as_ref().and_then(|e| e.promotion.as_ref());
        let (package, coins, price) = match promotion {
            Some(p) => {
                let i = economy
                    .package_index(&p.package)
                    .ok_or_else(|| anyhow::anyhow!("economy.promotion.package: {:?}", p.package))?;
                let spec = &economy.packages[i as usize];
                let price = match &p.price_usd {
                    Some(v) => v.parse().map_err(|e| anyhow::anyhow!("price_usd: {e}"))?,
                    None => spec.prices[&usd],
                };
                (i as usize, spec.coins + p.bonus_coins, price)
            }
            None => (package, spec.coins, spec.prices[&usd]),
        };
        let items = if scenario.mix.purchase_share > 0.0 {
            let codes = scenario
                .items
                .iter()
                .map(|i| {
                    economy.item_index(&i.value).map(ItemId).ok_or_else(|| {
                        anyhow::anyhow!("items: {:?} is not in the economy's items", i.value)
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some((
                codes,
                WeightedIndex::new(scenario.items.iter().map(|i| i.weight))?,
            ))
        } else {
            None
        };
        let p = &scenario.population;
        Ok(Workload {
            items,
            gift_index: WeightedIndex::new(scenario.gifts.iter().map(|g| g.weight))?,
            combo_index: WeightedIndex::new(scenario.combos.iter().map(|c| c.weight))?,
            combos: scenario.combos.iter().map(|c| c.value).collect(),
            zipf: (p.creator_distribution == "zipf")
                .then(|| Zipf::new(p.creators as f64, p.zipf_exponent))
                .transpose()?,
            package: (PackageId(package as u32), coins, price),
            gifts,
            usd,
            nonce,
            scenario: scenario.clone(),
        })
    }

    pub fn user(&self, index: u64) -> UserId {
        UserId(index + 1)
    }

    pub fn creator(&self, index: u64) -> CreatorId {
        CreatorId(CREATOR_BASE + index)
    }

    fn id(&self, n: u64, i: usize) -> EventId {
        EventId(u128::from(self.nonce) << 64 | u128::from(n) << 16 | i as u128)
    }

    /// The setup phase: funding batch `n` (custom web recharges), `None` past the end.
    pub fn funding(&self, n: u64, batch: usize) -> Option<Vec<Event>> {
        let users = self.scenario.population.users;
        let coins = self.scenario.population.funding_coins;
        let first = n * batch as u64;
        if coins == 0 || first >= users {
            return None;
        }
        let last = (first + batch as u64).min(users);
        Some(
            (first..last)
                .map(|u| {
                    Event::Recharge(Recharge {
                        // Funding ids live in their own range (top bit of n).
                        id: self.id(1 << 39 | u >> 16, (u & 0xffff) as usize),
                        user: self.user(u),
                        coins,
                        price: Decimal::new(1, 2),
                        currency: self.usd,
                        package: None.into(),
                        channel: Channel::Web,
                        paid_ms: 0,
                    })
                })
                .collect(),
        )
    }

    /// Whether user `index` sets the scenario's budgets (`[budgets] share` of them,
    /// spread evenly over the indexes).
    pub fn has_budgets(&self, index: u64) -> bool {
        self.scenario.budgets.as_ref().is_some_and(|b| {
            let per_mille = (b.share * 1000.0).round() as u64;
            (index.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) % 1000 < per_mille
        })
    }

    /// The setup phase after funding: budget settings batch `n` (the users of batch `n`
    /// who set budgets), `None` past the end; an empty batch when none of them does.
    pub fn budgets(&self, n: u64, batch: usize) -> Option<Vec<Event>> {
        let b = self.scenario.budgets.as_ref()?;
        let users = self.scenario.population.users;
        let first = n * batch as u64;
        if first >= users {
            return None;
        }
        let last = (first + batch as u64).min(users);
        Some(
            (first..last)
                .filter(|&u| self.has_budgets(u))
                .map(|u| {
                    Event::Account(AccountSettings {
                        // Budget ids live in their own range (the two top bits of n).
                        id: self.id(3 << 38 | u >> 16, (u & 0xffff) as usize),
                        user: self.user(u),
                        region: None,
                        adult: true,
                        monthly_budget_coins: b.monthly_coins.into(),
                        daily_budget_coins: b.daily_coins.into(),
                        weekly_budget_coins: b.weekly_coins.into(),
                    })
                })
                .collect(),
        )
    }

    /// The setup's battles (`[battles]`), starting at `start_ms`: the `2k`th and `2k +
    /// 1`th creators' first streams (the hottest under Zipf), battle ids from the nonce.
    pub fn battles(&self, start_ms: u64) -> Vec<Event> {
        let Some(b) = &self.scenario.battles else {
            return Vec::new();
        };
        let p = &self.scenario.population;
        let end_ms = start_ms + b.duration_s * 1000;
        (0..b.pairs.min(p.creators / 2))
            .filter_map(|k| {
                let streams = [
                    StreamId(2 * k * p.streams_per_creator + 1),
                    StreamId((2 * k + 1) * p.streams_per_creator + 1),
                ];
                let id = BattleId(self.nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k);
                Battle::new(id, &streams, start_ms, end_ms).map(Event::Battle)
            })
            .collect()
    }

    /// Measured batch `n` at `t_s` seconds into the run (for the hot stage).
    pub fn batch(&self, n: u64, t_s: f64) -> Vec<Event> {
        let mut events = self.batch_drawn(n, t_s);
        let lag = self.scenario.mix.reversal_lag_batches;
        let reversals = events
            .iter()
            .filter(|e| matches!(e, Event::RechargeReversal(_)))
            .count();
        if reversals == 0 || n < lag {
            // Nothing earlier to reverse: the draws stay as they are (not found).
            return events;
        }
        // The recharges of batch n - lag, drawn again (its events are a function of its
        // number; recharges do not depend on the time): no id is remembered.
        let earlier: Vec<Recharge> = self
            .batch_drawn(n - lag, t_s)
            .into_iter()
            .filter_map(|e| match e {
                Event::Recharge(r) => Some(r),
                _ => None,
            })
            .collect();
        if earlier.is_empty() {
            return events;
        }
        for (k, e) in events.iter_mut().enumerate() {
            if let Event::RechargeReversal(r) = e {
                // Spread over the earlier recharges; two picks may name the same one.
                let original = earlier[(r.recharge.0 as usize ^ k) % earlier.len()];
                r.user = original.user;
                r.recharge = original.id;
            }
        }
        events
    }

    /// Batch `n` as drawn: its reversals name no recharge yet (`recharge` holds a draw
    /// that [`Workload::batch`] turns into one of an earlier batch's).
    fn batch_drawn(&self, n: u64, t_s: f64) -> Vec<Event> {
        let lag = self.scenario.mix.gift_reversal_lag_batches;
        let targets = if self.scenario.mix.gift_reversal_share > 0.0 && n >= lag {
            self.gifts_of(n - lag, t_s)
        } else {
            Vec::new()
        };
        self.draw(n, t_s, &targets)
    }

    /// The gifts of batch `n`, on streams and videos alike (drawn again: a pure function
    /// of seed and number).
    fn gifts_of(&self, n: u64, t_s: f64) -> Vec<(EventId, UserId, CreatorId, u64)> {
        let cost = |gift, count: u32| {
            let per = self.gifts.iter().find(|(id, _)| *id == gift)?.1;
            Some(per * u64::from(count))
        };
        self.draw(n, t_s, &[])
            .iter()
            .filter_map(|e| match e {
                Event::Gift(g) => Some((g.id, g.sender, g.creator, cost(g.gift, g.count)?)),
                Event::VideoGift(v) => Some((v.id, v.sender, v.creator, cost(v.gift, v.count)?)),
                _ => None,
            })
            .collect()
    }

    /// Batch `n`; a reversal in slot `i` names `targets[i mod len]` (an id never sent
    /// when there are none: `ORIGINAL_NOT_FOUND`).
    fn draw(&self, n: u64, t_s: f64, targets: &[(EventId, UserId, CreatorId, u64)]) -> Vec<Event> {
        let s = &self.scenario;
        let p = &s.population;
        let mut rng =
            rand_chacha::ChaCha8Rng::seed_from_u64(s.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let hot = s
            .hot
            .as_ref()
            .filter(|h| t_s >= h.start_s && t_s < h.start_s + h.duration_s);
        (0..s.load.batch)
            .map(|i| {
                let id = self.id(n, i);
                let user = self.user(rng.random_range(0..p.users));
                // Drawn only when the scenario has reversals: other scenarios keep their
                // events.
                if s.mix.reversal_share > 0.0 && rng.random_bool(s.mix.reversal_share) {
                    return Event::RechargeReversal(RechargeReversal {
                        id,
                        user,
                        recharge: EventId(u128::from(rng.random::<u32>())),
                    });
                }
                // Drawn only when the scenario has gift reversals (others keep their
                // events), and nothing more is drawn for one: its batch draws again the
                // same.
                if s.mix.gift_reversal_share > 0.0 && rng.random_bool(s.mix.gift_reversal_share) {
                    let (gift, sender) = match targets.get(i % targets.len().max(1)) {
                        Some(&(gift, sender, _, _)) => (gift, sender),
                        None => (EventId(id.0 ^ 1 << 63), user),
                    };
                    return Event::GiftReversal(GiftReversal::new(id, sender, gift));
                }
                if s.mix.recharge_share > 0.0 && rng.random_bool(s.mix.recharge_share) {
                    let (package, coins, price) = self.package;
                    return Event::Recharge(Recharge {
                        id,
                        user,
                        coins,
                        price,
                        currency: self.usd,
                        package: Some(package).into(),
                        channel: Channel::App,
                        paid_ms: 0,
                    });
                }
                // Drawn only when the scenario has purchases: other scenarios keep their
                // events.
                if let Some((items, index)) = &self.items
                    && rng.random_bool(s.mix.purchase_share)
                {
                    return Event::Purchase(Purchase {
                        id,
                        user,
                        item: items[index.sample(&mut rng)],
                        count: 1,
                    });
                }
                if s.mix.payout_share > 0.0 && rng.random_bool(s.mix.payout_share) {
                    return Event::Payout(Payout {
                        id,
                        creator: self.creator(rng.random_range(0..p.creators)),
                        diamonds: s.mix.payout_diamonds,
                        currency: self.usd,
                    });
                }
                let creator = match hot {
                    Some(h) if rng.random_bool(h.share) => h.creator,
                    _ => match &self.zipf {
                        Some(z) => (z.sample(&mut rng) as u64 - 1).min(p.creators - 1),
                        None => rng.random_range(0..p.creators),
                    },
                };
                let stream = creator * p.streams_per_creator
                    + rng.random_range(0..p.streams_per_creator)
                    + 1;
                let (gift, _) = self.gifts[self.gift_index.sample(&mut rng)];
                // Drawn only when the scenario has video gifts: other scenarios keep
                // their events.
                if s.mix.video_share > 0.0 && rng.random_bool(s.mix.video_share) {
                    let video = creator * p.videos_per_creator
                        + rng.random_range(0..p.videos_per_creator)
                        + 1;
                    return Event::VideoGift(VideoGift {
                        id,
                        sender: user,
                        creator: self.creator(creator),
                        video: VideoId(video),
                        gift,
                        count: self.combos[self.combo_index.sample(&mut rng)],
                    });
                }
                Event::Gift(Gift {
                    id,
                    sender: user,
                    creator: self.creator(creator),
                    stream: StreamId(stream),
                    gift,
                    count: self.combos[self.combo_index.sample(&mut rng)],
                })
            })
            .collect()
    }

    /// The `k`th read after batch `n` (`mixed`): a creator's top gifters, a stream's,
    /// the top creators, or a wallet.
    pub fn read_path(&self, n: u64, k: u32) -> String {
        let p = &self.scenario.population;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
            self.scenario.seed ^ n.wrapping_mul(31) ^ u64::from(k) << 48,
        );
        match (n + u64::from(k)) % 4 {
            0 => format!(
                "/v1/creators/{}/top-gifters?limit=10",
                self.creator(rng.random_range(0..p.creators)).0
            ),
            1 => format!(
                "/v1/streams/{}/top-gifters?limit=10",
                rng.random_range(0..p.creators) * p.streams_per_creator + 1
            ),
            2 => "/v1/leaderboards/creators?limit=10".to_owned(),
            _ => format!(
                "/v1/users/{}/wallet",
                self.user(rng.random_range(0..p.users)).0
            ),
        }
    }

    /// The coins a gift costs, or an accepted reversal takes back from its creator (for
    /// the tool's totals; the reversed gift is drawn again from its batch number and slot,
    /// in its id); `None` for other events.
    pub fn cost(&self, event: &Event) -> Option<GiftCost> {
        match event {
            Event::Gift(_) | Event::VideoGift(_) => {
                let (creator, gift, count) = match event {
                    Event::Gift(g) => (g.creator, g.gift, g.count),
                    Event::VideoGift(v) => (v.creator, v.gift, v.count),
                    _ => unreachable!(),
                };
                let per = self.gifts.iter().find(|(id, _)| *id == gift)?.1;
                Some(GiftCost {
                    creator: creator.0,
                    coins: per * u64::from(count),
                    refund: false,
                })
            }
            Event::GiftReversal(r) => {
                let n = (r.gift.0 >> 16) as u64 & ((1 << 48) - 1);
                let gifts = self.gifts_of(n, 0.0);
                let &(_, _, creator, coins) = gifts.iter().find(|t| t.0 == r.gift)?;
                Some(GiftCost {
                    creator: creator.0,
                    coins,
                    refund: true,
                })
            }
            _ => None,
        }
    }
}
