//! The HTTP routes that write: `POST /v1/events` (a batch of recharges, gifts on
//! streams or videos, payouts, purchases, recharge and gift reversals), a user's
//! settings, a stream's goal and the economy in force. Every one applies events through
//! the engine and answers once the ack mode allows.
//!
//! Size: every event kind's JSON shape (its OpenAPI schema) sits beside its conversion
//! to the engine's event; split by kind, the batch parser would reach into each.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::economy::{EconomyResponse, economy_response};
use super::reads::{StreamResponse, stream_response};
use super::{ApiError, Caller, ErrorBody, authorize, currency, event_id, json, path, read_body};
use crate::config::{AckMode, Scope};
use crate::economy::{Economy, Region};
use crate::engine::{
    AccountSettings, BudgetCap, Channel, CreatorId, Effect, Event, EventId, Gift, GiftId,
    GiftReversal, ItemId, Outcome, PackageId, Payout, Purchase, Recharge, RechargeReversal,
    RejectCode, Status, StreamGoal, StreamId, UserId, VideoGift, VideoId,
};
use crate::server::Service;
use crate::server::ingest::{self, BatchError, Protocol, Rate};
use crate::telemetry;

// ---- events -------------------------------------------------------------------------

/// `POST /v1/events` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsRequest {
    events: Vec<JsonEvent>,
}

/// One event; `type` selects the kind.
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum JsonEvent {
    Recharge(JsonRecharge),
    Gift(JsonGift),
    Payout(JsonPayout),
    Purchase(JsonPurchase),
    #[serde(rename = "recharge_reversal")]
    RechargeReversal(JsonRechargeReversal),
    #[serde(rename = "gift_reversal")]
    GiftReversal(JsonGiftReversal),
}

impl JsonEvent {
    fn issued_ms(&self) -> u64 {
        match self {
            JsonEvent::Recharge(r) => r.issued_ms,
            JsonEvent::Gift(g) => g.issued_ms,
            JsonEvent::Payout(p) => p.issued_ms,
            JsonEvent::Purchase(p) => p.issued_ms,
            JsonEvent::RechargeReversal(r) => r.issued_ms,
            JsonEvent::GiftReversal(r) => r.issued_ms,
        }
        .unwrap_or(0)
    }
}

/// A validated `POST /v1/events` batch.
pub struct ParsedBatch {
    pub events: Vec<Event>,
    /// One per event: its `issued_ms`, 0 when not given.
    pub issued_ms: Vec<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonRecharge {
    /// When the backend created the event (UTC ms since the epoch), the same on every
    /// retry. An event issued longer ago than the retry horizon is answered
    /// EVENT_EXPIRED and not applied; without it, the event counts as issued when
    /// received (a retry after the horizon could then be applied again).
    #[serde(default)]
    issued_ms: Option<u64>,
    /// Client-chosen UUID: the idempotency key.
    event_id: String,
    user: u64,
    coins: u64,
    /// Price paid, a decimal string (e.g. "6.49").
    price: String,
    /// ISO 4217 code, e.g. "USD".
    currency: String,
    /// A package id of economy.toml; omit for a custom web amount. Coins and price must
    /// be the package's terms in force when the user paid (`issued_ms`, else when
    /// received): a promotion's bonus coins and price while one is in force for the
    /// user's region and the channel (`GET /v1/economy/packages`), else the package's.
    #[serde(default)]
    package: Option<String>,
    /// "app" (default) or "web".
    #[serde(default)]
    channel: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonGift {
    /// When the backend created the event (UTC ms since the epoch), the same on every
    /// retry. An event issued longer ago than the retry horizon is answered
    /// EVENT_EXPIRED and not applied; without it, the event counts as issued when
    /// received (a retry after the horizon could then be applied again).
    #[serde(default)]
    issued_ms: Option<u64>,
    event_id: String,
    sender: u64,
    creator: u64,
    /// The live stream the gift is sent in. A gift names exactly one of `stream` and
    /// `video` (both or neither: 422 INVALID_REQUEST, nothing applied).
    #[serde(default)]
    stream: Option<u64>,
    /// The video the gift is sent on: it counts for the creator and in the video's own
    /// totals (`GET /v1/videos/{id}`), never in a stream's goal or live feed.
    #[serde(default)]
    video: Option<u64>,
    /// Catalog id, e.g. "rose". An unknown id is the outcome UNKNOWN_GIFT.
    gift: String,
    count: u32,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonPayout {
    /// When the backend created the event (UTC ms since the epoch), the same on every
    /// retry. An event issued longer ago than the retry horizon is answered
    /// EVENT_EXPIRED and not applied; without it, the event counts as issued when
    /// received (a retry after the horizon could then be applied again).
    #[serde(default)]
    issued_ms: Option<u64>,
    event_id: String,
    creator: u64,
    diamonds: u64,
    currency: String,
}

/// Coins spent on an item of the economy's `items` catalog (a feature unlock, ...):
/// debited like a gift (the same account, monthly budget and funds checks), credited to
/// no creator.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonPurchase {
    /// When the backend created the event (UTC ms since the epoch), the same on every
    /// retry. An event issued longer ago than the retry horizon is answered
    /// EVENT_EXPIRED and not applied; without it, the event counts as issued when
    /// received (a retry after the horizon could then be applied again).
    #[serde(default)]
    issued_ms: Option<u64>,
    event_id: String,
    user: u64,
    /// Item id of the economy's `items`, e.g. "profile_frame". An unknown or retired id
    /// is the outcome UNKNOWN_ITEM.
    item: String,
    /// How many, 1..=max_gift_count (default 1); else the outcome INVALID_COUNT.
    #[serde(default = "one")]
    count: u32,
}

/// A chargeback (an unauthorized or disputed payment): takes back the coins of the
/// recharge `recharge`, once. Coins never go below zero: what the user already spent
/// becomes `coins_owed`, repaid first by later recharges; while it is owed, gifts and
/// purchases are rejected ACCOUNT_IN_DEBT. ORIGINAL_NOT_FOUND: `recharge` is not an
/// accepted recharge of this user within the economy's `recharge_reversal_window_ms`;
/// ALREADY_REVERSED: it was reversed before.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonRechargeReversal {
    /// When the backend created the event (UTC ms since the epoch), the same on every
    /// retry. An event issued longer ago than the retry horizon is answered
    /// EVENT_EXPIRED and not applied; without it, the event counts as issued when
    /// received (a retry after the horizon could then be applied again).
    #[serde(default)]
    issued_ms: Option<u64>,
    event_id: String,
    user: u64,
    /// The `event_id` (UUID) of the recharge to reverse.
    recharge: String,
}

/// A refund of a gift (`"type": "gift_reversal"`): the sender gets the gift's coins back
/// and the creator loses exactly the diamonds it credited — only while they are still
/// held by the earnings hold (`economy.earnings_hold_ms`). Outcomes: accepted with the
/// sender's balance after it (`coins`); ORIGINAL_NOT_FOUND (not a gift of this sender
/// the ledger knows), ALREADY_REVERSED, NOT_REVERSIBLE (the diamonds are released, or no
/// hold is in force). A gift on a video is reversed alike (the video's coins and top
/// gifters go down instead of a stream's). Applied after the batch's gifts and
/// recharges, as payouts are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonGiftReversal {
    /// When the backend created the event (UTC ms since the epoch), the same on every
    /// retry (see `recharge`).
    #[serde(default)]
    issued_ms: Option<u64>,
    event_id: String,
    /// The user who sent the gift (the reversal is routed by it).
    sender: u64,
    /// The reversed gift's `event_id` (a UUID).
    gift: String,
}

fn one() -> u32 {
    1
}

/// `POST /v1/events` response: one outcome per event, in request order.
#[derive(Serialize, ToSchema)]
pub struct EventsResponse {
    outcomes: Vec<JsonOutcome>,
}

#[derive(Serialize, ToSchema)]
pub struct JsonOutcome {
    event_id: String,
    /// "accepted" or "rejected".
    status: &'static str,
    /// Global sequence number of the event (of the original, for a duplicate).
    seq: u64,
    /// Reject code, when rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    /// BUDGET_EXCEEDED: the limit the gift or purchase would exceed — `monthly_budget`,
    /// `weekly_budget`, `daily_budget` (the user's own), `weekly_platform_cap`,
    /// `daily_platform_cap` (the economy's `[spending_caps]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cap: Option<&'static str>,
    /// A rejection's detail in words, when it has one (BUDGET_EXCEEDED names its cap).
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'static str>,
    /// Recharge, gift, purchase or recharge reversal: the user's coin balance after the
    /// event.
    /// Recharge, gift, purchase or gift reversal: the user's (sender's) coin balance
    /// after the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    coins: Option<u64>,
    /// Recharge reversal: the coins the user owes after it (what the reversed recharge
    /// could not take from the balance, plus any debt before).
    #[serde(skip_serializing_if = "Option::is_none")]
    coins_owed: Option<u64>,
    /// Payout: the creator's diamonds available after it.
    #[serde(skip_serializing_if = "Option::is_none")]
    diamonds_available: Option<u64>,
    /// Payout: the money paid out, decimal string.
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    /// True when this is the stored outcome of an earlier event with the same id.
    duplicate: bool,
}

fn json_outcome(id: EventId, o: &Outcome) -> JsonOutcome {
    let mut out = JsonOutcome {
        event_id: uuid::Uuid::from_u128(id.0).to_string(),
        status: if o.is_accepted() {
            "accepted"
        } else {
            "rejected"
        },
        seq: o.seq,
        code: o.code().map(RejectCode::as_str),
        cap: o.cap.map(BudgetCap::as_str),
        message: o.message(),
        coins: None,
        coins_owed: None,
        diamonds_available: None,
        value: None,
        duplicate: o.duplicate,
    };
    match o.status {
        Status::Accepted(Effect::Coins(c)) => out.coins = Some(c),
        Status::Accepted(Effect::Reversed { coins, owed }) => {
            out.coins = Some(coins);
            out.coins_owed = Some(owed);
        }
        Status::Accepted(Effect::PaidOut {
            diamonds_available,
            value,
        }) => {
            out.diamonds_available = Some(diamonds_available);
            out.value = Some(value.to_string());
        }
        _ => {}
    }
    out
}

fn to_event(economy: &Economy, i: usize, e: &JsonEvent) -> Result<Event, ApiError> {
    let at = format!("events[{i}]");
    Ok(match e {
        JsonEvent::Recharge(r) => {
            let price = Decimal::from_str_exact(r.price.trim())
                .map_err(|e| ApiError::invalid(format!("{at}.price: not a decimal ({e})")))?;
            let channel = match r.channel.as_deref() {
                None => Channel::App,
                Some(c) => c
                    .parse()
                    .map_err(|e| ApiError::invalid(format!("{at}.channel: {e}")))?,
            };
            Event::Recharge(Recharge {
                id: event_id(&r.event_id, &at)?,
                user: UserId(r.user),
                coins: r.coins,
                price,
                currency: currency(&r.currency, &at)?,
                // An unknown package is the outcome AMOUNT_OUT_OF_RANGE, not a request error.
                package: r
                    .package
                    .as_deref()
                    .map(|p| {
                        economy
                            .package_index(p)
                            .map_or(PackageId::UNKNOWN, PackageId)
                    })
                    .into(),
                channel,
                paid_ms: r.issued_ms.unwrap_or(0),
            })
        }
        JsonEvent::Gift(g) => {
            let id = event_id(&g.event_id, &at)?;
            let gift = economy.gift_index(&g.gift).map_or(GiftId::UNKNOWN, GiftId);
            match (g.stream, g.video) {
                (Some(stream), None) => Event::Gift(Gift {
                    id,
                    sender: UserId(g.sender),
                    creator: CreatorId(g.creator),
                    stream: StreamId(stream),
                    gift,
                    count: g.count,
                }),
                (None, Some(video)) => Event::VideoGift(VideoGift {
                    id,
                    sender: UserId(g.sender),
                    creator: CreatorId(g.creator),
                    video: VideoId(video),
                    gift,
                    count: g.count,
                }),
                (both, _) => {
                    let which = ["neither given", "not both"][usize::from(both.is_some())];
                    let why = format!("{at}: a gift names a `stream` or a `video`, {which}");
                    return Err(ApiError::invalid(why));
                }
            }
        }
        JsonEvent::Payout(p) => Event::Payout(Payout {
            id: event_id(&p.event_id, &at)?,
            creator: CreatorId(p.creator),
            diamonds: p.diamonds,
            currency: currency(&p.currency, &at)?,
        }),
        JsonEvent::Purchase(p) => Event::Purchase(Purchase {
            id: event_id(&p.event_id, &at)?,
            user: UserId(p.user),
            item: economy.item_index(&p.item).map_or(ItemId::UNKNOWN, ItemId),
            count: p.count,
        }),
        JsonEvent::RechargeReversal(r) => Event::RechargeReversal(RechargeReversal {
            id: event_id(&r.event_id, &at)?,
            user: UserId(r.user),
            recharge: uuid::Uuid::parse_str(&r.recharge)
                .map(|u| EventId(u.as_u128()))
                .map_err(|e| ApiError::invalid(format!("{at}.recharge: not a UUID ({e})")))?,
        }),
        JsonEvent::GiftReversal(r) => Event::GiftReversal(GiftReversal::new(
            event_id(&r.event_id, &at)?,
            UserId(r.sender),
            uuid::Uuid::parse_str(&r.gift)
                .map(|u| EventId(u.as_u128()))
                .map_err(|e| ApiError::invalid(format!("{at}.gift: not a UUID ({e})")))?,
        )),
    })
}

/// Applies validated events and waits for durability when the ack mode says so.
pub(super) async fn apply(
    service: &Service,
    events: &[Event],
    issued_ms: &[u64],
) -> Result<Vec<Outcome>, ApiError> {
    let admitted = ingest::admit(service, Rate::Paid, events, issued_ms, Protocol::Http)?;
    if service.config.server.ack == AckMode::Durable {
        service
            .commits
            .durable(admitted.wait_seq)
            .await
            .map_err(|_| ApiError::not_durable())?;
    }
    Ok(admitted.outcomes)
}

/// Apply a batch of recharges, gifts, payouts, purchases and reversals.
///
/// The batch is validated as a whole first: one malformed event and nothing is applied.
/// Rule violations (unknown gift, insufficient coins, ...) are outcomes, not errors.
///
/// Order: the sender events (recharges, gifts, purchases, recharge reversals) are
/// applied first, in batch order per sender; then payouts, stream goals and gift
/// reversals, in batch order; `seq` records the order applied, and outcomes come back in
/// batch order. So a gift placed after a `gift_reversal` in the same batch does not see
/// the refund (`INSUFFICIENT_COINS` if it needs those coins); in a later batch it does
/// (PROTOCOL.md "Order within a request").
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body = EventsRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One outcome per event, in order", body = EventsResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or unknown token", body = ErrorBody),
        (status = 403, description = "Token without the ingest scope", body = ErrorBody),
        (status = 408, description = "The body did not arrive within limits.http_body_read_timeout_ms (code BODY_TIMEOUT); nothing applied", body = ErrorBody),
        (status = 413, description = "Body or batch too large", body = ErrorBody),
        (status = 422, description = "Well-formed JSON of the wrong shape, or an empty batch", body = ErrorBody),
        (status = 429, description = "The token's request rate is spent (RATE_LIMITED), or the caller's address failed to authenticate too often (AUTH_RATE_LIMITED, any route, with Retry-After); nothing applied", body = ErrorBody),
        (status = 421, description = "A cluster node does not own an event's partition (code WRONG_PARTITION, the message names the owner); nothing applied", body = ErrorBody),
        (status = 503, description = "Storage unavailable (UNAVAILABLE), or too many requests in progress (OVERLOADED, any /v1 route, with Retry-After); nothing applied", body = ErrorBody),
    ))]
pub(super) async fn post_events(
    State(service): State<Arc<Service>>,
    caller: Caller,
    body: Body,
) -> Result<Json<EventsResponse>, ApiError> {
    let received = Instant::now();
    authorize(&service, &caller, Scope::Ingest)?;
    let limits = &service.config.limits;
    let bytes = read_body(&service, &caller, body).await?;
    let ParsedBatch { events, issued_ms } = parse_events(
        &bytes,
        &service.engine.economy(),
        limits.http_events_per_batch_max,
    )?;
    let outcomes = apply(&service, &events, &issued_ms).await?;
    let outcomes = events
        .iter()
        .zip(&outcomes)
        .map(|(e, o)| json_outcome(e.id(), o))
        .collect();
    metrics::histogram!(telemetry::INGEST_DURATION_SECONDS, "protocol" => "http")
        .record(received.elapsed().as_secs_f64());
    Ok(Json(EventsResponse { outcomes }))
}

/// Parses and validates a whole `POST /v1/events` body: JSON shape, batch size, every
/// event (the JSON fuzz target drives this).
pub fn parse_events(
    bytes: &[u8],
    economy: &Economy,
    events_max: usize,
) -> Result<ParsedBatch, ApiError> {
    let request: EventsRequest = json(bytes)?;
    ingest::check_batch_len(request.events.len(), events_max, Protocol::Http).map_err(
        |e| match e {
            BatchError::Empty => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "EMPTY_BATCH",
                "events is empty",
            ),
            BatchError::TooLarge { events, max } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BATCH_TOO_LARGE",
                format!("{events} events; at most {max}"),
            ),
        },
    )?;
    let events = request
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| to_event(economy, i, e))
        .collect::<Result<_, _>>()?;
    let issued_ms = request.events.iter().map(JsonEvent::issued_ms).collect();
    Ok(ParsedBatch { events, issued_ms })
}

// ---- users --------------------------------------------------------------------------

/// `PUT /v1/users/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserSettings {
    /// ISO 3166-1 alpha-2 region, or null.
    #[serde(default)]
    region: Option<String>,
    /// Minors can neither recharge nor gift. Default true.
    #[serde(default = "yes")]
    adult: bool,
    /// Coins that gifts may spend per calendar month (UTC); null = no budget.
    #[serde(default)]
    monthly_budget_coins: Option<u64>,
    /// Coins that gifts may spend per UTC day; null = no budget. At most 4294967295
    /// (else the setting is rejected with AMOUNT_OUT_OF_RANGE, 422).
    #[serde(default)]
    daily_budget_coins: Option<u64>,
    /// Coins that gifts may spend per ISO week (Monday to Sunday, UTC); null = no
    /// budget. At most 4294967295.
    #[serde(default)]
    weekly_budget_coins: Option<u64>,
    /// Optional UUID making the change idempotent; generated when absent.
    #[serde(default)]
    event_id: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    user: u64,
    region: Option<String>,
    adult: bool,
    monthly_budget_coins: Option<u64>,
    daily_budget_coins: Option<u64>,
    weekly_budget_coins: Option<u64>,
    seq: u64,
    duplicate: bool,
}

/// Set a user's region, adult flag and monthly, weekly and daily budgets (journaled like
/// any event; each setting replaces all of them: a budget left out is none).
#[utoipa::path(put, path = "/v1/users/{id}", tag = "users",
    params(("id" = u64, Path, description = "User id")),
    request_body = UserSettings, security(("bearer" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, description = "Invalid body, or the setting was rejected (code AMOUNT_OUT_OF_RANGE: a daily or weekly budget over 4294967295)", body = ErrorBody),
        (status = 409, description = "event_id was used by an event with other content (code EVENT_ID_REUSED); nothing applied", body = ErrorBody),
        (status = 421, description = "A cluster node does not own an event's partition (code WRONG_PARTITION, the message names the owner); nothing applied", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub(super) async fn put_user(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    body: Body,
) -> Result<Json<UserResponse>, ApiError> {
    authorize(&service, &caller, Scope::Ingest)?;
    let user = UserId(path(id)?);
    let s: UserSettings = json(&read_body(&service, &caller, body).await?)?;
    let region: Option<Region> = match &s.region {
        Some(r) => Some(
            r.parse()
                .map_err(|e| ApiError::invalid(format!("region: {e}")))?,
        ),
        None => None,
    };
    let id = match &s.event_id {
        Some(id) => event_id(id, "body")?,
        None => EventId(uuid::Uuid::new_v4().as_u128()),
    };
    let event = Event::Account(AccountSettings {
        id,
        user,
        region,
        adult: s.adult,
        monthly_budget_coins: s.monthly_budget_coins.into(),
        daily_budget_coins: s.daily_budget_coins.into(),
        weekly_budget_coins: s.weekly_budget_coins.into(),
    });
    let o = apply(&service, &[event], &[]).await?[0];
    ApiError::refusal(&o)?;
    if let Some(code) = o.code() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code.as_str(),
            format!(
                "a daily or weekly budget is at most {} coins",
                crate::engine::WINDOW_LIMIT_COINS_MAX
            ),
        ));
    }
    Ok(Json(UserResponse {
        user: user.0,
        region: region.map(|r| r.to_string()),
        adult: s.adult,
        monthly_budget_coins: s.monthly_budget_coins,
        daily_budget_coins: s.daily_budget_coins,
        weekly_budget_coins: s.weekly_budget_coins,
        seq: o.seq,
        duplicate: o.duplicate,
    }))
}

// ---- economy ------------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct EconomyChangeResponse {
    /// The version in force after the request.
    version: u32,
    /// The change's sequence number (0 when the terms were in force already).
    seq: u64,
    /// False when the body's terms were in force already (nothing journaled).
    changed: bool,
    economy: EconomyResponse,
}

/// Puts a new economy in force (admin): the body is economy.toml's content as JSON,
/// validated whole. It applies to events numbered after the change (journaled with its
/// own sequence number); diamonds already credited never change. Catalog entries keep
/// their codes; an entry left out is retired. Answered once durable.
#[utoipa::path(put, path = "/v1/economy", tag = "economy", security(("bearer" = [])),
    request_body(content = Object, description = "economy.toml's keys as JSON: creator_share, restricted_regions, max_gift_count, earnings_hold_ms, diamond_value, payout_minimum, recharge, gifts, packages, items (optional), promotions (optional)"),
    responses((status = 200, body = EconomyChangeResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, description = "Invalid economy (the message names the key); nothing changed", body = ErrorBody), (status = 503, body = ErrorBody)))]
pub(super) async fn put_economy(
    State(service): State<Arc<Service>>,
    caller: Caller,
    body: Body,
) -> Result<Json<EconomyChangeResponse>, ApiError> {
    authorize(&service, &caller, Scope::Admin)?;
    let file: crate::economy::EconomyFile = json(&read_body(&service, &caller, body).await?)?;
    let changed = service.change_economy(file).await.map_err(|e| match e {
        crate::server::EconomyChangeError::Invalid(e) => ApiError::invalid(e.to_string()),
        crate::server::EconomyChangeError::Unavailable(m) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", m)
        }
    })?;
    Ok(Json(EconomyChangeResponse {
        version: changed.version,
        seq: changed.seq,
        changed: changed.changed,
        economy: economy_response(&service.engine.economy()),
    }))
}

// ---- streams ------------------------------------------------------------------------

/// `PUT /v1/streams/{id}/goal` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GoalRequest {
    creator: u64,
    /// Coins the stream aims to receive; at least 1.
    coins_target: u64,
    /// Optional UUID making the change idempotent; generated when absent.
    #[serde(default)]
    event_id: Option<String>,
}

/// Set a stream's coin goal (journaled like any event).
#[utoipa::path(put, path = "/v1/streams/{id}/goal", tag = "streams",
    params(("id" = u64, Path, description = "Stream id")), request_body = GoalRequest, security(("bearer" = [])),
    responses(
        (status = 200, body = StreamResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 422, description = "Invalid body, or the goal was rejected (code AMOUNT_OUT_OF_RANGE)", body = ErrorBody),
        (status = 409, description = "event_id was used by an event with other content (code EVENT_ID_REUSED); nothing applied", body = ErrorBody),
        (status = 421, description = "A cluster node does not own an event's partition (code WRONG_PARTITION, the message names the owner); nothing applied", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub(super) async fn put_goal(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    body: Body,
) -> Result<Json<StreamResponse>, ApiError> {
    authorize(&service, &caller, Scope::Ingest)?;
    let stream = StreamId(path(id)?);
    let g: GoalRequest = json(&read_body(&service, &caller, body).await?)?;
    let id = match &g.event_id {
        Some(id) => event_id(id, "body")?,
        None => EventId(uuid::Uuid::new_v4().as_u128()),
    };
    let event = Event::StreamGoal(StreamGoal {
        id,
        stream,
        creator: CreatorId(g.creator),
        coins_target: g.coins_target,
    });
    let o = apply(&service, &[event], &[]).await?[0];
    ApiError::refusal(&o)?;
    if let Some(code) = o.code() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code.as_str(),
            "coins_target must be at least 1",
        ));
    }
    Ok(Json(stream_response(&service, stream)))
}
