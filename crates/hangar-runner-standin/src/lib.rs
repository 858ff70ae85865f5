//! A stand-in for actions/runner's `bin/Runner.Listener` (work in progress).

/// Runs the stand-in with the process's arguments; returns the exit code.
pub fn main_with_args(_argv0: std::path::PathBuf, _args: Vec<std::ffi::OsString>) -> i32 {
    1
}
