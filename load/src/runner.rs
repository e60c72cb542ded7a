//! Runs a scenario against a target: setup (funding), then the measured phase in open
//! loop (planned arrival times, latency from the planned send time: coordinated
//! omission corrected, as wrk2; and raw, from the actual send) or closed loop.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use giftstream::economy::Economy;
use giftstream::engine::Event;
use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;
use tokio::sync::Semaphore;

use crate::report::{Interval, Summary};
use crate::scenario::{Scenario, Stage};
use crate::target::{Conn, Label, TargetSpec};
use crate::workload::Workload;

/// Latencies are recorded in microseconds, up to an hour.
const LATENCY_MAX_US: u64 = 3_600_000_000;
/// A send that starts this much after its planned time counts as missed (the timer's
/// own granularity is about 1 ms).
const LATE: Duration = Duration::from_millis(2);
/// Acknowledged events kept per worker for the audit's exactly-once resend: the most
/// recent ones, so that they are still inside the server's idempotency window (an id
/// the window has evicted would be applied again).
const AUDIT_SAMPLE: usize = 1_000;

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static bounds")
}

/// The rate schedule: when the batch starting at event `e` is planned.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// (start s, duration s, rate from, rate to, events before this stage)
    stages: Vec<(f64, f64, f64, f64, f64)>,
    total_events: f64,
}

impl Schedule {
    pub fn new(stages: &[Stage]) -> Schedule {
        let mut out = Vec::new();
        let (mut t, mut events) = (0.0, 0.0);
        for s in stages {
            let (from, to, d) = match *s {
                Stage::Constant { rate, duration_s } | Stage::Spike { rate, duration_s } => {
                    (rate, rate, duration_s)
                }
                Stage::Ramp {
                    from,
                    to,
                    duration_s,
                } => (from, to, duration_s),
            };
            out.push((t, d, from, to, events));
            t += d;
            events += (from + to) / 2.0 * d;
        }
        Schedule {
            stages: out,
            total_events: events,
        }
    }

    /// Planned events over the whole schedule.
    pub fn total_events(&self) -> f64 {
        self.total_events
    }

    /// Seconds from the start at which event `e` is planned; `None` past the end.
    pub fn at(&self, e: f64) -> Option<f64> {
        if e >= self.total_events {
            return None;
        }
        let &(start, d, from, to, before) = self
            .stages
            .iter()
            .rev()
            .find(|s| s.4 <= e)
            .expect("the first stage starts at 0");
        let x = e - before;
        // Events in the stage after t: from*t + (to-from)/(2d) * t^2 = x.
        let a = (to - from) / (2.0 * d);
        let t = if a.abs() < 1e-12 {
            x / from
        } else {
            (-from + (from * from + 4.0 * a * x).sqrt()) / (2.0 * a)
        };
        Some(start + t)
    }

    /// Planned rate (events/s) at `t` seconds.
    pub fn rate_at(&self, t: f64) -> f64 {
        self.stages
            .iter()
            .find(|s| t >= s.0 && t < s.0 + s.1)
            .map_or(0.0, |&(start, d, from, to, _)| {
                from + (to - from) * (t - start) / d
            })
    }
}

/// Options of one run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub progress: bool,
    pub audit: bool,
    pub nonce: u64,
}

/// What a worker measured.
struct WorkerResult {
    corrected: Histogram<u64>,
    raw: Histogram<u64>,
    /// Per second of the run: events answered, errors, latency (corrected).
    seconds: Vec<(u64, u64, Histogram<u64>)>,
    /// Hash maps, not ordered ones: they are updated for every event answered (ordered
    /// when the workers' results are merged).
    outcomes: FxHashMap<Label, u64>,
    errors: BTreeMap<String, u64>,
    sent_events: u64,
    missed: u64,
    /// Accepted gift coins per creator id.
    coins: FxHashMap<u64, u64>,
    /// (event, label) of the latest acknowledged events, for the audit.
    sample: std::collections::VecDeque<(Event, Label)>,
    /// HTTP reads (`mix.reads_per_batch`): latency µs, and counts by result.
    reads: Histogram<u64>,
    read_results: BTreeMap<String, u64>,
}

/// Live counters of a run, for a progress display: the runner's own, or a caller's that
/// watches the run from outside (`giftload hostile` prints them every 10 s).
#[derive(Default)]
pub struct Live {
    /// Events answered so far (setup included).
    pub answered: AtomicU64,
    /// Requests that got no answers.
    pub errors: AtomicU64,
    /// Corrected latencies (µs) since whoever reads them last swapped in a fresh one
    /// (the progress display, every tick). A `parking_lot` mutex held only to record
    /// one value or to swap: nothing awaits while holding it.
    pub recent: parking_lot::Mutex<Option<Histogram<u64>>>,
}

impl Live {
    /// Counts a request's answer (or error) as it arrives, with its corrected latency.
    fn answered_at(&self, answer: &crate::target::Answers, corrected: Duration) {
        match answer {
            Ok(labels) => self
                .answered
                .fetch_add(labels.len() as u64, Ordering::Relaxed),
            Err(_) => self.errors.fetch_add(1, Ordering::Relaxed),
        };
        let us = (corrected.as_micros().max(1) as u64).min(LATENCY_MAX_US);
        if let Some(h) = self.recent.lock().as_mut() {
            let _ = h.record(us);
        }
    }

    /// Takes the latencies recorded since the last call (an empty histogram if none).
    pub fn take_recent(&self) -> Histogram<u64> {
        self.recent
            .lock()
            .replace(histogram())
            .unwrap_or_else(histogram)
    }
}

/// Runs `scenario` against `target`.
pub async fn run(
    scenario: &Scenario,
    target: &TargetSpec,
    options: &RunOptions,
) -> anyhow::Result<Summary> {
    run_with_live(scenario, target, options, Arc::new(Live::default())).await
}

/// [`run`], updating `live` as events are answered.
pub async fn run_with_live(
    scenario: &Scenario,
    target: &TargetSpec,
    options: &RunOptions,
    live: Arc<Live>,
) -> anyhow::Result<Summary> {
    let economy = Economy::embedded();
    let workload = Arc::new(Workload::new(scenario, &economy, options.nonce)?);
    let mut conns = Vec::new();
    for _ in 0..scenario.load.connections {
        conns.push(Conn::connect(target, &economy).await?);
    }
    let setup = setup(&workload, &conns, scenario).await?;
    let audit_before = if options.audit {
        Some(crate::audit::before(target, scenario, &workload).await?)
    } else {
        None
    };

    let schedule = Arc::new(Schedule::new(&scenario.stages));
    let total_s = scenario.total_s();
    let warmup = scenario.load.warmup_s;
    let open = scenario.is_open_loop();
    *live.recent.lock() = Some(histogram());
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(total_s);
    let progress = options.progress.then(|| progress_bar(total_s));
    let ticker = progress.clone().map(|bar| {
        let live = live.clone();
        tokio::spawn(async move {
            let mut last = 0u64;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let answered = live.answered.load(Ordering::Relaxed);
                let p99 = live.take_recent().value_at_quantile(0.99);
                bar.set_position(started.elapsed().as_secs().min(bar.length().unwrap_or(0)));
                bar.set_message(format!(
                    "{} events/s, {} errors, p99 {:.2} ms",
                    answered - last,
                    live.errors.load(Ordering::Relaxed),
                    p99 as f64 / 1000.0
                ));
                last = answered;
            }
        })
    });

    let mut workers = Vec::new();
    for conn in conns {
        let (workload, schedule, live, next) = (
            workload.clone(),
            schedule.clone(),
            live.clone(),
            next.clone(),
        );
        let batch = scenario.load.batch as f64;
        let in_flight = scenario.load.in_flight;
        let seconds = total_s.ceil() as usize + 1;
        let audit = options.audit;
        let reads_per_batch = scenario.mix.reads_per_batch;
        let http = target.http_client(std::time::Duration::from_secs(30))?;
        let http_base = target.http_base();
        let http = (http, http_base);
        let read_token = target.read_token.clone();
        workers.push(tokio::spawn(async move {
            let mut r = WorkerResult {
                corrected: histogram(),
                raw: histogram(),
                seconds: (0..seconds).map(|_| (0, 0, histogram())).collect(),
                outcomes: FxHashMap::default(),
                errors: BTreeMap::new(),
                sent_events: 0,
                missed: 0,
                coins: FxHashMap::default(),
                sample: std::collections::VecDeque::new(),
                reads: histogram(),
                read_results: BTreeMap::new(),
            };
            let mut reads = Vec::new();
            let permits = Arc::new(Semaphore::new(in_flight));
            let mut flying = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let planned = if open {
                    match schedule.at(n as f64 * batch) {
                        Some(t) => started + Duration::from_secs_f64(t),
                        None => break,
                    }
                } else {
                    if Instant::now() >= deadline {
                        break;
                    }
                    Instant::now()
                };
                let permit = permits.clone().acquire_owned().await.expect("open");
                tokio::time::sleep_until(planned.into()).await;
                let sent = Instant::now();
                if open && sent > planned + LATE {
                    r.missed += 1;
                }
                let t_s = planned.duration_since(started).as_secs_f64();
                let events = workload.batch(n, t_s);
                r.sent_events += events.len() as u64;
                let answer = conn.submit(events.clone()).await;
                let sent_after_write = if open { planned } else { sent };
                let live_answer = live.clone();
                flying.push(tokio::spawn(async move {
                    let answer = answer.await;
                    let done = Instant::now();
                    drop(permit);
                    // Live counters as the answer arrives: `record` runs only when the
                    // worker drains its finished requests (every 4 x in_flight batches,
                    // many seconds apart at a low rate).
                    live_answer.answered_at(&answer, done.duration_since(sent_after_write));
                    (events, answer, sent_after_write, sent, done, t_s)
                }));
                for k in 0..reads_per_batch {
                    reads.push(tokio::spawn(read(
                        http.clone(),
                        read_token.clone(),
                        workload.read_path(n, k),
                    )));
                }
                if reads.len() >= 64 {
                    for f in reads.drain(..) {
                        record_read(&mut r, f.await.expect("read task"), t_s, warmup);
                    }
                }
                if flying.len() >= 4 * in_flight {
                    for f in flying.drain(..) {
                        let done = f.await.expect("request task");
                        record(&mut r, done, &workload, warmup, audit);
                    }
                }
            }
            for f in flying {
                let done = f.await.expect("request task");
                record(&mut r, done, &workload, warmup, audit);
            }
            for f in reads {
                record_read(&mut r, f.await.expect("read task"), f64::MAX, warmup);
            }
            r
        }));
    }
    let mut results = Vec::new();
    for w in workers {
        results.push(w.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let mut summary = merge(scenario, target, &schedule, results, elapsed, setup);
    if let Some(before) = audit_before {
        summary.audit = Some(
            crate::audit::after(target, &workload, before, &summary.coins, &summary.sample).await?,
        );
    }
    Ok(summary)
}

type Finished = (
    Vec<Event>,
    crate::target::Answers,
    Instant,
    Instant,
    Instant,
    f64,
);

fn record(
    r: &mut WorkerResult,
    (events, answer, planned, sent, done, t_s): Finished,
    workload: &Workload,
    warmup: f64,
    audit: bool,
) {
    let corrected = done.duration_since(planned).as_micros().max(1) as u64;
    let raw = done.duration_since(sent).as_micros().max(1) as u64;
    let second = (t_s as usize).min(r.seconds.len() - 1);
    match answer {
        Ok(labels) => {
            for (e, label) in events.iter().zip(&labels) {
                if label == "accepted"
                    && let Some(cost) = workload.cost(e)
                {
                    // Per worker a reversal may come before its gift's count: kept mod
                    // 2^64, the sum over the workers is exact.
                    let total = r.coins.entry(cost.creator).or_default();
                    *total = if cost.refund {
                        total.wrapping_sub(cost.coins)
                    } else {
                        total.wrapping_add(cost.coins)
                    };
                }
            }
            if t_s < warmup {
                return;
            }
            let _ = r.corrected.record(corrected.min(LATENCY_MAX_US));
            let _ = r.raw.record(raw.min(LATENCY_MAX_US));
            r.seconds[second].0 += labels.len() as u64;
            let _ = r.seconds[second].2.record(corrected.min(LATENCY_MAX_US));
            // Only the batch's last AUDIT_SAMPLE events can stay in the sample.
            let first_kept = labels.len().saturating_sub(AUDIT_SAMPLE);
            for (i, (e, label)) in events.into_iter().zip(labels).enumerate() {
                if audit && i >= first_kept && !label.starts_with("duplicate") {
                    if r.sample.len() == AUDIT_SAMPLE {
                        r.sample.pop_front();
                    }
                    r.sample.push_back((e, label.clone()));
                }
                *r.outcomes.entry(label).or_default() += 1;
            }
        }
        Err(e) => {
            if t_s < warmup {
                return;
            }
            r.seconds[second].1 += events.len() as u64;
            *r.errors.entry(e.kind).or_default() += events.len() as u64;
        }
    }
}

/// One HTTP read: (latency µs, result label).
async fn read(
    (client, base): (reqwest::Client, String),
    token: String,
    path: String,
) -> (u64, String) {
    let started = Instant::now();
    let result = match client
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => match r.bytes().await {
            Ok(_) => "read:ok".to_owned(),
            Err(_) => "read:io".to_owned(),
        },
        Ok(r) => format!("read:http:{}", r.status().as_u16()),
        Err(_) => "read:io".to_owned(),
    };
    (started.elapsed().as_micros().max(1) as u64, result)
}

fn record_read(r: &mut WorkerResult, (us, label): (u64, String), t_s: f64, warmup: f64) {
    if t_s < warmup {
        return;
    }
    let _ = r.reads.record(us.min(LATENCY_MAX_US));
    *r.read_results.entry(label).or_default() += 1;
}

fn merge(
    scenario: &Scenario,
    target: &TargetSpec,
    schedule: &Schedule,
    results: Vec<WorkerResult>,
    elapsed: f64,
    setup: (u64, f64),
) -> Summary {
    let mut corrected = histogram();
    let mut raw = histogram();
    let seconds = results.first().map_or(0, |r| r.seconds.len());
    let mut per_second: Vec<(u64, u64, Histogram<u64>)> =
        (0..seconds).map(|_| (0, 0, histogram())).collect();
    let mut outcomes = BTreeMap::new();
    let mut errors = BTreeMap::new();
    let (mut sent, mut missed) = (0, 0);
    let mut coins: BTreeMap<u64, u64> = BTreeMap::new();
    let mut sample = Vec::new();
    let mut reads = histogram();
    let mut read_results = BTreeMap::new();
    for r in results {
        reads.add(&r.reads).expect("same bounds");
        for (k, v) in r.read_results {
            *read_results.entry(k).or_default() += v;
        }
        corrected.add(&r.corrected).expect("same bounds");
        raw.add(&r.raw).expect("same bounds");
        for (i, (n, e, h)) in r.seconds.into_iter().enumerate() {
            per_second[i].0 += n;
            per_second[i].1 += e;
            per_second[i].2.add(&h).expect("same bounds");
        }
        for (k, v) in r.outcomes {
            *outcomes.entry(k.into_owned()).or_default() += v;
        }
        for (k, v) in r.errors {
            *errors.entry(k).or_default() += v;
        }
        for (k, v) in r.coins {
            let total = coins.entry(k).or_default();
            *total = total.wrapping_add(v);
        }
        sent += r.sent_events;
        missed += r.missed;
        sample.extend(r.sample.into_iter().map(|(e, l)| (e, l.into_owned())));
    }
    let warmup = scenario.load.warmup_s;
    let measured = if scenario.is_open_loop() {
        scenario.measured_s()
    } else {
        (elapsed - warmup).max(1e-9)
    };
    let answered: u64 = outcomes.values().sum();
    let failed: u64 = errors.values().sum();
    let planned_rate = if scenario.is_open_loop() {
        let planned_events = schedule.total_events()
            - schedule
                .at(0.0)
                .map_or(0.0, |_| events_before(schedule, warmup));
        Some(planned_events / measured)
    } else {
        None
    };
    let intervals = per_second
        .into_iter()
        .enumerate()
        .filter(|(i, _)| {
            let t = *i as f64;
            t + 1.0 > warmup && t < elapsed.min(scenario.total_s())
        })
        .map(|(i, (n, e, h))| Interval {
            second: i as u64,
            planned_rate: scenario
                .is_open_loop()
                .then(|| schedule.rate_at(i as f64 + 0.5)),
            events: n,
            errors: e,
            p50_us: h.value_at_quantile(0.5),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
        })
        .collect();
    Summary {
        scenario: scenario.name.clone(),
        target: target.name().to_owned(),
        mode: scenario.load.mode.clone(),
        seed: scenario.seed,
        connections: scenario.load.connections,
        batch: scenario.load.batch,
        in_flight: scenario.load.in_flight,
        measured_s: measured,
        setup_events: setup.0,
        setup_s: setup.1,
        planned_rate,
        achieved_rate: answered as f64 / measured,
        events_sent: sent,
        events_answered: answered,
        events_failed: failed,
        missed_sends: missed,
        corrected,
        raw,
        outcomes,
        errors,
        intervals,
        coins,
        sample,
        reads,
        read_results,
        audit: None,
    }
}

/// Planned events before `t` seconds.
fn events_before(schedule: &Schedule, t: f64) -> f64 {
    // Bisection on the monotone `at`.
    let (mut lo, mut hi) = (0.0, schedule.total_events());
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        match schedule.at(mid) {
            Some(x) if x < t => lo = mid,
            _ => hi = mid,
        }
    }
    lo
}

/// Funds every user (custom web recharges), over all connections; returns (events,
/// seconds).
async fn setup(
    workload: &Arc<Workload>,
    conns: &[Conn],
    scenario: &Scenario,
) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let bar = (scenario.population.funding_coins > 0).then(|| {
        let bar = indicatif::ProgressBar::new(scenario.population.users);
        bar.set_style(
            indicatif::ProgressStyle::with_template("setup {bar:40} {pos}/{len} wallets funded")
                .expect("static template"),
        );
        bar
    });
    for conn in conns {
        let (conn, workload, next, bar) =
            (conn.clone(), workload.clone(), next.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut funded = 0u64;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let Some(events) = workload.funding(n, 1000) else {
                    return Ok::<u64, anyhow::Error>(funded);
                };
                let count = events.len() as u64;
                let labels = conn
                    .submit(events)
                    .await
                    .await
                    .map_err(|e| anyhow::anyhow!("setup: {} {}", e.kind, e.message))?;
                anyhow::ensure!(
                    labels
                        .iter()
                        .all(|l| l == "accepted" || l.starts_with("duplicate")),
                    "setup: a funding recharge was rejected: {:?}",
                    labels.iter().find(|l| *l != "accepted")
                );
                funded += count;
                if let Some(bar) = &bar {
                    bar.inc(count);
                }
            }
        }));
    }
    let mut events = 0;
    for t in tasks {
        events += t.await??;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    events += set_budgets(workload, conns, scenario).await?;
    events += set_battles(workload, conns, scenario).await?;
    Ok((events, started.elapsed().as_secs_f64()))
}

/// The `[battles]` of a scenario, recorded from now on (binary protocol targets: the
/// others take gifts and recharges only). A battle refused (a stream still in one from
/// an earlier run against the same ledger) is reported, not fatal.
async fn set_battles(
    workload: &Arc<Workload>,
    conns: &[Conn],
    scenario: &Scenario,
) -> anyhow::Result<u64> {
    if scenario.battles.is_none() {
        return Ok(0);
    }
    let Some(conn) = conns.iter().find(|c| c.takes_account_settings()) else {
        eprintln!("setup: [battles] left out: this target takes gifts and recharges only");
        return Ok(0);
    };
    let events = workload.battles(giftstream::clock::now().0);
    let count = events.len() as u64;
    if count == 0 {
        return Ok(0);
    }
    let labels = conn
        .submit(events)
        .await
        .await
        .map_err(|e| anyhow::anyhow!("setup: {} {}", e.kind, e.message))?;
    let refused = labels
        .iter()
        .filter(|l| *l != "accepted" && !l.starts_with("duplicate"))
        .count();
    if refused > 0 {
        eprintln!("setup: {refused} of {count} battles refused: {labels:?}");
    }
    Ok(count)
}

/// The `[budgets]` of a scenario: the users who set them send their account settings
/// (binary protocol targets: the HTTP target's `/v1/events` and the Lua baseline take
/// gifts and recharges only, so there the budgets are left out, and said so).
async fn set_budgets(
    workload: &Arc<Workload>,
    conns: &[Conn],
    scenario: &Scenario,
) -> anyhow::Result<u64> {
    if scenario.budgets.is_none() {
        return Ok(0);
    }
    let Some(conn) = conns.iter().find(|c| c.takes_account_settings()) else {
        eprintln!("setup: [budgets] left out: this target takes gifts and recharges only");
        return Ok(0);
    };
    let mut sent = 0u64;
    let mut n = 0;
    while let Some(events) = workload.budgets(n, 1000) {
        n += 1;
        if events.is_empty() {
            continue;
        }
        let count = events.len() as u64;
        let labels = conn
            .submit(events)
            .await
            .await
            .map_err(|e| anyhow::anyhow!("setup: {} {}", e.kind, e.message))?;
        anyhow::ensure!(
            labels
                .iter()
                .all(|l| l == "accepted" || l.starts_with("duplicate")),
            "setup: a budget setting was rejected: {:?}",
            labels.iter().find(|l| *l != "accepted")
        );
        sent += count;
    }
    Ok(sent)
}

fn progress_bar(total_s: f64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total_s.ceil() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} {bar:30} {pos}/{len} s  {msg}")
            .expect("static template"),
    );
    bar
}
