//! Promotions (#31 feature 1): time-boxed package offers, judged at the moment the user
//! paid (`issued_ms`), per region and channel; validation of the economy's offers; the
//! sales per promotion in the audit, through snapshots, the journal and a restart.

use giftstream::economy::{EMBEDDED_ECONOMY_TOML, Economy};
use giftstream::engine::{
    AccountSettings, Channel, Effect, Engine, EngineConfig, Event, EventId, Recharge, RejectCode,
    Stamp, Status, UserId,
};
use serde_json::{Value, json};

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::RedisServer;
use crate::support::server::{ADMIN, INGEST, READ, SHIPPED_CONFIG, TestServer, uuid};
use crate::support::*;

/// 2026-11-27T00:00:00Z, 2026-11-30T00:00:00Z.
const BF_START: u64 = 1_795_737_600_000;
const BF_END: u64 = 1_795_996_800_000;

const PROMOTIONS: &str = r#"
[[promotions]]
id = "black_friday_500"
package = "coins_500"
start = "2026-11-27T00:00:00Z"
end = "2026-11-30T00:00:00Z"
bonus_coins = 100
prices = { USD = "4.99" }

[[promotions]]
id = "us_web_100"
package = "coins_100"
start = "2026-11-01T00:00:00Z"
end = "2026-12-01T00:00:00Z"
prices = { USD = "0.99" }
regions = ["US"]
channels = ["web"]
"#;

fn promoted_economy() -> Economy {
    Economy::from_toml_str(&format!("{EMBEDDED_ECONOMY_TOML}\n{PROMOTIONS}")).unwrap()
}

fn promoted_engine() -> Engine {
    Engine::new(promoted_economy(), EngineConfig::default()).unwrap()
}

/// A recharge of `package` with the given terms, paid at `paid_ms` (0: not given).
fn buy(id: u128, user: u64, package: &str, coins: u64, price: &str, paid_ms: u64) -> Event {
    let economy = promoted_economy();
    let mut r = Recharge::of_package(&economy, id, user, package).unwrap();
    r.coins = coins;
    r.price = dec(price);
    Event::Recharge(r.paid(paid_ms))
}

fn with_channel(e: Event, channel: Channel) -> Event {
    match e {
        Event::Recharge(r) => Event::Recharge(Recharge { channel, ..r }),
        other => other,
    }
}

fn region(id: u128, user: u64, region: &str) -> Event {
    Event::Account(AccountSettings {
        id: EventId(id),
        user: UserId(user),
        region: Some(region.parse().unwrap()),
        adult: true,
        monthly_budget_coins: None.into(),
        daily_budget_coins: None.into(),
        weekly_budget_coins: None.into(),
    })
}

fn coins(e: &Engine, event: Event, stamp: u64) -> Result<u64, RejectCode> {
    match e.apply_batch(&[event], Stamp(stamp))[0].status {
        Status::Accepted(Effect::Coins(c)) => Ok(c),
        Status::Rejected(code) => Err(code),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_offer_is_judged_at_the_moment_the_user_paid() {
    let out = Err(RejectCode::AmountOutOfRange);
    // (name, event, server stamp, want)
    let cases: Vec<(&str, Event, u64, Result<u64, RejectCode>)> = vec![
        (
            "regular terms before the start",
            buy(1, 1, "coins_500", 500, "6.49", BF_START - 1),
            BF_START + 5,
            Ok(500),
        ),
        (
            "offer terms before the start",
            buy(2, 2, "coins_500", 600, "4.99", BF_START - 1),
            BF_START + 5,
            out,
        ),
        (
            "offer terms at the start",
            buy(3, 3, "coins_500", 600, "4.99", BF_START),
            BF_START,
            Ok(600),
        ),
        (
            "regular terms while the offer is in force",
            buy(4, 4, "coins_500", 500, "6.49", BF_START),
            BF_START,
            out,
        ),
        (
            "bonus without the discount",
            buy(5, 5, "coins_500", 600, "6.49", BF_START),
            BF_START,
            out,
        ),
        (
            "discount without the bonus",
            buy(6, 6, "coins_500", 500, "4.99", BF_START),
            BF_START,
            out,
        ),
        // Paid a millisecond before the end, received after it: honoured.
        (
            "paid 1 ms before the end, received after",
            buy(7, 7, "coins_500", 600, "4.99", BF_END - 1),
            BF_END + 30_000,
            Ok(600),
        ),
        (
            "paid at the end",
            buy(8, 8, "coins_500", 600, "4.99", BF_END),
            BF_END,
            out,
        ),
        (
            "regular terms at the end",
            buy(9, 9, "coins_500", 500, "6.49", BF_END),
            BF_END,
            Ok(500),
        ),
        // A payment is never later than its arrival: a time ahead of the stamp (a client
        // clock running ahead) counts as the stamp, so no offer is claimed early.
        (
            "offer terms paid 'at the start', received 5 s before it",
            buy(14, 14, "coins_500", 600, "4.99", BF_START),
            BF_START - 5_000,
            out,
        ),
        (
            "regular terms paid 'at the start', received 5 s before it",
            buy(15, 15, "coins_500", 500, "6.49", BF_START),
            BF_START - 5_000,
            Ok(500),
        ),
        // Without issued_ms the server's stamp is the moment.
        (
            "no issued_ms, stamped inside",
            buy(10, 10, "coins_500", 600, "4.99", 0),
            BF_START + 1,
            Ok(600),
        ),
        (
            "no issued_ms, stamped after the end",
            buy(11, 11, "coins_500", 600, "4.99", 0),
            BF_END,
            out,
        ),
        // A currency the offer does not discount keeps the package's price (bonus still given).
        (
            "EUR keeps its price, bonus given",
            {
                let mut e = buy(12, 12, "coins_500", 600, "5.99", BF_START);
                if let Event::Recharge(r) = &mut e {
                    r.currency = "EUR".parse().unwrap();
                }
                e
            },
            BF_START,
            Ok(600),
        ),
        // Another package is not on offer.
        (
            "another package",
            buy(13, 13, "coins_350", 350, "4.49", BF_START),
            BF_START,
            Ok(350),
        ),
    ];
    for (name, event, stamp, want) in cases {
        let e = promoted_engine();
        assert_eq!(coins(&e, event, stamp), want, "{name}");
        let audit = e.audit();
        assert!(audit.is_clean(), "{name}: {:?}", audit.violations);
    }
}

#[test]
fn a_regional_web_offer_applies_only_to_its_region_and_channel() {
    let e = promoted_engine();
    let at = BF_START;
    e.apply_batch(&[region(1, 1, "US"), region(2, 2, "DE")], Stamp(at));
    let offer = |id, user| with_channel(buy(id, user, "coins_100", 100, "0.99", at), Channel::Web);
    let regular =
        |id, user| with_channel(buy(id, user, "coins_100", 100, "1.29", at), Channel::Web);
    assert_eq!(coins(&e, offer(10, 1), at), Ok(100), "US on the web");
    assert_eq!(
        coins(&e, regular(11, 1), at),
        Err(RejectCode::AmountOutOfRange),
        "US must get the offer"
    );
    assert_eq!(
        coins(&e, offer(12, 2), at),
        Err(RejectCode::AmountOutOfRange),
        "DE has no offer"
    );
    assert_eq!(
        coins(&e, regular(13, 2), at),
        Ok(100),
        "DE pays the regular price"
    );
    assert_eq!(
        coins(&e, offer(14, 3), at),
        Err(RejectCode::AmountOutOfRange),
        "no region: no regional offer"
    );
    let app = buy(15, 1, "coins_100", 100, "1.29", at);
    assert_eq!(coins(&e, app, at), Ok(200), "US in the app: regular");
    // A discount in USD only changes nothing for a EUR buyer: the package's EUR terms,
    // and no sale under the promotion.
    let mut eur = regular(16, 1);
    if let Event::Recharge(r) = &mut eur {
        r.currency = "EUR".parse().unwrap();
        r.price = dec("1.19");
    }
    assert_eq!(coins(&e, eur, at), Ok(300), "US on the web in EUR: regular");
    let totals = e.audit().totals;
    let sales: Vec<_> = totals
        .promotions
        .iter()
        .map(|(id, s)| (id.as_str(), s.recharges))
        .collect();
    assert_eq!(sales, vec![("us_web_100", 1)]);
}

#[test]
fn the_audit_counts_sales_per_promotion_within_the_totals() {
    let e = promoted_engine();
    let mut events = Vec::new();
    for i in 0..5u128 {
        events.push(buy(
            100 + i,
            1 + i as u64,
            "coins_500",
            600,
            "4.99",
            BF_START + 10,
        ));
    }
    events.push(buy(200, 9, "coins_500", 500, "6.49", BF_START - 10));
    let outcomes = e.apply_batch(&events, Stamp(BF_START + 20));
    assert!(outcomes.iter().all(|o| o.is_accepted()), "{outcomes:?}");
    let report = e.audit();
    assert!(report.is_clean(), "{:?}", report.violations);
    let t = &report.totals;
    assert_eq!(t.coins_recharged, 5 * 600 + 500);
    assert_eq!(t.promotions.len(), 1);
    let (id, sales) = &t.promotions[0];
    assert_eq!(id, "black_friday_500");
    assert_eq!((sales.recharges, sales.bonus_coins), (5, 500));
    assert_eq!(
        sales.revenue.values().copied().collect::<Vec<_>>(),
        vec![dec("24.95")]
    );
    let usd: Vec<_> = t.revenue.iter().map(|(c, a)| (c.to_string(), *a)).collect();
    assert_eq!(usd, vec![("USD".to_owned(), dec("31.44"))]);
    // A retry is answered, not counted again; one after the retry horizon is refused
    // (a recharge's payment time is its issued_ms), never applied again.
    let again = e.apply_batch(&events, Stamp(BF_START + 60_000));
    assert!(again.iter().all(|o| o.duplicate), "{again:?}");
    let late = e.apply_batch(&events, Stamp(BF_END + 1));
    assert!(
        late.iter()
            .all(|o| o.code() == Some(RejectCode::EventExpired)),
        "{late:?}"
    );
    assert_eq!(e.audit().totals, report.totals.clone());

    // Through a snapshot: the sales come back.
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = e.snapshot();
    let (path, header) =
        giftstream::persist::snapshot::write(dir.path(), &state.view(), 1).unwrap();
    assert_eq!(header.version, giftstream::persist::snapshot::VERSION);
    let (_, state) = giftstream::persist::snapshot::read(&path).unwrap();
    let loaded = Engine::from_state(promoted_economy(), EngineConfig::default(), state).unwrap();
    assert_eq!(loaded.audit().totals, report.totals);
    assert_eq!(loaded.state_fingerprint(), e.state_fingerprint());
}

/// Every refusal of a promotion names its key; nothing half-valid loads.
#[test]
fn bad_promotions_are_refused_with_their_key() {
    let with = |promotions: &str| {
        Economy::from_toml_str(&format!("{EMBEDDED_ECONOMY_TOML}\n{promotions}"))
            .err()
            .map(|e| (e.key, e.message))
    };
    let offer = |fields: &str| {
        format!(
            "[[promotions]]\nid = \"a\"\npackage = \"coins_500\"\nstart = \"2026-11-27T00:00:00Z\"\nend = \"2026-11-30T00:00:00Z\"\n{fields}\n"
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("nothing offered", offer(""), "promotions[0].bonus_coins"),
        (
            "unknown package",
            offer("bonus_coins = 1").replace("coins_500", "coins_501"),
            "promotions[0].package",
        ),
        (
            "end before start",
            offer("bonus_coins = 1").replace("2026-11-30", "2026-11-20"),
            "promotions[0].end",
        ),
        (
            "end equal to start",
            offer("bonus_coins = 1").replace("2026-11-30", "2026-11-27"),
            "promotions[0].end",
        ),
        (
            "not RFC 3339",
            offer("bonus_coins = 1").replace("2026-11-27T00:00:00Z", "Nov 27"),
            "promotions[0].start",
        ),
        (
            "a currency the package is not sold in",
            offer("prices = { GBP = \"1.00\" }"),
            "promotions[0].prices.GBP",
        ),
        (
            "a price that is not positive",
            offer("prices = { USD = \"0\" }"),
            "promotions[0].prices.USD",
        ),
        (
            "bonus overflow",
            offer(&format!("bonus_coins = {}", u64::MAX)),
            "promotions[0].bonus_coins",
        ),
        (
            "bad region",
            offer("bonus_coins = 1\nregions = [\"usa\"]"),
            "promotions[0].regions[0]",
        ),
        (
            "duplicate id",
            format!(
                "{}{}",
                offer("bonus_coins = 1"),
                offer("bonus_coins = 2")
                    .replace("2026-11-27", "2026-12-27")
                    .replace("2026-11-30", "2026-12-30")
            ),
            "promotions[1].id",
        ),
        (
            "overlapping offers on one package",
            format!(
                "{}{}",
                offer("bonus_coins = 1"),
                offer("bonus_coins = 2")
                    .replace("id = \"a\"", "id = \"b\"")
                    .replace("2026-11-27", "2026-11-29")
                    .replace("2026-11-30", "2026-12-30")
            ),
            "promotions[1].start",
        ),
    ];
    for (name, toml, key) in cases {
        let got = with(&toml);
        assert_eq!(
            got.as_ref().map(|(k, _)| k.as_str()),
            Some(key),
            "{name}: {got:?}"
        );
    }
    // Adjacent windows, disjoint regions or channels do not overlap.
    let at = |id: &str, start: &str, end: &str, fields: &str| {
        format!(
            "[[promotions]]\nid = \"{id}\"\npackage = \"coins_500\"\nstart = \"{start}\"\nend = \"{end}\"\n{fields}\n"
        )
    };
    let (d1, d2, d3) = (
        "2026-11-27T00:00:00Z",
        "2026-11-30T00:00:00Z",
        "2026-12-30T00:00:00Z",
    );
    let ok = [
        format!(
            "{}{}",
            at("a", d1, d2, "bonus_coins = 1"),
            at("b", d2, d3, "bonus_coins = 2")
        ),
        format!(
            "{}{}",
            at("a", d1, d2, "bonus_coins = 1\nregions = [\"US\"]"),
            at("b", d1, d2, "bonus_coins = 2\nregions = [\"DE\"]")
        ),
        format!(
            "{}{}",
            at("a", d1, d2, "bonus_coins = 1\nchannels = [\"app\"]"),
            at("b", d1, d2, "bonus_coins = 2\nchannels = [\"web\"]")
        ),
    ];
    // A region-limited offer overlaps one for every region; one channel overlaps both.
    let overlapping = [
        format!(
            "{}{}",
            at("a", d1, d2, "bonus_coins = 1\nregions = [\"US\"]"),
            at("b", d1, d2, "bonus_coins = 2")
        ),
        format!(
            "{}{}",
            at("a", d1, d2, "bonus_coins = 1\nchannels = [\"app\"]"),
            at(
                "b",
                d1,
                d2,
                "bonus_coins = 2\nchannels = [\"web\", \"app\"]"
            )
        ),
    ];
    for toml in overlapping {
        assert_eq!(
            with(&toml).map(|(k, _)| k),
            Some("promotions[1].start".to_owned()),
            "{toml}"
        );
    }
    for toml in ok {
        assert_eq!(with(&toml), None, "{toml}");
    }
    // An economy without promotions keeps the digest it had before they existed: its
    // JSON form has no `promotions` key.
    let file = Economy::embedded().to_file();
    assert!(!serde_json::to_string(&file).unwrap().contains("promotions"));
    // A promotion survives the ledger's record of the economy (versions, snapshots).
    let e = promoted_economy();
    let back = Economy::from_doc(e.to_doc()).unwrap();
    assert!(back.same_terms(&e));
    assert_eq!(back.promotions.len(), 2);
}

/// A format-6 snapshot (written by the build before promotions) loads with no sales.
#[test]
fn a_snapshot_of_format_6_loads_without_promotion_sales() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/snapshot-format-6.gsnap"
    ))
    .unwrap();
    let path = std::path::Path::new("snapshot-format-6.gsnap");
    let (header, state) = giftstream::persist::snapshot::parse(path, &bytes).unwrap();
    assert_eq!(header.version, 6);
    let loaded = Engine::from_state(economy(), EngineConfig::default(), state).unwrap();
    let live = engine();
    live.apply_batch(&crate::durability::format_2_fixture_events(), NOV);
    // Format 6 kept no recharge records (format 8): the live ledger's recharges are
    // reversible, the loaded ledger's are not.
    let live_totals = giftstream::engine::LedgerTotals {
        recharge_records: 0,
        ..live.audit().totals
    };
    assert_eq!(loaded.audit().totals, live_totals);
    assert!(loaded.audit().totals.promotions.is_empty());
}

/// Over HTTP against a real server with a real Redis: the packages a user sees now, a
/// recharge paid a second before an offer ended and received after it, and the sale in
/// `giftstream audit` after `kill -9` and a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_made_before_the_end_is_honoured_across_a_restart() {
    let now = giftstream::clock::now().0;
    let fmt = giftstream::economy::format_time;
    // An offer that ended two seconds ago, and one in force for an hour (US only).
    let end = now - now % 1000 - 2_000;
    let promotions = format!(
        "[[promotions]]\nid = \"ended\"\npackage = \"coins_500\"\nstart = \"{}\"\nend = \"{}\"\nbonus_coins = 100\nprices = {{ USD = \"4.99\" }}\n\n\
         [[promotions]]\nid = \"live_us\"\npackage = \"coins_100\"\nstart = \"{}\"\nend = \"{}\"\nbonus_coins = 10\nregions = [\"US\"]\n",
        fmt(end - 3_600_000),
        fmt(end),
        fmt(end - 3_600_000),
        fmt(end + 3_600_000),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("giftstream.toml");
    let economy = dir.path().join("economy.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, SHIPPED_CONFIG).unwrap();
    std::fs::write(&economy, format!("{EMBEDDED_ECONOMY_TOML}\n{promotions}")).unwrap();
    let redis = RedisServer::start();
    let env = [("GIFTSTREAM_ECONOMY", economy.to_str().unwrap())];
    let server = ServeProcess::start_with(&config, &redis.url(), &data, &env);
    let http = reqwest::Client::new();

    let seen = server.read(&http, "/v1/economy/packages?region=US").await;
    let pkg = |v: &Value, id: &str| {
        v["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .cloned()
            .unwrap()
    };
    assert_eq!(pkg(&seen, "coins_100")["coins"], 110, "{seen}");
    assert_eq!(pkg(&seen, "coins_100")["promotion"]["id"], "live_us");
    assert_eq!(pkg(&seen, "coins_500")["coins"], 500, "ended: {seen}");
    assert!(pkg(&seen, "coins_500")["promotion"].is_null());
    let de = server
        .read(&http, "/v1/economy/packages?region=DE&channel=web")
        .await;
    assert_eq!(pkg(&de, "coins_100")["coins"], 100, "{de}");
    let bad = http
        .get(format!(
            "http://{}/v1/economy/packages?channel=tv",
            server.http
        ))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    let post = |server_http: String, events: Value| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://{server_http}/v1/events"))
                .bearer_auth(INGEST)
                .json(&json!({ "events": events }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.unwrap()["outcomes"].clone()
        }
    };
    let recharge = |n: u128, user: u64, coins: u64, price: &str, issued: Option<u64>| {
        let mut v = json!({"type": "recharge", "event_id": uuid(n), "user": user, "coins": coins,
            "price": price, "currency": "USD", "package": "coins_500"});
        if let Some(ms) = issued {
            v["issued_ms"] = json!(ms);
        }
        v
    };
    let outcomes = post(
        server.http.clone(),
        json!([
            recharge(1, 42, 600, "4.99", Some(end - 1_000)), // paid a second before the end
            recharge(2, 43, 600, "4.99", None),              // no issued_ms: judged now, ended
            recharge(3, 44, 600, "4.99", Some(end)),         // paid at the end
            recharge(4, 45, 500, "6.49", None),              // the regular terms now
        ]),
    )
    .await;
    let got: Vec<_> = outcomes
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["status"].clone(), o["code"].clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (json!("accepted"), Value::Null),
            (json!("rejected"), json!("AMOUNT_OUT_OF_RANGE")),
            (json!("rejected"), json!("AMOUNT_OUT_OF_RANGE")),
            (json!("accepted"), Value::Null),
        ]
    );
    // kill -9, restart: the sale is in the ledger, a retry is the same answer.
    server.kill9();
    let server = ServeProcess::start_with(&config, &redis.url(), &data, &env);
    let again = post(
        server.http.clone(),
        json!([recharge(1, 42, 600, "4.99", Some(end - 1_000))]),
    )
    .await;
    assert_eq!(again[0]["duplicate"], true, "{again}");
    assert_eq!(again[0]["coins"], 600, "{again}");
    let wallet = server.read(&http, "/v1/users/42/wallet").await;
    assert_eq!(wallet["coins"], 600, "{wallet}");
    server.stop();
    let (ok, out) = run_cli(
        &["audit"],
        &[
            ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
            ("GIFTSTREAM_ECONOMY", economy.to_str().unwrap()),
            ("GIFTSTREAM_REDIS_URL", redis.url().as_str()),
            ("GIFTSTREAM_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("promotion ended: 1 recharges, 100 bonus coins, revenue 4.99 USD"),
        "{out}"
    );
}

/// An economy edit may not take back an offer a payment may still arrive under (review
/// finding: a recharge paid during an offer and received after an edit that removed it
/// was refused). Ending it early means setting its end to now; removing it waits one
/// retry horizon after it ended; offers not yet started change freely.
#[test]
fn an_edit_cannot_take_back_an_offer_a_payment_may_still_arrive_under() {
    let live = promoted_engine();
    let horizon = EngineConfig::default().idempotency_horizon_ms;
    let v1 = live
        .economy_successor(promoted_economy().to_file())
        .unwrap()
        .unwrap();
    live.change_economy(v1, Stamp(BF_START - 86_400_000))
        .unwrap();
    let with = |promotions: &str| {
        let file = Economy::from_toml_str(&format!("{EMBEDDED_ECONOMY_TOML}\n{promotions}"))
            .unwrap()
            .to_file();
        live.economy_successor(file).unwrap().unwrap()
    };
    let us_web = &PROMOTIONS[PROMOTIONS
        .find("[[promotions]]\nid = \"us_web_100\"")
        .unwrap()..];
    let black_friday = |end: &str, bonus: u64| {
        format!(
            "[[promotions]]\nid = \"black_friday_500\"\npackage = \"coins_500\"\nstart = \"2026-11-27T00:00:00Z\"\n\
             end = \"{end}\"\nbonus_coins = {bonus}\nprices = {{ USD = \"4.99\" }}\n{us_web}"
        )
    };
    let fmt = giftstream::economy::format_time;
    let during = Stamp(BF_START + 3_600_000);
    // (name, next version's promotions, now, allowed)
    let cases: Vec<(&str, String, Stamp, bool)> = vec![
        ("removed while in force", us_web.to_owned(), during, false),
        ("ended now", black_friday(&fmt(during.0), 100), during, true),
        (
            "ended a second ago",
            black_friday(&fmt(during.0 - 1_000), 100),
            during,
            false,
        ),
        (
            "extended",
            black_friday("2026-12-02T00:00:00Z", 100),
            during,
            true,
        ),
        (
            "bonus changed while in force",
            black_friday("2026-11-30T00:00:00Z", 50),
            during,
            false,
        ),
        (
            "bonus changed before the start",
            black_friday("2026-11-30T00:00:00Z", 50),
            Stamp(BF_START - 1),
            true,
        ),
        (
            "removed within the horizon after the end",
            us_web.to_owned(),
            Stamp(BF_END + horizon - 1),
            false,
        ),
        (
            "removed one horizon after the end",
            us_web.to_owned(),
            Stamp(BF_END + horizon),
            true,
        ),
    ];
    for (name, promotions, now, allowed) in cases {
        let next = with(&promotions);
        let checked = live.check_economy_edit(&next, now);
        assert_eq!(checked.is_ok(), allowed, "{name}: {checked:?}");
        if let Err(e) = checked {
            let text = e.to_string();
            assert!(
                text.contains("black_friday_500") && text.contains("promotions[0]"),
                "{name}: {text}"
            );
        }
    }
}

/// Over HTTP: `PUT /v1/economy` removing an offer in force is a 422 naming it, and the
/// economy in force is unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_economy_refuses_to_remove_an_offer_in_force() {
    let now = giftstream::clock::now().0;
    let fmt = giftstream::economy::format_time;
    let offer = format!(
        "[[promotions]]\nid = \"live\"\npackage = \"coins_500\"\nstart = \"{}\"\nend = \"{}\"\nbonus_coins = 100\n",
        fmt(now - now % 1000 - 60_000),
        fmt(now - now % 1000 + 3_600_000),
    );
    let s = TestServer::start().await;
    let put = |toml: String| {
        let s = &s;
        async move {
            let file = Economy::from_toml_str(&toml).unwrap().to_file();
            s.send(
                "PUT",
                "/v1/economy",
                Some(ADMIN),
                serde_json::to_string(&file).unwrap(),
            )
            .await
        }
    };
    let (status, body) = put(format!("{EMBEDDED_ECONOMY_TOML}\n{offer}")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put(EMBEDDED_ECONOMY_TOML.to_owned()).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"live\""),
        "{body}"
    );
    let (_, economy) = s.get("/v1/economy", Some(READ)).await;
    assert_eq!(economy["promotions"][0]["id"], "live", "{economy}");
}
