//! A downstream consumer of giftstream's change stream (`[change_stream]`): reads the
//! Redis stream `giftstream:{ledger}:changes` with a consumer group (`XREADGROUP`),
//! applies each event to its own state, and acknowledges it (`XACK`).
//!
//! ```text
//! cargo run --release --example change_consumer -- redis://127.0.0.1:6379 [group] [consumer] [start]
//! ```
//!
//! `start` is where a new group begins: `0` (the oldest event the stream keeps), `$`
//! (only events committed from now on) or `<seq>-0` (after event `seq`).
//!
//! **Exactly once across its own crash.** Redis delivers an entry again until it is
//! acknowledged, so a consumer that dies between its effect and its `XACK` sees the
//! entry again. This one records its effect and the last sequence number it applied in
//! one atomic step (a Lua script over its own keys; a database consumer would use one
//! transaction): an entry whose `seq` is not above the recorded one is acknowledged
//! without applying it again. After a restart it first reads its own pending entries
//! (`XREADGROUP ... 0`), then new ones (`>`). Its effect here: a list of every event
//! seen (`<prefix>:seen`, "seq type status code") and the last seq (`<prefix>:state`).
//!
//! Order: sequence numbers are gap-free over committed events, so `seq` = last + 1
//! always; one consumer per group keeps that order (several consumers of one group
//! share the entries, each in order, not the whole in order).

/// A single node's change stream (a cluster node's: `giftstream:{ledger-<node>}:changes`).
pub const STREAM: &str = "giftstream:{ledger}:changes";

/// Makes `group` at `start` unless it exists.
pub async fn ensure_group(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    group: &str,
    start: &str,
) -> redis::RedisResult<()> {
    let made: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(group)
        .arg(start)
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match made {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// Applies the lines after the recorded seq and records the new one, atomically.
/// KEYS[1] the state hash, KEYS[2] the seen list; ARGV: seq and line pairs, in order.
const APPLY: &str = r"
local last = tonumber(redis.call('HGET', KEYS[1], 'last_seq') or '0')
local applied = 0
for i = 1, #ARGV, 2 do
  local seq = tonumber(ARGV[i])
  if seq > last then
    redis.call('RPUSH', KEYS[2], ARGV[i + 1])
    last = seq
    applied = applied + 1
  end
end
redis.call('HSET', KEYS[1], 'last_seq', last)
return applied
";

/// One consumer: where it reads and where it records its effects.
pub struct Consumer {
    pub stream: String,
    pub group: String,
    pub name: String,
    /// Its own keys: `<prefix>:state` and `<prefix>:seen` (one hash tag, so one slot).
    pub prefix: String,
}

type Entries = Vec<(String, Vec<(String, String)>)>;

impl Consumer {
    /// Reads and applies one batch of at most `count` entries (its own pending ones
    /// first, then new ones, waiting at most `block_ms`); returns how many it applied.
    pub async fn step(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        count: usize,
        block_ms: u64,
    ) -> redis::RedisResult<usize> {
        let mut entries = self.read(conn, "0", count, None).await?;
        if entries.is_empty() {
            entries = self.read(conn, ">", count, Some(block_ms)).await?;
        }
        if entries.is_empty() {
            return Ok(0);
        }
        let script = redis::Script::new(APPLY);
        let mut apply = script.prepare_invoke();
        apply
            .key(format!("{}:state", self.prefix))
            .key(format!("{}:seen", self.prefix));
        for (_, fields) in &entries {
            let Some((_, json)) = fields.iter().find(|(k, _)| k == "event") else {
                continue;
            };
            let doc: serde_json::Value = serde_json::from_str(json).map_err(|e| {
                redis::RedisError::from((redis::ErrorKind::Parse, "event JSON", e.to_string()))
            })?;
            let outcome = &doc["outcome"];
            let line = format!(
                "{} {} {} {}",
                doc["seq"],
                doc["type"].as_str().unwrap_or("?"),
                outcome["status"].as_str().unwrap_or("?"),
                outcome["code"].as_str().unwrap_or("-"),
            );
            apply.arg(doc["seq"].as_u64().unwrap_or(0)).arg(line);
        }
        let applied: usize = apply.invoke_async(conn).await?;
        let ids: Vec<&str> = entries.iter().map(|(id, _)| id.as_str()).collect();
        let _: u64 = redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(&ids)
            .query_async(conn)
            .await?;
        Ok(applied)
    }

    async fn read(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        from: &str,
        count: usize,
        block_ms: Option<u64>,
    ) -> redis::RedisResult<Entries> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.name)
            .arg("COUNT")
            .arg(count);
        if let Some(ms) = block_ms {
            cmd.arg("BLOCK").arg(ms);
        }
        cmd.arg("STREAMS").arg(&self.stream).arg(from);
        let reply: Option<Vec<(String, Entries)>> = cmd.query_async(conn).await?;
        Ok(reply
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .collect())
    }
}

#[tokio::main(flavor = "current_thread")]
#[allow(dead_code)]
async fn main() -> redis::RedisResult<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let url = arg(0, "redis://127.0.0.1:6379");
    let consumer = Consumer {
        stream: STREAM.to_owned(),
        group: arg(1, "example"),
        name: arg(2, "consumer-1"),
        prefix: format!("consumer:{{{}}}", arg(1, "example")),
    };
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    ensure_group(&mut conn, &consumer.stream, &consumer.group, &arg(3, "0")).await?;
    loop {
        let applied = consumer.step(&mut conn, 100, 1000).await?;
        if applied > 0 {
            let last: u64 = redis::cmd("HGET")
                .arg(format!("{}:state", consumer.prefix))
                .arg("last_seq")
                .query_async(&mut conn)
                .await?;
            println!("applied {applied}; last seq {last}");
        }
    }
}
