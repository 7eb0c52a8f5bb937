//! How many nodes a group wants: steps up (below `min_nodes`, or waiting work past the
//! threshold, a draining node undrained first), drains of idle nodes, and manual sizes.

use tokio::time::Instant;

use super::{Action, MemberState, Observed, Plan};

impl Plan {
    pub(super) fn scale_up(&mut self, now: Instant, out: &mut Vec<Action>) {
        let active = self.active();
        if active < self.cfg.min_nodes {
            if !self.backing_off(now) {
                out.extend(self.launch(self.cfg.min_nodes - active, now, "below min_nodes"));
            }
            return;
        }
        if self.waiting == 0 {
            return;
        }
        // A draining node takes work again before any node is launched.
        let draining = self
            .members
            .iter()
            .find(|(_, m)| m.state == MemberState::Draining)
            .map(|(n, _)| n.clone());
        if let Some(name) = draining {
            let m = self.members.get_mut(&name).expect("found");
            m.state = MemberState::Running;
            m.since = now;
            m.idle_since = None;
            let reason = format!("{} task(s) wait for this group", self.waiting);
            self.event("undrain", Some(&name), reason, 0);
            out.push(Action::Undrain { name });
            return;
        }
        let cooling = self
            .last_up
            .is_some_and(|t| now.saturating_duration_since(t) < self.cfg.scale_up_cooldown);
        if cooling || self.backing_off(now) {
            return;
        }
        let slots: u64 = self
            .members
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    MemberState::Launching | MemberState::Joining | MemberState::Running
                )
            })
            .map(|m| m.slots)
            .sum();
        if slots == 0 || self.waiting as f64 / slots as f64 > self.cfg.scale_up_threshold {
            let reason = format!(
                "{} task(s) wait for this group and its nodes have {slots} slot(s)",
                self.waiting
            );
            out.extend(self.launch(self.cfg.scale_up_step, now, &reason));
        }
    }

    pub(super) fn scale_down(&mut self, now: Instant, obs: &Observed, out: &mut Vec<Action>) {
        let cooled = |t: Option<Instant>| {
            t.is_none_or(|t| now.saturating_duration_since(t) >= self.cfg.scale_down_cooldown)
        };
        if self.waiting > 0 || !cooled(self.last_up) || !cooled(self.last_down) {
            return;
        }
        let spare = self.active().saturating_sub(self.cfg.min_nodes);
        let mut idle: Vec<(Instant, String)> = self
            .members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Running && m.offline_since.is_none())
            .filter_map(|(n, m)| Some((m.idle_since?, n.clone())))
            .filter(|(t, _)| now.saturating_duration_since(*t) >= self.cfg.idle_timeout)
            .collect();
        idle.sort();
        for (since, name) in idle.into_iter().take(spare) {
            let m = self.members.get_mut(&name).expect("listed");
            m.state = MemberState::Draining;
            m.since = now;
            m.drain_seen = false;
            self.last_down = Some(now);
            let busy = obs.nodes.get(&name).map_or(0, |v| v.in_flight);
            let reason = format!(
                "idle for {} ms (idle_timeout {} ms)",
                now.saturating_duration_since(since).as_millis(),
                self.cfg.idle_timeout.as_millis()
            );
            self.event("drain", Some(&name), reason, busy);
            out.push(Action::Drain { name });
        }
    }

    /// A manual size: launches, or drains the idlest nodes, to reach `target` active
    /// nodes. Refused outside `min_nodes..=max_nodes`.
    pub(crate) fn manual(&mut self, target: usize, now: Instant) -> Result<Vec<Action>, String> {
        if target < self.cfg.min_nodes || target > self.cfg.max_nodes {
            return Err(format!(
                "must be within min_nodes..=max_nodes ({}..={})",
                self.cfg.min_nodes, self.cfg.max_nodes
            ));
        }
        let active = self.active();
        if target > active {
            if self.members.len() + (target - active) > self.cfg.max_nodes {
                return Err(format!(
                    "{} node(s) are still draining or stopping; at most {} may exist",
                    self.members.len() - active,
                    self.cfg.max_nodes
                ));
            }
            return Ok(self.launch(target - active, now, "manual"));
        }
        let mut running: Vec<(bool, Option<Instant>, String)> = self
            .members
            .iter()
            .filter(|(_, m)| m.state == MemberState::Running)
            .map(|(n, m)| (m.idle_since.is_none(), m.idle_since, n.clone()))
            .collect();
        running.sort();
        let mut out = Vec::new();
        for (_, _, name) in running.into_iter().take(active - target) {
            let m = self.members.get_mut(&name).expect("listed");
            m.state = MemberState::Draining;
            m.since = now;
            m.drain_seen = false;
            self.event("drain", Some(&name), "manual".into(), 0);
            out.push(Action::Drain { name });
        }
        self.last_down = Some(now);
        Ok(out)
    }
}
