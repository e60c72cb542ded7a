//! Start-up recovery (SPEC §2.5): the newest valid snapshot, then the journal after it,
//! under the ledger lease. Builds the engine itself when there is no snapshot.

use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::economy::Economy;
use crate::engine::Engine;
use crate::persist::redis::{RedisJournal, connect_to};

/// How a start recovered.
#[derive(Debug, Clone)]
pub struct Recovered {
    pub snapshot: Option<std::path::PathBuf>,
    pub replayed_events: u64,
    pub seconds: f64,
}

/// Start-up recovery (SPEC §2.5): the newest valid snapshot in `config.snapshot.dir`
/// (a corrupt one is reported and the previous one used), then the journal after it.
/// The journal is read only once this process holds the ledger lease
/// ([`RedisJournal::acquire`]); the snapshot loads meanwhile, so waiting for a crashed
/// holder's lease to run out overlaps the longest part of a restart. A ledger keeps its
/// shard count: a snapshot loads with its own ([`crate::persist::snapshot::load_newest`]);
/// without one, the journal is replayed with the count recorded in Redis, if any; the
/// count the ledger then runs with is recorded. A ledger keeps its pinned `[engine]`
/// values too (`persist::redis::ledger` "Pinned engine limits"): a start with another
/// one is refused before it takes the lease; a first start pins them.
pub async fn recover(
    journal: &mut RedisJournal,
    config: &Config,
    economy: Economy,
) -> Result<(Arc<Engine>, Recovered), BoxError> {
    let started = std::time::Instant::now();
    let wanted = economy.to_file();
    let loading = {
        let (dir, engine_config, economy) = (
            config.snapshot.dir.clone(),
            config.engine.clone(),
            economy.clone(),
        );
        tokio::task::spawn_blocking(move || {
            crate::persist::snapshot::load_newest(&dir, &economy, &engine_config)
        })
    };
    let layout_recorded = check_before_lease(journal, config).await?;
    journal.acquire(config.redis.lease_ms).await?;
    let recorded = journal.recorded_shards().await?;
    let (engine, snapshot) = match loading.await?? {
        Some((path, engine)) => (Arc::new(engine), Some(path)),
        None => (
            build_engine(&with_recorded_shards(config, recorded), economy)?,
            None,
        ),
    };
    // Another node's snapshot is refused before the journal is replayed onto it.
    refuse_foreign(journal, &engine, config).await?;
    adopt_partition_map(&engine, config)?;
    // A ledger whose first recorded version follows events of a build before versions:
    // those replay under that version's terms, not this start's file.
    journal.assume_base_economy(&engine).await?;
    let replayed_events = journal.recover_into(&engine).await?;
    if !layout_recorded {
        // A ledger's first start with a recorded map (or its first start at all): its
        // journal was not yet checked against this map.
        refuse_foreign(journal, &engine, config).await?;
    }
    record_start(journal, &engine, recorded, layout_recorded).await?;
    journal.adopt_start_economy(&engine, wanted).await?;
    Ok((
        engine,
        Recovered {
            snapshot,
            replayed_events,
            seconds: started.elapsed().as_secs_f64(),
        },
    ))
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What refuses a start before it takes the lease: a cluster node with another
/// partition map than its ledger's, an `[engine]` value other than the ledger's pinned
/// one, a read-model bucket count that is not the recorded one. Returns whether the
/// ledger has a partition map recorded.
async fn check_before_lease(journal: &RedisJournal, config: &Config) -> Result<bool, BoxError> {
    let layout_recorded = journal.check_layout().await?;
    let pinned = journal.pinned_limits().await?;
    crate::persist::redis::check_pinned(&config.engine, &pinned, &journal.ledger().limits_key())?;
    if config.read_model.enabled {
        let url = config.read_model.redis_url(journal.url());
        let mut conn = connect_to(url, journal.cluster()).await?;
        crate::persist::read_model::Layout::of(&config.read_model)
            .verify(&mut conn)
            .await?;
    }
    Ok(layout_recorded)
}

/// Refuses (and gives the lease back) when `engine` holds state of partitions this node
/// does not own.
async fn refuse_foreign(
    journal: &RedisJournal,
    engine: &Engine,
    config: &Config,
) -> Result<(), BoxError> {
    if let Some(why) = journal.ledger().foreign_state(engine, &config.snapshot.dir) {
        journal.release().await;
        return Err(why.into());
    }
    Ok(())
}

/// Records the shard count the ledger runs with, the `[engine]` values it has not
/// pinned yet (all at its first start: before the start journals its economy version),
/// and a cluster node's partition map at its ledger's first start with one.
async fn record_start(
    journal: &RedisJournal,
    engine: &Engine,
    recorded: Option<usize>,
    layout_recorded: bool,
) -> Result<(), BoxError> {
    if recorded != Some(engine.config().shards) {
        journal.record_shards(engine.config().shards).await?;
    }
    // Read again under the lease: what was checked before it was read without.
    let pinned = journal.pinned_limits().await?;
    let key = journal.ledger().limits_key();
    if let Err(why) = crate::persist::redis::check_pinned(engine.config(), &pinned, &key) {
        journal.release().await;
        return Err(why.into());
    }
    let newly = journal
        .pin_limits(engine.config(), &pinned, engine.last_seq())
        .await?;
    if !newly.is_empty() {
        tracing::info!(
            key = journal.ledger().limits_key(),
            pinned = ?newly,
            seq = engine.last_seq(),
            "pinned this ledger's [engine] values that decide outcomes (fixed for the ledger's life)"
        );
    }
    if !layout_recorded {
        journal.record_layout().await?;
        tracing::info!(
            key = journal.ledger().map_key(),
            "recorded this ledger's partition map (fixed for the ledger's life)"
        );
    }
    Ok(())
}

/// `config` with the ledger's recorded shard count, if one is recorded (logged when it
/// differs from `engine.shards`).
pub fn with_recorded_shards(
    config: &crate::config::Config,
    recorded: Option<usize>,
) -> crate::config::Config {
    let mut config = config.clone();
    if let Some(shards) = recorded
        && shards != config.engine.shards
    {
        tracing::warn!(
            recorded = shards,
            configured = config.engine.shards,
            "engine.shards differs from the count this ledger runs with; the ledger keeps its {shards} shards (a shard count is fixed for a ledger's life)"
        );
        config.engine.shards = shards;
    }
    config
}

/// The engine `config` describes, empty. Recover it (e.g. `RedisJournal::recover_into`)
/// before serving it.
/// A cluster node's engine learns which creators this node owns (the ledger's partition
/// map, fixed for its life), before any replay: a gift to another node's creator is not
/// reversible here (`engine::refund`). Live, replay, the snapshot replica and `audit`
/// all call it, so they judge alike.
pub fn adopt_partition_map(engine: &Engine, config: &Config) -> Result<(), ConfigError> {
    if let Some(map) = crate::cluster::PartitionMap::from_config(&config.cluster)?
        && map.local().is_some()
    {
        // A payout's routing key is its creator: the creator's partition.
        engine.set_creator_owned(Box::new(move |creator| map.owns(creator.0)));
    }
    Ok(())
}

pub fn build_engine(config: &Config, economy: Economy) -> Result<Arc<Engine>, ConfigError> {
    config.validate()?;
    Ok(Arc::new(Engine::new(economy, config.engine.clone())?))
}
