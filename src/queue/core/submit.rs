//! Submits: a batch is checked whole, then every task of it is accepted (but those load
//! shedding leaves out, when the submit allows it).

use super::shed::Admission;
use super::*;

/// What a submit the queue took answers.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The tasks accepted, in the batch's order: the task made, or the one an idempotency
    /// key matched.
    pub(crate) submitted: Vec<Submitted>,
    /// The specs load shedding left out (with `Admission::Each` only): their positions in
    /// the batch, and why.
    pub(crate) shed: Vec<(usize, QueueError)>,
}

impl QueueCore {
    /// Accepts every spec, or none: an invalid spec, a full queue or load shedding refuses
    /// the whole batch.
    #[cfg(test)]
    pub(crate) fn submit(
        &mut self,
        specs: Vec<TaskSpec>,
        now: Instant,
    ) -> Result<Vec<Submitted>, QueueError> {
        self.submit_known(specs, &HashMap::new(), now, Admission::Whole)
            .map(|a| a.submitted)
    }

    /// True when a task in memory holds this idempotency key.
    pub(crate) fn knows_key(&self, key: &str) -> bool {
        self.idempotency.contains_key(key)
    }

    /// [`submit`](Self::submit), where `known` maps idempotency keys memory does not hold,
    /// but the store does (for tasks no longer in memory), to their tasks, and `admission`
    /// says what load shedding does to the batch.
    pub(crate) fn submit_known(
        &mut self,
        mut specs: Vec<TaskSpec>,
        known: &HashMap<String, TaskId>,
        now: Instant,
        admission: Admission,
    ) -> Result<Admitted, QueueError> {
        self.clock = self.clock.max(now);
        for (index, spec) in specs.iter().enumerate() {
            spec.validate().map_err(|e| QueueError::InvalidTask {
                index,
                reason: e.to_string(),
            })?;
            let size = spec.payload().len();
            if size > self.config.max_payload_bytes {
                return Err(QueueError::InvalidTask {
                    index,
                    reason: format!(
                        "payload is {size} bytes, over the {}-byte limit (max_payload_bytes: \
                         a task must fit in one cluster frame)",
                        self.config.max_payload_bytes
                    ),
                });
            }
        }
        let shed = self.shed(&specs, known, admission);
        let shed = match (admission, shed.first()) {
            (_, None) => Vec::new(),
            (Admission::Each, Some(_)) => {
                let mut per_priority = [0usize; 4];
                for &i in &shed {
                    per_priority[specs[i].options.priority.index()] += 1;
                }
                let errors = shed
                    .iter()
                    .map(|&i| {
                        let p = specs[i].options.priority;
                        (i, self.overloaded(p, per_priority[p.index()]))
                    })
                    .collect();
                // `shed` is in batch order: one pass takes them out.
                let mut left_out = shed.iter().peekable();
                let mut at = 0;
                specs.retain(|_| {
                    let out = left_out.next_if_eq(&&at).is_some();
                    at += 1;
                    !out
                });
                errors
            }
            // The whole batch is refused for its tasks that are shed.
            (_, Some(&first)) => {
                return Err(self.overloaded(specs[first].options.priority, specs.len()));
            }
        };
        // New tasks this batch makes: a key already known, or repeated within the batch,
        // makes none.
        let mut keys = HashSet::new();
        let fresh = specs
            .iter()
            .filter(|s| match &s.options.idempotency_key {
                Some(k) => {
                    !self.idempotency.contains_key(k)
                        && !known.contains_key(k)
                        && keys.insert(k.as_str())
                }
                None => true,
            })
            .count();
        if self.waiting() + fresh > self.config.max_queue_size {
            return Err(QueueError::Full {
                capacity: self.config.max_queue_size,
                waiting: self.waiting(),
                refused: specs.len(),
            });
        }
        let bytes: u64 = specs.iter().map(|s| s.payload().len() as u64).sum();
        if self.live_bytes + bytes > self.config.max_queue_bytes {
            return Err(QueueError::FullBytes {
                capacity: self.config.max_queue_bytes,
                held: self.live_bytes,
                refused: bytes,
            });
        }
        let created_at = SystemTime::now();
        let mut out = Vec::with_capacity(specs.len());
        for spec in specs {
            if let Some(key) = &spec.options.idempotency_key {
                if let Some(&id) = self.idempotency.get(key).or_else(|| known.get(key)) {
                    out.push(Submitted { id, existing: true });
                    continue;
                }
            }
            let id = TaskId::new();
            if let Some(key) = &spec.options.idempotency_key {
                self.idempotency.insert(key.clone(), id);
            }
            let class = self.class_for(&spec.task_type, &spec.options.labels);
            let delay = spec.options.delay.filter(|d| !d.is_zero());
            self.live_bytes += spec.payload.len() as u64;
            self.out.event(|| EventKind::TaskSubmitted {
                id,
                task_type: spec.task_type.clone(),
                priority: spec.options.priority,
            });
            // Made in the status it starts in, so no status set is changed twice.
            let status = match delay {
                Some(_) => TaskStatus::Pending,
                None => TaskStatus::Queued,
            };
            let at = self.tasks.insert(
                id,
                Entry::new(id, class, spec.payload, spec.options, status, created_at),
            );
            match delay {
                Some(d) => self.make_pending(id, now + d),
                None => self.make_ready_at(id, at),
            }
            self.save_new(id);
            self.counters.submitted += 1;
            out.push(Submitted {
                id,
                existing: false,
            });
        }
        Ok(Admitted {
            submitted: out,
            shed,
        })
    }

    /// The class of a new task entry (the caller inserts the entry), made if needed.
    pub(super) fn class_for(&mut self, task_type: &Arc<str>, labels: &[String]) -> usize {
        // The last task's class, when this task has the same type and labels (labels as
        // the key keeps them: sorted and without repeats). A live class (one with tasks) is
        // the one its key names; a retired slot is not looked at.
        if let Some(i) = self.last_class {
            let class = &mut self.classes[i];
            if class.tasks > 0
                && *class.key.task_type == **task_type
                && *class.key.labels == *labels
            {
                class.tasks += 1;
                return i;
            }
        }
        let slot = self.class_for_key(task_type, labels);
        self.last_class = Some(slot);
        slot
    }

    fn class_for_key(&mut self, task_type: &Arc<str>, labels: &[String]) -> usize {
        let key = ClassKey::new(task_type.clone(), labels);
        if let Some(&i) = self.class_index.get(&key) {
            self.classes[i].tasks += 1;
            return i;
        }
        let mut class = Class::new(key.clone());
        class.routable = self.workers.values().any(|w| class.accepts(&w.caps));
        class.tasks = 1;
        let slot = match self.free_classes.pop() {
            Some(slot) => {
                self.classes[slot] = class;
                slot
            }
            None => {
                self.classes.push(class);
                self.classes.len() - 1
            }
        };
        self.class_index.insert(key, slot);
        slot
    }
}
