//! The Redis read model: creator totals, leaderboards and stream goals that ranking
//! services read straight from Redis, fed from committed runs off the ack path.
//!
//! Keys live under one hash tag per bucket (`layout`): `creator:<id>` and
//! `stream:<id>` hashes, their `:top-gifters` sorted sets (top `engine.top_k` only),
//! `top-creators`, optional `user:<id>` wallets, and per bucket (per node in a cluster)
//! `seq`, `writer` and `format`. Projectors (`task`) fold committed entries
//! (`fold`) and write windows of absolute values with a Lua script that checks `seq`
//! and claims the window (`write`), so a write is exactly once and never shows an
//! event that was not durable. A start catches up from the journal or rebuilds from
//! the engine (`rebuild`); the audit compares it with the engine (`compare`); the
//! HTTP routes read it through [`ReadModelReader`] (`reader`). Scores are doubles,
//! exact to 2^53 ([`SCORE_MAX`]); hash fields are exact decimal strings. The full
//! explanation (top-K only, cluster merging, exactly once) is in ARCHITECTURE.md.
//!
//! Windowed leaderboards (`engine.windows`) are written beside the all-time ones, in
//! keys that carry the window and expire with it (`windows`).
//!
//! Submodules import one way: `layout` <- `write` <- `windows` <- `fold` <- `task`, `layout` <-
//! `reader` <- `rebuild` <- `task`, `reader` <- `compare`; none imports this file. (`task` runs each projector on
//! `persist::thread`.)

mod compare;
mod fold;
mod layout;
mod reader;
mod rebuild;
mod task;
mod windows;
mod write;

pub use compare::compare;
pub use fold::EconomyLookup;
pub use layout::{
    BUCKETS_KEY, FORMAT, Layout, PREFIX, SCORE_MAX, SEQ_KEY, TOP_CREATORS, creator_key,
    creator_top_key, creator_top_window_key, stream_key, stream_top_key, stream_top_window_key,
    top_creators_window_key, user_key, video_key, video_top_key,
};
pub use reader::{
    CreatorTotals, ReadError, ReadModelReader, StreamTotals, VideoTotals, projected_seq,
    projected_seq_of, top_creators,
};
pub use rebuild::{ProjectorStart, prepare, rebuild};
pub use task::{ProjectorHandle, spawn_projector};
pub use windows::expire_at_ms;
