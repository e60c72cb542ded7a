//! The operations kit in deploy/: the alert rules pass `promtool test rules` with a
//! firing and a quiet case each, a real Prometheus scrapes a real `giftstream serve`
//! under load, every metric the Grafana dashboard queries is one `/metrics` exports,
//! `config check` and `--version` through the real binary, the systemd unit's essentials.
//! prometheus and promtool (Debian package `prometheus`) must be installed: CI does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use giftstream::client::Client;
use serde_json::{Value, json};

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::{RedisServer, free_port};
use crate::support::server::{INGEST, SHIPPED_CONFIG, uuid};
use crate::support::{gift, recharge};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Fails (never skips) when `tool` is not installed, saying how to install it.
fn require(tool: &str) {
    let found = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: `apt-get install prometheus` (Debian; bash .ci/test installs it)"
    );
}

/// Runs `command` to completion, killing it after `timeout`; (success, stdout + stderr).
fn run_bounded(command: &mut Command, timeout: Duration) -> (bool, String) {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let Ok(out) = rx.recv_timeout(timeout) else {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("{command:?} did not finish within {timeout:?}");
    };
    let out = out.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The alert names in alerts.yml (`- alert: Name` lines).
fn alert_names(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|name| name.trim().to_owned())
        .collect()
}

/// The cases of alerts_test.yml as (alert name, firing): a case is quiet when it
/// expects `exp_alerts: []` and firing when an `- exp_labels:` entry follows.
fn test_cases(tests: &str) -> Vec<(String, bool)> {
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    let mut cases = Vec::new();
    let mut name = None;
    for (i, line) in lines.iter().enumerate() {
        if let Some(n) = line.strip_prefix("alertname:") {
            name = Some(n.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = name.take().expect("exp_alerts after an alertname");
            let firing = match rest.trim() {
                "[]" => false,
                "" => lines
                    .get(i + 1)
                    .is_some_and(|next| next.starts_with("- exp_labels:")),
                other => panic!("exp_alerts: {other}: write [] or a list of exp_labels"),
            };
            cases.push((name, firing));
        }
    }
    cases
}

/// Every `giftstream_*` name in `text` (PromQL, descriptions).
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("giftstream_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect()
        })
        .collect()
}

/// The metric names telemetry.rs defines (its `"giftstream_…"` constants).
fn defined_metrics() -> BTreeSet<String> {
    let source = read("src/telemetry.rs");
    metric_names(&source)
        .into_iter()
        .filter(|n| source.contains(&format!("\"{n}\"")))
        .collect()
}

/// A histogram's series name without `_bucket`, `_sum` or `_count`.
fn base_name<'a>(name: &'a str, defined: &BTreeSet<String>) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s).filter(|b| defined.contains(*b)))
        .unwrap_or(name)
}

#[test]
fn alert_rules_pass_promtool_with_a_firing_and_a_quiet_case_each() {
    require("promtool");
    let dir = repo("deploy/prometheus");
    let (ok, out) = run_bounded(
        Command::new("promtool")
            .args(["check", "rules", "alerts.yml"])
            .current_dir(&dir),
        Duration::from_secs(60),
    );
    assert!(ok, "promtool check rules: {out}");
    let (ok, out) = run_bounded(
        Command::new("promtool")
            .args(["test", "rules", "alerts_test.yml"])
            .current_dir(&dir),
        Duration::from_secs(120),
    );
    assert!(ok && out.contains("SUCCESS"), "promtool test rules: {out}");

    let rules = read("deploy/prometheus/alerts.yml");
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 14, "{alerts:?}");
    let cases = test_cases(&read("deploy/prometheus/alerts_test.yml"));
    for alert in &alerts {
        for (firing, what) in [(true, "firing"), (false, "quiet")] {
            assert!(
                cases.contains(&(alert.clone(), firing)),
                "{alert}: no {what} case in alerts_test.yml"
            );
        }
    }
    for (name, _) in &cases {
        assert!(
            alerts.contains(name),
            "alerts_test.yml tests {name}: no such rule"
        );
    }
    // No invented metric: every name a rule reads or mentions is one giftstream defines.
    let defined = defined_metrics();
    for name in metric_names(&rules) {
        assert!(
            defined.contains(base_name(&name, &defined)),
            "alerts.yml names {name}, which src/telemetry.rs does not define"
        );
    }
}

#[test]
fn the_systemd_unit_runs_unprivileged_with_its_limits_and_a_tokens_file() {
    let unit = read("deploy/systemd/giftstream.service");
    for d in [
        "User=giftstream",
        "Group=giftstream",
        "StateDirectory=giftstream",
        "Environment=GIFTSTREAM_DATA_DIR=/var/lib/giftstream",
        "LimitNOFILE=",
        "Restart=on-failure",
        "LoadCredential=tokens:",
        "Environment=GIFTSTREAM_TOKENS_FILE=%d/tokens",
        "ExecStartPre=/usr/local/bin/giftstream config check",
        "ExecStart=/usr/local/bin/giftstream serve",
        "NoNewPrivileges=yes",
    ] {
        assert!(
            unit.lines().any(|l| l.trim().starts_with(d)),
            "giftstream.service has no `{d}`"
        );
    }
    assert!(!unit.contains("User=root"));
}

#[test]
fn version_prints_the_build_info() {
    let (ok, out) = run_cli(&["--version"], &[]);
    assert!(ok, "{out}");
    let line = out.trim();
    assert!(
        line.starts_with(&format!(
            "giftstream {} (commit ",
            env!("CARGO_PKG_VERSION")
        )),
        "{line}"
    );
    assert!(
        line.contains(", rustc ") && line.contains(", profile "),
        "{line}"
    );
}

#[test]
fn config_check_accepts_the_shipped_files_and_names_the_wrong_key() {
    let check = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["config", "check"];
        all.extend_from_slice(args);
        run_cli(&all, env)
    };
    let (ok, out) = check(&["--config", "config/giftstream.toml"], &[]);
    assert!(ok && out.contains("config check: ok"), "{out}");
    assert!(out.contains("economy: config/economy.toml ok"), "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = tmp.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let refused = |args: &[&str], env: &[(&str, &str)], key: &str| {
        let (ok, out) = check(args, env);
        assert!(!ok, "config check passed; expected it to name {key}: {out}");
        assert!(out.contains(key), "config check must name {key}: {out}");
    };
    let small_queue = write(
        "queue.toml",
        SHIPPED_CONFIG.replace("pending_events_max = 1000000", "pending_events_max = 10"),
    );
    refused(
        &["--config", &small_queue],
        &[],
        "commit.pending_events_max",
    );
    let typo = write(
        "typo.toml",
        SHIPPED_CONFIG.replace("[server]\n", "[server]\nhttp_adress = \"127.0.0.1:1\"\n"),
    );
    refused(&["--config", &typo], &[], "http_adress");
    let shipped = ["--config", "config/giftstream.toml"];
    refused(
        &shipped,
        &[("GIFTSTREAM_ACK", "sometimes")],
        "GIFTSTREAM_ACK",
    );
    refused(
        &shipped,
        &[("GIFTSTREAM_TOKENS_FILE", "/nonexistent/tokens")],
        "GIFTSTREAM_TOKENS_FILE",
    );
    refused(
        &["--config", "/nonexistent/giftstream.toml"],
        &[],
        "--config",
    );
    let economy = write(
        "economy.toml",
        read("config/economy.toml").replace("max_gift_count = 9999", "max_gift_count = 0"),
    );
    let mut args = shipped.to_vec();
    args.extend(["--economy", &economy]);
    refused(&args, &[], "max_gift_count");

    // A misspelt override is ignored by `serve`: the check says so (and passes).
    let (ok, out) = check(&shipped, &[("GIFTSTREAM_REDIS_UR", "redis://x")]);
    assert!(
        ok && out.contains("warning: GIFTSTREAM_REDIS_UR is set"),
        "{out}"
    );
    let (ok, out) = check(&shipped, &[("GIFTSTREAM_ACK", "applied")]);
    assert!(
        ok && out.contains("environment overrides: GIFTSTREAM_ACK"),
        "{out}"
    );
}

/// A `giftstream serve` on `redis` (read model on, durable acks) whose HTTP batches are
/// at most 5 events, so that a limit and a request error are easy to provoke.
fn serve(redis: &RedisServer, dir: &Path) -> ServeProcess {
    let config = dir.join("giftstream.toml");
    let text = SHIPPED_CONFIG.replace(
        "http_events_per_batch_max = 10000",
        "http_events_per_batch_max = 5",
    );
    assert_ne!(text, SHIPPED_CONFIG);
    std::fs::write(&config, text).unwrap();
    ServeProcess::start(&config, &redis.url(), &dir.join("data"))
}

/// Gifts over the binary protocol and over HTTP until `stop` (or `at_most`), and the
/// errors a dashboard shows: a batch over the HTTP limit, a bad token. The events sent.
async fn load(tcp: String, http_addr: String, stop: Arc<AtomicBool>, at_most: Duration) -> u64 {
    let http = reqwest::Client::new();
    let url = format!("http://{http_addr}/v1/events");
    let post = |events: Value, token: &'static str| {
        http.post(&url)
            .bearer_auth(token)
            .json(&json!({ "events": events }))
            .send()
    };
    let too_many: Vec<Value> = (0..6)
        .map(|k| {
            json!({"type": "gift", "event_id": uuid(1 << 90 | k), "sender": 1,
                        "creator": 7, "stream": 9007, "gift": "rose", "count": 1})
        })
        .collect();
    assert_eq!(post(json!(too_many), INGEST).await.unwrap().status(), 413);
    let unauthorized = post(json!([]), "not-a-token-at-all-000").await.unwrap();
    assert_eq!(unauthorized.status(), 401);

    let client = Client::connect(tcp.as_str(), INGEST).await.unwrap();
    let funding: Vec<_> = (0..50u64)
        .map(|u| recharge(u128::from(u), 100 + u, "coins_7000"))
        .collect();
    client.send(&funding).await.unwrap();
    let deadline = Instant::now() + at_most;
    let mut sent = 0u64;
    let mut round = 0u128;
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        let batch: Vec<_> = (0..200u128)
            .map(|k| {
                gift(
                    1 << 80 | round << 16 | k,
                    100 + (k % 50) as u64,
                    7 + (k % 3) as u64,
                    "rose",
                    1,
                )
            })
            .collect();
        client.send(&batch).await.unwrap();
        let over_http: Vec<Value> = (0..5u128)
            .map(|k| {
                json!({"type": "gift", "event_id": uuid(2 << 80 | round << 16 | k),
                            "sender": 100 + (k % 50) as u64, "creator": 7, "stream": 9007,
                            "gift": "rose", "count": 1})
            })
            .collect();
        let answered = post(json!(over_http), INGEST).await.unwrap();
        assert_eq!(answered.status(), 200);
        sent += 205;
        round += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sent
}

/// The sample names of a Prometheus text exposition.
fn exported_names(metrics: &str) -> BTreeSet<String> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            l.split(['{', ' '])
                .next()
                .expect("a sample line has a name")
                .to_owned()
        })
        .collect()
}

/// Every PromQL query of the dashboard (panel targets, nested rows, variables).
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    let mut panels: Vec<&Value> = dashboard["panels"].as_array().unwrap().iter().collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "panel {:?} has no query",
            panel["title"]
        );
        for target in targets.unwrap() {
            let expr = target["expr"].as_str().expect("a target's expr");
            assert!(
                !expr.trim().is_empty(),
                "panel {:?}: empty query",
                panel["title"]
            );
            queries.push(expr.to_owned());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(q) = variable["definition"].as_str() {
            queries.push(q.to_owned());
        }
    }
    queries
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/giftstream.json")).expect("giftstream.json is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exported() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(&redis, tmp.path());
    let stop = Arc::new(AtomicBool::new(false));
    let sent = load(
        server.tcp.clone(),
        server.http.clone(),
        stop,
        Duration::from_secs(2),
    )
    .await;
    assert!(sent > 0);
    // The read model writes off the ack path: wait until its first write is counted.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let exported = loop {
        let names = exported_names(&server.metrics(&http).await);
        if names.contains("giftstream_read_model_write_seconds_bucket") {
            break names;
        }
        assert!(
            Instant::now() < deadline,
            "no read-model write in 20 s: {names:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let queries = dashboard_queries(&dashboard());
    assert!(queries.len() >= 20, "{queries:#?}");
    for query in &queries {
        let names = metric_names(query);
        assert!(
            !names.is_empty(),
            "a query that names no giftstream metric: {query}"
        );
        for name in names {
            assert!(
                exported.contains(&name),
                "the dashboard queries {name}, which /metrics does not export: {query}"
            );
        }
    }
    server.stop();
}

/// `prometheus` on a free loopback port with `config`: killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, config: &str) -> Prometheus {
        let port = free_port();
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("prometheus");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `/api/v1/{path}`: the `data` of a successful answer.
    async fn api(&self, http: &reqwest::Client, path: &str, query: &[(&str, &str)]) -> Value {
        let body: Value = http
            .get(format!("{}/api/v1/{path}?{}", self.url, encode(query)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(body["status"], "success", "{path} {query:?}: {body}");
        body["data"].clone()
    }

    /// The value of instant `query` (the first series), if it has one.
    async fn value(&self, http: &reqwest::Client, query: &str) -> Option<f64> {
        let data = self.api(http, "query", &[("query", query)]).await;
        data["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

/// `k=v&k=v`, percent-encoded (PromQL is full of `{}"=~`).
fn encode(query: &[(&str, &str)]) -> String {
    let escape = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    query
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 250 ms until it holds or `timeout` passes.
async fn eventually<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_running_giftstream_under_load() {
    require("prometheus");
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let server = serve(&redis, tmp.path());
    let config = format!(
        "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
         rule_files: [\"{}\"]\n\
         scrape_configs:\n  - job_name: giftstream\n    static_configs:\n      - targets: [\"{}\"]\n",
        repo("deploy/prometheus/alerts.yml").display(),
        server.http
    );
    let prometheus = Prometheus::start(tmp.path(), &config);
    let http = reqwest::Client::new();
    let ready = eventually(Duration::from_secs(30), || async {
        let r = http.get(format!("{}/-/ready", prometheus.url)).send().await;
        r.is_ok_and(|r| r.status().is_success())
    })
    .await;
    assert!(ready, "prometheus not ready in 30 s: {}", prometheus.log());

    // Load until Prometheus sees a rate of events (at most 40 s).
    let stop = Arc::new(AtomicBool::new(false));
    let loader = tokio::spawn(load(
        server.tcp.clone(),
        server.http.clone(),
        stop.clone(),
        Duration::from_secs(60),
    ));
    let rate = r#"sum(rate(giftstream_events_total{job="giftstream",outcome="accepted"}[10s]))"#;
    let scraped = eventually(Duration::from_secs(40), || async {
        prometheus.value(&http, rate).await.is_some_and(|v| v > 0.0)
    })
    .await;
    // Every dashboard query answers with data while the load runs.
    let mut empty = Vec::new();
    if scraped {
        // Not the variables' label_values(), which is Grafana's, not PromQL.
        let panels = dashboard_queries(&dashboard())
            .into_iter()
            .filter(|q| !q.starts_with("label_values("));
        for query in panels {
            let query = query
                .replace("$__rate_interval", "15s")
                .replace("$instance", ".*");
            let data = prometheus.api(&http, "query", &[("query", &query)]).await;
            if data["result"].as_array().is_none_or(Vec::is_empty) {
                empty.push(query);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let sent = loader.await.unwrap();
    assert!(
        scraped,
        "prometheus saw no rate of accepted events in 40 s ({sent} sent): {}",
        prometheus.log()
    );
    assert!(
        empty.is_empty(),
        "dashboard queries without data: {empty:#?}"
    );
    let up = prometheus.value(&http, r#"up{job="giftstream"}"#).await;
    assert_eq!(up, Some(1.0));

    // Prometheus loaded every alert rule and evaluates it.
    let alerts = alert_names(&read("deploy/prometheus/alerts.yml"));
    let evaluated = eventually(Duration::from_secs(20), || async {
        let data = prometheus.api(&http, "rules", &[("type", "alert")]).await;
        let rules: Vec<&Value> = data["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap())
            .collect();
        let names: BTreeSet<String> = rules
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        names == alerts && rules.iter().all(|r| r["health"] == "ok")
    })
    .await;
    assert!(
        evaluated,
        "prometheus did not load and evaluate every rule: {}",
        prometheus.log()
    );
    // A healthy server fires nothing (GiftstreamNotReady's probe job is absent here).
    let firing = prometheus.api(&http, "alerts", &[]).await;
    let firing: Vec<&Value> = firing["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .collect();
    assert!(
        firing.is_empty(),
        "alerts firing on a healthy server: {firing:#?}"
    );
    server.stop();
}
