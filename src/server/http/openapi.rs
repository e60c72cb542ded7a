//! The OpenAPI document of the HTTP API, generated (utoipa) from the very types and
//! handlers of [`super::events`], [`super::reads`] and [`super::economy`], so it cannot drift from them.

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::OpenApi;

use super::{battles, economy, events, history, reads, videos, windows};

#[derive(OpenApi)]
#[openapi(
    info(title = "giftstream", description = "Gift stream processor: events, wallets, creators, leaderboards, live feed."),
    paths(
        events::post_events, events::put_user, reads::get_wallet, history::get_transactions,
        reads::get_creator, reads::get_creator_top, reads::get_stream_top,
        reads::get_top_creators, events::put_goal, reads::get_stream, reads::get_feed,
        videos::get_video, videos::get_video_top, windows::get_gift_stats,
        battles::put_battle, battles::get_battle,
        economy::get_economy, economy::get_packages, events::put_economy, super::healthz, super::readyz,
        super::metrics_route
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
/// `event` name and its `data`, a JSON text whose `contentSchema` is
/// [`FeedMessage`](crate::server::sse::FeedMessage).
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
    add_retry_after(&mut doc);
    doc.to_string()
}

/// Answers every authenticated route can give before its handler runs: 429 after too
/// many failed authentications from the address (`AUTH_RATE_LIMITED`, with
/// `Retry-After`), 503 when `limits.http_requests_inflight_max` requests are in flight
/// (`OVERLOADED`), and for a route with a body 415 when it is not declared JSON
/// (`UNSUPPORTED_MEDIA_TYPE`) and 408 when it is not read in time (`BODY_TIMEOUT`).
/// Every 429 and 503 documents its `Retry-After` header.
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
            responses.entry("415").or_insert_with(|| serde_json::json!({
                "description": "The body is not declared JSON: Content-Type must be application/json (code UNSUPPORTED_MEDIA_TYPE); nothing applied",
                "content": error.clone(),
            }));
        }
        if has_body {
            responses.entry("408").or_insert_with(|| serde_json::json!({
                "description": "The body was not read in time (code BODY_TIMEOUT); nothing applied",
                "content": error.clone(),
            }));
        }
    }
}

/// Every 429 and 503 answer carries `Retry-After` (the exact wait where it is known, a
/// second otherwise): the document says so on each.
fn add_retry_after(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    for responses in paths
        .values_mut()
        .filter_map(|p| p.as_object_mut())
        .flat_map(|p| p.values_mut())
        .filter_map(|o| o.get_mut("responses").and_then(|r| r.as_object_mut()))
    {
        for status in ["429", "503"] {
            if let Some(response) = responses.get_mut(status).and_then(|r| r.as_object_mut()) {
                response.entry("headers").or_insert_with(|| serde_json::json!({
                    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
                }));
            }
        }
    }
}

pub(super) async fn openapi() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(openapi_json).clone(),
    )
        .into_response()
}
