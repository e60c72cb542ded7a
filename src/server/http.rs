//! The HTTP/JSON API (SPEC §2.2): routes, shapes, errors, and the OpenAPI document
//! generated from these very types and handlers (utoipa), so it cannot drift.
//!
//! Auth: `Authorization: Bearer <token>`; `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` are open (they reveal no ledger data). Errors are
//! `{"error": {"code": "...", "message": "..."}}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::BytesMut;
use futures::{Stream, StreamExt};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::Service;
use super::auth::{Auth, AuthError};
use super::http_conn::Peer;
use super::sse::FeedMessage;
use crate::config::{AckMode, Scope};
use crate::economy::{Currency, Economy, Region};
use crate::engine::{
    AccountSettings, Channel, CreatorId, Effect, Event, EventId, Gift, GiftId, Outcome, PackageId,
    Payout, Recharge, RejectCode, Status, StreamGoal, StreamId, UserId,
};
use crate::telemetry;

// ---- errors -------------------------------------------------------------------------

/// An API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Seconds for a `Retry-After` header.
    retry_after_s: Option<u64>,
}

impl ApiError {
    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable error code (`MALFORMED_JSON`, `INVALID_REQUEST`, ...).
    pub fn code(&self) -> &'static str {
        self.code
    }
}

/// `{"error": {"code": "...", "message": "..."}}`
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: MALFORMED_JSON, INVALID_REQUEST, EMPTY_BATCH, BATCH_TOO_LARGE,
    /// BODY_TOO_LARGE, BODY_TIMEOUT, INVALID_PARAMETER, UNAUTHORIZED, FORBIDDEN,
    /// AUTH_RATE_LIMITED, RATE_LIMITED, NOT_FOUND, METHOD_NOT_ALLOWED,
    /// TOO_MANY_SUBSCRIBERS, OVERLOADED, UNAVAILABLE, CONNECTION_LIMIT, or a reject code
    /// for a rejected PUT.
    code: String,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    fn retry_after(mut self, after: Duration) -> Self {
        // Whole seconds, rounded up: a client that waits that long is not refused again.
        self.retry_after_s = Some(after.as_secs() + u64::from(after.subsec_nanos() > 0));
        self
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "INVALID_REQUEST", message)
    }
    fn parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_PARAMETER", message)
    }
    fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "commits are behind (storage unavailable); retry later — nothing was applied",
        )
    }

    /// The events were applied but could not be made durable (commits stopped): the
    /// client retries with the same event ids and gets their outcomes once committed.
    fn not_durable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "applied but not confirmed durable (storage unavailable); retry with the same event ids later",
        )
    }

    /// The answers that record nothing, as errors of the single-event routes (user
    /// settings, goals).
    fn refusal(o: &Outcome) -> Result<(), Self> {
        match o.code() {
            Some(RejectCode::EventIdReused) => Err(Self::new(
                StatusCode::CONFLICT,
                "EVENT_ID_REUSED",
                "event_id was used by an event with other content; nothing was applied",
            )),
            Some(RejectCode::Unavailable) => Err(Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                "the idempotency index is full of ids younger than the retry horizon; retry later — nothing was applied",
            )),
            Some(RejectCode::EventExpired) => Err(Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "EVENT_EXPIRED",
                "the event may be a retry of one whose id is already forgotten; nothing was applied",
            )),
            _ => Ok(()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!(telemetry::REQUEST_ERRORS_TOTAL, "code" => self.code).increment(1);
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        response
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "missing or unknown bearer token",
            ),
            AuthError::Forbidden => ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "the token lacks the scope this route needs",
            ),
            AuthError::PeerLimited { retry_after } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "AUTH_RATE_LIMITED",
                "too many failed authentications from this address \
                 (limits.auth_failures_per_peer_max): refused, whatever the token, until \
                 Retry-After has passed",
            )
            .retry_after(retry_after),
        }
    }
}

/// Who sent a request: its headers (the token) and its peer's address (set by
/// `http_conn` on every request; `None` when the router is driven some other way).
pub struct Caller {
    headers: HeaderMap,
    peer: Option<IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, Infallible> {
        Ok(Caller {
            headers: parts.headers.clone(),
            peer: parts.extensions.get::<Peer>().map(|p| p.0.ip()),
        })
    }
}

/// Checks the caller's token for `scope` before anything else of the request is read
/// (its body included): an address over its failed-auth budget is refused without its
/// token being looked at.
fn authorize(service: &Service, caller: &Caller, scope: Scope) -> Result<(), ApiError> {
    let header = caller
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let token = service
        .auth
        .check_from(caller.peer, Auth::bearer(header), scope)?;
    if !service.auth.allow(token) {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "token_rate").increment(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RATE_LIMITED",
            "this token's request rate (limits.token_requests_per_second) is spent: retry later",
        ));
    }
    Ok(())
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::parameter(e.body_text()))
}

/// Reads a request's body — call it once the caller is authorized: at most
/// `limits.http_body_bytes_max` (413 at once when Content-Length says more), within
/// `limits.http_body_read_timeout_ms` (408 `BODY_TIMEOUT`; hyper then closes the
/// connection, the rest of the body unread).
async fn read_body(service: &Service, caller: &Caller, body: Body) -> Result<Bytes, ApiError> {
    let limits = &service.config.limits;
    let max = limits.http_body_bytes_max;
    let too_large = || {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "http_body_bytes")
            .increment(1);
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            format!("body over {max} bytes"),
        )
    };
    let declared = caller
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut chunks = body.into_data_stream();
        let mut bytes = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "MALFORMED_JSON",
                    format!("reading the body: {e}"),
                )
            })?;
            if bytes.len() + chunk.len() > max {
                return Err(too_large());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes.freeze())
    };
    let timeout = Duration::from_millis(limits.http_body_read_timeout_ms);
    tokio::time::timeout(timeout, read).await.unwrap_or_else(|_| {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "http_body_read_timeout")
            .increment(1);
        Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "BODY_TIMEOUT",
            format!(
                "the body did not arrive within {} ms (limits.http_body_read_timeout_ms)",
                limits.http_body_read_timeout_ms
            ),
        ))
    })
}

/// Parses JSON: broken syntax is 400, the wrong shape 422.
fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::invalid(e.to_string()),
        _ => ApiError::new(StatusCode::BAD_REQUEST, "MALFORMED_JSON", e.to_string()),
    })
}

fn event_id(s: &str, at: &str) -> Result<EventId, ApiError> {
    uuid::Uuid::parse_str(s)
        .map(|u| EventId(u.as_u128()))
        .map_err(|e| ApiError::invalid(format!("{at}.event_id: not a UUID ({e})")))
}

fn currency(s: &str, at: &str) -> Result<Currency, ApiError> {
    s.parse()
        .map_err(|e| ApiError::invalid(format!("{at}.currency: {e}")))
}

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
}

impl JsonEvent {
    fn issued_ms(&self) -> u64 {
        match self {
            JsonEvent::Recharge(r) => r.issued_ms,
            JsonEvent::Gift(g) => g.issued_ms,
            JsonEvent::Payout(p) => p.issued_ms,
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
    /// A package id of economy.toml; omit for a custom web amount.
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
    stream: u64,
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
    /// Recharge or gift: the user's coin balance after the event.
    #[serde(skip_serializing_if = "Option::is_none")]
    coins: Option<u64>,
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
        coins: None,
        diamonds_available: None,
        value: None,
        duplicate: o.duplicate,
    };
    match o.status {
        Status::Accepted(Effect::Coins(c)) => out.coins = Some(c),
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
                None | Some("app") => Channel::App,
                Some("web") => Channel::Web,
                Some(other) => {
                    return Err(ApiError::invalid(format!(
                        "{at}.channel: {other:?} is not app or web"
                    )));
                }
            };
            Event::Recharge(Recharge {
                id: event_id(&r.event_id, &at)?,
                user: UserId(r.user),
                coins: r.coins,
                price,
                currency: currency(&r.currency, &at)?,
                // An unknown package is the outcome AMOUNT_OUT_OF_RANGE, not a request error.
                package: r.package.as_deref().map(|p| {
                    economy
                        .package_index(p)
                        .map_or(PackageId::UNKNOWN, PackageId)
                }),
                channel,
            })
        }
        JsonEvent::Gift(g) => Event::Gift(Gift {
            id: event_id(&g.event_id, &at)?,
            sender: UserId(g.sender),
            creator: CreatorId(g.creator),
            stream: StreamId(g.stream),
            gift: economy.gift_index(&g.gift).map_or(GiftId::UNKNOWN, GiftId),
            count: g.count,
        }),
        JsonEvent::Payout(p) => Event::Payout(Payout {
            id: event_id(&p.event_id, &at)?,
            creator: CreatorId(p.creator),
            diamonds: p.diamonds,
            currency: currency(&p.currency, &at)?,
        }),
    })
}

/// A cluster node answers a user's wallet and history only for its own partitions:
/// another node's user gets 421 `WRONG_PARTITION` naming the owner (not an empty wallet).
fn owned_user(service: &Service, user: UserId) -> Result<(), ApiError> {
    match &service.partitions {
        Some(map) => map.check_key(user.0).map_err(|w| {
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "WRONG_PARTITION",
                format!(
                    "user {} is in partition {}, owned by node {} (http {}); ask it",
                    user.0, w.partition, w.node, w.http_addr
                ),
            )
        }),
        None => Ok(()),
    }
}

/// Applies validated events and waits for durability when the ack mode says so.
async fn apply(
    service: &Service,
    events: &[Event],
    issued_ms: &[u64],
) -> Result<Vec<Outcome>, ApiError> {
    service.check_partitions(events, "http").map_err(|wrong| {
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "WRONG_PARTITION",
            wrong.to_string(),
        )
    })?;
    if !service.commits.accepting() {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "pending_commit_events")
            .increment(1);
        return Err(ApiError::unavailable());
    }
    let outcomes = service.apply(events, issued_ms, "http");
    if service.config.server.ack == AckMode::Durable {
        let seq = outcomes.iter().map(|o| o.seq).max().unwrap_or(0);
        service
            .commits
            .durable(seq)
            .await
            .map_err(|_| ApiError::not_durable())?;
    }
    Ok(outcomes)
}

/// Apply a batch of recharges, gifts and payouts.
///
/// The batch is validated as a whole first: one malformed event and nothing is applied.
/// Rule violations (unknown gift, insufficient coins, ...) are outcomes, not errors.
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
async fn post_events(
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
    if request.events.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "EMPTY_BATCH",
            "events is empty",
        ));
    }
    if request.events.len() > events_max {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "http_events_per_batch")
            .increment(1);
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BATCH_TOO_LARGE",
            format!("{} events; at most {}", request.events.len(), events_max),
        ));
    }
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
    seq: u64,
    duplicate: bool,
}

/// Set a user's region, adult flag and monthly budget (journaled like any event).
#[utoipa::path(put, path = "/v1/users/{id}", tag = "users",
    params(("id" = u64, Path, description = "User id")),
    request_body = UserSettings, security(("bearer" = [])),
    responses(
        (status = 200, body = UserResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 409, description = "event_id was used by an event with other content (code EVENT_ID_REUSED); nothing applied", body = ErrorBody),
        (status = 421, description = "A cluster node does not own an event's partition (code WRONG_PARTITION, the message names the owner); nothing applied", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
async fn put_user(
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
        monthly_budget_coins: s.monthly_budget_coins,
    });
    let o = apply(&service, &[event], &[]).await?[0];
    ApiError::refusal(&o)?;
    Ok(Json(UserResponse {
        user: user.0,
        region: region.map(|r| r.to_string()),
        adult: s.adult,
        monthly_budget_coins: s.monthly_budget_coins,
        seq: o.seq,
        duplicate: o.duplicate,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct WalletResponse {
    user: u64,
    coins: u64,
    /// Coins spent on gifts in the current calendar month (UTC).
    spent_this_month: u64,
    monthly_budget_coins: Option<u64>,
    region: Option<String>,
    adult: bool,
}

/// A user's coins, spending this month and budget.
#[utoipa::path(get, path = "/v1/users/{id}/wallet", tag = "users",
    params(("id" = u64, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, body = WalletResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 421, description = "A cluster node asked for another node's user (code WRONG_PARTITION, the message names the owner)", body = ErrorBody)))]
async fn get_wallet(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<WalletResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let user = UserId(path(id)?);
    owned_user(&service, user)?;
    let w = service.engine.wallet(user, service.clock.now());
    Ok(Json(WalletResponse {
        user: w.user.0,
        coins: w.coins,
        spent_this_month: w.spent_this_month,
        monthly_budget_coins: w.monthly_budget_coins,
        region: w.region.map(|r| r.to_string()),
        adult: w.adult,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// How many entries (default 20 for transactions, 10 for leaderboards).
    limit: Option<usize>,
}

fn limit(
    q: Result<Query<LimitQuery>, QueryRejection>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::parameter(e.body_text()))?;
    let limit = q.limit.unwrap_or(default.min(max.max(1)));
    if limit == 0 || limit > max.max(1) {
        return Err(ApiError::parameter(format!(
            "limit must be in 1..={}",
            max.max(1)
        )));
    }
    Ok(limit)
}

#[derive(Serialize, ToSchema)]
pub struct TransactionsResponse {
    entries: Vec<TransactionEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct TransactionEntry {
    event_id: String,
    /// "recharge" or "gift".
    #[serde(rename = "type")]
    kind: &'static str,
    seq: u64,
    /// "accepted" or "rejected".
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    /// Change of the coin balance (0 when rejected).
    #[schema(value_type = i64)]
    coins_delta: i128,
    /// When the event was applied, ms since the Unix epoch (UTC).
    time_ms: u64,
}

/// A user's recent history with outcomes, newest first.
#[utoipa::path(get, path = "/v1/users/{id}/transactions", tag = "users",
    params(("id" = u64, Path, description = "User id"), LimitQuery), security(("bearer" = [])),
    responses((status = 200, body = TransactionsResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 421, description = "A cluster node asked for another node's user (code WRONG_PARTITION, the message names the owner)", body = ErrorBody)))]
async fn get_transactions(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<TransactionsResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let user = UserId(path(id)?);
    owned_user(&service, user)?;
    let limit = limit(q, 20, service.config.engine.history_per_user)?;
    let entries = service
        .engine
        .history(user, limit)
        .into_iter()
        .map(|h| TransactionEntry {
            event_id: uuid::Uuid::from_u128(h.event_id.0).to_string(),
            kind: h.kind.as_str(),
            seq: h.seq,
            status: if h.code.is_none() {
                "accepted"
            } else {
                "rejected"
            },
            code: h.code.map(RejectCode::as_str),
            coins_delta: h.coins_delta,
            time_ms: h.stamp.0,
        })
        .collect();
    Ok(Json(TransactionsResponse { entries }))
}

// ---- creators and streams -----------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct CreatorResponse {
    creator: u64,
    /// Whole diamonds credited: floor(coins received x creator share).
    #[schema(value_type = u64)]
    diamonds_total: u128,
    #[schema(value_type = u64)]
    diamonds_available: u128,
    /// The fraction of a diamond carried over, decimal string in [0, 1).
    diamond_fraction: String,
    #[schema(value_type = u64)]
    coins_received: u128,
    /// Gift counts by catalog id.
    #[schema(value_type = BTreeMap<String, u64>)]
    gifts: BTreeMap<String, u128>,
}

/// A creator's diamonds, coins received and gift counts.
#[utoipa::path(get, path = "/v1/creators/{id}", tag = "creators",
    params(("id" = u64, Path, description = "Creator id")), security(("bearer" = [])),
    responses((status = 200, body = CreatorResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_creator(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<CreatorResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let mut c = service.engine.creator(CreatorId(path(id)?));
    if let Some(merged) = shared_hash(
        &service,
        read_layout(&service).creator(c.creator),
        &["coins_received", "diamonds_total", "diamonds_available"],
    )
    .await?
    {
        [c.coins_received, c.diamonds_total, c.diamonds_available] =
            [0, 1, 2].map(|i| merged[i].unwrap_or_default());
    }
    let catalog = &service.engine.economy().gifts;
    Ok(Json(CreatorResponse {
        creator: c.creator.0,
        diamonds_total: c.diamonds_total,
        diamonds_available: c.diamonds_available,
        diamond_fraction: c.diamond_fraction.to_string(),
        coins_received: c.coins_received,
        gifts: c
            .gifts
            .iter()
            .filter_map(|(g, n)| catalog.get(g.0 as usize).map(|s| (s.id.clone(), *n)))
            .collect(),
    }))
}

// ---- economy ------------------------------------------------------------------------

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
    restricted_regions: Vec<String>,
    diamond_value: BTreeMap<String, String>,
    payout_minimum: BTreeMap<String, String>,
    recharge: RechargeTerms,
    gifts: Vec<CatalogGift>,
    packages: Vec<CatalogPackage>,
}

fn economy_response(e: &Economy) -> EconomyResponse {
    let money = |m: &BTreeMap<Currency, Decimal>| -> BTreeMap<String, String> {
        m.iter()
            .map(|(c, v)| (c.to_string(), v.to_string()))
            .collect()
    };
    EconomyResponse {
        version: e.version,
        creator_share: e.creator_share.to_string(),
        max_gift_count: e.max_gift_count,
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
    }
}

/// The economy in force: version, terms, and every catalog code (retired ones too).
#[utoipa::path(get, path = "/v1/economy", tag = "economy", security(("bearer" = [])),
    responses((status = 200, body = EconomyResponse), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_economy(
    State(service): State<Arc<Service>>,
    caller: Caller,
) -> Result<Json<EconomyResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    Ok(Json(economy_response(&service.engine.economy())))
}

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
    request_body(content = Object, description = "economy.toml's keys as JSON: creator_share, restricted_regions, max_gift_count, diamond_value, payout_minimum, recharge, gifts, packages"),
    responses((status = 200, body = EconomyChangeResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, description = "Invalid economy (the message names the key); nothing changed", body = ErrorBody), (status = 503, body = ErrorBody)))]
async fn put_economy(
    State(service): State<Arc<Service>>,
    caller: Caller,
    body: Body,
) -> Result<Json<EconomyChangeResponse>, ApiError> {
    authorize(&service, &caller, Scope::Admin)?;
    let file: crate::economy::EconomyFile = json(&read_body(&service, &caller, body).await?)?;
    let changed = service.change_economy(file).await.map_err(|e| match e {
        super::EconomyChangeError::Invalid(e) => ApiError::invalid(e.to_string()),
        super::EconomyChangeError::Unavailable(m) => {
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

#[derive(Serialize, ToSchema)]
pub struct TopGiftersResponse {
    entries: Vec<GifterEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct GifterEntry {
    user: u64,
    #[schema(value_type = u64)]
    coins: u128,
}

/// Where the shared read model's keys are.
fn read_layout(service: &Service) -> crate::persist::read_model::Layout {
    crate::persist::read_model::Layout::of(&service.config.read_model)
}

/// A cluster node reads leaderboards and totals from the shared read model (every
/// partition, as of the read model's lag); `None` on a single node.
async fn shared_top(
    service: &Service,
    key: String,
    limit: usize,
) -> Result<Option<Vec<(u64, u128)>>, ApiError> {
    let Some(conn) = &service.shared_reads else {
        return Ok(None);
    };
    let top: Vec<(u64, f64)> = redis::cmd("ZREVRANGE")
        .arg(key)
        .arg(0)
        .arg(limit.saturating_sub(1))
        .arg("WITHSCORES")
        .query_async(&mut conn.clone())
        .await
        .map_err(shared_read_error)?;
    Ok(Some(top.into_iter().map(|(m, s)| (m, s as u128)).collect()))
}

/// The fields of a read-model hash (each `None` when absent); `None` on a single node.
async fn shared_hash(
    service: &Service,
    key: String,
    fields: &[&str],
) -> Result<Option<Vec<Option<u128>>>, ApiError> {
    let Some(conn) = &service.shared_reads else {
        return Ok(None);
    };
    let values: Vec<Option<i128>> = redis::cmd("HMGET")
        .arg(key)
        .arg(fields)
        .query_async(&mut conn.clone())
        .await
        .map_err(shared_read_error)?;
    // A merged sum can be briefly negative: an owner's payout of diamonds another node
    // credited (a settlement) may reach the read model before that node's credit does.
    Ok(Some(
        values
            .into_iter()
            .map(|v| v.map(|v| u128::try_from(v).unwrap_or(0)))
            .collect(),
    ))
}

fn shared_read_error(e: redis::RedisError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        format!("the shared read model cannot be read: {e}"),
    )
}

fn gifters(list: Vec<(UserId, u128)>) -> Json<TopGiftersResponse> {
    Json(TopGiftersResponse {
        entries: list
            .into_iter()
            .map(|(u, coins)| GifterEntry { user: u.0, coins })
            .collect(),
    })
}

/// Top gifters of a creator, by coins gifted, best first.
#[utoipa::path(get, path = "/v1/creators/{id}/top-gifters", tag = "leaderboards",
    params(("id" = u64, Path, description = "Creator id"), LimitQuery), security(("bearer" = [])),
    responses((status = 200, body = TopGiftersResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_creator_top(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<TopGiftersResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let creator = CreatorId(path(id)?);
    let limit = limit(q, 10, service.config.engine.top_k)?;
    let key = read_layout(&service).creator_top(creator);
    if let Some(top) = shared_top(&service, key, limit).await? {
        return Ok(gifters(
            top.into_iter().map(|(u, c)| (UserId(u), c)).collect(),
        ));
    }
    Ok(gifters(service.engine.creator_top_gifters(creator, limit)))
}

/// Top gifters in a stream, by coins gifted, best first.
#[utoipa::path(get, path = "/v1/streams/{id}/top-gifters", tag = "leaderboards",
    params(("id" = u64, Path, description = "Stream id"), LimitQuery), security(("bearer" = [])),
    responses((status = 200, body = TopGiftersResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_stream_top(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<TopGiftersResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let stream = StreamId(path(id)?);
    let limit = limit(q, 10, service.config.engine.top_k)?;
    let key = read_layout(&service).stream_top(stream);
    if let Some(top) = shared_top(&service, key, limit).await? {
        return Ok(gifters(
            top.into_iter().map(|(u, c)| (UserId(u), c)).collect(),
        ));
    }
    Ok(gifters(service.engine.stream_top_gifters(stream, limit)))
}

#[derive(Serialize, ToSchema)]
pub struct CreatorsLeaderboard {
    entries: Vec<CreatorEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatorEntry {
    creator: u64,
    #[schema(value_type = u64)]
    diamonds: u128,
}

/// Top creators by diamonds credited, best first.
#[utoipa::path(get, path = "/v1/leaderboards/creators", tag = "leaderboards",
    params(LimitQuery), security(("bearer" = [])),
    responses((status = 200, body = CreatorsLeaderboard), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_top_creators(
    State(service): State<Arc<Service>>,
    caller: Caller,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<CreatorsLeaderboard>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let limit = limit(q, 10, service.config.engine.top_k)?;
    let top = match &service.shared_reads {
        Some(conn) => crate::persist::read_model::top_creators(
            &mut conn.clone(),
            read_layout(&service),
            limit,
        )
        .await
        .map_err(shared_read_error)?
        .into_iter()
        .map(|(c, d)| (CreatorId(c), d as u128))
        .collect(),
        None => service.engine.top_creators(limit),
    };
    let entries = top
        .into_iter()
        .map(|(c, diamonds)| CreatorEntry {
            creator: c.0,
            diamonds,
        })
        .collect();
    Ok(Json(CreatorsLeaderboard { entries }))
}

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

#[derive(Serialize, ToSchema)]
pub struct StreamResponse {
    stream: u64,
    creator: Option<u64>,
    #[schema(value_type = u64)]
    coins_received: u128,
    goal: Option<GoalView>,
}

#[derive(Serialize, ToSchema)]
pub struct GoalView {
    coins_target: u64,
    /// Coins received by the stream.
    #[schema(value_type = u64)]
    progress: u128,
}

fn stream_response(service: &Service, stream: StreamId) -> StreamResponse {
    let s = service.engine.stream(stream);
    StreamResponse {
        stream: s.stream.0,
        creator: s.creator.map(|c| c.0),
        coins_received: s.coins_received,
        goal: s.goal.map(|(coins_target, progress)| GoalView {
            coins_target,
            progress,
        }),
    }
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
async fn put_goal(
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

/// A stream's creator, coins received and goal progress.
#[utoipa::path(get, path = "/v1/streams/{id}", tag = "streams",
    params(("id" = u64, Path, description = "Stream id")), security(("bearer" = [])),
    responses((status = 200, body = StreamResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn get_stream(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<StreamResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let stream = StreamId(path(id)?);
    let mut response = stream_response(&service, stream);
    let key = read_layout(&service).stream(stream);
    let fields = ["coins_received", "creator", "goal_coins_target"];
    if let Some(merged) = shared_hash(&service, key, &fields).await? {
        let coins = merged[0].unwrap_or_default();
        response.coins_received = coins;
        response.creator = response
            .creator
            .or(merged[1].and_then(|c| u64::try_from(c).ok()));
        response.goal = merged[2]
            .and_then(|t| u64::try_from(t).ok())
            .map(|coins_target| GoalView {
                coins_target,
                progress: coins,
            })
            .or(response.goal);
    }
    Ok(Json(response))
}

/// Server-Sent Events of a stream: `goal` (current progress, first and after each
/// committed run with gifts) and `gift` (each accepted gift, once durable). A subscriber
/// that falls `limits.sse_buffer_events` behind gets `event: dropped` and is closed.
#[utoipa::path(get, path = "/v1/streams/{id}/feed", tag = "streams",
    params(("id" = u64, Path, description = "Stream id")), security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream: each event's data is a FeedMessage", content_type = "text/event-stream", body = FeedMessage),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, description = "Too many subscribers for this stream", body = ErrorBody),
    ))]
async fn get_feed(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let stream = StreamId(path(id)?);
    let subscription = service.feeds.subscribe(stream).map_err(|_| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_SUBSCRIBERS",
            "too many feed subscribers for this stream",
        )
    })?;
    let first = FeedMessage::goal_of(&service.engine, stream);
    let closing = service.closing.clone();
    enum State_ {
        First(FeedMessage),
        Live,
        Done,
    }
    let state = (State_::First(first), subscription, closing);
    let events = futures::stream::unfold(state, |(st, mut sub, mut closing)| async move {
        let msg = match st {
            State_::Done => return None,
            State_::First(m) => Arc::new(m),
            State_::Live => {
                tokio::select! {
                    r = sub.receiver.recv() => match r {
                        Ok(m) => m,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            metrics::counter!(telemetry::SSE_DROPPED_TOTAL).increment(1);
                            let msg = FeedMessage::Dropped { missed: n };
                            let ev = SseEvent::default().event(msg.name()).json_data(&msg)
                                .unwrap_or_else(|_| SseEvent::default().event("error"));
                            return Some((Ok(ev), (State_::Done, sub, closing)));
                        }
                        Err(_) => return None,
                    },
                    _ = super::closed(&mut closing) => return None,
                }
            }
        };
        let ev = SseEvent::default()
            .event(msg.name())
            .json_data(&*msg)
            .unwrap_or_else(|_| SseEvent::default().event("error"));
        Some((Ok(ev), (State_::Live, sub, closing)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

// ---- operations ---------------------------------------------------------------------

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: state loaded and commits succeeding (503 otherwise, and while shutting down).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "ready"), (status = 503, description = "not ready", body = ErrorBody)))]
async fn readyz(State(service): State<Arc<Service>>) -> Response {
    if service.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "not ready: loading, commits failing or shutting down",
        )
        .into_response()
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics_route(State(service): State<Arc<Service>>) -> Response {
    let pending = service.commits.pending_events();
    metrics::gauge!(telemetry::COMMIT_PENDING_EVENTS).set(pending as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        service.metrics.render(),
    )
        .into_response()
}

#[derive(OpenApi)]
#[openapi(
    info(title = "giftstream", description = "Gift stream processor: events, wallets, creators, leaderboards, live feed."),
    paths(
        post_events, put_user, get_wallet, get_transactions, get_creator, get_creator_top,
        get_stream_top, get_top_creators, put_goal, get_stream, get_feed, get_economy,
        put_economy, healthz, readyz, metrics_route
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document. Ids, counts and amounts are unsigned: utoipa (with
/// `non_strict_integers`) names their formats `u-int64`/`u-int32`; they are published as
/// the conventional `uint64`/`uint32`, so validators do not cap them at the signed range.
///
/// The feed's `text/event-stream` schema describes one event (OpenAPI 3.1 style): its
/// `event` name and its `data`, a JSON text whose `contentSchema` is [`FeedMessage`].
pub fn openapi_json() -> String {
    let text = ApiDoc::openapi()
        .to_json()
        .unwrap_or_default()
        .replace("\"u-int64\"", "\"uint64\"")
        .replace("\"u-int32\"", "\"uint32\"")
        .replace("\"u-int16\"", "\"uint16\"")
        .replace("\"u-int8\"", "\"uint8\"");
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(&text) else {
        return text;
    };
    let event = serde_json::json!({
        "type": "object",
        "required": ["data"],
        "properties": {
            "event": {"type": "string", "enum": ["goal", "gift", "dropped"]},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": "#/components/schemas/FeedMessage"}
            }
        }
    });
    if let Some(media) = doc.pointer_mut(
        "/paths/~1v1~1streams~1{id}~1feed/get/responses/200/content/text~1event-stream",
    ) {
        media["schema"] = event;
    }
    add_transport_responses(&mut doc);
    doc.to_string()
}

/// Answers every authenticated route can give before its handler runs: 429 after too
/// many failed authentications from the address (`AUTH_RATE_LIMITED`, with
/// `Retry-After`), 503 when `limits.http_requests_inflight_max` requests are in flight
/// (`OVERLOADED`), and for a route with a body 408 when it is not read in time
/// (`BODY_TIMEOUT`).
fn add_transport_responses(doc: &mut serde_json::Value) {
    let error = serde_json::json!({"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}});
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(|p| p.as_object_mut())
        .flat_map(|p| p.values_mut())
    {
        let has_body = operation.get("requestBody").is_some();
        let Some(responses) = operation
            .get_mut("responses")
            .and_then(|r| r.as_object_mut())
        else {
            continue;
        };
        if !responses.contains_key("401") {
            continue;
        }
        responses.entry("429").or_insert_with(|| serde_json::json!({
            "description": "Too many failed authentications from this address (code AUTH_RATE_LIMITED); Retry-After says when to try again",
            "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
            "content": error.clone(),
        }));
        responses.entry("503").or_insert_with(|| {
            serde_json::json!({
                "description": "Too many requests in flight (code OVERLOADED)",
                "content": error.clone(),
            })
        });
        if has_body {
            responses.entry("408").or_insert_with(|| serde_json::json!({
                "description": "The body was not read in time (code BODY_TIMEOUT); nothing applied",
                "content": error.clone(),
            }));
        }
    }
}

async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(openapi_json).clone(),
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "method not allowed on this route",
    )
}

/// Answers `503 OVERLOADED` when `limits.http_requests_inflight_max` requests are being
/// handled already (a permit is held until the handler returns its response: a live
/// feed's stream does not hold one).
async fn inflight(State(permits): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = permits.try_acquire() else {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "http_requests_inflight")
            .increment(1);
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "OVERLOADED",
            "too many requests in progress (limits.http_requests_inflight_max): retry later",
        )
        .retry_after(Duration::from_secs(1))
        .into_response();
    };
    next.run(request).await
}

/// The API's routes. Bodies are read by the handlers, after authorization
/// ([`read_body`]), never by an extractor.
pub fn router(service: Arc<Service>) -> Router {
    let inflight_permits = Arc::new(Semaphore::new(
        service.config.limits.http_requests_inflight_max,
    ));
    Router::new()
        .route("/v1/events", post(post_events))
        .route("/v1/users/{id}", put(put_user))
        .route("/v1/users/{id}/wallet", get(get_wallet))
        .route("/v1/users/{id}/transactions", get(get_transactions))
        .route("/v1/creators/{id}", get(get_creator))
        .route("/v1/creators/{id}/top-gifters", get(get_creator_top))
        .route("/v1/streams/{id}/top-gifters", get(get_stream_top))
        .route("/v1/leaderboards/creators", get(get_top_creators))
        .route("/v1/streams/{id}/goal", put(put_goal))
        .route("/v1/streams/{id}", get(get_stream))
        .route("/v1/streams/{id}/feed", get(get_feed))
        .route("/v1/economy", get(get_economy).put(put_economy))
        // The routes above count against the in-flight bound; the operations routes
        // below (cheap, and what probes and scrapers need under load) do not.
        .route_layer(axum::middleware::from_fn_with_state(
            inflight_permits,
            inflight,
        ))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_route))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service)
}
