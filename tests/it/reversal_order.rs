//! The order a batch is applied in, as documented (review of #31, F5; README "Gift
//! reversals", PROTOCOL.md "Order within a request", the OpenAPI description of
//! `POST /v1/events`): every sender event first, in batch order per sender, then
//! payouts, goals and gift reversals in batch order. So a gift after a gift reversal in
//! the same batch does not see the refund; in a later batch it does. A real server on a
//! real Redis, over HTTP and the binary protocol.

use serde_json::json;

use giftstream::client::Client;
use giftstream::engine::{EventId, GiftReversal, RejectCode, Status};

use crate::support::child::ServeProcess;
use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, SHIPPED_CONFIG, uuid};
use crate::support::{gift, recharge};

/// `uuid(n)`'s id as a number.
fn id_of(n: u128) -> u128 {
    ::uuid::Uuid::parse_str(&uuid(n)).unwrap().as_u128()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gift_after_a_reversal_in_its_batch_does_not_see_the_refund() {
    let redis = RedisServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("giftstream.toml");
    std::fs::write(&config, SHIPPED_CONFIG).unwrap();
    let economy = tmp.path().join("economy.toml");
    let held = crate::support::held_economy_text(600_000);
    std::fs::write(&economy, held).unwrap();
    let data = tmp.path().join("data");
    let env = [("GIFTSTREAM_ECONOMY", economy.to_str().unwrap())];
    let p = ServeProcess::start_with(&config, &redis.url(), &data, &env);
    let http = reqwest::Client::new();
    let rose = |n: u128, sender: u64, count: u32| {
        json!({"type": "gift", "event_id": uuid(n), "sender": sender, "creator": 7,
            "stream": 9001, "gift": "rose", "count": count})
    };
    let refund = |n: u128, sender: u64, of: u128| json!({"type": "gift_reversal", "event_id": uuid(n), "sender": sender, "gift": uuid(of)});
    let recharge_100 = |n: u128, user: u64| {
        json!({"type": "recharge", "event_id": uuid(n), "user": user, "coins": 100,
            "price": "1.29", "currency": "USD", "package": "coins_100", "channel": "app"})
    };
    // Users 42 and 43 spend all their 100 coins on one gift.
    let o = p
        .post_events(
            &http,
            json!([
                recharge_100(1, 42),
                rose(2, 42, 100),
                recharge_100(3, 43),
                rose(4, 43, 100)
            ]),
        )
        .await;
    assert!(o.iter().all(|o| o["status"] == "accepted"), "{o:?}");
    assert_eq!((&o[1]["coins"], &o[3]["coins"]), (&json!(0), &json!(0)));

    // One batch: the refund, then a gift that needs its coins. The gift is applied
    // first (a sender event), so it is rejected; the refund is accepted after it.
    let o = p
        .post_events(&http, json!([refund(10, 42, 2), rose(11, 42, 50)]))
        .await;
    assert_eq!(
        (&o[0]["status"], &o[0]["coins"]),
        (&json!("accepted"), &json!(100)),
        "{o:?}"
    );
    assert_eq!(o[1]["code"], "INSUFFICIENT_COINS", "{o:?}");
    assert!(
        o[1]["seq"].as_u64() < o[0]["seq"].as_u64(),
        "sequence numbers record the order applied: {o:?}"
    );

    // Two batches: the gift sees the refund.
    let o = p.post_events(&http, json!([refund(20, 43, 4)])).await;
    assert_eq!(o[0]["coins"], 100, "{o:?}");
    let o = p.post_events(&http, json!([rose(21, 43, 50)])).await;
    assert_eq!(
        (&o[0]["status"], &o[0]["coins"]),
        (&json!("accepted"), &json!(50)),
        "{o:?}"
    );

    // The binary protocol: one request frame is one batch, applied the same way.
    let client = Client::connect(p.tcp.as_str(), INGEST).await.unwrap();
    let got = client
        .send(&[
            recharge(id_of(30), 44, "coins_100"),
            gift(id_of(31), 44, 7, "rose", 100),
        ])
        .await
        .unwrap();
    assert_eq!(
        got[1].status,
        Status::Accepted(giftstream::engine::Effect::Coins(0))
    );
    let reversal = giftstream::engine::Event::GiftReversal(GiftReversal::new(
        EventId(id_of(32)),
        giftstream::engine::UserId(44),
        EventId(id_of(31)),
    ));
    let got = client
        .send(&[reversal, gift(id_of(33), 44, 7, "rose", 50)])
        .await
        .unwrap();
    assert_eq!(
        got[0].status,
        Status::Accepted(giftstream::engine::Effect::Coins(100))
    );
    assert_eq!(
        got[1].status,
        Status::Rejected(RejectCode::InsufficientCoins)
    );
    let got = client
        .send(&[gift(id_of(34), 44, 7, "rose", 50)])
        .await
        .unwrap();
    assert_eq!(
        got[0].status,
        Status::Accepted(giftstream::engine::Effect::Coins(50))
    );
    drop(client);
    p.stop();
}
