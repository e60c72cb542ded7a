//! giftload against real servers on 127.0.0.1: scenarios parse (and bad ones name
//! their key), a short bounded run produces a well-formed JSON summary, thresholds set
//! the exit code, coordinated omission is corrected, the redis-lua baseline answers
//! the same events like giftstream, and `giftload hostile` sees hostile sockets closed
//! while acks flow.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use giftload::report::Threshold;
use giftload::runner::{self, RunOptions};
use giftload::scenario::Scenario;
use giftload::target::{Conn, TargetKind, TargetSpec};
use giftload::workload::Workload;
use giftstream::engine::LogEntry;
use giftstream::persist::journal::{Journal, JournalError, MemoryJournal};

const SHIPPED_CONFIG: &str = include_str!("../../config/giftstream.toml");

fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios")
}

/// A scenario small enough for a test: 2000 users, 50 creators, 2 s at 20k events/s.
const SMALL: &str = r#"
name = "small"
seed = 7
gifts = [ { value = "rose", weight = 60 }, { value = "panda", weight = 40 } ]
combos = [ { value = 1, weight = 90 }, { value = 5, weight = 10 } ]
[population]
users = 2000
creators = 50
funding_coins = 200
[load]
mode = "open"
connections = 2
batch = 100
in_flight = 8
warmup_s = 0.5
[[stages]]
kind = "constant"
rate = 20000
duration_s = 2.5
"#;

/// A journal that stalls once, for `stall`, when armed (durable acks wait for it).
struct StallingJournal {
    inner: MemoryJournal,
    armed: AtomicBool,
    stall: Duration,
}

impl Journal for StallingJournal {
    fn append<'a>(&'a self, entries: &'a [LogEntry]) -> BoxFuture<'a, Result<(), JournalError>> {
        Box::pin(async move {
            if self.armed.swap(false, Ordering::AcqRel) {
                tokio::time::sleep(self.stall).await;
            }
            self.inner.append(entries).await
        })
    }
}

struct Server {
    tcp: SocketAddr,
    http: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    engine: Arc<giftstream::engine::Engine>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn server(journal: Arc<dyn Journal>) -> Server {
    let config = giftstream::config::Config::from_toml_str(SHIPPED_CONFIG).unwrap();
    server_with(config, journal).await
}

async fn server_with(config: giftstream::config::Config, journal: Arc<dyn Journal>) -> Server {
    let engine = giftstream::persist::recovery::build_engine(
        &config,
        giftstream::economy::Economy::embedded(),
    )
    .unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (http_addr, tcp_addr) = (http.local_addr().unwrap(), tcp.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(giftstream::node::run(
        config,
        engine.clone(),
        journal,
        http,
        tcp,
        async move {
            let _ = rx.await;
        },
    ));
    Server {
        tcp: tcp_addr,
        http: http_addr,
        stop: Some(tx),
        engine,
    }
}

fn spec(kind: TargetKind, s: &Server, redis: &str) -> TargetSpec {
    TargetSpec {
        kind,
        tcp: s.tcp.to_string(),
        http: s.http.to_string(),
        redis: redis.to_owned(),
        token: "dev-ingest-token-0001".to_owned(),
        read_token: "dev-read-token-00001".to_owned(),
        tls_ca: None,
        cluster: None,
    }
}

fn options() -> RunOptions {
    RunOptions {
        progress: false,
        audit: true,
        nonce: 42,
    }
}

#[test]
fn shipped_scenarios_parse_and_bad_ones_name_the_key() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        let s = Scenario::from_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        names.push(s.name);
    }
    names.sort();
    assert_eq!(
        names,
        [
            "battles",
            "caps",
            "change-stream",
            "chargebacks",
            "history",
            "hold",
            "hot-creator",
            "hot-from-start",
            "mixed",
            "promotions",
            "purchases",
            "recharge-storm",
            "refunds",
            "uniform",
            "videos",
            "windows",
            "zipf"
        ]
    );
    for (text, key) in [
        (
            SMALL.replace("users = 2000", "users = 0"),
            "population.users",
        ),
        (
            SMALL.replace("mode = \"open\"", "mode = \"sideways\""),
            "load.mode",
        ),
        (SMALL.replace("rate = 20000", "rate = -5"), "stages[0].rate"),
        (
            SMALL.replace("seed = 7", "seed = 7\ncolour = \"red\""),
            "unknown field `colour`",
        ),
        (SMALL.replace("batch = 100", "batch = 0"), "load.batch"),
        (
            SMALL.replace("[load]", "[mix]\npayout_share = 1.5\n[load]"),
            "mix.payout_share",
        ),
        (
            SMALL.replace(
                "[load]",
                "[economy]\nearnings_hold_ms = 99999999999\n[load]",
            ),
            "economy.earnings_hold_ms",
        ),
        (
            SMALL.replace("weight = 90", "weight = 90 }, { value = 0, weight = 1"),
            "combos.value",
        ),
        (
            SMALL.replace(
                "[load]",
                "[hot]\ncreator = 99\nshare = 0.5\nstart_s = 0\nduration_s = 1\n[load]",
            ),
            "hot.creator",
        ),
        (
            SMALL.replace("[load]", "[mix]\npurchase_share = 0.3\n[load]"),
            "items",
        ),
        (
            SMALL.replace("[load]", "[mix]\npurchase_share = 1.5\n[load]"),
            "mix.purchase_share",
        ),
        (
            SMALL.replace("[load]", "[budgets]\nshare = 0.5\n[load]"),
            "budgets",
        ),
        (
            SMALL.replace(
                "[load]",
                "[economy.promotion]\npackage = \"coins_501\"\nbonus_coins = 5\nduration_s = 60\n[load]",
            ),
            "economy.promotion.package",
        ),
        (
            SMALL.replace(
                "[load]",
                "[economy.promotion]\npackage = \"coins_500\"\nduration_s = 60\n[load]",
            ),
            "economy.promotion",
        ),
        (
            SMALL.replace("[load]", "[budgets]\nshare = 0\ndaily_coins = 5\n[load]"),
            "budgets.share",
        ),
        (
            SMALL.replace(
                "[load]",
                "[budgets]\nshare = 1\ndaily_coins = 4294967296\n[load]",
            ),
            "budgets.daily_coins",
        ),
    ] {
        let e = Scenario::from_toml_str(&text).unwrap_err().to_string();
        assert!(e.contains(key), "{e:?} should name {key:?}");
    }
    assert!(Threshold::parse("p99<10ms").is_ok());
    for bad in ["p99<10", "p77<1ms", "error_rate~1", "rate"] {
        assert!(Threshold::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_set_in_the_setup_make_a_share_of_gifts_budget_exceeded() {
    // The `caps` scenario's shape, small: half the users on a daily budget of 20 coins.
    let s = server(Arc::new(MemoryJournal::default())).await;
    let text = SMALL
        .replace("funding_coins = 200", "funding_coins = 100000")
        .replace("[load]", "[budgets]\nshare = 0.5\ndaily_coins = 20\n[load]");
    let scenario = Scenario::from_toml_str(&text).unwrap();
    let economy = giftstream::economy::Economy::embedded();
    let workload = Workload::new(&scenario, &economy, 1).unwrap();
    let with = (0..2000).filter(|&u| workload.has_budgets(u)).count();
    assert!(
        (800..1200).contains(&with),
        "{with} of 2000 users set budgets"
    );
    let summary = runner::run(&scenario, &spec(TargetKind::Giftstream, &s, ""), &options())
        .await
        .unwrap();
    let json = summary.to_json();
    let outcomes = json["outcomes"].as_object().unwrap();
    assert!(
        outcomes["accepted"].as_u64().unwrap() > 20_000,
        "{outcomes:?}"
    );
    assert!(
        outcomes["BUDGET_EXCEEDED"].as_u64().unwrap() > 1_000,
        "{outcomes:?}"
    );
    assert_eq!(json["errors"].as_object().unwrap().len(), 0);
    let audit = summary.audit.as_ref().unwrap();
    assert!(audit.is_clean(), "{audit:?}");
    // Exactly the chosen users have the budget.
    let (budgeted, free) = (
        (0..2000).find(|&u| workload.has_budgets(u)).unwrap(),
        (0..2000).find(|&u| !workload.has_budgets(u)).unwrap(),
    );
    let now = giftstream::clock::now();
    let w = s.engine.wallet(workload.user(budgeted), now);
    assert_eq!(w.daily_budget_coins, Some(20));
    assert!(w.spent_today <= 20);
    assert_eq!(
        s.engine.wallet(workload.user(free), now).daily_budget_coins,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_run_gives_a_well_formed_summary_and_a_clean_audit() {
    let s = server(Arc::new(MemoryJournal::default())).await;
    let scenario = Scenario::from_toml_str(SMALL).unwrap();
    let summary = runner::run(&scenario, &spec(TargetKind::Giftstream, &s, ""), &options())
        .await
        .unwrap();
    let json = summary.to_json();
    assert_eq!(json["schema"], "giftload.summary/v1");
    assert_eq!(json["planned_rate"], 20000.0);
    let achieved = json["achieved_rate"].as_f64().unwrap();
    assert!(achieved > 18_000.0 && achieved < 22_000.0, "{achieved}");
    for q in ["p50", "p99", "p999", "max"] {
        assert!(json["latency_us"][q].as_u64().unwrap() > 0, "{q}");
    }
    let outcomes = json["outcomes"].as_object().unwrap();
    // 200 coins each: some gifts are refused for want of coins, as the rules say.
    assert!(outcomes["accepted"].as_u64().unwrap() > 0);
    assert!(outcomes["INSUFFICIENT_COINS"].as_u64().unwrap() > 0);
    let answered: u64 = outcomes.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(answered, 40_000, "2 s measured at 20k events/s");
    assert_eq!(json["errors"].as_object().unwrap().len(), 0);
    assert!(json["intervals"].as_array().unwrap().len() >= 2);
    let audit = summary.audit.as_ref().unwrap();
    assert!(audit.is_clean(), "{audit:?}");
    assert!(audit.resent > 0 && audit.creators_checked == 50);

    // Thresholds: one that holds, one that cannot.
    let (ok, _) = giftload::report::check_thresholds(
        &summary,
        &[
            Threshold::parse("error_rate<0.001").unwrap(),
            Threshold::parse("achieved_rate>=0.9").unwrap(),
        ],
    );
    assert!(ok);
    let (ok, _) =
        giftload::report::check_thresholds(&summary, &[Threshold::parse("p99<1us").unwrap()]);
    assert!(!ok);
}

/// `load/scenarios/hold.toml`'s shape, small: payouts mixed into gifts under a hold
/// longer than the run, put in force by the scenario's `[economy]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_under_an_earnings_hold_are_refused_while_held() {
    let s = server(Arc::new(MemoryJournal::default())).await;
    let text = SMALL
        .replace(
            r#"{ value = "rose", weight = 60 }, { value = "panda", weight = 40 }"#,
            r#"{ value = "universe", weight = 1 }"#,
        )
        .replace("funding_coins = 200", "funding_coins = 2500000")
        .replace(
            "[load]",
            "[economy]\nearnings_hold_ms = 600000\n[mix]\npayout_share = 0.02\n[load]",
        );
    let scenario = Scenario::from_toml_str(&text).unwrap();
    let target = spec(TargetKind::Giftstream, &s, "");
    giftload::target::put_economy(
        &target,
        "dev-admin-token-0001",
        scenario.economy.as_ref().unwrap(),
    )
    .await
    .unwrap();
    let summary = runner::run(&scenario, &target, &options()).await.unwrap();
    let json = summary.to_json();
    let outcomes = json["outcomes"].as_object().unwrap();
    // Every creator was credited far more than a payout asks (20_000 diamonds), but
    // nothing is released within the run.
    let refused = outcomes["INSUFFICIENT_DIAMONDS"].as_u64().unwrap();
    assert!(refused > 100, "{outcomes:?}");
    assert!(
        !outcomes.contains_key("BELOW_PAYOUT_MINIMUM"),
        "{outcomes:?}"
    );
    let audit = summary.audit.as_ref().unwrap();
    assert!(audit.is_clean(), "{audit:?}");
    let creator: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/v1/creators/1000000000", s.http))
        .bearer_auth("dev-read-token-00001")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let held = creator["diamonds_held"].as_u64().unwrap();
    assert!(held > 20_000, "{creator}");
    assert_eq!(creator["diamonds_available"], 0, "{creator}");
    assert_eq!(creator["diamonds_total"].as_u64().unwrap(), held);
}

/// `load/scenarios/chargebacks.toml`'s shape, small: unfunded users recharge, gift, and
/// reverse recharges of ten batches before; many reversals leave a debt, whose gifts
/// are ACCOUNT_IN_DEBT; the audit after the run is clean. The baseline refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reversals_mixed_in_make_debts_and_run_clean() {
    let s = server(Arc::new(MemoryJournal::default())).await;
    let text = SMALL
        .replace("funding_coins = 200", "funding_coins = 0")
        .replace(
            "[load]",
            "[mix]\nrecharge_share = 0.2\nreversal_share = 0.05\nreversal_lag_batches = 3\n[load]",
        );
    let scenario = Scenario::from_toml_str(&text).unwrap();
    let target = spec(TargetKind::Giftstream, &s, "");
    let summary = runner::run(&scenario, &target, &options()).await.unwrap();
    let json = summary.to_json();
    let outcomes = json["outcomes"].as_object().unwrap();
    for code in ["ACCOUNT_IN_DEBT", "ALREADY_REVERSED"] {
        assert!(
            outcomes.get(code).and_then(|n| n.as_u64()).unwrap_or(0) > 0,
            "{code}: {outcomes:?}"
        );
    }
    let audit = summary.audit.as_ref().unwrap();
    assert!(audit.is_clean(), "{audit:?}");
    let totals = s.engine.audit();
    assert!(totals.is_clean(), "{:?}", totals.violations);
    assert!(totals.totals.coins_reversed > 0 && totals.totals.coins_owed > 0);
    let bad =
        Scenario::from_toml_str(&SMALL.replace("[load]", "[mix]\nreversal_share = 0.1\n[load]"));
    assert!(bad.unwrap_err().to_string().contains("mix.reversal_share"));
}

/// `load/scenarios/refunds.toml`'s shape, small: reversals of gifts sent 3 batches
/// earlier under a hold longer than the run are accepted, and the audit's coin totals
/// (which subtract them) match the server's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gift_reversals_under_a_hold_are_accepted_and_the_audit_counts_them() {
    let s = server(Arc::new(MemoryJournal::default())).await;
    let text = SMALL.replace("funding_coins = 200", "funding_coins = 2500000").replace(
        "[load]",
        "[economy]\nearnings_hold_ms = 600000\n[mix]\ngift_reversal_share = 0.05\ngift_reversal_lag_batches = 3\n[load]",
    );
    let scenario = Scenario::from_toml_str(&text).unwrap();
    let target = spec(TargetKind::Giftstream, &s, "");
    giftload::target::put_economy(
        &target,
        "dev-admin-token-0001",
        scenario.economy.as_ref().unwrap(),
    )
    .await
    .unwrap();
    let summary = runner::run(&scenario, &target, &options()).await.unwrap();
    let audit = summary.audit.as_ref().unwrap();
    assert!(audit.is_clean(), "{audit:?}");
    let totals = s.engine.audit().totals;
    assert!(totals.gift_reversals > 50, "{totals:?}");
    assert!(s.engine.audit().is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_json_charts_and_html_and_thresholds_set_the_exit_code() {
    let s = server(Arc::new(MemoryJournal::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("small.toml");
    std::fs::write(&scenario, SMALL).unwrap();
    let (tcp, http, base) = (s.tcp.to_string(), s.http.to_string(), dir.path().to_owned());
    let scenario_path = scenario.clone();
    let run = move |threshold: &str, out: &str| {
        Command::new(env!("CARGO_BIN_EXE_giftload"))
            .args(["run", scenario_path.to_str().unwrap(), "--quiet"])
            .args(["--tcp", &tcp, "--http", &http])
            .args(["--threshold", threshold])
            .args(["--json", base.join(format!("{out}.json")).to_str().unwrap()])
            .args(["--out", base.join(out).to_str().unwrap()])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let (good, bad) = tokio::task::spawn_blocking(move || {
        (run("error_rate<0.01", "good"), run("p99<1us", "bad"))
    })
    .await
    .unwrap();
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    assert_eq!(
        bad.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&bad.stdout)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("good.json")).unwrap()).unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["thresholds"][0]["ok"], true);
    for f in [
        "throughput.png",
        "throughput.svg",
        "latency.png",
        "latency.svg",
        "intervals.tsv",
    ] {
        assert!(
            dir.path().join("good").join(f).metadata().unwrap().len() > 100,
            "{f}"
        );
    }
    let html = std::fs::read_to_string(dir.path().join("good/report.html")).unwrap();
    // Self-contained: the charts are inline, nothing is fetched (the only URL is the
    // SVG namespace).
    assert!(html.contains("<svg"));
    for fetch in ["src=", "<link", "<script", "@import", "url("] {
        assert!(!html.contains(fetch), "{fetch} in report.html");
    }
    // A non-loopback target is refused unless allowed.
    let remote = Command::new(env!("CARGO_BIN_EXE_giftload"))
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--quiet",
            "--tcp",
            "192.0.2.1:7070",
        ])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!remote.status.success());
    assert!(String::from_utf8_lossy(&remote.stderr).contains("not a loopback address"));
}

/// Issue #34: `giftload hostile` runs a normal load beside every hostile kind, against
/// the server `serve` runs (in process, its timeouts cut to a second so each kind is
/// closed within the run): acks flow, and the server closes every kind of hostile
/// socket, refuses feeds over its cap and bad tokens over the address's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_closed_while_acks_keep_flowing() {
    let mut config = giftstream::config::Config::from_toml_str(SHIPPED_CONFIG).unwrap();
    config.limits.http_header_read_timeout_ms = 1_000;
    config.limits.http_idle_timeout_ms = 1_500;
    config.limits.write_timeout_ms = 1_000;
    // Also the authentication deadline of a binary connection (the lesser of the two).
    config.limits.read_timeout_ms = 1_000;
    // Fewer than the 8 feed subscribers below: some are refused.
    config.limits.sse_subscribers_max = 4;
    let s = server_with(config, Arc::new(MemoryJournal::default())).await;
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("small.toml");
    std::fs::write(&scenario, SMALL).unwrap();
    let json = dir.path().join("hostile.json");
    let (tcp, http) = (s.tcp.to_string(), s.http.to_string());
    let args = [
        "hostile",
        scenario.to_str().unwrap(),
        "--tcp",
        &tcp,
        "--http",
        &http,
        "--duration",
        "8s",
        "--rate",
        "2000",
        "--slowloris",
        "4",
        "--slowloris-byte-interval",
        "100ms",
        "--idle-http",
        "2",
        "--idle-tcp",
        "2",
        "--stalled-readers",
        "2",
        "--feed-subscribers",
        "8",
        "--feed-hold",
        "500ms",
        "--bad-tokens-per-second",
        "20",
        "--hold-max",
        "6s",
        "--stall-window",
        "2s",
        "--json",
        json.to_str().unwrap(),
        "--quiet",
    ]
    .map(str::to_owned);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_giftload"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(25), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], "giftload.hostile/v1");
    assert_eq!(report["passed"], true, "{stdout}");
    // Acks flowed: the planned rate, and an ack in every second of the run.
    assert!(
        report["acks"]["achieved_rate"].as_f64().unwrap() > 1_900.0,
        "{stdout}"
    );
    assert!(report["acks"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let per_second = report["acks"]["per_second"].as_array().unwrap();
    assert!(per_second.len() >= 7, "{stdout}");
    assert!(
        per_second.iter().all(|a| a.as_u64().unwrap() > 0),
        "{stdout}"
    );
    let kind = |name: &str| report["hostile"][name].clone();
    let closed = |name: &str| kind(name)["closed_by_server"].as_u64().unwrap();
    let status = |name: &str, s: &str| kind(name)["statuses"][s].as_u64().unwrap_or(0);
    // Slowloris and idle sockets: closed by the server at its timeouts (from a 1 s
    // timeout: the time to close is that timeout, give or take a scheduling delay).
    for (name, at_least, timeout_ms) in [
        ("slowloris", 4, 1_000),
        ("idle_http", 2, 1_500),
        ("idle_tcp", 2, 1_000),
    ] {
        assert!(closed(name) >= at_least, "{name}: {stdout}");
        let p50 = kind(name)["time_to_close_ms"]["p50"].as_u64().unwrap();
        assert!(
            p50 >= timeout_ms - 50 && p50 < timeout_ms + 2_000,
            "{name}: p50 {p50} ms: {stdout}"
        );
        assert_eq!(kind(name)["outlived"], 0, "{name}: {stdout}");
    }
    // An unauthenticated binary socket is told why: error 11, no frame in time.
    assert!(status("idle_tcp", "error 11") >= 1, "{stdout}");
    // Stalled readers: closed once the server's writes to them wait a second.
    assert!(closed("stalled_reader") >= 1, "{stdout}");
    assert_eq!(kind("stalled_reader")["outlived"], 0, "{stdout}");
    // Feeds: streams up to the cap, refusals beyond it.
    assert!(status("feed_churn", "200") >= 4, "{stdout}");
    assert!(
        status("feed_churn", "429 TOO_MANY_SUBSCRIBERS") >= 1,
        "{stdout}"
    );
    // Bad tokens: 401 until the address spent its budget, then 429; each connection
    // closed by the server without waiting for the body it announced.
    assert!(status("bad_token", "401 UNAUTHORIZED") >= 1, "{stdout}");
    assert!(
        status("bad_token", "429 AUTH_RATE_LIMITED") >= 1,
        "{stdout}"
    );
    assert!(closed("bad_token") >= 20, "{stdout}");
    assert_eq!(kind("bad_token")["outlived"], 0, "{stdout}");
}

#[test]
fn plot_draws_a_table_on_log_axes_and_refuses_a_log_y_value_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    let plot = |table: &str, out: &str, extra: &[&str]| {
        let path = dir.path().join(format!("{out}.tsv"));
        std::fs::write(&path, table).unwrap();
        Command::new(env!("CARGO_BIN_EXE_giftload"))
            .arg("plot")
            .arg(&path)
            .args([
                "--out",
                dir.path().join(format!("{out}.png")).to_str().unwrap(),
            ])
            .args(["--title", "knee", "--y", "ms"])
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    // Latencies over three decades, one cell missing.
    let knee = "offered\tp50\tp99\n25000\t3.6\t6.6\n150000\t3.4\t\n350000\t466.7\t1711.1\n";
    let drawn = plot(knee, "knee", &["--log-x", "--log-y"]);
    assert!(
        drawn.status.success(),
        "{}",
        String::from_utf8_lossy(&drawn.stderr)
    );
    let png = std::fs::read(dir.path().join("knee.png")).unwrap();
    assert!(png.len() > 1000 && png.starts_with(b"\x89PNG"));
    let zero = plot("offered\tp99\n1\t0\n2\t5\n", "zero", &["--log-y"]);
    assert!(!zero.status.success());
    assert!(
        String::from_utf8_lossy(&zero.stderr).contains("a log y axis needs values > 0"),
        "{}",
        String::from_utf8_lossy(&zero.stderr)
    );
    assert!(!dir.path().join("zero.png").exists());
    // The same table draws on a linear y axis.
    let linear = plot("offered\tp99\n1\t0\n2\t5\n", "linear", &[]);
    assert!(
        linear.status.success(),
        "{}",
        String::from_utf8_lossy(&linear.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_ms_stall_shows_in_corrected_percentiles_not_in_raw_ones() {
    let journal = Arc::new(StallingJournal {
        inner: MemoryJournal::default(),
        armed: AtomicBool::new(false),
        stall: Duration::from_millis(200),
    });
    let s = server(journal.clone()).await;
    let scenario = Scenario::from_toml_str(
        &SMALL
            .replace("connections = 2", "connections = 1")
            .replace("in_flight = 8", "in_flight = 1")
            .replace("batch = 100", "batch = 20")
            .replace("funding_coins = 200", "funding_coins = 0")
            .replace("duration_s = 2.5", "duration_s = 3.5"),
    )
    .unwrap();
    let arm = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        journal.armed.store(true, Ordering::Release);
    });
    let mut options = options();
    options.audit = false;
    let summary = runner::run(&scenario, &spec(TargetKind::Giftstream, &s, ""), &options)
        .await
        .unwrap();
    arm.await.unwrap();
    // 1000 batches/s; the stall holds ~200 of them behind one request in flight.
    let corrected_p90 = summary.corrected.value_at_quantile(0.90);
    let raw_p99 = summary.raw.value_at_quantile(0.99);
    assert!(
        summary.corrected.max() >= 190_000,
        "max {}",
        summary.corrected.max()
    );
    assert!(
        summary.corrected.value_at_quantile(0.99) >= 100_000,
        "corrected p99 {} us",
        summary.corrected.value_at_quantile(0.99)
    );
    assert!(
        raw_p99 < 50_000,
        "raw p99 {raw_p99} us: the stall hides from raw latency"
    );
    assert!(
        summary.missed_sends > 50,
        "sends delayed by the stall: {}",
        summary.missed_sends
    );
    let _ = corrected_p90;
}

/// A private redis-server on a free port (no persistence needed here).
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (bash .ci/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Redis {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_lua_baseline_answers_the_same_events_like_giftstream() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let s = server(Arc::new(MemoryJournal::default())).await;
    // 30 coins each: many gifts are refused for want of coins.
    let scenario =
        Scenario::from_toml_str(&SMALL.replace("funding_coins = 200", "funding_coins = 30"))
            .unwrap();
    let economy = giftstream::economy::Economy::embedded();
    let workload = Workload::new(&scenario, &economy, 99).unwrap();
    let mut answers = Vec::new();
    for kind in [TargetKind::Giftstream, TargetKind::RedisLua] {
        let conn = Conn::connect(&spec(kind, &s, &url), &economy)
            .await
            .unwrap();
        let mut labels = Vec::new();
        let mut n = 0;
        while let Some(batch) = workload.funding(n, 500) {
            labels.extend(conn.submit(batch).await.await.unwrap());
            n += 1;
        }
        // The same batches in the same order, then a batch sent twice.
        for n in 0..40 {
            labels.extend(conn.submit(workload.batch(n, 0.0)).await.await.unwrap());
        }
        labels.extend(conn.submit(workload.batch(3, 0.0)).await.await.unwrap());
        answers.push(labels);
    }
    assert_eq!(answers[0].len(), 2000 + 41 * 100);
    assert!(answers[0].iter().any(|l| l == "INSUFFICIENT_COINS"));
    assert!(answers[0].iter().any(|l| l == "accepted"));
    assert!(answers[0].iter().any(|l| l.starts_with("duplicate:")));
    assert_eq!(answers[0], answers[1], "same events, same outcomes");
}

/// `SMALL` with 30 % of the gifts on videos (`load/scenarios/videos.toml`'s mix).
fn small_with_videos() -> String {
    SMALL.replace("[load]", "[mix]\nvideo_share = 0.3\n[load]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_gifts_mixed_in_run_clean_and_other_scenarios_send_none() {
    let scenario = Scenario::from_toml_str(&small_with_videos()).unwrap();
    let economy = giftstream::economy::Economy::embedded();
    let workload = Workload::new(&scenario, &economy, 7).unwrap();
    let batch = workload.batch(0, 0.0);
    let videos = batch
        .iter()
        .filter(|e| matches!(e, giftstream::engine::Event::VideoGift(_)))
        .count();
    assert!(
        (15..=45).contains(&videos),
        "about 30 % of 100 gifts: {videos}"
    );
    let plain = Workload::new(&Scenario::from_toml_str(SMALL).unwrap(), &economy, 7).unwrap();
    assert_eq!(plain.batch(0, 0.0), workload_without_videos(&economy));

    let s = server(Arc::new(MemoryJournal::default())).await;
    let summary = runner::run(&scenario, &spec(TargetKind::Giftstream, &s, ""), &options())
        .await
        .unwrap();
    let json = summary.to_json();
    let outcomes = json["outcomes"].as_object().unwrap();
    assert!(outcomes["accepted"].as_u64().unwrap() > 0);
    assert_eq!(json["errors"].as_object().unwrap().len(), 0);
    let audit = summary.audit.as_ref().unwrap();
    // The audit checks every creator's coins against the accepted gifts' costs, video
    // gifts included.
    assert!(audit.is_clean(), "{audit:?}");
    assert!(audit.creators_checked > 0, "{audit:?}");
}

/// `SMALL`'s first batch, as the scenario always sent it (no video share: no draw).
fn workload_without_videos(
    economy: &giftstream::economy::Economy,
) -> Vec<giftstream::engine::Event> {
    let with_zero = SMALL.replace("[load]", "[mix]\nvideo_share = 0.0\n[load]");
    Workload::new(&Scenario::from_toml_str(&with_zero).unwrap(), economy, 7)
        .unwrap()
        .batch(0, 0.0)
}

/// `SMALL` with a fifth of the events purchases (`load/scenarios/purchases.toml`'s mix).
fn small_with_purchases() -> String {
    SMALL
        .replace(
            "[population]",
            "items = [ { value = \"sticker_pack\", weight = 70 }, { value = \"profile_frame\", weight = 30 } ]\n[population]",
        )
        .replace("[load]", "[mix]\npurchase_share = 0.2\n[load]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchases_mixed_in_run_clean_and_the_baseline_answers_them_alike() {
    let scenario = Scenario::from_toml_str(&small_with_purchases()).unwrap();
    let economy = giftstream::economy::Economy::embedded();
    let workload = Workload::new(&scenario, &economy, 7).unwrap();
    let batch = workload.batch(0, 0.0);
    let purchases = batch
        .iter()
        .filter(|e| matches!(e, giftstream::engine::Event::Purchase(_)))
        .count();
    assert!(
        (8..=35).contains(&purchases),
        "about a fifth of 100 events: {purchases}"
    );
    // Scenarios without purchases send the events they always sent.
    let plain = Workload::new(&Scenario::from_toml_str(SMALL).unwrap(), &economy, 7).unwrap();
    assert!(
        plain
            .batch(0, 0.0)
            .iter()
            .all(|e| matches!(e, giftstream::engine::Event::Gift(_)))
    );

    let s = server(Arc::new(MemoryJournal::default())).await;
    let summary = runner::run(&scenario, &spec(TargetKind::Giftstream, &s, ""), &options())
        .await
        .unwrap();
    let json = summary.to_json();
    let outcomes = json["outcomes"].as_object().unwrap();
    assert!(outcomes["accepted"].as_u64().unwrap() > 0);
    assert_eq!(json["errors"].as_object().unwrap().len(), 0);
    let audit = summary.audit.as_ref().unwrap();
    assert!(audit.is_clean(), "{audit:?}");

    // The baseline's purchase script answers like giftstream's rules (200 coins each:
    // frames and stickers are refused for want of coins too).
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let fresh = server(Arc::new(MemoryJournal::default())).await;
    let workload = Workload::new(&scenario, &economy, 99).unwrap();
    let mut answers = Vec::new();
    for kind in [TargetKind::Giftstream, TargetKind::RedisLua] {
        let conn = Conn::connect(&spec(kind, &fresh, &url), &economy)
            .await
            .unwrap();
        let mut labels = Vec::new();
        let mut n = 0;
        while let Some(batch) = workload.funding(n, 500) {
            labels.extend(conn.submit(batch).await.await.unwrap());
            n += 1;
        }
        for n in 0..40 {
            labels.extend(conn.submit(workload.batch(n, 0.0)).await.await.unwrap());
        }
        labels.extend(conn.submit(workload.batch(3, 0.0)).await.await.unwrap());
        answers.push(labels);
    }
    assert!(answers[0].iter().any(|l| l == "INSUFFICIENT_COINS"));
    assert_eq!(answers[0], answers[1], "same events, same outcomes");
}

/// The `giftstream` binary beside this test's giftload (a workspace build puts them in
/// the same directory: `cargo test --workspace`, as `.ci/test` runs).
fn giftstream_bin() -> PathBuf {
    let giftload = PathBuf::from(env!("CARGO_BIN_EXE_giftload"));
    let bin = giftload.with_file_name("giftstream");
    assert!(
        bin.exists(),
        "{} not built: run the workspace's tests (cargo test --workspace) or cargo build --bin giftstream",
        bin.display()
    );
    bin
}

/// The experiment harness end to end, bounded: `giftload sweep interval` starts its own
/// redis-server and a fresh `giftstream serve` per point (free loopback ports), runs two
/// 3-second closed-loop points of a small scenario, and writes the table and the chart
/// (stopping what it started when it ends).
#[test]
fn a_sweep_starts_its_own_redis_and_servers_and_writes_its_table_and_chart() {
    let dir = tempfile::tempdir().unwrap();
    let scenarios = dir.path().join("scenarios");
    std::fs::create_dir_all(&scenarios).unwrap();
    // The sweep loads "uniform": here the small scenario under that name.
    std::fs::write(scenarios.join("uniform.toml"), SMALL).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // From the repository's root, as the experiments run (the server finds
    // config/economy.toml there).
    let out = Command::new(env!("CARGO_BIN_EXE_giftload"))
        .current_dir(&root)
        .args([
            "sweep",
            "interval",
            "--intervals-ms",
            "1",
            "5",
            "--seconds",
            "3",
            "--quiet",
        ])
        .arg("--bin")
        .arg(giftstream_bin())
        .arg("--config")
        .arg(root.join("config/giftstream.toml"))
        .arg("--scenario-dir")
        .arg(&scenarios)
        .arg("--out")
        .arg(dir.path().join("tables"))
        .arg("--results")
        .arg(dir.path().join("charts"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = std::fs::read_to_string(dir.path().join("tables/interval.tsv")).unwrap();
    let rows: Vec<Vec<&str>> = table.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows[0], ["commit interval ms", "events/s", "p99 ms"]);
    assert_eq!(rows.len(), 3, "{table}");
    for row in &rows[1..] {
        let rate: f64 = row[1].parse().unwrap();
        assert!(rate > 1000.0, "{table}");
    }
    assert!(
        dir.path()
            .join("charts/growth-interval.png")
            .metadata()
            .unwrap()
            .len()
            > 1000
    );
}
