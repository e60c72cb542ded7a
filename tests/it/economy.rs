//! The economy as versioned ledger data (SPEC §1): a change — `PUT /v1/economy` or a start
//! with an edited economy.toml — is journaled with its own sequence number and applies to
//! later events only; diamonds already credited never change; catalog entries keep their
//! codes (a removed gift is `UNKNOWN_GIFT`, its history stays readable); a restart after
//! `kill -9` replays every version exactly.

use std::path::Path;
use std::sync::Arc;

use giftstream::economy::{EMBEDDED_ECONOMY_TOML, Economy, EconomyFile};
use giftstream::engine::{CreatorId, Effect, Engine, EngineConfig, ReplayError, Status};
use serde_json::{Value, json};

use crate::support::child::ServeProcess;
use crate::support::redis::RedisServer;
use crate::support::server::{ADMIN, INGEST, SHIPPED_CONFIG, uuid};
use crate::support::*;

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn send(
    server: &ServeProcess,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: &Value,
) -> (u16, Value) {
    let response = http()
        .request(method, format!("http://{}{path}", server.http))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn events(server: &ServeProcess, events: Value) -> Vec<Value> {
    let (status, body) = send(
        server,
        reqwest::Method::POST,
        "/v1/events",
        INGEST,
        &json!({ "events": events }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["outcomes"].as_array().unwrap().clone()
}

fn recharge_json(n: u128, user: u64) -> Value {
    json!({"type": "recharge", "event_id": uuid(n), "user": user, "coins": 7000,
           "price": "99.99", "currency": "USD", "package": "coins_7000", "channel": "app"})
}

fn gift_json(n: u128, sender: u64, creator: u64, gift: &str, count: u32) -> Value {
    json!({"type": "gift", "event_id": uuid(n), "sender": sender, "creator": creator,
           "stream": 9000 + creator, "gift": gift, "count": count})
}

/// The embedded economy with `creator_share` set and gifts filtered.
fn file_with(share: &str, keep: impl Fn(&str) -> bool) -> EconomyFile {
    let mut file = Economy::embedded().to_file();
    file.creator_share = share.to_owned();
    file.gifts.retain(|g| keep(&g.id));
    file
}

fn write_toml(path: &Path, file: &EconomyFile) {
    std::fs::write(path, toml::to_string(file).unwrap()).unwrap();
}

struct Ledger {
    redis: RedisServer,
    dir: tempfile::TempDir,
}

impl Ledger {
    fn new() -> Ledger {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("giftstream.toml"), SHIPPED_CONFIG).unwrap();
        std::fs::write(dir.path().join("economy.toml"), EMBEDDED_ECONOMY_TOML).unwrap();
        Ledger {
            redis: RedisServer::start(),
            dir,
        }
    }

    fn economy_path(&self) -> std::path::PathBuf {
        self.dir.path().join("economy.toml")
    }

    fn serve(&self) -> ServeProcess {
        let economy = self.economy_path();
        ServeProcess::start_with(
            &self.dir.path().join("giftstream.toml"),
            &self.redis.url(),
            &self.dir.path().join("data"),
            &[("GIFTSTREAM_ECONOMY", economy.to_str().unwrap())],
        )
    }
}

async fn economy_of(server: &ServeProcess) -> Value {
    server.read(&http(), "/v1/economy").await
}

fn code_of(economy: &Value, gift: &str) -> (u64, bool) {
    let g = economy["gifts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == gift)
        .unwrap_or_else(|| panic!("{gift} in {economy}"));
    (g["code"].as_u64().unwrap(), g["retired"].as_bool().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn economy_versions_are_ledger_data_across_put_kill_9_and_an_edited_file() {
    let ledger = Ledger::new();
    let server = ledger.serve();
    // The first start records the file as version 1.
    let v1 = economy_of(&server).await;
    assert_eq!(v1["version"], 1, "{v1}");
    assert_eq!(v1["creator_share"], "0.5");
    let (panda, _) = code_of(&v1, "panda");

    // Share 0.5: 3 roses = 1.5 diamonds; one panda (5 coins) = 2.5 more: 4 in all.
    let out = events(
        &server,
        json!([
            recharge_json(1, 1),
            gift_json(2, 1, 7, "rose", 3),
            gift_json(3, 1, 7, "panda", 1)
        ]),
    )
    .await;
    assert!(out.iter().all(|o| o["status"] == "accepted"), "{out:?}");
    let creator = server.read(&http(), "/v1/creators/7").await;
    assert_eq!(creator["diamonds_total"], 4, "{creator}");

    // Only an admin may change it; a bad economy changes nothing and names the key.
    let v2_file = file_with("0.8", |id| id != "panda");
    let put = |token: &'static str, body: Value| {
        let server = &server;
        async move { send(server, reqwest::Method::PUT, "/v1/economy", token, &body).await }
    };
    let (status, _) = put(INGEST, serde_json::to_value(&v2_file).unwrap()).await;
    assert_eq!(status, 403);
    let mut bad = v2_file.clone();
    bad.creator_share = "1.5".to_owned();
    let (status, body) = put(ADMIN, serde_json::to_value(&bad).unwrap()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("creator_share"),
        "{body}"
    );
    let (status, body) = put(ADMIN, json!({"creator_share": "0.8"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(economy_of(&server).await["version"], 1);

    // Version 2: share 0.8, panda removed. Its change has a sequence number of its own.
    let (status, body) = put(ADMIN, serde_json::to_value(&v2_file).unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["version"].as_u64(), body["changed"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(
        body["seq"], 5,
        "version 1 at seq 1, three events, then the change"
    );
    assert_eq!(code_of(&body["economy"], "panda"), (panda, true));
    // The same terms again: nothing new.
    let (status, again) = put(ADMIN, serde_json::to_value(&v2_file).unwrap()).await;
    assert_eq!(
        (
            status,
            again["version"].as_u64(),
            again["changed"].as_bool()
        ),
        (200, Some(2), Some(false))
    );

    // Diamonds already credited stay; new gifts credit at 0.8; panda is unknown now.
    let creator = server.read(&http(), "/v1/creators/7").await;
    assert_eq!(
        creator["diamonds_total"], 4,
        "credited diamonds never change: {creator}"
    );
    let out = events(
        &server,
        json!([
            gift_json(5, 1, 7, "rose", 5),
            gift_json(6, 1, 7, "panda", 1)
        ]),
    )
    .await;
    assert_eq!(out[0]["status"], "accepted", "{out:?}");
    assert_eq!(
        (out[1]["status"].as_str(), out[1]["code"].as_str()),
        (Some("rejected"), Some("UNKNOWN_GIFT")),
        "{out:?}"
    );
    let creator = server.read(&http(), "/v1/creators/7").await;
    // 4.0 + 5 × 0.8 = 8.0
    assert_eq!(creator["diamonds_total"], 8, "{creator}");
    assert_eq!(
        creator["gifts"]["panda"], 1,
        "a removed gift's history stays readable: {creator}"
    );

    // kill -9, then a start with the file unchanged: the PUT's version stays in force.
    server.kill9();
    let server = ledger.serve();
    let after_kill = economy_of(&server).await;
    assert_eq!(
        after_kill["version"], 2,
        "a restart does not undo a PUT: {after_kill}"
    );
    assert_eq!(after_kill["creator_share"], "0.8");
    assert_eq!(
        server.read(&http(), "/v1/creators/7").await["diamonds_total"],
        8
    );
    server.stop();

    // A start with an edited file: share 0.6, panda back, catalog reversed.
    let mut v3_file = file_with("0.6", |_| true);
    v3_file.gifts.reverse();
    write_toml(&ledger.economy_path(), &v3_file);
    let server = ledger.serve();
    let v3 = economy_of(&server).await;
    assert_eq!(v3["version"], 3, "{v3}");
    assert_eq!(code_of(&v3, "panda"), (panda, false), "codes never move");
    assert_eq!(code_of(&v3, "rose"), code_of(&v1, "rose"));
    let creator = server.read(&http(), "/v1/creators/7").await;
    assert_eq!(creator["diamonds_total"], 8, "replayed exactly: {creator}");
    let out = events(&server, json!([gift_json(7, 1, 7, "panda", 1)])).await;
    assert_eq!(out[0]["status"], "accepted", "{out:?}");
    // 8.0 + 5 × 0.6 = 11.0
    assert_eq!(
        server.read(&http(), "/v1/creators/7").await["diamonds_total"],
        11
    );

    // A restart with the same file records nothing new; only reordering changes nothing.
    server.stop();
    let server = ledger.serve();
    let again = economy_of(&server).await;
    assert_eq!(again["version"], 3, "{again}");
    let wallet = server.read(&http(), "/v1/users/1/wallet").await;
    assert_eq!(wallet["coins"], 7000 - 3 - 5 - 5 - 5, "{wallet}");
    server.stop();
}

fn share(e: &Economy, s: &str) -> Economy {
    let mut file = e.to_file();
    file.creator_share = s.to_owned();
    e.successor(file).unwrap()
}

#[test]
fn replay_needs_the_version_it_names_and_a_snapshot_carries_the_one_in_force() {
    let live = engine();
    let v1 = live
        .economy_successor(economy().to_file())
        .unwrap()
        .unwrap();
    live.change_economy(v1.clone(), NOV).unwrap();
    let v2 = share(&v1, "0.75");
    live.change_economy(v2.clone(), NOV).unwrap();
    live.apply_batch(
        &[recharge(1, 1, "coins_100"), gift(2, 1, 7, "rose", 4)],
        NOV,
    );
    assert_eq!(live.creator(CreatorId(7)).diamonds_total, 3);
    // Which version each number was applied under (the live feed prices gifts by it).
    assert_eq!(
        live.economy_at(1).version,
        0,
        "seq 1 is the change to version 1"
    );
    assert_eq!(live.economy_at(2).version, 1);
    assert_eq!(live.economy_at(3).version, 2);
    assert_eq!(live.economy_at(u64::MAX).version, 2);
    let (state, log) = live.snapshot();

    // Without the documents, the journal cannot be replayed; with them, exactly.
    let blind = engine();
    let err = blind.replay(&log).unwrap_err();
    assert!(
        matches!(err, ReplayError::UnknownEconomy { version: 1, .. }),
        "{err}"
    );
    let replayed = engine();
    for v in [&v1, &v2] {
        replayed.know_economy(Arc::new(v.clone()));
    }
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), live.state_fingerprint());
    assert_eq!(replayed.economy().version, 2);

    // A version that skips one, or moves a code, is refused.
    let v4 = share(&share(&v2, "0.6"), "0.4");
    assert!(live.change_economy(v4, NOV).is_err());

    // The snapshot's economy wins over the caller's file.
    let restored = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    assert_eq!(restored.economy().version, 2);
    assert_eq!(restored.economy().creator_share, dec("0.75"));
    let o = restored.apply_batch(&[gift(3, 1, 7, "rose", 4)], NOV)[0];
    assert!(
        matches!(o.status, Status::Accepted(Effect::Coins(_))),
        "{o:?}"
    );
    assert_eq!(restored.creator(CreatorId(7)).diamonds_total, 6);
}
