//! The HTTP routes that read: wallets, creators, leaderboards, streams and their live
//! feed (the economy's are in `economy`, transaction history in `history`). A single node answers from its engine; a
//! cluster node reads totals and leaderboards from the shared read model (Redis).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::windows::{
    LeaderboardQuery, WindowView, leaderboard_query, not_on_a_cluster, window_error,
};
use super::{ApiError, Caller, ErrorBody, authorize, path};
use crate::config::Scope;
use crate::engine::{CreatorId, StreamId, UserId, date_label, iso_week_label};
use crate::persist::read_model::ReadError;
use crate::server::Service;
use crate::server::sse::{FeedEvent, FeedId, FeedMessage};
use crate::telemetry;

// ---- users --------------------------------------------------------------------------

/// A cluster node answers a user's wallet and history only for its own partitions:
/// another node's user gets 421 `WRONG_PARTITION` naming the owner (not an empty wallet).
pub(super) fn owned_user(service: &Service, user: UserId) -> Result<(), ApiError> {
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

#[derive(Serialize, ToSchema)]
pub struct WalletResponse {
    user: u64,
    coins: u64,
    /// Coins the user owes: reversed recharges (chargebacks) the user had already
    /// spent. Repaid first by the next recharges; while above 0 (the balance is then 0),
    /// gifts and purchases are rejected ACCOUNT_IN_DEBT.
    coins_owed: u64,
    /// Coins spent on gifts and purchases in the current calendar month (UTC): what the
    /// monthly budget counts.
    spent_this_month: u64,
    monthly_budget_coins: Option<u64>,
    region: Option<String>,
    adult: bool,
    /// Coins spent on gifts in the current UTC day (`day`).
    spent_today: u64,
    /// Coins spent on gifts in the current ISO week (`week`, Monday to Sunday UTC).
    spent_this_week: u64,
    /// The user's daily budget in coins, or null.
    daily_budget_coins: Option<u64>,
    /// The user's weekly budget in coins, or null.
    weekly_budget_coins: Option<u64>,
    /// The economy's cap per user per UTC day (`[spending_caps] daily_coins`), or null.
    daily_platform_cap_coins: Option<u64>,
    /// The economy's cap per user per ISO week, or null.
    weekly_platform_cap_coins: Option<u64>,
    /// The UTC day the counts are of, e.g. "2026-12-31".
    day: String,
    /// The ISO week the weekly count is of, e.g. "2026-W53".
    week: String,
}

/// A user's coins, spending today, this week and this month, budgets and the platform's
/// caps.
#[utoipa::path(get, path = "/v1/users/{id}/wallet", tag = "users",
    params(("id" = u64, Path, description = "User id")), security(("bearer" = [])),
    responses((status = 200, body = WalletResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 421, description = "A cluster node asked for another node's user (code WRONG_PARTITION, the message names the owner)", body = ErrorBody)))]
pub(super) async fn get_wallet(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<WalletResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let user = UserId(path(id)?);
    owned_user(&service, user)?;
    let now = service.clock.now();
    let w = service.engine.wallet(user, now);
    let economy = service.engine.economy();
    Ok(Json(WalletResponse {
        user: w.user.0,
        coins: w.coins,
        coins_owed: w.coins_owed,
        spent_this_month: w.spent_this_month,
        monthly_budget_coins: w.monthly_budget_coins,
        region: w.region.map(|r| r.to_string()),
        adult: w.adult,
        spent_today: w.spent_today,
        spent_this_week: w.spent_this_week,
        daily_budget_coins: w.daily_budget_coins,
        weekly_budget_coins: w.weekly_budget_coins,
        daily_platform_cap_coins: economy.daily_cap_coins,
        weekly_platform_cap_coins: economy.weekly_cap_coins,
        day: date_label(now.day_key()),
        week: iso_week_label(now.day_key()),
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    /// How many entries (default 10).
    limit: Option<usize>,
}

pub(super) fn limit(
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

// ---- creators and streams -----------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct CreatorResponse {
    creator: u64,
    /// Whole diamonds credited: floor(coins received x creator share). Held ones
    /// included: its meaning does not change with the earnings hold.
    #[schema(value_type = u64)]
    diamonds_total: u128,
    /// What a payout may spend now: credited (and, on a cluster owner, settled in from
    /// other nodes), less `diamonds_held`, less paid out.
    #[schema(value_type = u64)]
    diamonds_available: u128,
    /// Credited but not released yet by the earnings hold (`economy.earnings_hold_ms`);
    /// 0 without a hold.
    #[schema(value_type = u64)]
    diamonds_held: u128,
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
pub(super) async fn get_creator(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<CreatorResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let mut c = service
        .engine
        .creator_at(CreatorId(path(id)?), service.clock.now());
    if let Some(reader) = &service.shared_reads {
        let merged = reader
            .creator_totals(c.creator)
            .await
            .map_err(shared_read_error)?;
        c.coins_received = merged.coins_received;
        c.diamonds_total = merged.diamonds_total;
        // The read model's `diamonds_available` is credited less paid (it knows no
        // hold): less what this node holds (the owner holds what it settled in).
        c.diamonds_available = merged.diamonds_available.saturating_sub(c.diamonds_held);
    }
    let catalog = &service.engine.economy().gifts;
    Ok(Json(CreatorResponse {
        creator: c.creator.0,
        diamonds_total: c.diamonds_total,
        diamonds_available: c.diamonds_available,
        diamonds_held: c.diamonds_held,
        diamond_fraction: c.diamond_fraction.to_string(),
        coins_received: c.coins_received,
        gifts: c
            .gifts
            .iter()
            .filter_map(|(g, n)| catalog.get(g.0 as usize).map(|s| (s.id.clone(), *n)))
            .collect(),
    }))
}

// ---- leaderboards -------------------------------------------------------------------

#[derive(Serialize, ToSchema)]
pub struct TopGiftersResponse {
    /// The window the list covers (a windowed read only; all-time without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<WindowView>,
    entries: Vec<GifterEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct GifterEntry {
    user: u64,
    #[schema(value_type = u64)]
    coins: u128,
}

/// A cluster node reads leaderboards and totals from the shared read model (every
/// partition, as of the read model's lag); a single node answers from its engine.
pub(super) fn shared_read_error(e: ReadError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        format!("the shared read model cannot be read: {e}"),
    )
}

pub(super) fn gifters(list: Vec<(UserId, u128)>) -> Json<TopGiftersResponse> {
    Json(TopGiftersResponse {
        window: None,
        entries: list
            .into_iter()
            .map(|(u, coins)| GifterEntry { user: u.0, coins })
            .collect(),
    })
}

/// Top gifters of a creator, by coins gifted, best first: all-time, or in one UTC hour,
/// day, ISO week or month (`window`, `at`; ties by who reached the total first).
#[utoipa::path(get, path = "/v1/creators/{id}/top-gifters", tag = "leaderboards",
    params(("id" = u64, Path, description = "Creator id"), LeaderboardQuery), security(("bearer" = [])),
    responses((status = 200, body = TopGiftersResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, description = "WINDOW_EXPIRED (past retention) or WINDOWS_DISABLED", body = ErrorBody), (status = 503, description = "UNAVAILABLE: a cluster node cannot read the shared read model", body = ErrorBody)))]
pub(super) async fn get_creator_top(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> Result<Json<TopGiftersResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let creator = CreatorId(path(id)?);
    let (limit, window) = leaderboard_query(&service, q)?;
    if let Some(w) = window {
        if let Some(reader) = &service.shared_reads {
            service
                .engine
                .window_readable(w)
                .map_err(|e| window_error(e, w))?;
            let top = reader.creator_top_gifters_in(creator, w, limit).await;
            return windowed_gifters(top.map_err(shared_read_error)?, w);
        }
        let top = service.engine.creator_top_gifters_in(creator, w, limit);
        return windowed_gifters(top.map_err(|e| window_error(e, w))?, w);
    }
    if let Some(reader) = &service.shared_reads {
        let top = reader.creator_top_gifters(creator, limit).await;
        return Ok(gifters(top.map_err(shared_read_error)?));
    }
    Ok(gifters(service.engine.creator_top_gifters(creator, limit)))
}

/// Top gifters in a stream, by coins gifted, best first: all-time, or in one window
/// (as a creator's).
#[utoipa::path(get, path = "/v1/streams/{id}/top-gifters", tag = "leaderboards",
    params(("id" = u64, Path, description = "Stream id"), LeaderboardQuery), security(("bearer" = [])),
    responses((status = 200, body = TopGiftersResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, description = "WINDOW_EXPIRED (past retention) or WINDOWS_DISABLED", body = ErrorBody), (status = 503, description = "UNAVAILABLE: a cluster node cannot read the shared read model", body = ErrorBody)))]
pub(super) async fn get_stream_top(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> Result<Json<TopGiftersResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let stream = StreamId(path(id)?);
    let (limit, window) = leaderboard_query(&service, q)?;
    if let Some(w) = window {
        if let Some(reader) = &service.shared_reads {
            service
                .engine
                .window_readable(w)
                .map_err(|e| window_error(e, w))?;
            let top = reader.stream_top_gifters_in(stream, w, limit).await;
            return windowed_gifters(top.map_err(shared_read_error)?, w);
        }
        let top = service.engine.stream_top_gifters_in(stream, w, limit);
        return windowed_gifters(top.map_err(|e| window_error(e, w))?, w);
    }
    if let Some(reader) = &service.shared_reads {
        let top = reader.stream_top_gifters(stream, limit).await;
        return Ok(gifters(top.map_err(shared_read_error)?));
    }
    Ok(gifters(service.engine.stream_top_gifters(stream, limit)))
}

fn windowed_gifters(
    list: Vec<(UserId, u128)>,
    window: crate::engine::TimeWindow,
) -> Result<Json<TopGiftersResponse>, ApiError> {
    let Json(mut response) = gifters(list);
    response.window = Some(WindowView::of(window));
    Ok(Json(response))
}

#[derive(Serialize, ToSchema)]
pub struct CreatorsLeaderboard {
    /// The window the list covers (a windowed read only; all-time without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    window: Option<WindowView>,
    entries: Vec<CreatorEntry>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatorEntry {
    creator: u64,
    /// Diamonds credited (the all-time list's score).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    diamonds: Option<u128>,
    /// Coins received in the window (a windowed list's score).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<u64>)]
    coins: Option<u128>,
}

/// Top creators, best first: all-time by diamonds credited, or in one UTC hour, day, ISO
/// week or month (`window`, `at`) by coins received in it (ties by who reached the total
/// first).
#[utoipa::path(get, path = "/v1/leaderboards/creators", tag = "leaderboards",
    params(LeaderboardQuery), security(("bearer" = [])),
    responses((status = 200, body = CreatorsLeaderboard), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, description = "WINDOW_EXPIRED (past retention) or WINDOWS_DISABLED", body = ErrorBody), (status = 501, description = "WINDOWS_UNAVAILABLE: a cluster node asked for a window", body = ErrorBody)))]
pub(super) async fn get_top_creators(
    State(service): State<Arc<Service>>,
    caller: Caller,
    q: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> Result<Json<CreatorsLeaderboard>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let (limit, window) = leaderboard_query(&service, q)?;
    not_on_a_cluster(&service, window)?;
    if let Some(w) = window {
        let top = service.engine.top_creators_in(w, limit);
        let entries = top
            .map_err(|e| window_error(e, w))?
            .into_iter()
            .map(|(c, coins)| CreatorEntry {
                creator: c.0,
                diamonds: None,
                coins: Some(coins),
            })
            .collect();
        return Ok(Json(CreatorsLeaderboard {
            window: Some(WindowView::of(w)),
            entries,
        }));
    }
    let top = match &service.shared_reads {
        Some(reader) => reader
            .top_creators(limit)
            .await
            .map_err(shared_read_error)?,
        None => service.engine.top_creators(limit),
    };
    let entries = top
        .into_iter()
        .map(|(c, diamonds)| CreatorEntry {
            creator: c.0,
            diamonds: Some(diamonds),
            coins: None,
        })
        .collect();
    Ok(Json(CreatorsLeaderboard {
        window: None,
        entries,
    }))
}

// ---- streams ------------------------------------------------------------------------

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

pub(super) fn stream_response(service: &Service, stream: StreamId) -> StreamResponse {
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

/// A stream's creator, coins received and goal progress.
#[utoipa::path(get, path = "/v1/streams/{id}", tag = "streams",
    params(("id" = u64, Path, description = "Stream id")), security(("bearer" = [])),
    responses((status = 200, body = StreamResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_stream(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<StreamResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let stream = StreamId(path(id)?);
    let mut response = stream_response(&service, stream);
    if let Some(reader) = &service.shared_reads {
        let merged = reader
            .stream_totals(stream)
            .await
            .map_err(shared_read_error)?;
        let coins = merged.coins_received;
        response.coins_received = coins;
        response.creator = response.creator.or(merged.creator);
        response.goal = merged
            .goal_coins_target
            .map(|coins_target| GoalView {
                coins_target,
                progress: coins,
            })
            .or(response.goal);
    }
    Ok(Json(response))
}

/// Server-Sent Events of a stream: `goal` (current progress, first and after each
/// committed run that moved it), `gift` (each accepted gift, once durable) and
/// `goal_reached` (once per goal, when met). Every message has an `id:` (its sequence
/// number: `1234` a gift, `1234.1` a goal update, `1234.2` a goal reached, `1234.3` a
/// battle's scores, `1234.4` a battle's end); a client
/// reconnecting with `Last-Event-ID` gets the gifts and goals reached it missed from the
/// stream's replay buffer (`limits.sse_replay_events` per stream, kept
/// `limits.sse_replay_keep_ms` after its last subscriber left), or `event: reset` when
/// they are no longer kept. A subscriber that falls `limits.sse_buffer_events` behind
/// gets `event: dropped` and is closed.
#[utoipa::path(get, path = "/v1/streams/{id}/feed", tag = "streams",
    params(("id" = u64, Path, description = "Stream id"),
        ("Last-Event-ID" = Option<String>, Header, description = "The id of the last message received (a reconnect): `1234`, or `1234.1` to `1234.4`")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "text/event-stream: each event's data is a FeedMessage", content_type = "text/event-stream", body = FeedMessage),
        (status = 400, description = "BAD_PATH, or BAD_LAST_EVENT_ID: a Last-Event-ID that is not a feed id", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 429, description = "Too many subscribers for this stream", body = ErrorBody),
    ))]
pub(super) async fn get_feed(
    State(service): State<Arc<Service>>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let stream = StreamId(path(id)?);
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(value.to_str().ok().and_then(FeedId::parse).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "BAD_LAST_EVENT_ID",
                "Last-Event-ID must be a feed message id: 1234, 1234.1 or 1234.2",
            )
        })?),
    };
    let subscription = service
        .feeds
        .subscribe(&service.engine, stream, last_event_id)
        .map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TOO_MANY_SUBSCRIBERS",
                "too many feed subscribers for this stream",
            )
        })?;
    let closing = service.closing.clone();
    let first: std::collections::VecDeque<_> = subscription.first.iter().cloned().collect();
    let to_sse = |event: &FeedEvent| {
        let sse = SseEvent::default()
            .event(event.message.name())
            .json_data(&event.message)
            .unwrap_or_else(|_| SseEvent::default().event("error"));
        match event.id {
            Some(id) => sse.id(id.to_string()),
            None => sse,
        }
    };
    let state = (Some(first), subscription, closing);
    let events = futures::stream::unfold(state, move |(first, mut sub, mut closing)| async move {
        let mut first = first?;
        if let Some(event) = first.pop_front() {
            return Some((Ok(to_sse(&event)), (Some(first), sub, closing)));
        }
        let event = tokio::select! {
            r = sub.receiver.recv() => match r {
                Ok(event) => event,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    metrics::counter!(telemetry::SSE_DROPPED_TOTAL).increment(1);
                    let dropped = FeedEvent { id: None, message: FeedMessage::Dropped { missed: n } };
                    // Closed after this message.
                    return Some((Ok(to_sse(&dropped)), (None, sub, closing)));
                }
                Err(_) => return None,
            },
            _ = crate::server::closed(&mut closing) => return None,
        };
        Some((Ok(to_sse(&event)), (Some(first), sub, closing)))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
