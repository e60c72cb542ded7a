//! `giftstream serve` processes on free loopback ports (or a cluster node's), and what
//! the harness reads from them over HTTP (readiness, /metrics).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::config::ServerConfig;
use super::process::{READY_TIMEOUT, STOP_TIMEOUT, WorkDir, free_port, reap, signal};

/// How a `giftstream serve` is started.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bin: PathBuf,
    pub config: ServerConfig,
    /// `GIFTSTREAM_REDIS_URL` (none: the config's).
    pub redis_url: Option<String>,
    /// `GIFTSTREAM_CLUSTER_NODE`, with the node's addresses from the config.
    pub node: Option<String>,
    /// `RUST_LOG` (the scripts' `warn`; `info` where a probe reads the log).
    pub log: String,
}

/// A `giftstream serve` process on free loopback ports (or its cluster node's), with
/// its data in a directory of its own; SIGTERMed (and waited for) when dropped.
pub struct Serve {
    child: Option<Child>,
    pub tcp: String,
    pub http: String,
    work: WorkDir,
    options: ServeOptions,
}

impl Serve {
    pub fn start(options: ServeOptions) -> anyhow::Result<Serve> {
        let (tcp, http) = match &options.node {
            Some(name) => node_addrs(&options.config, name)?,
            None => (
                format!("127.0.0.1:{}", free_port()?),
                format!("127.0.0.1:{}", free_port()?),
            ),
        };
        let mut serve = Serve {
            child: None,
            tcp,
            http,
            work: WorkDir::new("serve")?,
            options,
        };
        serve.spawn()?;
        Ok(serve)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let config = self.work.path().join("giftstream.toml");
        self.options.config.write(&config)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = Command::new(&self.options.bin);
        cmd.arg("serve")
            .env("GIFTSTREAM_CONFIG", &config)
            .env("GIFTSTREAM_DATA_DIR", self.work.path().join("data"))
            .env("GIFTSTREAM_TCP_ADDR", &self.tcp)
            .env("GIFTSTREAM_HTTP_ADDR", &self.http)
            .env("RUST_LOG", &self.options.log)
            .stdout(log.try_clone()?)
            .stderr(log);
        if let Some(url) = &self.options.redis_url {
            cmd.env("GIFTSTREAM_REDIS_URL", url);
        }
        if let Some(node) = &self.options.node {
            cmd.env("GIFTSTREAM_CLUSTER_NODE", node);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("start {} serve", self.options.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until `path` (`/readyz`; `/healthz` for a cluster node) answers 200.
    pub fn wait_for(&mut self, path: &str) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        while !http_get(&self.http, path).is_ok_and(|(status, _)| status == 200) {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                anyhow::bail!("giftstream serve exited ({status}):\n{}", self.log_tail(20));
            }
            anyhow::ensure!(t0.elapsed() < READY_TIMEOUT, "giftstream serve not ready");
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(t0.elapsed())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn log_path(&self) -> PathBuf {
        self.work.path().join("serve.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.work.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.work.path().join("giftstream.toml")
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> Metrics {
        Metrics(http_get(&self.http, "/metrics").map_or_else(|_| String::new(), |(_, b)| b))
    }

    /// SIGTERM and wait (a graceful shutdown).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            reap(&mut c, STOP_TIMEOUT);
        }
    }

    /// SIGKILL (a crash); [`Serve::restart`] starts it again on the same data.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        self.spawn()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cluster node's `tcp_addr` and `http_addr` from the config's `[cluster] nodes`.
fn node_addrs(config: &ServerConfig, name: &str) -> anyhow::Result<(String, String)> {
    let nodes = config
        .get("cluster.nodes")
        .and_then(toml::Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("no [cluster] nodes in the config"))?;
    let node = nodes
        .iter()
        .find(|n| n.get("name").and_then(toml::Value::as_str) == Some(name))
        .ok_or_else(|| anyhow::anyhow!("no cluster node {name}"))?;
    let addr = |k: &str| {
        node.get(k)
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("cluster node {name}: no {k}"))
    };
    Ok((addr("tcp_addr")?, addr("http_addr")?))
}

/// A plain HTTP/1.1 GET (no TLS): the status and the body.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A Prometheus text exposition.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of the samples of `name` whose labels contain `labels` (`""`: all).
    pub fn sum(&self, name: &str, labels: &str) -> f64 {
        self.samples(name)
            .filter(|(l, _)| l.contains(labels))
            .map(|(_, v)| v)
            .sum::<f64>()
            // An empty sum is -0.0: printed as "-0".
            + 0.0
    }

    /// The samples of `name`: (labels, value).
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(move |l| {
                let (series, value) = l.rsplit_once(' ')?;
                let labels = match series.strip_prefix(name)? {
                    "" => "",
                    l if l.starts_with('{') => l,
                    _ => return None,
                };
                Some((labels, value.parse().ok()?))
            })
    }

    /// A histogram's cumulative share per bucket: `(le, share)`.
    pub fn buckets(&self, name: &str) -> Vec<(String, f64)> {
        let bucket = format!("{name}_bucket");
        let b: Vec<(String, f64)> = self
            .samples(&bucket)
            .filter_map(|(l, v)| {
                let le = l.split_once("le=\"")?.1.split_once('"')?.0;
                Some((le.to_owned(), v))
            })
            .collect();
        let total = b.last().map_or(0.0, |x| x.1);
        if total <= 0.0 {
            return Vec::new();
        }
        b.into_iter().map(|(le, v)| (le, v / total)).collect()
    }
}
