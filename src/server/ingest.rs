//! The one admission path of a batch of events, whichever protocol brought it (the
//! binary protocol's request frame or `POST /v1/events` and the other write routes).
//!
//! Order of checks, the same for both: batch size ([`check_batch_len`], before the
//! events are converted), then token rate → partition → pending commits ([`admit`]).
//! The rate comes first so that a flood of refused batches (wrong partition, storage
//! behind) still spends the sender's budget; nothing is applied until every check passed.

use std::time::Duration;

use crate::cluster::WrongPartition;
use crate::engine::{Event, Outcome};
use crate::telemetry;

use super::Service;
use super::auth::TokenId;

/// The protocol a batch came by: a metric label, and where its limits are named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Http,
}

impl Protocol {
    /// Its `protocol` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
        }
    }

    /// The `limit` label of a batch over its size limit (the limit's config key).
    fn batch_limit(self) -> &'static str {
        match self {
            Protocol::Tcp => "events_per_frame",
            Protocol::Http => "http_events_per_batch",
        }
    }
}

/// Why a batch's size is refused (each protocol words and codes it its own way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    Empty,
    TooLarge { events: usize, max: usize },
}

/// A batch needs at least one event and at most `max` (counted when over).
pub fn check_batch_len(events: usize, max: usize, protocol: Protocol) -> Result<(), BatchError> {
    if events == 0 {
        return Err(BatchError::Empty);
    }
    if events > max {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => protocol.batch_limit())
            .increment(1);
        return Err(BatchError::TooLarge { events, max });
    }
    Ok(())
}

/// Why a valid batch was not applied; nothing of it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The token's request rate (`limits.token_requests_per_second`) is spent: the next
    /// request is allowed after `retry_after`.
    RateLimited { retry_after: Duration },
    /// A cluster node does not own an event's partition (the first such event).
    WrongPartition(WrongPartition),
    /// Commits are behind (`commit.pending_events_max`): storage is slow or down.
    Unavailable,
}

/// Where a batch's request pays the token's rate.
#[derive(Debug, Clone, Copy)]
pub enum Rate {
    /// Here: a binary request frame's token, once per frame.
    Charge(TokenId),
    /// Paid already: an HTTP request pays when it is authorized (every route, before its
    /// body is read), so that a request refused later still paid.
    Paid,
}

/// A batch applied: its outcomes in order, and the sequence number its ack waits for in
/// `durable` ack mode.
#[derive(Debug)]
pub struct Admitted {
    pub outcomes: Vec<Outcome>,
    pub wait_seq: u64,
}

/// Spends one request of `token`'s rate (counted when spent already).
pub fn charge_rate(service: &Service, token: TokenId) -> Result<(), Refusal> {
    service.auth.charge(token).map_err(|retry_after| {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "token_rate").increment(1);
        Refusal::RateLimited { retry_after }
    })
}

/// Checks a validated batch (rate → partition → pending commits) and applies it.
/// `issued_ms`: one per event (0 = not given), or empty.
pub fn admit(
    service: &Service,
    rate: Rate,
    events: &[Event],
    issued_ms: &[u64],
    protocol: Protocol,
) -> Result<Admitted, Refusal> {
    if let Rate::Charge(token) = rate {
        charge_rate(service, token)?;
    }
    service
        .check_partitions(events, protocol.as_str())
        .map_err(Refusal::WrongPartition)?;
    if !service.commits.accepting() {
        metrics::counter!(telemetry::LIMIT_REJECTIONS_TOTAL, "limit" => "pending_commit_events")
            .increment(1);
        return Err(Refusal::Unavailable);
    }
    let outcomes = service.apply(events, issued_ms, protocol.as_str());
    let wait_seq = outcomes.iter().map(|o| o.seq).max().unwrap_or(0);
    Ok(Admitted { outcomes, wait_seq })
}
