//! A pool's task bills: which tasks it ran, when each was billed from and to, and what each
//! cost, split between the job it ran and overhead (see `controller::cost` for the arithmetic).
//! Pure: the reconciler feeds it every task listing and the backend's last word on tasks that
//! left the listing; nothing here does I/O or reads a clock.
//!
//! A task is settled once, when it is seen stopped (a listing that keeps stopped tasks) or gone
//! from the listing (ECS lists live tasks only; the backend then describes it once more for its
//! `stoppedAt`). Each settlement adds the job's share to the pool's job total and the rest to its
//! idle total. Times ECS did not give are filled in on the safe side, and the figure is marked
//! `estimated`: no `pullStartedAt` -> `startedAt`, else `createdAt` (earlier: billed longer); no
//! `stoppedAt` (described no more) -> the pass that saw it gone (later: billed longer).
//!
//! Bounded: open tasks are those the listing shows (at most the pool's `max` plus stragglers);
//! settled ids are kept [`SETTLED_MEMORY`] to refuse a second settlement, then forgotten.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::backend::{Task, TaskState, TaskTimes};
use super::config::EcsLaunch;
use super::cost::{self, PriceTable, TaskSize};

/// How long a settled task's id is remembered (a listing keeps stopped tasks about an hour).
pub const SETTLED_MEMORY: Duration = Duration::from_secs(2 * 3600);

/// How long a task gone from the listing but still stopping (ECS lists the tasks it wants
/// running, so a stopping task leaves the listing before it stops) waits for its `stoppedAt`
/// before it is settled at the pass (ECS stops a task within its `stopTimeout`, 120 s at most).
pub const STOPPING_PATIENCE: Duration = Duration::from_secs(300);

/// A pool's prices: its launch settings (the task's size) and the region's table.
#[derive(Clone, Debug, PartialEq)]
pub struct Pricing {
    pub launch: EcsLaunch,
    pub table: PriceTable,
}

impl Pricing {
    /// The size a task on `capacity_provider` is billed for (`None`: not Fargate, or the pool
    /// file states no size).
    pub fn size(&self, capacity_provider: Option<&str>) -> Option<TaskSize> {
        TaskSize::of_pool(&self.launch, capacity_provider)
    }

    /// An hour of one task on the pool's first choice of capacity (what each `min_idle` runner
    /// costs an hour while it waits).
    pub fn task_hour(&self) -> Option<f64> {
        let size = self.first_choice()?;
        Some(cost::cost(&size, &self.table.rates(&size), 3600.0))
    }

    /// The size of a task on the pool's first choice of capacity.
    fn first_choice(&self) -> Option<TaskSize> {
        self.size(self.launch.providers().first().map(String::as_str))
    }

    /// The size as people read it, e.g. `1 vCPU, 2 GiB, X86_64`.
    pub fn size_text(&self) -> Option<String> {
        let size = self.first_choice()?;
        Some(format!(
            "{} vCPU, {} GiB, {:?}{}",
            size.vcpu,
            size.memory_gib,
            size.architecture,
            if size.storage_gib > cost::FREE_STORAGE_GIB {
                format!(", {} GiB disk", size.storage_gib)
            } else {
                String::new()
            }
        ))
    }
}

/// What a job's task cost (USD), for its record.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct JobCost {
    /// The whole task's bill.
    pub task_dollars: f64,
    /// The job's share: the seconds it ran inside the billed window.
    pub job_dollars: f64,
    /// Pull, start-up, waiting, shutdown, and the one-minute minimum's padding.
    pub overhead_dollars: f64,
    pub billed_seconds: f64,
    /// The task has stopped: the figure will not change. Else it is the bill so far.
    #[serde(rename = "final")]
    pub settled: bool,
    /// A time the backend did not give was filled in on the safe side (see the module doc).
    pub estimated: bool,
}

/// A pool's totals since the controller started.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CostTotals {
    pub job_dollars_total: f64,
    pub idle_dollars_total: f64,
    /// Tasks settled, and of those how many with an estimated time.
    pub tasks_billed: u64,
    pub tasks_estimated: u64,
    /// Tasks that could not be priced (not on Fargate, or no size in the pool file).
    pub tasks_unpriced: u64,
}

/// One task settled.
#[derive(Clone, Debug, PartialEq)]
pub struct Settled {
    pub task_id: String,
    pub runner_id: u64,
    pub cost: JobCost,
}

#[derive(Clone, Debug)]
struct Open {
    runner_id: u64,
    created_at: DateTime<Utc>,
    capacity_provider: Option<String>,
    times: TaskTimes,
    /// Seen stopped in a listing: settle now.
    stopped: bool,
    /// Gone from the listing but described as still stopping, since when.
    stopping_since: Option<DateTime<Utc>>,
}

/// A pool's bills.
#[derive(Clone, Debug)]
pub struct Bills {
    pricing: Pricing,
    open: BTreeMap<String, Open>,
    /// Settled task ids, and when.
    settled: BTreeMap<String, DateTime<Utc>>,
    totals: CostTotals,
}

/// When a job ran, as its record says: started, and completed if it has.
pub type JobSpan = (DateTime<Utc>, Option<DateTime<Utc>>);

impl Bills {
    pub fn new(pricing: Pricing) -> Bills {
        Bills {
            pricing,
            open: BTreeMap::new(),
            settled: BTreeMap::new(),
            totals: CostTotals::default(),
        }
    }

    pub fn pricing(&self) -> &Pricing {
        &self.pricing
    }

    pub fn totals(&self) -> &CostTotals {
        &self.totals
    }

    /// Takes one listing. Returns the ids of open tasks it no longer shows, for the backend to
    /// describe before [`Bills::settle`].
    pub fn observe(&mut self, tasks: &[Task], now: DateTime<Utc>) -> Vec<String> {
        self.settled.retain(|_, at| {
            now.signed_duration_since(*at)
                .to_std()
                .is_ok_and(|age| age < SETTLED_MEMORY)
        });
        for task in tasks {
            if self.settled.contains_key(&task.id) {
                continue;
            }
            let open = self.open.entry(task.id.clone()).or_insert_with(|| Open {
                runner_id: task.tags.runner_id,
                created_at: task.created_at,
                capacity_provider: None,
                times: TaskTimes::default(),
                stopped: false,
                stopping_since: None,
            });
            open.times.merge(&task.times);
            if task.capacity_provider.is_some() {
                open.capacity_provider = task.capacity_provider.clone();
            }
            // A stopped task without `stoppedAt` is settled too, stopped at the pass (estimated).
            open.stopped = task.state == TaskState::Stopped;
        }
        self.open
            .keys()
            .filter(|id| !tasks.iter().any(|t| &t.id == *id))
            .cloned()
            .collect()
    }

    /// Settles every open task seen stopped, and every one in `gone` (with `described`, the
    /// backend's last word on them, where it had one). `job` says when the job of a runner ran.
    pub fn settle(
        &mut self,
        gone: &[String],
        described: &[Task],
        job: impl Fn(u64) -> Option<JobSpan>,
        now: DateTime<Utc>,
    ) -> Vec<Settled> {
        let due: Vec<String> = self
            .open
            .iter()
            .filter(|(id, open)| open.stopped || gone.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        let mut settled = Vec::new();
        for id in due {
            let Some(mut open) = self.open.remove(&id) else {
                continue;
            };
            if let Some(last) = described.iter().find(|t| t.id == id) {
                open.times.merge(&last.times);
                if last.capacity_provider.is_some() {
                    open.capacity_provider = last.capacity_provider.clone();
                }
                // Still stopping: settling now would bill it short. Wait for its stop, a while.
                let since = *open.stopping_since.get_or_insert(now);
                let patient = now
                    .signed_duration_since(since)
                    .to_std()
                    .is_ok_and(|waited| waited < STOPPING_PATIENCE)
                    || now < since;
                if open.times.stopped_at.is_none() && last.state != TaskState::Stopped && patient {
                    self.open.insert(id, open);
                    continue;
                }
            }
            self.settled.insert(id.clone(), now);
            match self.bill(&open, job(open.runner_id), now, true) {
                Some(cost) => {
                    self.totals.job_dollars_total += cost.job_dollars;
                    self.totals.idle_dollars_total += cost.overhead_dollars;
                    self.totals.tasks_billed += 1;
                    if cost.estimated {
                        self.totals.tasks_estimated += 1;
                    }
                    settled.push(Settled {
                        task_id: id,
                        runner_id: open.runner_id,
                        cost,
                    });
                }
                None => self.totals.tasks_unpriced += 1,
            }
        }
        settled
    }

    /// The bill so far of every open task whose runner has a job (runner id, cost).
    pub fn so_far(
        &self,
        job: impl Fn(u64) -> Option<JobSpan>,
        now: DateTime<Utc>,
    ) -> Vec<(u64, JobCost)> {
        self.open
            .values()
            .filter_map(|open| {
                let span = job(open.runner_id)?;
                Some((open.runner_id, self.bill(open, Some(span), now, false)?))
            })
            .collect()
    }

    fn bill(
        &self,
        open: &Open,
        job: Option<JobSpan>,
        now: DateTime<Utc>,
        stopping: bool,
    ) -> Option<JobCost> {
        let size = self.pricing.size(open.capacity_provider.as_deref())?;
        let rates = self.pricing.table.rates(&size);
        let (pull_started, start_estimated) = match open.times.pull_started_at {
            Some(at) => (at, false),
            None => (open.times.started_at.unwrap_or(open.created_at), true),
        };
        let (stopped, stop_estimated) = match open.times.stopped_at {
            Some(at) => (at, false),
            None => (now, stopping),
        };
        let job = job.map(|(started, completed)| (started, completed.unwrap_or(stopped)));
        let split = cost::split(&size, &rates, pull_started, stopped, job);
        Some(JobCost {
            task_dollars: split.task,
            job_dollars: split.job,
            overhead_dollars: split.overhead,
            billed_seconds: split.billed_seconds,
            settled: stopping,
            estimated: start_estimated || stop_estimated,
        })
    }
}

#[cfg(test)]
mod tests;
