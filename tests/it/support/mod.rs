//! Shared helpers: event builders over the embedded economy.

use giftstream::economy::{Currency, Economy};
use giftstream::engine::{
    AccountSettings, Channel, CreatorId, Engine, EngineConfig, Event, EventId, Gift, GiftId,
    ItemId, Payout, Purchase, Recharge, RechargeReversal, Stamp, StreamGoal, StreamId, UserId,
    VideoGift, VideoId,
};
use rust_decimal::Decimal;

/// 2026-11-15T00:00:00Z.
pub const NOV: Stamp = Stamp(1_794_700_800_000);
/// 2026-12-01T00:00:00Z.
pub const DEC: Stamp = Stamp(1_796_083_200_000);

pub fn economy() -> Economy {
    Economy::embedded()
}

pub fn engine() -> Engine {
    Engine::new(economy(), EngineConfig::default()).unwrap()
}

/// The embedded economy's TOML with an earnings hold of `hold_ms` (gifts under a hold
/// are recorded, so they can be reversed while held).
pub fn held_economy_text(hold_ms: u64) -> String {
    let text = giftstream::economy::EMBEDDED_ECONOMY_TOML.replacen(
        "max_gift_count = 9999",
        &format!("max_gift_count = 9999\nearnings_hold_ms = {hold_ms}"),
        1,
    );
    assert!(text.contains("earnings_hold_ms"), "the anchor line moved");
    text
}

/// The embedded economy with an earnings hold of `hold_ms`.
pub fn held_economy(hold_ms: u64) -> Economy {
    Economy::from_toml_str(&held_economy_text(hold_ms)).unwrap()
}

pub fn dec(s: &str) -> Decimal {
    s.parse().unwrap()
}

/// A package recharge at its USD price.
pub fn recharge(id: u128, user: u64, package: &str) -> Event {
    Event::Recharge(Recharge::of_package(&economy(), id, user, package).unwrap())
}

/// A custom web recharge.
pub fn custom(id: u128, user: u64, coins: u64, price: &str) -> Event {
    Event::Recharge(Recharge {
        id: EventId(id),
        user: UserId(user),
        coins,
        price: dec(price),
        currency: Currency::USD,
        package: None.into(),
        channel: Channel::Web,
        paid_ms: 0,
    })
}

pub fn gift(id: u128, sender: u64, creator: u64, gift: &str, count: u32) -> Event {
    let g = economy().gift_index(gift).map_or(GiftId::UNKNOWN, GiftId);
    Event::Gift(Gift {
        id: EventId(id),
        sender: UserId(sender),
        creator: CreatorId(creator),
        stream: StreamId(9000 + creator),
        gift: g,
        count,
    })
}

/// A gift on video `video` (`GiftId::UNKNOWN` if the embedded economy has no such gift).
pub fn video_gift(
    id: u128,
    sender: u64,
    creator: u64,
    video: u64,
    gift: &str,
    count: u32,
) -> Event {
    let g = economy().gift_index(gift).map_or(GiftId::UNKNOWN, GiftId);
    Event::VideoGift(VideoGift {
        id: EventId(id),
        sender: UserId(sender),
        creator: CreatorId(creator),
        video: VideoId(video),
        gift: g,
        count,
    })
}

pub fn payout(id: u128, creator: u64, diamonds: u64, currency: &str) -> Event {
    Event::Payout(Payout {
        id: EventId(id),
        creator: CreatorId(creator),
        diamonds,
        currency: currency.parse().unwrap(),
    })
}

pub fn account(
    id: u128,
    user: u64,
    region: Option<&str>,
    adult: bool,
    budget: Option<u64>,
) -> Event {
    Event::Account(AccountSettings {
        id: EventId(id),
        user: UserId(user),
        region: region.map(|r| r.parse().unwrap()),
        adult,
        monthly_budget_coins: budget.into(),
        daily_budget_coins: None.into(),
        weekly_budget_coins: None.into(),
    })
}

/// Account settings with monthly, weekly and daily budgets (an adult, no region).
pub fn budgets(
    id: u128,
    user: u64,
    monthly: Option<u64>,
    weekly: Option<u64>,
    daily: Option<u64>,
) -> Event {
    Event::Account(AccountSettings {
        id: EventId(id),
        user: UserId(user),
        region: None,
        adult: true,
        monthly_budget_coins: monthly.into(),
        daily_budget_coins: daily.into(),
        weekly_budget_coins: weekly.into(),
    })
}

pub fn goal(id: u128, stream: u64, creator: u64, target: u64) -> Event {
    Event::StreamGoal(StreamGoal {
        id: EventId(id),
        stream: StreamId(stream),
        creator: CreatorId(creator),
        coins_target: target,
    })
}

/// A purchase of `count` of the item `item` (`ItemId::UNKNOWN` if the embedded economy
/// has no such item).
pub fn purchase(id: u128, user: u64, item: &str, count: u32) -> Event {
    Event::Purchase(Purchase {
        id: EventId(id),
        user: UserId(user),
        item: economy().item_index(item).map_or(ItemId::UNKNOWN, ItemId),
        count,
    })
}

/// A chargeback of the recharge with id `recharge`, for `user`.
pub fn reversal(id: u128, user: u64, recharge: u128) -> Event {
    Event::RechargeReversal(RechargeReversal {
        id: EventId(id),
        user: UserId(user),
        recharge: EventId(recharge),
    })
}

pub mod child;
pub mod redis;
pub mod server;

/// GET `url`: the body as text (e.g. `/metrics`).
pub async fn get_text(http: &reqwest::Client, url: &str) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}
