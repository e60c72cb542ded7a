//! Private redis-servers: one on a free port in a temporary directory of its own, or a
//! six-process Redis Cluster; stopped (SIGTERM, waited for) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::process::{READY_TIMEOUT, STOP_TIMEOUT, WorkDir, free_port, port_free, reap, signal};

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
