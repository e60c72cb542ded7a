//! PK battles over HTTP: `PUT /v1/battles/{id}` records one (a journaled engine event
//! whose id is derived from the battle id, so a retried PUT is the same event) and
//! `GET /v1/battles/{id}` reads its streams, window, state, scores, top gifters per side
//! and result.
//!
//! Errors: a body whose streams or window break the rules is 400 `INVALID_BATTLE`
//! (nothing recorded); a battle the engine refuses is its recorded code —
//! `INVALID_BATTLE` (422: already over when recorded), `STREAM_IN_BATTLE`,
//! `BATTLE_EXISTS` (other content under the id), `BATTLES_FULL` (409); the same body
//! again answers its original refusal while the id index remembers it. A cluster node
//! answers 501 `BATTLES_UNAVAILABLE`: a battle's streams receive gifts from senders of
//! every node, and no node sees them all.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::events::apply;
use super::{ApiError, Caller, ErrorBody, authorize, json, path, read_body};
use crate::config::Scope;
use crate::engine::{
    BATTLE_LENGTH_MS_MAX, BATTLE_SIDES_MAX, BATTLE_SIDES_MIN, BATTLE_TOP_GIFTERS, Battle, BattleId,
    BattleState, BattleView, Event, RejectCode, StreamId,
};
use crate::server::Service;

/// `PUT /v1/battles/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BattleRequest {
    /// 2 to 4 distinct live streams, in the order the sides are shown.
    streams: Vec<u64>,
    /// The window's start, UTC ms (inclusive): gifts stamped from here count.
    start_ms: u64,
    /// The window's end, UTC ms (exclusive): after `start_ms`, at most 24 hours later,
    /// and after the moment the battle is recorded.
    end_ms: u64,
}

/// One gifter of a side.
#[derive(Serialize, ToSchema)]
pub struct BattleGifter {
    user: u64,
    #[schema(value_type = u64)]
    coins: u128,
}

/// One side of a battle: a stream and its score.
#[derive(Serialize, ToSchema)]
pub struct BattleSide {
    stream: u64,
    /// Coins the stream received from gifts stamped inside the window (less reversals
    /// while the battle was live).
    #[schema(value_type = u64)]
    coins: u128,
    /// Those gifts, counted.
    gifts: u64,
    /// The side's top gifters inside the window (at most 10), best first; ties by who
    /// reached the total first.
    top_gifters: Vec<BattleGifter>,
}

#[derive(Serialize, ToSchema)]
pub struct BattleResponse {
    battle: u64,
    streams: Vec<u64>,
    start_ms: u64,
    end_ms: u64,
    /// The battle event's sequence number (gifts numbered after it count).
    seq: u64,
    /// `scheduled` (before `start_ms`), `live` (inside the window), `ending` (the
    /// window is over, the battle's close not committed yet: scores may still move by a
    /// gift stamped before the end), or `ended` (closed and committed: final), by the
    /// server's clock.
    state: String,
    sides: Vec<BattleSide>,
    /// The stream with the most coins now (null on a tie).
    leader: Option<u64>,
    /// Once ended: the winning stream (null on a draw or before the end).
    winner: Option<u64>,
    /// Once ended: true when two or more streams share the most coins.
    draw: bool,
    /// Once ended: the sequence number of the battle's close (the `battle_end` feed
    /// message's id is `<closed_seq>.4`).
    closed_seq: Option<u64>,
}

fn response(b: &BattleView, now_ms: u64, committed_through: u64) -> BattleResponse {
    let state = b.state_at(now_ms, committed_through);
    let leader = b.leader();
    let ended = state == BattleState::Ended;
    BattleResponse {
        battle: b.battle.0,
        streams: b.sides.iter().map(|s| s.stream.0).collect(),
        start_ms: b.start_ms,
        end_ms: b.end_ms,
        seq: b.seq,
        state: state.as_str().to_owned(),
        sides: b
            .sides
            .iter()
            .map(|s| BattleSide {
                stream: s.stream.0,
                coins: s.coins,
                gifts: s.gifts,
                top_gifters: s
                    .top_gifters
                    .iter()
                    .map(|&(u, coins)| BattleGifter { user: u.0, coins })
                    .collect(),
            })
            .collect(),
        leader: leader.map(|s| s.0),
        winner: if ended { leader.map(|s| s.0) } else { None },
        draw: ended && leader.is_none(),
        closed_seq: if ended { b.closed_seq } else { None },
    }
}

fn unavailable_on_cluster(service: &Service) -> Result<(), ApiError> {
    if service.partitions.is_some() {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "BATTLES_UNAVAILABLE",
            "battles are not available on a cluster node: a battle's streams receive gifts from senders of every node",
        ));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_BATTLE", message)
}

/// The battle a body describes, if it keeps the rules (2 to 4 distinct streams, a
/// window of at most 24 hours).
fn battle_of(id: BattleId, r: &BattleRequest) -> Result<Battle, ApiError> {
    if !(BATTLE_SIDES_MIN..=BATTLE_SIDES_MAX).contains(&r.streams.len()) {
        return Err(invalid(format!(
            "a battle has {BATTLE_SIDES_MIN} to {BATTLE_SIDES_MAX} streams, got {}",
            r.streams.len()
        )));
    }
    if r.streams
        .iter()
        .enumerate()
        .any(|(i, s)| r.streams[..i].contains(s))
    {
        return Err(invalid("a battle's streams are distinct"));
    }
    if r.end_ms <= r.start_ms {
        return Err(invalid("end_ms must be after start_ms"));
    }
    if r.end_ms - r.start_ms > BATTLE_LENGTH_MS_MAX {
        return Err(invalid(format!(
            "a battle lasts at most {BATTLE_LENGTH_MS_MAX} ms (24 hours)"
        )));
    }
    let streams: Vec<StreamId> = r.streams.iter().map(|&s| StreamId(s)).collect();
    Battle::new(id, &streams, r.start_ms, r.end_ms).ok_or_else(|| invalid("invalid window"))
}

/// Record a PK battle (journaled; idempotent: the same body again answers the battle as
/// recorded, or — within the retry horizon — the refusal it got). Its event id is
/// derived from the battle id (filed apart from client event ids: no client event
/// blocks it). When the server's clock passes `end_ms` the service records the
/// battle's close: from then on the result is final (`state: ended` once committed).
#[utoipa::path(put, path = "/v1/battles/{id}", tag = "battles",
    params(("id" = u64, Path, description = "Battle id")), request_body = BattleRequest, security(("bearer" = [])),
    responses(
        (status = 200, body = BattleResponse),
        (status = 400, description = "Streams or window break the rules (code INVALID_BATTLE); nothing recorded", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "Refused: STREAM_IN_BATTLE (a stream's battle overlaps the window), BATTLE_EXISTS (other content under this id) or BATTLES_FULL", body = ErrorBody),
        (status = 422, description = "Invalid body, or the battle was over when recorded (code INVALID_BATTLE)", body = ErrorBody),
        (status = 501, description = "A cluster node (code BATTLES_UNAVAILABLE)", body = ErrorBody),
        (status = 503, body = ErrorBody),
    ))]
pub(super) async fn put_battle(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    body: Body,
) -> Result<Json<BattleResponse>, ApiError> {
    authorize(&service, &caller, Scope::Ingest)?;
    let id = BattleId(path(id)?);
    let request: BattleRequest = json(&read_body(&service, &caller, body).await?)?;
    unavailable_on_cluster(&service)?;
    let battle = battle_of(id, &request)?;
    let o = apply(&service, &[Event::Battle(battle)], &[]).await?[0];
    // The event id is the battle id's: another body under it is another battle.
    if o.code() == Some(RejectCode::EventIdReused) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            RejectCode::BattleExists.as_str(),
            "this battle id holds a battle with other streams or another window; nothing was recorded",
        ));
    }
    ApiError::refusal(&o)?;
    if let Some(code) = o.code() {
        let (status, message) = match code {
            RejectCode::InvalidBattle => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "the battle's window was over when it was recorded",
            ),
            RejectCode::StreamInBattle => (
                StatusCode::CONFLICT,
                "a stream is in another battle whose window overlaps this one",
            ),
            RejectCode::BattleExists => (
                StatusCode::CONFLICT,
                "this battle id holds a battle with other streams or another window",
            ),
            RejectCode::BattlesFull => (
                StatusCode::CONFLICT,
                "engine.battles_max battles are held (scheduled, live or recently ended)",
            ),
            _ => (StatusCode::UNPROCESSABLE_ENTITY, "the battle was rejected"),
        };
        return Err(ApiError::new(status, code.as_str(), message));
    }
    let now = service.clock.now().0;
    let view = service
        .engine
        .battle(id, BATTLE_TOP_GIFTERS)
        .ok_or_else(not_found)?;
    Ok(Json(response(&view, now, service.commits.watermark())))
}

fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "BATTLE_NOT_FOUND",
        "no such battle (or it ended longer ago than engine.battle_retention_ms)",
    )
}

/// A battle: its streams, window, state, each side's score and top gifters, and the
/// result once ended.
#[utoipa::path(get, path = "/v1/battles/{id}", tag = "battles",
    params(("id" = u64, Path, description = "Battle id")), security(("bearer" = [])),
    responses(
        (status = 200, body = BattleResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, description = "No such battle (code BATTLE_NOT_FOUND)", body = ErrorBody),
        (status = 501, description = "A cluster node (code BATTLES_UNAVAILABLE)", body = ErrorBody),
    ))]
pub(super) async fn get_battle(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<BattleResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let id = BattleId(path(id)?);
    unavailable_on_cluster(&service)?;
    let now = service.clock.now().0;
    let view = service
        .engine
        .battle(id, BATTLE_TOP_GIFTERS)
        .ok_or_else(not_found)?;
    Ok(Json(response(&view, now, service.commits.watermark())))
}
