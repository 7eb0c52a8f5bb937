//! The guard that deletes a command's Job (propagation `Background`, so its pod goes too):
//! at the end of a run, or, if the request is dropped on the way (timeout, caller gone,
//! proxy stopped), from a task it spawns, so no Job outlives its request.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::DeleteParams;
use kube::Api;

use super::error::is_not_found;

/// Deletes a command's Job (and, in the background, its pod) when dropped still armed.
pub(super) struct Deletion {
    /// The Jobs of the command's namespace.
    pub(super) jobs: Api<Job>,
    /// The Job's name.
    pub(super) name: String,
    /// Whether the API server confirmed the creation.
    pub(super) created: bool,
    /// Whether dropping the guard still deletes the Job.
    pub(super) armed: bool,
}

impl Deletion {
    /// Deletes the Job now (the run ended); a failure is logged, not returned: the
    /// command's answer stands, and the Job's TTL removes it later.
    pub(super) async fn now(&mut self) {
        let result = delete(&self.jobs, &self.name).await;
        // Disarmed only once answered: a request dropped while deleting deletes again.
        self.armed = false;
        if let Err(e) = result {
            if !is_not_found(&e) {
                tracing::warn!(job = %self.name, error = %e, "job not deleted");
            }
        }
    }
}

impl Drop for Deletion {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(job = %self.name, "no runtime to delete the job with");
            return;
        };
        let (jobs, name, created) = (self.jobs.clone(), self.name.clone(), self.created);
        runtime.spawn(async move {
            // A creation still on its way may land after a first deletion: try a few
            // times while the API server says there is no such Job.
            let tries = if created { 1 } else { 5 };
            for attempt in 1..=tries {
                match delete(&jobs, &name).await {
                    Err(e) if is_not_found(&e) && attempt < tries => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Err(e) if is_not_found(&e) => return,
                    Err(e) => {
                        tracing::warn!(job = %name, error = %e, "job not deleted");
                        return;
                    }
                    Ok(()) => return,
                }
            }
        });
    }
}

async fn delete(jobs: &Api<Job>, name: &str) -> Result<(), kube::Error> {
    jobs.delete(name, &DeleteParams::background())
        .await
        .map(|_| ())
}
