//! `giftload cluster …`: scale-out experiments (BENCHMARKS.md "Scale-out", "Read model
//! in buckets") on a fresh local Redis Cluster of six redis-servers (3 masters + 3
//! replicas, AOF always) and giftstream nodes on free loopback ports, all on this
//! machine; and `cluster up`, a Redis Cluster to try the scale-out by hand.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::experiment::lab_args::LabArgs;
use crate::experiment::{Lab, Loop, Table, parse_setting, rate_and_latency, spec_of};
use crate::harness::{
    Edit, Fsync, Redis, RedisCluster, RedisOptions, Serve, ServeOptions, ServerConfig, free_port,
};
use crate::report::Summary;
use crate::runner::{self, RunOptions};
use crate::target::TargetSpec;

#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    #[command(flatten)]
    lab: LabArgs,
    /// The cluster config the nodes start from.
    #[arg(long, default_value = "config/cluster.toml")]
    cluster_config: PathBuf,
    /// The Redis Cluster's first port (the next free six from here).
    #[arg(long, default_value_t = 7100)]
    first_port: u16,
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

#[derive(clap::Subcommand, Debug)]
pub enum Cluster {
    /// One node on one redis-server (AOF always) against config/cluster.toml's two nodes
    /// on a Redis Cluster, closed loop per scenario.
    Ab {
        #[command(flatten)]
        c: ClusterArgs,
        #[arg(long, num_args = 1.., default_values_t = ["uniform".to_owned(), "zipf".to_owned(), "hot-creator".to_owned()])]
        scenarios: Vec<String>,
    },
    /// Two giftstream binaries on the two-node cluster, zipf closed loop, alternated.
    Binab {
        #[command(flatten)]
        c: ClusterArgs,
        #[arg(long)]
        bin_a: PathBuf,
        #[arg(long)]
        bin_b: PathBuf,
        /// Config setting for A only (`;`-separated edits; `section.key=` deletes).
        #[arg(long, default_value = "")]
        a_setting: String,
    },
    /// The same 16 partitions owned by 1, 2 or 4 nodes on this machine: achieved rate and
    /// each node's read-model lag (events) at the end.
    Nodes {
        #[command(flatten)]
        c: ClusterArgs,
        #[arg(long, num_args = 1.., default_values_t = [1, 2, 4])]
        counts: Vec<usize>,
        #[arg(long, default_value = "zipf")]
        scenario: String,
    },
    /// One node owning all 16 partitions, the read model in 1 or more buckets (`16/2`: 16
    /// buckets written by 2 projectors): projected events/s, lag, masters' CPU.
    Buckets {
        #[command(flatten)]
        c: ClusterArgs,
        #[arg(long, num_args = 1.., default_values_t = ["1".to_owned(), "16".to_owned()])]
        counts: Vec<String>,
        #[arg(long, default_value = "uniform")]
        scenario: String,
        /// Open loop at this rate (default: closed loop).
        #[arg(long)]
        rate: Option<f64>,
        /// Then this many seconds without load: the rate the projector catches up at.
        #[arg(long)]
        drain: Option<f64>,
    },
    /// A Redis master failover under load: uniform open loop at 50k events/s for 20 s;
    /// after 10 s the master holding node a's journal is SIGKILLed, restarted 5 s later
    /// (it rejoins as a replica); then each node's audit.
    Failover {
        #[command(flatten)]
        c: ClusterArgs,
        /// redis.wait_replicas of the nodes.
        #[arg(long, default_value_t = 0)]
        wait_replicas: u32,
    },
    /// A Redis Cluster for trying the scale-out by hand, until Ctrl-C.
    Up {
        #[arg(long, default_value_t = 7100)]
        first_port: u16,
    },
}

pub fn run(cluster: Cluster) -> anyhow::Result<()> {
    match cluster {
        Cluster::Ab { c, scenarios } => ab(&c.lab.lab(15.0)?, &c, &scenarios),
        Cluster::Binab {
            c,
            bin_a,
            bin_b,
            a_setting,
        } => binab(&c.lab.lab(10.0)?, &c, [&bin_a, &bin_b], &a_setting),
        Cluster::Nodes {
            c,
            counts,
            scenario,
        } => nodes(&c.lab.lab(10.0)?, &c, &counts, &scenario),
        Cluster::Buckets {
            c,
            counts,
            scenario,
            rate,
            drain,
        } => buckets(&c.lab.lab(15.0)?, &c, &counts, &scenario, rate, drain),
        Cluster::Failover { c, wait_replicas } => failover(&c.lab.lab(20.0)?, &c, wait_replicas),
        Cluster::Up { first_port } => up(first_port),
    }
}

/// A Redis Cluster and giftstream nodes on it.
struct Nodes {
    nodes: Vec<Serve>,
    config: ServerConfig,
    redis: RedisCluster,
}

impl Nodes {
    /// `names` owning the config's partitions in equal ranges, on free ports; ready when
    /// this returns.
    fn start(
        lab: &Lab,
        c: &ClusterArgs,
        bin: &Path,
        names: &[&str],
        edits: &[Edit],
    ) -> anyhow::Result<Nodes> {
        let redis = RedisCluster::start(c.first_port)?;
        let mut config = ServerConfig::from_file(&c.cluster_config)?;
        let partitions = config
            .get("cluster.partitions")
            .and_then(toml::Value::as_integer)
            .unwrap_or(16) as usize;
        let per = partitions / names.len();
        let mut table = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let hi = if i + 1 == names.len() {
                partitions - 1
            } else {
                (i + 1) * per - 1
            };
            let mut node = toml::Table::new();
            node.insert("name".into(), (*name).into());
            node.insert(
                "tcp_addr".into(),
                format!("127.0.0.1:{}", free_port()?).into(),
            );
            node.insert(
                "http_addr".into(),
                format!("127.0.0.1:{}", free_port()?).into(),
            );
            node.insert("partitions".into(), format!("{}-{hi}", i * per).into());
            table.push(toml::Value::Table(node));
        }
        config.set("cluster.nodes", toml::Value::Array(table));
        config.set("redis.url", redis.seed_url());
        for e in lab.edits.iter().chain(edits) {
            config.edit(e)?;
        }
        let mut nodes = Vec::new();
        for name in names {
            nodes.push(Serve::start(ServeOptions {
                bin: bin.to_owned(),
                config: config.clone(),
                redis_url: None,
                node: Some((*name).to_owned()),
                log: "warn".to_owned(),
            })?);
        }
        for n in &mut nodes {
            n.wait_for("/healthz")?;
        }
        Ok(Nodes {
            nodes,
            config,
            redis,
        })
    }

    /// giftload's target: each event to its sender's node.
    fn spec(&self) -> anyhow::Result<TargetSpec> {
        let text = self.config.to_toml()?;
        let config = giftstream::config::Config::from_toml_str(&text)
            .map_err(|e| anyhow::anyhow!("cluster config: {e}"))?;
        let mut table = config.cluster;
        table.node.clear();
        let map = giftstream::cluster::PartitionMap::from_config(&table)
            .map_err(|e| anyhow::anyhow!("cluster config: {e}"))?
            .ok_or_else(|| anyhow::anyhow!("cluster config: no nodes"))?;
        Ok(TargetSpec {
            cluster: Some(map),
            ..spec_of(&self.nodes[0])
        })
    }

    /// The read model's lag (events) of node `name`: its journal's newest seq less the
    /// least of its buckets' projected seq.
    fn read_model_lag(&self, name: &str, buckets: usize) -> i64 {
        let get = |key: &str, args: &[&str]| -> Option<String> {
            let v: redis::Value = self.redis.query_key(args, key)?;
            match v {
                redis::Value::BulkString(b) => Some(String::from_utf8_lossy(&b).into_owned()),
                redis::Value::Array(a) => match a.first()? {
                    redis::Value::Array(entry) => match entry.first()? {
                        redis::Value::BulkString(b) => {
                            Some(String::from_utf8_lossy(b).into_owned())
                        }
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            }
        };
        let seq = (0..buckets)
            .map(|b| {
                let tag = if buckets == 1 {
                    "{ledger}".to_owned()
                } else {
                    format!("{{rm-{b}}}")
                };
                let key = format!("giftstream:{tag}:rm:seq:{name}");
                get(&key, &["GET", &key])
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        let journal = format!("giftstream:{{ledger-{name}}}:journal");
        let top = get(&journal, &["XREVRANGE", &journal, "+", "-", "COUNT", "1"])
            .and_then(|id| id.split('-').next()?.parse::<i64>().ok())
            .unwrap_or(0);
        top - seq
    }
}

fn load_on(lab: &Lab, spec: &TargetSpec, scenario: &str, lp: Loop) -> anyhow::Result<Summary> {
    lab.load(&lab.scenario(scenario, lp, lab.seconds)?, spec)
}

fn ab(lab: &Lab, c: &ClusterArgs, scenarios: &[String]) -> anyhow::Result<()> {
    let mut t = Table::new(
        "cluster-ab",
        &[
            "round",
            "scenario",
            "one node events/s",
            "two nodes events/s",
        ],
    );
    let bar = lab.bar("cluster ab", c.rounds * scenarios.len());
    for round in 1..=c.rounds {
        for scenario in scenarios {
            bar.set_message(format!("round {round}: {scenario}"));
            let one = {
                let redis = Redis::start(&RedisOptions {
                    fsync: Fsync::Always,
                    ..RedisOptions::default()
                })?;
                let mut config = ServerConfig::from_file(&lab.config)?;
                for e in &lab.edits {
                    config.edit(e)?;
                }
                let serve = lab.serve(&redis, None, config, "warn")?;
                load_on(lab, &spec_of(&serve), scenario, Loop::Closed)?
            };
            let two = {
                let nodes = Nodes::start(lab, c, &lab.bin, &["a", "b"], &[])?;
                load_on(lab, &nodes.spec()?, scenario, Loop::Closed)?
            };
            let row = vec![
                round.to_string(),
                scenario.clone(),
                format!("{:.0}", one.achieved_rate),
                format!("{:.0}", two.achieved_rate),
            ];
            lab.say(&bar, row.join("\t"));
            t.row(row);
            t.save(&lab.out)?;
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn binab(lab: &Lab, c: &ClusterArgs, bins: [&PathBuf; 2], a_setting: &str) -> anyhow::Result<()> {
    let a_edits = parse_setting(a_setting)?;
    let bar = lab.bar("cluster binab", c.rounds * 2);
    for round in 1..=c.rounds {
        for (label, bin) in ["A", "B"].into_iter().zip(bins) {
            bar.set_message(format!("round {round}: {label}"));
            let edits = if label == "A" { &a_edits[..] } else { &[] };
            let nodes = Nodes::start(lab, c, bin, &["a", "b"], edits)?;
            let s = load_on(lab, &nodes.spec()?, "zipf", Loop::Closed)?;
            let r = rate_and_latency(&s);
            lab.say(&bar, format!("{label} {} #{round}: achieved {} events/s, corrected p50 {} p99 {} p99.9 {} ms", bin.display(), r[0], r[1], r[2], r[3]));
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn nodes(lab: &Lab, c: &ClusterArgs, counts: &[usize], scenario: &str) -> anyhow::Result<()> {
    let bar = lab.bar("nodes", c.rounds * counts.len());
    for _ in 0..c.rounds {
        for &n in counts {
            bar.set_message(format!("{n} nodes"));
            let names: Vec<String> = (0..n).map(|i| format!("n{i}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            let nodes = Nodes::start(lab, c, &lab.bin, &names, &[])?;
            let s = load_on(lab, &nodes.spec()?, scenario, Loop::Closed)?;
            let buckets = nodes
                .config
                .get("read_model.buckets")
                .and_then(toml::Value::as_integer)
                .unwrap_or(1) as usize;
            let lags: Vec<String> = names
                .iter()
                .map(|name| format!("{name}:{}", nodes.read_model_lag(name, buckets)))
                .collect();
            lab.say(
                &bar,
                format!(
                    "{n} nodes: achieved {:.0} events/s | read-model lag (events): {}",
                    s.achieved_rate,
                    lags.join(" ")
                ),
            );
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Each master's CPU seconds (INFO cpu: user + sys), by port.
fn masters_cpu(redis: &RedisCluster) -> Vec<(u16, f64)> {
    redis
        .masters()
        .iter()
        .map(|m| {
            let f = |k| {
                m.info_field("cpu", k)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (m.port, f("used_cpu_user") + f("used_cpu_sys"))
        })
        .collect()
}

fn cpu_used(before: &[(u16, f64)], after: &[(u16, f64)]) -> String {
    after
        .iter()
        .filter_map(|(p, a)| {
            Some(format!(
                "{p}:{:.1}",
                a - before.iter().find(|b| b.0 == *p)?.1
            ))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn buckets(
    lab: &Lab,
    c: &ClusterArgs,
    counts: &[String],
    scenario: &str,
    rate: Option<f64>,
    drain: Option<f64>,
) -> anyhow::Result<()> {
    let bar = lab.bar("buckets", c.rounds * counts.len());
    for _ in 0..c.rounds {
        for label in counts {
            bar.set_message(format!("{label} buckets"));
            let (b, p) = label.split_once('/').unwrap_or((label, "1"));
            let edits =
                parse_setting(&format!("read_model.buckets={b};read_model.projectors={p}"))?;
            let nodes = Nodes::start(lab, c, &lab.bin, &["n0"], &edits)?;
            let projected = || {
                nodes.nodes[0]
                    .metrics()
                    .sum("giftstream_read_model_events_total", "")
            };
            let (c0, p0, t0) = (masters_cpu(&nodes.redis), projected(), Instant::now());
            let s = load_on(
                lab,
                &nodes.spec()?,
                scenario,
                rate.map_or(Loop::Closed, Loop::Open),
            )?;
            let (c1, p1, t1) = (masters_cpu(&nodes.redis), projected(), Instant::now());
            let lag = nodes.read_model_lag("n0", b.parse()?);
            let mut line = format!(
                "{label} buckets: achieved {:.0} events/s | projected {:.0} events/s | lag at the end {lag} events | master CPU s: {}",
                s.achieved_rate,
                (p1 - p0) / (t1 - t0).as_secs_f64(),
                cpu_used(&c0, &c1)
            );
            if let Some(d) = drain {
                // The load has stopped: how fast the projector catches up with the cores free.
                std::thread::sleep(Duration::from_secs_f64(d));
                let (c2, p2) = (masters_cpu(&nodes.redis), projected());
                line += &format!(
                    " | then idle {d} s: projected {:.0} events/s, master CPU s: {}",
                    (p2 - p1) / t1.elapsed().as_secs_f64(),
                    cpu_used(&c1, &c2)
                );
            }
            lab.say(&bar, line);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn failover(lab: &Lab, c: &ClusterArgs, wait_replicas: u32) -> anyhow::Result<()> {
    let edits = parse_setting(&format!("redis.wait_replicas={wait_replicas}"))?;
    let mut nodes = Nodes::start(lab, c, &lab.bin, &["a", "b"], &edits)?;
    let s = lab.scenario("uniform", Loop::Open(50_000.0), lab.seconds)?;
    let (spec, options) = (
        nodes.spec()?,
        RunOptions {
            progress: false,
            audit: false,
            nonce: rand::random(),
        },
    );
    let run = lab
        .rt
        .spawn(async move { runner::run(&s, &spec, &options).await });
    std::thread::sleep(Duration::from_secs(10));
    let master = nodes
        .redis
        .master_of("giftstream:{ledger-a}:journal")
        .context("no master holds node a's journal")?;
    println!(
        "killing the master on port {} (node a's journal)",
        nodes.redis.nodes[master].port
    );
    nodes.redis.nodes[master].kill9();
    std::thread::sleep(Duration::from_secs(5));
    nodes.redis.nodes[master].restart()?;
    let summary = lab.rt.block_on(run)??;
    summary.print();
    std::thread::sleep(Duration::from_secs(2));
    for n in &nodes.nodes {
        let m = n.metrics();
        println!(
            "node {}: giftstream_commits_total {:.0}, giftstream_events_total {:.0}",
            n.http,
            m.sum("giftstream_commits_total", ""),
            m.sum("giftstream_events_total", "")
        );
    }
    for (name, n) in ["a", "b"].iter().zip(&mut nodes.nodes) {
        n.stop();
        let out = Command::new(&lab.bin)
            .arg("audit")
            .env("GIFTSTREAM_CONFIG", n.config_path())
            .env("GIFTSTREAM_CLUSTER_NODE", name)
            .env("GIFTSTREAM_DATA_DIR", n.data_dir())
            .output()?;
        println!("audit {name}:");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        for l in text
            .lines()
            .filter(|l| l.starts_with("journal") || l.contains("twice") || l.starts_with("audit"))
        {
            println!("  {l}");
        }
    }
    Ok(())
}

fn up(first_port: u16) -> anyhow::Result<()> {
    let redis = RedisCluster::start(first_port)?;
    let ports: Vec<String> = redis
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    println!("Redis Cluster up: {}", ports.join(" "));
    println!(
        "seed URL: {} (Ctrl-C stops it and removes its data)",
        redis.seed_url()
    );
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(tokio::signal::ctrl_c())?;
    drop(redis);
    Ok(())
}
