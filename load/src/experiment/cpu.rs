//! `giftload sweep cpu`: CPU per event, per process, closed loop per scenario — the CPU
//! time giftload (this process), giftstream and Redis each spent over the run (the
//! servers' from /proc, with their reaped children: snapshot writers, AOF rewrites),
//! divided by the events giftstream applied in it (`giftstream_events_total`, the
//! funding recharges included). Their sum bounds what the cores can carry.

use std::time::Instant;

use crate::experiment::{Lab, Loop, Table, own_cpu_seconds, spec_of};
use crate::harness::cpu_seconds;

pub fn cpu(lab: &Lab, scenarios: &[String]) -> anyhow::Result<()> {
    let redis = lab.redis(&[])?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let busy = format!("busy of {cores} cores");
    let header = [
        "scenario",
        "events/s",
        "giftload us/event",
        "giftstream us/event",
        "redis us/event",
        "total us/event",
        &busy,
    ];
    let mut t = Table::new("cpu", &header);
    let bar = lab.bar("cpu", scenarios.len());
    for scenario in scenarios {
        bar.set_message(scenario.clone());
        let s = lab.scenario(scenario, Loop::Closed, lab.seconds)?;
        let serve = lab.serve(&redis, None, lab.server_config(1, &[])?, "warn")?;
        let applied = || serve.metrics().sum("giftstream_events_total", "");
        let (l0, s0, r0, e0, t0) = (
            own_cpu_seconds(),
            cpu_seconds(serve.pid()),
            cpu_seconds(redis.pid()),
            applied(),
            Instant::now(),
        );
        let summary = lab.load(&s, &spec_of(&serve))?;
        let (l1, s1, r1, e1) = (
            own_cpu_seconds(),
            cpu_seconds(serve.pid()),
            cpu_seconds(redis.pid()),
            applied(),
        );
        let wall = t0.elapsed().as_secs_f64();
        drop(serve);
        let events = (e1 - e0).max(1.0);
        let us = [l1 - l0, s1 - s0, r1 - r0].map(|x| x / events * 1e6);
        let total: f64 = us.iter().sum();
        let share = ((l1 - l0) + (s1 - s0) + (r1 - r0)) / wall / cores as f64;
        let mut row = vec![scenario.clone(), format!("{:.0}", summary.achieved_rate)];
        row.extend(us.iter().map(|u| format!("{u:.3}")));
        row.extend([format!("{total:.3}"), format!("{:.0}%", share * 100.0)]);
        lab.say(&bar, format!("cpu: {}", row.join("\t")));
        t.row(row);
        t.save(&lab.out)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}
