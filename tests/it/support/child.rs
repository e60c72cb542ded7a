//! `giftstream serve` as a child process on free loopback ports: killed with SIGKILL on
//! drop, so a failing test leaves no server behind.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct ServeProcess {
    child: Option<Child>,
    pub tcp: String,
    pub http: String,
    log: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl ServeProcess {
    /// Starts `giftstream serve` with `config` (a giftstream.toml path) against `redis`
    /// and `data_dir`; returns once it serves.
    pub fn start(config: &Path, redis: &str, data_dir: &Path) -> ServeProcess {
        ServeProcess::start_with(config, redis, data_dir, &[])
    }

    /// Like [`ServeProcess::start`]; `env` overrides (e.g. a cluster node's name and
    /// its fixed addresses).
    pub fn start_with(
        config: &Path,
        redis: &str,
        data_dir: &Path,
        env: &[(&str, &str)],
    ) -> ServeProcess {
        let mut child = serve_command(config, redis, data_dir, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        let serving = loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("giftstream serving") => break l,
                Some(Ok(l)) => seen.push(l),
                _ => {
                    let _ = child.kill();
                    panic!("giftstream serve exited before serving: {seen:#?}");
                }
            }
        };
        let field = |name: &str| {
            serving
                .split(&format!("{name}="))
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        let (tcp, http) = (field("tcp"), field("http"));
        let log = std::thread::spawn(move || {
            seen.extend(lines.map_while(Result::ok));
            seen
        });
        ServeProcess {
            child: Some(child),
            tcp,
            http,
            log: Some(log),
        }
    }

    /// GET `path` over HTTP with the read token; the JSON body.
    pub async fn read(&self, http: &reqwest::Client, path: &str) -> serde_json::Value {
        http.get(format!("http://{}{path}", self.http))
            .bearer_auth(super::server::READ)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POSTs `events` to `/v1/events` with the ingest token; asserts a 200 and returns
    /// the outcomes.
    pub async fn post_events(
        &self,
        http: &reqwest::Client,
        events: serde_json::Value,
    ) -> Vec<serde_json::Value> {
        let r = http
            .post(format!("http://{}/v1/events", self.http))
            .bearer_auth(super::server::INGEST)
            .json(&serde_json::json!({ "events": events }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        body["outcomes"].as_array().unwrap().clone()
    }

    /// GET `/metrics`: the Prometheus text.
    pub async fn metrics(&self, http: &reqwest::Client) -> String {
        super::get_text(http, &format!("http://{}/metrics", self.http)).await
    }

    /// Sends `kill -SIGNAL` (e.g. `STOP`, `CONT`).
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits (at most `timeout`) for it to exit by itself; its status and log.
    pub fn wait_exit(mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let mut child = self.child.take().unwrap();
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return (status, self.log.take().unwrap().join().unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("giftstream did not exit within {timeout:?}");
    }

    /// SIGKILL: no shutdown, no final commit.
    pub fn kill9(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait (at most 20 s) for exit 0; returns the log.
    pub fn stop(mut self) -> Vec<String> {
        let mut child = self.child.take().unwrap();
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        for _ in 0..200 {
            if let Some(status) = child.try_wait().unwrap() {
                let log = self.log.take().unwrap().join().unwrap();
                assert!(status.success(), "exit status {status}; log: {log:#?}");
                return log;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("giftstream did not exit within 20 s of SIGTERM");
    }
}

/// `giftstream serve` with `config`, `redis` and `data_dir`, on free loopback ports
/// unless `env` (applied last) says otherwise.
fn serve_command(config: &Path, redis: &str, data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_giftstream"));
    command
        .arg("serve")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("GIFTSTREAM_CONFIG", config)
        .env("GIFTSTREAM_HTTP_ADDR", "127.0.0.1:0")
        .env("GIFTSTREAM_TCP_ADDR", "127.0.0.1:0")
        .env("GIFTSTREAM_REDIS_URL", redis)
        .env("GIFTSTREAM_DATA_DIR", data_dir)
        .env("RUST_LOG", "info");
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `giftstream ARGS` to completion with the environment given; returns (success,
/// stdout + stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_giftstream"));
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `giftstream serve` where it must refuse to start (with `config`, `redis`,
/// `data_dir` and `env` as [`ServeProcess::start_with`] takes them); returns its output.
/// Panics if it exits 0, or if it is still running after 30 s (killed then: it served).
pub fn serve_refused(config: &Path, redis: &str, data_dir: &Path, env: &[(&str, &str)]) -> String {
    let child = serve_command(config, redis, data_dir, env)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(out) => {
            let out = out.unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "giftstream serve exited 0: {text}");
            text
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("giftstream serve did not refuse to start within 30 s (it served)");
        }
    }
}
