//! giftload: the load tool for giftstream, with the usual Redis-Lua design side by side.
//!
//! - [`scenario`]: TOML scenarios (population, gift mix, rate schedule, load shape).
//! - [`workload`]: seeded events; batch `n` is a pure function of the scenario.
//! - [`target`]: giftstream (binary protocol or HTTP) and the Redis-Lua baseline.
//! - [`runner`]: setup, open loop (coordinated-omission corrected) and closed loop.
//! - [`report`]: summary, thresholds, JSON, charts and the HTML report.
//! - [`audit`]: exactly-once and totals checks after a run.
//! - [`hostile`]: hostile clients (slowloris, idle and stalled sockets, feed churn, bad
//!   tokens) beside a normal load, and whether acks kept flowing.
//! - [`harness`]: private redis-servers, Redis Clusters and `giftstream serve` processes
//!   for the experiments, stopped when dropped.
//! - [`experiment`]: the recurring measurements of BENCHMARKS.md (`giftload sweep`,
//!   `giftload probe`, `giftload cluster`) on that harness.

pub mod audit;
pub mod experiment;
pub mod harness;
pub mod hostile;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod target;
pub mod workload;
