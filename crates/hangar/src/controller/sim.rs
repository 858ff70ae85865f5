//! An in-memory world for the reconciler's tests and the controller benchmark: a GitHub side
//! ([`SimGitHub`]: registrations, assigned jobs, ephemeral runners that take one job and go
//! away) joined to the [`FakeBackend`]'s tasks. [`SimWorld::step`] plays what runners do between
//! passes (a started task reads its one-shot secret and comes online; an idle runner takes a
//! waiting job; a finished job removes its registration and ends the task), so whole bursts run
//! through the real reconciler without a network or a clock.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use secrecy::SecretString;

use super::backend::TaskState;
use super::backend::fake::FakeBackend;
use super::budget::RateLimitSnapshot;
use super::plan::ObservedRunner;
use super::reconcile::{CreateError, NewRunner, PoolGitHub};
use crate::github::scaleset::AgentRemoval;

#[derive(Clone, Debug)]
struct SimRunner {
    name: String,
    online: bool,
    job: Option<u64>,
    /// Jobs this runner has held (an ephemeral runner takes one).
    jobs_held: u32,
}

#[derive(Default)]
struct GitHubState {
    next_runner: u64,
    next_job: u64,
    runners: BTreeMap<u64, SimRunner>,
    /// Jobs assigned to the scale set that no runner has taken yet.
    waiting: VecDeque<u64>,
    running: BTreeMap<u64, u64>,
    completed: u64,
    fail_lists: u32,
    fail_creates: u32,
    /// Runner ids that take a job at the very moment they are being removed.
    busy_on_removal: Vec<u64>,
    rate_limit: Option<RateLimitSnapshot>,
}

/// The GitHub side. Clones share state.
#[derive(Clone, Default)]
pub struct SimGitHub {
    state: Arc<Mutex<GitHubState>>,
    calls: Arc<AtomicU64>,
}

impl SimGitHub {
    fn lock(&self) -> std::sync::MutexGuard<'_, GitHubState> {
        self.state.lock().expect("sim poisoned")
    }

    /// Queues `n` jobs for the scale set; returns their ids.
    pub fn queue_jobs(&self, n: usize) -> Vec<u64> {
        let mut s = self.lock();
        (0..n)
            .map(|_| {
                s.next_job += 1;
                let id = s.next_job;
                s.waiting.push_back(id);
                id
            })
            .collect()
    }

    /// `totalAssignedJobs`: waiting plus running.
    pub fn assigned(&self) -> u32 {
        let s = self.lock();
        (s.waiting.len() + s.running.len()) as u32
    }

    pub fn completed(&self) -> u64 {
        self.lock().completed
    }

    pub fn registrations(&self) -> usize {
        self.lock().runners.len()
    }

    /// The next `n` runner listings fail.
    pub fn fail_next_lists(&self, n: u32) {
        self.lock().fail_lists = n;
    }

    /// The next `n` registrations fail (as a GitHub 5xx would, after retries).
    pub fn fail_next_creates(&self, n: u32) {
        self.lock().fail_creates = n;
    }

    /// When the controller removes this runner, it turns out to have just taken a job.
    pub fn busy_on_removal(&self, runner_id: u64) {
        self.lock().busy_on_removal.push(runner_id);
    }

    pub fn set_rate_limit(&self, snapshot: Option<RateLimitSnapshot>) {
        self.lock().rate_limit = snapshot;
    }

    pub fn runner_id(&self, name: &str) -> Option<u64> {
        self.lock()
            .runners
            .iter()
            .find(|(_, r)| r.name == name)
            .map(|(id, _)| *id)
    }
}

impl PoolGitHub for SimGitHub {
    async fn runners(&self) -> Result<Vec<ObservedRunner>, String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        if s.fail_lists > 0 {
            s.fail_lists -= 1;
            return Err("GitHub answered 502 after 4 attempts".into());
        }
        Ok(s.runners
            .iter()
            .map(|(id, r)| ObservedRunner {
                id: *id,
                name: r.name.clone(),
                online: r.online,
                busy: r.job.is_some(),
            })
            .collect())
    }

    async fn create_runner(&self, name: &str) -> Result<NewRunner, CreateError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        if s.fail_creates > 0 {
            s.fail_creates -= 1;
            return Err(CreateError::Other(
                "the Actions service answered 503 after 4 attempts".into(),
            ));
        }
        if s.runners.values().any(|r| r.name == name) {
            return Err(CreateError::NameInUse(name.to_string()));
        }
        s.next_runner += 1;
        let id = s.next_runner;
        s.runners.insert(
            id,
            SimRunner {
                name: name.to_string(),
                online: false,
                job: None,
                jobs_held: 0,
            },
        );
        Ok(NewRunner {
            id,
            name: name.to_string(),
            jit_config: SecretString::from(format!("sim-jit-{id}")),
        })
    }

    async fn remove_runner(&self, id: u64) -> Result<AgentRemoval, String> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut s = self.lock();
        if let Some(pos) = s.busy_on_removal.iter().position(|r| *r == id) {
            s.busy_on_removal.remove(pos);
            if let Some(job) = s.waiting.pop_front()
                && let Some(runner) = s.runners.get_mut(&id)
            {
                runner.job = Some(job);
                runner.jobs_held += 1;
                s.running.insert(job, id);
            }
        }
        match s.runners.get(&id) {
            None => Ok(AgentRemoval::NotFound),
            Some(r) if r.job.is_some() => Ok(AgentRemoval::StillRunning),
            Some(_) => {
                s.runners.remove(&id);
                Ok(AgentRemoval::Removed)
            }
        }
    }

    fn calls_made(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn rate_limit(&self) -> Option<RateLimitSnapshot> {
        self.lock().rate_limit
    }
}

/// GitHub and the backend together.
#[derive(Clone, Default)]
pub struct SimWorld {
    pub github: SimGitHub,
    pub backend: FakeBackend,
}

impl SimWorld {
    pub fn new() -> SimWorld {
        SimWorld::default()
    }

    /// What runners do between two passes: pending tasks start, read their secret and come
    /// online; idle runners take waiting jobs; with `finish`, every running job completes (its
    /// ephemeral runner is removed and its task ends).
    pub fn step(&self, finish: bool) {
        for task in self.backend.tasks() {
            if task.state == TaskState::Pending {
                self.backend.set_state(&task.id, TaskState::Running);
            }
            if task.state != TaskState::Stopped
                && self.backend.take_handoff(&task.tags.runner_name).is_some()
            {
                let mut s = self.github.lock();
                if let Some(r) = s.runners.get_mut(&task.tags.runner_id) {
                    r.online = true;
                }
            }
        }
        let mut s = self.github.lock();
        let idle: Vec<u64> = s
            .runners
            .iter()
            .filter(|(_, r)| r.online && r.job.is_none() && r.jobs_held == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            let Some(job) = s.waiting.pop_front() else {
                break;
            };
            let runner = s.runners.get_mut(&id).expect("listed");
            runner.job = Some(job);
            runner.jobs_held += 1;
            s.running.insert(job, id);
        }
        if finish {
            let done: Vec<(u64, u64)> = std::mem::take(&mut s.running).into_iter().collect();
            for (_, runner) in &done {
                s.runners.remove(runner);
                s.completed += 1;
            }
            drop(s);
            for task in self.backend.tasks() {
                if done.iter().any(|(_, r)| *r == task.tags.runner_id) {
                    self.backend.set_state(&task.id, TaskState::Stopped);
                }
            }
        }
    }

    /// Fails if a runner that holds a job has had its task stopped.
    pub fn check_no_busy_task_stopped(&self) -> Result<(), String> {
        let s = self.github.lock();
        for (id, runner) in &s.runners {
            if runner.job.is_some()
                && let Some(task) = self
                    .backend
                    .tasks()
                    .into_iter()
                    .find(|t| t.tags.runner_id == *id)
                && task.state == TaskState::Stopped
            {
                return Err(format!(
                    "runner {} holds a job but its task {} was stopped",
                    runner.name, task.id
                ));
            }
        }
        Ok(())
    }
}
