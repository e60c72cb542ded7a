//! The durable paged history (issue #32, feature 3) over a real Redis: a user with over
//! 10,000 events pages through all of them (`limit=100`, `before`), each line with the
//! outcome its event got and the coin changes adding up to the balance; the newest
//! entries are there as soon as the event is acknowledged; the durable lines equal the
//! engine's own; CSV export; the bounds of the query.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use giftstream::client::Client;
use giftstream::engine::{Event, Status, UserId};
use giftstream::persist::downstream::HistoryReader;
use serde_json::Value;

use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, READ, TestServer};
use crate::support::{account, gift, payout, purchase, recharge, reversal};

const USER: u64 = 7;
const EVENTS: u128 = 10_000;

/// The user's events: a recharge of 100 coins every 25th, gifts of 3 roses between (so
/// the coins run out and some gifts are rejected), a purchase now and then, an account
/// setting, a recharge reversed, and — as a creator — gifts from another user and a
/// payout.
fn load() -> Vec<Event> {
    let mut events = vec![account(1, USER, Some("US"), true, None)];
    for i in 0..EVENTS {
        let id = 1_000 + i;
        events.push(match i % 25 {
            0 => recharge(id, USER, "coins_100"),
            7 => purchase(id, USER, "sticker_pack", 1),
            _ => gift(id, USER, 900, "rose", 3),
        });
    }
    events.push(recharge(50_000, USER, "coins_100"));
    events.push(reversal(50_001, USER, 50_000));
    events.push(recharge(50_002, 8, "coins_7000"));
    events.push(gift(50_003, 8, USER, "rainbow_puke", 60));
    events.push(payout(50_004, USER, 1_000, "USD"));
    events
}

async fn page(s: &TestServer, query: &str) -> Value {
    let (status, body) = s
        .get(
            &format!("/v1/users/{USER}/transactions?{query}"),
            Some(READ),
        )
        .await;
    assert_eq!(status, 200, "{query}: {body}");
    body
}

/// The last seq the durable history wrote.
async fn history_seq(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let seq: Option<u64> = redis::cmd("GET")
        .arg("giftstream:{ledger}:history:seq")
        .query_async(conn)
        .await
        .unwrap();
    seq.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_10000_events_pages_through_all_of_them_and_reads_its_writes() {
    let redis = RedisServer::start();
    let (s, _) = TestServer::on_redis(&redis.url(), |c| c.history.enabled = true).await;
    s.serving().await;
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let stats_before = commandstats(&mut conn).await;
    let client = Client::connect(s.tcp, INGEST).await.unwrap();
    let events = load();
    // Event id -> (seq, accepted) of the user's own events (and its payout).
    let mut mine: HashMap<u64, (u128, bool)> = HashMap::new();
    for chunk in events.chunks(500) {
        let outcomes = client.send(chunk).await.unwrap();
        for (e, o) in chunk.iter().zip(&outcomes) {
            let user = match e {
                Event::Recharge(r) => r.user.0,
                Event::Gift(g) => g.sender.0,
                Event::Purchase(p) => p.user.0,
                Event::RechargeReversal(r) => r.user.0,
                Event::Account(a) => a.user.0,
                Event::Payout(p) => p.creator.0,
                _ => 0,
            };
            if user == USER {
                mine.insert(o.seq, (e.id().0, matches!(o.status, Status::Accepted(_))));
            }
        }
    }
    assert!(mine.len() > 10_000);
    let rejected = mine.values().filter(|m| !m.1).count();
    assert!(rejected > 100, "some gifts found no coins: {rejected}");

    // Read-your-writes: a gift just acknowledged is on the first page at once, whether
    // or not the durable history has it yet.
    let outcomes = client
        .send(&[recharge(60_000, USER, "coins_100")])
        .await
        .unwrap();
    mine.insert(outcomes[0].seq, (60_000, true));
    let first = page(&s, "limit=1").await;
    assert_eq!(first["entries"][0]["seq"], outcomes[0].seq, "{first}");

    // Wait for the durable history to have everything.
    let last = s.engine.last_seq();
    let deadline = Instant::now() + Duration::from_secs(60);
    while history_seq(&mut conn).await < last {
        assert!(Instant::now() < deadline, "the history writer is behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats_after = commandstats(&mut conn).await;

    // The durable lines equal the engine's own for what the engine still holds.
    let reader = HistoryReader::new(
        giftstream::persist::redis::connect(&redis.url())
            .await
            .unwrap(),
        16,
        giftstream::config::downstream::HISTORY_RETENTION_MS_DEFAULT,
    );
    let recent = s.engine.history(UserId(USER), 32);
    let durable = reader
        .page(UserId(USER), None, 100, giftstream::clock::now().0)
        .await
        .unwrap();
    for h in &recent {
        let d = durable
            .iter()
            .find(|d| d.seq == h.seq)
            .expect("in the durable history");
        assert_eq!(
            (d.kind, d.coins_delta, d.code.as_deref(), d.event_id),
            (
                h.kind,
                h.coins_delta,
                h.code.map(|c| c.as_str()),
                h.event_id
            ),
            "seq {}",
            h.seq
        );
    }

    // Page back through everything, 100 at a time.
    let mut seen: Vec<Value> = Vec::new();
    let mut query = "limit=100".to_owned();
    loop {
        let body = page(&s, &query).await;
        let entries = body["entries"].as_array().unwrap();
        assert!(entries.len() <= 100);
        seen.extend(entries.iter().cloned());
        match body["next_before"].as_u64() {
            Some(before) => query = format!("limit=100&before={before}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), mine.len(), "every event of the user, once");
    let mut balance: i128 = 0;
    for pair in seen.windows(2) {
        assert!(
            pair[0]["seq"].as_u64() > pair[1]["seq"].as_u64(),
            "newest first"
        );
    }
    for e in &seen {
        let seq = e["seq"].as_u64().unwrap();
        let (id, accepted) = mine[&seq];
        assert_eq!(e["event_id"], uuid::Uuid::from_u128(id).to_string());
        assert_eq!(e["status"] == "accepted", accepted, "{e}");
        balance += i128::from(e["coins_delta"].as_i64().unwrap());
    }
    let (_, wallet) = s.get(&format!("/v1/users/{USER}/wallet"), Some(READ)).await;
    assert_eq!(
        balance,
        i128::from(wallet["coins"].as_u64().unwrap()),
        "the changes add up to the balance"
    );
    let kinds: std::collections::BTreeSet<&str> =
        seen.iter().map(|e| e["type"].as_str().unwrap()).collect();
    for kind in [
        "account",
        "recharge",
        "gift",
        "purchase",
        "recharge_reversal",
        "payout",
    ] {
        assert!(kinds.contains(kind), "{kind} in {kinds:?}");
    }

    // CSV: a header and one line per entry.
    let csv = s
        .http_client
        .get(s.url(&format!(
            "/v1/users/{USER}/transactions?limit=100&format=csv"
        )))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let text = csv.text().await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], giftstream::server::http::history::CSV_HEADER);
    assert_eq!(lines.len(), 101);
    assert!(
        lines[1].starts_with(&format!("{},", seen[0]["seq"])),
        "{}",
        lines[1]
    );

    // Bad queries change nothing and say why.
    for q in ["limit=0", "limit=101", "format=xml", "before=x"] {
        let (status, body) = s
            .get(&format!("/v1/users/{USER}/transactions?{q}"), Some(READ))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("INVALID_PARAMETER")),
            "{q}"
        );
    }

    // Storage and write cost, for the report.
    let bytes: u64 = redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(giftstream::persist::downstream::history_user_key(
            UserId(USER),
            16,
        ))
        .arg("SAMPLES")
        .arg(0)
        .query_async(&mut conn)
        .await
        .unwrap();
    eprintln!(
        "history: {} lines of user {USER}, MEMORY USAGE {bytes} bytes = {:.1} bytes per line; commands over {} events: {:?}",
        seen.len(),
        bytes as f64 / seen.len() as f64,
        events.len() + 1,
        diff(&stats_before, &stats_after)
    );
    s.stop().await.unwrap();
}

/// `INFO commandstats` calls per command.
pub async fn commandstats(conn: &mut redis::aio::MultiplexedConnection) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .split(',')
                .next()?
                .strip_prefix("calls=")?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

pub fn diff(before: &HashMap<String, u64>, after: &HashMap<String, u64>) -> Vec<(String, u64)> {
    let mut d: Vec<(String, u64)> = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    d.sort();
    d
}
