//! The connection to the journal's Redis: one Redis or a Redis Cluster, with bounded
//! timeouts; commands about one slot routed to its master.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;

use crate::persist::journal::JournalError;

/// A command that takes longer fails (and the committer retries it).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to one Redis or to a Redis Cluster (which routes each command to the
/// master of its key's slot).
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Runs `cmd` (a keyless command about one slot, e.g. `WAIT` or `SCAN`) on the master
    /// of `slot_key`'s slot; on one Redis, on it. redis-rs would send a keyless command to
    /// a random node (or every node) of a cluster.
    pub async fn on_slot_master<T: redis::FromRedisValue>(
        &mut self,
        cmd: redis::Cmd,
        slot_key: &str,
    ) -> Result<T, JournalError> {
        let reply = match self {
            RedisConn::Single(c) => cmd.query_async(c).await,
            RedisConn::Cluster(c) => {
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::with_key(slot_key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                c.route_command(cmd, routing).await
            }
        }
        .map_err(JournalError::from)?;
        redis::from_redis_value(reply).map_err(|e| JournalError::Reply(format!("redis reply: {e}")))
    }

    /// The keys matching `pattern` in the slot of `slot_key` (on a Redis Cluster, SCAN
    /// goes to that slot's master; on one Redis, to it).
    pub async fn scan_slot(
        &mut self,
        slot_key: &str,
        pattern: &str,
    ) -> Result<Vec<String>, JournalError> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, page): (u64, Vec<String>) = self.on_slot_master(scan, slot_key).await?;
            keys.extend(page);
            cursor = next;
            if cursor == 0 {
                return Ok(keys);
            }
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection with bounded timeouts (redis-rs's default response timeout, 500 ms, is
/// too short for a large write). It reconnects by itself; a command that failed is not
/// retried by it (callers retry).
pub async fn connect(url: &str) -> Result<RedisConn, JournalError> {
    connect_to(url, false).await
}

/// Like [`connect`]; with `cluster`, `url` is a comma-separated list of seed nodes of a
/// Redis Cluster (the same timeouts; it follows `MOVED`/`ASK` and refreshes its slot map
/// by itself, retrying a command at most twice).
pub async fn connect_to(url: &str, cluster: bool) -> Result<RedisConn, JournalError> {
    if cluster {
        let seeds: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let client = redis::cluster::ClusterClientBuilder::new(seeds)
            .response_timeout(RESPONSE_TIMEOUT)
            .connection_timeout(CONNECTION_TIMEOUT)
            .retries(2)
            .max_retry_wait(500)
            .build()
            .map_err(JournalError::from)?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(JournalError::from)?;
        return Ok(RedisConn::Cluster(conn));
    }
    let client = redis::Client::open(url).map_err(JournalError::from)?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_with_config(client, config)
        .await
        .map(RedisConn::Single)
        .map_err(JournalError::from)
}
