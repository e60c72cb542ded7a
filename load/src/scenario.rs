//! Scenarios are data: a TOML file names the population, the gift mix, the rate
//! schedule, the load shape, the seed and the thresholds. Unknown keys are refused and
//! every error names its key.

use std::path::Path;

use serde::Deserialize;

/// Largest number of users, creators or streams a scenario may name.
pub const POPULATION_MAX: u64 = 100_000_000;
/// Longest run, seconds (warm-up included).
pub const DURATION_MAX_S: f64 = 3_600.0;
/// Most connections a run may open.
pub const CONNECTIONS_MAX: usize = 1_024;

#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ScenarioError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ScenarioError {
    ScenarioError {
        key: key.to_owned(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seeds every random choice: the same seed sends the same events.
    pub seed: u64,
    pub population: Population,
    /// Gift catalog ids and their weights.
    pub gifts: Vec<Weighted<String>>,
    /// Gift counts (combos) and their weights.
    pub combos: Vec<Weighted<u32>>,
    /// Items of the economy's `items` catalog that purchases buy, and their weights
    /// (needed when `mix.purchase_share > 0`).
    #[serde(default)]
    pub items: Vec<Weighted<String>>,
    #[serde(default)]
    pub mix: Mix,
    #[serde(default)]
    pub hot: Option<Hot>,
    /// Economy keys put in force on the target before the run (`PUT /v1/economy` with
    /// the embedded economy and these keys; giftstream targets only).
    #[serde(default)]
    pub economy: Option<EconomyOverride>,
    /// Budgets some users set in the setup phase (binary protocol targets only).
    #[serde(default)]
    pub budgets: Option<Budgets>,
    /// PK battles recorded in the setup phase between the hottest creators' streams
    /// (binary protocol targets only).
    #[serde(default)]
    pub battles: Option<Battles>,
    pub load: Load,
    /// The rate schedule (open loop): stages run one after the other.
    #[serde(default)]
    pub stages: Vec<Stage>,
    /// e.g. `["p99<10ms", "error_rate<0.001", "achieved_rate>=0.99"]`.
    #[serde(default)]
    pub thresholds: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Weighted<T> {
    pub value: T,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Population {
    pub users: u64,
    pub creators: u64,
    /// Streams per creator (a creator's streams are its live sessions).
    #[serde(default = "one")]
    pub streams_per_creator: u64,
    /// Videos per creator that gifts on videos pick from (`mix.video_share`): video ids
    /// are their own id space, `creator x videos_per_creator + 1 ..`.
    #[serde(default = "one")]
    pub videos_per_creator: u64,
    /// How gifts pick a creator: "uniform" or "zipf".
    #[serde(default = "uniform")]
    pub creator_distribution: String,
    /// The Zipf exponent (> 0) when `creator_distribution = "zipf"`.
    #[serde(default = "zipf_default")]
    pub zipf_exponent: f64,
    /// Coins each user is funded with before the measured phase (a custom web recharge;
    /// 0 = no setup).
    #[serde(default = "funding_default")]
    pub funding_coins: u64,
}

fn one() -> u64 {
    1
}
fn uniform() -> String {
    "uniform".to_owned()
}
fn zipf_default() -> f64 {
    1.1
}
fn funding_default() -> u64 {
    2_500_000
}

/// What else the events are, besides gifts.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    /// Share of events that are recharges (a package bought in the app), in [0, 1].
    #[serde(default)]
    pub recharge_share: f64,
    /// Share of the other events that are purchases (one item of `items`, spending the
    /// sender's coins like a gift, crediting no creator), in [0, 1].
    #[serde(default)]
    pub purchase_share: f64,
    /// Share of gifts sent on a video instead of a live stream (issue #31 feature 6), in
    /// [0, 1]; 0 (the default) draws nothing, so other scenarios keep their events.
    #[serde(default)]
    pub video_share: f64,
    /// HTTP reads (leaderboards, wallets) per batch sent, over the HTTP API (`mixed`).
    #[serde(default)]
    pub reads_per_batch: u32,
    /// Share of events that are payouts of `payout_diamonds` (USD) by a creator picked
    /// uniformly, in [0, 1] (giftstream targets only: the baseline has no payouts).
    #[serde(default)]
    pub payout_share: f64,
    /// Diamonds each payout asks for (default 20000, the USD payout minimum).
    #[serde(default = "payout_diamonds_default")]
    pub payout_diamonds: u64,
    /// Share of events that are recharge reversals (chargebacks), in [0, 1] (giftstream
    /// targets only). Each names a recharge of the batch `reversal_lag_batches` before
    /// (found by generating that batch again: the workload is a pure function of the
    /// batch number, so giftload remembers no ids), or, when that batch has none, an
    /// event that is not one (`ORIGINAL_NOT_FOUND`); the same recharge may be named
    /// twice (`ALREADY_REVERSED`).
    #[serde(default)]
    pub reversal_share: f64,
    /// How many batches back a reversal looks for its recharge (default 10, at least 1).
    #[serde(default = "reversal_lag_default")]
    pub reversal_lag_batches: u64,
    /// Share of events that are gift reversals, in [0, 1] (giftstream targets only):
    /// each names a gift sent `gift_reversal_lag_batches` batches earlier (the workload
    /// draws that batch again: it remembers no ids, so its memory stays bounded).
    #[serde(default)]
    pub gift_reversal_share: f64,
    /// How many batches back a gift reversal's gift was sent (default 50).
    #[serde(default = "gift_reversal_lag_default")]
    pub gift_reversal_lag_batches: u64,
}

fn reversal_lag_default() -> u64 {
    10
}

fn gift_reversal_lag_default() -> u64 {
    50
}

fn payout_diamonds_default() -> u64 {
    20_000
}

/// Economy keys a scenario sets on the target (`[economy]`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EconomyOverride {
    /// `economy.earnings_hold_ms`: diamonds are payable this long after they are credited.
    #[serde(default)]
    pub earnings_hold_ms: u64,
    /// A promotion put in force for the run (`[economy.promotion]`).
    #[serde(default)]
    pub promotion: Option<PromotionOverride>,
}

/// An offer on one package, in force from a minute before the run for `duration_s`
/// (promotion id `giftload`): the scenario's recharges buy that package on the offer's
/// terms, so they are sold under it (and `giftstream audit` counts them).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionOverride {
    /// A package of the embedded economy priced in USD.
    pub package: String,
    /// Coins on top of the package's.
    #[serde(default)]
    pub bonus_coins: u64,
    /// The offer's USD price (a decimal string); absent: the package's.
    #[serde(default)]
    pub price_usd: Option<String>,
    /// How long the offer stays in force after the run starts.
    pub duration_s: u64,
}

/// Spending budgets set in the setup phase, after funding: a share of the users (every
/// user whose index falls in it, spread evenly) sets these budgets, so that a share of
/// their gifts is `BUDGET_EXCEEDED` once they are spent. The economy's platform caps
/// (`[spending_caps]`) are the server's; this sets the users' own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budgets {
    /// Share of users who set budgets, in (0, 1].
    pub share: f64,
    #[serde(default)]
    pub daily_coins: Option<u64>,
    #[serde(default)]
    pub weekly_coins: Option<u64>,
    #[serde(default)]
    pub monthly_coins: Option<u64>,
}

/// `[battles]`: `pairs` battles, the `2k`th and `2k + 1`th hottest creators' first
/// streams against each other, from the end of the setup for `duration_s` seconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Battles {
    pub pairs: u64,
    pub duration_s: u64,
}

/// One creator's stream receiving a spike.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hot {
    /// The creator (0-based index in the population).
    pub creator: u64,
    /// Share of gifts that go to it while hot, in [0, 1].
    pub share: f64,
    /// When the spike starts and how long it lasts, seconds from the start of the
    /// measured phase.
    pub start_s: f64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Load {
    /// "open" (planned arrival rate) or "closed" (as fast as answers come).
    pub mode: String,
    pub connections: usize,
    /// Events per request.
    pub batch: usize,
    /// Requests in flight per connection.
    pub in_flight: usize,
    /// Excluded from the results.
    #[serde(default)]
    pub warmup_s: f64,
    /// Closed loop only: how long to run (open loop: the stages).
    #[serde(default)]
    pub duration_s: f64,
}

/// A stage of the rate schedule, in events per second.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "lowercase")]
pub enum Stage {
    Constant {
        rate: f64,
        duration_s: f64,
    },
    Ramp {
        from: f64,
        to: f64,
        duration_s: f64,
    },
    /// A step to `rate` for `duration_s` (a live event's burst).
    Spike {
        rate: f64,
        duration_s: f64,
    },
}

impl Stage {
    pub fn duration_s(&self) -> f64 {
        match *self {
            Stage::Constant { duration_s, .. }
            | Stage::Ramp { duration_s, .. }
            | Stage::Spike { duration_s, .. } => duration_s,
        }
    }
}

impl Scenario {
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(&path.display().to_string(), e.to_string()))?;
        Scenario::from_toml_str(&text)
    }

    pub fn from_toml_str(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)
            .map_err(|e| err("scenario", e.to_string().trim().replace('\n', " ")))?;
        scenario.validate()?;
        Ok(scenario)
    }

    pub fn is_open_loop(&self) -> bool {
        self.load.mode == "open"
    }

    /// Measured duration, seconds (warm-up excluded).
    pub fn measured_s(&self) -> f64 {
        if self.is_open_loop() {
            self.stages.iter().map(Stage::duration_s).sum::<f64>() - self.load.warmup_s
        } else {
            self.load.duration_s
        }
    }

    /// Whole run, seconds (warm-up included).
    pub fn total_s(&self) -> f64 {
        if self.is_open_loop() {
            self.stages.iter().map(Stage::duration_s).sum()
        } else {
            self.load.warmup_s + self.load.duration_s
        }
    }

    pub fn validate(&self) -> Result<(), ScenarioError> {
        let p = &self.population;
        for (key, v) in [
            ("population.users", p.users),
            ("population.creators", p.creators),
            ("population.streams_per_creator", p.streams_per_creator),
            ("population.videos_per_creator", p.videos_per_creator),
        ] {
            if v == 0 || v > POPULATION_MAX {
                return Err(err(
                    key,
                    format!("must be in 1..={POPULATION_MAX}, got {v}"),
                ));
            }
        }
        match p.creator_distribution.as_str() {
            "uniform" => {}
            "zipf" if p.zipf_exponent > 0.0 && p.zipf_exponent.is_finite() => {}
            "zipf" => return Err(err("population.zipf_exponent", "must be > 0")),
            other => {
                return Err(err(
                    "population.creator_distribution",
                    format!("must be \"uniform\" or \"zipf\", got {other:?}"),
                ));
            }
        }
        if p.funding_coins > 2_500_000 {
            return Err(err(
                "population.funding_coins",
                "at most 2500000 (the largest custom web recharge)",
            ));
        }
        if self.gifts.is_empty() || self.gifts.iter().all(|g| g.weight == 0) {
            return Err(err("gifts", "needs at least one gift with a weight > 0"));
        }
        if self.combos.is_empty() || self.combos.iter().all(|c| c.weight == 0) {
            return Err(err("combos", "needs at least one count with a weight > 0"));
        }
        if self.combos.iter().any(|c| c.value == 0) {
            return Err(err("combos.value", "a gift count must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.mix.recharge_share) {
            return Err(err("mix.recharge_share", "must be in [0, 1]"));
        }
        if !(0.0..=1.0).contains(&self.mix.purchase_share) {
            return Err(err("mix.purchase_share", "must be in [0, 1]"));
        }
        if self.mix.purchase_share > 0.0 && self.items.iter().all(|i| i.weight == 0) {
            return Err(err(
                "items",
                "mix.purchase_share needs at least one item with a weight > 0",
            ));
        }
        if !(0.0..=1.0).contains(&self.mix.video_share) {
            return Err(err("mix.video_share", "must be in [0, 1]"));
        }
        if self.mix.reads_per_batch > 100 {
            return Err(err("mix.reads_per_batch", "at most 100"));
        }
        if !(0.0..=1.0).contains(&self.mix.reversal_share) {
            return Err(err("mix.reversal_share", "must be in [0, 1]"));
        }
        if self.mix.reversal_share > 0.0
            && (self.mix.recharge_share == 0.0 || self.mix.reversal_lag_batches == 0)
        {
            return Err(err(
                "mix.reversal_share",
                "needs mix.recharge_share > 0 and mix.reversal_lag_batches >= 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.mix.gift_reversal_share) {
            return Err(err("mix.gift_reversal_share", "must be in [0, 1]"));
        }
        if self.mix.gift_reversal_share > 0.0 && self.mix.gift_reversal_lag_batches == 0 {
            return Err(err("mix.gift_reversal_lag_batches", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.mix.payout_share) {
            return Err(err("mix.payout_share", "must be in [0, 1]"));
        }
        if self.mix.payout_share > 0.0 && self.mix.payout_diamonds == 0 {
            return Err(err("mix.payout_diamonds", "must be at least 1"));
        }
        if let Some(e) = &self.economy
            && e.earnings_hold_ms > giftstream::economy::EARNINGS_HOLD_MS_MAX
        {
            return Err(err(
                "economy.earnings_hold_ms",
                format!("at most {}", giftstream::economy::EARNINGS_HOLD_MS_MAX),
            ));
        }
        if let Some(p) = self.economy.as_ref().and_then(|e| e.promotion.as_ref()) {
            let economy = giftstream::economy::Economy::embedded();
            let sold_in_usd = economy.package_index(&p.package).is_some_and(|i| {
                economy.packages[i as usize]
                    .prices
                    .contains_key(&giftstream::economy::Currency::USD)
            });
            if !sold_in_usd {
                return Err(err(
                    "economy.promotion.package",
                    format!("{:?} is not a package priced in USD", p.package),
                ));
            }
            if p.duration_s == 0 {
                return Err(err("economy.promotion.duration_s", "must be at least 1"));
            }
            let price_ok = p.price_usd.as_deref().is_none_or(|v| {
                v.parse::<rust_decimal::Decimal>()
                    .is_ok_and(|d| d > rust_decimal::Decimal::ZERO)
            });
            if !price_ok {
                return Err(err(
                    "economy.promotion.price_usd",
                    "must be a positive decimal",
                ));
            }
            if p.bonus_coins == 0 && p.price_usd.is_none() {
                return Err(err(
                    "economy.promotion",
                    "offers nothing: set bonus_coins, price_usd or both",
                ));
            }
        }
        if let Some(b) = &self.budgets {
            if !(b.share > 0.0 && b.share <= 1.0) {
                return Err(err("budgets.share", "must be in (0, 1]"));
            }
            if b.daily_coins.is_none() && b.weekly_coins.is_none() && b.monthly_coins.is_none() {
                return Err(err(
                    "budgets",
                    "needs daily_coins, weekly_coins or monthly_coins",
                ));
            }
            let max = giftstream::engine::WINDOW_LIMIT_COINS_MAX;
            for (key, v) in [
                ("budgets.daily_coins", b.daily_coins),
                ("budgets.weekly_coins", b.weekly_coins),
            ] {
                if v.is_some_and(|v| v > max) {
                    return Err(err(key, format!("at most {max}")));
                }
            }
        }
        if let Some(h) = &self.hot {
            if h.creator >= p.creators {
                return Err(err("hot.creator", "must be below population.creators"));
            }
            if !(0.0..=1.0).contains(&h.share) {
                return Err(err("hot.share", "must be in [0, 1]"));
            }
            if h.start_s < 0.0 || h.duration_s <= 0.0 {
                return Err(err("hot.duration_s", "start >= 0 and duration > 0"));
            }
        }
        let l = &self.load;
        if l.mode != "open" && l.mode != "closed" {
            return Err(err("load.mode", "must be \"open\" or \"closed\""));
        }
        if l.connections == 0 || l.connections > CONNECTIONS_MAX {
            return Err(err(
                "load.connections",
                format!("must be in 1..={CONNECTIONS_MAX}"),
            ));
        }
        if l.batch == 0 || l.batch > 10_000 {
            return Err(err("load.batch", "must be in 1..=10000"));
        }
        if l.in_flight == 0 || l.in_flight > 1_024 {
            return Err(err("load.in_flight", "must be in 1..=1024"));
        }
        if l.warmup_s < 0.0 {
            return Err(err("load.warmup_s", "must be >= 0"));
        }
        if self.is_open_loop() {
            if self.stages.is_empty() {
                return Err(err("stages", "an open-loop run needs at least one stage"));
            }
            for (i, s) in self.stages.iter().enumerate() {
                let rates = match *s {
                    Stage::Constant { rate, .. } | Stage::Spike { rate, .. } => vec![rate],
                    Stage::Ramp { from, to, .. } => vec![from, to],
                };
                if rates.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
                    return Err(err(&format!("stages[{i}].rate"), "must be > 0"));
                }
                if s.duration_s().is_nan() || s.duration_s() <= 0.0 {
                    return Err(err(&format!("stages[{i}].duration_s"), "must be > 0"));
                }
            }
            if self.measured_s() <= 0.0 {
                return Err(err("load.warmup_s", "must be shorter than the stages"));
            }
        } else if l.duration_s.is_nan() || l.duration_s <= 0.0 {
            return Err(err(
                "load.duration_s",
                "a closed-loop run needs a duration > 0",
            ));
        }
        if self.total_s() > DURATION_MAX_S {
            return Err(err(
                "stages",
                format!("the run may last at most {DURATION_MAX_S} s"),
            ));
        }
        for (i, t) in self.thresholds.iter().enumerate() {
            crate::report::Threshold::parse(t).map_err(|m| err(&format!("thresholds[{i}]"), m))?;
        }
        Ok(())
    }
}
