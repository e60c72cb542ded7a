//! Gifts on videos (issue #31, feature 6): a gift names a `stream` or a `video`. A video
//! gift passes the stream gift's checks in the same order with the same codes, is
//! debited and credited to its creator alike (creator totals, diamonds, top gifters),
//! and counts in the video's own totals and top gifters — never in a stream, a goal or
//! the live feed. Here: the rule table (each case sent as a stream gift and as a video
//! gift), the gift reversal's rule table (a video's gift reversed as a stream's), top
//! gifters per video against a brute-force ranking, journal replay and snapshots (format
//! 9, and 7 read as a state without videos), the live feed, and a real server over Redis
//! on both protocols with the read model (a video gift's reversal lowering its keys) and
//! a `kill -9`.

use std::collections::BTreeMap;

use giftstream::client::Client;
use giftstream::engine::{
    CreatorId, Engine, EngineConfig, Event, LogEntry, Outcome, RejectCode, StreamId, UserId,
    VideoId,
};
use giftstream::persist::read_model::{self, Layout, PREFIX};
use giftstream::persist::redis::{JOURNAL_VERSION, JournalBatch};
use giftstream::persist::snapshot;
use giftstream::server::sse::{FeedLimits, Feeds};
use serde_json::{Value, json};

use crate::support::child::{ServeProcess, run_cli};
use crate::support::redis::RedisServer;
use crate::support::server::{INGEST, READ, SHIPPED_CONFIG, TestServer, uuid};
use crate::support::*;

/// The same gift sent on a stream (9000 + creator, as `gift` builds it) or on video
/// 7000 + creator.
fn both(id: u128, sender: u64, creator: u64, name: &str, count: u32) -> [Event; 2] {
    [
        gift(id, sender, creator, name, count),
        video_gift(id, sender, creator, 7000 + creator, name, count),
    ]
}

/// One rule case: setup events, then the gift; the outcome code the gift must get on
/// a stream and on a video alike (`None`: accepted).
struct Case {
    name: &'static str,
    setup: Vec<Event>,
    gift: (u64, u64, &'static str, u32),
    want: Option<RejectCode>,
}

#[test]
fn a_video_gift_passes_the_stream_gifts_checks_in_the_same_order_with_the_same_codes() {
    let funded = |user: u64| vec![recharge(1, user, "coins_1400")];
    let cases = vec![
        Case {
            name: "accepted",
            setup: funded(1),
            gift: (1, 2, "panda", 3),
            want: None,
        },
        Case {
            name: "unknown gift",
            setup: funded(1),
            gift: (1, 2, "no_such_gift", 1),
            want: Some(RejectCode::UnknownGift),
        },
        Case {
            name: "count 0",
            setup: funded(1),
            gift: (1, 2, "rose", 0),
            want: Some(RejectCode::InvalidCount),
        },
        Case {
            name: "count over max_gift_count",
            setup: funded(1),
            gift: (1, 2, "rose", 10_000),
            want: Some(RejectCode::InvalidCount),
        },
        Case {
            name: "unknown gift before the count",
            setup: funded(1),
            gift: (1, 2, "no_such_gift", 0),
            want: Some(RejectCode::UnknownGift),
        },
        Case {
            name: "self gift",
            setup: funded(1),
            gift: (1, 1, "rose", 1),
            want: Some(RejectCode::SelfGift),
        },
        Case {
            name: "self gift before the funds",
            setup: vec![],
            gift: (1, 1, "rose", 1),
            want: Some(RejectCode::SelfGift),
        },
        Case {
            name: "minor",
            setup: vec![
                recharge(1, 1, "coins_1400"),
                account(2, 1, None, false, None),
            ],
            gift: (1, 2, "rose", 1),
            want: Some(RejectCode::AgeRestricted),
        },
        Case {
            name: "restricted region",
            setup: vec![
                recharge(1, 1, "coins_1400"),
                account(2, 1, Some("KP"), true, None),
            ],
            gift: (1, 2, "rose", 1),
            want: Some(RejectCode::RegionUnavailable),
        },
        Case {
            name: "over the monthly budget",
            setup: vec![
                recharge(1, 1, "coins_1400"),
                account(2, 1, None, true, Some(10)),
            ],
            gift: (1, 2, "panda", 3),
            want: Some(RejectCode::BudgetExceeded),
        },
        Case {
            name: "over the daily budget",
            setup: vec![
                recharge(1, 1, "coins_1400"),
                budgets(2, 1, None, None, Some(4)),
            ],
            gift: (1, 2, "panda", 1),
            want: Some(RejectCode::BudgetExceeded),
        },
        Case {
            name: "insufficient coins",
            setup: funded(1),
            gift: (1, 2, "concert", 3),
            want: Some(RejectCode::InsufficientCoins),
        },
        Case {
            name: "a user never seen",
            setup: vec![],
            gift: (5, 2, "rose", 1),
            want: Some(RejectCode::InsufficientCoins),
        },
        Case {
            name: "a cost over any balance",
            setup: funded(1),
            gift: (1, 2, "universe", 9_999),
            want: Some(RejectCode::InsufficientCoins),
        },
    ];
    for case in cases {
        let (sender, creator, name, count) = case.gift;
        let mut answers = Vec::new();
        for event in both(0xF00, sender, creator, name, count) {
            let engine = engine();
            let setup = engine.apply_batch(&case.setup, NOV);
            assert!(setup.iter().all(Outcome::is_accepted), "{}", case.name);
            let got = engine.apply_batch(&[event], NOV)[0];
            assert_eq!(got.code(), case.want, "{}: {event:?}", case.name);
            let audit = engine.audit();
            assert!(audit.is_clean(), "{}: {:?}", case.name, audit.violations);
            answers.push((got, engine.wallet(UserId(sender), NOV), audit.totals));
        }
        let (stream, video) = (&answers[0], &answers[1]);
        assert_eq!(
            (stream.0, stream.1),
            (video.0, video.1),
            "{}: the same outcome, cap and wallet",
            case.name
        );
        assert_eq!(stream.0.cap, video.0.cap, "{}", case.name);
        // Creators and their diamonds count both alike; streams only the stream's.
        let (s, v) = (&stream.2, &video.2);
        assert_eq!(
            (
                s.coins_spent,
                s.coins_received_by_creators,
                s.diamonds_credited
            ),
            (
                v.coins_spent,
                v.coins_received_by_creators,
                v.diamonds_credited
            ),
            "{}",
            case.name
        );
        assert_eq!(v.coins_received_by_streams, 0, "{}", case.name);
        assert_eq!(s.coins_received_by_videos, 0, "{}", case.name);
        assert_eq!(
            v.coins_received_by_videos, s.coins_received_by_streams,
            "{}",
            case.name
        );
    }
}

/// What a video gift changes, and what it leaves alone: the creator's totals, diamonds
/// and top gifters count it; the video's own totals and top gifters hold it; no stream,
/// goal or history line of another kind does.
#[test]
fn a_video_gift_counts_for_its_creator_and_its_video_and_no_stream_or_goal() {
    let engine = engine();
    let out = engine.apply_batch(
        &[
            recharge(1, 1, "coins_1400"),
            recharge(2, 2, "coins_1400"),
            goal(3, 9_002, 2, 100),
            video_gift(4, 1, 2, 9_002, "panda", 10), // video 9002: the stream's number
            gift(5, 2, 3, "rose", 7),                // user 2 on stream 9003
            video_gift(6, 2, 3, 9_002, "rainbow_puke", 1), // same video, another creator
            video_gift(7, 1, 2, 9_002, "rose", 1),
        ],
        NOV,
    );
    assert!(out.iter().all(Outcome::is_accepted), "{out:?}");
    let video = engine.video(VideoId(9_002));
    assert_eq!(video.coins_received, 50 + 100 + 1);
    assert_eq!(
        video.creator,
        Some(CreatorId(2)),
        "the smallest creator gifted to on it"
    );
    let names: BTreeMap<String, u128> = video
        .gifts
        .iter()
        .map(|(g, n)| (economy().gifts[g.0 as usize].id.clone(), *n))
        .collect();
    assert_eq!(
        names,
        BTreeMap::from([
            ("panda".to_owned(), 10),
            ("rainbow_puke".to_owned(), 1),
            ("rose".to_owned(), 1)
        ])
    );
    assert_eq!(
        engine.video_top_gifters(VideoId(9_002), 10),
        vec![(UserId(2), 100), (UserId(1), 51)]
    );
    // The stream with the video's number, and its goal, saw nothing.
    let stream = engine.stream(StreamId(9_002));
    assert_eq!(stream.coins_received, 0);
    assert_eq!(
        stream.goal,
        Some((100, 0)),
        "the goal's progress is unmoved"
    );
    assert!(engine.stream_top_gifters(StreamId(9_002), 10).is_empty());
    // The creator counts video and stream gifts alike.
    let creator = engine.creator(CreatorId(2));
    assert_eq!(creator.coins_received, 51);
    assert_eq!(creator.diamonds_total, 25, "floor(51 x 0.5)");
    assert_eq!(
        engine.creator_top_gifters(CreatorId(2), 10),
        vec![(UserId(1), 51)]
    );
    assert_eq!(engine.creator(CreatorId(3)).coins_received, 107);
    assert_eq!(
        engine.creator_top_gifters(CreatorId(3), 10),
        vec![(UserId(2), 107)]
    );
    assert_eq!(engine.top_creators(1), vec![(CreatorId(3), 53)]);
    // History: the video gift's own kind.
    let kinds: Vec<_> = engine
        .history(UserId(1), 10)
        .iter()
        .map(|h| (h.kind.as_str(), h.coins_delta))
        .collect();
    assert_eq!(
        kinds,
        [("video_gift", -1), ("video_gift", -50), ("recharge", 1400)]
    );
    let t = engine.audit();
    assert!(t.is_clean(), "{:?}", t.violations);
    assert_eq!(
        (
            t.totals.videos,
            t.totals.coins_received_by_videos,
            t.totals.coins_received_by_streams
        ),
        (1, 151, 7)
    );
}

/// A gift reversal answers a gift on a video exactly as one on a stream, case by case
/// (each run on a fresh ledger under a 15 s hold, the gifts sent on a stream and on a
/// video): accepted with the same balance while held, `ALREADY_REVERSED`,
/// `ORIGINAL_NOT_FOUND` for another sender's or a rejected gift, `NOT_REVERSIBLE` at the
/// release, without a hold, or once dropped by the bound. An accepted one lowers the
/// video's coins and top gifters as it lowers a stream's.
#[test]
fn a_video_gifts_reversal_follows_the_stream_gifts_rule_table() {
    use giftstream::engine::{Effect, EventId, GiftReversal, Stamp, Status};
    const HOLD: u64 = 15_000;
    let reversal = |id: u128, sender: u64, gift: u128| {
        Event::GiftReversal(GiftReversal::new(
            EventId(id),
            UserId(sender),
            EventId(gift),
        ))
    };
    let held = crate::support::held_economy;
    let at = |ms: u64| Stamp(NOV.0 + ms);
    // (name, hold, records bound, the reversals, when, the last one's status)
    type Case = (&'static str, u64, usize, Vec<Event>, u64, Status);
    let accepted = |coins| Status::Accepted(Effect::Coins(coins));
    let code = Status::Rejected;
    let cases: Vec<Case> = vec![
        (
            "held",
            HOLD,
            100,
            vec![reversal(20, 1, 11)],
            1,
            accepted(1400 - 1),
        ),
        (
            "held, a ms before",
            HOLD,
            100,
            vec![reversal(20, 1, 11)],
            HOLD - 1,
            accepted(1399),
        ),
        (
            "twice",
            HOLD,
            100,
            vec![reversal(20, 1, 11), reversal(21, 1, 11)],
            1,
            code(RejectCode::AlreadyReversed),
        ),
        (
            "another sender's",
            HOLD,
            100,
            vec![reversal(20, 2, 11)],
            1,
            code(RejectCode::OriginalNotFound),
        ),
        (
            "a rejected gift",
            HOLD,
            100,
            vec![reversal(20, 1, 12)],
            1,
            code(RejectCode::OriginalNotFound),
        ),
        (
            "at the release",
            HOLD,
            100,
            vec![reversal(20, 1, 11)],
            HOLD,
            code(RejectCode::NotReversible),
        ),
        (
            "no hold",
            0,
            100,
            vec![reversal(20, 1, 11)],
            1,
            code(RejectCode::NotReversible),
        ),
        (
            "dropped by the bound",
            HOLD,
            1,
            vec![reversal(20, 1, 10)],
            1,
            code(RejectCode::NotReversible),
        ),
    ];
    for (name, hold, bound, reversals, ms, want) in cases {
        let mut tops = Vec::new();
        for on_video in [false, true] {
            let config = EngineConfig {
                shards: 1,
                gift_records_per_shard_max: bound,
                ..EngineConfig::default()
            };
            let engine = Engine::new(held(hold), config).unwrap();
            let pick = |e: [Event; 2]| e[usize::from(on_video)];
            let setup = [
                recharge(1, 1, "coins_1400"),
                recharge(2, 2, "coins_1400"),
                pick(both(10, 1, 3, "rose", 1)),
                pick(both(11, 1, 3, "panda", 3)),
                pick(both(12, 1, 3, "universe", 1)),
                pick(both(13, 2, 3, "panda", 2)),
            ];
            let out = engine.apply_batch(&setup, NOV);
            assert_eq!(out[4].code(), Some(RejectCode::InsufficientCoins), "{name}");
            let out = engine.apply_batch(&reversals, at(ms));
            let got = out.last().unwrap().status;
            assert_eq!(got, want, "{name}, on a video: {on_video}: {out:?}");
            let report = engine.audit();
            assert!(report.is_clean(), "{name}: {:?}", report.violations);
            let t = report.totals;
            assert_eq!(
                t.coins_spent - t.coins_refunded,
                t.coins_received_by_streams + t.coins_received_by_videos,
                "{name}: gifts − refunded = by streams + by videos"
            );
            tops.push(if on_video {
                engine.video_top_gifters(VideoId(7003), 10)
            } else {
                engine.stream_top_gifters(StreamId(9003), 10)
            });
        }
        assert_eq!(tops[0], tops[1], "{name}: the target's top gifters");
    }
}

/// Gifts on a few videos from many senders over 4 shards, top K = 5: each video's top
/// gifters are the best five of a brute-force ranking of every sender's total (higher
/// coins first, then the lower user id), at every limit.
#[test]
fn top_gifters_per_video_equal_a_brute_force_ranking() {
    let config = EngineConfig {
        shards: 4,
        top_k: 5,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config).unwrap();
    let users = 1..=40u64;
    let funding: Vec<Event> = users
        .clone()
        .map(|u| recharge(u as u128, u, "coins_1400"))
        .collect();
    engine.apply_batch(&funding, NOV);
    let mut totals: BTreeMap<u64, BTreeMap<u64, u128>> = BTreeMap::new();
    let names = ["rose", "panda", "finger_heart", "rainbow_puke"];
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for batch in 0..30u128 {
        let events: Vec<Event> = (0..40u128)
            .map(|i| {
                let (user, video) = (1 + next() % 40, 1 + next() % 3);
                let (name, count) = (names[(next() % 4) as usize], 1 + (next() % 3) as u32);
                video_gift(
                    1_000 + batch * 100 + i,
                    user,
                    100 + video,
                    video,
                    name,
                    count,
                )
            })
            .collect();
        let outcomes = engine.apply_batch(&events, NOV);
        for (e, o) in events.iter().zip(&outcomes) {
            if let (Event::VideoGift(v), true) = (e, o.is_accepted()) {
                let cost = economy().gifts[v.gift.0 as usize].coins * u64::from(v.count);
                *totals
                    .entry(v.video.0)
                    .or_default()
                    .entry(v.sender.0)
                    .or_default() += u128::from(cost);
            }
        }
    }
    assert_eq!(totals.len(), 3);
    for (video, by_user) in &totals {
        let mut ranked: Vec<(UserId, u128)> =
            by_user.iter().map(|(&u, &c)| (UserId(u), c)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        assert!(ranked.len() > 5, "more gifters than the list holds");
        for limit in [1, 3, 5, 50] {
            assert_eq!(
                engine.video_top_gifters(VideoId(*video), limit),
                ranked[..limit.min(5)].to_vec(),
                "video {video}, limit {limit}"
            );
        }
        let view = engine.video(VideoId(*video));
        assert_eq!(view.coins_received, by_user.values().sum::<u128>());
        for (&user, &coins) in by_user {
            assert_eq!(
                engine.video_gifter_coins(VideoId(*video), UserId(user)),
                coins
            );
        }
    }
    let audit = engine.audit();
    assert!(audit.is_clean(), "{:?}", audit.violations);
}

/// Video and stream gifts, recharges, a goal and a payout of several users.
fn some_events(from: u128, users: std::ops::Range<u64>) -> Vec<Event> {
    let mut events = Vec::new();
    for (k, user) in users.enumerate() {
        let id = from + 10 * k as u128;
        events.push(recharge(id, user, "coins_1400"));
        events.push(video_gift(
            id + 1,
            user,
            90 + user % 3,
            500 + user % 4,
            "panda",
            3,
        ));
        events.push(gift(id + 2, user, 90 + user % 3, "rose", 2));
        events.push(video_gift(id + 3, user, 91, 501, "rainbow_puke", 1));
        events.push(video_gift(id + 4, user, 91, 501, "no_such_gift", 1));
        events.push(video_gift(id + 5, user, 91, 502, "concert", 9));
    }
    events
}

/// A journal's round trip: the records of the current format read back as the same
/// entries.
fn through_the_journal(log: &[LogEntry]) -> Vec<LogEntry> {
    let bytes = JournalBatch::from_entries(log).encode();
    assert_eq!(bytes[0], JOURNAL_VERSION);
    assert_eq!(
        JOURNAL_VERSION, 10,
        "video gifts are journal format 6, their reversals 7, battles 8, reversals with their gift's hour 9, battle closes 10"
    );
    JournalBatch::decode(&bytes)
        .unwrap()
        .into_entries()
        .unwrap()
}

/// A live engine, its journal replayed whole, and its snapshot (format 9, written to a
/// file and read back) plus the journal after it give the same state — the videos'
/// totals and top gifters included — and answer a retry of a video gift as the original.
#[test]
fn video_gifts_replay_from_the_journal_and_a_snapshot_to_the_same_state() {
    let config = EngineConfig {
        shards: 2,
        top_k: 3,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config.clone()).unwrap();
    engine.apply_batch(&some_events(1_000, 1..7), NOV);
    let (state, mut log) = engine.snapshot();
    let at_cut = engine.audit().totals.coins_received_by_videos;
    assert!(at_cut > 0);
    engine.apply_batch(&some_events(2_000, 4..12), DEC);
    log.extend(engine.drain_log());
    let log = through_the_journal(&log);
    let live = engine.state_fingerprint();
    let live_totals = engine.audit().totals;
    assert!(engine.audit().is_clean());
    assert!(log.iter().any(|e| e.event.kind().as_str() == "video_gift"
        && e.outcome.code() == Some(RejectCode::UnknownGift)));
    let top = engine.video_top_gifters(VideoId(501), 3);
    assert_eq!(top.len(), 3);

    let replayed = Engine::new(economy(), config.clone()).unwrap();
    replayed.replay(&log).unwrap();
    assert_eq!(replayed.state_fingerprint(), live, "replay of the journal");
    assert_eq!(replayed.audit().totals, live_totals);
    assert_eq!(replayed.video_top_gifters(VideoId(501), 3), top);

    let dir = tempfile::tempdir().unwrap();
    let (path, header) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    assert_eq!(header.version, snapshot::VERSION);
    let (_, read) = snapshot::read(&path).unwrap();
    let restored = Engine::from_state(economy(), config.clone(), read).unwrap();
    assert_eq!(
        restored.audit().totals.coins_received_by_videos,
        at_cut,
        "the snapshot keeps the videos"
    );
    let from = state.last_seq() as usize;
    restored.replay(&log[from..]).unwrap();
    assert_eq!(restored.state_fingerprint(), live, "snapshot + journal");
    assert_eq!(restored.video_top_gifters(VideoId(501), 3), top);
    let retry = log
        .iter()
        .rev()
        .find(|e| matches!(e.event, Event::VideoGift(_)))
        .unwrap();
    for engine in [&replayed, &restored] {
        let got = engine.apply_batch(&[retry.event], DEC)[0];
        assert_eq!(
            got,
            Outcome {
                duplicate: true,
                ..retry.outcome
            }
        );
    }
}

/// Snapshot format 7 is format 8 without the trailing `videos` (one zero byte when
/// empty): a format-7 file, as the build before videos wrote it for a ledger of stream
/// gifts, reads as the same state with no videos.
#[test]
fn a_format_7_snapshot_reads_as_a_state_without_videos() {
    let config = EngineConfig {
        shards: 2,
        ..EngineConfig::default()
    };
    let engine = Engine::new(economy(), config.clone()).unwrap();
    let events: Vec<Event> = (1..6u64)
        .flat_map(|u| {
            [
                recharge(u128::from(u) * 10, u, "coins_1400"),
                gift(u128::from(u) * 10 + 1, u, 90, "panda", 2),
                purchase(u128::from(u) * 10 + 2, u, "sticker_pack", 1),
            ]
        })
        .collect();
    engine.apply_batch(&events, NOV);
    let (state, _) = engine.snapshot();
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = snapshot::write(dir.path(), &state.view(), 2).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let body = &bytes[snapshot::HEADER_BYTES..];
    let tail = giftstream::protocol::encode_serde(&state.view().format_8_tail())
        .unwrap()
        .len();
    let body7 = &body[..body.len() - tail];
    let mut v7 = bytes[..snapshot::HEADER_BYTES].to_vec();
    v7[8..12].copy_from_slice(&7u32.to_le_bytes());
    v7[48..56].copy_from_slice(&(body7.len() as u64).to_le_bytes());
    v7[56..60].copy_from_slice(&crc32fast::hash(body7).to_le_bytes());
    v7.extend_from_slice(body7);
    let (header, read) =
        snapshot::parse(std::path::Path::new("snapshot-format-7.gsnap"), &v7).unwrap();
    assert_eq!(header.version, 7);
    let restored = Engine::from_state(economy(), config, read).unwrap();
    // Compared as formats before 8 hold a state: without the recharge records its
    // recharges left (format 8's, like the videos).
    assert_eq!(
        restored.state_fingerprint_v6(),
        engine.state_fingerprint_v6()
    );
    assert!(restored.audit().is_clean());
    // Read as format 8, the cut body is short: refused, not misread.
    let mut as_8 = v7.clone();
    as_8[8..12].copy_from_slice(&8u32.to_le_bytes());
    assert!(snapshot::parse(std::path::Path::new("x.gsnap"), &as_8).is_err());
}

/// The live feed is per stream: a gift on a video whose number is a watched stream's
/// publishes nothing; the stream's own gift does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_feed_shows_no_video_gift() {
    let engine = engine();
    let feeds = Feeds::new(
        FeedLimits {
            subscribers_per_stream_max: 4,
            subscribers_max: 16,
            buffer: 64,
            replay_events: 64,
            replay_idle_streams_max: 4,
            replay_keep: std::time::Duration::from_secs(60),
        },
        0,
    );
    let mut sub = feeds.subscribe(&engine, StreamId(9_002), None).unwrap();
    engine.apply_batch(&[recharge(1, 1, "coins_1400")], NOV);
    engine.drain_log();
    engine.apply_batch(&[video_gift(2, 1, 2, 9_002, "rose", 1)], NOV);
    feeds.publish(&engine, &engine.drain_log());
    assert!(
        sub.receiver.try_recv().is_err(),
        "no message for a video gift"
    );
    engine.apply_batch(&[gift(3, 1, 2, "rose", 1)], NOV); // stream 9002
    feeds.publish(&engine, &engine.drain_log());
    let first = sub.receiver.try_recv().expect("the stream's gift");
    assert_eq!(first.message.name(), "gift");
}

fn json_video_gift(n: u128, sender: u64, creator: u64, video: u64, name: &str) -> Value {
    json!({"type": "gift", "event_id": uuid(n), "sender": sender, "creator": creator,
           "video": video, "gift": name, "count": 2})
}

/// Waits until the read model holds every event of the server's engine.
async fn read_model_caught_up(conn: &mut giftstream::persist::redis::RedisConn, last: u64) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let ledger = giftstream::persist::redis::Ledger::default();
    while read_model::projected_seq_of(conn, &ledger, Layout::SINGLE)
        .await
        .unwrap()
        < last
    {
        assert!(tokio::time::Instant::now() < deadline, "read model behind");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A real server over Redis: video gifts over HTTP (both or neither target: 422, nothing
/// applied) and the binary protocol, `GET /v1/videos/{id}` and its top gifters, the
/// OpenAPI document, the read model's video keys after a burst (and the audit's
/// comparison of them), and a restart that replays them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_gifts_over_http_and_tcp_with_their_reads_and_read_model_keys() {
    let redis = RedisServer::start();
    let (s, _) = TestServer::on_redis(&redis.url(), |_| {}).await;
    s.serving().await;
    let recharge_json = |n: u128, user: u64| {
        json!({"type": "recharge", "event_id": uuid(n), "user": user, "coins": 1400,
               "price": "17.99", "currency": "USD", "package": "coins_1400"})
    };
    let (status, body) = s
        .post_events(json!([
            recharge_json(1, 41),
            recharge_json(2, 42),
            json_video_gift(3, 41, 7, 55, "panda"),
            json_video_gift(4, 42, 7, 55, "rainbow_puke"),
            json_video_gift(5, 42, 7, 55, "no_such_gift"),
            json_video_gift(6, 7, 7, 55, "rose"),
        ]))
        .await;
    assert_eq!(status, 200, "{body}");
    let got: Vec<_> = body["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["code"].as_str(), o["coins"].as_u64()))
        .collect();
    assert_eq!(
        got,
        [
            (None, Some(1400)),
            (None, Some(1400)),
            (None, Some(1390)),
            (None, Some(1200)),
            (Some("UNKNOWN_GIFT"), None),
            (Some("SELF_GIFT"), None),
        ]
    );
    let last = s.engine.last_seq();
    // Both targets, or neither: the whole batch refused, nothing applied.
    for (gift, words) in [
        (
            json!({"type": "gift", "event_id": uuid(8), "sender": 41, "creator": 7,
                   "stream": 1, "video": 55, "gift": "rose", "count": 1}),
            "not both",
        ),
        (
            json!({"type": "gift", "event_id": uuid(8), "sender": 41, "creator": 7,
                   "gift": "rose", "count": 1}),
            "neither given",
        ),
    ] {
        let (status, body) = s
            .post_events(json!([json_video_gift(7, 41, 7, 55, "rose"), gift]))
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["code"], "INVALID_REQUEST", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("events[1]") && message.contains(words),
            "{message}"
        );
    }
    assert_eq!(s.engine.last_seq(), last, "nothing applied");
    // The binary protocol: variant 13.
    let client = Client::connect(s.tcp, INGEST).await.unwrap();
    let o = client
        .send(&[
            video_gift(9, 41, 8, 56, "rose", 5),
            video_gift(10, 42, 7, 55, "panda", 1),
        ])
        .await
        .unwrap();
    assert!(o.iter().all(Outcome::is_accepted), "{o:?}");
    let (status, video) = s.get("/v1/videos/55", Some(READ)).await;
    assert_eq!(status, 200, "{video}");
    assert_eq!(
        video,
        json!({"video": 55, "creator": 7, "coins_received": 215,
               "gifts": {"panda": 3, "rainbow_puke": 2}})
    );
    let (_, top) = s.get("/v1/videos/55/top-gifters?limit=5", Some(READ)).await;
    assert_eq!(
        top,
        json!({"entries": [{"user": 42, "coins": 205}, {"user": 41, "coins": 10}]})
    );
    let (status, _) = s.get("/v1/videos/55", None).await;
    assert_eq!(status, 401);
    let (status, _) = s.get("/v1/videos/x", Some(READ)).await;
    assert_eq!(status, 400);
    let (_, creator) = s.get("/v1/creators/7", Some(READ)).await;
    assert_eq!(creator["coins_received"], 215, "{creator}");
    let (_, empty) = s.get("/v1/videos/99", Some(READ)).await;
    assert_eq!(
        empty,
        json!({"video": 99, "creator": null, "coins_received": 0, "gifts": {}})
    );
    let (_, openapi) = s.get("/openapi.json", None).await;
    assert!(openapi["paths"]["/v1/videos/{id}"]["get"].is_object());
    assert!(openapi["paths"]["/v1/videos/{id}/top-gifters"]["get"].is_object());
    assert!(openapi["components"]["schemas"]["JsonGift"]["properties"]["video"].is_object());
    let (_, history) = s.get("/v1/users/42/transactions?limit=1", Some(READ)).await;
    assert_eq!(history["entries"][0]["type"], "video_gift", "{history}");

    // A burst of video gifts, then the read model's keys.
    let burst: Vec<Value> = (0..200u128)
        .map(|i| json_video_gift(100 + i, 41 + (i % 2) as u64, 7, 60 + (i % 4) as u64, "rose"))
        .collect();
    let (status, body) = s.post_events(Value::Array(burst)).await;
    assert_eq!(status, 200, "{body}");
    let mut conn = giftstream::persist::redis::connect(&redis.url())
        .await
        .unwrap();
    read_model_caught_up(&mut conn, s.engine.last_seq()).await;
    let hash: BTreeMap<String, String> = ::redis::cmd("HGETALL")
        .arg(format!("{PREFIX}video:61"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(hash["coins_received"], "100", "{hash:?}");
    assert_eq!(hash["creator"], "7", "{hash:?}");
    let board: Vec<(u64, f64)> = ::redis::cmd("ZREVRANGE")
        .arg(format!("{PREFIX}video:55:top-gifters"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(board, [(42, 205.0), (41, 10.0)]);
    let diffs = read_model::compare(&mut conn, &s.engine, Layout::SINGLE, false)
        .await
        .unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
    let totals = s.engine.audit().totals;
    assert_eq!(totals.videos, 6);
    s.stop().await.unwrap();

    // A restart replays the journal: the same video and a retry answered as before.
    let (s, _) = TestServer::on_redis(&redis.url(), |_| {}).await;
    s.serving().await;
    let (_, again) = s.get("/v1/videos/55", Some(READ)).await;
    assert_eq!(again, video);
    assert_eq!(s.engine.audit().totals, totals);
    let (_, body) = s
        .post_events(json!([json_video_gift(3, 41, 7, 55, "panda")]))
        .await;
    assert_eq!(body["outcomes"][0]["duplicate"], true, "{body}");
    let (_, body) = s
        .post_events(json!([json_video_gift(3, 41, 7, 56, "panda")]))
        .await;
    assert_eq!(body["outcomes"][0]["code"], "EVENT_ID_REUSED", "{body}");
    s.stop().await.unwrap();
}

/// `kill -9` during a burst of video and stream gifts: the restarted server holds every
/// acknowledged gift once (its video's totals and top gifters equal a count of the
/// acknowledged ones), and `giftstream audit` is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn video_gifts_survive_kill_9_and_the_audit_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("giftstream.toml");
    let data = dir.path().join("data");
    std::fs::write(&config, SHIPPED_CONFIG).unwrap();
    let redis = RedisServer::start();
    let server = ServeProcess::start(&config, &redis.url(), &data);
    let http = reqwest::Client::new();
    let post = |addr: String, events: Value| {
        let http = http.clone();
        async move {
            let r = http
                .post(format!("http://{addr}/v1/events"))
                .bearer_auth(INGEST)
                .json(&json!({ "events": events }))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.json::<Value>().await.unwrap()["outcomes"].clone()
        }
    };
    let funding: Vec<Value> = (1..=4u64)
        .map(|u| {
            json!({"type": "recharge", "event_id": uuid(u128::from(u)), "user": u,
                   "coins": 1400, "price": "17.99", "currency": "USD", "package": "coins_1400"})
        })
        .collect();
    post(server.http.clone(), Value::Array(funding)).await;
    // Acknowledged gifts (durable acks): 40 batches of 10, on video 70 and stream 71.
    let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
    for b in 0..40u128 {
        let events: Vec<Value> = (0..10u128)
            .map(|i| {
                let (n, user) = (1_000 + b * 10 + i, 1 + (i % 4) as u64);
                let mut g = json_video_gift(n, user, 9, 70, "rose");
                if i % 3 == 0 {
                    g.as_object_mut().unwrap().remove("video");
                    g["stream"] = json!(71);
                }
                g
            })
            .collect();
        let outcomes = post(server.http.clone(), Value::Array(events.clone())).await;
        for (e, o) in events.iter().zip(outcomes.as_array().unwrap()) {
            if o["status"] == "accepted" && e.get("video").is_some() {
                *acked.entry(e["sender"].as_u64().unwrap()).or_default() += 2;
            }
        }
    }
    server.kill9();
    let server = ServeProcess::start(&config, &redis.url(), &data);
    let video = server.read(&http, "/v1/videos/70").await;
    assert_eq!(
        video["coins_received"].as_u64().unwrap(),
        acked.values().sum::<u64>(),
        "{video}"
    );
    let top = server
        .read(&http, "/v1/videos/70/top-gifters?limit=10")
        .await;
    let mut want: Vec<(u64, u64)> = acked.iter().map(|(&u, &c)| (u, c)).collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let got: Vec<(u64, u64)> = top["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["user"].as_u64().unwrap(), e["coins"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want);
    let stream = server.read(&http, "/v1/streams/70").await;
    assert_eq!(stream["coins_received"], 0, "{stream}");
    server.stop();
    let (ok, out) = run_cli(
        &["audit"],
        &[
            ("GIFTSTREAM_CONFIG", config.to_str().unwrap()),
            ("GIFTSTREAM_REDIS_URL", redis.url().as_str()),
            ("GIFTSTREAM_DATA_DIR", data.to_str().unwrap()),
        ],
    );
    assert!(ok, "{out}");
    let videos = format!("by videos {} (1 videos)", acked.values().sum::<u64>());
    assert!(out.contains(&videos), "{out}");
    assert!(
        !out.contains("read model: at seq") || out.contains(", 0 differences"),
        "{out}"
    );
}
