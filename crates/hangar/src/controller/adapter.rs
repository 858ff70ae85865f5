//! The real [`PoolGitHub`]: a pool's runners from the REST API (status and busy flags, which
//! the scale-set service does not list), new runners as JIT configurations from the pool's
//! scale set, and removals through the scale-set service (which says `JobStillRunning` for a
//! busy runner instead of removing it).
//!
//! Invariant: the scale set id comes from the pool's listener; until it has one, no runner is
//! created (the pool has no demand to serve yet either).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use super::budget::RateLimitSnapshot;
use super::listener::Demand;
use super::plan::ObservedRunner;
use super::reconcile::{CreateError, NewRunner, PoolGitHub};
use crate::github::scaleset::{ActionsService, AgentRemoval, ScaleSetError};

/// The runner's work folder inside its RUNNER_HOME (the runner's default).
const WORK_FOLDER: &str = "_work";

pub struct LivePoolGitHub {
    service: ActionsService,
    demand: watch::Receiver<Demand>,
    rest_calls: Arc<AtomicU64>,
}

impl LivePoolGitHub {
    pub fn new(service: ActionsService, demand: watch::Receiver<Demand>) -> LivePoolGitHub {
        LivePoolGitHub {
            service,
            demand,
            rest_calls: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl PoolGitHub for LivePoolGitHub {
    async fn runners(&self) -> Result<Vec<ObservedRunner>, String> {
        let before = self.service.github().calls_made();
        let listed = self
            .service
            .github()
            .list_runners(self.service.scope())
            .await;
        // Pages and retries included; other pools on this client may add a little noise.
        let spent = self
            .service
            .github()
            .calls_made()
            .saturating_sub(before)
            .max(1);
        self.rest_calls.fetch_add(spent, Ordering::Relaxed);
        Ok(listed
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| ObservedRunner {
                id: r.id,
                online: r.status.eq_ignore_ascii_case("online"),
                busy: r.busy,
                name: r.name,
            })
            .collect())
    }

    async fn create_runner(&self, name: &str) -> Result<NewRunner, CreateError> {
        let Some(scale_set_id) = self.demand.borrow().scale_set_id else {
            return Err(CreateError::Other(
                "the pool's runner scale set is not ready yet (its listener is still connecting)"
                    .into(),
            ));
        };
        match self
            .service
            .generate_jit_config(scale_set_id, name, WORK_FOLDER)
            .await
        {
            Ok(runner) => Ok(NewRunner {
                id: runner.id,
                name: runner.name,
                jit_config: runner.encoded,
            }),
            Err(ScaleSetError::AgentExists { name, .. }) => Err(CreateError::NameInUse(name)),
            Err(ScaleSetError::RateLimited { wait, .. }) => Err(CreateError::Limited(wait)),
            Err(e) => Err(CreateError::Other(e.to_string())),
        }
    }

    async fn remove_runner(&self, id: u64) -> Result<AgentRemoval, String> {
        self.service
            .delete_agent(id)
            .await
            .map_err(|e| e.to_string())
    }

    fn calls_made(&self) -> u64 {
        self.service.calls_made() + self.rest_calls.load(Ordering::Relaxed)
    }

    fn rate_limit(&self) -> Option<RateLimitSnapshot> {
        self.service
            .github()
            .rate_limit()
            .map(|rl| RateLimitSnapshot {
                limit: rl.limit,
                remaining: rl.remaining,
                reset_at: rl.reset_at,
            })
    }
}
