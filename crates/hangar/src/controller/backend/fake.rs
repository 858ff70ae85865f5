//! An in-memory [`Backend`] for unit tests and the controller benchmark: tasks and one-shot
//! secrets live in a map, state changes happen when a test says so, and failures are injected
//! per call. It keeps the real backends' contract (tags on every task, the secret deleted when a
//! launch fails, idempotent stop and delete), so the controller cannot tell it apart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;

use super::{
    Backend, BackendError, Handoff, LaunchRequest, LaunchSlot, Task, TaskState, TaskTimes,
};

#[derive(Default)]
struct State {
    next_id: u64,
    tasks: BTreeMap<String, Task>,
    /// Secret name -> (handoff, value).
    handoffs: BTreeMap<String, (Handoff, String)>,
    fail_launches: VecDeque<BackendError>,
    fail_lists: VecDeque<BackendError>,
    fail_handoff_lists: VecDeque<BackendError>,
    handoff_lists: u64,
    launches: u64,
    stops: Vec<(String, String)>,
    clock: Option<DateTime<Utc>>,
    /// New tasks start `Running` instead of `Pending`.
    start_running: bool,
    /// New tasks stay out of this many `list` answers (an eventually consistent listing).
    hide_new_tasks_for: u32,
    /// Task id -> `list` answers it is still left out of.
    hidden: BTreeMap<String, u32>,
    /// Task id -> how it stopped (`set_stop_details`).
    stop_details: BTreeMap<String, super::StopDetails>,
}

/// The fake. Clones share state.
#[derive(Clone, Default)]
pub struct FakeBackend {
    state: Arc<Mutex<State>>,
    /// Places in the hand-over queue ([`Backend::ready_to_launch`]); `None`: no queue.
    handover_queue: Arc<Mutex<Option<Arc<tokio::sync::Semaphore>>>>,
}

impl FakeBackend {
    pub fn new() -> FakeBackend {
        FakeBackend::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake backend poisoned")
    }

    fn now(state: &State) -> DateTime<Utc> {
        state.clock.unwrap_or_else(Utc::now)
    }

    /// Gives launches a hand-over queue of `places`, returned so a test can hold them.
    pub fn handover_queue(&self, places: usize) -> Arc<tokio::sync::Semaphore> {
        let queue = Arc::new(tokio::sync::Semaphore::new(places));
        *self.handover_queue.lock().expect("fake backend poisoned") = Some(queue.clone());
        queue
    }

    /// Fixes the time stamped on new tasks and secrets (default: the real clock).
    pub fn set_clock(&self, now: DateTime<Utc>) {
        self.lock().clock = Some(now);
    }

    /// New tasks start running at once (a backend with instant capacity).
    pub fn start_running(&self, yes: bool) {
        self.lock().start_running = yes;
    }

    /// Each new task is left out of the next `lists` listings of its pool, as ECS's eventually
    /// consistent `ListTasks` may leave out a task `RunTask` just started.
    pub fn hide_new_tasks_for(&self, lists: u32) {
        self.lock().hide_new_tasks_for = lists;
    }

    /// The next launches fail with these errors, in order.
    pub fn fail_next_launches(&self, errors: impl IntoIterator<Item = BackendError>) {
        self.lock().fail_launches.extend(errors);
    }

    /// The next `list` calls fail with these errors, in order.
    pub fn fail_next_lists(&self, errors: impl IntoIterator<Item = BackendError>) {
        self.lock().fail_lists.extend(errors);
    }

    /// The next `list_handoffs` calls fail with these errors, in order.
    pub fn fail_next_handoff_lists(&self, errors: impl IntoIterator<Item = BackendError>) {
        self.lock().fail_handoff_lists.extend(errors);
    }

    /// `list_handoffs` calls so far (failed ones included).
    pub fn handoff_lists(&self) -> u64 {
        self.lock().handoff_lists
    }

    /// Says how a task stopped (as ECS's `stopCode` and `stoppedReason` would).
    pub fn set_stop_details(&self, task_id: &str, details: super::StopDetails) {
        self.lock()
            .stop_details
            .insert(task_id.to_string(), details);
    }

    /// Moves a task to a state (as ECS would).
    pub fn set_state(&self, task_id: &str, state: TaskState) -> bool {
        match self.lock().tasks.get_mut(task_id) {
            Some(task) => {
                task.state = state;
                true
            }
            None => false,
        }
    }

    /// The task reads and deletes its one-shot secret, as `hangar agent` does; returns the value.
    pub fn take_handoff(&self, runner_name: &str) -> Option<String> {
        let mut state = self.lock();
        let name = state
            .handoffs
            .iter()
            .find(|(_, (h, _))| h.runner_name == runner_name)
            .map(|(name, _)| name.clone())?;
        state.handoffs.remove(&name).map(|(_, value)| value)
    }

    pub fn tasks(&self) -> Vec<Task> {
        self.lock().tasks.values().cloned().collect()
    }

    pub fn handoffs(&self) -> Vec<Handoff> {
        self.lock()
            .handoffs
            .values()
            .map(|(h, _)| h.clone())
            .collect()
    }

    /// Launch calls that succeeded.
    pub fn launches(&self) -> u64 {
        self.lock().launches
    }

    /// `(task id, reason)` of every stop call, in order.
    pub fn stops(&self) -> Vec<(String, String)> {
        self.lock().stops.clone()
    }

    /// Adds a secret nobody will read (a crashed launch), for reaper tests.
    pub fn leave_handoff(&self, pool: &str, runner_name: &str, created_at: DateTime<Utc>) {
        let name = format!("fake:{pool}/{runner_name}");
        let handoff = Handoff {
            name: name.clone(),
            pool: pool.to_string(),
            runner_name: runner_name.to_string(),
            created_at,
        };
        self.lock().handoffs.insert(name, (handoff, String::new()));
    }
}

impl Backend for FakeBackend {
    fn kind(&self) -> &'static str {
        "fake"
    }

    async fn ready_to_launch(&self) -> LaunchSlot {
        let queue = self
            .handover_queue
            .lock()
            .expect("fake backend poisoned")
            .clone();
        match queue {
            Some(queue) => LaunchSlot::held(
                queue
                    .acquire_owned()
                    .await
                    .expect("the queue is never closed"),
            ),
            None => LaunchSlot::free(),
        }
    }

    async fn launch(&self, request: LaunchRequest) -> Result<Task, BackendError> {
        let mut state = self.lock();
        let now = FakeBackend::now(&state);
        let name = format!("fake:{}/{}", request.tags.pool, request.tags.runner_name);
        if state.handoffs.contains_key(&name) {
            return Err(BackendError::Config(format!(
                "the one-shot secret {name} already exists"
            )));
        }
        let value = request.jit_config.expose_secret().to_string();
        let handoff = Handoff {
            name: name.clone(),
            pool: request.tags.pool.clone(),
            runner_name: request.tags.runner_name.clone(),
            created_at: now,
        };
        state.handoffs.insert(name.clone(), (handoff, value));
        if let Some(error) = state.fail_launches.pop_front() {
            // As a real backend does: no secret outlives a failed launch.
            state.handoffs.remove(&name);
            return Err(error);
        }
        state.next_id += 1;
        let task = Task {
            id: format!("fake-{}", state.next_id),
            tags: request.tags,
            state: if state.start_running {
                TaskState::Running
            } else {
                TaskState::Pending
            },
            created_at: now,
            stop_reason: None,
            capacity_provider: None,
            launch_fallbacks: Vec::new(),
            times: TaskTimes::default(),
            log: None,
        };
        state.tasks.insert(task.id.clone(), task.clone());
        if state.hide_new_tasks_for > 0 {
            let lists = state.hide_new_tasks_for;
            state.hidden.insert(task.id.clone(), lists);
        }
        state.launches += 1;
        Ok(task)
    }

    async fn list(&self, pool: &str) -> Result<Vec<Task>, BackendError> {
        let mut state = self.lock();
        if let Some(error) = state.fail_lists.pop_front() {
            return Err(error);
        }
        let State { tasks, hidden, .. } = &mut *state;
        let mut listed = Vec::new();
        for task in tasks.values().filter(|t| t.tags.pool == pool) {
            match hidden.get_mut(&task.id) {
                Some(left) if *left > 0 => *left -= 1,
                _ => listed.push(task.clone()),
            }
        }
        Ok(listed)
    }

    async fn stop(&self, task_id: &str, reason: &str) -> Result<(), BackendError> {
        let mut state = self.lock();
        state.stops.push((task_id.to_string(), reason.to_string()));
        if let Some(task) = state.tasks.get_mut(task_id)
            && task.state != TaskState::Stopped
        {
            task.state = TaskState::Stopped;
            task.stop_reason = Some(reason.to_string());
        }
        Ok(())
    }

    async fn list_handoffs(&self, pool: &str) -> Result<Vec<Handoff>, BackendError> {
        let mut state = self.lock();
        state.handoff_lists += 1;
        if let Some(error) = state.fail_handoff_lists.pop_front() {
            return Err(error);
        }
        Ok(state
            .handoffs
            .values()
            .filter(|(h, _)| h.pool == pool)
            .map(|(h, _)| h.clone())
            .collect())
    }

    async fn delete_handoff(&self, name: &str) -> Result<(), BackendError> {
        self.lock().handoffs.remove(name);
        Ok(())
    }

    async fn stop_details(&self, task_id: &str) -> Option<super::StopDetails> {
        self.lock().stop_details.get(task_id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::super::TaskTags;
    use super::*;
    use secrecy::SecretString;

    fn request(runner: &str) -> LaunchRequest {
        LaunchRequest {
            tags: TaskTags {
                pool: "p".into(),
                runner_name: runner.into(),
                runner_id: 1,
            },
            jit_config: SecretString::from("jit-blob"),
        }
    }

    #[tokio::test]
    async fn keeps_the_backend_contract() {
        let fake = FakeBackend::new();
        let task = fake.launch(request("p-a")).await.unwrap();
        assert_eq!(task.state, TaskState::Pending);
        assert_eq!(fake.list("p").await.unwrap(), vec![task.clone()]);
        assert!(fake.list("q").await.unwrap().is_empty());
        assert_eq!(fake.take_handoff("p-a").as_deref(), Some("jit-blob"));
        assert!(fake.take_handoff("p-a").is_none(), "one shot");
        fake.fail_next_launches([BackendError::Capacity("RESOURCE:CPU".into())]);
        assert_eq!(
            fake.launch(request("p-b")).await.unwrap_err().reason(),
            "capacity"
        );
        assert!(
            fake.handoffs().is_empty(),
            "no secret outlives a failed launch"
        );
        fake.stop(&task.id, "scale_in").await.unwrap();
        fake.stop(&task.id, "scale_in").await.unwrap();
        fake.stop("unknown", "x").await.unwrap();
        assert_eq!(fake.tasks()[0].state, TaskState::Stopped);
        fake.delete_handoff("missing").await.unwrap();
    }
}
