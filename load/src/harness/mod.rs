//! The processes an experiment measures: private redis-servers (one, or a six-process
//! Redis Cluster) and `giftstream serve` nodes, each on its own loopback ports and in its
//! own temporary directory, all stopped (and their directories removed) when dropped,
//! so that an experiment that fails half-way leaves nothing running.
//!
//! - `process`: temporary directories, ports, signals, /proc.
//! - `redis_server`: [`Redis`] and [`RedisCluster`].
//! - `config`: [`ServerConfig`] and its [`Edit`]s.
//! - `serve`: [`Serve`], [`http_get`] and [`Metrics`].

mod config;
mod process;
mod redis_server;
mod serve;

pub use config::{Edit, ServerConfig};
pub use process::{WorkDir, children, cpu_seconds, free_port, status_mb, thread_cpu_seconds};
pub use redis_server::{Fsync, Redis, RedisCluster, RedisOptions};
pub use serve::{Metrics, Serve, ServeOptions, http_get};
