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
//! 404 `WINDOWS_DISABLED`; a cluster node (whose leaderboards come from the shared read
//! model, which holds no windows yet) answers 501 `WINDOWS_UNAVAILABLE`.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::ApiError;
use crate::engine::{TimeWindow, WindowError, WindowKind};
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
    let window = match (q.window.as_deref(), q.at.as_deref()) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ApiError::parameter("at needs window (hour, day, week or month)"));
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
    if window.is_some() && service.shared_reads.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "WINDOWS_UNAVAILABLE",
            "windowed leaderboards are not in the shared read model: a cluster node answers all-time only",
        ));
    }
    Ok((limit, window))
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
