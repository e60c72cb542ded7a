//! The processes an experiment measures: private redis-servers (one, or a six-process
//! Redis Cluster) and `giftstream serve` nodes, each on its own loopback ports and in its
//! own temporary directory, all stopped (and their directories removed) when dropped,
//! so that an experiment that fails half-way leaves nothing running.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// How long a process gets to answer after it was started.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a SIGTERMed server gets to shut down before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub struct WorkDir(PathBuf);

impl WorkDir {
    pub fn new(label: &str) -> anyhow::Result<WorkDir> {
        let unique = format!(
            "giftload-{label}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(WorkDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now (the kernel's choice).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn port_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// CPU time (user + system, reaped children included) of process `pid`, seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command (which may hold spaces) start after its ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime, stime, cutime, cstime: fields 14-17, i.e. 11..15 after the command.
    let ticks: f64 = (11..15)
        .filter_map(|i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// A line of `/proc/PID/status` (e.g. `VmHWM`), in MB.
pub fn status_mb(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The children of process `pid` (the server's forked snapshot writers, its replica).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill only sends a signal to a process this harness started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

/// Waits for `child` to exit, up to `timeout`; kills it past that.
fn reap(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Redis's AOF fsync policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `appendfsync everysec`: the single-node experiments (README's journal Redis).
    EverySec,
    /// `appendfsync always`: the Redis Cluster experiments.
    Always,
}

/// How a redis-server is started.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub fsync: Fsync,
    /// Further redis-server arguments (e.g. `--auto-aof-rewrite-percentage 0`).
    pub args: Vec<String>,
    /// Started under `nice -n` this.
    pub nice: Option<i32>,
    /// Cluster mode (one of a Redis Cluster's six).
    pub cluster: bool,
}

impl Default for RedisOptions {
    fn default() -> RedisOptions {
        RedisOptions {
            fsync: Fsync::EverySec,
            args: Vec::new(),
            nice: None,
            cluster: false,
        }
    }
}

/// One private redis-server (AOF on, no RDB saves) on a loopback port of its own.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    options: RedisOptions,
    _work: Option<WorkDir>,
}

impl Redis {
    /// On a free port, in a temporary directory of its own.
    pub fn start(options: &RedisOptions) -> anyhow::Result<Redis> {
        let work = WorkDir::new("redis")?;
        let mut redis = Redis::start_in(work.path(), free_port()?, options)?;
        redis._work = Some(work);
        Ok(redis)
    }

    /// On `port`, with its data in `dir` (kept when dropped).
    pub fn start_in(dir: &Path, port: u16, options: &RedisOptions) -> anyhow::Result<Redis> {
        std::fs::create_dir_all(dir)?;
        let mut redis = Redis {
            child: None,
            port,
            dir: dir.to_owned(),
            options: options.clone(),
            _work: None,
        };
        redis.spawn()?;
        Ok(redis)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let o = &self.options;
        let mut cmd = match o.nice {
            Some(n) => {
                let mut c = Command::new("nice");
                c.args(["-n", &n.to_string(), "redis-server"]);
                c
            }
            None => Command::new("redis-server"),
        };
        let fsync = match o.fsync {
            Fsync::EverySec => "everysec",
            Fsync::Always => "always",
        };
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", fsync])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"));
        if o.cluster {
            cmd.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ])
            .args(["--cluster-node-timeout", "2000"]);
        }
        cmd.args(&o.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd
            .spawn()
            .context("start redis-server (is it installed? bash .ci/test installs it)")?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.connection().is_err() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let log = std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
                anyhow::bail!("redis-server on {} exited ({status}): {log}", self.port);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "redis-server {} did not answer",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        client.get_connection_with_timeout(Duration::from_secs(5))
    }

    /// One command, its answer as `T`.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> anyhow::Result<T> {
        let mut con = self.connection()?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con)
            .with_context(|| format!("redis {} {}", self.port, args.join(" ")))
    }

    /// A field of `INFO section` (`None` if absent).
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let info: String = self.query(&["INFO", section]).ok()?;
        info.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k == field).then(|| v.trim().to_owned())
        })
    }

    /// SIGKILL (a crash); [`Redis::restart`] brings it back on the same port and data.
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

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(c.id(), libc::SIGTERM);
            // Waited for, so that the next experiment finds the port free.
            reap(&mut c, STOP_TIMEOUT);
        }
    }
}

/// A local Redis Cluster: six redis-servers (3 masters + 3 replicas, AOF always) on
/// six consecutive free ports (and their bus ports, +10000).
pub struct RedisCluster {
    pub nodes: Vec<Redis>,
    _work: WorkDir,
}

impl RedisCluster {
    pub fn start(first_port: u16) -> anyhow::Result<RedisCluster> {
        let work = WorkDir::new("cluster")?;
        let first = (first_port..60_000)
            .step_by(10)
            .find(|&p| (p..p + 6).all(|q| port_free(q) && port_free(q + 10_000)))
            .ok_or_else(|| anyhow::anyhow!("no six free ports from {first_port}"))?;
        let options = RedisOptions {
            fsync: Fsync::Always,
            cluster: true,
            ..RedisOptions::default()
        };
        let mut nodes = Vec::new();
        for port in first..first + 6 {
            nodes.push(Redis::start_in(
                &work.path().join(port.to_string()),
                port,
                &options,
            )?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .context("redis-cli --cluster create")?;
        anyhow::ensure!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let cluster = RedisCluster { nodes, _work: work };
        let deadline = Instant::now() + READY_TIMEOUT;
        while !cluster.nodes.iter().all(|n| {
            n.query::<String>(&["CLUSTER", "INFO"])
                .is_ok_and(|i| i.contains("cluster_state:ok"))
        }) {
            anyhow::ensure!(Instant::now() < deadline, "the Redis Cluster did not form");
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(cluster)
    }

    pub fn seed_url(&self) -> String {
        self.nodes[0].url()
    }

    /// The masters right now.
    pub fn masters(&self) -> Vec<&Redis> {
        self.nodes
            .iter()
            .filter(|n| {
                n.query::<Vec<redis::Value>>(&["ROLE"])
                    .ok()
                    .and_then(|r| r.into_iter().next())
                    .is_some_and(|v| matches!(v, redis::Value::BulkString(b) if b == b"master"))
            })
            .collect()
    }

    /// The index of the master that holds `key` (it answers EXISTS with 1).
    pub fn master_of(&self, key: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.query::<i64>(&["EXISTS", key]).is_ok_and(|e| e == 1))
    }

    /// A command answered by whichever node holds `key`.
    pub fn query_key<T: redis::FromRedisValue>(&self, args: &[&str], key: &str) -> Option<T> {
        let i = self.master_of(key)?;
        self.nodes[i].query(args).ok()
    }
}

/// A giftstream.toml to start a server with: a base file and edits by dotted path
/// (`commit.interval_ms=5`), the shell scripts' sed expressions as data.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    table: toml::Table,
}

/// An edit of a [`ServerConfig`]: `path=value` (a TOML value; a bare word is taken as a
/// string), or `path=` to delete the key (for an older binary that does not know it).
#[derive(Debug, Clone, PartialEq)]
pub struct Edit {
    pub path: String,
    pub value: Option<toml::Value>,
}

impl std::str::FromStr for Edit {
    type Err = String;
    fn from_str(text: &str) -> Result<Edit, String> {
        let (path, value) = text.split_once('=').ok_or_else(|| {
            format!("{text:?}: expected section.key=value (or section.key= to delete)")
        })?;
        let (path, value) = (path.trim(), value.trim());
        if path.is_empty() {
            return Err(format!("{text:?}: no key"));
        }
        if value.is_empty() {
            return Ok(Edit {
                path: path.to_owned(),
                value: None,
            });
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_owned()));
        Ok(Edit {
            path: path.to_owned(),
            value: Some(parsed),
        })
    }
}

impl std::fmt::Display for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{} = {v}", self.path),
            None => write!(f, "{} deleted", self.path),
        }
    }
}

impl ServerConfig {
    pub fn from_file(path: &Path) -> anyhow::Result<ServerConfig> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("config {}", path.display()))?;
        let table = text
            .parse()
            .with_context(|| format!("config {}", path.display()))?;
        Ok(ServerConfig { table })
    }

    pub fn edit(&mut self, edit: &Edit) -> anyhow::Result<()> {
        let mut keys: Vec<&str> = edit.path.split('.').collect();
        let last = keys.pop().expect("split gives one");
        let mut table = &mut self.table;
        for k in keys {
            table = table
                .entry(k)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| anyhow::anyhow!("{}: {k} is not a table", edit.path))?;
        }
        match &edit.value {
            Some(v) => {
                table.insert(last.to_owned(), v.clone());
            }
            None => {
                table.remove(last);
            }
        }
        Ok(())
    }

    pub fn set(&mut self, path: &str, value: impl Into<toml::Value>) {
        let edit = Edit {
            path: path.to_owned(),
            value: Some(value.into()),
        };
        self.edit(&edit).expect("a path into the config's tables");
    }

    pub fn get(&self, path: &str) -> Option<&toml::Value> {
        let mut keys = path.split('.');
        let mut v = self.table.get(keys.next()?)?;
        for k in keys {
            v = v.as_table()?.get(k)?;
        }
        Some(v)
    }

    pub fn to_toml(&self) -> anyhow::Result<String> {
        Ok(toml::to_string(&self.table)?)
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, self.to_toml()?).with_context(|| format!("write {}", path.display()))
    }
}

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
            .sum()
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
