//! Metric names, units and buckets, the Prometheus recorder, and tracing setup.
//!
//! Names follow Prometheus conventions: `giftstream_` prefix, base units (seconds,
//! bytes), `_total` on counters. Histograms have explicit buckets (the exporter would
//! otherwise emit summaries). No user, creator or stream id is ever a label.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Events applied, by `type` (recharge, gift, payout, account, stream_goal, settlement,
/// economy, purchase) and `outcome` (`accepted` or a reject code); duplicates count as
/// `outcome="duplicate"`.
pub const EVENTS_TOTAL: &str = "giftstream_events_total";
/// From a request's arrival to its response being handed to the socket, by `protocol`
/// (`tcp`, `http`).
pub const INGEST_DURATION_SECONDS: &str = "giftstream_ingest_duration_seconds";
/// Events per request, by `protocol`.
pub const BATCH_EVENTS: &str = "giftstream_batch_events";
/// Duration of one journal append (group commit).
pub const COMMIT_DURATION_SECONDS: &str = "giftstream_commit_duration_seconds";
/// Events per group commit.
pub const COMMIT_BATCH_EVENTS: &str = "giftstream_commit_batch_events";
pub const COMMITS_TOTAL: &str = "giftstream_commits_total";
pub const COMMIT_FAILURES_TOTAL: &str = "giftstream_commit_failures_total";
/// Applied events not yet durable (the commit queue depth).
pub const COMMIT_PENDING_EVENTS: &str = "giftstream_commit_pending_events";
/// How far the wall clock is ahead of the ledger's stamps, which follow a forward step
/// of the clock only slowly (`server::Clock`); 0 normally.
pub const CLOCK_WALL_AHEAD_SECONDS: &str = "giftstream_clock_wall_ahead_seconds";
/// Open binary-protocol connections.
pub const CONNECTIONS: &str = "giftstream_connections";
/// Live-feed subscribers.
pub const SSE_SUBSCRIBERS: &str = "giftstream_sse_subscribers";
/// Feed subscribers disconnected for falling behind.
pub const SSE_DROPPED_TOTAL: &str = "giftstream_sse_dropped_total";
/// Feed reconnects whose missed messages were no longer kept (sent `reset`).
pub const SSE_RESETS_TOTAL: &str = "giftstream_sse_resets_total";
/// Feed reconnects served what they missed from the replay buffer.
pub const SSE_RESUMES_TOTAL: &str = "giftstream_sse_resumes_total";
/// Requests refused by a limit, by `limit`.
pub const LIMIT_REJECTIONS_TOTAL: &str = "giftstream_limit_rejections_total";
pub const TLS_HANDSHAKE_FAILURES_TOTAL: &str = "giftstream_tls_handshake_failures_total";
/// Protocol and HTTP request errors, by `code`.
pub const REQUEST_ERRORS_TOTAL: &str = "giftstream_request_errors_total";
/// Time all shards are locked to cut a snapshot: the `fork` of the BGSAVE-style snapshot
/// (the ingestion stall it causes).
pub const SNAPSHOT_CUT_SECONDS: &str = "giftstream_snapshot_cut_seconds";
/// Time to encode and write a snapshot file (off the ingestion path).
pub const SNAPSHOT_WRITE_SECONDS: &str = "giftstream_snapshot_write_seconds";
pub const SNAPSHOT_FAILURES_TOTAL: &str = "giftstream_snapshot_failures_total";
/// With `snapshot.method = "replica"`: committed events the snapshot replica had not
/// replayed at its last report (every 250 ms).
pub const SNAPSHOT_REPLICA_LAG_EVENTS: &str = "giftstream_snapshot_replica_lag_events";
/// Age of the oldest committed event not yet in the Redis read model (0 when caught up).
pub const READ_MODEL_LAG_SECONDS: &str = "giftstream_read_model_lag_seconds";
/// Atomic read-model writes made.
pub const READ_MODEL_WRITES_TOTAL: &str = "giftstream_read_model_writes_total";
/// Duration of one read-model write.
pub const READ_MODEL_WRITE_SECONDS: &str = "giftstream_read_model_write_seconds";
/// Failed read-model writes (each is retried).
pub const READ_MODEL_WRITE_FAILURES_TOTAL: &str = "giftstream_read_model_write_failures_total";
/// Committed events projected into the read model.
pub const READ_MODEL_EVENTS_TOTAL: &str = "giftstream_read_model_events_total";
/// Committed runs the projector read back from the journal (its queue was full).
pub const READ_MODEL_JOURNAL_READS_TOTAL: &str = "giftstream_read_model_journal_reads_total";
/// Times the lag went over `read_model.lag_max_ms`.
pub const READ_MODEL_LAG_EXCEEDED_TOTAL: &str = "giftstream_read_model_lag_exceeded_total";
/// Sorted-set scores held at 2^53 because the exact value does not fit a double.
pub const READ_MODEL_SATURATED_TOTAL: &str = "giftstream_read_model_saturated_total";
/// 1 once a projector has stopped for good while serving (its Redis lost the read model,
/// or the journal was trimmed past it): the read model no longer follows the ledger
/// until the next start rebuilds it, and no longer holds back the journal trim.
pub const READ_MODEL_STOPPED: &str = "giftstream_read_model_stopped";
/// Age of the oldest committed event not yet in the change stream (0 when caught up).
pub const CHANGE_STREAM_LAG_SECONDS: &str = "giftstream_change_stream_lag_seconds";
/// Committed events written to the change stream.
pub const CHANGE_STREAM_EVENTS_TOTAL: &str = "giftstream_change_stream_events_total";
/// Failed change-stream writes (each is retried).
pub const CHANGE_STREAM_WRITE_FAILURES_TOTAL: &str =
    "giftstream_change_stream_write_failures_total";
/// Committed events the change stream skipped: the journal no longer held them (its
/// Redis lost the stream's data). 0 normally.
pub const CHANGE_STREAM_SKIPPED_TOTAL: &str = "giftstream_change_stream_skipped_total";
/// Age of the oldest committed event not yet in the durable history (0 when caught up).
pub const HISTORY_LAG_SECONDS: &str = "giftstream_history_lag_seconds";
/// Committed events the durable history has written (every event, with a line or not).
pub const HISTORY_EVENTS_TOTAL: &str = "giftstream_history_events_total";
/// Failed durable-history writes (each is retried).
pub const HISTORY_WRITE_FAILURES_TOTAL: &str = "giftstream_history_write_failures_total";
/// Committed events the durable history skipped (the journal no longer held them).
pub const HISTORY_SKIPPED_TOTAL: &str = "giftstream_history_skipped_total";
/// Journal appends whose `WAIT` saw fewer replicas than `redis.wait_replicas`.
pub const REDIS_WAIT_SHORT_TOTAL: &str = "giftstream_redis_wait_short_total";
/// Batches refused because an event belongs to another node's partition.
pub const WRONG_PARTITION_TOTAL: &str = "giftstream_wrong_partition_total";
/// Partitions this cluster node owns, with `node` label (absent on a single node).
pub const CLUSTER_PARTITIONS_OWNED: &str = "giftstream_cluster_partitions_owned";
/// Settlement reports (a node's diamonds credited to a creator another node owns), by
/// `result`: `sent` (written to the owner's inbox), `applied` (journaled by this owner),
/// `refused` (a report for a creator this node does not own, or from an unknown node).
pub const SETTLEMENT_REPORTS_TOTAL: &str = "giftstream_settlement_reports_total";
/// Diamonds other nodes credited this node's creators, added by their reports.
pub const SETTLEMENT_DIAMONDS_TOTAL: &str = "giftstream_settlement_diamonds_total";
/// Creators whose diamonds changed here since their owner was last sent a report.
pub const SETTLEMENT_PENDING_CREATORS: &str = "giftstream_settlement_pending_creators";
/// Always 1, with `version` label.
/// Gift records kept for reversals (gauge), and those dropped while their diamonds were
/// still held because a shard reached `engine.gift_records_per_shard_max` (counter: those
/// gifts can no longer be reversed).
pub const GIFT_RECORDS: &str = "giftstream_gift_records";
pub const GIFT_RECORDS_DROPPED_TOTAL: &str = "giftstream_gift_records_dropped_total";
/// The (window, target, gifter) totals the windowed leaderboards hold (gauge; their
/// memory is proportional to it: `engine.windows`).
pub const WINDOW_PAIRS: &str = "giftstream_window_pairs";
pub const BUILD_INFO: &str = "giftstream_build_info";
/// Always 1, with the journal Redis's `appendonly` and `appendfsync` settings as labels
/// (`unknown` where `CONFIG GET` is refused), read at start.
pub const JOURNAL_REDIS_INFO: &str = "giftstream_journal_redis_info";
/// The engine's shard count of each kind: the ledger's, which a snapshot or the journal
/// fixes (it may differ from `engine.shards` in the config; see the start's log).
pub const ENGINE_SHARDS: &str = "giftstream_engine_shards";
/// Recharges a `recharge_reversal` may still take back (records held; set at each scrape).
pub const RECHARGE_RECORDS: &str = "giftstream_recharge_records";
/// Recharge records dropped before their window ended because a sender shard held
/// `engine.recharge_records_per_shard_max` (a reversal of one is `ORIGINAL_NOT_FOUND`):
/// raise the bound if it grows. Counted by the ledger (replay counts the same), set at
/// each scrape.
pub const RECHARGE_RECORDS_EVICTED_TOTAL: &str = "giftstream_recharge_records_evicted_total";

const LATENCY_BUCKETS_SECONDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0,
];
const SIZE_BUCKETS_EVENTS: [f64; 12] = [
    1.0,
    10.0,
    50.0,
    100.0,
    500.0,
    1_000.0,
    5_000.0,
    10_000.0,
    50_000.0,
    100_000.0,
    500_000.0,
    1_000_000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle (several
/// test servers in one process share it).
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    &LATENCY_BUCKETS_SECONDS,
                )
                .expect("static buckets")
                .set_buckets_for_metric(Matcher::Suffix("_events".to_owned()), &SIZE_BUCKETS_EVENTS)
                .expect("static buckets")
                .install_recorder()
                .expect("the Prometheus recorder is installed once");
            describe();
            metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
            // Gauges exist from the start, so dashboards see 0 rather than no series.
            metrics::gauge!(CONNECTIONS).set(0.0);
            metrics::gauge!(CLOCK_WALL_AHEAD_SECONDS).set(0.0);
            metrics::gauge!(SSE_SUBSCRIBERS).set(0.0);
            metrics::gauge!(COMMIT_PENDING_EVENTS).set(0.0);
            metrics::gauge!(READ_MODEL_LAG_SECONDS).set(0.0);
            metrics::gauge!(READ_MODEL_STOPPED).set(0.0);
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EVENTS_TOTAL, "Events applied, by type and outcome.");
    describe_histogram!(
        INGEST_DURATION_SECONDS,
        Unit::Seconds,
        "Request arrival to response, by protocol."
    );
    describe_histogram!(BATCH_EVENTS, "Events per request, by protocol.");
    describe_histogram!(
        COMMIT_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of one journal append."
    );
    describe_histogram!(COMMIT_BATCH_EVENTS, "Events per group commit.");
    describe_counter!(COMMITS_TOTAL, "Group commits made.");
    describe_counter!(
        COMMIT_FAILURES_TOTAL,
        "Failed journal appends (each is retried)."
    );
    describe_gauge!(COMMIT_PENDING_EVENTS, "Applied events not yet durable.");
    describe_gauge!(
        RECHARGE_RECORDS,
        "Recharges a recharge_reversal may still take back."
    );
    describe_counter!(
        RECHARGE_RECORDS_EVICTED_TOTAL,
        "Recharge records dropped before their window ended (a shard was full)."
    );
    describe_gauge!(
        GIFT_RECORDS,
        "Gift records kept for reversals while their diamonds are held."
    );
    describe_counter!(
        GIFT_RECORDS_DROPPED_TOTAL,
        "Gift records dropped early by engine.gift_records_per_shard_max (those gifts are no longer reversible)."
    );
    describe_gauge!(
        WINDOW_PAIRS,
        "(window, target, gifter) totals held by the windowed leaderboards."
    );
    describe_gauge!(
        READ_MODEL_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest committed event not yet in the Redis read model."
    );
    describe_counter!(READ_MODEL_WRITES_TOTAL, "Atomic read-model writes.");
    describe_histogram!(
        READ_MODEL_WRITE_SECONDS,
        Unit::Seconds,
        "Duration of one read-model write."
    );
    describe_counter!(
        READ_MODEL_WRITE_FAILURES_TOTAL,
        "Failed read-model writes (each is retried)."
    );
    describe_counter!(
        READ_MODEL_EVENTS_TOTAL,
        "Events projected into the read model."
    );
    describe_counter!(
        READ_MODEL_JOURNAL_READS_TOTAL,
        "Committed runs the projector read back from the journal."
    );
    describe_counter!(
        READ_MODEL_LAG_EXCEEDED_TOTAL,
        "Times the read-model lag went over its bound."
    );
    describe_counter!(
        READ_MODEL_SATURATED_TOTAL,
        "Sorted-set scores held at 2^53."
    );
    describe_gauge!(
        READ_MODEL_STOPPED,
        "1 once the read model stopped following the ledger while serving (rebuilt at the next start)."
    );
    describe_gauge!(
        CHANGE_STREAM_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest committed event not yet in the change stream."
    );
    describe_counter!(
        CHANGE_STREAM_EVENTS_TOTAL,
        "Committed events written to the change stream."
    );
    describe_counter!(
        CHANGE_STREAM_WRITE_FAILURES_TOTAL,
        "Failed change-stream writes (each is retried)."
    );
    describe_counter!(
        CHANGE_STREAM_SKIPPED_TOTAL,
        "Committed events the change stream skipped because the journal no longer held them."
    );
    describe_gauge!(
        HISTORY_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest committed event not yet in the durable history."
    );
    describe_counter!(
        HISTORY_EVENTS_TOTAL,
        "Committed events the durable history has written."
    );
    describe_counter!(
        HISTORY_WRITE_FAILURES_TOTAL,
        "Failed durable-history writes (each is retried)."
    );
    describe_counter!(
        HISTORY_SKIPPED_TOTAL,
        "Committed events the durable history skipped because the journal no longer held them."
    );
    describe_counter!(
        REDIS_WAIT_SHORT_TOTAL,
        "Journal appends whose WAIT saw fewer replicas than redis.wait_replicas."
    );
    describe_counter!(
        WRONG_PARTITION_TOTAL,
        "Batches refused because an event belongs to another node's partition, by protocol."
    );
    describe_gauge!(CONNECTIONS, "Open binary-protocol connections.");
    describe_gauge!(
        CLOCK_WALL_AHEAD_SECONDS,
        Unit::Seconds,
        "How far the wall clock is ahead of the ledger's stamps after a forward step (0 normally)."
    );
    describe_gauge!(
        SNAPSHOT_REPLICA_LAG_EVENTS,
        "Committed events the snapshot replica has not replayed yet."
    );

    describe_gauge!(SSE_SUBSCRIBERS, "Live-feed subscribers.");
    describe_counter!(
        SSE_DROPPED_TOTAL,
        "Feed subscribers disconnected for falling behind."
    );
    describe_counter!(
        SSE_RESETS_TOTAL,
        "Feed reconnects whose missed messages were no longer kept (sent reset)."
    );
    describe_counter!(
        SSE_RESUMES_TOTAL,
        "Feed reconnects served what they missed from the replay buffer."
    );
    describe_counter!(
        LIMIT_REJECTIONS_TOTAL,
        "Requests refused by a limit, by limit."
    );
    describe_counter!(REQUEST_ERRORS_TOTAL, "Request errors, by code.");
    describe_counter!(
        TLS_HANDSHAKE_FAILURES_TOTAL,
        "TLS handshakes that failed or timed out (both listeners)."
    );
    describe_gauge!(BUILD_INFO, "Build information.");
    describe_gauge!(
        JOURNAL_REDIS_INFO,
        "The journal Redis's AOF settings at start, as labels (appendonly, appendfsync)."
    );
    describe_gauge!(
        ENGINE_SHARDS,
        "The engine's shards of each kind: the ledger's count, fixed for its life."
    );
    describe_counter!(
        SETTLEMENT_REPORTS_TOTAL,
        "Settlement reports, by result (sent, applied, refused)."
    );
    describe_counter!(
        SETTLEMENT_DIAMONDS_TOTAL,
        "Diamonds other nodes credited this node's creators, added by settlements."
    );
    describe_gauge!(
        SETTLEMENT_PENDING_CREATORS,
        "Creators owned elsewhere whose diamonds changed since their last report."
    );
    describe_gauge!(
        CLUSTER_PARTITIONS_OWNED,
        "Partitions this cluster node owns, by node."
    );
}

/// Structured logs: `RUST_LOG` if set, else `level`; `json` or text.
pub fn init_tracing(level: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    use std::io::IsTerminal;
    // Colours only for a person at a terminal, never in files or pipes.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(std::io::stdout().is_terminal());
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// Counts a batch's outcomes with one metric update per distinct (type, outcome).
pub fn count_outcomes(events: &[crate::engine::Event], outcomes: &[crate::engine::Outcome]) {
    use crate::engine::{EventKind, RejectCode};
    // [kind][0 = accepted, 1 = duplicate, 2.. = reject code]
    let mut counts = [[0u64; 2 + RejectCode::ALL.len()]; EventKind::ALL.len()];
    for (e, o) in events.iter().zip(outcomes) {
        let kind = EventKind::ALL
            .iter()
            .position(|k| *k == e.kind())
            .expect("a kind");
        let slot = if o.duplicate {
            1
        } else {
            o.code().map_or(0, |c| 1 + c as usize)
        };
        counts[kind][slot] += 1;
    }
    for (k, row) in counts.iter().enumerate() {
        for (slot, &n) in row.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let outcome = match slot {
                0 => "accepted",
                1 => "duplicate",
                s => RejectCode::from_u8((s - 1) as u8).map_or("unknown", RejectCode::as_str),
            };
            metrics::counter!(EVENTS_TOTAL, "type" => EventKind::ALL[k].as_str(), "outcome" => outcome)
                .increment(n);
        }
    }
}
