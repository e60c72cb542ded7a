//! The HTTP routes that read a video's gifts: its totals (`GET /v1/videos/{id}`) and
//! its top gifters. A gift on a video is written through `POST /v1/events` (a gift
//! naming `video` instead of `stream`). A single node answers from its engine; a cluster
//! node from the shared read model, as for streams.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::reads::{LimitQuery, TopGiftersResponse, gifters, limit, shared_read_error};
use super::{ApiError, Caller, ErrorBody, authorize, path};
use crate::config::Scope;
use crate::engine::VideoId;
use crate::server::Service;

#[derive(Serialize, ToSchema)]
pub struct VideoResponse {
    video: u64,
    /// The creator gifted to on the video (null: no gift accepted on it yet).
    creator: Option<u64>,
    #[schema(value_type = u64)]
    coins_received: u128,
    /// Gift counts by catalog id.
    #[schema(value_type = BTreeMap<String, u64>)]
    gifts: BTreeMap<String, u128>,
}

/// A video's creator, coins received and gift counts (gifts on the video only; a
/// video has no goal and no live feed).
#[utoipa::path(get, path = "/v1/videos/{id}", tag = "videos",
    params(("id" = u64, Path, description = "Video id")), security(("bearer" = [])),
    responses((status = 200, body = VideoResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_video(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
) -> Result<Json<VideoResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let video = VideoId(path(id)?);
    let mut v = service.engine.video(video);
    if let Some(reader) = &service.shared_reads {
        let merged = reader
            .video_totals(video)
            .await
            .map_err(shared_read_error)?;
        v.coins_received = merged.coins_received;
        v.creator = v.creator.or(merged.creator.map(crate::engine::CreatorId));
    }
    let catalog = &service.engine.economy().gifts;
    Ok(Json(VideoResponse {
        video: video.0,
        creator: v.creator.map(|c| c.0),
        coins_received: v.coins_received,
        gifts: v
            .gifts
            .iter()
            .filter_map(|(g, n)| catalog.get(g.0 as usize).map(|s| (s.id.clone(), *n)))
            .collect(),
    }))
}

/// Top gifters on a video, by coins gifted, best first.
#[utoipa::path(get, path = "/v1/videos/{id}/top-gifters", tag = "leaderboards",
    params(("id" = u64, Path, description = "Video id"), LimitQuery), security(("bearer" = [])),
    responses((status = 200, body = TopGiftersResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub(super) async fn get_video_top(
    State(service): State<Arc<Service>>,
    caller: Caller,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<LimitQuery>, QueryRejection>,
) -> Result<Json<TopGiftersResponse>, ApiError> {
    authorize(&service, &caller, Scope::Read)?;
    let video = VideoId(path(id)?);
    let limit = limit(q, 10, service.config.engine.top_k)?;
    if let Some(reader) = &service.shared_reads {
        let top = reader.video_top_gifters(video, limit).await;
        return Ok(gifters(top.map_err(shared_read_error)?));
    }
    Ok(gifters(service.engine.video_top_gifters(video, limit)))
}
