//! The HTTP/JSON API (SPEC §2.2): the router, errors and the extractors every route
//! shares. The routes are in [`events`] (the writes) and [`reads`] (the reads), the
//! OpenAPI document generated from their types and handlers in [`openapi`].
//!
//! Auth: `Authorization: Bearer <token>`; `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` are open (they reveal no ledger data). Errors are
//! `{"error": {"code": "...", "message": "..."}}`.

pub mod battles;
pub mod economy;
pub mod events;
pub mod history;
pub mod openapi;
pub mod reads;
pub mod videos;
pub mod windows;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use bytes::BytesMut;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;
use utoipa::ToSchema;

use super::Service;
use super::auth::{Auth, AuthError};
use super::http_conn::Peer;
use super::ingest::{self, Refusal};
use crate::config::Scope;
use crate::economy::Currency;
use crate::engine::{EventId, Outcome, RejectCode};
use crate::telemetry;

pub use openapi::{ApiDoc, openapi_json};

// ---- errors -------------------------------------------------------------------------

/// `Retry-After` (seconds) of a 429 or 503 whose wait is not known exactly (storage
/// behind, too many requests or subscribers, not ready).
const RETRY_AFTER_DEFAULT_S: u64 = 1;

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
    /// BODY_TOO_LARGE, BODY_TIMEOUT, UNSUPPORTED_MEDIA_TYPE, INVALID_PARAMETER, UNAUTHORIZED, FORBIDDEN,
    /// AUTH_RATE_LIMITED, RATE_LIMITED, NOT_FOUND, METHOD_NOT_ALLOWED, WINDOW_EXPIRED,
    /// WINDOWS_DISABLED, WINDOWS_UNAVAILABLE, INVALID_BATTLE, BATTLE_NOT_FOUND,
    /// BATTLES_UNAVAILABLE, TOO_MANY_SUBSCRIBERS, BAD_LAST_EVENT_ID,
    /// OVERLOADED, UNAVAILABLE, CONNECTION_LIMIT, or a reject code
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
        // Whole seconds, rounded up (at least 1): a client that waits that long is not
        // refused again.
        let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        self.retry_after_s = Some(seconds.max(1));
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
        // Every 429 and 503 says when to come back: the exact wait where it is known
        // (a token's rate, an address's auth lockout), a second otherwise.
        let busy = matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        let retry_after_s = self.retry_after_s.or(busy.then_some(RETRY_AFTER_DEFAULT_S));
        if let Some(s) = retry_after_s {
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

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::RateLimited { retry_after } => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "this token's request rate (limits.token_requests_per_second) is spent: retry \
                 after Retry-After",
            )
            .retry_after(retry_after),
            Refusal::WrongPartition(wrong) => ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "WRONG_PARTITION",
                wrong.to_string(),
            ),
            Refusal::Unavailable => ApiError::unavailable(),
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
    ingest::charge_rate(service, token)?;
    Ok(())
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::parameter(e.body_text()))
}

/// Refuses a body that is not declared JSON: `Content-Type: application/json` (any
/// parameters, e.g. `; charset=utf-8`) or an `application/*+json` type. A missing or
/// other type is 415 `UNSUPPORTED_MEDIA_TYPE` before a byte of the body is read.
fn json_content_type(caller: &Caller) -> Result<(), ApiError> {
    let declared = caller
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let essence = declared
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    let is_json = essence.as_deref().is_some_and(|t| {
        t == "application/json" || (t.starts_with("application/") && t.ends_with("+json"))
    });
    if is_json {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        match declared {
            Some(t) => format!("Content-Type {t:?} is not application/json; nothing was applied"),
            None => {
                "no Content-Type: send the body as application/json; nothing was applied".to_owned()
            }
        },
    ))
}

/// Reads a request's JSON body — call it once the caller is authorized: the
/// Content-Type must be JSON ([`json_content_type`]), the body at most
/// `limits.http_body_bytes_max` (413 at once when Content-Length says more), within
/// `limits.http_body_read_timeout_ms` (408 `BODY_TIMEOUT`; hyper then closes the
/// connection, the rest of the body unread).
async fn read_body(service: &Service, caller: &Caller, body: Body) -> Result<Bytes, ApiError> {
    json_content_type(caller)?;
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
    // Locks each sender shard for a moment: a scrape, not a hot path.
    let (records, evicted) = service.engine.recharge_records();
    metrics::gauge!(telemetry::RECHARGE_RECORDS).set(records as f64);
    metrics::counter!(telemetry::RECHARGE_RECORDS_EVICTED_TOTAL).absolute(evicted);
    let (records, dropped) = service.engine.gift_records();
    metrics::gauge!(telemetry::GIFT_RECORDS).set(records as f64);
    metrics::counter!(telemetry::GIFT_RECORDS_DROPPED_TOTAL).absolute(dropped);
    metrics::gauge!(telemetry::WINDOW_PAIRS).set(service.engine.window_pairs() as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        service.metrics.render(),
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
        .route("/v1/events", post(events::post_events))
        .route("/v1/users/{id}", put(events::put_user))
        .route("/v1/users/{id}/wallet", get(reads::get_wallet))
        .route(
            "/v1/users/{id}/transactions",
            get(history::get_transactions),
        )
        .route("/v1/creators/{id}", get(reads::get_creator))
        .route("/v1/creators/{id}/top-gifters", get(reads::get_creator_top))
        .route("/v1/streams/{id}/top-gifters", get(reads::get_stream_top))
        .route("/v1/leaderboards/creators", get(reads::get_top_creators))
        .route("/v1/gifts/stats", get(windows::get_gift_stats))
        .route("/v1/streams/{id}/goal", put(events::put_goal))
        .route(
            "/v1/battles/{id}",
            put(battles::put_battle).get(battles::get_battle),
        )
        .route("/v1/streams/{id}", get(reads::get_stream))
        .route("/v1/streams/{id}/feed", get(reads::get_feed))
        .route("/v1/videos/{id}", get(videos::get_video))
        .route("/v1/videos/{id}/top-gifters", get(videos::get_video_top))
        .route(
            "/v1/economy",
            get(economy::get_economy).put(events::put_economy),
        )
        .route("/v1/economy/packages", get(economy::get_packages))
        // The routes above count against the in-flight bound; the operations routes
        // below (cheap, and what probes and scrapers need under load) do not.
        .route_layer(axum::middleware::from_fn_with_state(
            inflight_permits,
            inflight,
        ))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_route))
        .route("/openapi.json", get(openapi::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(service)
}
