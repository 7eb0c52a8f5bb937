use std::time::Duration;

use crate::error::Error;

/// Settings of the task queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Most tasks waiting (queued or pending) at once; a submit that would pass it is refused
    /// whole. Default 1,000,000.
    pub max_queue_size: usize,
    /// Retries for tasks that set none. Default 3.
    pub default_retries: u32,
    /// Backoff before the first retry; doubles each retry, with jitter. Default 100 ms.
    pub retry_base_delay: Duration,
    /// Longest backoff. Default 30 s.
    pub retry_max_delay: Duration,
    /// Extra time past a task's timeout before its lease is taken back from a worker that
    /// never reported. Default 5 s.
    pub lease_grace: Duration,
    /// How long the lease of a task without a timeout lasts unless its worker extends it
    /// (wrangle's workers extend theirs every third of it while the handler runs). A worker
    /// or node that stays alive but never reports loses such a task after this long; a
    /// node's heartbeat never extends a lease. Default 60 s.
    pub lease_time: Duration,
    /// How many times a task may lose its worker (worker died, went silent) before it is
    /// dead-lettered instead of queued again; stops one poisonous task from killing workers
    /// forever. Default 5.
    pub max_lease_losses: u32,
    /// Finished tasks kept in memory for `get_task` and `wait_for`; the oldest go first.
    /// Default 100,000.
    pub max_finished_tasks: usize,
    /// Dead letters kept; the oldest go first, with a warning. Default 100,000.
    pub max_dead_letters: usize,
    /// Strict priority serves a higher priority first, always: under a steady stream of
    /// `High` tasks, `Low` ones wait for ever. With `Some(age)`, a task that has waited in
    /// the queue longer than `age` is served before younger tasks, oldest first, whatever
    /// their priority; within `age`, priority order holds. Default `None` (strict).
    pub priority_aging: Option<Duration>,
    /// Most payload bytes of unfinished tasks (waiting or running) held at once; a submit
    /// that would pass it is refused whole, like one past `max_queue_size`. Default 4 GiB.
    pub max_queue_bytes: u64,
    /// Most bytes (payload, result and error) of finished tasks kept in memory for
    /// `get_task` and `wait_for`, besides `max_finished_tasks`; the oldest go first (the
    /// store still has them). Default 512 MiB.
    pub max_finished_bytes: u64,
    /// Most bytes (payload and error) of dead letters kept in memory, besides
    /// `max_dead_letters`; the oldest go first, with a warning. Default 512 MiB.
    pub max_dead_letter_bytes: u64,
    /// Largest task payload, in bytes; a bigger one is refused at submit (with its whole
    /// batch). The default, 16 MiB less 64 KiB, lets every task cross to a node in one
    /// ractor_cluster frame (16 MiB) with room for the lease around it.
    pub max_payload_bytes: usize,
    /// How long a task with an `affinity_key` waits for the worker its key is bound to
    /// when that worker has no free slot, from the moment another worker could have taken
    /// it; then it goes to whichever worker is free (the binding stays). Zero: it never
    /// waits, and goes to the bound worker only when that one has a free slot at the time.
    /// Default 2 s: long enough to ride out a busy moment of the bound worker, short
    /// enough that a bound worker stuck on long tasks costs its keys little.
    pub affinity_wait: Duration,
    /// Most affinity keys bound at once; past it, the least recently used binding is
    /// dropped (its key's next task binds it again). Default 100,000.
    pub max_affinity_keys: usize,
    /// Load shedding: while more than this many tasks are queued (runnable now; tasks
    /// waiting out a delay or a retry backoff do not count), new `Low` tasks are refused
    /// with [`QueueError::Overloaded`](super::QueueError::Overloaded) (HTTP 503 with
    /// `Retry-After`); higher priorities still enter, up to `max_queue_size`. Tasks already
    /// accepted are never dropped, retries and workflow steps of runs already started are
    /// never refused, and a submit whose idempotency key matches a task is answered as
    /// usual. Default `None`: off, since the backlog your workers clear in acceptable time
    /// is yours to know (`max_queue_size` is a memory bound, not a latency target).
    pub shed_low_above: Option<usize>,
    /// The same for `Normal` tasks, at a mark at or above `shed_low_above` (`Low` ones are
    /// refused past it too). `High` and `Critical` tasks are never shed. Default `None`.
    pub shed_normal_above: Option<usize>,
    /// How long a client whose task was shed is told to wait before trying again
    /// (`Retry-After`). Default 5 s.
    pub shed_retry_after: Duration,
}

/// The longest `lease_time` (and `lease_grace`): 7 days.
const MAX_LEASE_TIME: Duration = Duration::from_secs(7 * 24 * 3600);

/// ractor_cluster's default cap on one inbound frame.
pub const CLUSTER_FRAME_BYTES: usize = 16 * 1024 * 1024;

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_queue_size: 1_000_000,
            default_retries: 3,
            retry_base_delay: Duration::from_millis(100),
            retry_max_delay: Duration::from_secs(30),
            lease_grace: Duration::from_secs(5),
            lease_time: Duration::from_secs(60),
            max_lease_losses: 5,
            max_finished_tasks: 100_000,
            max_dead_letters: 100_000,
            priority_aging: None,
            max_queue_bytes: 4 << 30,
            max_finished_bytes: 512 << 20,
            max_dead_letter_bytes: 512 << 20,
            max_payload_bytes: CLUSTER_FRAME_BYTES - 64 * 1024,
            affinity_wait: Duration::from_secs(2),
            max_affinity_keys: 100_000,
            shed_low_above: None,
            shed_normal_above: None,
            shed_retry_after: Duration::from_secs(5),
        }
    }
}

impl QueueConfig {
    /// Checks for values the queue cannot work with.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_queue_size == 0 {
            return Err(Error::invalid("max_queue_size", "must be at least 1"));
        }
        if self.max_payload_bytes == 0 || self.max_payload_bytes > CLUSTER_FRAME_BYTES - 1024 {
            return Err(Error::invalid(
                "max_payload_bytes",
                format!(
                    "must be between 1 and {} (a cluster frame less room for the lease)",
                    CLUSTER_FRAME_BYTES - 1024
                ),
            ));
        }
        if self.lease_time < Duration::from_millis(30) || self.lease_time > MAX_LEASE_TIME {
            return Err(Error::invalid(
                "lease_time",
                "must be between 30 ms (workers extend a lease every third of it) and 7 days",
            ));
        }
        if self.priority_aging.is_some_and(|a| a > MAX_LEASE_TIME * 52) {
            return Err(Error::invalid("priority_aging", "must be at most a year"));
        }
        if self.lease_grace > MAX_LEASE_TIME {
            return Err(Error::invalid("lease_grace", "must be at most 7 days"));
        }
        if self.max_affinity_keys == 0 {
            return Err(Error::invalid("max_affinity_keys", "must be at least 1"));
        }
        if self.affinity_wait > MAX_LEASE_TIME {
            return Err(Error::invalid("affinity_wait", "must be at most 7 days"));
        }
        for (field, mark) in [
            ("shed_low_above", self.shed_low_above),
            ("shed_normal_above", self.shed_normal_above),
        ] {
            if mark.is_some_and(|m| m >= self.max_queue_size) {
                return Err(Error::invalid(
                    field,
                    format!(
                        "must be below max_queue_size ({}), or it never sheds",
                        self.max_queue_size
                    ),
                ));
            }
        }
        if let (Some(low), Some(normal)) = (self.shed_low_above, self.shed_normal_above) {
            if normal < low {
                return Err(Error::invalid(
                    "shed_normal_above",
                    format!("must be at least shed_low_above ({low}): low work is shed first"),
                ));
            }
        }
        if self.shed_retry_after < Duration::from_secs(1)
            || self.shed_retry_after > Duration::from_secs(3600)
        {
            return Err(Error::invalid(
                "shed_retry_after",
                "must be between 1 s and 1 hour (Retry-After counts whole seconds)",
            ));
        }
        if self.retry_base_delay > self.retry_max_delay {
            return Err(Error::invalid(
                "retry_base_delay",
                "must not exceed retry_max_delay",
            ));
        }
        Ok(())
    }
}
