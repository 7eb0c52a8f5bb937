//! The dispatch latency at a fixed rate next to its floor measured in the same run: how long
//! a message from an OS thread takes to reach a bare ractor actor on the same runtime, paced
//! as the fine-paced dispatch run is. `bench_report latency [rate]` prints only these, so
//! two builds can be compared at one rate.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::{dispatch_latency, ms, per_s, Latency, Pacing, Res, LATENCY_RUN, STEADY_WARM_UP};

/// Runs the floor and both dispatch pacings at `rate` and prints them.
pub(crate) async fn report(rate: f64) -> Res<()> {
    let load = super::load_average();
    let floor = bare_latency(rate).await?;
    let smooth = dispatch_latency(rate, STEADY_WARM_UP, Pacing::Thread).await?;
    let bursts = dispatch_latency(rate, STEADY_WARM_UP, Pacing::Timer).await?;
    println!(
        "load average (1, 5, 15 min): {load} before, {} after",
        super::load_average()
    );
    println!("latency at {} tasks/s, 2 workers", per_s(rate));
    println!(
        "  {:<36}{:>10}{:>11}{:>11}{:>11}",
        "", "p50", "p99", "p99.9", "max"
    );
    for (name, l) in [
        ("floor: OS thread -> bare actor", &floor),
        ("dispatch, fine pacing", &smooth),
        ("dispatch, 1 ms bursts", &bursts),
    ] {
        println!(
            "  {:<36}{:>10}{:>11}{:>11}{:>11}",
            name,
            ms(l.percentile(0.50)),
            ms(l.percentile(0.99)),
            ms(l.percentile(0.999)),
            ms(l.percentile(1.0))
        );
    }
    Ok(())
}

/// One stamped message.
struct At(usize);

impl ractor::Message for At {}

/// Records, for each message, the time since its stamp.
struct Stamper;

struct Stamps {
    epoch: Instant,
    sent: Arc<Vec<AtomicU64>>,
    waited: Arc<Vec<AtomicU64>>,
    count: Arc<AtomicUsize>,
}

impl Actor for Stamper {
    type Msg = At;
    type State = Stamps;
    type Arguments = Stamps;

    async fn pre_start(&self, _: ActorRef<At>, s: Stamps) -> Result<Stamps, ActorProcessingErr> {
        Ok(s)
    }

    async fn handle(
        &self,
        _: ActorRef<At>,
        At(i): At,
        s: &mut Stamps,
    ) -> Result<(), ActorProcessingErr> {
        let now = s.epoch.elapsed().as_nanos() as u64;
        let sent = s.sent[i].load(Ordering::Acquire);
        s.waited[i].store(now.saturating_sub(sent), Ordering::Relaxed);
        s.count.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

/// Messages at `rate` per second for [`LATENCY_RUN`] from an OS thread sleeping ~50 us
/// between sends, to a bare actor: the time from each send to its handling.
async fn bare_latency(rate: f64) -> Res<Latency> {
    let total = (rate * LATENCY_RUN.as_secs_f64()) as usize;
    let epoch = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let waited: Arc<Vec<AtomicU64>> =
        Arc::new((0..total).map(|_| AtomicU64::new(u64::MAX)).collect());
    let count = Arc::new(AtomicUsize::new(0));
    let stamps = Stamps {
        epoch,
        sent: sent.clone(),
        waited: waited.clone(),
        count: count.clone(),
    };
    let (actor, handle) = Actor::spawn(None, Stamper, stamps).await?;
    let sender = actor.clone();
    let (elapsed, batches) = tokio::task::spawn_blocking(move || -> Res<(Duration, usize)> {
        let started = Instant::now();
        let (mut next, mut batches) = (0usize, 0usize);
        while next < total {
            let due = ((started.elapsed().as_secs_f64() * rate) as usize).min(total);
            if due > next {
                let now = epoch.elapsed().as_nanos() as u64;
                for i in next..due {
                    sent[i].store(now, Ordering::Release);
                    sender.cast(At(i))?;
                }
                batches += 1;
                next = due;
            }
            std::thread::sleep(Duration::from_micros(50));
        }
        Ok((started.elapsed(), batches))
    })
    .await??;
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::Acquire) < total {
        if Instant::now() > deadline {
            return Err("floor run: messages not all handled within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    actor.stop(None);
    handle.await?;
    let mut samples: Vec<Duration> = waited
        .iter()
        .map(|w| Duration::from_nanos(w.load(Ordering::Relaxed)))
        .collect();
    samples.sort_unstable();
    Ok(Latency {
        samples,
        achieved_rate: total as f64 / elapsed.as_secs_f64(),
        mean_batch: total as f64 / batches.max(1) as f64,
    })
}
