//! The 1,000,000-task figures: resident memory per queued task, the worst submit while the
//! task table grows to that size on a fresh queue, and one listing page of queued tasks
//! with that many in memory.

use std::time::{Duration, Instant};

use wrangle::prelude::*;
use wrangle::QueueConfig;

use super::{fixed, ms, report, run_noop, Res, CHUNK, MIB};

/// Tasks queued for the memory figure.
pub(crate) const QUEUED: usize = 1_000_000;
/// Tasks per submit while growing: small, so a stall of the table shows in one submit's time.
const GROW_BATCH: usize = 1_000;
/// Listing calls timed (each a page of 100 queued tasks).
const LIST_CALLS: usize = 20;

pub(crate) struct Memory {
    pub(crate) before: u64,
    pub(crate) after: u64,
    /// Time of each submit of [`GROW_BATCH`] tasks while growing, sorted.
    submits: Vec<Duration>,
    /// The slowest submits while growing, slowest first, with the tasks queued before each.
    slowest: Vec<(Duration, usize)>,
    /// Time of each `list(status = queued, limit = 100)` call, sorted.
    lists: Vec<Duration>,
}

impl Memory {
    pub(crate) fn per_task(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / QUEUED as f64
    }

    /// The slowest single submit while the table grew.
    pub(crate) fn worst_submit(&self) -> Duration {
        self.submits.last().copied().unwrap_or_default()
    }

    /// The median listing call.
    pub(crate) fn list_median(&self) -> Duration {
        self.lists
            .get(self.lists.len() / 2)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn print(&self) {
        println!(
            "memory with {QUEUED} tasks queued (small JSON payload each, no worker serves them)"
        );
        println!(
            "  RSS {:.1} MiB -> {:.1} MiB: {:.0} bytes per queued task",
            self.before as f64 / MIB,
            self.after as f64 / MIB,
            self.per_task()
        );
        let q = |v: &[Duration], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        println!(
            "  growing a fresh queue to {QUEUED}, one submit of {GROW_BATCH} tasks: \
             p50 {}, p99 {}, max {}",
            ms(q(&self.submits, 0.5)),
            ms(q(&self.submits, 0.99)),
            ms(self.worst_submit())
        );
        let slowest: Vec<String> = self
            .slowest
            .iter()
            .map(|(t, at)| format!("{} at {at}", ms(*t)))
            .collect();
        println!(
            "  slowest submits, with the tasks queued before each: {}",
            slowest.join(", ")
        );
        println!(
            "  list(status = queued, limit = 100) with {QUEUED} queued, {LIST_CALLS} calls: \
             p50 {}, max {}",
            ms(self.list_median()),
            ms(q(&self.lists, 1.0))
        );
    }
}

/// Queues [`QUEUED`] tasks of a type no worker serves (each with a small JSON payload, as
/// `TaskSpec::new` makes it) on a fresh queue, timing each submit, and measures how much the
/// resident set grew; then times listing pages of the queued tasks.
pub(crate) async fn queued_memory() -> Res<Memory> {
    let config = CoordinatorConfig {
        queue: QueueConfig {
            max_queue_size: QUEUED * 2,
            ..QueueConfig::default()
        },
        ..fixed(1)
    };
    let coordinator = Coordinator::builder()
        .config(config)
        .handler("echo", wrangle_actors::Echo)
        .start()
        .await?;
    run_noop(&coordinator, CHUNK).await?;
    let before = report::rss_bytes()?;
    let mut submits = Vec::with_capacity(QUEUED / GROW_BATCH);
    for start in (0..QUEUED).step_by(GROW_BATCH) {
        let specs = (start..(start + GROW_BATCH).min(QUEUED))
            .map(|i| TaskSpec::new("unserved", &i))
            .collect::<Result<Vec<_>, _>>()?;
        let t = Instant::now();
        coordinator.queue().submit_batch(specs).await?;
        submits.push(t.elapsed());
    }
    let mut slowest: Vec<(Duration, usize)> = submits
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, i * GROW_BATCH))
        .collect();
    slowest.sort_by_key(|s| std::cmp::Reverse(s.0));
    slowest.truncate(8);
    let stats = coordinator.queue().stats().await?;
    let after = report::rss_bytes()?;
    if stats.queued != QUEUED {
        return Err(format!(
            "expected {QUEUED} queued tasks, the queue holds {}",
            stats.queued
        )
        .into());
    }
    let mut lists = Vec::with_capacity(LIST_CALLS);
    for _ in 0..LIST_CALLS {
        let t = Instant::now();
        let page = coordinator
            .queue()
            .list(Some(TaskStatus::Queued), None, 100)
            .await?;
        lists.push(t.elapsed());
        if page.len() != 100 {
            return Err(format!("a listing page held {} tasks, not 100", page.len()).into());
        }
    }
    coordinator.stop(false).await?;
    submits.sort();
    lists.sort();
    Ok(Memory {
        before,
        after,
        submits,
        slowest,
        lists,
    })
}
