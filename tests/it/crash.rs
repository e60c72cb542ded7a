//! kill -9 at random moments under durable load (snapshots, by fork and by the replica
//! in turn, and the read model on): after
//! each restart the in-flight batches are retried with the same event ids, and in the end
//! an independent model checks that every acknowledged event is present exactly once
//! with its outcome unchanged, every balance and total is what was sent, and the audit
//! (ledger and read model) is clean.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use giftstream::client::{Client, Pending};
use giftstream::engine::{Event, Status};
use rand::{RngExt, SeedableRng};

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, SHIPPED_CONFIG};
use crate::support::{gift, recharge};

const KILLS: usize = 5;
const USERS: u64 = 20;
const CREATORS: u64 = 5;
/// Each user is funded with this many coins_7000 packages before the load.
const PACKAGES: u64 = 3;
const BATCH: usize = 50;
const IN_FLIGHT: usize = 8;

/// What the test knows independently of giftstream.
#[derive(Default)]
struct Model {
    /// Event id -> (seq, status) of every answered event.
    answered: HashMap<u128, (u64, Status)>,
    /// Every batch sent, in order.
    sent: Vec<Vec<Event>>,
    /// Batches sent but not answered (in flight at a kill).
    unanswered: Vec<Vec<Event>>,
    acknowledged_in_flight_checks: u64,
}

impl Model {
    fn record(&mut self, batch: &[Event], outcomes: &[giftstream::engine::Outcome]) {
        assert_eq!(batch.len(), outcomes.len());
        for (e, o) in batch.iter().zip(outcomes) {
            let id = e.id().0;
            match self.answered.get(&id) {
                Some(&(seq, status)) => {
                    assert!(
                        o.duplicate,
                        "event {id:x} answered twice but not as a duplicate"
                    );
                    assert_eq!(
                        (o.seq, o.status),
                        (seq, status),
                        "event {id:x} outcome changed"
                    );
                    self.acknowledged_in_flight_checks += 1;
                }
                None => {
                    self.answered.insert(id, (o.seq, o.status));
                }
            }
        }
    }
}

/// `giftstream audit` of the ledger in `redis` and `data`: (success, output).
fn audit(config: &std::path::Path, redis: &RedisServer, data: &std::path::Path) -> (bool, String) {
    let url = redis.url();
    run_cli(
        &["audit"],
        &[
            ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
            ("GIFTSTREAM_REDIS_URL", url.as_str()),
            ("GIFTSTREAM_DATA_DIR", data.to_str().unwrap()),
        ],
    )
}

/// The shipped config with frequent snapshots taken by `method` (`fork` or `replica`).
fn config_file(dir: &std::path::Path, method: &str) -> std::path::PathBuf {
    let text = SHIPPED_CONFIG
        .replace("events = 10000000", "events = 2000")
        .replace("window_ms = 100", "window_ms = 20")
        .replace("method = \"fork\"", &format!("method = \"{method}\""));
    assert!(text.contains(&format!("method = \"{method}\"")));
    let path = dir.join(format!("giftstream-{method}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_and_doubles_nothing_acknowledged() {
    let seed: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("crash test seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    // Rounds alternate the snapshot method: each starts from snapshots the other wrote,
    // and a killed server's replica (its stdin gone) may still be finishing a snapshot
    // while the next server's replica starts.
    let configs = [
        config_file(tmp.path(), "fork"),
        config_file(tmp.path(), "replica"),
    ];
    let data = tmp.path().join("data");
    let mut model = Model::default();
    let mut next_id: u128 = 1;

    for round in 0..=KILLS {
        let config = &configs[round % 2];
        let p = ServeProcess::start(config, &redis.url(), &data);
        let client = Client::connect(p.tcp.as_str(), INGEST).await.unwrap();
        // Retry what was in flight at the kill, with the same event ids.
        for batch in std::mem::take(&mut model.unanswered) {
            let outcomes = client.send(&batch).await.unwrap();
            model.record(&batch, &outcomes);
        }
        if round == 0 {
            let funding: Vec<Event> = (0..USERS)
                .flat_map(|u| (0..PACKAGES).map(move |k| (u, k)))
                .map(|(u, k)| {
                    recharge(
                        1_000_000 + u128::from(u * PACKAGES + k),
                        100 + u,
                        "coins_7000",
                    )
                })
                .collect();
            let outcomes = client.send(&funding).await.unwrap();
            model.sent.push(funding.clone());
            model.record(&funding, &outcomes);
        }
        if round == KILLS {
            // The final round: resend everything ever sent; then check.
            for batch in model.sent.clone() {
                let outcomes = client.send(&batch).await.unwrap();
                model.record(&batch, &outcomes);
            }
            check(&model, &p, &redis).await;
            p.stop();
            let (ok, out) = audit(config, &redis, &data);
            if !ok {
                dump(&redis, &data).await;
            }
            assert!(ok && out.contains("audit: clean"), "{out}");
            assert!(out.contains("0 differences from the ledger"), "{out}");
            break;
        }
        // Durable load, killed at a random moment with batches in flight.
        let kill_at = Instant::now() + Duration::from_millis(rng.random_range(100..600));
        let mut flying: VecDeque<(Vec<Event>, Pending)> = VecDeque::new();
        while Instant::now() < kill_at {
            if flying.len() >= IN_FLIGHT {
                let (batch, pending) = flying.pop_front().unwrap();
                let outcomes = pending.outcomes().await.unwrap();
                model.record(&batch, &outcomes);
            }
            let batch: Vec<Event> = (0..BATCH)
                .map(|_| {
                    next_id += 1;
                    gift(
                        next_id,
                        100 + rng.random_range(0..USERS),
                        1 + rng.random_range(0..CREATORS),
                        "rose",
                        1,
                    )
                })
                .collect();
            model.sent.push(batch.clone());
            let pending = client.submit(&batch).await.unwrap();
            flying.push_back((batch, pending));
        }
        p.kill9();
        for (batch, pending) in flying {
            match pending.outcomes().await {
                Ok(outcomes) => model.record(&batch, &outcomes),
                Err(_) => model.unanswered.push(batch),
            }
        }
    }
    assert!(model.acknowledged_in_flight_checks > 0);
}

async fn check(model: &Model, p: &ServeProcess, redis: &RedisServer) {
    // Every event sent has exactly one sequence number, and the sequence is gap-free.
    let events: usize = model.sent.iter().map(Vec::len).sum();
    assert_eq!(model.answered.len(), events, "every event answered");
    let mut seqs: Vec<u64> = model.answered.values().map(|&(s, _)| s).collect();
    seqs.sort_unstable();
    let last = *seqs.last().unwrap();
    assert_eq!(
        seqs,
        (2..=last).collect::<Vec<_>>(),
        "seq 1 records the economy's first version; each later seq belongs to one event"
    );
    assert!(
        model
            .answered
            .values()
            .all(|(_, s)| matches!(s, Status::Accepted(_)))
    );

    // Balances and totals equal what was sent, counted independently.
    let mut coins: HashMap<u64, u64> = (0..USERS).map(|u| (100 + u, PACKAGES * 7000)).collect();
    let mut received: HashMap<u64, u64> = HashMap::new();
    for e in model.sent.iter().flatten() {
        if let Event::Gift(g) = e {
            *coins.get_mut(&g.sender.0).unwrap() -= 1;
            *received.entry(g.creator.0).or_default() += 1;
        }
    }
    let http = reqwest::Client::new();
    for (user, want) in &coins {
        let w = p.read(&http, &format!("/v1/users/{user}/wallet")).await;
        assert_eq!(w["coins"], *want, "user {user}");
    }
    for (creator, want) in &received {
        let c = p.read(&http, &format!("/v1/creators/{creator}")).await;
        assert_eq!(c["coins_received"], *want, "creator {creator}");
    }
    // The read model catches up to the ledger (the audit then compares them).
    let mut conn = giftstream::persist::redis::connect(&redis.url())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while giftstream::persist::read_model::projected_seq(&mut conn)
        .await
        .unwrap()
        < last
    {
        assert!(Instant::now() < deadline, "read model did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On failure: the journal's runs and the snapshots, to see what went wrong.
async fn dump(redis: &RedisServer, data: &std::path::Path) {
    let journal = giftstream::persist::redis::RedisJournal::connect(&redis.url())
        .await
        .unwrap();
    for run in journal.runs_from(0, 1_000_000).await.unwrap() {
        eprintln!(
            "journal run {}..={} ({} events)",
            run[0].seq,
            run.last().unwrap().seq,
            run.len()
        );
    }
    for f in giftstream::persist::snapshot::list(data).unwrap() {
        let seq = giftstream::persist::snapshot::read_header(&f).map(|h| h.last_seq);
        eprintln!("{} {seq:?}", f.display());
    }
}

/// The reproduction: two connections gift a creator in batches of 1000 while a
/// third cashes the creator out (accepted payouts of 20,000 diamonds), then `kill -9`.
/// The ledger must start again: every journaled payout replays to its recorded outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cash_out_during_a_gift_burst_survives_kill_9() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    // The shipped config: no snapshot in 3 s, the whole journal replays at the restart.
    let config = tmp.path().join("giftstream.toml");
    std::fs::write(&config, SHIPPED_CONFIG).unwrap();
    let data = tmp.path().join("data");
    let p = ServeProcess::start(&config, &redis.url(), &data);
    let funder = Client::connect(p.tcp.as_str(), INGEST).await.unwrap();
    let funding: Vec<Event> = (0..200u64)
        .flat_map(|u| (0..4).map(move |k| recharge(u128::from(u * 4 + k), 100 + u, "coins_7000")))
        .collect();
    funder.send(&funding).await.unwrap();
    // Long enough for several accepted payouts on a slow, shared 2-core machine.
    let stop = Instant::now() + Duration::from_secs(12);
    let gifters: Vec<_> = (0..2u128)
        .map(|t| {
            let addr = p.tcp.clone();
            tokio::spawn(async move {
                let client = Client::connect(addr.as_str(), INGEST).await.unwrap();
                // Pipelined, so that chunks are always being applied.
                let mut flying = VecDeque::new();
                let mut round = 0u128;
                while Instant::now() < stop {
                    if flying.len() >= IN_FLIGHT {
                        let pending: Pending = flying.pop_front().unwrap();
                        pending.outcomes().await.unwrap();
                    }
                    let batch: Vec<Event> = (0..1000u128)
                        .map(|k| {
                            let id = 1 << 100 | t << 64 | (round * 1000 + k);
                            gift(id, 100 + ((k + t * 7) % 200) as u64, 7, "rose", 2)
                        })
                        .collect();
                    flying.push_back(client.submit(&batch).await.unwrap());
                    round += 1;
                }
                for pending in flying {
                    pending.outcomes().await.unwrap();
                }
            })
        })
        .collect();
    let cashier = {
        let addr = p.tcp.clone();
        tokio::spawn(async move {
            let client = Client::connect(addr.as_str(), INGEST).await.unwrap();
            let (mut k, mut accepted) = (0u128, 0u32);
            let mut flying = VecDeque::new();
            while Instant::now() < stop {
                if flying.len() >= IN_FLIGHT {
                    let pending: Pending = flying.pop_front().unwrap();
                    accepted += u32::from(pending.outcomes().await.unwrap()[0].is_accepted());
                }
                let payout = crate::support::payout(2 << 100 | k, 7, 20_000, "USD");
                flying.push_back(client.submit(&[payout]).await.unwrap());
                k += 1;
            }
            for pending in flying {
                accepted += u32::from(pending.outcomes().await.unwrap()[0].is_accepted());
            }
            accepted
        })
    };
    for g in gifters {
        g.await.unwrap();
    }
    let accepted = cashier.await.unwrap();
    assert!(
        accepted >= 5,
        "accepted payouts must race the gifts: {accepted}"
    );
    p.kill9();
    // Starts again (it refused to: a payout replayed to other diamonds than journaled).
    ServeProcess::start(&config, &redis.url(), &data).stop();
    let (ok, out) = audit(&config, &redis, &data);
    assert!(ok && out.contains("audit: clean"), "{out}");
}
