//! giftstream against the Redis-Lua baseline, each measured alone (`sweep headline`, and
//! `giftload compare`'s isolation): giftstream's run ends and its read model goes quiet
//! (or its server is stopped) before the baseline starts, and the baseline runs on a
//! fresh redis-server of its own, not on the Redis giftstream has just filled.

use std::time::{Duration, Instant};

use crate::experiment::{Lab, Loop, Table, spec_of};
use crate::harness::{Metrics, Redis, RedisOptions, http_get};
use crate::report::Summary;
use crate::target::{TargetKind, TargetSpec};

/// How long giftstream's read model gets to catch up before the baseline starts.
const QUIET_TIMEOUT: Duration = Duration::from_secs(120);

/// How the baseline was kept apart from giftstream, for the report.
pub const ISOLATED: &str = "isolated: giftstream's run ended and its server stopped (or its read model went quiet) before the baseline started; the baseline ran on a fresh redis-server of its own (AOF everysec)";
pub const SHARED: &str = "shared: the baseline ran on the Redis giftstream had just loaded, with giftstream's server still running";

/// Waits until the server at `http` has projected everything it journaled: its read
/// model's lag is 0 and its projected events stop growing over one second. Returns
/// whether it went quiet within [`QUIET_TIMEOUT`].
pub fn wait_read_model_quiet(http: &str) -> bool {
    let deadline = Instant::now() + QUIET_TIMEOUT;
    let projected = |m: &Metrics| m.sum("giftstream_read_model_events_total", "");
    let scrape = || Metrics(http_get(http, "/metrics").map_or_else(|_| String::new(), |(_, b)| b));
    let mut before = projected(&scrape());
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        let m = scrape();
        let now = projected(&m);
        if m.sum("giftstream_read_model_lag_seconds", "") == 0.0 && now == before {
            return true;
        }
        before = now;
    }
    false
}

/// A fresh redis-server for the baseline (AOF everysec, as the journal's).
pub fn baseline_redis(args: &[String]) -> anyhow::Result<Redis> {
    Redis::start(&RedisOptions {
        args: args.to_vec(),
        ..RedisOptions::default()
    })
}

/// The baseline's target on `redis`.
pub fn baseline_spec(redis_url: &str) -> TargetSpec {
    TargetSpec {
        kind: TargetKind::RedisLua,
        redis: redis_url.to_owned(),
        ..spec_of_nothing()
    }
}

fn spec_of_nothing() -> TargetSpec {
    TargetSpec {
        kind: TargetKind::Giftstream,
        tcp: String::new(),
        http: String::new(),
        redis: String::new(),
        token: "dev-ingest-token-0001".to_owned(),
        read_token: "dev-read-token-00001".to_owned(),
        tls_ca: None,
        cluster: None,
    }
}

/// One scenario of the headline: (giftstream, baseline).
fn compare_one(
    lab: &Lab,
    redis: &Redis,
    scenario: &str,
    shared: bool,
) -> anyhow::Result<(Summary, Summary)> {
    let s = lab.scenario(scenario, Loop::Closed, lab.seconds)?;
    let mut serve = lab.serve(redis, None, lab.server_config(1, &[])?, "warn")?;
    let g = lab.load(&s, &spec_of(&serve))?;
    if shared {
        let l = lab.load(&s, &baseline_spec(&redis.url()))?;
        return Ok((g, l));
    }
    serve.stop();
    let own = baseline_redis(&lab.redis_args)?;
    let l = lab.load(&s, &baseline_spec(&own.url()))?;
    Ok((g, l))
}

/// `sweep headline`: per scenario, giftstream and the baseline, closed loop, a fresh
/// server and an empty Redis each.
pub fn headline(lab: &Lab, scenarios: &[String], shared: bool) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let header = [
        "scenario",
        "giftstream events/s",
        "redis-lua events/s",
        "ratio",
    ];
    let mut t = Table::new("headline", &header);
    let bar = lab.bar("headline", scenarios.len());
    lab.say(
        &bar,
        format!("headline: {}", if shared { SHARED } else { ISOLATED }),
    );
    for scenario in scenarios {
        bar.set_message(scenario.clone());
        let (g, l) = compare_one(lab, &redis, scenario, shared)?;
        let ratio = g.achieved_rate / l.achieved_rate.max(1e-9);
        let row = vec![
            scenario.clone(),
            format!("{:.0}", g.achieved_rate),
            format!("{:.0}", l.achieved_rate),
            format!("{ratio:.2}"),
        ];
        lab.say(&bar, format!("headline: {}", row.join("\t")));
        t.row(row);
        t.save(&lab.out)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}
