//! The agent's decisions, as pure functions of what happened: what a runner exit code means
//! (facts §2), how long to wait before a restart, and what a stop signal does in each state.
//! Nothing here sleeps, spawns or talks to anyone; `supervise` acts on the answers, and the
//! tables below are tested case by case.

use std::time::Duration;

/// How `bin/Runner.Listener run` ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerEnd {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal (a crash, the OOM killer, or someone's `kill -9`).
    Signal(i32),
}

/// What to do after the runner ended while the agent was not stopping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AfterExit {
    /// The runner is done for good and so is the agent, successfully (an ephemeral runner after
    /// its job).
    Done,
    /// Exit 0 from a persistent runner: it stops on its own only when GitHub deleted its
    /// registration. Ask GitHub before deciding.
    CheckRegistration,
    /// Start `run` again after `delay`. `failure` counts toward the give-up limit.
    Restart { delay: Duration, failure: bool },
    /// Stop and report this; the runner cannot recover by restarting.
    Fail(String),
}

/// Restart pacing: exponential from `base`, capped, and a limit of consecutive failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    pub base: Duration,
    pub cap: Duration,
    /// Consecutive failures after which the agent gives up.
    pub max_failures: u32,
    /// A run that lasted this long resets the failure count.
    pub healthy_after: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_failures: 5,
            healthy_after: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The wait before restart number `failures` (1-based): base, 2·base, 4·base, ... capped.
    pub fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The failure count after a run that lasted `ran_for` and ended in a failure or not.
    pub fn next_failures(&self, previous: u32, ran_for: Duration, failure: bool) -> u32 {
        match (failure, ran_for >= self.healthy_after) {
            (false, _) => 0,
            (true, true) => 1,
            (true, false) => previous + 1,
        }
    }
}

/// What a runner exit means (facts §2), given whether the runner is ephemeral and how many
/// consecutive failures came before this one (this one included when it is a failure).
pub fn after_exit(
    end: RunnerEnd,
    ephemeral: bool,
    failures: u32,
    policy: &RestartPolicy,
) -> AfterExit {
    let restart = |failure: bool| {
        if failure && failures > policy.max_failures {
            AfterExit::Fail(format!(
                "the runner failed {failures} times in a row ({}); giving up so the task is replaced",
                describe(end)
            ))
        } else {
            AfterExit::Restart {
                delay: if failure {
                    policy.backoff(failures)
                } else {
                    Duration::ZERO
                },
                failure,
            }
        }
    };
    match end {
        RunnerEnd::Code(0) if ephemeral => AfterExit::Done,
        RunnerEnd::Code(0) => AfterExit::CheckRegistration,
        RunnerEnd::Code(1) => AfterExit::Fail(
            "the runner terminated with exit code 1 (not configured, refused, or a fatal error; its output above says which)"
                .into(),
        ),
        RunnerEnd::Code(2) => restart(true),
        // Self-update: we configure with --disableupdate, so this is unexpected; the listener
        // expects to be started again on the new binaries.
        RunnerEnd::Code(3) | RunnerEnd::Code(4) => restart(true),
        // Another listener holds this registration's session, or a crashed one's session has
        // not expired yet: back off and try again.
        RunnerEnd::Code(5) => restart(true),
        RunnerEnd::Code(6) => restart(false),
        RunnerEnd::Code(7) => AfterExit::Fail(
            "GitHub refuses this runner version (exit code 7, version deprecated). Fix: rebuild the image with a supported actions/runner release"
                .into(),
        ),
        RunnerEnd::Code(_) | RunnerEnd::Signal(_) => restart(true),
    }
}

/// A human description of a runner end, for logs.
pub fn describe(end: RunnerEnd) -> String {
    match end {
        RunnerEnd::Code(c) => {
            let meaning = match c {
                0 => "success",
                1 => "terminated",
                2 => "retryable error",
                3 | 4 => "self-update",
                5 => "session conflict",
                6 => "configuration refreshed",
                7 => "version deprecated",
                _ => "unknown code",
            };
            format!("exit code {c}, {meaning}")
        }
        RunnerEnd::Signal(s) => format!("killed by signal {s}"),
    }
}

/// The agent's view of the runner when a stop signal arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// No job (as far as the job hooks have told us).
    Idle,
    /// Between the started and completed hooks.
    Busy,
}

/// Where a stop is at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopPhase {
    /// Not stopping.
    Running,
    /// Waiting for the job to finish, until the deadline.
    Draining,
    /// The runner was told to cancel its job (SIGINT); waiting for it to exit.
    Cancelling,
    /// The runner was killed; only clean-up remains.
    Killing,
}

/// The first step of a stop, or of an escalation by a later signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopStep {
    /// Remove the registration first, then stop the (idle) runner. A busy answer from GitHub
    /// means a job has just landed: drain instead.
    DeregisterThenStop,
    /// Let the job finish, up to the drain budget.
    Drain,
    /// Send SIGINT: the runner cancels its job, reports it, and exits.
    Cancel,
    /// SIGKILL the runner; deregister; exit.
    Kill,
}

/// What a stop signal does in each phase: the first drains a busy runner or stops an idle one;
/// each later signal moves one step toward ending now.
pub fn on_stop_signal(phase: StopPhase, activity: Activity) -> StopStep {
    match (phase, activity) {
        (StopPhase::Running, Activity::Idle) => StopStep::DeregisterThenStop,
        (StopPhase::Running, Activity::Busy) => StopStep::Drain,
        (StopPhase::Draining, _) => StopStep::Cancel,
        (StopPhase::Cancelling, _) | (StopPhase::Killing, _) => StopStep::Kill,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartPolicy {
        RestartPolicy {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(1000),
            max_failures: 3,
            healthy_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn every_exit_code_has_its_meaning() {
        let p = policy();
        let ms = Duration::from_millis;
        let cases: Vec<(RunnerEnd, bool, u32, AfterExit)> = vec![
            (RunnerEnd::Code(0), true, 0, AfterExit::Done),
            (RunnerEnd::Code(0), false, 0, AfterExit::CheckRegistration),
            (
                RunnerEnd::Code(2),
                false,
                1,
                AfterExit::Restart {
                    delay: ms(100),
                    failure: true,
                },
            ),
            (
                RunnerEnd::Code(2),
                false,
                2,
                AfterExit::Restart {
                    delay: ms(200),
                    failure: true,
                },
            ),
            (
                RunnerEnd::Code(3),
                false,
                1,
                AfterExit::Restart {
                    delay: ms(100),
                    failure: true,
                },
            ),
            (
                RunnerEnd::Code(4),
                true,
                1,
                AfterExit::Restart {
                    delay: ms(100),
                    failure: true,
                },
            ),
            (
                RunnerEnd::Code(5),
                false,
                3,
                AfterExit::Restart {
                    delay: ms(400),
                    failure: true,
                },
            ),
            (
                RunnerEnd::Code(6),
                false,
                0,
                AfterExit::Restart {
                    delay: ms(0),
                    failure: false,
                },
            ),
            (
                RunnerEnd::Signal(9),
                false,
                1,
                AfterExit::Restart {
                    delay: ms(100),
                    failure: true,
                },
            ),
            (
                RunnerEnd::Code(42),
                false,
                1,
                AfterExit::Restart {
                    delay: ms(100),
                    failure: true,
                },
            ),
        ];
        for (end, ephemeral, failures, want) in cases {
            assert_eq!(
                after_exit(end, ephemeral, failures, &p),
                want,
                "{end:?} ephemeral={ephemeral}"
            );
        }
        assert!(
            matches!(after_exit(RunnerEnd::Code(1), false, 0, &p), AfterExit::Fail(m) if m.contains("exit code 1"))
        );
        assert!(
            matches!(after_exit(RunnerEnd::Code(7), true, 0, &p), AfterExit::Fail(m) if m.contains("supported actions/runner"))
        );
    }

    #[test]
    fn restarts_give_up_after_the_limit() {
        let p = policy();
        assert!(matches!(
            after_exit(RunnerEnd::Code(2), false, 3, &p),
            AfterExit::Restart { .. }
        ));
        assert!(matches!(
            after_exit(RunnerEnd::Code(2), false, 4, &p),
            AfterExit::Fail(m) if m.contains("4 times in a row")
        ));
        // A refreshed configuration is not a failure, whatever came before.
        assert!(matches!(
            after_exit(RunnerEnd::Code(6), false, 9, &p),
            AfterExit::Restart { failure: false, .. }
        ));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let p = policy();
        let got: Vec<u128> = (1..=6).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(u32::MAX), Duration::from_millis(1000));
    }

    #[test]
    fn a_healthy_run_resets_the_failure_count() {
        let p = policy();
        assert_eq!(p.next_failures(3, Duration::from_secs(1), true), 4);
        assert_eq!(p.next_failures(3, Duration::from_secs(61), true), 1);
        assert_eq!(p.next_failures(3, Duration::from_secs(1), false), 0);
    }

    #[test]
    fn stop_signals_escalate_one_step_at_a_time() {
        use Activity::*;
        use StopPhase::*;
        assert_eq!(on_stop_signal(Running, Idle), StopStep::DeregisterThenStop);
        assert_eq!(on_stop_signal(Running, Busy), StopStep::Drain);
        assert_eq!(on_stop_signal(Draining, Busy), StopStep::Cancel);
        assert_eq!(on_stop_signal(Draining, Idle), StopStep::Cancel);
        assert_eq!(on_stop_signal(Cancelling, Busy), StopStep::Kill);
        assert_eq!(on_stop_signal(Killing, Idle), StopStep::Kill);
    }
}
