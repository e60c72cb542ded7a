//! `--audit`: after the run, check through the target's own reads that every
//! acknowledged event was applied exactly once and that totals match what was sent:
//! each audited creator's coins received grew by exactly the accepted gifts the tool
//! sent it, and a sample of acknowledged events sent again comes back as duplicates of
//! the same outcome (nothing applied twice).

use std::collections::BTreeMap;

use giftstream::engine::Event;
use serde::Serialize;

use crate::scenario::Scenario;
use crate::target::{Conn, TargetKind, TargetSpec};
use crate::workload::Workload;

/// Creators whose totals are read before and after (the hot one included).
const CREATORS_AUDITED_MAX: u64 = 200;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AuditReport {
    pub creators_checked: u64,
    pub resent: u64,
    /// Every difference found; empty when clean.
    pub violations: Vec<String>,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }
}

pub struct Before {
    coins: BTreeMap<u64, u64>,
}

fn audited(scenario: &Scenario, workload: &Workload) -> Vec<u64> {
    let mut ids: Vec<u64> = (0..scenario.population.creators.min(CREATORS_AUDITED_MAX))
        .map(|i| workload.creator(i).0)
        .collect();
    if let Some(h) = &scenario.hot {
        ids.push(workload.creator(h.creator).0);
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

async fn coins_received(
    target: &TargetSpec,
    creators: &[u64],
) -> anyhow::Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    match target.kind {
        TargetKind::RedisLua => {
            let client = redis::Client::open(target.redis.as_str())?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            for &c in creators {
                let v: Option<u64> = redis::cmd("HGET")
                    .arg(format!("lua:creator:{c}"))
                    .arg("coins_received")
                    .query_async(&mut conn)
                    .await?;
                out.insert(c, v.unwrap_or(0));
            }
        }
        _ => {
            let http = target.http_client(std::time::Duration::from_secs(30))?;
            for &c in creators {
                let v: serde_json::Value = http
                    .get(format!("{}/v1/creators/{c}", target.http_base()))
                    .bearer_auth(&target.read_token)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                out.insert(c, v["coins_received"].as_u64().unwrap_or(0));
            }
        }
    }
    Ok(out)
}

pub async fn before(
    target: &TargetSpec,
    scenario: &Scenario,
    workload: &Workload,
) -> anyhow::Result<Before> {
    Ok(Before {
        coins: coins_received(target, &audited(scenario, workload)).await?,
    })
}

pub async fn after(
    target: &TargetSpec,
    _workload: &Workload,
    before: Before,
    sent: &BTreeMap<u64, u64>,
    sample: &[(Event, String)],
) -> anyhow::Result<AuditReport> {
    let creators: Vec<u64> = before.coins.keys().copied().collect();
    let now = coins_received(target, &creators).await?;
    let mut violations = Vec::new();
    for (c, was) in &before.coins {
        let want = was + sent.get(c).copied().unwrap_or(0);
        let got = now.get(c).copied().unwrap_or(0);
        if got != want {
            violations.push(format!(
                "creator {c}: coins received {got}, expected {was} + {} sent = {want}",
                sent.get(c).copied().unwrap_or(0)
            ));
        }
    }
    let conn = Conn::connect(target, &giftstream::economy::Economy::embedded()).await?;
    for chunk in sample.chunks(100) {
        let events: Vec<Event> = chunk.iter().map(|(e, _)| *e).collect();
        let labels = conn
            .submit(events)
            .await
            .await
            .map_err(|e| anyhow::anyhow!("audit resend: {} {}", e.kind, e.message))?;
        for ((e, original), again) in chunk.iter().zip(labels) {
            if again != format!("duplicate:{original}") {
                violations.push(format!(
                    "event {:032x}: first {original}, sent again {again} (want duplicate:{original})",
                    e.id().0
                ));
            }
        }
    }
    Ok(AuditReport {
        creators_checked: creators.len() as u64,
        resent: sample.len() as u64,
        violations,
    })
}
