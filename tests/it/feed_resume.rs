//! The resumable live feed (issue #32, feature 5): every message carries an SSE `id:`;
//! a client reconnecting with `Last-Event-ID` gets exactly what it missed (no gap, no
//! repeat) from the stream's replay buffer, then the current goal, then the live
//! messages; `reset` when what it missed is no longer kept; `goal_reached` once per goal.
//! A real server on 127.0.0.1:0, real SSE bytes.

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};

use crate::support::server::*;

/// A feed id as `(seq, part)`, to compare.
struct FeedIdOf;

impl FeedIdOf {
    fn of(id: &str) -> (u64, u8) {
        let f = giftstream::server::sse::FeedId::parse(id).unwrap();
        (f.seq, f.part)
    }
}

/// One parsed SSE message.
#[derive(Debug, Clone)]
struct Msg {
    id: Option<String>,
    event: String,
    data: Value,
}

struct Feed {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    text: String,
}

impl Feed {
    async fn open(s: &TestServer, stream: u64, last_event_id: Option<&str>) -> Feed {
        let mut req = s
            .http_client
            .get(s.url(&format!("/v1/streams/{stream}/feed")))
            .bearer_auth(READ);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        Feed {
            body: Box::pin(resp.bytes_stream()),
            text: String::new(),
        }
    }

    /// The next message (keep-alive comments skipped), within 5 s.
    async fn next(&mut self) -> Msg {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut msg = Msg {
                    id: None,
                    event: String::new(),
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        msg.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        msg.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        msg.data = serde_json::from_str(v).unwrap();
                    }
                }
                if msg.event.is_empty() {
                    continue; // a keep-alive comment
                }
                return msg;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .expect("a feed message in time")
                .expect("the feed stays open")
                .unwrap();
            self.text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `n` messages.
    async fn take(&mut self, n: usize) -> Vec<Msg> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.next().await);
        }
        out
    }
}

fn rose(n: u128, count: u32) -> Value {
    json!({"type": "gift", "event_id": uuid(n), "sender": 42, "creator": 7,
           "stream": 9001, "gift": "rose", "count": count})
}

/// User 42 buys 500 coins.
async fn fund(s: &TestServer) {
    let (st, body) = s
        .post_events(json!([
            {"type": "recharge", "event_id": uuid(1), "user": 42, "coins": 500, "price": "6.49",
             "currency": "USD", "package": "coins_500", "channel": "app"}
        ]))
        .await;
    assert_eq!(st, 200, "{body}");
}

/// Posts gifts; their sequence numbers.
async fn send(s: &TestServer, gifts: Value) -> Vec<u64> {
    let (st, body) = s.post_events(gifts).await;
    assert_eq!(st, 200, "{body}");
    body["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            assert_eq!(o["status"], "accepted", "{o}");
            o["seq"].as_u64().unwrap()
        })
        .collect()
}

/// The feed publishes a committed run just after its events are acknowledged: give it
/// that moment before a (re)connect whose first messages depend on it.
async fn published() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

async fn set_goal(s: &TestServer, target: u64) {
    let body = json!({"creator": 7, "coins_target": target}).to_string();
    let (st, resp) = s
        .send("PUT", "/v1/streams/9001/goal", Some(INGEST), body)
        .await;
    assert_eq!(st, 200, "{resp}");
}

fn kinds(msgs: &[Msg]) -> Vec<(&str, Option<&str>)> {
    msgs.iter()
        .map(|m| (m.event.as_str(), m.id.as_deref()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_gets_what_it_missed_then_the_live_feed_and_a_goal_reached_once() {
    let s = TestServer::start_with(|c| c.limits.sse_replay_events = 4).await;
    fund(&s).await;
    set_goal(&s, 10).await;

    // A first subscriber: the goal first (id `<seq>.1`), then a gift and its goal update.
    let mut a = Feed::open(&s, 9001, None).await;
    let first = a.next().await;
    assert_eq!(first.event, "goal");
    assert!(first.id.as_deref().unwrap().ends_with(".1"), "{first:?}");
    let s1 = send(&s, json!([rose(10, 1)])).await[0];
    let got = a.take(2).await;
    let (g1, goal1) = (s1.to_string(), format!("{s1}.1"));
    assert_eq!(kinds(&got), [("gift", Some(&*g1)), ("goal", Some(&*goal1))]);
    assert_eq!(got[0].data["seq"], s1);
    assert_eq!(got[1].data["progress"], 1);
    drop(a);

    // Two gifts while it is away; it comes back with the last id it saw.
    let missed = send(&s, json!([rose(11, 1), rose(12, 1)])).await;
    published().await;
    let mut b = Feed::open(&s, 9001, Some(&goal1)).await;
    let got = b.take(3).await;
    let ids: Vec<String> = missed.iter().map(u64::to_string).collect();
    assert_eq!(
        kinds(&got)[..2],
        [("gift", Some(&*ids[0])), ("gift", Some(&*ids[1]))],
        "{got:?}"
    );
    assert_eq!(got[2].event, "goal", "{got:?}");
    assert_eq!(got[2].data["progress"], 3);
    // Then the live feed, nothing repeated.
    let s4 = send(&s, json!([rose(13, 1)])).await[0];
    let got = b.take(2).await;
    assert_eq!(got[0].data["seq"], s4, "{got:?}");
    assert_eq!(got[1].data["progress"], 4);

    // A gift that meets the goal: gift, goal, goal_reached (`<seq>.2`), once.
    let s5 = send(&s, json!([rose(14, 7)])).await[0];
    let got = b.take(3).await;
    let reached = format!("{s5}.2");
    assert_eq!(kinds(&got)[2], ("goal_reached", Some(&*reached)), "{got:?}");
    assert_eq!(
        got[2].data,
        json!({"event": "goal_reached", "stream": 9001, "creator": 7, "coins_target": 10,
               "coins_received": 11})
    );
    // One that saw only the gift that met the goal: the goal after the replayed
    // goal_reached never has an earlier id than it (else the next reconnect would get
    // the goal_reached again).
    let mut early = Feed::open(&s, 9001, Some(&format!("{}.1", s5 - 1))).await;
    let got = early.take(3).await;
    assert_eq!(kinds(&got)[1], ("goal_reached", Some(&*reached)), "{got:?}");
    assert_eq!(got[2].event, "goal", "{got:?}");
    let ids: Vec<_> = got
        .iter()
        .map(|m| FeedIdOf::of(m.id.as_deref().unwrap()))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] <= w[1]),
        "ids never go back: {got:?}"
    );
    drop(early);
    let s6 = send(&s, json!([rose(15, 1)])).await[0];
    let got = b.take(2).await;
    assert_eq!(
        (got[0].data["seq"].as_u64(), got[1].event.as_str()),
        (Some(s6), "goal"),
        "no second goal_reached: {got:?}"
    );
    // A client that saw the gift but not the goal_reached gets it on reconnect.
    let mut c = Feed::open(&s, 9001, Some(&s5.to_string())).await;
    let got = c.take(3).await;
    assert_eq!(
        kinds(&got),
        [
            ("goal_reached", Some(&*reached)),
            ("gift", Some(&*s6.to_string())),
            ("goal", got[2].id.as_deref())
        ]
    );
    drop(c);

    // A new goal arms it again.
    set_goal(&s, 20).await;
    let got = b.next().await;
    assert_eq!(
        (got.event.as_str(), &got.data["coins_target"]),
        ("goal", &json!(20))
    );
    let s7 = send(&s, json!([rose(16, 9)])).await[0];
    let got = b.take(3).await;
    assert_eq!(
        kinds(&got)[2],
        ("goal_reached", Some(&*format!("{s7}.2"))),
        "{got:?}"
    );
    // A client at the goal reached: its goal comes with that id (never an earlier one,
    // which would have it replayed the goal_reached again next time), nothing replayed.
    let latest = format!("{s7}.2");
    for _ in 0..2 {
        let mut f = Feed::open(&s, 9001, Some(&latest)).await;
        let got = f.next().await;
        assert_eq!(
            (got.event.as_str(), got.id.as_deref()),
            ("goal", Some(&*latest))
        );
    }

    // What is no longer kept (the buffer holds 4 messages): reset, then the goal.
    let mut d = Feed::open(&s, 9001, Some(&g1)).await;
    let got = d.take(2).await;
    assert_eq!(
        (
            got[0].event.as_str(),
            got[0].id.as_deref(),
            &got[0].data["last_event_id"]
        ),
        ("reset", None, &json!(g1)),
        "{got:?}"
    );
    assert_eq!(
        (got[1].event.as_str(), &got[1].data["progress"]),
        ("goal", &json!(21))
    );
    // An id this ledger never issued: reset too.
    let mut e = Feed::open(&s, 9001, Some("999999999")).await;
    assert_eq!(e.next().await.event, "reset");
    // Not a feed id: 400, nothing subscribed.
    for bad in ["abc", "12.5", "-1", ""] {
        let resp = s
            .http_client
            .get(s.url("/v1/streams/9001/feed"))
            .bearer_auth(READ)
            .header("Last-Event-ID", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "BAD_LAST_EVENT_ID", "{bad:?}");
    }
    let metrics = s.metrics().await;
    // The recorder is the process's: other tests count too.
    let count = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} ")));
        line.and_then(|l| l.split(' ').nth(1)?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(count("giftstream_sse_resets_total") >= 2);
    assert!(count("giftstream_sse_resumes_total") >= 4);
    drop((b, d, e));
    s.stop().await.unwrap();
}

/// A feed nobody watches costs nothing, and a reconnect after a restart (a new process:
/// the buffers are memory) is told to reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_without_a_recent_subscriber_keeps_no_buffer_and_a_reconnect_is_reset() {
    let s = TestServer::start().await;
    fund(&s).await;
    let seqs = send(&s, json!([rose(10, 1), rose(11, 1)])).await;
    published().await;
    // Nobody subscribed while they were sent: a client claiming to have seen the first
    // cannot be given the second.
    let mut f = Feed::open(&s, 9001, Some(&seqs[0].to_string())).await;
    let got = f.take(2).await;
    assert_eq!(kinds(&got)[0], ("reset", None), "{got:?}");
    assert_eq!(got[1].data["progress"], 2);
    // From now on it is kept: at the goal's id, a reconnect misses nothing.
    let goal_id = got[1].id.clone().unwrap();
    assert_eq!(goal_id, format!("{}.1", seqs[1]));
    drop(f);
    let later = send(&s, json!([rose(12, 1)])).await[0];
    published().await;
    let mut g = Feed::open(&s, 9001, Some(&goal_id)).await;
    let got = g.next().await;
    assert_eq!(
        (got.event.as_str(), &got.data["seq"]),
        ("gift", &json!(later))
    );
    drop(g);
    s.stop().await.unwrap();
}
