//! A small closed-loop ingest client for BENCHMARKS.md until `giftload` exists:
//! funds `--users` wallets, then sends batches of gifts for `--seconds` over the binary
//! protocol (pipelined, `--inflight` per connection) or HTTP/JSON, and prints gifts/s.
//!
//! `cargo run --release --example ingest -- --tcp 127.0.0.1:7070 --connections 4`
//! `cargo run --release --example ingest -- --http 127.0.0.1:8080 --connections 4`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use giftstream::client::Client;
use giftstream::engine::{
    Channel, CreatorId, Event, EventId, Gift, GiftId, Recharge, StreamId, UserId,
};
use rand::{RngExt, SeedableRng};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    tcp: Option<String>,
    #[arg(long)]
    http: Option<String>,
    #[arg(long, default_value = "dev-ingest-token-0001")]
    token: String,
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    #[arg(long, default_value_t = 10_000)]
    creators: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Share of gifts (0..=1) sent to creator 0 (one hot creator and stream).
    #[arg(long, default_value_t = 0.0)]
    hot: f64,
}

fn gift_json(e: &Event) -> serde_json::Value {
    let Event::Gift(g) = e else { unreachable!() };
    serde_json::json!({"type": "gift", "event_id": uuid::Uuid::from_u128(g.id.0).to_string(), "sender": g.sender.0,
        "creator": g.creator.0, "stream": g.stream.0, "gift": "rose", "count": g.count})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.tcp.is_some() != args.http.is_some(),
        "give --tcp or --http"
    );
    anyhow::ensure!(
        args.seconds <= 600 && args.connections <= 256 && args.batch <= 10_000,
        "bounded runs only"
    );
    let run_id = u128::from(std::process::id()) << 96
        | u128::from(Instant::now().elapsed().as_nanos() as u64) << 64;
    // Fund every user with a large custom web recharge, over TCP or HTTP.
    let funding: Vec<Event> = (0..args.users)
        .map(|u| {
            Event::Recharge(Recharge {
                id: EventId(run_id | 1 << 95 | u128::from(u)),
                user: UserId(args.creators + u),
                coins: 2_500_000,
                price: rust_decimal::Decimal::new(32_000, 0),
                currency: giftstream::economy::Currency::USD,
                package: None,
                channel: Channel::Web,
            })
        })
        .collect();
    let http = reqwest::Client::new();
    if let Some(addr) = &args.tcp {
        let c = Client::connect(addr.as_str(), &args.token).await?;
        for chunk in funding.chunks(5000) {
            c.send(chunk).await?;
        }
    } else {
        let addr = args.http.clone().unwrap();
        for chunk in funding.chunks(5000) {
            let events: Vec<_> = chunk
                .iter()
                .map(|e| {
                    let Event::Recharge(r) = e else { unreachable!() };
                    serde_json::json!({"type": "recharge", "event_id": uuid::Uuid::from_u128(r.id.0).to_string(), "user": r.user.0,
                        "coins": r.coins, "price": "32000", "currency": "USD", "channel": "web"})
                })
                .collect();
            let resp = http
                .post(format!("http://{addr}/v1/events"))
                .bearer_auth(&args.token)
                .json(&serde_json::json!({"events": events}))
                .send()
                .await?;
            anyhow::ensure!(resp.status().is_success(), "funding: {}", resp.status());
        }
    }
    let sent = Arc::new(AtomicU64::new(0));
    let accepted = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for conn in 0..args.connections {
        let (args, sent, accepted, http, all_latencies) = (
            args.clone(),
            sent.clone(),
            accepted.clone(),
            http.clone(),
            latencies.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(conn as u64);
            let mut next = 0u128;
            let mut batch = move || -> Vec<Event> {
                (0..args.batch)
                    .map(|_| {
                        next += 1;
                        let creator = if rng.random_bool(args.hot) {
                            0
                        } else {
                            rng.random_range(0..args.creators)
                        };
                        Event::Gift(Gift {
                            id: EventId(run_id | (conn as u128) << 48 | next),
                            sender: UserId(args.creators + rng.random_range(0..args.users)),
                            creator: CreatorId(creator),
                            stream: StreamId(creator),
                            gift: GiftId(0),
                            count: 1,
                        })
                    })
                    .collect()
            };
            if let Some(addr) = &args.tcp {
                let client = Client::connect(addr.as_str(), &args.token).await.unwrap();
                let mut window = std::collections::VecDeque::new();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    while window.len() < args.inflight {
                        window.push_back((Instant::now(), client.submit(&batch()).await.unwrap()));
                    }
                    let (sent_at, pending) = window.pop_front().unwrap();
                    let outcomes = pending.outcomes().await.unwrap();
                    latencies.push(sent_at.elapsed().as_micros() as u64);
                    sent.fetch_add(outcomes.len() as u64, Ordering::Relaxed);
                    accepted.fetch_add(
                        outcomes.iter().filter(|o| o.is_accepted()).count() as u64,
                        Ordering::Relaxed,
                    );
                }
                for (_, p) in window {
                    let _ = p.outcomes().await;
                }
                all_latencies.lock().unwrap().extend(latencies);
            } else {
                let url = format!("http://{}/v1/events", args.http.as_ref().unwrap());
                while Instant::now() < deadline {
                    let events: Vec<_> = batch().iter().map(gift_json).collect();
                    let body = serde_json::json!({"events": events}).to_string();
                    let resp = http
                        .post(&url)
                        .bearer_auth(&args.token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    let v: serde_json::Value = resp.json().await.unwrap();
                    let o = v["outcomes"].as_array().unwrap();
                    sent.fetch_add(o.len() as u64, Ordering::Relaxed);
                    accepted.fetch_add(
                        o.iter().filter(|o| o["status"] == "accepted").count() as u64,
                        Ordering::Relaxed,
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = sent.load(Ordering::Relaxed);
    println!(
        "{}: {} connections, batch {}, {:.1} s: {} gifts answered ({} accepted), {:.0} gifts/s",
        if args.tcp.is_some() { "tcp" } else { "http" },
        args.connections,
        args.batch,
        secs,
        n,
        accepted.load(Ordering::Relaxed),
        n as f64 / secs
    );
    let mut l = latencies.lock().unwrap().clone();
    if !l.is_empty() {
        l.sort_unstable();
        let at = |q: f64| l[((l.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!(
            "batch round trip (closed loop, {} batches): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            l.len(),
            at(0.5),
            at(0.99),
            at(0.999),
            at(1.0)
        );
    }
    Ok(())
}
