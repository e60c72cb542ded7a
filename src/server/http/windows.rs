//! Windowed leaderboards over HTTP (issue #32 feature 1): the `window` and `at`
//! parameters of the top-gifters and top-creators routes (`reads`), parsed and answered
//! from the engine.
//!
//! `window=hour|day|week|month` picks the kind; `at` the window, in the form of its kind
//! — `2026-12-04T13` (hour), `2026-12-04` (day), `2026-W49` (ISO week), `2026-12`
//! (month), all UTC — or, left out, the current one (the ledger's time). Without
//! `window` a route answers all-time, as before. Errors: a bad `window` or `at` (or
//! `at` without `window`) is 400 `INVALID_PARAMETER`; a window older than its kind's
//! retention is 404 `WINDOW_EXPIRED`; windows turned off (`engine.windows.enabled`) are
//! 404 `WINDOWS_DISABLED`. A cluster node reads a creator's or a stream's windowed top
//! gifters from the shared read model (each node writes its own gifters' lists into the
//! window's key: the best of their union is the cluster's, as for the all-time lists),
//! after checking the window against its own retention; the windowed top creators and
//! gift popularity are not in the read model (a creator's coins are contributions of
//! several nodes), so there they answer 501 `WINDOWS_UNAVAILABLE`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiError, Caller, ErrorBody, authorize};
use crate::config::Scope;
use crate::engine::{CreatorId, TimeWindow, WindowError, WindowKind};
use crate::server::Service;

/// The parameters of a leaderboard read.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LeaderboardQuery {
    /// How many entries (default 10, at most `engine.top_k`).
    limit: Option<usize>,
    /// `hour`, `day`, `week` or `month` (UTC; ISO weeks): a windowed leaderboard.
    /// Left out: all-time.
    window: Option<String>,
    /// Which window: `2026-12-04T13` (hour), `2026-12-04` (day), `2026-W49` (week),
    /// `2026-12` (month). Left out: the current one.
    at: Option<String>,
}

/// The window a windowed leaderboard covers.
#[derive(Serialize, ToSchema)]
pub struct WindowView {
    /// `hour`, `day`, `week` or `month`.
    kind: &'static str,
    /// Its label, as `at` takes it.
    at: String,
    /// Its first millisecond (UTC, since the epoch).
    start_ms: u64,
    /// The first millisecond after it.
    end_ms: u64,
}

impl WindowView {
    pub(super) fn of(w: TimeWindow) -> WindowView {
        WindowView {
            kind: w.kind.name(),
            at: w.label(),
            start_ms: w.start_ms(),
            end_ms: w.end_ms(),
        }
    }
}

/// The limit and, when asked for, the window of a leaderboard read.
pub(super) fn leaderboard_query(
    service: &Service,
    q: Result<Query<LeaderboardQuery>, QueryRejection>,
) -> Result<(usize, Option<TimeWindow>), ApiError> {
    let Query(q) = q.map_err(|e| ApiError::parameter(e.body_text()))?;
    let max = service.config.engine.top_k.max(1);
    let limit = q.limit.unwrap_or(10.min(max));
    if limit == 0 || limit > max {
        return Err(ApiError::parameter(format!("limit must be in 1..={max}")));
    }
    let window = parse_window(service, q.window.as_deref(), q.at.as_deref())?;
    Ok((limit, window))
}

/// The window named by `window` and `at` (the current one without `at`); `None`
/// without either.
fn parse_window(
    service: &Service,
    window: Option<&str>,
    at: Option<&str>,
) -> Result<Option<TimeWindow>, ApiError> {
    let window = match (window, at) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::parameter(
                "at needs window (hour, day, week or month)",
            ));
        }
        (Some(kind), at) => {
            let kind = WindowKind::parse(kind).ok_or_else(|| {
                ApiError::parameter("window must be one of hour, day, week, month")
            })?;
            Some(match at {
                None => service.engine.current_window(kind),
                Some(at) => TimeWindow::parse(kind, at).ok_or_else(|| {
                    ApiError::parameter(format!(
                        "at must be a {} in the form {} (UTC)",
                        kind.name(),
                        example(kind)
                    ))
                })?,
            })
        }
    };
    Ok(window)
}

/// 501 `WINDOWS_UNAVAILABLE` on a cluster node for a windowed read the shared read model
/// does not hold (top creators, gift popularity).
pub(super) fn not_on_a_cluster(
    service: &Service,
    window: Option<TimeWindow>,
) -> Result<(), ApiError> {
    if window.is_some() && service.shared_reads.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "WINDOWS_UNAVAILABLE",
            "windowed top creators and gift popularity are not in the shared read model: a cluster node answers them all-time only",
        ));
    }
    Ok(())
}

fn example(kind: WindowKind) -> &'static str {
    match kind {
        WindowKind::Hour => "2026-12-04T13",
        WindowKind::Day => "2026-12-04",
        WindowKind::Week => "2026-W49",
        WindowKind::Month => "2026-12",
    }
}

/// A windowed read's error as the API answers it.
pub(super) fn window_error(e: WindowError, window: TimeWindow) -> ApiError {
    match e {
        WindowError::Disabled => ApiError::new(
            StatusCode::NOT_FOUND,
            "WINDOWS_DISABLED",
            "windowed leaderboards are off on this ledger (engine.windows.enabled)",
        ),
        _ => ApiError::new(
            StatusCode::NOT_FOUND,
            "WINDOW_EXPIRED",
            format!(
                "the {} {} is past its retention (engine.windows)",
                window.kind.name(),
                window.label()
            ),
        ),
    }
}

/// The parameters of a gift popularity read.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct GiftStatsQuery {
    /// `hour`, `day`, `week` or `month` (required).
    window: Option<String>,
    /// Which window, as for leaderboards; left out: the current one.
    at: Option<String>,
    /// One creator's gifts only (gifts on its streams and videos).
    creator: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct GiftStatsResponse {
    window: WindowView,
    /// The creator asked for (absent: every creator).
    #[serde(skip_serializing_if = "Option::is_none")]
    creator: Option<u64>,
    /// Per gift of the catalog sent in the window: most sent first (then most coins).
    gifts: Vec<GiftStat>,
}

#[derive(Serialize, ToSchema)]
pub struct GiftStat {
    /// The gift's catalog id.
    gift: String,
    /// Gifts sent (a gift event of `count` 3 counts 3), less those reversed.
    count: u64,
    /// Their coins.
    coins: u64,
}

/// Gift popularity (#32 feature 6): per gift, how many were sent in one UTC hour, day,
/// ISO week or month and their coins, over every creator or one (`creator`). The same
/// retention and errors as the windowed leaderboards; `window` is required.
#[utoipa::path(get, path = "/v1/gifts/stats", tag = "leaderboards",
    params(GiftStatsQuery), security(("bearer" = [])),
    responses((status = 200, body = GiftStatsResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, description = "WINDOW_EXPIRED (past retention) or WINDOWS_DISABLED", body = ErrorBody), (status = 501, description = "WINDOWS_UNAVAILABLE: a cluster node", body = ErrorBody)))]
pub(super) async fn get_gift_stats(
    State(service): State<Arc<Service>>,
    caller: Caller,
    q: Result<Query<GiftStatsQuery>, QueryRejection>,
) -> Result<Json<GiftStatsResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let Query(q) = q.map_err(|e| ApiError::parameter(e.body_text()))?;
    if q.window.is_none() {
        return Err(ApiError::parameter(
            "window is required (hour, day, week or month)",
        ));
    }
    let window =
        parse_window(&service, q.window.as_deref(), q.at.as_deref())?.expect("a window was given");
    not_on_a_cluster(&service, Some(window))?;
    let stats = service
        .engine
        .gift_stats_in(window, q.creator.map(CreatorId))
        .map_err(|e| window_error(e, window))?;
    let catalog = &service.engine.economy().gifts;
    let gifts = stats
        .into_iter()
        .filter_map(|(g, n)| {
            catalog.get(g.0 as usize).map(|spec| GiftStat {
                gift: spec.id.clone(),
                count: n.count,
                coins: n.coins,
            })
        })
        .collect();
    Ok(Json(GiftStatsResponse {
        window: WindowView::of(window),
        creator: q.creator,
        gifts,
    }))
}
