//! A private redis-server per test: AOF on (fsync always), a free loopback port, a temp
//! dir; it can be stopped and started again on the same port and data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    extra: Vec<String>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Like [`RedisServer::start`] with more `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> RedisServer {
        let mut r = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        // A free port can be taken again before redis-server binds it (tests run side by
        // side; a cluster node also binds port + 10000): then it exits, and the first
        // start tries another port.
        for _ in 0..4 {
            if r.try_start().is_ok() {
                return r;
            }
            r.port = free_port();
        }
        r.restart();
        r
    }

    /// A Redis Cluster node (not yet in a cluster).
    pub fn start_cluster_node() -> RedisServer {
        RedisServer::start_with(&[
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "1000",
        ])
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data directory; waits until it answers.
    pub fn restart(&mut self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// Starts redis-server and waits until it answers; an error if it exits first or
    /// does not answer within 10 s.
    fn try_start(&mut self) -> Result<(), String> {
        assert!(self.child.is_none());
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(&self.extra)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (bash .ci/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                use std::io::{Read, Write};
                let _ = s.write_all(b"PING\r\n");
                let mut buf = [0u8; 64];
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                if let Ok(n) = s.read(&mut buf)
                    && buf[..n].starts_with(b"+PONG")
                {
                    return Ok(());
                }
            }
            let child = self.child.as_mut().expect("just started");
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(format!(
                    "redis-server exited ({status}) before it answered on port {}",
                    self.port
                ));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return Err(format!("redis-server did not start on port {}", self.port));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: with fsync always nothing acknowledged is lost).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last sequence number of the journal's first run (what a trim left).
pub async fn journal_first_seq(redis: &RedisServer) -> u64 {
    let id = journal_first_id(redis, "-").await;
    id.split('-').next().unwrap().parse().unwrap()
}

/// The stream id (`<last seq of the run>-0`) of the journal's first run at or after
/// stream id `from` (`-`: the first of all).
pub async fn journal_first_id(redis: &RedisServer, from: &str) -> String {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let first: Vec<Entry> = redis::cmd("XRANGE")
        .arg(giftstream::persist::redis::JOURNAL_KEY)
        .arg(from)
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    first
        .into_iter()
        .next()
        .expect("the journal has a run there")
        .0
}
