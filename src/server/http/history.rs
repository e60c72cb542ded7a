//! `GET /v1/users/{id}/transactions`: a user's history, newest first, paged back with
//! `before` through everything the durable history keeps (`history.retention_ms`), as
//! JSON or CSV. Read-your-writes: the engine's in-memory recent lines (the newest
//! `engine.history_per_user`, there as soon as an event is applied) are merged with the
//! durable pages (written off the ack path), deduplicated by sequence number.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::reads::owned_user;
use super::{ApiError, Caller, ErrorBody, authorize, path};
use crate::config::Scope;
use crate::engine::{EventId, EventKind, RejectCode, UserId};
use crate::server::Service;

/// The most entries one page holds (`limit`).
pub const HISTORY_PAGE_MAX: usize = 100;
/// Entries in a page when `limit` is not given.
const HISTORY_PAGE_DEFAULT: usize = 20;
/// The CSV export's header: its columns, in order.
pub const CSV_HEADER: &str = "seq,time_ms,type,event_id,status,code,coins_delta,diamonds_delta";

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TransactionsQuery {
    /// How many entries (1..=100, default 20).
    limit: Option<usize>,
    /// Only entries numbered before this sequence number: the `seq` of the last entry
    /// of the previous page (absent: the newest).
    before: Option<u64>,
    /// `json` (default) or `csv`: `seq,time_ms,type,event_id,status,code,coins_delta,
    /// diamonds_delta`, a header line first.
    format: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct TransactionsResponse {
    entries: Vec<TransactionEntry>,
    /// The `before` of the next page (the last entry's `seq`); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<u64>,
}

#[derive(Serialize, ToSchema, Clone, PartialEq, Eq, Debug)]
pub struct TransactionEntry {
    event_id: String,
    /// "recharge", "gift", "video_gift", "purchase", "recharge_reversal",
    /// "gift_reversal", "account" or "payout" (a creator's).
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
    /// A payout's diamonds paid out, negative (absent on every other line).
    #[serde(skip_serializing_if = "Option::is_none")]
    diamonds_delta: Option<i64>,
    /// When the event was applied, ms since the Unix epoch (UTC).
    time_ms: u64,
}

impl TransactionEntry {
    /// The entry of event `id` of `kind` numbered `seq` at `time_ms`, rejected with
    /// `code` (`None`: accepted); no coin change yet.
    fn new(
        (id, kind, seq, time_ms): (EventId, EventKind, u64, u64),
        code: Option<&'static str>,
    ) -> TransactionEntry {
        TransactionEntry {
            event_id: uuid::Uuid::from_u128(id.0).to_string(),
            kind: kind.as_str(),
            seq,
            status: if code.is_none() {
                "accepted"
            } else {
                "rejected"
            },
            code,
            coins_delta: 0,
            diamonds_delta: None,
            time_ms,
        }
    }
}

/// A user's history with outcomes, newest first: `before` pages back through the
/// durable history (every recharge, gift, reversal, purchase, account setting and, for
/// a creator, payout within `history.retention_ms`); `format=csv` exports a page as CSV.
#[utoipa::path(get, path = "/v1/users/{id}/transactions", tag = "users",
    params(("id" = u64, Path, description = "User id"), TransactionsQuery), security(("bearer" = [])),
    responses((status = 200, description = "A page of the history, newest first", content(
        (TransactionsResponse = "application/json"),
        (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 421, description = "A cluster node asked for another node's user (code WRONG_PARTITION, the message names the owner)", body = ErrorBody), (status = 503, description = "The durable history cannot be read (code UNAVAILABLE)", body = ErrorBody)))]
pub(super) async fn get_transactions(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<TransactionsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let user = UserId(path(id)?);
    let Query(q) = q.map_err(|e| ApiError::parameter(e.body_text()))?;
    let limit = q.limit.unwrap_or(HISTORY_PAGE_DEFAULT);
    if limit == 0 || limit > HISTORY_PAGE_MAX {
        return Err(ApiError::parameter(format!(
            "limit must be in 1..={HISTORY_PAGE_MAX}"
        )));
    }
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::parameter(format!(
                "format must be json or csv, got {other:?}"
            )));
        }
    };
    owned_user(&service, user)?;
    let before = q.before.unwrap_or(u64::MAX);
    let mut page: BTreeMap<u64, TransactionEntry> = BTreeMap::new();
    if let Some(reader) = &service.history {
        let now = service.clock.now().0;
        let lines = reader.page(user, q.before, limit, now).await.map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                format!("the durable history cannot be read: {e}"),
            )
        })?;
        for l in lines {
            let code = l
                .code
                .as_deref()
                .map(|c| stable_code(c).unwrap_or("UNKNOWN"));
            let mut entry = TransactionEntry::new((l.event_id, l.kind, l.seq, l.stamp_ms), code);
            entry.coins_delta = l.coins_delta;
            entry.diamonds_delta = (l.kind == EventKind::Payout).then_some(l.diamonds_delta);
            page.insert(l.seq, entry);
        }
    }
    // The engine's recent lines: the newest, before the durable history has them.
    let recent = service
        .engine
        .history(user, service.config.engine.history_per_user);
    for h in recent.into_iter().filter(|h| h.seq < before) {
        page.entry(h.seq).or_insert_with(|| {
            let code = h.code.map(RejectCode::as_str);
            let mut entry = TransactionEntry::new((h.event_id, h.kind, h.seq, h.stamp.0), code);
            entry.coins_delta = h.coins_delta;
            entry
        });
    }
    let entries: Vec<TransactionEntry> = page.into_values().rev().take(limit).collect();
    let next_before = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten();
    if csv {
        let mut body = String::with_capacity(64 * (entries.len() + 1));
        body.push_str(CSV_HEADER);
        body.push('\n');
        for e in &entries {
            body.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                e.seq,
                e.time_ms,
                e.kind,
                e.event_id,
                e.status,
                e.code.unwrap_or(""),
                e.coins_delta,
                e.diamonds_delta.map_or(String::new(), |d| d.to_string()),
            ));
        }
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    Ok(Json(TransactionsResponse {
        entries,
        next_before,
    })
    .into_response())
}

/// The stable code a durable line names (`None`: one this build does not know).
fn stable_code(code: &str) -> Option<&'static str> {
    RejectCode::ALL
        .into_iter()
        .map(RejectCode::as_str)
        .find(|c| *c == code)
}
