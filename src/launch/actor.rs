//! The node groups' actor: each tick it reads the queue's backlog per routing class and the
//! gate's nodes, lets each group's plan decide, and carries the actions out. Launcher calls
//! run in tasks of their own and answer by message, so a slow provider never holds up a
//! tick; the plans live in [`NodeGroups`]' shared state, so an actor the coordinator starts
//! again after a failure takes them over as they were.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;

use super::observe::{queued_for, view};
use super::plan::{Action, NodeView, Observed, Plan};
use super::status::GroupStatus;
use super::{Launcher, NodeGroupConfig};
use crate::cluster::Cluster;
use crate::error::Error;
use crate::events::{EventBus, EventKind};
use crate::queue::QueueRef;
use crate::scaling::ScalingEvent;
use crate::store::Store;

/// Events kept for the API.
const EVENTS_KEPT: usize = 1_000;
/// Longest wait for a provider's list of resources.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// True when something outside the node groups (the coordinator's own pools, pulling
/// workers) serves a task type with these required labels.
pub(crate) type ServedElsewhere = Arc<dyn Fn(&str, &[String]) -> bool + Send + Sync>;

/// One group: its settings, launcher and plan.
struct Group {
    launcher: Arc<dyn Launcher>,
    plan: Plan,
}

/// What the actor and the handles share.
struct Shared {
    groups: Mutex<Vec<Group>>,
    history: Mutex<VecDeque<ScalingEvent>>,
    /// The last tick's view, for the API.
    status: RwLock<Vec<GroupStatus>>,
    cluster: Cluster,
    queue: QueueRef,
    /// Batches of events for the store's `scaling_events` table, written in order by one
    /// task (see [`journal`]).
    journal: Option<tokio::sync::mpsc::UnboundedSender<Vec<ScalingEvent>>>,
    events: EventBus,
    elsewhere: ServedElsewhere,
    interval: Duration,
    /// Where launched nodes join, and the cookie they present.
    join: String,
}

/// The node groups: their status, history and manual scaling. Started by the coordinator
/// when its config has node groups (see `CoordinatorBuilder::node_group`).
#[derive(Clone)]
pub struct NodeGroups {
    shared: Arc<Shared>,
    actor: Arc<RwLock<ActorRef<Msg>>>,
}

impl std::fmt::Debug for NodeGroups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeGroups")
            .field("groups", &self.status().len())
            .finish()
    }
}

pub(crate) enum Msg {
    Tick,
    Launched {
        group: usize,
        name: String,
        result: Result<String, String>,
    },
    Terminated {
        group: usize,
        name: String,
        resource: String,
        result: Result<(), String>,
    },
    Scale {
        group: String,
        nodes: usize,
        reply: RpcReplyPort<Result<(), Error>>,
    },
}

impl ractor::Message for Msg {}

struct GroupsActor;

impl Actor for GroupsActor {
    type Msg = Msg;
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        myself: ActorRef<Msg>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Shared>, ActorProcessingErr> {
        myself.send_interval(shared.interval, || Msg::Tick);
        Ok(shared)
    }

    async fn handle(
        &self,
        myself: ActorRef<Msg>,
        msg: Msg,
        shared: &mut Arc<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now();
        match msg {
            Msg::Tick => tick(shared, &myself).await,
            Msg::Launched {
                group,
                name,
                result,
            } => {
                shared.with_plan(group, |p| p.launched(&name, result, now));
            }
            Msg::Terminated {
                group,
                name,
                resource,
                result,
            } => {
                shared.with_plan(group, |p| p.terminated(&name, &resource, result, now));
            }
            Msg::Scale {
                group,
                nodes,
                reply,
            } => {
                let answer = manual(shared, &myself, &group, nodes, now).await;
                let _ = reply.send(answer);
            }
        }
        shared.flush_events();
        Ok(())
    }
}

impl Shared {
    fn groups(&self) -> std::sync::MutexGuard<'_, Vec<Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_plan(&self, group: usize, f: impl FnOnce(&mut Plan)) {
        if let Some(g) = self.groups().get_mut(group) {
            f(&mut g.plan);
        }
    }

    /// Publishes, keeps and stores the plans' new events, and refreshes the status.
    fn flush_events(&self) {
        let now = Instant::now();
        let (events, status): (Vec<ScalingEvent>, Vec<GroupStatus>) = {
            let mut groups = self.groups();
            let events = groups
                .iter_mut()
                .flat_map(|g| g.plan.take_events())
                .collect();
            let status = groups
                .iter()
                .map(|g| GroupStatus::of(&g.plan, g.launcher.kind(), now))
                .collect();
            (events, status)
        };
        *self.status.write().unwrap_or_else(|e| e.into_inner()) = status;
        if events.is_empty() {
            return;
        }
        {
            let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
            for e in &events {
                if history.len() == EVENTS_KEPT {
                    history.pop_front();
                }
                history.push_back(e.clone());
            }
        }
        for e in &events {
            tracing::info!(
                group = %e.group,
                action = %e.action,
                node = e.node.as_deref().unwrap_or("-"),
                reason = %e.reason,
                waiting = e.waiting,
                nodes = e.nodes,
                error = e.error.as_deref().unwrap_or(""),
                "node group"
            );
            self.events.publish(EventKind::NodeScaling(e.clone()));
        }
        if let Some(journal) = &self.journal {
            // Fails only once the writer is gone, when the runtime shuts down.
            let _ = journal.send(events);
        }
    }
}

/// Most events written to the store in one statement.
const JOURNAL_BATCH: usize = 512;

/// Starts the task that writes scaling events to `store`, in the order they were made,
/// batching what has piled up; it ends when the groups are dropped. (Unbounded: events come
/// from the planner a few per tick, never from outside.)
fn journal(store: Store) -> tokio::sync::mpsc::UnboundedSender<Vec<ScalingEvent>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<ScalingEvent>>();
    tokio::spawn(async move {
        while let Some(mut batch) = rx.recv().await {
            while batch.len() < JOURNAL_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            if let Err(e) = store.record_scaling_events(&batch).await {
                tracing::warn!(error = %e, events = batch.len(), "could not store scaling events");
            }
        }
    });
    tx
}

async fn tick(shared: &Arc<Shared>, myself: &ActorRef<Msg>) {
    let classes = match shared.queue.class_backlog().await {
        Ok(c) => c,
        Err(e) => return tracing::warn!(error = %e, "node groups could not read the queue"),
    };
    let nodes = match shared.cluster.nodes().await {
        Ok(n) => n,
        Err(e) => return tracing::warn!(error = %e, "node groups could not read the nodes"),
    };
    let launchers: Vec<(String, Arc<dyn Launcher>)> = shared
        .groups()
        .iter()
        .map(|g| (g.plan.cfg.name.clone(), g.launcher.clone()))
        .collect();
    // Each provider is listed before the plans are locked: a list may take a while.
    let mut listed = Vec::with_capacity(launchers.len());
    for (name, launcher) in &launchers {
        let resources = match tokio::time::timeout(LIST_TIMEOUT, launcher.list(name.clone())).await
        {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                tracing::warn!(group = %name, error = %e, "could not list the group's resources");
                None
            }
            Err(_) => {
                tracing::warn!(group = %name, "listing the group's resources timed out");
                None
            }
        };
        listed.push(resources);
    }
    let by_name: HashMap<String, NodeView> =
        nodes.iter().map(|n| (n.name.clone(), view(n))).collect();
    let now = Instant::now();
    let mut work = Vec::new();
    {
        let mut groups = shared.groups();
        for (i, (g, resources)) in groups.iter_mut().zip(listed).enumerate() {
            let plan = &mut g.plan;
            let own = |name: &str| plan.members.contains_key(name);
            let queued = queued_for(&plan.cfg, &own, &classes, &nodes, &shared.elsewhere);
            let obs = Observed {
                queued,
                nodes: by_name.clone(),
                resources,
            };
            for action in plan.tick(now, &obs) {
                work.push((i, action));
            }
        }
    }
    for (group, action) in work {
        carry_out(shared, myself, group, action).await;
    }
}

async fn manual(
    shared: &Arc<Shared>,
    myself: &ActorRef<Msg>,
    group: &str,
    nodes: usize,
    now: Instant,
) -> Result<(), Error> {
    let (i, actions) = {
        let mut groups = shared.groups();
        let Some(i) = groups.iter().position(|g| g.plan.cfg.name == group) else {
            return Err(Error::invalid("group", format!("no node group {group:?}")));
        };
        let actions = groups[i]
            .plan
            .manual(nodes, now)
            .map_err(|e| Error::invalid("nodes", e))?;
        (i, actions)
    };
    for action in actions {
        carry_out(shared, myself, i, action).await;
    }
    Ok(())
}

/// Carries out one action: gate calls at once, launcher calls in a task of their own.
async fn carry_out(shared: &Arc<Shared>, myself: &ActorRef<Msg>, group: usize, action: Action) {
    let (cfg, launcher) = {
        let groups = shared.groups();
        let Some(g) = groups.get(group) else { return };
        (g.plan.cfg.clone(), g.launcher.clone())
    };
    match action {
        Action::Drain { name } => {
            if let Err(e) = shared.cluster.drain(&name, true).await {
                tracing::warn!(node = %name, error = %e, "could not drain the node");
            }
        }
        Action::Undrain { name } => {
            if let Err(e) = shared.cluster.drain(&name, false).await {
                tracing::warn!(node = %name, error = %e, "could not undo the node's drain");
            }
        }
        Action::Launch { name } => {
            let request = super::launch_request(
                &cfg,
                cfg.join.as_deref().unwrap_or(&shared.join),
                shared.cluster.cookie(),
                name.clone(),
            );
            let me = myself.clone();
            tokio::spawn(async move {
                let result =
                    match tokio::time::timeout(cfg.join_timeout, launcher.launch(request)).await {
                        Ok(r) => r.map_err(|e| e.to_string()),
                        Err(_) => Err(format!(
                            "{} launcher: no answer within join_timeout",
                            launcher.kind()
                        )),
                    };
                let _ = me.cast(Msg::Launched {
                    group,
                    name,
                    result,
                });
            });
        }
        Action::Terminate { name, resource } => {
            let me = myself.clone();
            tokio::spawn(async move {
                let result = terminate(&*launcher, resource.clone(), &cfg).await;
                let _ = me.cast(Msg::Terminated {
                    group,
                    name,
                    resource,
                    result,
                });
            });
        }
    }
}

async fn terminate(
    launcher: &dyn Launcher,
    resource: String,
    cfg: &NodeGroupConfig,
) -> Result<(), String> {
    let bound = cfg.stop_grace + cfg.join_timeout;
    match tokio::time::timeout(bound, launcher.terminate(resource, cfg.stop_grace)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "{} launcher: no answer within stop_grace + join_timeout",
            launcher.kind()
        )),
    }
}

/// What the coordinator starts node groups with.
pub(crate) struct Start {
    pub(crate) groups: Vec<(NodeGroupConfig, Arc<dyn Launcher>)>,
    pub(crate) cluster: Cluster,
    pub(crate) queue: QueueRef,
    pub(crate) store: Option<Store>,
    pub(crate) events: EventBus,
    pub(crate) elsewhere: ServedElsewhere,
    pub(crate) interval: Duration,
    pub(crate) supervisor: ractor::ActorCell,
}

impl NodeGroups {
    /// Starts the groups' actor as a child of `supervisor`.
    pub(crate) async fn start(s: Start) -> Result<Self, Error> {
        let mut names = std::collections::HashSet::new();
        for (cfg, _) in &s.groups {
            cfg.validate()?;
            if !names.insert(cfg.name.clone()) {
                return Err(Error::invalid(
                    "node_groups.name",
                    format!("two node groups are named {:?}", cfg.name),
                ));
            }
        }
        let addr = s.cluster.local_addr();
        let join = if addr.ip().is_unspecified() {
            format!("127.0.0.1:{}", addr.port())
        } else {
            addr.to_string()
        };
        let shared = Arc::new(Shared {
            groups: Mutex::new(
                s.groups
                    .into_iter()
                    .map(|(cfg, launcher)| Group {
                        launcher,
                        plan: Plan::new(cfg),
                    })
                    .collect(),
            ),
            history: Mutex::new(VecDeque::new()),
            status: RwLock::new(Vec::new()),
            cluster: s.cluster,
            queue: s.queue,
            journal: s.store.map(journal),
            events: s.events,
            elsewhere: s.elsewhere,
            interval: s.interval,
            join,
        });
        shared.flush_events();
        let actor = spawn(&shared, s.supervisor).await?;
        Ok(Self {
            shared,
            actor: Arc::new(RwLock::new(actor)),
        })
    }

    fn actor(&self) -> ActorRef<Msg> {
        self.actor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// True when `actor` is the groups' actor.
    pub(crate) fn is_actor(&self, actor: ractor::ActorId) -> bool {
        self.actor().get_id() == actor
    }

    /// Starts a new actor over the same plans after the last one failed.
    pub(crate) async fn restart(&self, supervisor: ractor::ActorCell) -> Result<(), Error> {
        let actor = spawn(&self.shared, supervisor).await?;
        *self.actor.write().unwrap_or_else(|e| e.into_inner()) = actor;
        Ok(())
    }

    /// Each group as of the last tick.
    pub fn status(&self) -> Vec<GroupStatus> {
        self.shared
            .status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last scaling events (at most 1,000), oldest first.
    pub fn history(&self) -> Vec<ScalingEvent> {
        self.shared
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Task types the groups' nodes serve: accepted at submit while a group can launch.
    pub fn task_types(&self) -> Vec<Arc<str>> {
        self.shared
            .groups()
            .iter()
            .flat_map(|g| g.plan.cfg.task_types.iter().map(|t| Arc::from(t.as_str())))
            .collect()
    }

    /// Sets group `group` to `nodes` active nodes: launches, or drains the idlest ones
    /// (each terminated once nothing runs on it). Refused outside its
    /// `min_nodes..=max_nodes`, naming the field `nodes`.
    pub async fn scale(&self, group: &str, nodes: usize) -> Result<(), Error> {
        let group = group.to_string();
        ractor::call_t!(
            self.actor(),
            |reply| Msg::Scale {
                group,
                nodes,
                reply
            },
            10_000
        )
        .map_err(|e| Error::invalid("node_groups", format!("not running: {e}")))?
    }

    /// Stops the actor and terminates every node the groups launched (each is asked to
    /// stop, and forced after its group's `stop_grace`). Answers once all are gone.
    pub(crate) async fn stop(&self) {
        let _ = self
            .actor()
            .stop_and_wait(None, Some(Duration::from_secs(5)))
            .await;
        let mut stops = Vec::new();
        {
            let mut groups = self.shared.groups();
            for g in groups.iter_mut() {
                let cfg = g.plan.cfg.clone();
                for (name, m) in std::mem::take(&mut g.plan.members) {
                    if let Some(resource) = m.resource {
                        let launcher = g.launcher.clone();
                        let cfg = cfg.clone();
                        stops.push(async move {
                            if let Err(e) = terminate(&*launcher, resource, &cfg).await {
                                tracing::warn!(node = %name, error = %e, "could not stop a launched node");
                            }
                        });
                    }
                }
            }
        }
        futures_util::future::join_all(stops).await;
    }
}

async fn spawn(
    shared: &Arc<Shared>,
    supervisor: ractor::ActorCell,
) -> Result<ActorRef<Msg>, Error> {
    let (actor, _) = Actor::spawn_linked(None, GroupsActor, shared.clone(), supervisor)
        .await
        .map_err(|e| Error::spawn("node groups", e))?;
    Ok(actor)
}
