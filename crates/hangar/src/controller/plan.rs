//! The controller's decisions, as one pure function: [`plan`] takes a pool's limits, what one
//! reconcile pass observed (scale-set statistics, GitHub registrations, backend tasks, one-shot
//! secrets), what earlier passes remembered and the time, and returns the actions to take, the
//! pool's status and the memory for the next pass. The executor performs the actions; nothing
//! here sleeps, reads a clock or does I/O, so every rule is tested over a table of cases.
//!
//! Rules:
//! - desired = min(max, min_idle + totalAssignedJobs). While the statistics are unknown (no
//!   session yet) nothing is scaled in and nothing is launched beyond `min_idle`.
//! - Capacity is the tasks that are pending or running and whose registration still exists; a
//!   task whose ephemeral registration is gone has finished its job and is on its way out. But
//!   the statistics and the runner list are read at different times: a runner list that no
//!   longer shows a finished runner may meet statistics that still count its job. So such a
//!   task still counts as capacity until statistics received after the listing that first
//!   showed its registration gone (otherwise that job would get a second runner); so does a
//!   task gone from the listing since a pass saw it live (its runner exited and ECS stopped
//!   it). These hold launches only: scale-in counts runners that hold or wait for a job.
//! - Listings are eventually consistent (ECS says so of `RunTask`): a task this controller
//!   launched counts as pending capacity until a listing shows it (by task id or runner id),
//!   its registration, once seen, is gone (the runner is done), or [`IN_FLIGHT_EXPIRY`] passes.
//!   So a launch is never repeated because the next listing does not show it yet.
//! - Launches fill the gap to desired, limited by the launch allowance (GitHub budget) and the
//!   pool's launch back-off.
//! - Scale-in retires only runners that are online and idle, oldest first. A busy runner, or one
//!   whose task is still pending, is never chosen. Retiring removes the registration first; the
//!   executor leaves the runner alone if GitHub answers that a job is running.
//! - Reaper, each with its reason: tasks pending past `pending_timeout`; runners that have not
//!   come online within `registration_timeout`; idle runners older than `max_runtime`; offline
//!   registrations with no task for longer than `offline_grace` (ghosts); running tasks whose
//!   registration is gone for longer than `offline_grace`; one-shot secrets that no live task
//!   will read, or that are older than `handoff_max_age`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::backend::{Handoff, Task, TaskState};
use super::config::PoolLimits;

/// A registration of this pool's, as GitHub lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ObservedRunner {
    pub id: u64,
    pub name: String,
    pub online: bool,
    pub busy: bool,
}

/// Everything one pass saw of a pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// `statistics.totalAssignedJobs` of the scale set; `None` while no session is live.
    pub assigned_jobs: Option<u32>,
    /// When those statistics were received (`None`: unknown, taken as older than anything).
    pub statistics_at: Option<DateTime<Utc>>,
    /// When the listings below had all been answered (`None`: the pass's `now`).
    pub listed_at: Option<DateTime<Utc>>,
    pub runners: Vec<ObservedRunner>,
    /// Registration id -> when it was known gone, where known more precisely than `listed_at`
    /// (the message stream says when a runner completed; see `controller::ledger`).
    pub gone_at: BTreeMap<u64, DateTime<Utc>>,
    /// Registrations GitHub removed while their runner waited for a job (no job started on
    /// them): not finished, dropped.
    pub dropped: BTreeSet<u64>,
    /// Registrations this controller removed from runners that had started no job (their tasks
    /// are being stopped): no job of theirs is finishing either.
    pub retired: BTreeSet<u64>,
    pub tasks: Vec<Task>,
    pub handoffs: Vec<Handoff>,
}

/// What the controller may do this pass, beyond the pool's limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// Launches the GitHub budget allows now; `None` = no limit.
    pub launches: Option<u32>,
    /// What limits launches (shown in status when it bites).
    pub reason: Option<String>,
}

impl Allowance {
    pub fn unlimited() -> Allowance {
        Allowance {
            launches: None,
            reason: None,
        }
    }
}

/// What earlier passes saw that a single observation cannot show.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Registration id -> when it was first seen offline with no live task.
    pub ghost_since: BTreeMap<u64, DateTime<Utc>>,
    /// Task id -> when it was first seen running with its registration gone.
    pub orphan_since: BTreeMap<String, DateTime<Utc>>,
    /// Task id -> the earliest time it was known: its `created_at`, or when a pass first saw it
    /// if that is earlier (a backend that reports no creation time must not keep a task young
    /// forever).
    pub task_seen: BTreeMap<String, DateTime<Utc>>,
    /// Registrations seen online at least once (so an offline one did register, and went away).
    pub seen_online: BTreeSet<u64>,
    /// Launches are held until then (capacity or throttling back-off), and why.
    pub launch_blocked: Option<(DateTime<Utc>, String)>,
    /// Tasks launched but not yet shown by a listing, by task id.
    pub in_flight: BTreeMap<String, InFlight>,
    /// Task id -> when the listings that first showed it live with its registration gone had
    /// been answered (its runner finished; see the capacity rule).
    pub finishing: BTreeMap<String, DateTime<Utc>>,
    /// Task id -> its runner's id, for the live tasks of the last pass (so a task gone from the
    /// listing can be told from one whose runner GitHub dropped).
    pub task_runner: BTreeMap<String, u64>,
}

/// A task this controller launched that no listing has shown yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub runner_id: u64,
    pub runner_name: String,
    pub launched_at: DateTime<Utc>,
    /// Whether GitHub has listed its registration yet (so a later absence means it is done).
    pub registration_seen: bool,
    /// When the listings that first showed that registration gone had been answered: the
    /// runner finished, and the launch counts only until statistics newer than this.
    pub finished_seen: Option<DateTime<Utc>>,
}

/// How long a launched task counts as capacity while no listing shows it. ECS's listings catch
/// up within seconds; past this the launch is taken as lost, and the reaper deals with its
/// registration and one-shot secret like any other.
pub const IN_FLIGHT_EXPIRY: Duration = Duration::from_secs(180);

/// Why a runner or task is removed (a metric label and a log field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    ScaleIn,
    MaxRuntime,
    PendingTimeout,
    NeverRegistered,
    Ghost,
    Orphan,
    Handoff,
    /// An idle runner past `idle_recycle_after`, retired once a fresh one is ready.
    Recycle,
    /// GitHub removed an idle runner's registration (it drops JIT runners that wait too long).
    Dropped,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::ScaleIn,
        Reason::MaxRuntime,
        Reason::PendingTimeout,
        Reason::NeverRegistered,
        Reason::Ghost,
        Reason::Orphan,
        Reason::Handoff,
        Reason::Recycle,
        Reason::Dropped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::ScaleIn => "scale_in",
            Reason::MaxRuntime => "max_runtime",
            Reason::PendingTimeout => "pending_timeout",
            Reason::NeverRegistered => "never_registered",
            Reason::Ghost => "ghost",
            Reason::Orphan => "orphan",
            Reason::Handoff => "handoff",
            Reason::Recycle => "recycle",
            Reason::Dropped => "dropped",
        }
    }
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Start this many runners (each: JIT config, one-shot secret, task).
    Launch { count: u32 },
    /// Remove the registration, then stop its task if there is one. When GitHub says a job is
    /// running on it, do neither.
    Retire {
        runner_id: u64,
        runner_name: String,
        task_id: Option<String>,
        reason: Reason,
    },
    /// Stop a task that has no registration left to remove.
    StopTask { task_id: String, reason: Reason },
    /// Delete a one-shot secret nobody will read.
    DeleteHandoff { name: String, reason: Reason },
}

/// The pool as this pass sees it (for status, metrics and the decision log).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    pub assigned_jobs: Option<u32>,
    pub desired: u32,
    /// Pending or running tasks whose registration exists.
    pub capacity: u32,
    /// Runners that hold or wait for a job (what scale-in compares with `desired`).
    pub working: u32,
    pub pending: u32,
    pub registered: u32,
    pub busy: u32,
    pub idle: u32,
    /// Why fewer runners are launched than desired, if so.
    pub launch_held: Option<String>,
    /// Launches held only because tasks whose runner finished still count as capacity (the
    /// statistics may still count their jobs): fresher statistics would let them go ahead.
    pub awaiting_statistics: u32,
}

/// The result of one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: PoolStatus,
    pub memory: Memory,
}

fn older_than(since: DateTime<Utc>, now: DateTime<Utc>, limit: Duration) -> bool {
    now.signed_duration_since(since)
        .to_std()
        .is_ok_and(|age| age > limit)
}

/// When a live task came to be, as far as anyone knows (see [`Memory::task_seen`]).
fn born_at(task_seen: &BTreeMap<String, DateTime<Utc>>, task: &Task) -> DateTime<Utc> {
    task_seen.get(&task.id).copied().unwrap_or(task.created_at)
}

fn is_live(task: &Task) -> bool {
    matches!(task.state, TaskState::Pending | TaskState::Running)
}

/// Decides one pass for one pool.
pub fn plan(
    limits: &PoolLimits,
    observed: &Observed,
    memory: &Memory,
    allowance: &Allowance,
    now: DateTime<Utc>,
) -> Plan {
    let mut actions = Vec::new();
    let mut next = Memory {
        launch_blocked: memory
            .launch_blocked
            .clone()
            .filter(|(until, _)| *until > now),
        ..Memory::default()
    };
    let runners: BTreeMap<u64, &ObservedRunner> =
        observed.runners.iter().map(|r| (r.id, r)).collect();
    next.in_flight = still_in_flight(memory, observed, &runners, now);
    let live_tasks: Vec<&Task> = observed.tasks.iter().filter(|t| is_live(t)).collect();
    let live_runner_ids: BTreeSet<u64> = live_tasks
        .iter()
        .map(|t| t.tags.runner_id)
        .chain(next.in_flight.values().map(|f| f.runner_id))
        .collect();
    let mut retired_tasks: BTreeSet<&str> = BTreeSet::new();
    next.seen_online = observed
        .runners
        .iter()
        .filter(|r| r.online || memory.seen_online.contains(&r.id))
        .map(|r| r.id)
        .collect();
    let offline_past_grace = |id: u64, next: &mut Memory| -> bool {
        let since = memory.ghost_since.get(&id).copied().unwrap_or(now);
        if older_than(since, now, limits.offline_grace) {
            true
        } else {
            next.ghost_since.insert(id, since);
            false
        }
    };

    let task_seen: BTreeMap<String, DateTime<Utc>> = live_tasks
        .iter()
        .map(|task| {
            let seen = memory.task_seen.get(&task.id).copied().unwrap_or(now);
            (task.id.clone(), seen.min(task.created_at))
        })
        .collect();
    let born = |task: &Task| born_at(&task_seen, task);
    // Reaper, task by task. Oldest first, so the log reads in the order things went wrong.
    let mut by_age = live_tasks.clone();
    by_age.sort_by(|a, b| (born(a), &a.id).cmp(&(born(b), &b.id)));
    for task in &by_age {
        let born = born(task);
        let runner = runners.get(&task.tags.runner_id);
        let reason = match runner {
            Some(r) if r.busy => None,
            _ if task.state == TaskState::Pending
                && older_than(born, now, limits.pending_timeout) =>
            {
                Some(Reason::PendingTimeout)
            }
            Some(r) if !r.online && next.seen_online.contains(&r.id) => {
                offline_past_grace(r.id, &mut next).then_some(Reason::Ghost)
            }
            Some(r) if !r.online && older_than(born, now, limits.registration_timeout) => {
                Some(Reason::NeverRegistered)
            }
            Some(r) if r.online && older_than(born, now, limits.max_runtime) => {
                Some(Reason::MaxRuntime)
            }
            Some(_) => None,
            // Its runner can never get a job now: stop it at once, and replace it below.
            None if observed.dropped.contains(&task.tags.runner_id) => Some(Reason::Dropped),
            None if task.state == TaskState::Running => {
                let since = memory.orphan_since.get(&task.id).copied().unwrap_or(now);
                if older_than(since, now, limits.offline_grace) {
                    Some(Reason::Orphan)
                } else {
                    next.orphan_since.insert(task.id.clone(), since);
                    None
                }
            }
            None => None,
        };
        let Some(reason) = reason else { continue };
        retired_tasks.insert(&task.id);
        match runner {
            Some(r) => {
                actions.push(Action::Retire {
                    runner_id: r.id,
                    runner_name: r.name.clone(),
                    task_id: Some(task.id.clone()),
                    reason,
                });
            }
            None => actions.push(Action::StopTask {
                task_id: task.id.clone(),
                reason,
            }),
        }
    }

    // Ghosts: offline registrations with no live task, past the grace period.
    for runner in &observed.runners {
        if live_runner_ids.contains(&runner.id) || runner.online || runner.busy {
            continue;
        }
        if offline_past_grace(runner.id, &mut next) {
            actions.push(Action::Retire {
                runner_id: runner.id,
                runner_name: runner.name.clone(),
                task_id: None,
                reason: Reason::Ghost,
            });
        }
    }

    // Capacity: live, not being retired, registration present.
    let serving: Vec<(&Task, &ObservedRunner)> = live_tasks
        .iter()
        .filter(|t| !retired_tasks.contains(t.id.as_str()))
        .filter_map(|t| runners.get(&t.tags.runner_id).map(|r| (*t, *r)))
        .collect();
    // Finishing: runners whose job the statistics may still count. A live task whose
    // registration is gone, or a task gone from the listing since a pass saw it live (its
    // essential container exited and ECS stopped it), counts until statistics received after
    // the listing that first showed it so; a live one stays remembered, a gone one is
    // forgotten then. It holds launches only: scale-in never counts it (it would retire a
    // runner for a phantom).
    let listed_at = observed.listed_at.unwrap_or(now);
    let live_ids: BTreeSet<&str> = live_tasks.iter().map(|t| t.id.as_str()).collect();
    let mut finishing_counted = 0u32;
    let released =
        |runner: u64| observed.dropped.contains(&runner) || observed.retired.contains(&runner);
    for task in live_tasks
        .iter()
        .filter(|t| !retired_tasks.contains(t.id.as_str()))
        .filter(|t| !runners.contains_key(&t.tags.runner_id))
        .filter(|t| !released(t.tags.runner_id))
    {
        let since = memory
            .finishing
            .get(&task.id)
            .or(observed.gone_at.get(&task.tags.runner_id))
            .copied()
            .unwrap_or(listed_at);
        next.finishing.insert(task.id.clone(), since);
        if !statistics_newer_than(observed, since) {
            finishing_counted += 1;
        }
    }
    let gone: BTreeSet<&String> = memory
        .task_seen
        .keys()
        .chain(memory.finishing.keys())
        .filter(|id| !live_ids.contains(id.as_str()))
        // A dropped or retired runner's task had no job to finish.
        .filter(|id| {
            memory
                .task_runner
                .get(id.as_str())
                .is_none_or(|runner| !released(*runner))
        })
        .collect();
    for id in gone {
        let since = memory.finishing.get(id).copied().unwrap_or(listed_at);
        if !statistics_newer_than(observed, since) {
            next.finishing.insert(id.clone(), since);
            finishing_counted += 1;
        }
    }
    // In-flight launches whose runner already finished are kept (and counted) on the same
    // terms by `still_in_flight`.
    finishing_counted += next
        .in_flight
        .values()
        .filter(|f| f.finished_seen.is_some())
        .count() as u32;
    let unfinished_in_flight = next
        .in_flight
        .values()
        .filter(|f| f.finished_seen.is_none())
        .count() as u32;
    // Runners that hold or wait for a job.
    let working = serving.len() as u32 + unfinished_in_flight;
    let capacity = working + finishing_counted;
    let desired = match observed.assigned_jobs {
        Some(assigned) => limits.min_idle.saturating_add(assigned).min(limits.max),
        None => working.max(limits.min_idle).min(limits.max),
    };

    // Recycling: an idle runner past `idle_recycle_after` is replaced first (a launch, if
    // `max` has room), and retired only once enough fresh runners are ready and idle for what
    // the pool needs waiting (`desired` minus the busy), so the pool never dips under it.
    let mut stale: Vec<&(&Task, &ObservedRunner)> = serving
        .iter()
        .filter(|(t, r)| {
            t.state == TaskState::Running
                && r.online
                && !r.busy
                && older_than(born(t), now, limits.idle_recycle_after)
        })
        .collect();
    stale.sort_by(|a, b| (born(a.0), &a.0.id).cmp(&(born(b.0), &b.0.id)));
    let busy_serving = serving.iter().filter(|(_, r)| r.busy).count() as u32;
    let fresh_ready_idle = serving
        .iter()
        .filter(|(t, r)| t.state == TaskState::Running && r.online && !r.busy)
        .count() as u32
        - stale.len() as u32;
    let idle_needed = desired.saturating_sub(busy_serving);
    let retire_stale = (stale.len() as u32)
        .min((fresh_ready_idle + stale.len() as u32).saturating_sub(idle_needed));
    let mut recycled: BTreeSet<&str> = BTreeSet::new();
    if observed.assigned_jobs.is_some() {
        // Those the pool has too many of even without the replacements are scale-in; the rest
        // were replaced.
        let surplus = working
            .saturating_sub(stale.len() as u32)
            .saturating_sub(desired) as usize;
        for (n, (task, runner)) in stale.iter().take(retire_stale as usize).enumerate() {
            recycled.insert(task.id.as_str());
            actions.push(Action::Retire {
                runner_id: runner.id,
                runner_name: runner.name.clone(),
                task_id: Some(task.id.clone()),
                reason: if n < surplus {
                    Reason::ScaleIn
                } else {
                    Reason::Recycle
                },
            });
        }
    }
    let retired_now = recycled.len() as u32;
    let stale_left = stale.len() as u32 - retired_now;
    let after_retire = capacity - retired_now;
    // Stale runners left are replaced where `max` has room; until then they count.
    let replaceable = if observed.assigned_jobs.is_some() {
        stale_left.min(limits.max.saturating_sub(after_retire))
    } else {
        0
    };
    let launch_capacity = after_retire - replaceable;
    let working_fresh = working - retired_now - stale_left;

    let mut launch_held = None;
    if desired > launch_capacity {
        // Never past `max`, replacements included.
        let mut count = (desired - launch_capacity).min(limits.max.saturating_sub(after_retire));
        if let Some((until, why)) = &next.launch_blocked {
            launch_held = Some(format!(
                "{why} (retrying after {})",
                until.format("%H:%M:%S")
            ));
            count = 0;
        }
        if let Some(limit) = allowance.launches
            && count > limit
        {
            count = limit;
            launch_held = allowance.reason.clone().or(launch_held);
        }
        if count > 0 {
            actions.push(Action::Launch { count });
        }
    } else if desired < working_fresh && observed.assigned_jobs.is_some() {
        let mut idle: Vec<&(&Task, &ObservedRunner)> = serving
            .iter()
            .filter(|(t, r)| t.state == TaskState::Running && r.online && !r.busy)
            .filter(|(t, _)| !stale.iter().any(|s| s.0.id == t.id))
            .collect();
        idle.sort_by(|a, b| (born(a.0), &a.0.id).cmp(&(born(b.0), &b.0.id)));
        for (task, runner) in idle.into_iter().take((working_fresh - desired) as usize) {
            actions.push(Action::Retire {
                runner_id: runner.id,
                runner_name: runner.name.clone(),
                task_id: Some(task.id.clone()),
                reason: Reason::ScaleIn,
            });
        }
    }

    // One-shot secrets: delete those no live task will read, once past a short grace that
    // covers a launch between the secret's write and the task's first listing.
    let live_names: BTreeSet<&str> = live_tasks
        .iter()
        .filter(|t| !retired_tasks.contains(t.id.as_str()))
        .map(|t| t.tags.runner_name.as_str())
        .chain(next.in_flight.values().map(|f| f.runner_name.as_str()))
        .collect();
    for handoff in &observed.handoffs {
        let unread_for_too_long = older_than(handoff.created_at, now, limits.handoff_max_age);
        let orphaned = !live_names.contains(handoff.runner_name.as_str())
            && older_than(handoff.created_at, now, HANDOFF_LAUNCH_GRACE);
        if unread_for_too_long || orphaned {
            actions.push(Action::DeleteHandoff {
                name: handoff.name.clone(),
                reason: Reason::Handoff,
            });
        }
    }

    next.task_seen = task_seen;
    next.task_runner = live_tasks
        .iter()
        .map(|t| (t.id.clone(), t.tags.runner_id))
        .collect();
    let registered = observed.runners.len() as u32;
    let busy = observed.runners.iter().filter(|r| r.busy).count() as u32;
    let idle = observed
        .runners
        .iter()
        .filter(|r| r.online && !r.busy)
        .count() as u32;
    let pending = live_tasks
        .iter()
        .filter(|t| t.state == TaskState::Pending)
        .count() as u32
        + next.in_flight.len() as u32;
    Plan {
        actions,
        status: PoolStatus {
            assigned_jobs: observed.assigned_jobs,
            desired,
            capacity,
            working,
            pending,
            registered,
            busy,
            idle,
            launch_held,
            awaiting_statistics: desired.saturating_sub(working).min(finishing_counted),
        },
        memory: next,
    }
}

/// The launches of earlier passes that still count: not yet listed (by task id or runner id),
/// not done (a registration once seen and now gone), not expired.
fn still_in_flight(
    memory: &Memory,
    observed: &Observed,
    runners: &BTreeMap<u64, &ObservedRunner>,
    now: DateTime<Utc>,
) -> BTreeMap<String, InFlight> {
    let listed: BTreeMap<&str, bool> = observed
        .tasks
        .iter()
        .map(|t| (t.id.as_str(), is_live(t)))
        .collect();
    let listed_live_runners: BTreeSet<u64> = observed
        .tasks
        .iter()
        .filter(|t| is_live(t))
        .map(|t| t.tags.runner_id)
        .collect();
    let listed_at = observed.listed_at.unwrap_or(now);
    memory
        .in_flight
        .iter()
        // Listed live: an ordinary task from now on.
        .filter(|(id, f)| {
            listed.get(id.as_str()) != Some(&true) && !listed_live_runners.contains(&f.runner_id)
        })
        .filter(|(_, f)| !older_than(f.launched_at, now, IN_FLIGHT_EXPIRY))
        // Dropped by GitHub (or retired) before any listing showed its task: no job to wait for.
        .filter(|(_, f)| {
            !observed.dropped.contains(&f.runner_id) && !observed.retired.contains(&f.runner_id)
        })
        .filter_map(|(id, f)| {
            let registered = runners.contains_key(&f.runner_id);
            // First listed already stopped (a backend that lists stopped tasks, and a runner
            // done before any pass saw it live): done too.
            let stopped = listed.get(id.as_str()) == Some(&false);
            let mut f = f.clone();
            if (f.registration_seen && !registered) || stopped {
                // Done; counted like a listed task whose runner finished (see `plan`).
                let known_gone = observed.gone_at.get(&f.runner_id).copied();
                let since = *f
                    .finished_seen
                    .get_or_insert(known_gone.unwrap_or(listed_at));
                if statistics_newer_than(observed, since) {
                    return None;
                }
            }
            f.registration_seen |= registered;
            Some((id.clone(), f))
        })
        .collect()
}

/// Whether the statistics were received after `at` (unknown: no).
fn statistics_newer_than(observed: &Observed, at: DateTime<Utc>) -> bool {
    observed.statistics_at.is_some_and(|received| received > at)
}

/// How long a one-shot secret may exist before its task shows up in a listing.
pub const HANDOFF_LAUNCH_GRACE: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::backend::TaskTags;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap()
    }

    fn ago(secs: i64) -> DateTime<Utc> {
        now() - chrono::Duration::seconds(secs)
    }

    fn limits(min_idle: u32, max: u32) -> PoolLimits {
        PoolLimits {
            min_idle,
            max,
            max_runtime: Duration::from_secs(6 * 3600),
            pending_timeout: Duration::from_secs(600),
            registration_timeout: Duration::from_secs(900),
            offline_grace: Duration::from_secs(600),
            handoff_max_age: Duration::from_secs(1200),
            idle_recycle_after: Duration::from_secs(240),
        }
    }

    fn task(id: u64, state: TaskState, age_secs: i64) -> Task {
        Task {
            id: format!("task-{id}"),
            tags: TaskTags {
                pool: "p".into(),
                runner_name: format!("p-runner{id:02}"),
                runner_id: id,
            },
            state,
            created_at: ago(age_secs),
            stop_reason: None,
            capacity_provider: None,
            launch_fallbacks: Vec::new(),
            times: Default::default(),
            log: None,
        }
    }

    fn runner(id: u64, online: bool, busy: bool) -> ObservedRunner {
        ObservedRunner {
            id,
            name: format!("p-runner{id:02}"),
            online,
            busy,
        }
    }

    /// A running task with its online runner.
    fn serving(id: u64, busy: bool, age_secs: i64) -> (Task, ObservedRunner) {
        (
            task(id, TaskState::Running, age_secs),
            runner(id, true, busy),
        )
    }

    fn observed(assigned: Option<u32>, pairs: &[(Task, ObservedRunner)]) -> Observed {
        Observed {
            assigned_jobs: assigned,
            runners: pairs.iter().map(|p| p.1.clone()).collect(),
            tasks: pairs.iter().map(|p| p.0.clone()).collect(),
            handoffs: vec![],
            ..Observed::default()
        }
    }

    /// One pass at `now`, remembering `memory`, with no budget limit.
    fn at(limits: &PoolLimits, observed: &Observed, memory: &Memory, now: DateTime<Utc>) -> Plan {
        plan(limits, observed, memory, &Allowance::unlimited(), now)
    }

    /// A launch of an earlier pass that no listing has shown.
    fn flying(id: u64, secs_ago: i64, registration_seen: bool) -> (String, InFlight) {
        (
            format!("task-{id}"),
            InFlight {
                runner_id: id,
                runner_name: format!("p-runner{id:02}"),
                launched_at: ago(secs_ago),
                registration_seen,
                finished_seen: None,
            },
        )
    }

    #[test]
    fn a_launch_the_listing_does_not_show_yet_is_not_repeated() {
        let l = limits(0, 10);
        // Two jobs; two launches last pass; the listing shows neither task, GitHub one runner.
        let obs = Observed {
            assigned_jobs: Some(2),
            runners: vec![runner(1, false, false)],
            ..Observed::default()
        };
        let memory = Memory {
            in_flight: [flying(1, 2, false), flying(2, 2, false)].into(),
            ..Memory::default()
        };
        let p = at(&l, &obs, &memory, now());
        assert_eq!(launches(&p), 0, "{:?}", p.actions);
        assert_eq!((p.status.capacity, p.status.pending), (2, 2));
        assert!(p.memory.in_flight["task-1"].registration_seen);
        assert!(!p.memory.in_flight["task-2"].registration_seen);
        // The same pass without the memory launches both again: the over-launch this prevents.
        assert_eq!(launches(&at(&l, &obs, &Memory::default(), now())), 2);
        // A third job: one more launch, not three.
        let more = Observed {
            assigned_jobs: Some(3),
            ..obs.clone()
        };
        assert_eq!(launches(&at(&l, &more, &memory, now())), 1);
        // Never past max, whatever is in flight.
        let full = Observed {
            assigned_jobs: Some(30),
            ..obs
        };
        assert_eq!(launches(&at(&l, &full, &memory, now())), 8);
    }

    #[test]
    fn an_in_flight_launch_ends_when_listed_done_or_expired() {
        let l = limits(0, 10);
        let memory = Memory {
            in_flight: [flying(1, 2, true), flying(2, 2, false), flying(3, 2, true)].into(),
            ..Memory::default()
        };
        // Task 1 listed (by runner id, under another task id); runner 3's registration, seen
        // before, is gone (its job is done); runner 2 not registered yet: still in flight.
        let mut listed = task(1, TaskState::Pending, 2);
        listed.id = "arn:task/elsewhere".into();
        // Statistics received after the listing: runner 3's job is out of them.
        let obs = Observed {
            assigned_jobs: Some(2),
            statistics_at: Some(now() + chrono::Duration::seconds(1)),
            listed_at: Some(now()),
            runners: vec![runner(1, false, false)],
            gone_at: Default::default(),
            dropped: Default::default(),
            retired: Default::default(),
            tasks: vec![listed],
            handoffs: vec![],
        };
        let p = at(&l, &obs, &memory, now());
        assert_eq!(
            p.memory.in_flight.keys().collect::<Vec<_>>(),
            vec!["task-2"]
        );
        assert_eq!(
            p.status.capacity, 2,
            "the listed task and the one in flight"
        );
        // Statistics from before that listing may still count runner 3's job: it counts, and
        // stays remembered as finished, until newer statistics come.
        let stale = Observed {
            statistics_at: Some(now() - chrono::Duration::seconds(1)),
            ..obs.clone()
        };
        let p = at(&l, &stale, &memory, now());
        assert_eq!(p.status.capacity, 3);
        assert_eq!(p.status.awaiting_statistics, 0, "nothing to launch anyway");
        assert_eq!(p.memory.in_flight["task-3"].finished_seen, Some(now()));
        let p = at(&l, &obs, &p.memory, now() + chrono::Duration::seconds(2));
        assert!(!p.memory.in_flight.contains_key("task-3"));
        // Past the expiry nothing counts any more.
        let late = now() + chrono::Duration::from_std(IN_FLIGHT_EXPIRY).unwrap();
        let p = at(
            &l,
            &Observed::default(),
            &memory,
            late + chrono::Duration::seconds(1),
        );
        assert!(p.memory.in_flight.is_empty());
    }

    #[test]
    fn a_launch_first_listed_already_stopped_counts_until_statistics_newer_than_its_end() {
        // A backend that lists stopped tasks, and a runner that did its job before any pass
        // saw its task live: the statistics of the last message may still count that job.
        let l = limits(0, 10);
        let memory = Memory {
            in_flight: [flying(1, 5, false)].into(),
            ..Memory::default()
        };
        let stopped = task(1, TaskState::Stopped, 5);
        let stale = Observed {
            assigned_jobs: Some(1),
            statistics_at: Some(now() - chrono::Duration::seconds(3)),
            listed_at: Some(now()),
            tasks: vec![stopped.clone()],
            ..Observed::default()
        };
        let p = at(&l, &stale, &memory, now());
        assert_eq!(
            launches(&p),
            0,
            "no second runner for a job that may be done"
        );
        assert_eq!(p.status.awaiting_statistics, 1);
        // The stream said when its runner completed: statistics after that let it go.
        let told = Observed {
            gone_at: [(1, now() - chrono::Duration::seconds(4))].into(),
            ..stale.clone()
        };
        let p = at(&l, &told, &memory, now());
        assert!(p.memory.in_flight.is_empty());
        assert_eq!(
            launches(&p),
            1,
            "the statistics still count a job: it gets a runner"
        );
    }

    #[test]
    fn an_idle_runner_past_its_recycle_age_is_replaced_first_then_retired() {
        let l = limits(1, 5);
        // Runner 1 has waited 5 minutes for a job (recycle after 4).
        let old = serving(1, false, 300);
        let p = at(
            &l,
            &observed(Some(0), std::slice::from_ref(&old)),
            &Memory::default(),
            now(),
        );
        assert_eq!(launches(&p), 1, "a replacement first");
        assert!(
            retired(&p).is_empty(),
            "the old one stays until it is ready"
        );
        // The replacement is starting: nothing more.
        let starting = (task(2, TaskState::Running, 5), runner(2, false, false));
        let p = at(
            &l,
            &observed(Some(0), &[old.clone(), starting]),
            &p.memory,
            now(),
        );
        assert_eq!(launches(&p), 0);
        assert!(retired(&p).is_empty(), "never under min_idle ready runners");
        // It is online and idle: the old one goes.
        let ready = serving(2, false, 10);
        let p = at(&l, &observed(Some(0), &[old, ready]), &p.memory, now());
        assert_eq!(retired(&p), vec![(1, Reason::Recycle)]);
        assert_eq!(launches(&p), 0);
    }

    #[test]
    fn a_stale_runner_with_no_room_under_max_is_kept_and_a_busy_one_never_recycled() {
        let l = limits(2, 2);
        let p = at(
            &l,
            &observed(Some(0), &[serving(1, false, 300), serving(2, false, 300)]),
            &Memory::default(),
            now(),
        );
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        let l = limits(1, 5);
        let p = at(
            &l,
            &observed(Some(1), &[serving(1, true, 3_000)]),
            &Memory::default(),
            now(),
        );
        assert!(retired(&p).is_empty());
        assert_eq!(
            launches(&p),
            1,
            "min_idle beside the busy one, nothing more"
        );
    }

    #[test]
    fn a_runner_github_dropped_is_stopped_at_once_and_replaced_in_the_same_pass() {
        let l = limits(1, 5);
        // Its registration went while it waited; the statistics are older than that.
        let obs = Observed {
            assigned_jobs: Some(0),
            statistics_at: Some(now() - chrono::Duration::seconds(60)),
            listed_at: Some(now()),
            tasks: vec![task(1, TaskState::Running, 200)],
            dropped: [1].into(),
            gone_at: [(1, now())].into(),
            ..Observed::default()
        };
        let p = at(&l, &obs, &Memory::default(), now());
        assert!(p.actions.contains(&Action::StopTask {
            task_id: "task-1".into(),
            reason: Reason::Dropped
        }));
        assert_eq!(
            launches(&p),
            1,
            "no job of its was finishing: replace it now"
        );
    }

    #[test]
    fn an_in_flight_runner_is_no_ghost_and_its_secret_no_leftover() {
        let l = limits(0, 10);
        let obs = Observed {
            assigned_jobs: Some(1),
            statistics_at: None,
            listed_at: None,
            runners: vec![runner(1, false, false)],
            gone_at: Default::default(),
            dropped: Default::default(),
            retired: Default::default(),
            tasks: vec![],
            handoffs: vec![Handoff {
                name: "/hangar/jit/p/p-runner01".into(),
                pool: "p".into(),
                runner_name: "p-runner01".into(),
                created_at: ago(150),
            }],
        };
        let memory = Memory {
            in_flight: [flying(1, 150, true)].into(),
            ghost_since: [(1, ago(700))].into(),
            ..Memory::default()
        };
        let p = at(&l, &obs, &memory, now());
        assert!(p.actions.is_empty(), "{:?}", p.actions);
        // Once it is no longer in flight (expired, never listed), both are cleaned up as usual.
        let p = at(
            &l,
            &obs,
            &Memory {
                in_flight: BTreeMap::new(),
                ..memory
            },
            now(),
        );
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::DeleteHandoff { .. }))
        );
        assert!(p.actions.iter().any(|a| matches!(
            a,
            Action::Retire {
                reason: Reason::Ghost,
                ..
            }
        )));
    }

    fn run(limits: &PoolLimits, observed: &Observed) -> Plan {
        plan(
            limits,
            observed,
            &Memory::default(),
            &Allowance::unlimited(),
            now(),
        )
    }

    fn launches(plan: &Plan) -> u32 {
        plan.actions
            .iter()
            .map(|a| match a {
                Action::Launch { count } => *count,
                _ => 0,
            })
            .sum()
    }

    fn retired(plan: &Plan) -> Vec<(u64, Reason)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::Retire {
                    runner_id, reason, ..
                } => Some((*runner_id, *reason)),
                _ => None,
            })
            .collect()
    }

    fn stopped(plan: &Plan) -> Vec<(String, Reason)> {
        plan.actions
            .iter()
            .filter_map(|a| match a {
                Action::StopTask { task_id, reason } => Some((task_id.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn desired_follows_assigned_jobs_within_min_idle_and_max() {
        // (min_idle, max, assigned, running idle runners) -> (desired, launches, scale-ins)
        /// (min_idle, max, assigned, idle runners, desired, launches, scale-ins)
        type Case = (u32, u32, Option<u32>, u64, u32, u32, usize);
        let table: &[Case] = &[
            (0, 10, Some(3), 0, 3, 3, 0), // scale up from zero
            (0, 5, Some(20), 0, 5, 5, 0), // capped at max
            (0, 5, Some(20), 2, 5, 3, 0), // capped, counting what runs
            (2, 10, Some(0), 0, 2, 2, 0), // idle floor
            (2, 10, Some(3), 0, 5, 5, 0), // floor plus demand
            (1, 10, None, 0, 1, 1, 0),    // unknown demand: only the floor
            (0, 10, None, 3, 3, 0, 0),    // unknown demand: never scale in
            (0, 10, Some(1), 3, 1, 0, 2), // scale in the excess idle
            (1, 10, Some(0), 3, 1, 0, 2), // down to the floor
            (0, 0, Some(4), 0, 0, 0, 0),  // a paused pool
            (3, 3, Some(0), 3, 3, 0, 0),  // at the floor: nothing to do
        ];
        for &(min_idle, max, assigned, idle, desired, launch, scale_in) in table {
            let pairs: Vec<_> = (1..=idle).map(|id| serving(id, false, 60)).collect();
            let plan = run(&limits(min_idle, max), &observed(assigned, &pairs));
            let case = format!("min_idle={min_idle} max={max} assigned={assigned:?} idle={idle}");
            assert_eq!(plan.status.desired, desired, "{case}");
            assert_eq!(launches(&plan), launch, "{case}");
            assert_eq!(retired(&plan).len(), scale_in, "{case}");
        }
    }

    #[test]
    fn busy_runners_are_never_chosen_for_scale_in() {
        // Two busy, one idle, no demand left: only the idle one goes.
        let pairs = vec![
            serving(1, true, 300),
            serving(2, false, 200),
            serving(3, true, 100),
        ];
        let plan = run(&limits(0, 10), &observed(Some(0), &pairs));
        assert_eq!(retired(&plan), vec![(2, Reason::ScaleIn)]);
    }

    #[test]
    fn scale_in_takes_the_oldest_idle_runners_and_never_a_pending_task() {
        let mut pairs = vec![
            serving(1, false, 100),
            serving(2, false, 300),
            serving(3, false, 200),
        ];
        // Registered (JIT) but its task is still pending: about to take a job.
        pairs.push((task(4, TaskState::Pending, 500), runner(4, false, false)));
        let plan = run(&limits(0, 10), &observed(Some(2), &pairs));
        assert_eq!(
            retired(&plan),
            vec![(2, Reason::ScaleIn), (3, Reason::ScaleIn)],
            "capacity 4, desired 2: the two oldest idle online runners go, never the pending one"
        );
        let plan = run(&limits(0, 10), &observed(Some(0), &pairs));
        assert_eq!(
            retired(&plan).len(),
            3,
            "even with no demand, the pending one stays"
        );
    }

    #[test]
    fn a_reassigned_job_shrinks_demand_and_frees_only_an_idle_runner() {
        // Two jobs were assigned and two runners started; one job was reassigned elsewhere
        // (JobCompleted canceled), so assigned drops to 1 while one runner already holds a job.
        let pairs = vec![serving(1, true, 60), serving(2, false, 60)];
        let plan = run(&limits(0, 10), &observed(Some(1), &pairs));
        assert_eq!(retired(&plan), vec![(2, Reason::ScaleIn)]);
        // When it is assigned back, the next pass launches again.
        let plan = run(&limits(0, 10), &observed(Some(2), &pairs[..1]));
        assert_eq!(launches(&plan), 1);
    }

    #[test]
    fn stuck_pending_tasks_are_stopped_with_their_registration() {
        let pairs = vec![(task(1, TaskState::Pending, 601), runner(1, false, false))];
        let plan = run(&limits(0, 10), &observed(Some(1), &pairs));
        assert_eq!(retired(&plan), vec![(1, Reason::PendingTimeout)]);
        assert_eq!(launches(&plan), 1, "the job still needs a runner");
        // Without a registration there is nothing to remove: just the task.
        let obs = Observed {
            assigned_jobs: Some(0),
            tasks: vec![task(7, TaskState::Pending, 601)],
            ..Observed::default()
        };
        assert_eq!(
            stopped(&run(&limits(0, 10), &obs)),
            vec![("task-7".to_string(), Reason::PendingTimeout)]
        );
        // A young pending task is left alone.
        let pairs = vec![(task(1, TaskState::Pending, 599), runner(1, false, false))];
        assert!(
            run(&limits(0, 10), &observed(Some(1), &pairs))
                .actions
                .is_empty()
        );
    }

    #[test]
    fn runners_that_never_come_online_are_retired_after_the_registration_timeout() {
        let young = vec![(task(1, TaskState::Running, 899), runner(1, false, false))];
        assert!(
            run(&limits(0, 10), &observed(Some(1), &young))
                .actions
                .is_empty()
        );
        let old = vec![(task(1, TaskState::Running, 901), runner(1, false, false))];
        let plan = run(&limits(0, 10), &observed(Some(1), &old));
        assert_eq!(retired(&plan), vec![(1, Reason::NeverRegistered)]);
        assert_eq!(launches(&plan), 1);
    }

    #[test]
    fn a_task_without_a_creation_time_still_ages_from_when_it_was_first_seen() {
        // A backend that reports every task as created "now" (moto does) must not keep a runner
        // that never comes online young forever.
        let limits = limits(0, 10);
        let fresh = |at: DateTime<Utc>| {
            let mut t = task(1, TaskState::Running, 0);
            t.created_at = at;
            vec![(t, runner(1, false, false))]
        };
        let first = plan(
            &limits,
            &observed(Some(1), &fresh(now())),
            &Memory::default(),
            &Allowance::unlimited(),
            now(),
        );
        assert!(first.actions.is_empty());
        let later = now() + chrono::Duration::seconds(901);
        let second = plan(
            &limits,
            &observed(Some(1), &fresh(later)),
            &first.memory,
            &Allowance::unlimited(),
            later,
        );
        assert_eq!(retired(&second), vec![(1, Reason::NeverRegistered)]);
    }

    #[test]
    fn idle_runners_past_max_runtime_are_retired_but_busy_ones_never() {
        let pairs = vec![
            serving(1, false, 6 * 3600 + 1),
            serving(2, true, 6 * 3600 + 1),
        ];
        let plan = run(&limits(0, 10), &observed(Some(2), &pairs));
        assert_eq!(retired(&plan), vec![(1, Reason::MaxRuntime)]);
        assert_eq!(launches(&plan), 1, "its replacement");
    }

    #[test]
    fn ghosts_are_removed_only_after_the_grace_period() {
        let obs = Observed {
            assigned_jobs: Some(0),
            runners: vec![runner(9, false, false), runner(8, false, true)],
            ..Observed::default()
        };
        let limits = limits(0, 10);
        let first = at(&limits, &obs, &Memory::default(), now());
        assert!(first.actions.is_empty(), "first sighting starts the clock");
        assert_eq!(first.memory.ghost_since.get(&9), Some(&now()));
        let later = now() + chrono::Duration::seconds(601);
        let second = at(&limits, &obs, &first.memory, later);
        assert_eq!(
            retired(&second),
            vec![(9, Reason::Ghost)],
            "never the busy one"
        );
        // A ghost that comes back online is forgotten.
        let back = Observed {
            runners: vec![runner(9, true, false)],
            tasks: vec![task(9, TaskState::Running, 60)],
            ..obs.clone()
        };
        let third = at(&limits, &back, &first.memory, later);
        assert!(third.memory.ghost_since.is_empty());
    }

    #[test]
    fn a_runner_that_went_offline_with_its_task_running_is_a_ghost_after_grace() {
        let limits = limits(0, 10);
        let pairs = vec![serving(1, false, 60)];
        let seen = plan(
            &limits,
            &observed(Some(1), &pairs),
            &Memory::default(),
            &Allowance::unlimited(),
            now(),
        );
        let offline = vec![(task(1, TaskState::Running, 60), runner(1, false, false))];
        let first = plan(
            &limits,
            &observed(Some(1), &offline),
            &seen.memory,
            &Allowance::unlimited(),
            now(),
        );
        assert!(first.actions.is_empty());
        let later = now() + chrono::Duration::seconds(601);
        let second = plan(
            &limits,
            &observed(Some(1), &offline),
            &first.memory,
            &Allowance::unlimited(),
            later,
        );
        assert_eq!(retired(&second), vec![(1, Reason::Ghost)]);
    }

    #[test]
    fn a_task_whose_registration_is_gone_is_not_capacity_and_is_stopped_after_grace() {
        let limits = limits(0, 10);
        // Statistics received after the listing: they no longer count the finished job.
        let obs = Observed {
            assigned_jobs: Some(1),
            statistics_at: Some(now() + chrono::Duration::seconds(1)),
            listed_at: Some(now()),
            tasks: vec![task(1, TaskState::Running, 60)],
            ..Observed::default()
        };
        let first = at(&limits, &obs, &Memory::default(), now());
        assert_eq!(
            launches(&first),
            1,
            "a finished ephemeral runner serves no new job"
        );
        assert!(
            stopped(&first).is_empty(),
            "it is given time to exit by itself"
        );
        let later = now() + chrono::Duration::seconds(601);
        let second = at(&limits, &obs, &first.memory, later);
        assert_eq!(
            stopped(&second),
            vec![("task-1".to_string(), Reason::Orphan)]
        );
    }

    #[test]
    fn a_finished_runner_counts_until_statistics_newer_than_the_listing_that_showed_it_gone() {
        // 20 jobs assigned, 19 runners busy, and runner 20's registration gone from a listing
        // answered at t0: its job finished. Statistics received before t0 may still count that
        // job (GitHub's runner list and statistics are read at different times).
        let limits = limits(0, 20);
        let t0 = now();
        let pairs: Vec<(Task, ObservedRunner)> = (1..=19).map(|i| serving(i, true, 60)).collect();
        let mut tasks: Vec<Task> = pairs.iter().map(|p| p.0.clone()).collect();
        tasks.push(task(20, TaskState::Running, 60));
        let runners: Vec<ObservedRunner> = pairs.iter().map(|p| p.1.clone()).collect();
        let stale = Observed {
            assigned_jobs: Some(20),
            statistics_at: Some(t0 - chrono::Duration::milliseconds(50)),
            listed_at: Some(t0),
            runners: runners.clone(),
            gone_at: Default::default(),
            dropped: Default::default(),
            retired: Default::default(),
            tasks: tasks.clone(),
            handoffs: vec![],
        };
        let first = at(&limits, &stale, &Memory::default(), t0);
        assert_eq!(launches(&first), 0, "no second runner for the finished job");
        assert_eq!(first.status.capacity, 20);
        assert_eq!(
            first.status.awaiting_statistics, 1,
            "fresher statistics would decide"
        );
        // The same stale statistics on a later pass (a later listing): still counted, as the
        // task was first seen finished at t0.
        let later = Observed {
            listed_at: Some(t0 + chrono::Duration::seconds(2)),
            ..stale.clone()
        };
        let second = at(
            &limits,
            &later,
            &first.memory,
            t0 + chrono::Duration::seconds(2),
        );
        assert_eq!(launches(&second), 0);
        // Statistics received after t0 that still show 20 assigned: a new job came, launch.
        let fresh = Observed {
            statistics_at: Some(t0 + chrono::Duration::milliseconds(10)),
            ..later.clone()
        };
        let third = at(
            &limits,
            &fresh,
            &second.memory,
            t0 + chrono::Duration::seconds(3),
        );
        assert_eq!(launches(&third), 1);
        assert_eq!(third.status.awaiting_statistics, 0);
        // Unknown statistics time: taken as old (the safe reading).
        let unknown = Observed {
            statistics_at: None,
            ..stale
        };
        assert_eq!(launches(&at(&limits, &unknown, &Memory::default(), t0)), 0);
    }

    #[test]
    fn a_task_gone_from_the_listing_counts_until_newer_statistics_and_never_drives_scale_in() {
        let limits = limits(0, 10);
        let t0 = now();
        // Pass 1: runners 1 and 2 busy, 3 idle; 3 jobs assigned.
        let pairs = [
            serving(1, true, 60),
            serving(2, true, 60),
            serving(3, false, 60),
        ];
        let first = at(
            &limits,
            &Observed {
                statistics_at: Some(t0 - chrono::Duration::seconds(1)),
                listed_at: Some(t0),
                ..observed(Some(3), &pairs)
            },
            &Memory::default(),
            t0,
        );
        assert!(first.actions.is_empty());
        // Pass 2: runner 1 finished, its task already stopped and gone from the listing; the
        // statistics are from before that listing and still say 3.
        let t1 = t0 + chrono::Duration::seconds(2);
        let stale = Observed {
            statistics_at: Some(t1 - chrono::Duration::milliseconds(500)),
            listed_at: Some(t1),
            ..observed(Some(3), &pairs[1..])
        };
        let second = at(&limits, &stale, &first.memory, t1);
        assert_eq!(launches(&second), 0, "no runner for a job that is done");
        assert_eq!(second.status.awaiting_statistics, 1);
        // Statistics now say 1 job (runner 2's): runner 3 is surplus, and retired; the gone
        // task is counted for launches only, so no second runner is retired for it.
        let fewer = Observed {
            assigned_jobs: Some(1),
            ..stale.clone()
        };
        let third = at(&limits, &fewer, &second.memory, t1);
        assert_eq!(retired(&third).len(), 1, "{:?}", third.actions);
        // Fresh statistics (after t1) still saying 3: two new jobs, one runner each.
        let fresh = Observed {
            statistics_at: Some(t1 + chrono::Duration::milliseconds(100)),
            ..stale
        };
        let fourth = at(
            &limits,
            &fresh,
            &second.memory,
            t1 + chrono::Duration::seconds(1),
        );
        assert_eq!(launches(&fourth), 1);
        assert!(
            fourth.memory.finishing.is_empty(),
            "the gone task is forgotten"
        );
    }

    #[test]
    fn stopping_and_stopped_tasks_are_not_capacity() {
        let obs = Observed {
            assigned_jobs: Some(2),
            tasks: vec![
                task(1, TaskState::Stopping, 60),
                task(2, TaskState::Stopped, 60),
            ],
            runners: vec![runner(1, true, true)],
            handoffs: vec![],
            ..Observed::default()
        };
        let plan = run(&limits(0, 10), &obs);
        assert_eq!(launches(&plan), 2);
        assert!(retired(&plan).is_empty(), "a busy runner is never retired");
    }

    #[test]
    fn launches_are_held_by_back_off_and_limited_by_the_budget() {
        let limits = limits(0, 10);
        let obs = observed(Some(5), &[]);
        let blocked = Memory {
            launch_blocked: Some((now() + chrono::Duration::seconds(30), "no capacity".into())),
            ..Memory::default()
        };
        let plan_ = at(&limits, &obs, &blocked, now());
        assert_eq!(launches(&plan_), 0);
        assert!(plan_.status.launch_held.unwrap().contains("no capacity"));
        // Once the back-off has passed it is forgotten.
        let later = now() + chrono::Duration::seconds(31);
        let plan_ = at(&limits, &obs, &blocked, later);
        assert_eq!(launches(&plan_), 5);
        assert_eq!(plan_.memory.launch_blocked, None);
        let budget = Allowance {
            launches: Some(2),
            reason: Some("GitHub budget".into()),
        };
        let plan_ = plan(&limits, &obs, &Memory::default(), &budget, now());
        assert_eq!(launches(&plan_), 2);
        assert_eq!(plan_.status.launch_held.as_deref(), Some("GitHub budget"));
    }

    #[test]
    fn one_shot_secrets_nobody_will_read_are_deleted() {
        let handoff = |runner: u64, age: i64| Handoff {
            name: format!("/hangar/jit/p/p-runner{runner:02}"),
            pool: "p".into(),
            runner_name: format!("p-runner{runner:02}"),
            created_at: ago(age),
        };
        let obs = Observed {
            assigned_jobs: Some(2),
            statistics_at: None,
            listed_at: None,
            gone_at: Default::default(),
            dropped: Default::default(),
            retired: Default::default(),
            tasks: vec![
                task(1, TaskState::Pending, 30),
                task(2, TaskState::Pending, 1300),
            ],
            runners: vec![runner(1, false, false), runner(2, false, false)],
            handoffs: vec![
                handoff(1, 30),   // its task is starting: keep
                handoff(2, 1300), // unread for too long
                handoff(3, 121),  // no task will read it
                handoff(4, 60),   // no task yet, but maybe a launch in progress: keep
            ],
        };
        let mut l = limits(0, 10);
        l.pending_timeout = Duration::from_secs(3600);
        l.registration_timeout = Duration::from_secs(3600);
        let deleted: Vec<String> = run(&l, &obs)
            .actions
            .into_iter()
            .filter_map(|a| match a {
                Action::DeleteHandoff { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        assert_eq!(
            deleted,
            vec!["/hangar/jit/p/p-runner02", "/hangar/jit/p/p-runner03"]
        );
    }

    /// Over many random observations: no action ever removes a busy runner or stops its task,
    /// and launches never take the pool past `max`.
    #[test]
    fn no_random_observation_makes_plan_touch_a_busy_runner_or_exceed_max() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..2000 {
            let max = rng.random_range(0..8);
            let l = limits(rng.random_range(0..=max), max);
            let mut obs = Observed {
                assigned_jobs: rng.random_bool(0.8).then(|| rng.random_range(0..12)),
                ..Observed::default()
            };
            for id in 0..rng.random_range(0..10u64) {
                let state = [
                    TaskState::Pending,
                    TaskState::Running,
                    TaskState::Stopping,
                    TaskState::Stopped,
                ][rng.random_range(0..4)];
                if rng.random_bool(0.9) {
                    obs.tasks.push(task(id, state, rng.random_range(0..30_000)));
                }
                if rng.random_bool(0.85) {
                    obs.runners
                        .push(runner(id, rng.random_bool(0.7), rng.random_bool(0.4)));
                }
            }
            let memory = Memory {
                ghost_since: obs.runners.iter().map(|r| (r.id, ago(700))).collect(),
                orphan_since: obs.tasks.iter().map(|t| (t.id.clone(), ago(700))).collect(),
                seen_online: obs
                    .runners
                    .iter()
                    .map(|r| r.id)
                    .filter(|_| rng.random_bool(0.5))
                    .collect(),
                task_seen: BTreeMap::new(),
                launch_blocked: None,
                finishing: BTreeMap::new(),
                task_runner: BTreeMap::new(),
                // Launches no listing shows yet, some for runners the listing does show.
                in_flight: (0..rng.random_range(0..4))
                    .map(|k| {
                        let flight = InFlight {
                            runner_id: rng.random_range(0..40),
                            runner_name: format!("flying-{k}"),
                            launched_at: ago(rng.random_range(0..400)),
                            registration_seen: rng.random_bool(0.5),
                            finished_seen: None,
                        };
                        (format!("flying-task-{k}"), flight)
                    })
                    .collect(),
            };
            let p = at(&l, &obs, &memory, now());
            let busy: BTreeSet<u64> = obs
                .runners
                .iter()
                .filter(|r| r.busy)
                .map(|r| r.id)
                .collect();
            for action in &p.actions {
                match action {
                    Action::Retire { runner_id, .. } => {
                        assert!(!busy.contains(runner_id), "{obs:?} -> {action:?}")
                    }
                    Action::StopTask { task_id, .. } => {
                        let t = obs.tasks.iter().find(|t| &t.id == task_id).unwrap();
                        assert!(!busy.contains(&t.tags.runner_id), "{obs:?} -> {action:?}");
                    }
                    _ => {}
                }
            }
            assert!(p.status.capacity + launches(&p) <= l.max.max(p.status.capacity));
        }
    }
}
