//! The supervisor of a cluster's proxies: one-for-one restarts with a restart budget per
//! node. A proxy that keeps dying past its budget leaves its node unhealthy for good, with
//! the reason, rather than taking the other nodes down with it.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use super::proxy::{NodeProxy, ProxyArgs};
use super::state::NodeShared;
use crate::error::Error;
use crate::supervision::{ChildExit, OnExit, RestartBudget, Supervisor, Verdict};

/// The supervisor of a cluster's proxies: one-for-one restarts, a budget per node.
pub(crate) struct ComputeSupervisor;

pub(crate) enum SupMsg {
    /// Start the proxy of a new node.
    Start(Arc<NodeShared>, oneshot::Sender<Result<(), String>>),
    /// The node was removed: forget its restart record.
    Forget(String),
}

impl ractor::Message for SupMsg {}

pub(crate) struct SupState {
    budget: RestartBudget,
    by_actor: HashMap<ActorId, Arc<NodeShared>>,
    judges: HashMap<String, Supervisor>,
}

impl SupState {
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupMsg>,
        shared: Arc<NodeShared>,
    ) -> Result<(), String> {
        let args = ProxyArgs {
            shared: shared.clone(),
        };
        let (proxy, _) = Actor::spawn_linked(None, NodeProxy, args, myself.get_cell())
            .await
            .map_err(|e| Error::spawn("compute node proxy", e).to_string())?;
        *shared.proxy.write().expect("proxy") = Some(proxy.clone());
        self.by_actor.insert(proxy.get_id(), shared);
        Ok(())
    }
}

impl Actor for ComputeSupervisor {
    type Msg = SupMsg;
    type State = SupState;
    type Arguments = RestartBudget;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupMsg>,
        budget: RestartBudget,
    ) -> Result<SupState, ActorProcessingErr> {
        Ok(SupState {
            budget,
            by_actor: HashMap::new(),
            judges: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupMsg>,
        msg: SupMsg,
        state: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupMsg::Start(shared, reply) => {
                let id = shared.node.id().to_string();
                let budget = state.budget;
                state
                    .judges
                    .insert(id, Supervisor::new("compute node proxy", budget));
                let _ = reply.send(state.spawn(&myself, shared).await);
            }
            SupMsg::Forget(id) => {
                state.judges.remove(&id);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupMsg>,
        event: SupervisionEvent,
        state: &mut SupState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(exit) = ChildExit::of(event) else {
            return Ok(());
        };
        let Some(shared) = state.by_actor.remove(&exit.actor) else {
            return Ok(());
        };
        *shared.proxy.write().expect("proxy") = None;
        // Its requests were ended by its token (dropped with its state); new ones wait
        // for the next proxy's client.
        *shared.current.write().expect("current") = None;
        let id = shared.node.id().to_string();
        let Some(judge) = state.judges.get_mut(&id) else {
            return Ok(()); // removed
        };
        let on_exit = if exit.stopped_with(&["drained"]) {
            OnExit::Expected
        } else {
            OnExit::Restart
        };
        match judge.judge(&exit, on_exit) {
            Verdict::Stopped => {}
            Verdict::Restart => {
                shared
                    .restarts
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(node = %id, reason = %exit.reason, "compute node proxy restarted");
                if let Err(reason) = state.spawn(&myself, shared.clone()).await {
                    give_up(&shared, reason);
                }
            }
            Verdict::GiveUp(reason) => give_up(&shared, reason),
        }
        Ok(())
    }
}

/// A node whose proxy cannot be kept running: unhealthy for good, with the reason.
fn give_up(shared: &NodeShared, reason: String) {
    tracing::error!(node = shared.node.id(), %reason, "compute node proxy given up");
    shared.last_check.lock().expect("health").1 = Some(reason);
    shared
        .given_up
        .store(true, std::sync::atomic::Ordering::Relaxed);
    shared.tripped.notify_waiters();
}
