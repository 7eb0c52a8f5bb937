//! Joining: a hello answered through the agent on a session authenticated under the name
//! it claims, a welcome with a fresh session key, and the join rate limit that keeps a
//! flapping node out for a while.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::ActorRef;

use super::nodes::{NodeEntry, NodeStatus};
use super::remote::find_agent;
use super::GateState;
use crate::cluster::net::session_of;
use crate::cluster::node::AgentMsg;
use crate::cluster::stats::ClusterCounters;
use crate::cluster::wire::{self, FromGate, Hello, NodeLoad, SessionKey};
use crate::events::EventKind;

impl GateState {
    pub(super) fn hello(&mut self, from: String, hello: Hello) {
        let now = Instant::now();
        let registered = self
            .nodes
            .get(&from)
            .filter(|n| n.status == NodeStatus::Online)
            .map(|n| n.agent.get_id());
        let Some(agent) = find_agent(&from, &self.args.sessions, registered) else {
            // Its process group has not reached this side yet (it says hello again
            // shortly), or no session was authenticated under that name.
            tracing::debug!(node = %from, "hello without an agent on a session of that name");
            return;
        };
        if from == *self.args.name {
            return self.send(
                &agent,
                FromGate::Refused {
                    reason: format!("node name `{from}` is the coordinator's own"),
                    retry_after_ms: 60_000,
                },
            );
        }
        let limit = self.args.max_joins_per_minute;
        let mut replaced = false;
        if let Some(n) = self.nodes.get_mut(&from) {
            let online = n.status == NodeStatus::Online;
            if online && n.agent.get_id() == agent.get_id() {
                // The session it is registered on: the same process saying hello again (it
                // missed the welcome). Another instance on that session is someone else's
                // hello under its name: the node keeps its registration either way.
                let (key, same) = (n.key, n.hello.instance == hello.instance);
                if !same {
                    return self.forged(&from, "a hello under the name of a registered node");
                }
                n.last_seen = now;
                return self.welcome(&agent, key);
            }
            if online && n.hello.instance == hello.instance {
                // The same process on a new session (it connected again before the old
                // one was seen to close): it moves there, with a new key.
                n.last_seen = now;
                n.agent = agent.clone();
                n.session = session_of(&agent.get_cell());
                n.key = wire::new_session_key();
                let key = n.key;
                tracing::info!(node = %from, session = ?n.session, "node moved to a new session");
                return self.welcome(&agent, key);
            }
            if let Err(wait) = admit(&mut n.joins, now, limit) {
                let joins = n.joins.len();
                tracing::warn!(node = %from, joins, "node flapping: join refused for now");
                return self.send(
                    &agent,
                    FromGate::Refused {
                        reason: format!(
                            "joined {joins} times in the last minute; try again in {} ms",
                            wait.as_millis()
                        ),
                        retry_after_ms: wait.as_millis() as u64,
                    },
                );
            }
            replaced = n.status == NodeStatus::Online;
        }
        if replaced {
            // Another process under the same name: the old one's work goes back.
            self.lose(&from, "a new process joined under its name");
        }
        // A drained node stays drained across re-joins: its launcher is about to stop it.
        let (joins, total_joins, bad_frames, draining) = match self.nodes.remove(&from) {
            Some(old) => (old.joins, old.total_joins, old.bad_frames, old.draining),
            None => (VecDeque::new(), 0, 0, false),
        };
        // What it says it serves counts at once; its workers' announcements follow.
        let task_types = hello
            .task_types
            .iter()
            .map(|t| Arc::from(t.as_str()))
            .collect();
        let mut entry = NodeEntry {
            hello,
            session: session_of(&agent.get_cell()),
            key: wire::new_session_key(),
            agent: agent.clone(),
            status: NodeStatus::Online,
            last_seen: now,
            workers: HashMap::new(),
            task_types,
            load: NodeLoad::default(),
            joins,
            total_joins: total_joins + 1,
            bad_frames,
            lost_reason: None,
            told_rejoin: false,
            up_to: 0,
            draining,
            backlog_share: 0,
        };
        entry.joins.push_back(now);
        tracing::info!(
            node = %from,
            labels = ?entry.hello.labels,
            task_types = ?entry.hello.task_types,
            address = %entry.hello.address,
            "node joined"
        );
        let labels = entry.hello.labels.clone();
        let key = entry.key;
        self.nodes.insert(from.clone(), entry);
        ClusterCounters::bump(&self.args.counters.joins);
        self.publish();
        self.record(&from, "active");
        self.args.events.publish(EventKind::NodeJoined {
            node: from.into(),
            labels,
        });
        self.welcome(&agent, key);
    }

    pub(super) fn welcome(&self, agent: &ActorRef<AgentMsg>, key: SessionKey) {
        self.send(
            agent,
            FromGate::Welcome {
                heartbeat_ms: self.args.heartbeat.as_millis() as u64,
                timeout_ms: self.args.timeout.as_millis() as u64,
                key,
            },
        );
    }
}

/// The window of the join rate limit.
const JOIN_WINDOW: Duration = Duration::from_secs(60);

/// Admits a join unless `limit` joins happened in the last minute; then says how long until
/// the oldest of them leaves the window. Admitted joins are recorded by the caller.
pub(super) fn admit(
    joins: &mut VecDeque<Instant>,
    now: Instant,
    limit: usize,
) -> Result<(), Duration> {
    while joins
        .front()
        .is_some_and(|t| now.duration_since(*t) > JOIN_WINDOW)
    {
        joins.pop_front();
    }
    match joins.front() {
        Some(oldest) if joins.len() >= limit => {
            Err(JOIN_WINDOW.saturating_sub(now.duration_since(*oldest)))
        }
        _ => Ok(()),
    }
}
