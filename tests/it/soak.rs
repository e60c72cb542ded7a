//! The soak: mixed load (gifts of four prices to 200 creators, in-app recharges, HTTP
//! reads of wallets and leaderboards) against `giftstream serve` over a private Redis
//! (AOF, fsync always), for `GIFTSTREAM_SOAK_SECONDS` (default 24; BENCHMARKS.md's run is
//! 600), with Redis killed and restarted at 1/4 and 3/4 of the run and giftstream killed
//! with SIGKILL and restarted at 1/2. Requests refused while Redis is away
//! (`UNAVAILABLE`) and those in flight at the kill are retried with the same event ids,
//! as a backend would. At the end every event is sent once more, and an independent
//! model checks: nothing acknowledged lost (a resent acknowledged event must come back as
//! a duplicate with its outcome), nothing applied twice (one event per sequence number,
//! gap-free), every wallet and creator total equal to the acknowledged outcomes, the
//! read model caught up and `giftstream audit` clean. The report it prints is what
//! BENCHMARKS.md quotes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use giftstream::client::{Client, ClientError, Pending};
use giftstream::engine::{Event, Outcome, Status};
use giftstream::protocol::error_code;
use rand::{RngExt, SeedableRng};

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, READ, SHIPPED_CONFIG};
use crate::support::{economy, gift, recharge};

const USERS: u64 = 5_000;
const CREATORS: u64 = 200;
/// Creator ids start here (never a user id: no SELF_GIFT).
const CREATOR0: u64 = 1_000_000_000;
const BATCH: usize = 200;
const IN_FLIGHT: usize = 16;
/// Offered load, events/s.
const RATE: f64 = 20_000.0;
/// How long Redis stays down at each restart.
const REDIS_DOWN: Duration = Duration::from_secs(2);
/// (gift, weight): ~16 coins per gift on average.
const GIFTS: [(&str, u32); 4] = [
    ("rose", 70),
    ("panda", 20),
    ("rainbow_puke", 8),
    ("concert", 2),
];
/// One event in this many is a coins_7000 recharge.
const RECHARGE_EVERY: u32 = 400;

/// What the soak knows independently of giftstream.
#[derive(Default)]
struct Ledger {
    /// Event id -> (seq, status) of every answered event.
    answered: HashMap<u128, (u64, Status)>,
    sent: Vec<Vec<Event>>,
    outcomes: BTreeMap<&'static str, u64>,
    /// Acknowledged events answered again as new (= lost).
    lost: u64,
    /// Acknowledged events answered again with another outcome.
    changed: u64,
    duplicates_answered: u64,
    unavailable: u64,
    in_flight_at_kill: u64,
    max_ack_gap: Duration,
    last_ack: Option<Instant>,
    /// Stalls over 500 ms: (when it began, how long).
    stalls: Vec<(Instant, Duration)>,
}

impl Ledger {
    fn record(&mut self, batch: &[Event], outcomes: &[Outcome]) {
        assert_eq!(batch.len(), outcomes.len());
        let now = Instant::now();
        if let Some(last) = self.last_ack {
            self.max_ack_gap = self.max_ack_gap.max(now - last);
            if now - last > Duration::from_millis(500) {
                self.stalls.push((last, now - last));
            }
        }
        self.last_ack = Some(now);
        for (e, o) in batch.iter().zip(outcomes) {
            let id = e.id().0;
            match self.answered.get(&id) {
                Some(&(seq, status)) => {
                    self.duplicates_answered += 1;
                    if !o.duplicate {
                        self.lost += 1;
                    } else if (o.seq, o.status) != (seq, status) {
                        self.changed += 1;
                    }
                }
                None => {
                    self.answered.insert(id, (o.seq, o.status));
                    *self.outcomes.entry(o.label()).or_default() += 1;
                }
            }
        }
    }

    /// Handles one request's answer; a retryable refusal goes back to `retry`.
    fn settle(
        &mut self,
        batch: Vec<Event>,
        answer: Result<Vec<Outcome>, ClientError>,
        retry: &mut VecDeque<Vec<Event>>,
    ) {
        match answer {
            Ok(outcomes) => self.record(&batch, &outcomes),
            Err(ClientError::Server {
                code: error_code::UNAVAILABLE,
                ..
            }) => {
                self.unavailable += 1;
                retry.push_back(batch);
            }
            Err(e) => panic!("unexpected answer while giftstream runs: {e}"),
        }
    }
}

fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let text = SHIPPED_CONFIG
        // Every id of the run stays in the idempotency window, so the final resend
        // tells lost from duplicate for all of them.
        .replace(
            "idempotency_entries_max = 1048576",
            "idempotency_entries_max = 33554432",
        )
        .replace("events = 10000000", "events = 1000000");
    assert_ne!(text, SHIPPED_CONFIG);
    let path = dir.join("giftstream.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Reads {
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// HTTP reads (wallets, a creator, both leaderboards) every 10 ms against whichever
/// giftstream serves now.
fn spawn_reads(
    http: tokio::sync::watch::Receiver<String>,
    reads: Arc<Reads>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let mut n: u64 = 0;
        while !reads.stop.load(Ordering::Acquire) {
            n += 1;
            let path = match n % 4 {
                0 => format!("/v1/users/{}/wallet", 100 + n % USERS),
                1 => format!("/v1/creators/{}", CREATOR0 + n % CREATORS),
                2 => format!(
                    "/v1/creators/{}/top-gifters?limit=10",
                    CREATOR0 + n % CREATORS
                ),
                _ => format!(
                    "/v1/streams/{}/top-gifters?limit=10",
                    9000 + CREATOR0 + n % CREATORS
                ),
            };
            let url = format!("http://{}{path}", http.borrow().clone());
            let ok = matches!(
                client.get(url).bearer_auth(READ).send().await,
                Ok(r) if r.status() == 200
            );
            let counter = if ok { &reads.ok } else { &reads.failed };
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    RestartRedis,
    KillGiftstream,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_mixed_load_through_redis_restarts_and_a_kill() {
    let seconds: u64 = std::env::var("GIFTSTREAM_SOAK_SECONDS")
        .ok()
        .map_or(24, |s| s.parse().expect("GIFTSTREAM_SOAK_SECONDS: seconds"));
    assert!((8..=3600).contains(&seconds), "a soak of 8..=3600 s");
    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("soak: {seconds} s, seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let redis = Arc::new(parking_lot::Mutex::new(RedisServer::start()));
    let url = redis.lock().url();
    let tmp = tempfile::tempdir().unwrap();
    let config = config_file(tmp.path());
    let data = tmp.path().join("data");
    let economy = economy();

    let mut p = ServeProcess::start(&config, &url, &data);
    let mut client = Client::connect(p.tcp.as_str(), INGEST).await.unwrap();
    let (http_tx, http_rx) = tokio::sync::watch::channel(p.http.clone());
    let reads = Arc::new(Reads {
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    });
    let reader = spawn_reads(http_rx, reads.clone());

    let mut ledger = Ledger::default();
    let funding: Vec<Event> = (0..USERS)
        .map(|u| recharge(1 + u128::from(u), 100 + u, "coins_100"))
        .collect();
    let outcomes = client.send(&funding).await.unwrap();
    ledger.record(&funding, &outcomes);
    ledger.sent.push(funding);
    let mut next_id: u128 = 1_000_000;

    let run = Duration::from_secs(seconds);
    let mut faults: VecDeque<(Duration, Fault)> = VecDeque::from([
        (run / 4, Fault::RestartRedis),
        (run / 2, Fault::KillGiftstream),
        (run * 3 / 4, Fault::RestartRedis),
    ]);
    let mut outages = Vec::new();
    let mut flying: VecDeque<(Vec<Event>, Pending)> = VecDeque::new();
    let mut retry: VecDeque<Vec<Event>> = VecDeque::new();
    let mut retried_batches = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(BATCH as f64 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let weights: u32 = GIFTS.iter().map(|g| g.1).sum();
    let start = Instant::now();
    let mut last_report = start;
    while start.elapsed() < run {
        tick.tick().await;
        if faults.front().is_some_and(|(at, _)| start.elapsed() >= *at) {
            let (_, fault) = faults.pop_front().unwrap();
            eprintln!("soak: {:>5.1} s: {fault:?}", start.elapsed().as_secs_f64());
            match fault {
                Fault::RestartRedis => {
                    let redis = redis.clone();
                    outages.push(tokio::task::spawn_blocking(move || {
                        redis.lock().stop();
                        std::thread::sleep(REDIS_DOWN);
                        redis.lock().restart();
                    }));
                }
                Fault::KillGiftstream => {
                    p.kill9();
                    for (batch, pending) in flying.drain(..) {
                        match pending.outcomes().await {
                            Ok(outcomes) => ledger.record(&batch, &outcomes),
                            Err(_) => {
                                ledger.in_flight_at_kill += batch.len() as u64;
                                retry.push_back(batch);
                            }
                        }
                    }
                    p = ServeProcess::start(&config, &url, &data);
                    client = Client::connect(p.tcp.as_str(), INGEST).await.unwrap();
                    let _ = http_tx.send(p.http.clone());
                }
            }
        }
        let batch = match retry.pop_front() {
            Some(b) => {
                retried_batches += 1;
                b
            }
            None => {
                let batch: Vec<Event> = (0..BATCH)
                    .map(|_| {
                        next_id += 1;
                        let user = 100 + rng.random_range(0..USERS);
                        if rng.random_range(0..RECHARGE_EVERY) == 0 {
                            return recharge(next_id, user, "coins_7000");
                        }
                        let mut w = rng.random_range(0..weights);
                        let name = GIFTS
                            .iter()
                            .find(|g| {
                                let hit = w < g.1;
                                w = w.saturating_sub(g.1);
                                hit
                            })
                            .unwrap()
                            .0;
                        gift(
                            next_id,
                            user,
                            CREATOR0 + rng.random_range(0..CREATORS),
                            name,
                            1,
                        )
                    })
                    .collect();
                ledger.sent.push(batch.clone());
                batch
            }
        };
        if flying.len() >= IN_FLIGHT {
            let (b, pending) = flying.pop_front().unwrap();
            let answer = pending.outcomes().await;
            ledger.settle(b, answer, &mut retry);
        }
        let pending = client.submit(&batch).await.unwrap();
        flying.push_back((batch, pending));
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            eprintln!(
                "soak: {:>5.1} s: {} events answered, {} UNAVAILABLE, reads {} ok / {} failed",
                start.elapsed().as_secs_f64(),
                ledger.answered.len(),
                ledger.unavailable,
                reads.ok.load(Ordering::Relaxed),
                reads.failed.load(Ordering::Relaxed)
            );
        }
    }
    let load_secs = start.elapsed().as_secs_f64();
    for outage in outages {
        outage.await.unwrap();
    }
    // Drain: everything in flight, then every refused batch until none is left.
    while !flying.is_empty() || !retry.is_empty() {
        if let Some((b, pending)) = flying.pop_front() {
            let answer = pending.outcomes().await;
            ledger.settle(b, answer, &mut retry);
        } else if let Some(b) = retry.pop_front() {
            retried_batches += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
            flying.push_back((b.clone(), client.submit(&b).await.unwrap()));
        }
    }
    reads.stop.store(true, Ordering::Release);
    reader.await.unwrap();
    let events: usize = ledger.sent.iter().map(Vec::len).sum();
    assert_eq!(ledger.answered.len(), events, "every event answered");
    let first_answers = ledger.answered.len();

    // Every event once more, pipelined: each must come back as a duplicate.
    let sent = std::mem::take(&mut ledger.sent);
    let resend_start = Instant::now();
    for chunk in sent.chunks(IN_FLIGHT) {
        let mut pendings = Vec::new();
        for b in chunk {
            pendings.push(client.submit(b).await.unwrap());
        }
        for (b, pending) in chunk.iter().zip(pendings) {
            let outcomes = pending.outcomes().await.unwrap();
            ledger.record(b, &outcomes);
        }
    }
    let resend_secs = resend_start.elapsed().as_secs_f64();
    ledger.sent = sent;

    // One event per sequence number, no gaps: nothing applied twice. Seq 1 is the
    // ledger's first economy version (recorded at its first start).
    let mut seqs: Vec<u64> = ledger.answered.values().map(|&(s, _)| s).collect();
    seqs.sort_unstable();
    let last = *seqs.last().unwrap();
    let doubled = seqs.windows(2).filter(|w| w[0] == w[1]).count();
    let gaps = last as usize - 1 - seqs.len() + doubled;

    // Balances and creator totals from the acknowledged outcomes alone.
    let mut coins: HashMap<u64, i128> = HashMap::new();
    let mut received: HashMap<u64, u64> = HashMap::new();
    for e in ledger.sent.iter().flatten() {
        let (_, status) = ledger.answered[&e.id().0];
        if !matches!(status, Status::Accepted(_)) {
            continue;
        }
        match e {
            Event::Recharge(r) => *coins.entry(r.user.0).or_default() += i128::from(r.coins),
            Event::Gift(g) => {
                let price = economy.gifts[g.gift.0 as usize].coins * u64::from(g.count);
                *coins.entry(g.sender.0).or_default() -= i128::from(price);
                *received.entry(g.creator.0).or_default() += price;
            }
            _ => unreachable!(),
        }
    }
    let http = reqwest::Client::new();
    let mut wrong_balances = 0;
    for (user, want) in &coins {
        let w = p.read(&http, &format!("/v1/users/{user}/wallet")).await;
        if w["coins"].as_i64().map(i128::from) != Some(*want) {
            wrong_balances += 1;
            eprintln!("user {user}: {} != {want}", w["coins"]);
        }
    }
    let mut wrong_creators = 0;
    for (creator, want) in &received {
        let c = p.read(&http, &format!("/v1/creators/{creator}")).await;
        if c["coins_received"].as_u64() != Some(*want) {
            wrong_creators += 1;
            eprintln!("creator {creator}: {} != {want}", c["coins_received"]);
        }
    }
    // The read model catches up.
    let mut conn = giftstream::persist::redis::connect(&url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while giftstream::persist::read_model::projected_seq(&mut conn)
        .await
        .unwrap()
        < last
    {
        assert!(Instant::now() < deadline, "read model did not catch up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(client);
    p.stop();
    let (audit_ok, audit) = run_cli(
        &["audit"],
        &[
            ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
            ("GIFTSTREAM_REDIS_URL", url.as_str()),
            ("GIFTSTREAM_DATA_DIR", data.to_str().unwrap()),
        ],
    );

    eprintln!(
        "soak report: {load_secs:.0} s of load at {RATE} events/s offered, seed {seed}\n\
         \x20 events: {events} sent, {first_answers} answered ({:.0}/s), outcomes {:?}\n\
         \x20 faults: Redis killed + restarted twice ({} s down each), giftstream killed -9 once\n\
         \x20 retried: {retried_batches} batches ({} UNAVAILABLE refusals, {} events in flight at the kill)\n\
         \x20 longest time without an ack: {:.2} s; stalls over 0.5 s (start s: length s): {}\n\
         \x20 reads: {} ok, {} failed (refused or timed out)\n\
         \x20 final resend of every event: {} duplicates answered in {resend_secs:.1} s\n\
         \x20 lost: {}   applied twice: {doubled}   seq gaps: {gaps}   outcome changed: {}\n\
         \x20 wrong balances: {wrong_balances} of {}   wrong creator totals: {wrong_creators} of {}\n\
         \x20 read model caught up to seq {last}; audit: {}",
        first_answers as f64 / load_secs,
        ledger.outcomes,
        REDIS_DOWN.as_secs(),
        ledger.unavailable,
        ledger.in_flight_at_kill,
        ledger.max_ack_gap.as_secs_f64(),
        ledger
            .stalls
            .iter()
            .map(|(at, d)| format!("{:.1}: {:.2}", (*at - start).as_secs_f64(), d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", "),
        reads.ok.load(Ordering::Relaxed),
        reads.failed.load(Ordering::Relaxed),
        ledger.duplicates_answered,
        ledger.lost,
        ledger.changed,
        coins.len(),
        received.len(),
        if audit_ok { "clean" } else { "FAILED" },
    );
    assert_eq!(ledger.lost, 0, "acknowledged events lost");
    assert_eq!(ledger.changed, 0, "outcomes changed");
    assert_eq!((doubled, gaps), (0, 0), "one event per sequence number");
    assert_eq!(ledger.duplicates_answered, events as u64);
    assert_eq!((wrong_balances, wrong_creators), (0, 0));
    assert!(audit_ok && audit.contains("audit: clean"), "{audit}");
    assert!(audit.contains("0 differences from the ledger"), "{audit}");
    assert!(
        ledger.outcomes.get("accepted").copied().unwrap_or(0) > 0
            && ledger.outcomes.contains_key("INSUFFICIENT_COINS"),
        "a mix of outcomes: {:?}",
        ledger.outcomes
    );
}
