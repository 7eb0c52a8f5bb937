//! One node group's state machine, as a pure function of what it observes each tick.
//!
//! Each node the group launched is a [`Member`] in one state:
//!
//! ```text
//! launching ──launched──▶ joining ──joined──▶ running ──idle past idle_timeout──▶ draining
//!     │ failed               │ join_timeout      │ lost past join_timeout          │ empty
//!     ▼                      ▼                   ▼                                 ▼
//!  (backoff)              stopping ◀─────────────┴──────────────────────────── stopping ──▶ gone
//! ```
//!
//! A draining node that still has work when `drain_timeout` passes goes back to running;
//! a node is only ever terminated once the gate reports nothing leased or running on it,
//! or it is offline (then the gate has already given its leases back to the queue), or it
//! never joined. Every count holds `members.len() <= max_nodes` after every call.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use super::{NodeGroupConfig, Resource};
use crate::scaling::ScalingEvent;

/// Longest wait after launch failures in a row.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Upper bounds of the drain-time histogram's buckets, in seconds: a drain lasts from a
/// tick or two (an idle node) to `drain_timeout` (five minutes by default) and beyond, when
/// the node had to be drained again after an undrain.
pub(crate) const DRAIN_BUCKETS: [f64; 10] =
    [1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// Where a launched node stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// The launcher was asked to start it.
    Launching,
    /// Started by the provider, not joined yet.
    Joining,
    /// Joined (or lost for less than `join_timeout`).
    Running,
    /// Takes no new task; terminated once nothing is in flight on it.
    Draining,
    /// The launcher was asked to stop it.
    Stopping,
}

/// A node the group launched (or adopted).
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) state: MemberState,
    /// When it entered its state.
    pub(crate) since: Instant,
    /// The provider's id, once launched.
    pub(crate) resource: Option<String>,
    /// Since when nothing was leased or running on it (running nodes).
    pub(crate) idle_since: Option<Instant>,
    /// Since when the gate has not listed it online (running nodes).
    pub(crate) offline_since: Option<Instant>,
    /// Its slots: the group's `slots_per_node` until it joins, then what it reports.
    pub(crate) slots: u64,
    /// Draining: a tick has passed since the drain, so the gate's counts include every
    /// lease the queue handed out before it.
    pub(crate) drain_seen: bool,
    /// A launcher call about it is running.
    pub(crate) busy: bool,
    /// Stopping after a drain: when that drain began, to time it once it is terminated.
    pub(crate) drained_since: Option<Instant>,
}

impl Member {
    /// A member entering `state` now, with nothing else known yet.
    fn new(state: MemberState, now: Instant, resource: Option<String>, slots: u64) -> Self {
        Self {
            state,
            since: now,
            resource,
            idle_since: None,
            offline_since: None,
            slots,
            drain_seen: false,
            busy: state == MemberState::Launching,
            drained_since: None,
        }
    }
}

/// One node as the gate sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct NodeView {
    pub(crate) online: bool,
    /// Leases the gate delivered and the node has not reported, or tasks its pool says it
    /// runs, whichever is larger.
    pub(crate) in_flight: u64,
    /// Its slots, from its heartbeat.
    pub(crate) slots: u64,
    /// Messages waiting in its pool's and workers' mailboxes.
    pub(crate) mailbox: u64,
}

/// What one tick sees.
#[derive(Clone, Debug, Default)]
pub(crate) struct Observed {
    /// Queued tasks only this group can serve.
    pub(crate) queued: u64,
    /// The gate's nodes by name.
    pub(crate) nodes: HashMap<String, NodeView>,
    /// What the provider runs for this group; `None` when it could not be listed.
    pub(crate) resources: Option<Vec<Resource>>,
}

/// What the actor must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Start node `name`.
    Launch { name: String },
    /// Tell the gate to give node `name` no new task.
    Drain { name: String },
    /// Tell the gate to give node `name` tasks again.
    Undrain { name: String },
    /// Stop resource `resource` (running node `name`).
    Terminate { name: String, resource: String },
}

/// A group's plan: its members and its timers.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) cfg: NodeGroupConfig,
    pub(crate) members: BTreeMap<String, Member>,
    /// Labelled resources the plan does not know, by id: when they were first listed, and
    /// whether their termination was asked for.
    strangers: HashMap<String, (Instant, bool)>,
    last_up: Option<Instant>,
    last_down: Option<Instant>,
    /// Launch failures in a row.
    pub(crate) failures: u32,
    /// No launch before this (after failures).
    pub(crate) retry_at: Option<Instant>,
    /// The last error of a launch, for the status.
    pub(crate) last_error: Option<String>,
    /// The last tick's waiting work.
    pub(crate) waiting: u64,
    /// Counters for metrics.
    pub(crate) counts: Counts,
    /// Drains timed from their start to the node's termination: counts per bucket of
    /// [`DRAIN_BUCKETS`] (not cumulative; the last counts those above every bound).
    pub(crate) drain_buckets: [u64; DRAIN_BUCKETS.len() + 1],
    /// Events not yet taken by the actor.
    events: Vec<ScalingEvent>,
    /// Where new node names come from (random; fixed in tests).
    name: fn(&str) -> String,
}

/// What the group has done since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Counts {
    /// Nodes asked for.
    pub launches: u64,
    /// Launches that failed: the launcher's error, or a node that never joined (those are
    /// also counted in `never_joined`).
    pub launch_failures: u64,
    /// Launched nodes that never joined: not within `join_timeout`, or lost by the provider
    /// before they did.
    pub never_joined: u64,
    /// Nodes terminated (by the plan, for any reason).
    pub terminations: u64,
    /// Nodes the provider lost.
    pub lost: u64,
    /// Drains begun (idle nodes, and manual sizes down).
    pub drains: u64,
    /// Drains undone: work waited for the group, or the node still had work in flight at
    /// `drain_timeout`.
    pub undrains: u64,
    /// Drains that ended with the node terminated.
    pub drained: u64,
    /// Milliseconds from each of those drains' start to the node's termination, summed.
    pub drain_ms: u64,
}

impl Plan {
    pub(crate) fn new(cfg: NodeGroupConfig) -> Self {
        Self::with_names(cfg, super::node_name)
    }

    pub(crate) fn with_names(cfg: NodeGroupConfig, name: fn(&str) -> String) -> Self {
        Self {
            cfg,
            members: BTreeMap::new(),
            strangers: HashMap::new(),
            last_up: None,
            last_down: None,
            failures: 0,
            retry_at: None,
            last_error: None,
            waiting: 0,
            counts: Counts::default(),
            drain_buckets: [0; DRAIN_BUCKETS.len() + 1],
            events: Vec::new(),
            name,
        }
    }

    /// The events since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<ScalingEvent> {
        std::mem::take(&mut self.events)
    }

    fn event(&mut self, action: &str, node: Option<&str>, reason: String, in_flight: u64) {
        // Drains and undrains happen in several places (idle nodes, manual sizes, waiting
        // work, `drain_timeout`); each is one event, so they are counted here.
        match action {
            "drain" => self.counts.drains += 1,
            "undrain" => self.counts.undrains += 1,
            _ => {}
        }
        self.events.push(ScalingEvent {
            group: self.cfg.name.clone(),
            action: action.to_string(),
            node: node.map(str::to_string),
            reason,
            waiting: self.waiting,
            nodes: self.members.len(),
            in_flight,
            error: None,
            at: SystemTime::now(),
        });
    }

    /// Members that are or will be serving: launching, joining, running.
    pub(crate) fn active(&self) -> usize {
        self.members
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    MemberState::Launching | MemberState::Joining | MemberState::Running
                )
            })
            .count()
    }

    fn backing_off(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|t| now < t)
    }

    fn failed(&mut self, now: Instant) {
        self.failures += 1;
        self.counts.launch_failures += 1;
        let wait = self
            .cfg
            .launch_backoff
            .saturating_mul(1 << (self.failures - 1).min(16))
            .min(MAX_BACKOFF);
        self.retry_at = Some(now + wait);
    }

    /// A drain that began at `since` ended with its node terminated at `now`.
    fn drain_done(&mut self, since: Instant, now: Instant) {
        let took = now.saturating_duration_since(since);
        let secs = took.as_secs_f64();
        let i = DRAIN_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(DRAIN_BUCKETS.len());
        self.drain_buckets[i] += 1;
        self.counts.drained += 1;
        self.counts.drain_ms += took.as_millis() as u64;
    }

    fn stop(&mut self, name: &str, now: Instant, reason: String, in_flight: u64) -> Option<Action> {
        let m = self.members.get_mut(name)?;
        if m.state == MemberState::Draining {
            // A draining member's `since` is when its drain began.
            m.drained_since = Some(m.since);
        }
        m.state = MemberState::Stopping;
        m.since = now;
        let resource = m.resource.clone()?;
        m.busy = true;
        self.counts.terminations += 1;
        self.event("terminate", Some(name), reason, in_flight);
        Some(Action::Terminate {
            name: name.to_string(),
            resource,
        })
    }

    /// Launches `n` nodes (within `max_nodes`), for `reason`.
    fn launch(&mut self, n: usize, now: Instant, reason: &str) -> Vec<Action> {
        let room = self.cfg.max_nodes.saturating_sub(self.members.len());
        let mut out = Vec::new();
        for _ in 0..n.min(room) {
            let name = (self.name)(&self.cfg.name);
            self.members.insert(
                name.clone(),
                Member::new(MemberState::Launching, now, None, self.cfg.slots_per_node),
            );
            self.counts.launches += 1;
            self.event("launch", Some(&name), reason.to_string(), 0);
            out.push(Action::Launch { name });
        }
        if !out.is_empty() {
            self.last_up = Some(now);
        }
        out
    }

    /// The launcher answered a launch.
    pub(crate) fn launched(&mut self, name: &str, result: Result<String, String>, now: Instant) {
        let Some(m) = self.members.get_mut(name) else {
            return;
        };
        m.busy = false;
        match result {
            Ok(resource) => {
                m.resource = Some(resource.clone());
                m.state = MemberState::Joining;
                m.since = now;
                self.event("launched", Some(name), format!("resource {resource}"), 0);
            }
            Err(e) => {
                self.members.remove(name);
                self.failed(now);
                self.last_error = Some(e.clone());
                let wait = self.retry_at.map_or(0, |t| (t - now).as_millis());
                self.event(
                    "launch_failed",
                    Some(name),
                    format!(
                        "{} failure(s) in a row; next launch in {wait} ms",
                        self.failures
                    ),
                    0,
                );
                if let Some(e_) = self.events.last_mut() {
                    e_.error = Some(e);
                }
            }
        }
    }

    /// The launcher answered a termination (of a member, or of a stranger by its id).
    pub(crate) fn terminated(
        &mut self,
        name: &str,
        resource: &str,
        result: Result<(), String>,
        now: Instant,
    ) {
        let Some(m) = self.members.get_mut(name) else {
            if let Some((_, stopping)) = self.strangers.get_mut(resource) {
                *stopping = false;
                let (action, error) = match result {
                    Ok(()) => ("terminated", None),
                    Err(e) => ("terminate_failed", Some(e)),
                };
                self.event(action, Some(name), format!("resource {resource}"), 0);
                if let Some(ev) = self.events.last_mut() {
                    ev.error = error;
                }
            }
            return;
        };
        m.busy = false;
        match result {
            Ok(()) => {
                if let Some(since) = self.members.remove(name).and_then(|m| m.drained_since) {
                    self.drain_done(since, now);
                }
                self.event("terminated", Some(name), "stopped".into(), 0);
            }
            Err(e) => {
                // Tried again once `launch_backoff` has passed (`since` is now).
                m.since = now;
                self.event("terminate_failed", Some(name), "will try again".into(), 0);
                if let Some(ev) = self.events.last_mut() {
                    ev.error = Some(e);
                }
            }
        }
    }

    /// One tick: the actions to carry out now.
    pub(crate) fn tick(&mut self, now: Instant, obs: &Observed) -> Vec<Action> {
        let mailbox: u64 = self
            .members
            .keys()
            .filter_map(|n| obs.nodes.get(n))
            .filter(|v| v.online)
            .map(|v| v.mailbox)
            .sum();
        self.waiting = obs.queued + mailbox;
        let mut out = Vec::new();
        if let Some(resources) = &obs.resources {
            self.reconcile(now, obs, resources, &mut out);
        }
        self.advance(now, obs, &mut out);
        self.scale_up(now, &mut out);
        self.scale_down(now, obs, &mut out);
        out
    }

    /// Forgets members the provider no longer runs; adopts or stops labelled strangers.
    fn reconcile(
        &mut self,
        now: Instant,
        obs: &Observed,
        resources: &[Resource],
        out: &mut Vec<Action>,
    ) {
        let listed: HashMap<&str, &Resource> =
            resources.iter().map(|r| (r.node.as_str(), r)).collect();
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(name, m)| {
                !m.busy && m.resource.is_some() && !listed.contains_key(name.as_str())
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            let m = self.members.remove(&name).expect("listed above");
            if m.state == MemberState::Stopping {
                if let Some(since) = m.drained_since {
                    self.drain_done(since, now);
                }
                self.event(
                    "terminated",
                    Some(&name),
                    "the provider no longer runs it".into(),
                    0,
                );
                continue;
            }
            if m.state == MemberState::Joining {
                self.failed(now);
                self.counts.never_joined += 1;
            }
            self.counts.lost += 1;
            self.event(
                "lost",
                Some(&name),
                format!("the provider no longer runs it (it was {:?})", m.state).to_lowercase(),
                0,
            );
        }
        for r in resources {
            if self.members.contains_key(&r.node) {
                continue;
            }
            let view = obs.nodes.get(&r.node).copied().unwrap_or_default();
            if view.online && self.members.len() < self.cfg.max_nodes {
                self.strangers.remove(&r.id);
                self.members.insert(
                    r.node.clone(),
                    Member::new(
                        MemberState::Running,
                        now,
                        Some(r.id.clone()),
                        view.slots.max(1),
                    ),
                );
                self.event(
                    "adopted",
                    Some(&r.node),
                    format!(
                        "resource {} carries this group's label and its node is online",
                        r.id
                    ),
                    view.in_flight,
                );
                continue;
            }
            let (first, stopping) = self.strangers.entry(r.id.clone()).or_insert((now, false));
            if !view.online
                && !*stopping
                && now.saturating_duration_since(*first) >= self.cfg.join_timeout
            {
                // Not a member: it does not count toward the group's bounds. Asked once;
                // asked again only if it is still listed after the answer.
                *stopping = true;
                self.counts.terminations += 1;
                let reason = format!(
                    "resource {} carries this group's label but is unknown and offline past join_timeout",
                    r.id
                );
                self.event("terminate", Some(&r.node), reason, 0);
                out.push(Action::Terminate {
                    name: r.node.clone(),
                    resource: r.id.clone(),
                });
            }
        }
        self.strangers
            .retain(|id, _| resources.iter().any(|r| &r.id == id));
    }

    /// Moves each member along its states.
    fn advance(&mut self, now: Instant, obs: &Observed, out: &mut Vec<Action>) {
        let names: Vec<String> = self.members.keys().cloned().collect();
        for name in names {
            let view = obs.nodes.get(&name).copied().unwrap_or_default();
            let busy = if view.online { view.in_flight } else { 0 };
            let cfg = &self.cfg;
            let m = self.members.get_mut(&name).expect("listed");
            let in_state = now.saturating_duration_since(m.since);
            match m.state {
                MemberState::Launching => {}
                MemberState::Joining if view.online => {
                    m.state = MemberState::Running;
                    m.since = now;
                    m.idle_since = (busy == 0).then_some(now);
                    m.slots = view.slots.max(1);
                    self.failures = 0;
                    self.retry_at = None;
                    let reason = format!("joined {} ms after it started", in_state.as_millis());
                    self.event("joined", Some(&name), reason, busy);
                }
                MemberState::Joining => {
                    if in_state >= cfg.join_timeout {
                        let error = format!(
                            "node {name} did not join within join_timeout ({} ms): is the join address reachable from it, and its cookie right? (see its log)",
                            cfg.join_timeout.as_millis()
                        );
                        self.failed(now);
                        self.counts.never_joined += 1;
                        self.last_error = Some(error);
                        let reason = "did not join within join_timeout".to_string();
                        out.extend(self.stop(&name, now, reason, 0));
                    }
                }
                MemberState::Running if !view.online => {
                    m.idle_since = None;
                    let since = *m.offline_since.get_or_insert(now);
                    if now.saturating_duration_since(since) >= cfg.join_timeout {
                        let reason = "offline and not back within join_timeout".to_string();
                        out.extend(self.stop(&name, now, reason, 0));
                    }
                }
                MemberState::Running => {
                    m.offline_since = None;
                    m.slots = view.slots.max(1);
                    if busy > 0 {
                        m.idle_since = None;
                    } else {
                        m.idle_since.get_or_insert(now);
                    }
                }
                MemberState::Draining if !m.drain_seen => m.drain_seen = true,
                MemberState::Draining if busy == 0 => {
                    let reason = if view.online {
                        "drained: nothing leased or running on it"
                    } else {
                        "drained and offline: the gate gave its leases back"
                    };
                    out.extend(self.stop(&name, now, reason.into(), 0));
                }
                MemberState::Draining => {
                    if in_state >= cfg.drain_timeout {
                        m.state = MemberState::Running;
                        m.since = now;
                        m.idle_since = None;
                        let reason =
                            format!("still had {busy} task(s) in flight after drain_timeout");
                        self.event("undrain", Some(&name), reason, busy);
                        out.push(Action::Undrain { name });
                    }
                }
                MemberState::Stopping => {
                    // A failed termination is tried again after `launch_backoff`.
                    if !m.busy && in_state >= cfg.launch_backoff {
                        let reason = "trying the termination again".to_string();
                        out.extend(self.stop(&name, now, reason, 0));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod counts_tests;
mod sizing;
#[cfg(test)]
mod tests;
