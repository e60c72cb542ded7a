//! The economy's read routes: the version in force (`GET /v1/economy`, with every
//! catalog code, items and promotions) and the packages a user is offered now
//! (`GET /v1/economy/packages`, promotions applied).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, Caller, ErrorBody, authorize};
use crate::config::Scope;
use crate::economy::{Channel, Currency, Economy, Region, format_time};
use crate::server::Service;

/// One catalog gift. `code` is its stable number (the binary protocol's `gift`): kept
/// by every later economy version, never reused.
#[derive(Serialize, ToSchema)]
pub struct CatalogGift {
    code: u32,
    id: String,
    name: String,
    coins: u64,
    /// Removed by an economy version: gifts naming it are `UNKNOWN_GIFT`.
    retired: bool,
}

/// One coin package, with its stable `code` (the binary protocol's `package`).
#[derive(Serialize, ToSchema)]
pub struct CatalogPackage {
    code: u32,
    id: String,
    coins: u64,
    /// Price per currency (decimal strings).
    prices: BTreeMap<String, String>,
    retired: bool,
}

/// One item of the `items` catalog (what a purchase buys), with its stable `code` (the
/// binary protocol's `item`).
#[derive(Serialize, ToSchema)]
pub struct CatalogItem {
    code: u32,
    id: String,
    name: String,
    /// Price of one, in coins.
    coins: u64,
    /// Removed by an economy version: purchases naming it are `UNKNOWN_ITEM`.
    retired: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RechargeTerms {
    custom_min_coins: u64,
    custom_max_coins: u64,
}

/// The economy in force: its version and terms (economy.toml's keys).
#[derive(Serialize, ToSchema)]
pub struct EconomyResponse {
    /// Counts from 1 (0: not recorded yet, e.g. a server without a journal's first start).
    version: u32,
    creator_share: String,
    max_gift_count: u32,
    /// Diamonds credited under this version are held this long (ms) before a payout may
    /// spend them (0: available at once).
    earnings_hold_ms: u64,
    restricted_regions: Vec<String>,
    diamond_value: BTreeMap<String, String>,
    payout_minimum: BTreeMap<String, String>,
    recharge: RechargeTerms,
    gifts: Vec<CatalogGift>,
    packages: Vec<CatalogPackage>,
    items: Vec<CatalogItem>,
    /// Offers on packages, past and future ones included (each with its window).
    promotions: Vec<CatalogPromotion>,
    /// `[spending_caps]`: coins one user may spend per UTC day and ISO week (null: none).
    spending_caps: SpendingCaps,
}

#[derive(Serialize, ToSchema)]
pub struct SpendingCaps {
    daily_coins: Option<u64>,
    weekly_coins: Option<u64>,
}

/// A time-boxed offer on a package (economy.toml's `[[promotions]]`).
#[derive(Serialize, ToSchema)]
pub struct CatalogPromotion {
    id: String,
    package: String,
    /// RFC 3339 (UTC), inclusive.
    start: String,
    /// RFC 3339 (UTC), exclusive.
    end: String,
    bonus_coins: u64,
    /// Offer prices per currency; a currency not listed keeps the package's price.
    prices: BTreeMap<String, String>,
    /// Empty: every region.
    regions: Vec<String>,
    /// Empty: app and web.
    channels: Vec<String>,
}

pub(super) fn economy_response(e: &Economy) -> EconomyResponse {
    let money = |m: &BTreeMap<Currency, Decimal>| -> BTreeMap<String, String> {
        m.iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect()
    };
    EconomyResponse {
        version: e.version,
        creator_share: e.creator_share.to_string(),
        max_gift_count: e.max_gift_count,
        earnings_hold_ms: e.earnings_hold_ms,
        restricted_regions: e.restricted_regions.iter().map(|r| r.to_string()).collect(),
        diamond_value: money(&e.diamond_value),
        payout_minimum: money(&e.payout_minimum),
        recharge: RechargeTerms {
            custom_min_coins: e.custom_min_coins,
            custom_max_coins: e.custom_max_coins,
        },
        gifts: e
            .gifts
            .iter()
            .enumerate()
            .map(|(code, g)| CatalogGift {
                code: code as u32,
                id: g.id.clone(),
                name: g.name.clone(),
                coins: g.coins,
                retired: g.retired,
            })
            .collect(),
        packages: e
            .packages
            .iter()
            .enumerate()
            .map(|(code, p)| CatalogPackage {
                code: code as u32,
                id: p.id.clone(),
                coins: p.coins,
                prices: money(&p.prices),
                retired: p.retired,
            })
            .collect(),
        items: e
            .items
            .iter()
            .enumerate()
            .map(|(code, i)| CatalogItem {
                code: code as u32,
                id: i.id.clone(),
                name: i.name.clone(),
                coins: i.coins,
                retired: i.retired,
            })
            .collect(),
        spending_caps: SpendingCaps {
            daily_coins: e.daily_cap_coins,
            weekly_coins: e.weekly_cap_coins,
        },
        promotions: e
            .promotions
            .iter()
            .map(|p| CatalogPromotion {
                id: p.id.clone(),
                package: p.package.clone(),
                start: format_time(p.start_ms),
                end: format_time(p.end_ms),
                bonus_coins: p.bonus_coins,
                prices: money(&p.prices),
                regions: p.regions.iter().map(|r| r.to_string()).collect(),
                channels: p.channels.iter().map(|c| c.as_str().to_owned()).collect(),
            })
            .collect(),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PackagesQuery {
    /// The user's region (ISO 3166-1 alpha-2); absent: a user without one.
    region: Option<String>,
    /// "app" (default) or "web".
    channel: Option<String>,
}

/// The coin packages a user would be offered now.
#[derive(Serialize, ToSchema)]
pub struct PackagesResponse {
    /// The server's time the terms are for (UTC ms).
    at_ms: u64,
    region: Option<String>,
    channel: String,
    packages: Vec<PackageOffer>,
}

/// One package on sale: the coins and prices a recharge naming it must carry now.
#[derive(Serialize, ToSchema)]
pub struct PackageOffer {
    id: String,
    code: u32,
    /// Coins a recharge of it gets now (the bonus included).
    coins: u64,
    /// Price per currency now.
    prices: BTreeMap<String, String>,
    /// The offer in force, if any.
    promotion: Option<PackageOfferPromotion>,
}

#[derive(Serialize, ToSchema)]
pub struct PackageOfferPromotion {
    id: String,
    bonus_coins: u64,
    /// RFC 3339 (UTC): when the offer ends (exclusive). A payment made before then is
    /// honoured on these terms when its recharge carries that `issued_ms`.
    end: String,
    /// The package's terms without the offer.
    regular_coins: u64,
    regular_prices: BTreeMap<String, String>,
}

/// What a user in `region` sees on `channel` now: each package on sale with the terms
/// in force (a promotion's bonus coins and prices applied).
#[utoipa::path(get, path = "/v1/economy/packages", tag = "economy", security(("bearer" = [])),
    params(PackagesQuery),
    responses((status = 200, body = PackagesResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_packages(
    State(service): State<Arc<Service>>,
    caller: Caller,
    q: Result<Query<PackagesQuery>, QueryRejection>,
) -> Result<Json<PackagesResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let Query(q) = q.map_err(|e| ApiError::parameter(e.body_text()))?;
    let region: Option<Region> = q
        .region
        .as_deref()
        .map(|r| {
            r.parse()
                .map_err(|e| ApiError::parameter(format!("region: {e}")))
        })
        .transpose()?;
    let channel: Channel = q
        .channel
        .as_deref()
        .unwrap_or("app")
        .parse()
        .map_err(|e| ApiError::parameter(format!("channel: {e}")))?;
    let economy = service.engine.economy();
    let at_ms = crate::clock::now().0;
    Ok(Json(packages_offered(&economy, region, channel, at_ms)))
}

pub(super) fn packages_offered(
    e: &Economy,
    region: Option<Region>,
    channel: Channel,
    at_ms: u64,
) -> PackagesResponse {
    let money = |m: &BTreeMap<Currency, Decimal>| -> BTreeMap<String, String> {
        m.iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect()
    };
    let packages = e
        .packages
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.retired)
        .map(|(code, p)| {
            let offer = e.offer(code as u32, region, channel, at_ms);
            let mut prices = p.prices.clone();
            if let Some(o) = offer {
                prices.extend(o.prices.iter().map(|(c, v)| (*c, *v)));
            }
            PackageOffer {
                id: p.id.clone(),
                code: code as u32,
                coins: p.coins + offer.map_or(0, |o| o.bonus_coins),
                prices: money(&prices),
                promotion: offer.map(|o| PackageOfferPromotion {
                    id: o.id.clone(),
                    bonus_coins: o.bonus_coins,
                    end: format_time(o.end_ms),
                    regular_coins: p.coins,
                    regular_prices: money(&p.prices),
                }),
            }
        })
        .collect();
    PackagesResponse {
        at_ms,
        region: region.map(|r| r.to_string()),
        channel: channel.as_str().to_owned(),
        packages,
    }
}

/// The economy in force: version, terms, and every catalog code (retired ones too).
#[utoipa::path(get, path = "/v1/economy", tag = "economy", security(("bearer" = [])),
    responses((status = 200, body = EconomyResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_economy(
    State(service): State<Arc<Service>>,
    caller: Caller,
) -> Result<Json<EconomyResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    Ok(Json(economy_response(&service.engine.economy())))
}
