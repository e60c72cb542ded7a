//! Scale-out (SPEC §6): two `giftstream serve` nodes over a real local Redis Cluster
//! (six redis-servers: 3 masters + 3 replicas, AOF always), driven through the routing
//! client with giftload's seeded `zipf` workload (scaled down), checked against one
//! in-process engine fed the same events. One node is killed (SIGKILL) and restarted;
//! the Redis master holding a node's journal is killed (its replica is promoted) and
//! started again as a replica; a node is restored from its snapshot.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use giftstream::client::{Client, ClientError, ClusterClient};
use giftstream::cluster::PartitionMap;
use giftstream::engine::{
    CreatorId, Effect, Engine, Event, LogEntry, Outcome, Status, UserId, ViewParts,
};
use giftstream::persist::redis::{RedisConn, connect_to};

use crate::support::child::ServeProcess;
use crate::support::redis::{RedisServer, free_port};
use crate::support::server::{INGEST, READ};
use crate::support::{self, NOV};

const USERS: u64 = 3_000;
const CREATORS: u64 = 30;
const GIFT_BATCHES: u64 = 60;
const BATCH: usize = 500;
const NODES: [&str; 2] = ["a", "b"];

/// giftload's seeded `zipf` scenario, scaled down: funding recharges for every user
/// (3,000 coins each, so some gifts are refused), then gift batches.
fn batches() -> Vec<Vec<Event>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/load/scenarios/zipf.toml");
    let mut scenario = giftload::scenario::Scenario::from_file(Path::new(path)).unwrap();
    scenario.population.users = USERS;
    scenario.population.creators = CREATORS;
    scenario.population.funding_coins = 3_000;
    scenario.load.batch = BATCH;
    let workload = giftload::workload::Workload::new(&scenario, &support::economy(), 42).unwrap();
    let funding = (0..).map_while(|n| workload.funding(n, BATCH));
    let gifts = (0..GIFT_BATCHES).map(|n| workload.batch(n, 0.0));
    funding.chain(gifts).collect()
}

fn same_status(got: &[Outcome], want: &[Outcome]) -> bool {
    got.len() == want.len() && got.iter().zip(want).all(|(g, w)| g.status == w.status)
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli must be installed (bash .ci/test installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_cluster_ok(ports: &[u16]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ports
        .iter()
        .all(|&p| redis_cli(p, &["cluster", "info"]).contains("cluster_state:ok"))
    {
        assert!(
            Instant::now() < deadline,
            "the Redis Cluster did not become ok"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Node {
    name: &'static str,
    tcp: u16,
    http: u16,
    data: tempfile::TempDir,
}

fn start(node: &Node, config: &Path, seed: &str) -> ServeProcess {
    ServeProcess::start_with(
        config,
        seed,
        node.data.path(),
        &[
            ("GIFTSTREAM_CLUSTER_NODE", node.name),
            ("GIFTSTREAM_TCP_ADDR", &format!("127.0.0.1:{}", node.tcp)),
            ("GIFTSTREAM_HTTP_ADDR", &format!("127.0.0.1:{}", node.http)),
        ],
    )
}

/// Writes the cluster config `name` in `dir`: `nodes` at their addresses with
/// `partitions`, 16 in all; commits wait for one replica (WAIT 1).
fn write_config(dir: &Path, name: &str, nodes: &[Node], partitions: [&str; 2]) -> PathBuf {
    let config = dir.join(name);
    let node_lines: Vec<String> = nodes
        .iter()
        .zip(partitions)
        .map(|(n, parts)| {
            format!(
                "  {{ name = \"{}\", tcp_addr = \"127.0.0.1:{}\", http_addr = \"127.0.0.1:{}\", partitions = \"{parts}\" }},",
                n.name, n.tcp, n.http
            )
        })
        .collect();
    std::fs::write(
        &config,
        format!(
            "[server]\neconomy = \"\"\n\
             [redis]\ncluster = true\nwait_replicas = 1\nwait_timeout_ms = 1000\n\
             [snapshot]\ninterval_ms = 0\nevents = 4000\ntrim_journal = false\n\
             [read_model]\nwindow_ms = 20\nbuckets = {BUCKETS}\nprojectors = 2\n\
             [engine.windows]\nenabled = true\n\
             [auth]\ntokens = [{{ token = \"{INGEST}\", scopes = [\"ingest\", \"read\"] }}, {{ token = \"{READ}\", scopes = [\"read\"] }}]\n\
             [cluster]\npartitions = 16\nsettle_interval_ms = 200\nnodes = [\n{}\n]\n",
            node_lines.join("\n")
        ),
    )
    .unwrap();
    config
}

/// The read model's buckets in the cluster test (hash tags `{rm-0}` .. `{rm-7}`, spread
/// over the three masters; two projectors per node write four each).
const BUCKETS: u64 = 8;

/// A creator's read-model key as a ranking service names it (docs/operations.md, "Reading
/// leaderboards from Redis"): `giftstream:{rm-<id mod buckets>}:rm:creator:<id><suffix>`.
fn creator_key(creator: u64, suffix: &str) -> String {
    format!(
        "giftstream:{{rm-{}}}:rm:creator:{creator}{suffix}",
        creator % BUCKETS
    )
}

/// The partition map of the cluster config at `path`.
fn load_map(path: &Path) -> PartitionMap {
    let text = std::fs::read_to_string(path).unwrap();
    let config = giftstream::config::Config::from_toml_str(&text).unwrap();
    PartitionMap::from_config(&config.cluster).unwrap().unwrap()
}

/// The newest snapshot file in `dir`.
fn newest_snapshot(dir: &Path) -> PathBuf {
    let mut snapshots: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gsnap"))
        .collect();
    snapshots.sort();
    snapshots.pop().expect("the node took a snapshot")
}

/// Copies the files of directory `from` into `to` (a snapshot directory is flat).
fn copy_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Sends `batch` until every event has an outcome: a refused or failed request (a node
/// or a Redis master down) is retried with the same ids (the client reconnects to a
/// node that restarted by itself).
async fn send_until_answered(client: &ClusterClient, batch: &[Event]) -> (Vec<Outcome>, u32) {
    let mut retries = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(20), client.send(batch)).await {
            Ok(Ok(outcomes)) => return (outcomes, retries),
            Ok(Err(e)) => eprintln!("cluster test: retrying a batch: {e}"),
            Err(_) => eprintln!("cluster test: retrying a batch: timeout"),
        }
        retries += 1;
        assert!(Instant::now() < deadline, "a batch got no answer for 60 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn journal_top(conn: &mut RedisConn, node: &str) -> u64 {
    let top: Vec<(String, redis::Value)> = redis::cmd("XREVRANGE")
        .arg(format!("giftstream:{{ledger-{node}}}:journal"))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await
        .unwrap();
    top.first()
        .map_or(0, |(id, _)| id.split('-').next().unwrap().parse().unwrap())
}

/// Every event in `node`'s journal (the test keeps journals untrimmed), in order.
async fn journal(conn: &mut RedisConn, node: &str) -> Vec<LogEntry> {
    let mut entries = Vec::new();
    let mut after = "0-0".to_owned();
    loop {
        type Entry = (String, Vec<(String, Vec<u8>)>);
        let page: Vec<Entry> = redis::cmd("XRANGE")
            .arg(format!("giftstream:{{ledger-{node}}}:journal"))
            .arg(format!("({after}"))
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        let Some((last, _)) = page.last() else {
            return entries;
        };
        after = last.clone();
        for (_, fields) in &page {
            let (_, bytes) = fields.iter().find(|(f, _)| f == "b").unwrap();
            let batch = giftstream::persist::redis::JournalBatch::decode(bytes).unwrap();
            entries.extend(batch.into_entries().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_a_redis_cluster_equal_one_node() {
    // The Redis Cluster.
    let mut redis: Vec<RedisServer> = (0..6).map(|_| RedisServer::start_cluster_node()).collect();
    let ports: Vec<u16> = redis.iter().map(|r| r.port).collect();
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );
    wait_cluster_ok(&ports);
    let seed = format!("redis://{}", addrs[0]);

    // Two nodes, 16 partitions; commits wait for one replica (WAIT 1).
    let nodes: Vec<Node> = NODES
        .iter()
        .map(|&name| Node {
            name,
            tcp: free_port(),
            http: free_port(),
            data: tempfile::tempdir().unwrap(),
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let mut config = write_config(dir.path(), "cluster.toml", &nodes, ["0-7", "8-15"]);
    let map = load_map(&config);
    let mut nodes = nodes;
    let mut procs: Vec<Option<ServeProcess>> = nodes
        .iter()
        .map(|n| Some(start(n, &config, &seed)))
        .collect();

    // A node refuses another node's sender and names the owner; nothing is applied.
    let batches = batches();
    let foreign = batches[0]
        .iter()
        .find(|e| map.owner_index(e) == 1)
        .copied()
        .unwrap();
    let a = Client::connect(("127.0.0.1", nodes[0].tcp), INGEST)
        .await
        .unwrap();
    match a.send(&[foreign]).await {
        Err(ClientError::Server { name, message, .. }) => {
            assert_eq!(name, "WRONG_PARTITION");
            assert!(message.contains("owned by node b"), "{message}");
        }
        other => panic!("expected WRONG_PARTITION, got {other:?}"),
    }
    let http = reqwest::Client::new();
    let body = serde_json::json!({"events": [{"type": "recharge", "event_id": support::server::uuid(7),
        "user": giftstream::cluster::routing_key(&foreign), "coins": 100, "package": "coins_100",
        "price": "0.99", "currency": "USD", "channel": "app"}]});
    let response = http
        .post(format!("http://127.0.0.1:{}/v1/events", nodes[0].http))
        .bearer_auth(INGEST)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 421);
    let error: serde_json::Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "WRONG_PARTITION", "{error}");
    // Wallets are answered by their owner only: another node's user is a 421, not an
    // empty wallet.
    let wallet = |node: &Node| {
        http.get(format!(
            "http://127.0.0.1:{}/v1/users/{}/wallet",
            node.http,
            giftstream::cluster::routing_key(&foreign)
        ))
        .bearer_auth(READ)
        .send()
    };
    let metrics = procs[0].as_ref().unwrap().metrics(&http).await;
    // Its journal's master (AOF on, fsync always) was asked for its settings.
    assert!(
        metrics
            .contains(r#"giftstream_journal_redis_info{appendonly="yes",appendfsync="always"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("giftstream_cluster_partitions_owned{node=\"a\"} 8"),
        "{metrics}"
    );
    assert_eq!(wallet(&nodes[0]).await.unwrap().status().as_u16(), 421);
    assert_eq!(wallet(&nodes[1]).await.unwrap().status().as_u16(), 200);
    drop(a);

    // The same events into one engine: the single-node run.
    let single = support::engine();
    // The nodes stamp by the wall clock: the day their gifts fall in (windowed reads).
    let started_ms = giftstream::clock::now().0;
    let mut conn = connect_to(&seed, true).await.unwrap();
    let kill_node_at = batches.len() / 3;
    let kill_master_at = 2 * batches.len() / 3;
    let move_node_at = batches.len() / 2;
    let mut retried = 0;
    let mut rejoined: Option<std::thread::JoinHandle<RedisServer>> = None;
    let mut refused = 0;
    let mut client = ClusterClient::connect(map.clone(), INGEST).await.unwrap();
    // Coins each node's senders gave each creator: what it credits and reports.
    let economy = support::economy();
    let mut node_coins = std::collections::HashMap::<(CreatorId, usize), u128>::new();
    for (i, batch) in batches.iter().enumerate() {
        let want = single.apply_batch(batch, NOV);
        for (e, o) in batch.iter().zip(&want) {
            if let (Event::Gift(g), true) = (e, o.is_accepted()) {
                let cost = economy.gifts[g.gift.0 as usize].coins * u64::from(g.count);
                *node_coins
                    .entry((g.creator, map.owner_index(e)))
                    .or_default() += u128::from(cost);
            }
        }
        if i == kill_node_at {
            // Node a dies between two acknowledged batches and restarts from its
            // snapshot and journal; the last batch sent again is all duplicates.
            procs[0].take().unwrap().kill9();
            procs[0] = Some(start(&nodes[0], &config, &seed));
            let (again, _) = send_until_answered(&client, &batches[i - 1]).await;
            assert!(again.iter().all(|o| o.duplicate), "batch {} resent", i - 1);
        }
        if i == kill_master_at {
            // Kill the master holding node a's journal; its replica takes over.
            let master = (0..redis.len())
                .find(|&r| {
                    redis_cli(ports[r], &["exists", "giftstream:{ledger-a}:journal"]).trim() == "1"
                })
                .expect("a master holds node a's journal");
            let mut old = redis.remove(master);
            old.stop();
            // The old master comes back as a replica of the promoted one after 4 s: WAIT 1
            // can be met again (until then the shard has no replica and commits wait).
            rejoined = Some(std::thread::spawn(move || {
                std::thread::sleep(Duration::from_secs(4));
                old.restart();
                old
            }));
        }
        if i == move_node_at {
            // Node b's ledger moves to another machine (ARCHITECTURE "Adding a machine"):
            // stopped (final commit, lease released), its snapshot directory copied and
            // the old one deleted, started on new addresses; clients take the new map
            // (the same layout: partitions and node order unchanged).
            procs[1].take().unwrap().stop();
            let moved = Node {
                name: "b",
                tcp: free_port(),
                http: free_port(),
                data: tempfile::tempdir().unwrap(),
            };
            copy_files(nodes[1].data.path(), moved.data.path());
            nodes[1] = moved;
            config = write_config(dir.path(), "moved.toml", &nodes, ["0-7", "8-15"]);
            procs[1] = Some(start(&nodes[1], &config, &seed));
            client = ClusterClient::connect(load_map(&config), INGEST)
                .await
                .unwrap();

            // A node whose partitions change is refused: its ledger keeps the map it
            // was recorded with.
            let changed = write_config(dir.path(), "changed.toml", &nodes, ["0-6", "7-15"]);
            let empty = tempfile::tempdir().unwrap();
            let out = support::child::serve_refused(
                &changed,
                &seed,
                empty.path(),
                &[("GIFTSTREAM_CLUSTER_NODE", "b")],
            );
            assert!(
                out.contains("fixed for the life of its ledger")
                    && out.contains("16 partitions: a 0-7; b 8-15"),
                "{out}"
            );
            // So is a node with another read-model bucket count than the cluster's,
            // before it takes its lease.
            let text = std::fs::read_to_string(&config).unwrap();
            let rebucketed = dir.path().join("rebucketed.toml");
            std::fs::write(
                &rebucketed,
                text.replace(&format!("buckets = {BUCKETS}"), "buckets = 2"),
            )
            .unwrap();
            let out = support::child::serve_refused(
                &rebucketed,
                &seed,
                empty.path(),
                &[("GIFTSTREAM_CLUSTER_NODE", "b")],
            );
            assert!(
                out.contains(&format!("laid out in {BUCKETS} buckets"))
                    && !out.contains("ledger lease taken"),
                "{out}"
            );
        }
        refused += want.iter().filter(|o| o.code().is_some()).count();
        let (got, r) = send_until_answered(&client, batch).await;
        retried += r;
        assert!(
            same_status(&got, &want),
            "batch {i}: outcomes differ from one node's"
        );
    }
    let sent: usize = batches.iter().map(Vec::len).sum();
    eprintln!(
        "cluster test: {sent} events ({refused} refused by the rules), {retried} batch retries during the node and master kills"
    );
    assert!(refused > 0, "the workload exercises refusals too");
    redis.push(rejoined.expect("a master was killed").join().unwrap());

    // Nothing acknowledged was lost, the read model caught up for both nodes.
    for node in NODES {
        wait_caught_up(&mut conn, node).await;
    }
    // Every event journaled exactly once, besides the settlement reports the nodes
    // journal for each other (each journal holds every sequence number in order).
    let mut ids = std::collections::HashSet::new();
    let mut journaled = 0;
    for node in NODES {
        let entries = journal(&mut conn, node).await;
        assert!(
            entries
                .iter()
                .enumerate()
                .all(|(i, e)| e.seq == i as u64 + 1),
            "node {node}: journal sequence numbers"
        );
        for e in entries {
            // Settlements and economy changes are derived from content, not client ids.
            if !matches!(e.event, Event::Settlement(_) | Event::Economy(_)) {
                assert!(
                    ids.insert(e.event.id()),
                    "event {:?} journaled twice",
                    e.event.id()
                );
                journaled += 1;
            }
        }
    }
    assert_eq!(journaled, sent, "every event journaled exactly once");

    // Totals and leaderboards in Redis equal the single-node run.
    let view = single.read_model_view(ViewParts::default());
    assert!(view.creators.len() as u64 == CREATORS);
    for &(c, coins, ..) in &view.creators {
        let key = creator_key(c.0, "");
        let (merged_coins, merged_diamonds): (u128, u128) = redis::cmd("HMGET")
            .arg(&key)
            .arg("coins_received")
            .arg("diamonds_total")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(merged_coins, coins, "creator {} coins", c.0);
        // Each node floors its own share of the diamonds: the sum is at most one
        // diamond per other node below one ledger's floor.
        let diamonds = single.creator(c).diamonds_total;
        assert!(
            merged_diamonds <= diamonds && merged_diamonds + 1 >= diamonds,
            "creator {}: diamonds {merged_diamonds}, one node {diamonds}",
            c.0
        );
    }
    assert_gifters_equal(&mut conn, &single).await;

    // Any node answers leaderboard reads for every partition.
    let c0 = single.top_creators(1)[0].0;
    let want: Vec<u128> = single
        .creator_top_gifters(c0, 5)
        .iter()
        .map(|(_, coins)| *coins)
        .collect();
    for node in &nodes {
        let read = |path: &str| {
            let request = http
                .get(format!("http://127.0.0.1:{}{path}", node.http))
                .bearer_auth(READ);
            async move {
                let body: serde_json::Value = request.send().await.unwrap().json().await.unwrap();
                body
            }
        };
        let body = read(&format!("/v1/creators/{}/top-gifters?limit=5", c0.0)).await;
        let got: Vec<u128> = body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["coins"].as_u64().unwrap().into())
            .collect();
        assert_eq!(got, want, "node {} top gifters", node.name);
        // The windowed lists too, from the read model's window keys (every node writes its
        // own gifters'): all the test's gifts are in today's day window, so its list is the
        // all-time one — unless the test ran across midnight UTC, when that day holds a part.
        let day = giftstream::engine::TimeWindow::of(
            giftstream::engine::WindowKind::Day,
            giftstream::engine::Stamp(started_ms),
        );
        let windowed = read(&format!(
            "/v1/creators/{}/top-gifters?limit=5&window=day&at={}",
            c0.0,
            day.label()
        ))
        .await;
        assert_eq!(windowed["window"]["at"], day.label(), "{windowed}");
        let got: Vec<u128> = windowed["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["coins"].as_u64().unwrap().into())
            .collect();
        let same_day = day.end_ms() > giftstream::clock::now().0;
        if same_day {
            assert_eq!(got, want, "node {} day top gifters", node.name);
        } else {
            assert!(
                got.iter().zip(&want).all(|(g, w)| g <= w),
                "node {}",
                node.name
            );
        }
        let expired = http
            .get(format!(
                "http://127.0.0.1:{}/v1/creators/{}/top-gifters?window=day&at=2020-01-01",
                node.http, c0.0
            ))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        assert_eq!(expired.status().as_u16(), 404);
        let body: serde_json::Value = expired.json().await.unwrap();
        assert_eq!(body["error"]["code"], "WINDOW_EXPIRED", "{body}");
        // Windowed top creators are not in the read model: 501 on a cluster node.
        let creators = http
            .get(format!(
                "http://127.0.0.1:{}/v1/leaderboards/creators?window=day",
                node.http
            ))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        assert_eq!(creators.status().as_u16(), 501);
        let creator = read(&format!("/v1/creators/{}", c0.0)).await;
        assert_eq!(
            creator["coins_received"].as_u64().map(u128::from),
            Some(single.creator(c0).coins_received),
            "node {}",
            node.name
        );
        // The top creators are the best of the buckets' lists (each node floors its own
        // share of the diamonds: at most one below one ledger's, per other node).
        let top = read("/v1/leaderboards/creators?limit=5").await;
        let got: Vec<u128> = top["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["diamonds"].as_u64().unwrap().into())
            .collect();
        let want: Vec<u128> = single.top_creators(5).iter().map(|&(_, d)| d).collect();
        assert!(
            got.len() == want.len() && got.iter().zip(&want).all(|(g, w)| g <= w && g + 1 >= *w),
            "node {} top creators {got:?}, one node {want:?}",
            node.name
        );
    }
    // The read model's buckets are spread over the masters: each holds some.
    let mut masters = 0;
    for &port in &ports {
        if !redis_cli(port, &["role"]).starts_with("master") {
            continue;
        }
        masters += 1;
        let keys = redis_cli(port, &["--scan", "--pattern", "giftstream:{rm-*}:rm:*"]);
        assert!(
            keys.lines().count() > 0,
            "the master on port {port} holds no read-model bucket"
        );
    }
    assert_eq!(masters, 3);

    // Settlements: the top creator cashes out on its owner node exactly the diamonds
    // both nodes credited it (each node's own floor), once the other node's report is
    // in; the merged read model then shows nothing available.
    let owner = map.owner_of(c0.0);
    let credited: Vec<u128> = (0..NODES.len())
        .map(|n| economy.diamonds_for(node_coins.get(&(c0, n)).copied().unwrap_or(0)))
        .collect();
    assert!(
        credited.iter().all(|&d| d > 0),
        "both nodes credited creator {}: {credited:?}",
        c0.0
    );
    let payable = u64::try_from(credited.iter().sum::<u128>()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut attempt = 0u128;
    let paid = loop {
        attempt += 1;
        let payout = giftstream::engine::Event::Payout(giftstream::engine::Payout {
            id: giftstream::engine::EventId(0x00C0_FFEE_0000 + attempt),
            creator: c0,
            diamonds: payable,
            currency: giftstream::economy::Currency::from_bytes(*b"USD").unwrap(),
        });
        let (got, _) = send_until_answered(&client, &[payout]).await;
        match got[0].status {
            Status::Accepted(effect) => break effect,
            Status::Rejected(code) => {
                assert_eq!(code.as_str(), "INSUFFICIENT_DIAMONDS");
                assert!(
                    Instant::now() < deadline,
                    "the other node's diamonds never became payable on the owner"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(
        matches!(
            paid,
            Effect::PaidOut {
                diamonds_available: 0,
                ..
            }
        ),
        "exactly the diamonds both nodes credited are payable: {paid:?}"
    );
    let reports: Vec<u64> = journal(&mut conn, NODES[owner])
        .await
        .iter()
        .filter_map(|e| match e.event {
            Event::Settlement(s) if s.creator == c0 => Some(s.diamonds),
            _ => None,
        })
        .collect();
    assert_eq!(
        reports.iter().max().map(|&d| u128::from(d)),
        Some(credited[1 - owner]),
        "the owner journaled the other node's report"
    );
    for node in NODES {
        wait_caught_up(&mut conn, node).await;
    }
    let (available, mine): (i64, i64) = redis::cmd("HMGET")
        .arg(creator_key(c0.0, ""))
        .arg("diamonds_available")
        .arg(format!("diamonds_available@{}", NODES[owner]))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(available, 0, "merged diamonds available after the payout");
    assert_eq!(
        mine,
        -i64::try_from(credited[1 - owner]).unwrap(),
        "the owner's contribution: credited here less paid"
    );

    // Each node's ledger audits clean (snapshot + journal, conservation); the moved
    // node had started from the copied snapshot.
    for (node, proc) in nodes.iter().zip(procs.iter_mut()) {
        let log = proc.take().unwrap().stop();
        if node.name == "b" {
            let moved = node.data.path().to_str().unwrap();
            assert!(
                log.iter()
                    .any(|l| l.contains("recovered from the snapshot") && l.contains(moved)),
                "node b started from its moved snapshot directory: {log:#?}"
            );
        }
        let data = node.data.path().to_str().unwrap().to_owned();
        let (ok, out) = crate::support::child::run_cli(
            &["audit"],
            &[
                ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
                ("GIFTSTREAM_CLUSTER_NODE", node.name),
                ("GIFTSTREAM_REDIS_URL", &seed),
                ("GIFTSTREAM_DATA_DIR", &data),
            ],
        );
        assert!(
            ok && out.contains("audit: clean"),
            "node {}: {out}",
            node.name
        );
    }

    // Node a started on node b's snapshot directory is refused before it replays its
    // journal onto b's state (and leaves its lease free).
    let out = support::child::serve_refused(
        &config,
        &seed,
        nodes[1].data.path(),
        &[("GIFTSTREAM_CLUSTER_NODE", "a")],
    );
    assert!(
        out.contains("holds state of partitions this node does not own"),
        "{out}"
    );
    // So are `audit` and `restore` of node a with node b's snapshots.
    let b_dir = nodes[1].data.path().to_str().unwrap().to_owned();
    let b_snapshot = newest_snapshot(nodes[1].data.path());
    let as_a_on_b = [
        ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
        ("GIFTSTREAM_CLUSTER_NODE", "a"),
        ("GIFTSTREAM_REDIS_URL", &seed),
        ("GIFTSTREAM_DATA_DIR", &b_dir),
    ];
    for args in [vec!["audit"], vec!["restore", b_snapshot.to_str().unwrap()]] {
        let (ok, out) = crate::support::child::run_cli(&args, &as_a_on_b);
        assert!(
            !ok && out.contains("holds state of partitions this node does not own"),
            "{args:?}: {out}"
        );
    }

    // Restoring node a from its newest snapshot resets only node a's part of the shared
    // read model (its gifters leave every leaderboard and come back at the snapshot's
    // scores); after the journal catch-up every leaderboard is exact again.
    let a = &nodes[0];
    let snapshot = &newest_snapshot(a.data.path());
    let data = a.data.path().to_str().unwrap().to_owned();
    let (ok, out) = crate::support::child::run_cli(
        &["restore", snapshot.to_str().unwrap()],
        &[
            ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
            ("GIFTSTREAM_CLUSTER_NODE", "a"),
            ("GIFTSTREAM_REDIS_URL", &seed),
            ("GIFTSTREAM_DATA_DIR", &data),
        ],
    );
    assert!(ok && out.contains("read model: rebuilt"), "{out}");
    let restarted = start(a, &config, &seed);
    wait_caught_up(&mut conn, "a").await;
    assert_gifters_equal(&mut conn, &single).await;
    restarted.stop();
}

/// Waits (at most 90 s) until `node`'s read model holds its journal as of the call (a
/// settlement report may be journaled meanwhile).
async fn wait_caught_up(conn: &mut RedisConn, node: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let top = journal_top(conn, node).await;
    loop {
        let mut seq = None;
        for bucket in 0..BUCKETS {
            let at: Option<u64> = redis::cmd("GET")
                .arg(format!("giftstream:{{rm-{bucket}}}:rm:seq:{node}"))
                .query_async(conn)
                .await
                .unwrap();
            seq = Some(seq.map_or(at.unwrap_or(0), |s: u64| s.min(at.unwrap_or(0))));
        }
        if seq >= Some(top) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {node}'s read model at {seq:?}, journal at {top}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every creator's gifter leaderboard in Redis ranks as the single engine's top K: the
/// same scores in order, each member's score its exact total there, and at most one top
/// K per node in the set (the read model keeps top-K-only leaderboards).
async fn assert_gifters_equal(conn: &mut RedisConn, single: &Engine) {
    let k = single.config().top_k;
    let mut most_gifters = 0;
    for (c, ..) in single.read_model_view(ViewParts::default()).creators {
        let set: Vec<(u64, f64)> = redis::cmd("ZREVRANGE")
            .arg(creator_key(c.0, ":top-gifters"))
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await
            .unwrap();
        assert!(
            set.len() <= NODES.len() * k,
            "creator {}: {} members",
            c.0,
            set.len()
        );
        let gifters = (1..=USERS)
            .filter(|&u| single.creator_gifter_coins(c, UserId(u)) > 0)
            .count();
        most_gifters = most_gifters.max(gifters);
        let got: Vec<u128> = set.iter().take(k).map(|&(_, s)| s as u128).collect();
        let want: Vec<u128> = single
            .creator_top_gifters(c, k)
            .iter()
            .map(|&(_, s)| s)
            .collect();
        assert_eq!(got, want, "creator {} top gifters", c.0);
        for (u, score) in set {
            assert_eq!(
                score as u128,
                single.creator_gifter_coins(c, UserId(u)),
                "creator {} gifter {u}",
                c.0
            );
        }
    }
    assert!(
        most_gifters > NODES.len() * k,
        "a creator has more gifters than the sets may hold ({most_gifters})"
    );
}
