//! `economy.toml`: the gift catalog, coin packages, creator share and payout rules.
//!
//! Operators write this file, so its shape is part of the contract (SPEC §2.6). It is
//! parsed into [`EconomyFile`] (`deny_unknown_fields`, so a typo is an error, not a
//! silently ignored key) and then validated into [`Economy`], the form the engine uses:
//! gift and package ids become dense indexes, the share becomes an exact fraction.
//!
//! Size: one document's types, parsing and validation, which must agree with each other
//! key by key; the tests (~85 lines) check the shipped file and every refusal.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The economy the binary embeds, used by `giftstream demo` and as the default.
pub const EMBEDDED_ECONOMY_TOML: &str = include_str!("../config/economy.toml");

/// Largest number of decimal places accepted in `creator_share`. Diamonds are computed
/// as `coins * numerator / 10^scale` in `u128`; this bound keeps that exact for any
/// coin total below 3.4e29.
pub const CREATOR_SHARE_SCALE_MAX: u32 = 9;

/// Largest catalog and package list: ids are dense `u32` indexes on the wire.
pub const CATALOG_ENTRIES_MAX: usize = 4096;

/// Longest `earnings_hold_ms`: 366 days (platforms hold earnings for days; a longer hold
/// is a typo in the unit).
pub const EARNINGS_HOLD_MS_MAX: u64 = 366 * 86_400_000;

/// How long after a recharge a `recharge_reversal` may still take its coins back, by
/// default: 180 days (card chargebacks come weeks, at most months, later).
pub const RECHARGE_REVERSAL_WINDOW_MS_DEFAULT: u64 = 180 * 86_400_000;
/// Longest `recharge_reversal_window_ms`: 540 days (the longest card-network dispute
/// window); a longer one is a typo in the unit.
pub const RECHARGE_REVERSAL_WINDOW_MS_MAX: u64 = 540 * 86_400_000;

/// An error in `economy.toml` or an economy document: names the key that is wrong.
/// (`config::EconomyError` wraps it for giftstream.toml's callers.)
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid config: `{key}`: {message}")]
pub struct EconomyError {
    pub key: String,
    pub message: String,
}

impl EconomyError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// ISO 4217 currency code, three ASCII uppercase letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Currency([u8; 3]);

impl Currency {
    pub const USD: Currency = Currency(*b"USD");

    pub fn as_str(&self) -> &str {
        // Constructed only from ASCII uppercase letters.
        std::str::from_utf8(&self.0).expect("currency is ASCII")
    }

    pub fn to_bytes(self) -> [u8; 3] {
        self.0
    }

    /// Rebuilds a currency from wire bytes, checking them.
    pub fn from_bytes(bytes: [u8; 3]) -> Option<Currency> {
        bytes
            .iter()
            .all(u8::is_ascii_uppercase)
            .then_some(Currency(bytes))
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; 3] = s
            .as_bytes()
            .try_into()
            .map_err(|_| format!("currency must be 3 uppercase letters, got {s:?}"))?;
        Currency::from_bytes(bytes)
            .ok_or_else(|| format!("currency must be 3 uppercase letters, got {s:?}"))
    }
}

impl TryFrom<String> for Currency {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// ISO 3166-1 alpha-2 region code, two ASCII uppercase letters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region([u8; 2]);

impl Region {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("region is ASCII")
    }

    pub fn to_bytes(self) -> [u8; 2] {
        self.0
    }

    pub fn from_bytes(bytes: [u8; 2]) -> Option<Region> {
        bytes
            .iter()
            .all(u8::is_ascii_uppercase)
            .then_some(Region(bytes))
    }
}

impl FromStr for Region {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes: [u8; 2] = s
            .as_bytes()
            .try_into()
            .map_err(|_| format!("region must be 2 uppercase letters, got {s:?}"))?;
        Region::from_bytes(bytes)
            .ok_or_else(|| format!("region must be 2 uppercase letters, got {s:?}"))
    }
}

impl TryFrom<String> for Region {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Region> for String {
    fn from(r: Region) -> String {
        r.as_str().to_owned()
    }
}

impl fmt::Debug for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a recharge was bought.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// In-app purchase: packages only.
    App,
    /// Web: packages or a custom amount within the configured bounds.
    Web,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::App => "app",
            Channel::Web => "web",
        }
    }
}

impl FromStr for Channel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "app" => Ok(Channel::App),
            "web" => Ok(Channel::Web),
            other => Err(format!("{other:?} is not app or web")),
        }
    }
}

/// Most promotions one economy version may hold.
pub const PROMOTIONS_MAX: usize = 1024;

/// `economy.toml` as written by operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EconomyFile {
    /// Share of gifted coins a creator receives as diamonds, decimal string in (0, 1].
    pub creator_share: String,
    /// Regions where recharging and gifting are unavailable.
    #[serde(default)]
    pub restricted_regions: Vec<String>,
    /// Largest combo in one gift event.
    pub max_gift_count: u32,
    /// How long diamonds stay held after they are credited before a payout may spend
    /// them, in ms (0, the default: available at once). Left out of the ledger's record
    /// when 0, so an economy without it keeps its digest.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub earnings_hold_ms: u64,
    /// How long after a recharge (by the ledger's stamps) a `recharge_reversal` may take
    /// its coins back, in ms, in 1..=`RECHARGE_REVERSAL_WINDOW_MS_MAX`; absent: 180
    /// days. Left out of the ledger's record at the default, so an economy without it
    /// keeps its digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recharge_reversal_window_ms: Option<u64>,
    /// Money per diamond, per currency (decimal strings).
    pub diamond_value: BTreeMap<String, String>,
    /// Smallest payout value, per currency (decimal strings).
    pub payout_minimum: BTreeMap<String, String>,
    pub recharge: RechargeFile,
    pub gifts: Vec<GiftFile>,
    pub packages: Vec<PackageFile>,
    /// What coins buy besides gifts (feature unlocks, ...): `purchase` events. Optional;
    /// left out of the JSON form when empty, so a file without items keeps its digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<ItemFile>,
    /// Time-boxed offers on packages. Absent from the JSON form when empty, so an
    /// economy without promotions keeps the digest it had before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotions: Vec<PromotionFile>,
    /// Platform-wide limits on what one user may spend per UTC day and ISO week.
    /// Absent (and never serialized when absent, so the digest of an economy recorded
    /// before caps existed is unchanged): no caps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spending_caps: Option<SpendingCapsFile>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// `[spending_caps]`: coins one user may spend on gifts per UTC calendar day and per ISO
/// week (Monday to Sunday, UTC), over and above the user's own budgets. Each optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendingCapsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_coins: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weekly_coins: Option<u64>,
}

/// The largest daily or weekly spending cap, in coins (the wallets' day and week
/// counters are exact below it).
pub const SPENDING_CAP_COINS_MAX: u64 = u32::MAX as u64;

impl EconomyFile {
    /// A fixed digest of the file's terms (its JSON form): how a start tells an edited
    /// file from the one it recorded.
    pub fn digest(&self) -> u64 {
        digest_bytes(&serde_json::to_vec(self).expect("an economy file serializes"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RechargeFile {
    /// Smallest custom amount on the web channel, in coins.
    pub custom_min_coins: u64,
    /// Largest custom amount on the web channel, in coins.
    pub custom_max_coins: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GiftFile {
    pub id: String,
    pub name: String,
    pub coins: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageFile {
    pub id: String,
    pub coins: u64,
    pub prices: BTreeMap<String, String>,
}

/// One entry of the `items` catalog: what a `purchase` spends coins on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemFile {
    pub id: String,
    pub name: String,
    pub coins: u64,
}

/// A time-boxed offer on a coin package: bonus coins, a discounted price, or both,
/// optionally only in some regions or channels. In force from `start` (inclusive) to
/// `end` (exclusive), RFC 3339 times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromotionFile {
    /// Stable id, recorded in revenue accounting.
    pub id: String,
    /// The package on offer (its id).
    pub package: String,
    /// RFC 3339, e.g. "2026-11-27T00:00:00Z".
    pub start: String,
    pub end: String,
    /// Coins on top of the package's.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bonus_coins: u64,
    /// Offer prices per currency (decimal strings); a currency not listed keeps the
    /// package's price.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<String, String>,
    /// Regions the offer is for; empty: every region (and users without one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Channels the offer is for; empty: both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
}

/// A validated promotion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromotionSpec {
    pub id: String,
    /// The package's string id (codes move between versions; ids do not).
    pub package: String,
    /// UTC ms: in force while `start_ms <= t < end_ms`.
    pub start_ms: u64,
    pub end_ms: u64,
    pub bonus_coins: u64,
    pub prices: BTreeMap<Currency, Decimal>,
    /// Empty: every region, and users without one.
    pub regions: BTreeSet<Region>,
    /// Empty: both channels.
    pub channels: BTreeSet<Channel>,
    /// The file's RFC 3339 texts, given back as written.
    start: String,
    end: String,
}

impl PromotionSpec {
    /// Whether the offer is for a user in `region` buying on `channel` at `at_ms`.
    pub fn applies(&self, region: Option<Region>, channel: Channel, at_ms: u64) -> bool {
        (self.start_ms..self.end_ms).contains(&at_ms)
            && (self.regions.is_empty() || region.is_some_and(|r| self.regions.contains(&r)))
            && (self.channels.is_empty() || self.channels.contains(&channel))
    }

    /// Whether two offers could both be in force for one sale (same package, times,
    /// regions and channels overlapping).
    fn overlaps(&self, other: &PromotionSpec) -> bool {
        let sets =
            |a: &BTreeSet<_>, b: &BTreeSet<_>| a.is_empty() || b.is_empty() || !a.is_disjoint(b);
        self.package == other.package
            && self.start_ms < other.end_ms
            && other.start_ms < self.end_ms
            && sets(&self.regions, &other.regions)
            && (self.channels.is_empty()
                || other.channels.is_empty()
                || !self.channels.is_disjoint(&other.channels))
    }

    fn to_file(&self) -> PromotionFile {
        PromotionFile {
            id: self.id.clone(),
            package: self.package.clone(),
            start: self.start.clone(),
            end: self.end.clone(),
            bonus_coins: self.bonus_coins,
            prices: self
                .prices
                .iter()
                .map(|(c, v)| (c.as_str().to_owned(), v.to_string()))
                .collect(),
            regions: self.regions.iter().map(|r| r.as_str().to_owned()).collect(),
            channels: self.channels.iter().copied().collect(),
        }
    }
}

impl Economy {
    /// Whether `next` may replace this economy at `now_ms` without refusing a payment
    /// already made: a promotion that has started and was in force within the last
    /// `horizon_ms` (a payment under it may still arrive, judged at its payment time
    /// under the version in force on arrival) must stay in `next` with the same terms
    /// and an end no earlier than its end or `now_ms`, whichever is first. Ending an
    /// offer early means setting its end to now; removing it waits one horizon after it
    /// ended. Offers that have not started may change freely.
    pub fn check_offers_kept(
        &self,
        next: &Economy,
        now_ms: u64,
        horizon_ms: u64,
    ) -> Result<(), EconomyError> {
        let committed = self
            .promotions
            .iter()
            .filter(|p| p.start_ms <= now_ms && p.end_ms > now_ms.saturating_sub(horizon_ms));
        for (i, p) in committed.enumerate() {
            let end_at_least = p.end_ms.min(now_ms);
            let kept = next.promotions.iter().find(|n| n.id == p.id);
            let same_terms = kept.is_some_and(|n| {
                n.package == p.package
                    && n.start_ms == p.start_ms
                    && n.bonus_coins == p.bonus_coins
                    && n.prices == p.prices
                    && n.regions == p.regions
                    && n.channels == p.channels
            });
            let late_enough = kept.is_some_and(|n| n.end_ms >= end_at_least);
            if !(same_terms && late_enough) {
                let removable_at = format_time(p.end_ms.min(now_ms).saturating_add(horizon_ms));
                return Err(EconomyError::new(
                    format!("promotions[{i}]"),
                    format!(
                        "promotion {:?} was in force within the retry horizon ({} ms): payments made under it may still \
                         arrive and would be refused; keep its terms, end it no earlier than now (end = {:?}), and \
                         remove it after {removable_at}",
                        p.id,
                        horizon_ms,
                        format_time(end_at_least),
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// UTC ms of an RFC 3339 time (at or after the epoch).
fn parse_time(key: &str, text: &str) -> Result<u64, EconomyError> {
    let t =
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .map_err(|e| EconomyError::new(key, format!("not an RFC 3339 time ({text:?}): {e}")))?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| EconomyError::new(key, format!("{text:?} is before 1970")))
}

/// RFC 3339 text of a UTC ms time, e.g. "2026-11-27T00:00:00Z".
pub fn format_time(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// One catalog entry; its index in [`Economy::gifts`] is its stable numeric code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GiftSpec {
    pub id: String,
    pub name: String,
    pub coins: u64,
    /// Removed from the catalog by a later economy version: a gift naming it is
    /// `UNKNOWN_GIFT`, history still shows its id and name. Its code is never reused.
    pub retired: bool,
}

/// One coin package; its index in [`Economy::packages`] is its stable numeric code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSpec {
    pub id: String,
    pub coins: u64,
    pub prices: BTreeMap<Currency, Decimal>,
    /// Removed by a later economy version: a recharge naming it is `AMOUNT_OUT_OF_RANGE`.
    pub retired: bool,
}

/// One item a purchase can buy; its index in [`Economy::items`] is its stable numeric
/// code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemSpec {
    pub id: String,
    pub name: String,
    /// Price of one, in coins (positive; times `max_gift_count` fits a `u64`).
    pub coins: u64,
    /// Removed by a later economy version: a purchase naming it is `UNKNOWN_ITEM`.
    pub retired: bool,
}

/// The whole of one economy version as the ledger records it (Redis, snapshots, the
/// replica hand-off): the operator's file plus the code of every catalog entry ever
/// used, in code order, so that the numbers in the journal keep naming the same gift
/// and package whatever later files reorder or remove. Serialized as JSON; its
/// [`EconomyDoc::digest`] identifies it in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EconomyDoc {
    pub version: u32,
    /// Gift string ids by code (retired ones included).
    pub gift_codes: Vec<String>,
    /// Package string ids by code (retired ones included).
    pub package_codes: Vec<String>,
    /// Retired entries' last terms, so history keeps their names (in code order).
    #[serde(default)]
    pub retired_gifts: Vec<GiftFile>,
    #[serde(default)]
    pub retired_packages: Vec<PackageFile>,
    pub file: EconomyFile,
    /// Item string ids by code (retired ones included). Left out when empty, as the
    /// next, so that a document of a version without items keeps its bytes and digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub item_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_items: Vec<ItemFile>,
}

impl EconomyDoc {
    /// The canonical bytes: what is stored and what [`EconomyDoc::digest`] covers.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an economy document serializes")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<EconomyDoc, EconomyError> {
        serde_json::from_slice(bytes)
            .map_err(|e| EconomyError::new("economy document", e.to_string()))
    }

    /// A fixed 64-bit hash of [`EconomyDoc::to_bytes`] (splitmix64's finalizer over
    /// 8-byte words): the journal names a version by it, and replay checks it.
    pub fn digest(&self) -> u64 {
        digest_bytes(&self.to_bytes())
    }
}

/// A fixed function of `bytes` (it identifies stored documents: never change it).
pub fn digest_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0x243F_6A88_85A3_08D3 ^ bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let mut z = h ^ u64::from_le_bytes(word).wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

/// Most catalog codes one ledger may ever use (gifts or packages, retired included).
pub const CATALOG_CODES_MAX: usize = 16_384;

/// The validated economy the engine applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Economy {
    /// 0 for an economy not (yet) recorded in a ledger (a fresh engine, a demo, a
    /// ledger from a build before versions); a recorded version counts from 1.
    pub version: u32,
    pub creator_share: Decimal,
    /// `creator_share = share_numerator / share_denominator`, exactly.
    share_numerator: u128,
    share_denominator: u128,
    pub restricted_regions: BTreeSet<Region>,
    pub max_gift_count: u32,
    /// Diamonds credited under this version are held this long (ms) before a payout may
    /// spend them (0: available at once).
    pub earnings_hold_ms: u64,
    /// A recharge can be reversed for this long after it was applied (ms; the records
    /// of older recharges are dropped).
    pub recharge_reversal_window_ms: u64,
    pub diamond_value: BTreeMap<Currency, Decimal>,
    pub payout_minimum: BTreeMap<Currency, Decimal>,
    pub custom_min_coins: u64,
    pub custom_max_coins: u64,
    pub gifts: Vec<GiftSpec>,
    pub packages: Vec<PackageSpec>,
    /// The `items` catalog (purchases), by code.
    pub items: Vec<ItemSpec>,
    /// Offers on packages, in file order; at most one is in force for a sale.
    pub promotions: Vec<PromotionSpec>,
    /// `spending_caps.daily_coins`: coins one user may spend per UTC day (`None`: no cap).
    pub daily_cap_coins: Option<u64>,
    /// `spending_caps.weekly_coins`: coins one user may spend per ISO week.
    pub weekly_cap_coins: Option<u64>,
}

fn parse_decimal(key: &str, s: &str) -> Result<Decimal, EconomyError> {
    Decimal::from_str_exact(s.trim())
        .map_err(|e| EconomyError::new(key, format!("not a decimal number ({s:?}): {e}")))
}

fn parse_money_map(
    key: &str,
    map: &BTreeMap<String, String>,
) -> Result<BTreeMap<Currency, Decimal>, EconomyError> {
    let mut out = BTreeMap::new();
    for (code, amount) in map {
        let key = format!("{key}.{code}");
        let currency: Currency = code.parse().map_err(|e| EconomyError::new(&key, e))?;
        let value = parse_decimal(&key, amount)?;
        if value <= Decimal::ZERO {
            return Err(EconomyError::new(key, "must be positive"));
        }
        out.insert(currency, value);
    }
    Ok(out)
}

impl Economy {
    /// Parses and validates `economy.toml` text.
    pub fn from_toml_str(text: &str) -> Result<Economy, EconomyError> {
        let file: EconomyFile = toml::from_str(text).map_err(|e| {
            // toml's message names the key or line; keep it whole.
            EconomyError::new("economy.toml", e.to_string().trim().replace('\n', " "))
        })?;
        Economy::from_file(file)
    }

    /// The economy embedded in the binary (`config/economy.toml`).
    pub fn embedded() -> Economy {
        Economy::from_toml_str(EMBEDDED_ECONOMY_TOML).expect("embedded economy.toml is valid")
    }

    /// The file this economy reads back from ([`Economy::from_file`] gives it back
    /// equal): how a server hands its economy to the snapshot replica process.
    pub fn to_file(&self) -> EconomyFile {
        let money = |m: &BTreeMap<Currency, Decimal>| -> BTreeMap<String, String> {
            m.iter()
                .map(|(c, v)| (c.as_str().to_owned(), v.to_string()))
                .collect()
        };
        EconomyFile {
            creator_share: self.creator_share.to_string(),
            restricted_regions: self
                .restricted_regions
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
            max_gift_count: self.max_gift_count,
            earnings_hold_ms: self.earnings_hold_ms,
            recharge_reversal_window_ms: (self.recharge_reversal_window_ms
                != RECHARGE_REVERSAL_WINDOW_MS_DEFAULT)
                .then_some(self.recharge_reversal_window_ms),
            diamond_value: money(&self.diamond_value),
            payout_minimum: money(&self.payout_minimum),
            recharge: RechargeFile {
                custom_min_coins: self.custom_min_coins,
                custom_max_coins: self.custom_max_coins,
            },
            gifts: self
                .gifts
                .iter()
                .filter(|g| !g.retired)
                .map(|g| GiftFile {
                    id: g.id.clone(),
                    name: g.name.clone(),
                    coins: g.coins,
                })
                .collect(),
            packages: self
                .packages
                .iter()
                .filter(|p| !p.retired)
                .map(|p| PackageFile {
                    id: p.id.clone(),
                    coins: p.coins,
                    prices: money(&p.prices),
                })
                .collect(),
            items: self
                .items
                .iter()
                .filter(|i| !i.retired)
                .map(ItemSpec::to_file)
                .collect(),
            promotions: self.promotions.iter().map(PromotionSpec::to_file).collect(),
            spending_caps: (self.daily_cap_coins.is_some() || self.weekly_cap_coins.is_some())
                .then_some(SpendingCapsFile {
                    daily_coins: self.daily_cap_coins,
                    weekly_coins: self.weekly_cap_coins,
                }),
        }
    }

    pub fn from_file(file: EconomyFile) -> Result<Economy, EconomyError> {
        let creator_share = parse_decimal("creator_share", &file.creator_share)?;
        if creator_share <= Decimal::ZERO || creator_share > Decimal::ONE {
            return Err(EconomyError::new(
                "creator_share",
                format!("must be in (0, 1], got {creator_share}"),
            ));
        }
        let share = creator_share.normalize();
        if share.scale() > CREATOR_SHARE_SCALE_MAX {
            return Err(EconomyError::new(
                "creator_share",
                format!("at most {CREATOR_SHARE_SCALE_MAX} decimal places"),
            ));
        }
        let share_numerator = share.mantissa() as u128;
        let share_denominator = 10u128.pow(share.scale());

        let mut restricted_regions = BTreeSet::new();
        for (i, r) in file.restricted_regions.iter().enumerate() {
            let region: Region = r
                .parse()
                .map_err(|e| EconomyError::new(format!("restricted_regions[{i}]"), e))?;
            restricted_regions.insert(region);
        }
        if file.max_gift_count == 0 {
            return Err(EconomyError::new("max_gift_count", "must be at least 1"));
        }
        if file.earnings_hold_ms > EARNINGS_HOLD_MS_MAX {
            return Err(EconomyError::new(
                "earnings_hold_ms",
                format!("at most {EARNINGS_HOLD_MS_MAX} (366 days)"),
            ));
        }
        let recharge_reversal_window_ms = file
            .recharge_reversal_window_ms
            .unwrap_or(RECHARGE_REVERSAL_WINDOW_MS_DEFAULT);
        if !(1..=RECHARGE_REVERSAL_WINDOW_MS_MAX).contains(&recharge_reversal_window_ms) {
            return Err(EconomyError::new(
                "recharge_reversal_window_ms",
                format!("must be in 1..={RECHARGE_REVERSAL_WINDOW_MS_MAX} (540 days)"),
            ));
        }
        let diamond_value = parse_money_map("diamond_value", &file.diamond_value)?;
        if diamond_value.is_empty() {
            return Err(EconomyError::new(
                "diamond_value",
                "needs at least one currency",
            ));
        }
        let payout_minimum = parse_money_map("payout_minimum", &file.payout_minimum)?;
        for currency in payout_minimum.keys() {
            if !diamond_value.contains_key(currency) {
                return Err(EconomyError::new(
                    format!("payout_minimum.{currency}"),
                    "has no diamond_value in that currency",
                ));
            }
        }
        let r = &file.recharge;
        if r.custom_min_coins == 0 {
            return Err(EconomyError::new(
                "recharge.custom_min_coins",
                "must be at least 1",
            ));
        }
        if r.custom_max_coins < r.custom_min_coins {
            return Err(EconomyError::new(
                "recharge.custom_max_coins",
                "must be >= recharge.custom_min_coins",
            ));
        }

        if file.gifts.is_empty() || file.gifts.len() > CATALOG_ENTRIES_MAX {
            return Err(EconomyError::new(
                "gifts",
                format!("needs 1..={CATALOG_ENTRIES_MAX} entries"),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut gifts = Vec::with_capacity(file.gifts.len());
        for (i, g) in file.gifts.iter().enumerate() {
            if g.id.is_empty() {
                return Err(EconomyError::new(format!("gifts[{i}].id"), "is empty"));
            }
            if !seen.insert(g.id.clone()) {
                return Err(EconomyError::new(
                    format!("gifts[{i}].id"),
                    format!("duplicate gift id {:?}", g.id),
                ));
            }
            if g.coins == 0 {
                return Err(EconomyError::new(
                    format!("gifts[{i}].coins"),
                    "must be positive",
                ));
            }
            gifts.push(GiftSpec {
                id: g.id.clone(),
                name: g.name.clone(),
                coins: g.coins,
                retired: false,
            });
        }

        if file.packages.len() > CATALOG_ENTRIES_MAX {
            return Err(EconomyError::new(
                "packages",
                format!("at most {CATALOG_ENTRIES_MAX} entries"),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut packages = Vec::with_capacity(file.packages.len());
        for (i, p) in file.packages.iter().enumerate() {
            if !seen.insert(p.id.clone()) {
                return Err(EconomyError::new(
                    format!("packages[{i}].id"),
                    format!("duplicate package id {:?}", p.id),
                ));
            }
            if p.coins == 0 {
                return Err(EconomyError::new(
                    format!("packages[{i}].coins"),
                    "must be positive",
                ));
            }
            let prices = parse_money_map(&format!("packages[{i}].prices"), &p.prices)?;
            if prices.is_empty() {
                return Err(EconomyError::new(
                    format!("packages[{i}].prices"),
                    "needs at least one currency",
                ));
            }
            packages.push(PackageSpec {
                id: p.id.clone(),
                coins: p.coins,
                prices,
                retired: false,
            });
        }

        let items = validate_items(&file.items, file.max_gift_count)?;
        let promotions = parse_promotions(&file.promotions, &packages)?;
        let caps = file.spending_caps.as_ref();
        let (daily_cap_coins, weekly_cap_coins) = (
            caps.and_then(|c| c.daily_coins),
            caps.and_then(|c| c.weekly_coins),
        );
        for (key, cap) in [
            ("spending_caps.daily_coins", daily_cap_coins),
            ("spending_caps.weekly_coins", weekly_cap_coins),
        ] {
            if cap.is_some_and(|c| c > SPENDING_CAP_COINS_MAX) {
                return Err(EconomyError::new(
                    key,
                    format!("at most {SPENDING_CAP_COINS_MAX} coins"),
                ));
            }
        }

        Ok(Economy {
            version: 0,
            creator_share,
            share_numerator,
            share_denominator,
            restricted_regions,
            max_gift_count: file.max_gift_count,
            earnings_hold_ms: file.earnings_hold_ms,
            recharge_reversal_window_ms,
            diamond_value,
            payout_minimum,
            custom_min_coins: r.custom_min_coins,
            custom_max_coins: r.custom_max_coins,
            gifts,
            packages,
            items,
            promotions,
            daily_cap_coins,
            weekly_cap_coins,
        })
    }

    /// The offer in force for a sale of package `package` (a code) to a user in
    /// `region` on `channel` at `at_ms` (UTC ms), if any.
    pub fn offer(
        &self,
        package: u32,
        region: Option<Region>,
        channel: Channel,
        at_ms: u64,
    ) -> Option<&PromotionSpec> {
        if self.promotions.is_empty() {
            return None;
        }
        let id = &self.packages.get(package as usize)?.id;
        self.promotions
            .iter()
            .find(|p| p.package == *id && p.applies(region, channel, at_ms))
    }

    /// `creator_share` as an exact ratio `(numerator, denominator)`; the denominator is a
    /// power of ten.
    pub fn share_ratio(&self) -> (u128, u128) {
        (self.share_numerator, self.share_denominator)
    }

    /// Whole diamonds for a creator that received `coins` in total:
    /// `floor(coins * creator_share)`, exact.
    pub fn diamonds_for(&self, coins: u128) -> u128 {
        // coins < 2^128 / 10^9 for any realistic ledger; saturate rather than wrap.
        coins.saturating_mul(self.share_numerator) / self.share_denominator
    }

    /// The fraction of a diamond carried over for a creator that received `coins`:
    /// `coins * creator_share - floor(coins * creator_share)`, in [0, 1).
    pub fn diamond_fraction_for(&self, coins: u128) -> Decimal {
        let rem = coins.saturating_mul(self.share_numerator) % self.share_denominator;
        // rem < 10^9 and the denominator <= 10^9, both fit a Decimal exactly.
        (Decimal::from(rem as u64) / Decimal::from(self.share_denominator as u64)).normalize()
    }

    /// The code of the gift `id` in the catalog now (`None` if unknown or retired).
    pub fn gift_index(&self, id: &str) -> Option<u32> {
        self.gifts
            .iter()
            .position(|g| g.id == id && !g.retired)
            .map(|i| i as u32)
    }

    /// The code of the package `id` on sale now (`None` if unknown or retired).
    pub fn package_index(&self, id: &str) -> Option<u32> {
        self.packages
            .iter()
            .position(|p| p.id == id && !p.retired)
            .map(|i| i as u32)
    }

    /// The code of the item `id` on sale now (`None` if unknown or retired).
    pub fn item_index(&self, id: &str) -> Option<u32> {
        self.items
            .iter()
            .position(|i| i.id == id && !i.retired)
            .map(|i| i as u32)
    }

    /// The next version: `file`'s terms, with every code this economy gave kept (an entry
    /// the file no longer has is retired, a new one gets the next code). Validated whole.
    pub fn successor(&self, file: EconomyFile) -> Result<Economy, EconomyError> {
        let fresh = Economy::from_file(file)?;
        let mut next = fresh.clone();
        next.version = self
            .version
            .checked_add(1)
            .ok_or_else(|| EconomyError::new("economy", "no versions left"))?;
        next.gifts = relayout(&self.gifts, fresh.gifts, |g| &g.id, |g| g.retired = true);
        next.packages = relayout(
            &self.packages,
            fresh.packages,
            |p| &p.id,
            |p| p.retired = true,
        );
        next.items = relayout(&self.items, fresh.items, |i| &i.id, |i| i.retired = true);
        if next.items.len() > CATALOG_CODES_MAX {
            return Err(EconomyError::new(
                "items",
                format!(
                    "a ledger uses at most {CATALOG_CODES_MAX} item codes, retired ones included"
                ),
            ));
        }
        if next.gifts.len() > CATALOG_CODES_MAX || next.packages.len() > CATALOG_CODES_MAX {
            return Err(EconomyError::new(
                "gifts",
                format!(
                    "a ledger uses at most {CATALOG_CODES_MAX} gift and package codes, retired ones included"
                ),
            ));
        }
        Ok(next)
    }

    /// True when `other` applies the same terms with the same codes (versions aside).
    pub fn same_terms(&self, other: &Economy) -> bool {
        Economy {
            version: other.version,
            ..self.clone()
        } == *other
    }

    /// The ledger's record of this economy.
    pub fn to_doc(&self) -> EconomyDoc {
        let to_gift = |g: &GiftSpec| GiftFile {
            id: g.id.clone(),
            name: g.name.clone(),
            coins: g.coins,
        };
        let to_package = |p: &PackageSpec| PackageFile {
            id: p.id.clone(),
            coins: p.coins,
            prices: p
                .prices
                .iter()
                .map(|(c, v)| (c.as_str().to_owned(), v.to_string()))
                .collect(),
        };
        EconomyDoc {
            version: self.version,
            gift_codes: self.gifts.iter().map(|g| g.id.clone()).collect(),
            package_codes: self.packages.iter().map(|p| p.id.clone()).collect(),
            retired_gifts: self
                .gifts
                .iter()
                .filter(|g| g.retired)
                .map(to_gift)
                .collect(),
            retired_packages: self
                .packages
                .iter()
                .filter(|p| p.retired)
                .map(to_package)
                .collect(),
            file: self.to_file(),
            item_codes: self.items.iter().map(|i| i.id.clone()).collect(),
            retired_items: self
                .items
                .iter()
                .filter(|i| i.retired)
                .map(ItemSpec::to_file)
                .collect(),
        }
    }

    /// The economy a document records, exactly ([`Economy::to_doc`] gives it back).
    pub fn from_doc(doc: EconomyDoc) -> Result<Economy, EconomyError> {
        let mut economy = Economy::from_file(doc.file)?;
        economy.version = doc.version;
        let mut retired_gifts = Vec::with_capacity(doc.retired_gifts.len());
        for g in doc.retired_gifts {
            retired_gifts.push(GiftSpec {
                id: g.id,
                name: g.name,
                coins: g.coins,
                retired: true,
            });
        }
        let mut retired_packages = Vec::with_capacity(doc.retired_packages.len());
        for (i, p) in doc.retired_packages.into_iter().enumerate() {
            retired_packages.push(PackageSpec {
                prices: parse_money_map(&format!("retired_packages[{i}].prices"), &p.prices)?,
                id: p.id,
                coins: p.coins,
                retired: true,
            });
        }
        economy.gifts = place_by_code(
            "gift_codes",
            &doc.gift_codes,
            std::mem::take(&mut economy.gifts),
            retired_gifts,
            |g| &g.id,
        )?;
        economy.packages = place_by_code(
            "package_codes",
            &doc.package_codes,
            std::mem::take(&mut economy.packages),
            retired_packages,
            |p| &p.id,
        )?;
        let retired_items = doc.retired_items.into_iter().map(|i| ItemSpec {
            id: i.id,
            name: i.name,
            coins: i.coins,
            retired: true,
        });
        economy.items = place_by_code(
            "item_codes",
            &doc.item_codes,
            std::mem::take(&mut economy.items),
            retired_items.collect(),
            |i| &i.id,
        )?;
        Ok(economy)
    }
}

impl ItemSpec {
    fn to_file(&self) -> ItemFile {
        ItemFile {
            id: self.id.clone(),
            name: self.name.clone(),
            coins: self.coins,
        }
    }
}

/// Validates the `items` catalog (it may be empty): ids present and unique, prices
/// positive, and `coins x max_gift_count` (the dearest purchase) within a `u64`.
fn validate_items(items: &[ItemFile], max_count: u32) -> Result<Vec<ItemSpec>, EconomyError> {
    if items.len() > CATALOG_ENTRIES_MAX {
        return Err(EconomyError::new(
            "items",
            format!("at most {CATALOG_ENTRIES_MAX} entries"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        if item.id.is_empty() {
            return Err(EconomyError::new(format!("items[{i}].id"), "is empty"));
        }
        if !seen.insert(item.id.as_str()) {
            return Err(EconomyError::new(
                format!("items[{i}].id"),
                format!("duplicate item id {:?}", item.id),
            ));
        }
        if item.coins == 0 {
            return Err(EconomyError::new(
                format!("items[{i}].coins"),
                "must be positive",
            ));
        }
        if item.coins.checked_mul(u64::from(max_count)).is_none() {
            return Err(EconomyError::new(
                format!("items[{i}].coins"),
                format!(
                    "{} coins x max_gift_count {max_count} overflows a u64",
                    item.coins
                ),
            ));
        }
        out.push(ItemSpec {
            id: item.id.clone(),
            name: item.name.clone(),
            coins: item.coins,
            retired: false,
        });
    }
    Ok(out)
}

/// Validates the promotions against the file's packages: known package, times in order,
/// something offered, prices in currencies the package is sold in, and never two offers
/// in force for the same sale.
fn parse_promotions(
    files: &[PromotionFile],
    packages: &[PackageSpec],
) -> Result<Vec<PromotionSpec>, EconomyError> {
    if files.len() > PROMOTIONS_MAX {
        return Err(EconomyError::new(
            "promotions",
            format!("at most {PROMOTIONS_MAX} entries"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out: Vec<PromotionSpec> = Vec::with_capacity(files.len());
    for (i, p) in files.iter().enumerate() {
        let key = |field: &str| format!("promotions[{i}].{field}");
        if p.id.is_empty() {
            return Err(EconomyError::new(key("id"), "is empty"));
        }
        if !seen.insert(p.id.clone()) {
            return Err(EconomyError::new(
                key("id"),
                format!("duplicate promotion id {:?}", p.id),
            ));
        }
        let package = packages.iter().find(|k| k.id == p.package).ok_or_else(|| {
            EconomyError::new(key("package"), format!("no package {:?}", p.package))
        })?;
        let start_ms = parse_time(&key("start"), &p.start)?;
        let end_ms = parse_time(&key("end"), &p.end)?;
        if end_ms <= start_ms {
            return Err(EconomyError::new(key("end"), "must be after start"));
        }
        if package.coins.checked_add(p.bonus_coins).is_none() {
            return Err(EconomyError::new(
                key("bonus_coins"),
                "the package's coins plus the bonus overflow",
            ));
        }
        let prices = parse_money_map(&key("prices"), &p.prices)?;
        if let Some(currency) = prices.keys().find(|c| !package.prices.contains_key(c)) {
            return Err(EconomyError::new(
                format!("promotions[{i}].prices.{currency}"),
                format!("package {:?} is not sold in {currency}", p.package),
            ));
        }
        if p.bonus_coins == 0 && prices.is_empty() {
            return Err(EconomyError::new(
                key("bonus_coins"),
                "the offer gives nothing: set bonus_coins, prices or both",
            ));
        }
        let mut regions = BTreeSet::new();
        for (j, r) in p.regions.iter().enumerate() {
            let region: Region = r
                .parse()
                .map_err(|e| EconomyError::new(format!("promotions[{i}].regions[{j}]"), e))?;
            regions.insert(region);
        }
        let spec = PromotionSpec {
            id: p.id.clone(),
            package: p.package.clone(),
            start_ms,
            end_ms,
            bonus_coins: p.bonus_coins,
            prices,
            regions,
            channels: p.channels.iter().copied().collect(),
            start: p.start.clone(),
            end: p.end.clone(),
        };
        if let Some(other) = out.iter().find(|o| o.overlaps(&spec)) {
            return Err(EconomyError::new(
                key("start"),
                format!(
                    "overlaps promotion {:?} on package {:?}: at most one offer per package, \
                     region and channel at a time",
                    other.id, p.package
                ),
            ));
        }
        out.push(spec);
    }
    Ok(out)
}

/// Lays out `next`'s entries by the codes of `previous`: a kept id keeps its code, a
/// dropped one stays retired (marked by `retire`), a new one gets the next code.
fn relayout<T: Clone>(
    previous: &[T],
    next: Vec<T>,
    id: impl Fn(&T) -> &String,
    retire: impl Fn(&mut T),
) -> Vec<T> {
    let mut out: Vec<T> = previous
        .iter()
        .map(|old| {
            next.iter()
                .find(|n| id(n) == id(old))
                .cloned()
                .unwrap_or_else(|| {
                    let mut old = old.clone();
                    retire(&mut old);
                    old
                })
        })
        .collect();
    for n in next {
        if !previous.iter().any(|old| id(old) == id(&n)) {
            out.push(n);
        }
    }
    out
}

/// Orders a document's live and retired entries by its code list: each code names
/// exactly one entry, and every entry has a code.
fn place_by_code<T>(
    key: &str,
    codes: &[String],
    live: Vec<T>,
    retired: Vec<T>,
    id: impl Fn(&T) -> &String,
) -> Result<Vec<T>, EconomyError> {
    if codes.len() > CATALOG_CODES_MAX || codes.len() != live.len() + retired.len() {
        return Err(EconomyError::new(key, "does not list each entry once"));
    }
    let mut slots: Vec<Option<T>> = codes.iter().map(|_| None).collect();
    for entry in live.into_iter().chain(retired) {
        let code = codes
            .iter()
            .position(|c| c == id(&entry))
            .ok_or_else(|| EconomyError::new(key, format!("has no code for {:?}", id(&entry))))?;
        if slots[code].replace(entry).is_some() {
            return Err(EconomyError::new(
                key,
                format!("names {:?} twice", codes[code]),
            ));
        }
    }
    slots
        .into_iter()
        .map(|slot| slot.ok_or_else(|| EconomyError::new(key, "does not list each entry once")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_economy_is_valid_and_realistic() {
        let e = Economy::embedded();
        assert_eq!(e.creator_share, Decimal::new(5, 1));
        for (id, coins) in [
            ("rose", 1),
            ("panda", 5),
            ("rainbow_puke", 100),
            ("concert", 500),
            ("drama_queen", 5000),
            ("planet", 15000),
            ("lion", 29999),
            ("universe", 34999),
        ] {
            let i = e.gift_index(id).unwrap_or_else(|| panic!("gift {id}")) as usize;
            assert_eq!(e.gifts[i].coins, coins, "{id}");
        }
        let p = &e.packages[e.package_index("coins_100").unwrap() as usize];
        assert_eq!(p.prices[&Currency::USD], Decimal::new(129, 2));
        assert_eq!(e.diamond_value[&Currency::USD], Decimal::new(5, 3));
        assert_eq!(e.payout_minimum[&Currency::USD], Decimal::new(100, 0));
        let frame = e.item_index("profile_frame").expect("an item");
        assert_eq!(e.items[frame as usize].coins, 300);
        assert_eq!(e.item_index("rose"), None, "gifts are not items");
    }

    #[test]
    fn items_keep_their_codes_across_versions_and_a_document_without_items_its_bytes() {
        let mut v1 = Economy::embedded();
        v1.version = 1;
        let mut file = v1.to_file();
        file.items.retain(|i| i.id != "sticker_pack");
        file.items.insert(
            0,
            ItemFile {
                id: "super_like".to_owned(),
                name: "Super Like".to_owned(),
                coins: 9,
            },
        );
        let v2 = v1.successor(file).unwrap();
        let codes: Vec<_> = v2
            .items
            .iter()
            .map(|i| (i.id.as_str(), i.retired))
            .collect();
        assert_eq!(
            codes,
            [
                ("sticker_pack", true),
                ("profile_frame", false),
                ("ad_free_month", false),
                ("super_like", false)
            ]
        );
        assert_eq!(v2.item_index("sticker_pack"), None, "retired");
        assert_eq!(v2.item_index("super_like"), Some(3));
        let back = Economy::from_doc(EconomyDoc::from_bytes(&v2.to_doc().to_bytes()).unwrap());
        assert_eq!(back.unwrap(), v2);

        // A version without items serializes as before items existed: no new keys, so
        // the digests of documents already recorded still check.
        let mut bare = v1.to_file();
        bare.items.clear();
        let bare = Economy::from_file(bare).unwrap().to_doc();
        let text = String::from_utf8(bare.to_bytes()).unwrap();
        assert!(!text.contains("item"), "{text}");
        let reread = EconomyDoc::from_bytes(text.as_bytes()).unwrap();
        assert_eq!(reread.digest(), bare.digest());
    }

    #[test]
    fn diamonds_carry_fractions() {
        let e = Economy::embedded();
        assert_eq!(e.diamonds_for(3), 1);
        assert_eq!(e.diamond_fraction_for(3), Decimal::new(5, 1));
        assert_eq!(e.diamonds_for(4), 2);
        assert_eq!(e.diamond_fraction_for(4), Decimal::ZERO);
    }

    fn with(replace: &str, by: &str) -> Result<Economy, EconomyError> {
        assert!(EMBEDDED_ECONOMY_TOML.contains(replace), "{replace}");
        Economy::from_toml_str(&EMBEDDED_ECONOMY_TOML.replacen(replace, by, 1))
    }

    #[test]
    fn an_earnings_hold_of_zero_keeps_the_digest_of_an_economy_without_one() {
        let plain = Economy::embedded();
        assert_eq!(plain.earnings_hold_ms, 0);
        let json = String::from_utf8(plain.to_doc().to_bytes()).unwrap();
        assert!(!json.contains("earnings_hold_ms"), "{json}");
        let held = with(
            "max_gift_count = 9999",
            "max_gift_count = 9999\nearnings_hold_ms = 604800000",
        )
        .unwrap();
        assert_eq!(held.earnings_hold_ms, 7 * 86_400_000);
        assert_ne!(held.to_doc().digest(), plain.to_doc().digest());
        assert_eq!(Economy::from_doc(held.to_doc()).unwrap(), held);
        assert!(!held.same_terms(&plain));
    }

    #[test]
    fn invalid_economies_name_the_key() {
        let cases = [
            (
                "creator_share = \"0.5\"",
                "creator_share = \"1.5\"",
                "creator_share",
            ),
            (
                "creator_share = \"0.5\"",
                "creator_share = \"0\"",
                "creator_share",
            ),
            (
                "creator_share = \"0.5\"",
                "creator_share = \"half\"",
                "creator_share",
            ),
            ("id = \"panda\"", "id = \"rose\"", "gifts[1].id"),
            ("coins = 5\n", "coins = 0\n", "gifts[1].coins"),
            (
                "USD = \"1.29\"",
                "USD = \"-1.29\"",
                "packages[1].prices.USD",
            ),
            (
                "max_gift_count = 9999",
                "max_gift_count = 0",
                "max_gift_count",
            ),
            (
                "max_gift_count = 9999",
                "max_gift_count = 9999\nsurprise = 1",
                "economy.toml",
            ),
            (
                "id = \"profile_frame\"",
                "id = \"sticker_pack\"",
                "items[1].id",
            ),
            ("id = \"profile_frame\"", "id = \"\"", "items[1].id"),
            ("coins = 300\n", "coins = 0\n", "items[1].coins"),
            (
                "coins = 300\n",
                "coins = 18446744073709551615\n",
                "items[1].coins",
            ),
            (
                "max_gift_count = 9999",
                "max_gift_count = 9999\nearnings_hold_ms = 31622400001",
                "earnings_hold_ms",
            ),
        ];
        for (from, to, key) in cases {
            let err = with(from, to).expect_err(to);
            assert_eq!(err.key, key, "{to}: {err}");
            if key == "economy.toml" {
                assert!(err.message.contains("surprise"), "{err}");
            }
        }
    }
}
