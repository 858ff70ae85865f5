//! A pool's runners as the scale set's message stream and this controller's own actions tell
//! them, so the REST runner list (one GitHub call per pass per pool) is read only when the
//! stream cannot answer: at start, on a timer, and when the stream and the backend disagree.
//!
//! What feeds it: the listener's `JobStarted` (runner id and name: the runner holds a job) and
//! `JobCompleted` (its job is done and, being ephemeral, its registration is gone); the
//! reconciler's launches (a registration it created), retirements (one it removed) and task
//! listings; and REST listings when they are read. [`Ledger::view`] is what `plan` gets as
//! `Observed::runners`.
//!
//! Rules:
//! - **Busy comes from the stream**: a runner named in a `JobStarted` is busy until its
//!   `JobCompleted`, whatever a REST listing says (GitHub's `busy` flag is reported to lag a
//!   job's start by 25-60 s). A listing can add busy, never take it away.
//! - A registration known gone (completed, retired, or absent from a listing asked after the
//!   ledger learnt of it) stays gone: a later listing that still shows it lags, and a
//!   completed runner is never counted again. Gone ids are forgotten after [`GONE_MEMORY`].
//! - **When it was known gone** is kept per runner ([`Ledger::gone_at`]), for `plan`'s
//!   finishing rule. A message's statistics are computed after its job messages happened, so a
//!   completion is taken as known just before the statistics of its message.
//! - A listing is due ([`Ledger::listing_due`]) when none was read yet; when the last is older
//!   than the list interval, or than the resync interval while the pool holds runners not known
//!   busy (idle ones may be dropped by GitHub, or be the ones scale-in needs to see online);
//!   when a live task's runner is unknown; when the stream names an owned runner the ledger
//!   does not know; and when a task left the backend's listing and its runner's completion has
//!   not come within [`STREAM_GRACE`].
//!
//! Pure: no I/O, no clock; times are passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::backend::{Task, TaskState};
use super::plan::ObservedRunner;

/// How long a registration known gone is remembered (longer than any listing can lag).
pub const GONE_MEMORY: Duration = Duration::from_secs(15 * 60);

/// How long a task may be gone from the backend's listing before its runner's `JobCompleted`
/// is missed: the listener batches messages for about a second and the backend may see the
/// runner exit first.
pub const STREAM_GRACE: Duration = Duration::from_secs(10);

/// What the message stream says about a runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunnerEvent {
    /// A job started on it (`JobStarted`).
    Started { id: u64, name: String },
    /// Its job finished (`JobCompleted`); an ephemeral runner's registration is then gone.
    /// The service may leave out the runner (a job cancelled before it started).
    Completed {
        id: Option<u64>,
        name: Option<String>,
    },
}

/// One event, stamped with when its message's statistics were received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamItem {
    pub statistics_at: DateTime<Utc>,
    pub event: RunnerEvent,
}

/// Why the REST list is read this pass (a log field and a test hook).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListingReason {
    First,
    Interval,
    /// Runners not known busy: idle ones may have been dropped by GitHub.
    WarmRunners,
    UnknownTaskRunner,
    UnknownStreamRunner,
    TaskEndedWithoutCompletion,
    /// Scale-in must see which runners are online and idle.
    ScaleIn,
    /// No message stream feeds this ledger: every pass lists.
    NoStream,
}

impl ListingReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ListingReason::First => "first",
            ListingReason::Interval => "interval",
            ListingReason::WarmRunners => "warm_runners",
            ListingReason::UnknownTaskRunner => "unknown_task_runner",
            ListingReason::UnknownStreamRunner => "unknown_stream_runner",
            ListingReason::TaskEndedWithoutCompletion => "task_ended_without_completion",
            ListingReason::ScaleIn => "scale_in",
            ListingReason::NoStream => "no_stream",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    name: String,
    /// When the ledger learnt of it (a listing asked before then may not show it).
    known_since: DateTime<Utc>,
    /// As the last listing said (false until one shows it).
    listed_online: bool,
    listed_busy: bool,
    /// A `JobStarted` named it (and no `JobCompleted` since).
    started: bool,
    /// When its task was first missing from the backend's listing after being listed live.
    task_gone_since: Option<DateTime<Utc>>,
    task_listed: bool,
    /// A listing was read since its task left: the disagreement is known (an offline
    /// registration is the reaper's now), and asks for no further listing.
    gone_task_listed: bool,
}

impl Entry {
    /// A runner learnt of at `known_since`, with nothing yet known of its state.
    fn new(name: &str, known_since: DateTime<Utc>) -> Entry {
        Entry {
            name: name.to_string(),
            known_since,
            listed_online: false,
            listed_busy: false,
            started: false,
            task_gone_since: None,
            task_listed: false,
            gone_task_listed: false,
        }
    }
}

/// A pool's runners. See the module documentation for the rules.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    runners: BTreeMap<u64, Entry>,
    /// Registration id -> when it was known gone.
    gone: BTreeMap<u64, DateTime<Utc>>,
    /// Gone registrations no job had started on: GitHub dropped them (it removes JIT runners
    /// that wait too long), so no job of theirs is finishing.
    dropped: BTreeSet<u64>,
    /// Registrations this controller removed (retired runners): no job of theirs is finishing.
    retired: BTreeSet<u64>,
    /// When the last REST listing was answered.
    listed_at: Option<DateTime<Utc>>,
    /// The stream named an owned runner the ledger did not know.
    unknown_named: bool,
}

impl Ledger {
    /// Applies one event of the stream. `owned` says whether a runner name is this pool's.
    pub fn apply(&mut self, item: &StreamItem, owned: impl Fn(&str) -> bool) {
        // Just before the statistics of the message that carried it.
        let known_at = item.statistics_at - chrono::Duration::microseconds(1);
        match &item.event {
            RunnerEvent::Started { id, name } => {
                if !owned(name) || self.gone.contains_key(id) {
                    return;
                }
                match self.runners.get_mut(id) {
                    Some(entry) => entry.started = true,
                    None => {
                        self.unknown_named = true;
                        let entry = Entry {
                            started: true,
                            ..Entry::new(name, known_at)
                        };
                        self.runners.insert(*id, entry);
                    }
                }
            }
            RunnerEvent::Completed { id, name } => {
                let id = id.or_else(|| {
                    let name = name.as_deref()?;
                    self.runners
                        .iter()
                        .find(|(_, e)| e.name == name)
                        .map(|(id, _)| *id)
                });
                let Some(id) = id else { return };
                if self.runners.remove(&id).is_some() || name.as_deref().is_some_and(&owned) {
                    self.gone.entry(id).or_insert(known_at);
                }
            }
        }
    }

    /// A registration this controller created at `at`.
    pub fn launched(&mut self, id: u64, name: &str, at: DateTime<Utc>) {
        self.runners
            .entry(id)
            .or_insert_with(|| Entry::new(name, at));
    }

    /// A registration this controller removed at `at`.
    pub fn removed(&mut self, id: u64, at: DateTime<Utc>) {
        if let Some(entry) = self.runners.remove(&id)
            && !entry.started
        {
            self.retired.insert(id);
        }
        self.gone.entry(id).or_insert(at);
    }

    /// A REST listing of the pool's runners, asked at `asked_at` and answered at `answered_at`.
    pub fn listed(
        &mut self,
        runners: &[ObservedRunner],
        asked_at: DateTime<Utc>,
        answered_at: DateTime<Utc>,
    ) {
        let listed: BTreeSet<u64> = runners.iter().map(|r| r.id).collect();
        for r in runners {
            if self.gone.contains_key(&r.id) {
                continue;
            }
            let entry = self
                .runners
                .entry(r.id)
                .or_insert_with(|| Entry::new(&r.name, asked_at));
            entry.listed_online = r.online;
            entry.listed_busy = r.busy;
            entry.gone_task_listed = entry.task_gone_since.is_some();
        }
        let missing: Vec<(u64, bool)> = self
            .runners
            .iter()
            .filter(|(id, e)| !listed.contains(id) && e.known_since < asked_at)
            .map(|(id, e)| (*id, !e.started && !e.listed_busy))
            .collect();
        for (id, idle) in missing {
            self.runners.remove(&id);
            self.gone.entry(id).or_insert(answered_at);
            if idle {
                self.dropped.insert(id);
            }
        }
        self.listed_at = Some(answered_at);
        self.unknown_named = false;
    }

    /// The backend's live tasks (and the ids of launches not listed yet), seen at `now`: a
    /// runner whose task left the listing is noted, for [`Ledger::listing_due`].
    ///
    /// Returns the runners holding a job (by the stream) whose task this listing is the first
    /// to show gone: their job ended with its task, or the task's stop cut it short.
    pub fn tasks_seen(&mut self, tasks: &[Task], now: DateTime<Utc>) -> Vec<(u64, String)> {
        let live: BTreeSet<u64> = tasks
            .iter()
            .filter(|t| matches!(t.state, TaskState::Pending | TaskState::Running))
            .map(|t| t.tags.runner_id)
            .collect();
        let mut left_busy = Vec::new();
        for (id, entry) in self.runners.iter_mut() {
            if live.contains(id) {
                entry.task_listed = true;
                entry.task_gone_since = None;
            } else if entry.task_listed {
                if entry.task_gone_since.is_none() && entry.started {
                    left_busy.push((*id, entry.name.clone()));
                }
                entry.task_gone_since.get_or_insert(now);
            }
        }
        left_busy
    }

    /// Forgets gone registrations older than [`GONE_MEMORY`].
    pub fn prune(&mut self, now: DateTime<Utc>) {
        self.gone.retain(|_, at| !older_than(*at, now, GONE_MEMORY));
        let gone = &self.gone;
        self.dropped.retain(|id| gone.contains_key(id));
        self.retired.retain(|id| gone.contains_key(id));
    }

    /// Registrations this controller removed from runners that had started no job.
    pub fn retired(&self) -> &BTreeSet<u64> {
        &self.retired
    }

    /// Registrations GitHub removed while their runner waited for a job.
    pub fn dropped(&self) -> &BTreeSet<u64> {
        &self.dropped
    }

    /// Whether (and why) the REST list should be read before this pass decides.
    pub fn listing_due(
        &self,
        tasks: &[Task],
        now: DateTime<Utc>,
        list_interval: Duration,
        resync_interval: Duration,
    ) -> Option<ListingReason> {
        let Some(listed_at) = self.listed_at else {
            return Some(ListingReason::First);
        };
        if older_than(listed_at, now, list_interval) {
            return Some(ListingReason::Interval);
        }
        if self.unknown_named {
            return Some(ListingReason::UnknownStreamRunner);
        }
        let unknown_task = tasks
            .iter()
            .filter(|t| matches!(t.state, TaskState::Pending | TaskState::Running))
            .any(|t| {
                !self.runners.contains_key(&t.tags.runner_id)
                    && !self.gone.contains_key(&t.tags.runner_id)
            });
        if unknown_task {
            return Some(ListingReason::UnknownTaskRunner);
        }
        if self.runners.values().any(|e| {
            !e.gone_task_listed
                && e.task_gone_since
                    .is_some_and(|since| older_than(since, now, STREAM_GRACE))
        }) {
            return Some(ListingReason::TaskEndedWithoutCompletion);
        }
        let warm = self.runners.values().any(|e| !e.started && !e.listed_busy);
        if warm
            && !now
                .signed_duration_since(listed_at)
                .to_std()
                .is_ok_and(|age| age < resync_interval)
        {
            return Some(ListingReason::WarmRunners);
        }
        None
    }

    /// The pool's runners for `plan`: online once listed online or named in a `JobStarted`;
    /// busy from the stream, or from the last listing.
    pub fn view(&self) -> Vec<ObservedRunner> {
        self.runners
            .iter()
            .map(|(id, e)| ObservedRunner {
                id: *id,
                name: e.name.clone(),
                online: e.listed_online || e.started,
                busy: e.started || e.listed_busy,
            })
            .collect()
    }

    /// Registration id -> when it was known gone.
    pub fn gone_at(&self) -> &BTreeMap<u64, DateTime<Utc>> {
        &self.gone
    }

    /// When the last REST listing was answered.
    pub fn listed_at(&self) -> Option<DateTime<Utc>> {
        self.listed_at
    }

    /// Runners the ledger holds.
    pub fn len(&self) -> usize {
        self.runners.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runners.is_empty()
    }
}

fn older_than(since: DateTime<Utc>, now: DateTime<Utc>, limit: Duration) -> bool {
    now.signed_duration_since(since)
        .to_std()
        .is_ok_and(|age| age >= limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::backend::TaskTags;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap() + chrono::Duration::seconds(secs)
    }

    fn owned(name: &str) -> bool {
        name.starts_with("p-")
    }

    fn started(id: u64, at: i64) -> StreamItem {
        StreamItem {
            statistics_at: t(at),
            event: RunnerEvent::Started {
                id,
                name: format!("p-{id}"),
            },
        }
    }

    fn completed(id: u64, at: i64) -> StreamItem {
        StreamItem {
            statistics_at: t(at),
            event: RunnerEvent::Completed {
                id: Some(id),
                name: Some(format!("p-{id}")),
            },
        }
    }

    fn listed(id: u64, online: bool, busy: bool) -> ObservedRunner {
        ObservedRunner {
            id,
            name: format!("p-{id}"),
            online,
            busy,
        }
    }

    fn task(id: u64, state: TaskState) -> Task {
        Task {
            id: format!("task-{id}"),
            tags: TaskTags {
                pool: "p".into(),
                runner_name: format!("p-{id}"),
                runner_id: id,
            },
            state,
            created_at: t(0),
            stop_reason: None,
            capacity_provider: None,
            launch_fallbacks: Vec::new(),
            times: Default::default(),
            log: None,
        }
    }

    const LIST: Duration = Duration::from_secs(300);
    const RESYNC: Duration = Duration::from_secs(30);

    #[test]
    fn busy_comes_from_the_stream_and_a_lagging_listing_cannot_take_it_away() {
        let mut ledger = Ledger::default();
        ledger.launched(1, "p-1", t(0));
        ledger.apply(&started(1, 5), owned);
        ledger.listed(&[listed(1, true, false)], t(6), t(7));
        assert_eq!(ledger.view(), vec![listed(1, true, true)]);
        // A listing can add busy (a JobStarted lost on the way).
        ledger.launched(2, "p-2", t(8));
        ledger.listed(
            &[listed(1, true, false), listed(2, true, true)],
            t(9),
            t(10),
        );
        assert!(ledger.view().iter().all(|r| r.busy));
    }

    #[test]
    fn a_completed_runner_is_gone_just_before_its_messages_statistics_and_stays_gone() {
        let mut ledger = Ledger::default();
        ledger.launched(1, "p-1", t(0));
        ledger.apply(&started(1, 5), owned);
        ledger.apply(&completed(1, 9), owned);
        assert!(ledger.view().is_empty());
        let gone = ledger.gone_at()[&1];
        assert!(gone < t(9) && gone > t(8), "{gone}");
        // A listing that still shows it lags; a redelivered JobStarted is old news.
        ledger.listed(&[listed(1, true, true)], t(10), t(11));
        ledger.apply(&started(1, 5), owned);
        assert!(ledger.view().is_empty());
        // Forgotten after a while, so memory stays bounded.
        ledger.prune(t(9) + chrono::Duration::from_std(GONE_MEMORY).unwrap());
        assert!(ledger.gone_at().is_empty());
    }

    #[test]
    fn a_listing_removes_only_what_it_could_have_shown() {
        let mut ledger = Ledger::default();
        ledger.launched(1, "p-1", t(0));
        ledger.launched(2, "p-2", t(10));
        // Asked at 5: runner 2 did not exist yet, runner 1 should have been there.
        ledger.listed(&[], t(5), t(11));
        let ids: Vec<u64> = ledger.view().iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![2]);
        assert_eq!(ledger.gone_at()[&1], t(11));
    }

    #[test]
    fn a_listing_is_due_first_on_the_interval_and_for_warm_runners_on_the_resync() {
        let mut ledger = Ledger::default();
        assert_eq!(
            ledger.listing_due(&[], t(0), LIST, RESYNC),
            Some(ListingReason::First)
        );
        ledger.listed(&[], t(0), t(0));
        assert_eq!(ledger.listing_due(&[], t(29), LIST, RESYNC), None);
        assert_eq!(ledger.listing_due(&[], t(299), LIST, RESYNC), None);
        assert_eq!(
            ledger.listing_due(&[], t(300), LIST, RESYNC),
            Some(ListingReason::Interval)
        );
        // A runner not known busy: every resync interval (GitHub may drop an idle one).
        ledger.launched(1, "p-1", t(1));
        let tasks = [task(1, TaskState::Running)];
        ledger.tasks_seen(&tasks, t(2));
        assert_eq!(ledger.listing_due(&tasks, t(29), LIST, RESYNC), None);
        assert_eq!(
            ledger.listing_due(&tasks, t(30), LIST, RESYNC),
            Some(ListingReason::WarmRunners)
        );
        // Busy runners need none.
        ledger.apply(&started(1, 3), owned);
        assert_eq!(ledger.listing_due(&tasks, t(31), LIST, RESYNC), None);
    }

    #[test]
    fn disagreements_between_the_stream_and_the_backend_ask_for_a_listing_once() {
        let mut ledger = Ledger::default();
        ledger.listed(&[], t(0), t(0));
        // A task whose runner nobody told the ledger about.
        let stranger = [task(7, TaskState::Running)];
        assert_eq!(
            ledger.listing_due(&stranger, t(1), LIST, RESYNC),
            Some(ListingReason::UnknownTaskRunner)
        );
        // The stream names an owned runner the ledger does not know.
        let mut named = ledger.clone();
        named.apply(&started(8, 1), owned);
        assert_eq!(
            named.listing_due(&[], t(2), LIST, RESYNC),
            Some(ListingReason::UnknownStreamRunner)
        );
        // Other pools' runners are not this ledger's business.
        let mut other = ledger.clone();
        other.apply(
            &StreamItem {
                statistics_at: t(1),
                event: RunnerEvent::Started {
                    id: 9,
                    name: "q-9".into(),
                },
            },
            owned,
        );
        assert_eq!(other.listing_due(&[], t(2), LIST, RESYNC), None);

        // A busy runner's task ends and no completion comes within the grace: list, once.
        ledger.launched(1, "p-1", t(1));
        ledger.apply(&started(1, 2), owned);
        ledger.tasks_seen(&[task(1, TaskState::Running)], t(3));
        ledger.tasks_seen(&[], t(4));
        assert_eq!(ledger.listing_due(&[], t(13), LIST, RESYNC), None);
        assert_eq!(
            ledger.listing_due(&[], t(14), LIST, RESYNC),
            Some(ListingReason::TaskEndedWithoutCompletion)
        );
        // The listing shows it registered (offline): known now, the reaper's business.
        ledger.listed(&[listed(1, false, false)], t(14), t(15));
        ledger.tasks_seen(&[], t(16));
        assert_eq!(ledger.listing_due(&[], t(20), LIST, RESYNC), None);
    }
}
