//! Consumers of committed runs that write for readers outside giftstream, each a
//! [`Sink`](crate::persist::follow::Sink) run by `persist::follow` (the read model's
//! machinery: queue, journal read-back, retries, lag, the journal trim's floor):
//!
//! - `changes`: the change stream, every committed event with its outcome as versioned
//!   JSON in one Redis stream per ledger, for downstream services (consumer groups);
//! - `history`: each user's durable history, a Redis stream per user, read back by
//!   [`HistoryReader`] for `GET /v1/users/{id}/transactions` pages.
//!
//! Submodules import one way: `changes` <- `history`; none imports this file.

mod changes;
mod history;

pub use changes::{ChangeStream, EconomyAt, FIELD, SCHEMA_VERSION, document};
pub use history::{History, HistoryLine, HistoryReader, user_key as history_user_key};
