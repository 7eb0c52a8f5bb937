//! Map-reduce as a durable workflow: a data set of N text chunks generated from a seed, a
//! map step that counts the words of each chunk (at most `--concurrency` chunks at once), and
//! a reduce step that merges the counts into the 10 most frequent words. It runs in this
//! process on the embedded SQLite store, with a progress bar fed by the run's snapshot, then
//! prints the result (checked against a direct count) and the throughput. Kill it and start
//! it again: the run resumes from its journal, and chunks already counted are not counted
//! again.
//!
//! ```text
//! cargo run --example workflow_mapreduce -- --items 2000
//! cargo run --release --example workflow_mapreduce -- --items 20000 --concurrency 256
//! cargo run --example workflow_mapreduce -- --database-url postgres://postgres@127.0.0.1/wrangle
//! ```

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use wrangle::workflow::{RunStatus, Step, Workflow};
use wrangle::{handler_fn, Coordinator, CoordinatorConfig, StoreConfig, TaskError, WorkerConfig};

/// Map-reduce as a durable workflow: counts the words of generated text chunks.
#[derive(Debug, clap::Parser)]
#[command(name = "workflow_mapreduce")]
struct Args {
    /// Text chunks in the data set.
    #[arg(long, default_value_t = 2_000, value_name = "N")]
    items: u64,
    /// Words per chunk.
    #[arg(long, default_value_t = 500, value_name = "N")]
    words: u32,
    /// Chunks counted at once.
    #[arg(long, default_value_t = 32, value_name = "N")]
    concurrency: u32,
    /// The data set's seed.
    #[arg(long, default_value_t = 42, value_name = "N")]
    seed: u64,
    /// The store.
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://workflow_mapreduce.db",
        value_name = "URL"
    )]
    url: String,
}

/// The words the chunks are made of; the first ones are the most frequent (Zipf-like).
const VOCABULARY: [&str; 48] = [
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be",
    "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which", "but", "have",
    "an", "had", "they", "you", "were", "their", "one", "all", "we", "can", "her", "has", "there",
    "been", "if", "more", "when", "will", "would", "who", "so",
];

/// Most chunks: the reduce step receives every chunk's counts (about 150 bytes each) in one
/// task, whose payload must stay under the queue's limit (16 MiB less a margin).
const MAX_ITEMS: usize = 50_000;

/// One item of the map: which chunk of which data set.
#[derive(Serialize, Deserialize)]
struct Chunk {
    seed: u64,
    index: u64,
    words: u32,
}

/// The chunk's text, the same for the same seed and index.
fn text(chunk: &Chunk) -> String {
    let mut rng = fastrand::Rng::with_seed(chunk.seed.wrapping_mul(1_000_003) ^ chunk.index);
    // Zipf-like: rank r drawn with weight 1 / (r + 1), by inverting the cumulative weights.
    let weights: Vec<f64> = (0..VOCABULARY.len())
        .map(|r| 1.0 / (r + 1) as f64)
        .collect();
    let total: f64 = weights.iter().sum();
    let mut out = String::new();
    for _ in 0..chunk.words {
        let mut x = rng.f64() * total;
        let word = weights
            .iter()
            .position(|w| {
                x -= w;
                x < 0.0
            })
            .unwrap_or(VOCABULARY.len() - 1);
        out.push_str(VOCABULARY[word]);
        out.push(' ');
    }
    out
}

/// The map: counts of each vocabulary word in the chunk's text, by vocabulary position.
fn count_words(chunk: &Chunk) -> Vec<u32> {
    let mut counts = vec![0u32; VOCABULARY.len()];
    for word in text(chunk).split_whitespace() {
        if let Some(i) = VOCABULARY.iter().position(|v| *v == word) {
            counts[i] += 1;
        }
    }
    counts
}

/// The reduce: every chunk's counts merged, and the 10 most frequent words.
fn top_words(counts: &[Vec<u32>]) -> Value {
    let mut total = vec![0u64; VOCABULARY.len()];
    for c in counts {
        for (t, n) in total.iter_mut().zip(c) {
            *t += u64::from(*n);
        }
    }
    let mut ranked: Vec<(&str, u64)> = VOCABULARY.iter().copied().zip(total.clone()).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(10);
    json!({ "words": total.iter().sum::<u64>(), "top": ranked })
}

fn mapreduce(concurrency: u32) -> Workflow {
    Workflow::new("word-count")
        .description("count words per chunk, merge the counts, keep the top 10")
        .step(
            Step::map("count", "chunks", "count_words")
                .concurrency(concurrency)
                .reduce("top_words")
                .output_key("result"),
        )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let Args {
        items,
        words,
        concurrency,
        seed,
        url,
    } = wrangle::settings::cli::parse();
    if items == 0 || items > MAX_ITEMS as u64 {
        return Err(format!("--items: expected 1 to {MAX_ITEMS}, got {items}").into());
    }
    let concurrency = Some(concurrency)
        .filter(|c| (1..=wrangle::workflow::MAX_CONCURRENCY).contains(c))
        .ok_or(format!(
            "--concurrency: expected 1 to {}",
            wrangle::workflow::MAX_CONCURRENCY
        ))?;

    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let coordinator = Coordinator::builder()
        .config(CoordinatorConfig {
            min_workers: workers,
            max_workers: workers,
            auto_scale: false,
            worker: WorkerConfig {
                max_concurrent_tasks: 64,
                ..WorkerConfig::default()
            },
            store: Some(StoreConfig::new(&url)),
            ..CoordinatorConfig::default()
        })
        .handler(
            "count_words",
            handler_fn(|_ctx, chunk: Chunk| async move { Ok::<_, TaskError>(count_words(&chunk)) }),
        )
        .handler(
            "top_words",
            handler_fn(|_ctx, counts: Vec<Vec<u32>>| async move {
                Ok::<_, TaskError>(top_words(&counts))
            }),
        )
        // Registered before start, so a run left by a killed process resumes.
        .workflow(mapreduce(concurrency))
        .start()
        .await?;
    let flows = coordinator.workflows();

    // A run this store still has (the process was killed), else a new one.
    let run = match flows.list(Some(RunStatus::Running), 1).await?.first() {
        Some(run) => {
            println!("resuming run {} from its journal", run.id);
            run.id
        }
        None => {
            let chunks: Vec<Chunk> = (0..items)
                .map(|index| Chunk { seed, index, words })
                .collect();
            flows
                .start("word-count", json!({ "chunks": chunks }))
                .await?
        }
    };
    let snapshot = flows.status(run).await?;
    let chunks: Vec<Chunk> = serde_json::from_value(snapshot.state["chunks"].clone())?;
    let first_done = snapshot.steps_completed;

    // The map's items count one step each, the reduce one more.
    let bar = ProgressBar::new(chunks.len() as u64 + 1).with_style(
        ProgressStyle::with_template(
            "{bar:40.cyan/blue} {pos}/{len} steps  {rate}  eta {eta}  {msg}",
        )?
        .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{:.0}/s", s.per_sec());
        })
        .progress_chars("##-"),
    );
    let started = Instant::now();
    let done = loop {
        let s = flows.status(run).await?;
        bar.set_position(s.steps_completed);
        bar.set_message(format!("{} running", s.steps_running.len()));
        if !s.status.is_active() {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    bar.finish_with_message(done.status.to_string());
    let elapsed = started.elapsed();

    if done.status != RunStatus::Completed {
        coordinator.stop(false).await?;
        return Err(format!("run {run} ended {}: {:?}", done.status, done.error).into());
    }
    let result = &done.state["result"];
    println!(
        "\n{} chunks, {} words; top 10:",
        chunks.len(),
        result["words"]
    );
    for pair in result["top"].as_array().into_iter().flatten() {
        let (word, count) = (
            pair[0].as_str().unwrap_or("?"),
            pair[1].as_u64().unwrap_or(0),
        );
        println!("  {count:>9}  {word}");
    }
    // The same count without the workflow, to check the result.
    let direct: Vec<Vec<u32>> = chunks.iter().map(count_words).collect();
    let check = if top_words(&direct) == *result {
        "matches"
    } else {
        "DIFFERS FROM"
    };
    println!("the result {check} a direct count");
    // Chunks counted by this process (a resumed run had counted some before), the reduce
    // step left out.
    let counted = (done.steps_completed - 1).saturating_sub(first_done);
    let secs = elapsed.as_secs_f64();
    println!(
        "{counted} chunks counted and reduced in {secs:.2} s: {:.0} chunks/s, {:.0} words/s \
         (concurrency {concurrency}, {workers} workers)",
        counted as f64 / secs,
        counted as f64 * f64::from(chunks.first().map_or(0, |c| c.words)) / secs,
    );
    coordinator.stop(true).await?;
    if check != "matches" {
        return Err("the workflow's result differs from the direct count".into());
    }
    Ok(())
}
