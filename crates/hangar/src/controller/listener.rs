//! A pool's listener: keeps one message session on the pool's runner scale set and turns what
//! the service says into [`Demand`]. It creates or adopts the scale set by name, opens the
//! session (waiting while another controller holds it), long-polls with the pool's maximum,
//! acquires offered jobs, forwards every job message (and the runners' starts and completions
//! to the pool's ledger), publishes the latest statistics, and acknowledges each message after
//! handling it, then pauses briefly so the next message batches what came meanwhile. A scale set
//! deleted server-side is created again; a session that ends is reopened.
//!
//! Invariants:
//! - At most one session per listener: the old one is deleted (or known to be gone) before a new
//!   one is opened, and a 409 conflict is waited out, never forced. Running one listener per
//!   pool is the caller's part.
//! - Every wait (backoff, long poll, request retries) ends promptly when `cancel` fires; on
//!   cancel the session is deleted within a bounded time.
//! - A message is acknowledged only after its jobs were acquired (or acquiring failed for good),
//!   its statistics published and its job messages sent; a transient failure before that leaves
//!   it unacknowledged, so the service delivers it again. Consumers of `jobs` therefore see a
//!   job message at least once and must tolerate repeats.
//! - A failure never turns into a hot loop: every retry waits a backoff from [`backoff`].
//! - [`Demand`] holds no secret.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{Notify, mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::ledger::{RunnerEvent, StreamItem};
use crate::github::Scope;
use crate::github::scaleset::{
    ActionsService, JobMessage, Message, ScaleSetError, ScaleSetSpec, Session, Statistics,
};

/// What one pool listens for.
#[derive(Clone, Debug)]
pub struct ListenerSpec {
    pub pool: String,
    pub scope: Scope,
    pub scale_set_name: String,
    /// Runner group name; empty or `Default` is the Default group.
    pub runner_group: String,
    pub labels: Vec<String>,
    /// Sent as `X-ScaleSetMaxCapacity` (the service keeps the limit: every offered job is
    /// acquired).
    pub max_runners: u32,
    /// Who holds the session, as other controllers see it in a 409.
    pub owner_name: String,
    pub timing: ListenerTiming,
    /// Notified: re-read the statistics now, without waiting for the refresh interval (the
    /// webhook receiver heard of a job).
    pub refresh: Arc<Notify>,
    /// Where the runners' starts and completions go (the pool's [`super::ledger::Ledger`]).
    pub stream: Option<mpsc::UnboundedSender<StreamItem>>,
}

/// The listener's waits.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerTiming {
    /// First wait after a 409 session conflict; doubles up to `conflict_max`, jittered.
    pub conflict_base: Duration,
    pub conflict_max: Duration,
    /// First wait after any other failure; doubles up to `error_max`, jittered.
    pub error_base: Duration,
    pub error_max: Duration,
    /// Limit on deleting the session when cancelled.
    pub delete_session_timeout: Duration,
    /// Statistics are re-read (from the scale set) at least this often, even when no
    /// message comes: a message lost on the way would otherwise leave its job uncounted until
    /// the next one. The controller sets it to its resync interval.
    pub statistics_refresh: Duration,
    /// While the stream is busy (a poll waited less than `quiet_pause` for its message),
    /// the next poll waits this long after a message with new jobs, so the job messages of a
    /// burst arrive batched: each queue message costs two calls (poll and acknowledgement)
    /// whatever the number of jobs in it. It bounds the delay a job queued meanwhile gets; a
    /// quiet stream's poll goes at once.
    pub batch_window: Duration,
    /// After a message that brought no new job (only runners starting and completing jobs),
    /// the next poll waits this long instead: what such messages say is needed only when new
    /// jobs come, and the pause ends at once when the webhook receiver hears of one.
    pub quiet_pause: Duration,
    /// When asked for fresh statistics (the webhook receiver heard of a job, or the reconciler
    /// waits for them), the listener waits this long for a message to bring them before it
    /// reads the scale set: a webhook per job must not become a GitHub call per job.
    pub ask_grace: Duration,
}

impl Default for ListenerTiming {
    fn default() -> Self {
        ListenerTiming {
            conflict_base: Duration::from_secs(5),
            conflict_max: Duration::from_secs(60),
            error_base: Duration::from_secs(1),
            error_max: Duration::from_secs(60),
            delete_session_timeout: Duration::from_secs(10),
            statistics_refresh: Duration::from_secs(30),
            batch_window: Duration::from_millis(250),
            quiet_pause: Duration::from_secs(3),
            ask_grace: Duration::from_secs(2),
        }
    }
}

impl ListenerTiming {
    /// For tests: waits of milliseconds.
    pub fn fast() -> Self {
        ListenerTiming {
            conflict_base: Duration::from_millis(20),
            conflict_max: Duration::from_millis(100),
            error_base: Duration::from_millis(10),
            error_max: Duration::from_millis(100),
            delete_session_timeout: Duration::from_secs(5),
            statistics_refresh: Duration::from_millis(500),
            batch_window: Duration::ZERO,
            quiet_pause: Duration::ZERO,
            ask_grace: Duration::ZERO,
        }
    }
}

/// Where the pool's session is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SessionState {
    /// Ensuring the scale set and opening the session.
    Connecting,
    /// Polling.
    Live,
    /// Not allowed to listen yet (another controller holds the session).
    Waiting { reason: String },
    /// The last attempt failed; retrying with backoff.
    Failed { error: String },
}

/// What the controller reads from a listener. Holds no secret.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Demand {
    pub scale_set_id: Option<u64>,
    /// The latest statistics from the session or a message.
    pub statistics: Option<Statistics>,
    /// When those statistics were received.
    pub statistics_at: Option<DateTime<Utc>>,
    pub session: SessionState,
    pub last_message_at: Option<DateTime<Utc>>,
    /// The latest failure, kept after recovery (the session state says whether it is current).
    pub last_error: Option<String>,
}

impl Default for Demand {
    fn default() -> Self {
        Demand {
            scale_set_id: None,
            statistics: None,
            statistics_at: None,
            session: SessionState::Connecting,
            last_message_at: None,
            last_error: None,
        }
    }
}

/// The most job messages the service puts in one queue message (actions/scaleset's README:
/// "at most 50"); a message this full means more are waiting, so the next poll goes at once.
pub const SERVICE_BATCH_LIMIT: usize = 50;

pub const WAITING_FOR_SESSION: &str = "waiting: another controller holds the session";

// ----- pure decisions ----------------------------------------------------------------------

/// Exponential backoff with equal jitter: `base * 2^(attempt-1)` capped at `max`, then between
/// half of that and all of it. `attempt` is 1-based; `jitter` in `[0, 1)`.
pub fn backoff(attempt: u32, base: Duration, max: Duration, jitter: f64) -> Duration {
    let step = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    step.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The offered jobs (`JobAvailable`) to acquire: every one, in order, without repeats. The
/// service keeps the limit (the session tells it `max_runners` through
/// `X-ScaleSetMaxCapacity`) and assigns acquired jobs as runners free up; a job left
/// unacquired here would depend on a second offer, which an Enterprise Server may never make.
pub fn jobs_to_acquire(jobs: &[JobMessage]) -> Vec<u64> {
    let mut ids: Vec<u64> = Vec::new();
    for job in jobs {
        if let JobMessage::JobAvailable { job, .. } = job
            && !ids.contains(&job.runner_request_id)
        {
            ids.push(job.runner_request_id);
        }
    }
    ids
}

/// How long to wait before the next poll after a message with these job messages, which the
/// poll waited `waited` for. A quiet stream (the poll waited `quiet_pause` or more) polls again
/// at once, so a lone job is picked up without delay: calls only add up in bursts. A full
/// message (the service's limit) says more are waiting: at once too. A busy stream waits, so
/// the next message batches what comes meanwhile: briefly if jobs are arriving, longer if only
/// runners are starting and finishing them.
pub fn pause_after(jobs: &[JobMessage], waited: Duration, timing: &ListenerTiming) -> Duration {
    let busy = waited < timing.quiet_pause;
    if !busy || jobs.len() >= SERVICE_BATCH_LIMIT {
        Duration::ZERO
    } else if brings_new_jobs(jobs) {
        timing.batch_window
    } else {
        timing.quiet_pause
    }
}

/// Whether a message offers or assigns a job.
pub fn brings_new_jobs(jobs: &[JobMessage]) -> bool {
    jobs.iter().any(|job| {
        matches!(
            job,
            JobMessage::JobAvailable { .. } | JobMessage::JobAssigned { .. }
        )
    })
}

/// What a message's job messages say about runners: who started a job, whose job completed.
pub fn runner_events(jobs: &[JobMessage]) -> Vec<RunnerEvent> {
    jobs.iter()
        .filter_map(|job| match job {
            JobMessage::JobStarted {
                runner_id,
                runner_name,
                ..
            } => Some(RunnerEvent::Started {
                id: *runner_id,
                name: runner_name.clone(),
            }),
            JobMessage::JobCompleted {
                runner_id,
                runner_name,
                ..
            } => Some(RunnerEvent::Completed {
                id: runner_id.filter(|id| *id != 0),
                name: runner_name.clone().filter(|n| !n.is_empty()),
            }),
            _ => None,
        })
        .collect()
}

/// What to do after a poll (or acknowledgement) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterPollError {
    /// Keep the session; poll again after a backoff.
    Retry,
    /// The message cannot be read: acknowledge it so it does not block the queue.
    Skip(u64),
    /// The scale set is gone: create it again, then open a new session.
    Recreate,
    /// The session is no longer usable: delete it (if it still exists) and open another.
    Reopen,
}

pub fn after_poll_error(error: &ScaleSetError) -> AfterPollError {
    match error {
        ScaleSetError::BadMessage { message_id, .. } => AfterPollError::Skip(*message_id),
        ScaleSetError::ScaleSetNotFound { .. } => AfterPollError::Recreate,
        e if e.is_transient() => AfterPollError::Retry,
        _ => AfterPollError::Reopen,
    }
}

// ----- the loop ----------------------------------------------------------------------------

/// Runs the pool's listener until `cancel` fires. Never returns early on errors: they are
/// published in `demand` and retried with backoff.
pub async fn run(
    service: ActionsService,
    spec: ListenerSpec,
    demand: watch::Sender<Demand>,
    nudge: Arc<Notify>,
    jobs: mpsc::UnboundedSender<JobMessage>,
    cancel: CancellationToken,
) {
    let mut listener = Listener {
        service,
        spec,
        demand,
        nudge,
        jobs,
        cancel,
        runner_group_id: None,
    };
    if listener.service.scope() != &listener.spec.scope {
        let error = format!(
            "pool {} listens on {} but its client is bound to {}: build the ActionsService for the pool's scope",
            listener.spec.pool,
            listener.spec.scope,
            listener.service.scope()
        );
        listener.failed(error);
        listener.cancel.cancelled().await;
        return;
    }
    listener.run().await;
}

struct Listener {
    service: ActionsService,
    spec: ListenerSpec,
    demand: watch::Sender<Demand>,
    nudge: Arc<Notify>,
    jobs: mpsc::UnboundedSender<JobMessage>,
    cancel: CancellationToken,
    runner_group_id: Option<u64>,
}

enum Opened {
    Session(Session),
    ScaleSetGone,
    Failed(ScaleSetError),
    Cancelled,
}

enum Ended {
    Cancelled,
    /// Open a new session (after ensuring the scale set again). `productive` when the session
    /// answered at least one poll, so a session that fails at once is retried with backoff.
    Reopen {
        productive: bool,
    },
}

enum Handled {
    Acknowledge,
    /// A transient failure: leave the message for redelivery.
    Later(ScaleSetError),
}

impl Listener {
    async fn run(&mut self) {
        let mut failures = 0u32;
        while !self.cancel.is_cancelled() {
            self.demand
                .send_modify(|d| d.session = SessionState::Connecting);
            let cancel = self.cancel.clone();
            let scale_set_id = match until_cancelled(&cancel, self.ensure_scale_set()).await {
                None => return,
                Some(Ok(id)) => id,
                Some(Err(e)) => {
                    failures += 1;
                    if !self.fail_and_wait(&e, failures).await {
                        return;
                    }
                    continue;
                }
            };
            let session = match self.open_session(scale_set_id).await {
                Opened::Session(session) => session,
                Opened::Cancelled => return,
                Opened::ScaleSetGone => {
                    // Deleted between ensuring and opening: ensure again, without a hot loop.
                    failures += 1;
                    if !self.wait_error_backoff(failures).await {
                        return;
                    }
                    continue;
                }
                Opened::Failed(e) => {
                    failures += 1;
                    if !self.fail_and_wait(&e, failures).await {
                        return;
                    }
                    continue;
                }
            };
            match self.listen(session).await {
                Ended::Cancelled => return,
                Ended::Reopen { productive: true } => failures = 0,
                Ended::Reopen { productive: false } => {
                    failures += 1;
                    if !self.wait_error_backoff(failures).await {
                        return;
                    }
                }
            }
        }
    }

    async fn ensure_scale_set(&mut self) -> Result<u64, ScaleSetError> {
        let runner_group_id = match self.runner_group_id {
            Some(id) => id,
            None => {
                let id = self
                    .service
                    .runner_group_id(&self.spec.runner_group)
                    .await?;
                self.runner_group_id = Some(id);
                id
            }
        };
        let spec = ScaleSetSpec {
            name: self.spec.scale_set_name.clone(),
            runner_group_id,
            labels: self.spec.labels.clone(),
            // Runners come from Hangar's image; a self-update would replace its runner.
            disable_update: true,
        };
        let (scale_set, outcome) = match self.service.ensure_scale_set(&spec).await {
            Ok(ensured) => ensured,
            Err(e) => {
                // The group may have been deleted and created again under a new id: look it up
                // afresh on the next attempt rather than retrying a stale id until a restart.
                self.runner_group_id = None;
                return Err(e);
            }
        };
        tracing::info!(
            pool = %self.spec.pool, scale_set_id = scale_set.id, name = %scale_set.name,
            ?outcome, "runner scale set ready"
        );
        self.demand
            .send_modify(|d| d.scale_set_id = Some(scale_set.id));
        Ok(scale_set.id)
    }

    async fn open_session(&self, scale_set_id: u64) -> Opened {
        let mut conflicts = 0u32;
        loop {
            let created = self.cancellable(
                self.service
                    .create_session(scale_set_id, &self.spec.owner_name),
            );
            match created.await {
                None => return Opened::Cancelled,
                Some(Ok(session)) => return Opened::Session(session),
                Some(Err(ScaleSetError::SessionConflict { message, .. })) => {
                    conflicts += 1;
                    let wait = backoff(
                        conflicts,
                        self.spec.timing.conflict_base,
                        self.spec.timing.conflict_max,
                        rand::random(),
                    );
                    tracing::info!(
                        pool = %self.spec.pool, scale_set_id, conflicts, wait_ms = wait.as_millis() as u64,
                        holder = %message, "another controller holds the scale set's session; waiting"
                    );
                    self.demand.send_modify(|d| {
                        d.session = SessionState::Waiting {
                            reason: WAITING_FOR_SESSION.to_string(),
                        };
                    });
                    if !self.sleep(wait).await {
                        return Opened::Cancelled;
                    }
                }
                Some(Err(ScaleSetError::ScaleSetNotFound { .. })) => return Opened::ScaleSetGone,
                Some(Err(e)) => return Opened::Failed(e),
            }
        }
    }

    async fn listen(&self, mut session: Session) -> Ended {
        tracing::info!(
            pool = %self.spec.pool, scale_set_id = session.scale_set_id, session_id = %session.id,
            "message session open; listening"
        );
        let statistics = session.statistics;
        let scale_set_id = session.scale_set_id;
        self.demand.send_modify(|d| {
            d.session = SessionState::Live;
            d.scale_set_id = Some(scale_set_id);
            if statistics.is_some() {
                d.statistics = statistics;
                d.statistics_at = Some(Utc::now());
            }
        });
        self.nudge.notify_one();
        let mut last_message_id = 0u64;
        let mut failures = 0u32;
        let mut productive = false;
        let refresh_every = self
            .spec
            .timing
            .statistics_refresh
            .max(Duration::from_millis(10));
        let mut next_refresh = tokio::time::Instant::now() + refresh_every;
        // Somebody asked for fresh statistics: read them then, unless a message brings them.
        let mut ask_deadline: Option<tokio::time::Instant> = None;
        let ask_grace = self.spec.timing.ask_grace;

        loop {
            // The statistics are re-read from the scale set (with the admin token) while the
            // long poll goes on: abandoning the poll for each refresh would cost a poll a
            // refresh and delay the message it was about to carry, and refreshing the session
            // replaces the queue token the poll holds. Only if the service's scale set carries
            // no statistics is the poll abandoned for a session refresh, as before.
            // How long the poll waits for its message says whether the stream is busy.
            let poll_sent_at = tokio::time::Instant::now();
            let polled = {
                let poll = self.cancellable(self.service.get_message(
                    &mut session,
                    last_message_id,
                    self.spec.max_runners,
                ));
                tokio::pin!(poll);
                loop {
                    let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
                    let was_asked = tokio::select! {
                        result = &mut poll => break Polled::Answer(result),
                        _ = tokio::time::sleep_until(next_refresh) => false,
                        _ = tokio::time::sleep_until(ask_deadline.unwrap_or(far)), if ask_deadline.is_some() => true,
                        _ = self.spec.refresh.notified() => {
                            if ask_grace.is_zero() {
                                true
                            } else {
                                ask_deadline.get_or_insert(tokio::time::Instant::now() + ask_grace);
                                continue;
                            }
                        }
                    };
                    ask_deadline = None;
                    next_refresh = tokio::time::Instant::now() + refresh_every;
                    match self.cancellable(self.service.scale_set(scale_set_id)).await {
                        None => break Polled::Answer(None),
                        Some(Ok(set)) if set.statistics.is_some() => {
                            self.publish_statistics(set.statistics, was_asked);
                        }
                        Some(Ok(_)) => break Polled::RefreshSession { was_asked },
                        Some(Err(e)) => {
                            tracing::debug!(pool = %self.spec.pool, error = %e, "re-reading the scale set's statistics failed; the poll will tell");
                        }
                    }
                }
            };
            let result = match polled {
                Polled::RefreshSession { was_asked } => {
                    match self
                        .cancellable(self.service.refresh_session(&mut session))
                        .await
                    {
                        None => {
                            self.close(&session).await;
                            return Ended::Cancelled;
                        }
                        Some(Ok(())) => self.publish_statistics(session.statistics, was_asked),
                        Some(Err(e)) => {
                            tracing::debug!(pool = %self.spec.pool, error = %e, "refreshing the session's statistics failed; the poll will tell");
                        }
                    }
                    continue;
                }
                Polled::Answer(None) => {
                    self.close(&session).await;
                    return Ended::Cancelled;
                }
                Polled::Answer(Some(result)) => result,
            };
            let mut failure = match result {
                Ok(None) => {
                    failures = 0;
                    productive = true;
                    self.live();
                    continue;
                }
                Ok(Some(message)) => {
                    productive = true;
                    let handled = self.cancellable(self.handle(&mut session, &message));
                    match handled.await {
                        None => {
                            self.close(&session).await;
                            return Ended::Cancelled;
                        }
                        Some(Handled::Later(e)) => e,
                        Some(Handled::Acknowledge) => {
                            let acked =
                                self.cancellable(self.service.ack(&mut session, message.id));
                            match acked.await {
                                None => {
                                    self.close(&session).await;
                                    return Ended::Cancelled;
                                }
                                Some(Ok(())) => {
                                    failures = 0;
                                    last_message_id = message.id;
                                    let pause = pause_after(
                                        &message.jobs,
                                        poll_sent_at.elapsed(),
                                        &self.spec.timing,
                                    );
                                    // The message brought fresh statistics.
                                    ask_deadline = None;
                                    match self.pause(pause).await {
                                        None => {
                                            self.close(&session).await;
                                            return Ended::Cancelled;
                                        }
                                        Some(true) => {
                                            ask_deadline =
                                                Some(tokio::time::Instant::now() + ask_grace);
                                        }
                                        Some(false) => {}
                                    }
                                    continue;
                                }
                                Some(Err(e)) => e,
                            }
                        }
                    }
                }
                Err(e) => e,
            };
            if let AfterPollError::Skip(message_id) = after_poll_error(&failure) {
                tracing::warn!(pool = %self.spec.pool, message_id, error = %failure, "skipping an unreadable message");
                self.note_error(&failure);
                match self
                    .cancellable(self.service.ack(&mut session, message_id))
                    .await
                {
                    None => {
                        self.close(&session).await;
                        return Ended::Cancelled;
                    }
                    Some(Ok(())) => {
                        last_message_id = message_id;
                        continue;
                    }
                    // Handled like any failed acknowledgement: polling straight away would
                    // fetch the same message and fail the same way, with no backoff.
                    Some(Err(e)) => failure = e,
                }
            }
            match after_poll_error(&failure) {
                // An acknowledgement never fails as an unreadable message.
                AfterPollError::Skip(_) | AfterPollError::Retry => {
                    failures += 1;
                    if !self.fail_and_wait(&failure, failures).await {
                        self.close(&session).await;
                        return Ended::Cancelled;
                    }
                }
                AfterPollError::Recreate => {
                    tracing::warn!(pool = %self.spec.pool, scale_set_id, error = %failure, "the scale set was deleted; creating it again");
                    self.failed(failure.to_string());
                    return Ended::Reopen { productive };
                }
                AfterPollError::Reopen => {
                    tracing::warn!(pool = %self.spec.pool, scale_set_id, error = %failure, "the session is no longer usable; opening a new one");
                    self.failed(failure.to_string());
                    self.close(&session).await;
                    return Ended::Reopen { productive };
                }
            }
        }
    }

    /// Publishes re-read statistics; a change nudges a reconcile, and so do statistics somebody
    /// asked for (`asked`: the reconciler waits for them).
    fn publish_statistics(&self, statistics: Option<Statistics>, asked: bool) {
        let Some(statistics) = statistics else { return };
        let mut changed = false;
        self.demand.send_modify(|d| {
            changed = d.statistics != Some(statistics);
            d.statistics = Some(statistics);
            d.statistics_at = Some(Utc::now());
        });
        if changed && !asked {
            tracing::info!(
                pool = %self.spec.pool, assigned = statistics.total_assigned_jobs,
                "statistics changed without a message (a lost message?)"
            );
        }
        if changed || asked {
            self.nudge.notify_one();
        }
    }

    /// Acquires offered jobs, then publishes the statistics and forwards the job messages.
    async fn handle(&self, session: &mut Session, message: &Message) -> Handled {
        let wanted = jobs_to_acquire(&message.jobs);
        if !wanted.is_empty() {
            match self.service.acquire_jobs(session, &wanted).await {
                Ok(acquired) => tracing::info!(
                    pool = %self.spec.pool, offered = wanted.len(), acquired = acquired.len(), "acquired jobs"
                ),
                Err(e) if e.is_transient() => return Handled::Later(e),
                // The jobs stay offered; the statistics still count them.
                Err(e) => {
                    tracing::warn!(pool = %self.spec.pool, error = %e, "could not acquire offered jobs");
                    self.note_error(&e);
                }
            }
        }
        let statistics = message.statistics;
        tracing::debug!(
            pool = %self.spec.pool, message_id = message.id, jobs = message.jobs.len(),
            assigned = statistics.map(|s| s.total_assigned_jobs), "message"
        );
        let received = Utc::now();
        // Before the statistics: a pass that reads them finds the runners' events in its ledger.
        if let Some(stream) = &self.spec.stream {
            for event in runner_events(&message.jobs) {
                let _ = stream.send(StreamItem {
                    statistics_at: received,
                    event,
                });
            }
        }
        self.demand.send_modify(|d| {
            d.session = SessionState::Live;
            d.last_message_at = Some(received);
            if statistics.is_some() {
                d.statistics = statistics;
                d.statistics_at = d.last_message_at;
            }
        });
        for job in &message.jobs {
            // A closed receiver means the controller stopped listening to jobs; demand remains.
            let _ = self.jobs.send(job.clone());
        }
        self.nudge.notify_one();
        Handled::Acknowledge
    }

    /// Deletes the session, within a bounded time and even when cancelled.
    async fn close(&self, session: &Session) {
        let deleted = tokio::time::timeout(
            self.spec.timing.delete_session_timeout,
            self.service.delete_session(session),
        )
        .await;
        match deleted {
            Ok(Ok(())) => {
                tracing::info!(pool = %self.spec.pool, session_id = %session.id, "message session deleted")
            }
            Ok(Err(e)) => {
                tracing::warn!(pool = %self.spec.pool, error = %e, "could not delete the message session; it expires on its own")
            }
            Err(_) => {
                tracing::warn!(pool = %self.spec.pool, "deleting the message session timed out; it expires on its own")
            }
        }
    }

    fn live(&self) {
        self.demand.send_if_modified(|d| {
            let changed = d.session != SessionState::Live;
            d.session = SessionState::Live;
            changed
        });
    }

    fn note_error(&self, error: &ScaleSetError) {
        let text = error.to_string();
        self.demand.send_modify(|d| d.last_error = Some(text));
    }

    fn failed(&self, error: String) {
        self.demand.send_modify(|d| {
            d.session = SessionState::Failed {
                error: error.clone(),
            };
            d.last_error = Some(error);
        });
    }

    /// Publishes the failure and waits its backoff; `false` when cancelled meanwhile.
    async fn fail_and_wait(&self, error: &ScaleSetError, failures: u32) -> bool {
        tracing::warn!(pool = %self.spec.pool, failures, error = %error, "listener step failed; retrying");
        self.failed(error.to_string());
        self.wait_error_backoff(failures).await
    }

    async fn wait_error_backoff(&self, failures: u32) -> bool {
        let wait = backoff(
            failures,
            self.spec.timing.error_base,
            self.spec.timing.error_max,
            rand::random(),
        );
        self.sleep(wait).await
    }

    /// Waits `wait` between polls; somebody asking for statistics ends it early. `None` when
    /// cancelled, else whether it was asked.
    async fn pause(&self, wait: Duration) -> Option<bool> {
        if wait.is_zero() {
            return Some(false);
        }
        self.cancellable(async {
            tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                _ = self.spec.refresh.notified() => true,
            }
        })
        .await
    }

    async fn sleep(&self, wait: Duration) -> bool {
        self.cancellable(tokio::time::sleep(wait)).await.is_some()
    }

    async fn cancellable<F: Future>(&self, work: F) -> Option<F::Output> {
        until_cancelled(&self.cancel, work).await
    }
}

/// How a long poll ended: its answer (`None`: cancelled), or abandoned for a session refresh.
enum Polled<T> {
    Answer(Option<T>),
    RefreshSession { was_asked: bool },
}

/// `None` as soon as `cancel` fires (dropping `work`), else what `work` returned.
async fn until_cancelled<F: Future>(cancel: &CancellationToken, work: F) -> Option<F::Output> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => None,
        out = work => Some(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::scaleset::JobInfo;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, base, max, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(1, base, max, 0.999_999).as_millis(), 999);
        assert_eq!(backoff(2, base, max, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(4, base, max, 0.0), Duration::from_secs(4));
        assert_eq!(backoff(30, base, max, 0.0), Duration::from_secs(30));
        assert!(backoff(30, base, max, 0.999) < max);
        assert!(backoff(u32::MAX, base, max, 0.5) <= max);
        // Out-of-range jitter is clamped rather than trusted.
        assert_eq!(backoff(1, base, max, -3.0), Duration::from_millis(500));
        assert_eq!(backoff(1, base, max, 7.0), base);
    }

    fn available(id: u64) -> JobMessage {
        JobMessage::JobAvailable {
            job: JobInfo {
                runner_request_id: id,
                ..JobInfo::default()
            },
            acquire_job_url: None,
        }
    }

    #[test]
    fn acquires_every_offered_job_once_whatever_the_room_left() {
        let assigned = JobMessage::JobAssigned {
            job: JobInfo {
                runner_request_id: 9,
                ..JobInfo::default()
            },
        };
        let jobs = [
            available(1),
            assigned,
            available(2),
            available(1),
            available(3),
        ];
        // The service enforces `max`: a job not acquired now might never be offered again.
        assert_eq!(jobs_to_acquire(&jobs), [1, 2, 3]);
        assert_eq!(jobs_to_acquire(&[]), Vec::<u64>::new());
    }

    #[test]
    fn runner_events_name_who_started_and_whose_job_completed() {
        let job = JobInfo::default();
        let jobs = vec![
            JobMessage::JobAssigned { job: job.clone() },
            JobMessage::JobStarted {
                job: job.clone(),
                runner_id: 7,
                runner_name: "p-7".into(),
            },
            JobMessage::JobCompleted {
                job: job.clone(),
                result: "succeeded".into(),
                runner_id: Some(7),
                runner_name: Some("p-7".into()),
            },
            // A job cancelled before any runner took it names none.
            JobMessage::JobCompleted {
                job,
                result: "canceled".into(),
                runner_id: Some(0),
                runner_name: Some(String::new()),
            },
        ];
        assert_eq!(
            runner_events(&jobs),
            vec![
                RunnerEvent::Started {
                    id: 7,
                    name: "p-7".into()
                },
                RunnerEvent::Completed {
                    id: Some(7),
                    name: Some("p-7".into())
                },
                RunnerEvent::Completed {
                    id: None,
                    name: None
                },
            ]
        );
        assert!(brings_new_jobs(&jobs[..1]));
        assert!(!brings_new_jobs(&jobs[1..]));
        assert!(brings_new_jobs(&[available(1)]));
        // A quiet stream (the poll waited `quiet_pause` or more) and a full message poll again
        // at once; a busy stream waits.
        let timing = ListenerTiming::default();
        let busy = Duration::from_millis(100);
        let quiet = timing.quiet_pause;
        assert_eq!(pause_after(&jobs, quiet, &timing), Duration::ZERO);
        assert_eq!(pause_after(&jobs, busy, &timing), timing.batch_window);
        assert_eq!(pause_after(&jobs[1..], busy, &timing), timing.quiet_pause);
        let full: Vec<JobMessage> = (0..SERVICE_BATCH_LIMIT as u64).map(available).collect();
        assert_eq!(pause_after(&full, busy, &timing), Duration::ZERO);
    }

    #[test]
    fn poll_errors_map_to_one_next_step() {
        let cases = [
            (
                ScaleSetError::BadMessage {
                    message_id: 4,
                    cause: "x".into(),
                },
                AfterPollError::Skip(4),
            ),
            (
                ScaleSetError::ScaleSetNotFound {
                    id: 1,
                    action: "a".into(),
                },
                AfterPollError::Recreate,
            ),
            (
                ScaleSetError::ServerError {
                    action: "a".into(),
                    status: 503,
                    attempts: 3,
                },
                AfterPollError::Retry,
            ),
            (
                ScaleSetError::Unreachable {
                    action: "a".into(),
                    host: "h".into(),
                    attempts: 3,
                    cause: "c".into(),
                },
                AfterPollError::Retry,
            ),
            (
                ScaleSetError::RateLimited {
                    action: "a".into(),
                    wait: Duration::from_secs(600),
                },
                AfterPollError::Retry,
            ),
            (
                ScaleSetError::Unauthorized {
                    token: crate::github::scaleset::ServiceToken::Queue,
                    action: "a".into(),
                    message: "m".into(),
                },
                AfterPollError::Reopen,
            ),
            (
                ScaleSetError::NotFound {
                    action: "a".into(),
                    type_name: String::new(),
                    message: "m".into(),
                },
                AfterPollError::Reopen,
            ),
        ];
        for (error, want) in cases {
            assert_eq!(after_poll_error(&error), want, "{error}");
        }
    }

    #[test]
    fn demand_serializes_its_state_for_status() {
        let demand = Demand {
            scale_set_id: Some(3),
            statistics: Some(Statistics {
                total_assigned_jobs: 2,
                ..Statistics::default()
            }),
            statistics_at: None,
            session: SessionState::Waiting {
                reason: WAITING_FOR_SESSION.into(),
            },
            last_message_at: None,
            last_error: None,
        };
        let json = serde_json::to_value(&demand).unwrap();
        assert_eq!(json["session"]["state"], "waiting");
        assert_eq!(json["session"]["reason"], WAITING_FOR_SESSION);
        assert_eq!(json["statistics"]["totalAssignedJobs"], 2);
        assert_eq!(json["scale_set_id"], 3);
    }
}
