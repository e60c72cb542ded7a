//! The read model's wallets follow a debt (review of #31, F2): a recharge reversal that
//! takes back coins already spent leaves `coins_owed`, and a gift refund and recharges
//! repay it first; the projector writes `coins_owed` down with each, and
//! `giftstream audit` compares every wallet's `coins` and `coins_owed` with the ledger
//! (a wrong value in Redis fails it). A real `giftstream serve` on a real Redis.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::RedisServer;
use crate::support::server::{SHIPPED_CONFIG, uuid};

const WALLET_KEY: &str = "giftstream:{ledger}:rm:user:42";

/// Waits (at most 10 s) until user 42's read-model wallet shows `coins` and
/// `coins_owed` (an absent `coins_owed`: a user who never owed, 0); panics with what it
/// shows otherwise.
async fn wallet_shows(conn: &mut redis::aio::MultiplexedConnection, coins: u64, owed: u64) {
    let want = (Some(coins.to_string()), owed.to_string());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(WALLET_KEY)
            .query_async(conn)
            .await
            .unwrap();
        let shown = (
            got.get("coins").cloned(),
            got.get("coins_owed")
                .cloned()
                .unwrap_or_else(|| "0".to_owned()),
        );
        if shown == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{WALLET_KEY}: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_model_wallet_follows_a_debt_repaid_by_a_refund_and_recharges() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("giftstream.toml");
    let text = SHIPPED_CONFIG
        .replace("wallets = false\n", "wallets = true\n")
        .replace("window_ms = 100\n", "window_ms = 20\n");
    assert!(text.contains("wallets = true\n"));
    std::fs::write(&config, text).unwrap();
    // An earnings hold, so that a gift can be refunded.
    let economy = tmp.path().join("economy.toml");
    let held = crate::support::held_economy_text(600_000);
    std::fs::write(&economy, held).unwrap();
    let data = tmp.path().join("data");
    let env = [("GIFTSTREAM_ECONOMY", economy.to_str().unwrap())];
    let p = ServeProcess::start_with(&config, &redis.url(), &data, &env);
    let http = reqwest::Client::new();
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let recharge = |n: u128, coins: u64, price: &str| {
        json!({"type": "recharge", "event_id": uuid(n), "user": 42, "coins": coins,
            "price": price, "currency": "USD", "package": format!("coins_{coins}"),
            "channel": "app"})
    };
    let gift = |n: u128, count: u32| {
        json!({"type": "gift", "event_id": uuid(n), "sender": 42, "creator": 7,
            "stream": 9001, "gift": "rose", "count": count})
    };
    // Step by step, the API's answer and the read model's wallet.
    let steps: [(Value, (u64, u64)); 5] = [
        // 500 bought, 100 + 200 spent: 200 left, no debt.
        (
            json!([recharge(1, 500, "6.49"), gift(10, 100), gift(11, 200)]),
            (200, 0),
        ),
        // The 500 reversed: the 200 left go back, the 300 spent become a debt.
        (
            json!([{"type": "recharge_reversal", "event_id": uuid(20), "user": 42,
                "recharge": uuid(1)}]),
            (0, 300),
        ),
        // Gift 10 refunded: its 100 coins repay the debt, the balance stays 0.
        (
            json!([{"type": "gift_reversal", "event_id": uuid(30), "sender": 42,
                "gift": uuid(10)}]),
            (0, 200),
        ),
        // A recharge of 100 repays 100 more.
        (json!([recharge(40, 100, "1.29")]), (0, 100)),
        // A recharge of 500: the last 100 owed, then 400 to the balance.
        (json!([recharge(41, 500, "6.49")]), (400, 0)),
    ];
    for (i, (events, (coins, owed))) in steps.into_iter().enumerate() {
        let outcomes = p.post_events(&http, events).await;
        for o in &outcomes {
            assert_eq!(o["status"], "accepted", "step {i}: {outcomes:?}");
        }
        let wallet = p.read(&http, "/v1/users/42/wallet").await;
        assert_eq!(
            (&wallet["coins"], &wallet["coins_owed"]),
            (&json!(coins), &json!(owed)),
            "step {i}: {wallet}"
        );
        wallet_shows(&mut conn, coins, owed).await;
    }
    p.stop();
    let audit = || {
        run_cli(
            &["audit"],
            &[
                ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
                ("GIFTSTREAM_ECONOMY", economy.to_str().unwrap()),
                ("GIFTSTREAM_REDIS_URL", redis.url().as_str()),
                ("GIFTSTREAM_DATA_DIR", data.to_str().unwrap()),
            ],
        )
    };
    let (ok, out) = audit();
    assert!(ok && out.contains("0 differences from the ledger"), "{out}");
    // The audit compares coins_owed: a wrong one in Redis fails it.
    let _: i64 = redis::cmd("HSET")
        .arg(WALLET_KEY)
        .arg("coins_owed")
        .arg(100)
        .query_async(&mut conn)
        .await
        .unwrap();
    let (ok, out) = audit();
    assert!(!ok, "{out}");
    assert!(
        out.contains("VIOLATION: read model: user 42: coins_owed in Redis Some(\"100\"), ledger 0"),
        "{out}"
    );
}
