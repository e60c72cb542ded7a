//! The subcommands behind the CLI: wiring of config, recovery, runtime and output.
//! Part of the binary (anyhow errors), not the library.

use crate::SnapshotCommand;

pub(crate) fn serve() -> anyhow::Result<()> {
    let config = giftstream::config::Config::load_from_env()?;
    giftstream::telemetry::init_tracing(
        &config.server.log_level,
        config.server.log_format == "json",
    );
    let economy = config.load_economy()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        runtime.worker_threads(config.server.worker_threads);
    }
    let runtime = runtime.enable_all().build()?;
    let mut config = config;
    runtime.block_on(async move {
        let (engine, journal) = giftstream::node::open(&mut config, economy).await?;
        let http = tokio::net::TcpListener::bind(config.server.http_addr).await?;
        let tcp = tokio::net::TcpListener::bind(config.server.tcp_addr).await?;
        giftstream::node::run(config, engine, journal, http, tcp, shutdown_signal()).await?;
        Ok(())
    })
}

/// `giftstream snapshot-replica`: the process `serve` starts for
/// `snapshot.method = "replica"` (`persist::replica`). Logs go to stderr; stdout carries
/// its reports to the server.
pub(crate) fn snapshot_replica() -> anyhow::Result<()> {
    use giftstream::persist::replica;
    // Before any other thread exists, so that every thread of the process is idle.
    replica::idle_priority();
    let (handoff, stop) = replica::read_handoff()?;
    let config = &handoff.config;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.server.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = if config.server.log_format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let journal = runtime
        .block_on(giftstream::persist::redis::RedisJournal::open(config))
        .map_err(|e| anyhow::anyhow!("snapshot replica: {e}"))?;
    let mut out = std::io::stdout().lock();
    match replica::follow(&handoff, &journal, &runtime, &stop, &mut out) {
        // The server is gone (its end of the pipe closed): as when stdin ends.
        Err(replica::ReplicaError::Report(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            Ok(())
        }
        result => result.map_err(|e| anyhow::anyhow!("snapshot replica: {e}")),
    }
}

pub(crate) fn snapshot(command: SnapshotCommand) -> anyhow::Result<()> {
    use giftstream::persist::snapshot;
    match command {
        SnapshotCommand::Inspect { file } => {
            let h = snapshot::read_header(&file)?;
            println!(
                "{}: version {}, shards {}, last seq {}, wallets {}, creators {}, streams {}, body {} bytes, crc32 {:08x}",
                file.display(),
                h.version,
                h.shards,
                h.last_seq,
                h.wallets,
                h.creators,
                h.streams,
                h.body_bytes,
                h.checksum
            );
        }
        SnapshotCommand::Verify { file } => {
            let (h, state) = snapshot::read(&file)?;
            let economy = match giftstream::config::Config::load_from_env() {
                Ok(c) => c.load_economy()?,
                Err(_) => giftstream::economy::Economy::embedded(),
            };
            let config = giftstream::engine::EngineConfig {
                shards: h.shards as usize,
                ..Default::default()
            };
            let engine = giftstream::engine::Engine::from_state(economy, config, state)?;
            let report = engine.audit();
            for v in &report.violations {
                println!("VIOLATION: {v}");
            }
            anyhow::ensure!(
                report.is_clean(),
                "{}: the audit of its state failed",
                file.display()
            );
            println!(
                "{}: ok (checksum, decoding, audit clean; last seq {}, {} wallets)",
                file.display(),
                h.last_seq,
                h.wallets
            );
        }
    }
    Ok(())
}

pub(crate) fn restore(file: &std::path::Path) -> anyhow::Result<()> {
    use giftstream::persist::snapshot;
    let config = giftstream::config::Config::load_from_env()?;
    let (header, state) = snapshot::read(file)?;
    if state.shards() != config.engine.shards {
        println!(
            "the snapshot has {} shards, engine.shards is {}: the ledger keeps {} (a shard count is fixed for a ledger's life)",
            state.shards(),
            config.engine.shards,
            state.shards()
        );
    }
    for (key, value) in state.pinned() {
        let configured = config.engine.pinned().into_iter().find(|(k, _)| k == key);
        if let Some((_, configured)) = configured.filter(|(_, v)| *v as u64 != *value) {
            println!(
                "{key}: the snapshot's {value}, the configuration says {configured}: the ledger keeps {value} \
                 (pinned for the ledger's life; set it in giftstream.toml [engine] before `serve`)"
            );
        }
    }
    let engine = giftstream::engine::Engine::from_state(
        config.load_economy()?,
        snapshot::with_ledger_values(&config.engine, &state, file),
        state,
    )?;
    let report = engine.audit();
    anyhow::ensure!(
        report.is_clean(),
        "the snapshot's state fails the audit: {:?}",
        report.violations
    );
    if let Some(why) = giftstream::persist::redis::Ledger::of(&config).foreign_state(&engine, file)
    {
        anyhow::bail!("{why}");
    }
    let newest = snapshot::list(&config.snapshot.dir)?
        .last()
        .map(|p| snapshot::read_header(p).map(|h| h.last_seq))
        .transpose()?
        .unwrap_or(0);
    anyhow::ensure!(
        header.last_seq >= newest,
        "{} already holds a newer snapshot (seq {newest} > {}); move it away first",
        config.snapshot.dir.display(),
        header.last_seq
    );
    if !config.redis.url.is_empty() {
        restore_redis(&config, &engine, header.last_seq)?;
    }
    // The loaded engine's state, not the file's: an older format's ids (kept in the
    // shards until format 3) are in the id index only once loaded.
    let (state, _) = engine.snapshot();
    let (path, _) = snapshot::write(&config.snapshot.dir, &state.view(), usize::MAX)?;
    println!(
        "restored: {} (last seq {}, {} wallets)",
        path.display(),
        header.last_seq,
        header.wallets
    );
    println!(
        "the next `giftstream serve` starts from it and replays the journal after seq {}",
        header.last_seq
    );
    Ok(())
}

/// The Redis side of a restore: the journal must continue right after the snapshot (or
/// be empty), and the read model is rebuilt from the snapshot's state.
fn restore_redis(
    config: &giftstream::config::Config,
    engine: &giftstream::engine::Engine,
    last_seq: u64,
) -> anyhow::Result<()> {
    use giftstream::persist::redis::RedisJournal;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut journal = RedisJournal::open(config)
            .await
            .map_err(|e| anyhow::anyhow!("GIFTSTREAM_REDIS_URL: {e}"))?;
        // Not under a running server: the restore holds the ledger while it works.
        journal.acquire(config.redis.lease_ms).await.map_err(|e| {
            anyhow::anyhow!("ledger lease (is a server running on this ledger? stop it first): {e}")
        })?;
        let restored = restore_redis_held(config, engine, last_seq, &journal).await;
        journal.release().await;
        restored
    })
}

async fn restore_redis_held(
    config: &giftstream::config::Config,
    engine: &giftstream::engine::Engine,
    last_seq: u64,
    journal: &giftstream::persist::redis::RedisJournal,
) -> anyhow::Result<()> {
    use giftstream::persist::read_model;
    {
        if !journal.check_layout().await? {
            journal.record_layout().await?;
        }
        // The ledger keeps the [engine] values its snapshot was kept with (format 11;
        // an older one's are the configured ones): another pinned in Redis is refused,
        // and an empty Redis pins the snapshot's, so `serve` keeps them (review H).
        let pinned = journal.pinned_limits().await?;
        giftstream::persist::redis::check_pinned(
            engine.config(),
            &pinned,
            &journal.ledger().limits_key(),
        )
        .map_err(|why| anyhow::anyhow!("{why}"))?;
        let newly = journal
            .pin_limits(engine.config(), &pinned, last_seq)
            .await?;
        if !newly.is_empty() {
            println!("pinned with the ledger (the snapshot's values): {newly:?}");
        }
        let top = journal.last_seq().await?;
        if top > last_seq {
            let first = journal.runs_from(last_seq + 1, 1).await?;
            let continues = first
                .first()
                .and_then(|run| run.first())
                .is_some_and(|e| e.seq <= last_seq + 1);
            anyhow::ensure!(
                continues,
                "the Redis journal (up to seq {top}) does not continue the snapshot (seq {last_seq}): \
                 events after the snapshot are missing from it. To start from the snapshot alone, \
                 delete the journal first: redis-cli DEL '{}'",
                journal.ledger().journal_key()
            );
            println!("journal: continues the snapshot up to seq {top}; serve replays it");
        } else {
            println!(
                "journal: holds nothing after the snapshot (top seq {top}); new commits follow seq {last_seq}"
            );
        }
        if config.read_model.enabled {
            let started = std::time::Instant::now();
            let view = engine.read_model_view(giftstream::engine::ViewParts {
                tops: config.engine.top_k,
                wallets: config.read_model.wallets,
                windows: true,
            });
            let mut conn = giftstream::persist::redis::connect_to(
                config.read_model.redis_url(&config.redis.url),
                config.redis.cluster,
            )
            .await?;
            let layout = read_model::Layout::of(&config.read_model);
            layout.check(&mut conn).await?;
            read_model::rebuild(
                &mut conn,
                (journal.ledger(), layout),
                &view,
                config.read_model.wallets,
            )
            .await?;
            println!(
                "read model: rebuilt at seq {last_seq} ({} creators, {} streams, {} top-gifter entries) in {:.2} s",
                view.creators.len(),
                view.streams.len(),
                view.creator_gifters.len() + view.stream_gifters.len(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

pub(crate) fn audit() -> anyhow::Result<()> {
    let config = giftstream::config::Config::load_from_env()?;
    giftstream::telemetry::init_tracing("warn", false);
    anyhow::ensure!(
        !config.redis.url.is_empty(),
        "GIFTSTREAM_REDIS_URL is not set: nothing durable to audit"
    );
    let economy = config.load_economy()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        use giftstream::persist::recovery::with_recorded_shards;
        use giftstream::persist::redis::RedisJournal;
        let journal = RedisJournal::open(&config)
            .await
            .map_err(|e| anyhow::anyhow!("GIFTSTREAM_REDIS_URL: {e}"))?;
        // The ledger is replayed as it ran: with the [engine] values pinned with it.
        let mut config = config;
        let pinned = journal.pinned_limits().await?;
        for (key, configured) in pinned.apply(&mut config.engine) {
            println!(
                "{key}: the ledger's pinned {} (the configuration says {configured}); replayed with the pinned value",
                pinned.get(key).unwrap_or(configured)
            );
        }
        let engine = match giftstream::persist::snapshot::load_newest(
            &config.snapshot.dir,
            &economy,
            &config.engine,
        )? {
            Some((path, engine)) => {
                println!(
                    "snapshot: {} (last seq {})",
                    path.display(),
                    engine.last_seq()
                );
                std::sync::Arc::new(engine)
            }
            None => {
                let recorded = journal.recorded_shards().await?;
                giftstream::persist::recovery::build_engine(&with_recorded_shards(&config, recorded), economy)?
            }
        };
        // Another node's snapshot: its journal would not replay onto it.
        if let Some(why) = journal.ledger().foreign_state(&engine, &config.snapshot.dir) {
            println!("VIOLATION: {why}");
            anyhow::bail!("audit: failed (the snapshot is not this node's)");
        }
        giftstream::persist::recovery::adopt_partition_map(&engine, &config)?;
        let started = std::time::Instant::now();
        let (replayed, duplicate_ids) = journal.audit_into(&engine).await?;
        let report = engine.audit();
        let t = &report.totals;
        println!(
            "journal: {replayed} events, last seq {}, replayed in {:.2} s",
            t.last_seq,
            started.elapsed().as_secs_f64()
        );
        println!(
            "wallets {}, creators {}, streams {}",
            t.wallets, t.creators, t.streams
        );
        println!(
            "coins recharged {} - reversed {} = in wallets {} - owed {} + spent on gifts {} + spent on purchases {}",
            t.coins_recharged,
            t.coins_reversed,
            t.coins_in_wallets,
            t.coins_owed,
            t.coins_spent - t.coins_refunded.min(t.coins_spent),
            t.coins_spent_on_purchases
        );
        println!(
            "users in debt {}, recharges still reversible {}",
            t.users_in_debt, t.recharge_records
        );
        if t.gift_reversals > 0 || t.gift_records > 0 {
            println!(
                "gift reversals {}: {} coins refunded (spent on gifts is net of them), {} billionths of a diamond taken back; {} gift records held, {} dropped early",
                t.gift_reversals,
                t.coins_refunded,
                t.diamonds_reversed_nanos,
                t.gift_records,
                t.gift_records_dropped
            );
        }
        let economy = engine.economy();
        for &(item, count, coins) in &t.purchases {
            let id = economy.items.get(item as usize).map_or("?", |i| i.id.as_str());
            println!("purchases {id} (code {item}): {count} bought, {coins} coins (platform revenue)");
        }
        println!(
            "coins received by creators {}, by streams {} + by videos {} ({} videos)",
            t.coins_received_by_creators,
            t.coins_received_by_streams,
            t.coins_received_by_videos,
            t.videos
        );
        println!(
            "diamonds credited {}, settled in from other nodes {}, paid {}, held {}, available {}",
            t.diamonds_credited,
            t.diamonds_settled_in,
            t.diamonds_paid,
            t.diamonds_held,
            t.diamonds_available
        );
        // Revenue is what was sold; a reversal's money is its own line (net = the two).
        for (currency, amount) in &t.revenue {
            let reversed = t
                .revenue_reversed
                .iter()
                .find(|(c, _)| c == currency)
                .map_or(rust_decimal::Decimal::ZERO, |(_, a)| *a);
            println!(
                "revenue {currency} {amount}, reversed {reversed}, net {}",
                amount - reversed
            );
        }
        for (id, sales) in &t.promotions {
            let money: Vec<String> = sales
                .revenue
                .iter()
                .map(|(c, a)| format!("{a} {c}"))
                .collect();
            println!(
                "promotion {id}: {} recharges, {} bonus coins, revenue {}",
                sales.recharges,
                sales.bonus_coins,
                money.join(", ")
            );
        }
        for (currency, amount) in &t.paid_out {
            println!("paid out {currency} {amount}");
        }
        println!("event ids journaled twice: {duplicate_ids}");
        let mut violations = report.violations.clone();
        if let Err(e) = journal.check_layout().await {
            violations.push(e.to_string());
        }
        if config.read_model.enabled {
            let layout = giftstream::persist::read_model::Layout::of(&config.read_model);
            let mut conn = giftstream::persist::redis::connect_to(
                config.read_model.redis_url(&config.redis.url),
                config.redis.cluster,
            )
            .await?;
            let projected =
                giftstream::persist::read_model::projected_seq_of(
                &mut conn,
                journal.ledger(),
                layout,
            )
            .await?;
            if journal.ledger().node.is_some() {
                println!(
                    "read model: this node's events at seq {projected}; it is shared by the cluster's nodes \
                     (totals are their sums), so it is not compared with one node's ledger"
                );
            } else if projected == engine.last_seq() {
                let diffs = giftstream::persist::read_model::compare(&mut conn, &engine, layout, config.read_model.wallets).await?;
                println!(
                    "read model: at seq {projected}, {} differences from the ledger",
                    diffs.len()
                );
                violations.extend(diffs.into_iter().map(|d| format!("read model: {d}")));
            } else {
                println!(
                    "read model: at seq {projected}, ledger at {}: not compared (it is catching up; audit a quiet system)",
                    engine.last_seq()
                );
            }
        }
        for v in &violations {
            println!("VIOLATION: {v}");
        }
        anyhow::ensure!(violations.is_empty() && duplicate_ids == 0, "audit failed");
        println!("audit: clean");
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM. The handlers are registered when this is called, not
/// when the future is first polled: a SIGTERM that arrives just after the server logged
/// "serving" still means a graceful stop, not the default action (killed).
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let (int, term) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let recv = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = recv(int) => tracing::info!("SIGINT received"),
                _ = recv(term) => tracing::info!("SIGTERM received"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received");
        }
    }
}

/// `giftstream config check`: loads what `serve` would — the config file, the
/// `GIFTSTREAM_*` overrides, the validation, the partition map, the TLS files and the
/// economy — and starts nothing. An error names the key that is wrong.
pub(crate) fn config_check(
    config_path: Option<&std::path::Path>,
    economy_path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use giftstream::config::Config;
    let path = match config_path {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os("GIFTSTREAM_CONFIG")
            .map_or_else(|| "config/giftstream.toml".into(), Into::into),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow::anyhow!(
            "invalid config: `--config`: cannot read {}: {e}",
            path.display()
        )
    })?;
    let mut config = Config::from_toml_str(&text)?;
    // The names `serve` reads, recorded as it asks for them: any other GIFTSTREAM_*
    // variable set here is likely a misspelt override, which `serve` would ignore.
    let read = std::cell::RefCell::new(vec!["GIFTSTREAM_CONFIG".to_owned()]);
    config.apply_env(|name| {
        read.borrow_mut().push(name.to_owned());
        std::env::var(name).ok()
    })?;
    if let Some(economy) = economy_path {
        config.server.economy = economy.display().to_string();
    }
    config.validate()?;
    let partitions = giftstream::cluster::PartitionMap::from_config(&config.cluster)?;
    giftstream::server::tls::acceptors(&config.tls, config.server.http2)?;
    let economy = config.load_economy()?;
    let file = economy.to_file();
    println!("config: {} ok", path.display());
    let read = read.into_inner();
    let (overrides, unknown): (Vec<String>, Vec<String>) = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with("GIFTSTREAM_"))
        .partition(|name| read.contains(name));
    if !overrides.is_empty() {
        // Names only: GIFTSTREAM_TOKENS holds secrets.
        println!("environment overrides: {}", overrides.join(", "));
    }
    for name in &unknown {
        println!("warning: {name} is set but `serve` does not read it (misspelt?)");
    }
    let economy_name = if config.server.economy.is_empty() {
        "embedded".to_owned()
    } else {
        config.server.economy.clone()
    };
    println!(
        "economy: {economy_name} ok ({} gifts, {} packages, {} items)",
        file.gifts.len(),
        file.packages.len(),
        file.items.len()
    );
    println!(
        "tls: {}; cluster: {}; redis: {}",
        if config.tls.enabled() { "on" } else { "off" },
        if partitions.is_some() {
            "a node"
        } else {
            "single node"
        },
        if config.redis.url.is_empty() {
            "none (in memory)"
        } else {
            "set (not connected)"
        }
    );
    println!("config check: ok");
    Ok(())
}
