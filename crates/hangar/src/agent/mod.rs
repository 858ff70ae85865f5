//! `hangar agent`: the runner container's entrypoint. It turns credentials into a registered
//! runner (registration token + `Runner.Listener configure`, or a JIT configuration given
//! directly or through a one-shot SSM parameter), supervises `bin/Runner.Listener run`, and makes
//! sure the runner leaves GitHub cleanly whatever happens: stop signals drain a busy runner
//! instead of cancelling its job, an idle runner is deregistered before it is stopped, crashes
//! restart with a capped backoff, and a runner GitHub no longer knows ends the task.
//!
//! Layout: `config` resolves flags and environment; `policy` holds every decision as pure
//! functions; `files` knows the runner's folder; `env` builds the runner's environment;
//! `hooks` is the job hooks' channel back to the agent; `isolation` draws the line between the
//! agent and the jobs (runtime folder, file work as the runner's user, the process table);
//! `protection` is ECS task scale-in protection; `docker` waits for the pool's Docker daemon
//! (`HANGAR_DOCKER=1`) or puts a `docker` stub on the runner's `PATH` (no daemon); `jit_file`
//! takes a one-shot JIT file, `naming`
//! names the runner, `output` forwards the runner's output; `supervise` (this module's `run`)
//! does the I/O.
//!
//! Invariants: the runner never inherits the agent's environment (see `env`), and no job can
//! read the agent's (it is non-dumpable, and as root it runs jobs as `RUNNER_USER`); the registration
//! token and JIT blob reach the runner only through `ACTIONS_RUNNER_INPUT_*` variables, never
//! argv or logs; a stop never sends the runner a signal while it holds a job unless the drain
//! budget ran out or the operator insisted with a second signal.
//!
//! Before the runner is registered or started, a pool with Docker waits for its daemon; a stop
//! signal meanwhile ends the agent (0) with nothing registered.
//!
//! Exit codes: 0 clean stop (or an ephemeral runner's job done), 1 the runner or GitHub failed
//! past retrying, 2 bad configuration, 3 the runner is gone or idle too long, or the pool's
//! Docker daemon never answered: replace the task.

pub mod config;
pub mod docker;
pub mod env;
pub mod files;
pub mod hooks;
pub mod isolation;
mod jit_file;
mod naming;
mod output;
pub mod policy;
pub mod protection;
mod supervise;

pub use config::{AgentArgs, AgentConfig, AgentConfigError};
pub use supervise::{AgentError, AgentExit, run};
