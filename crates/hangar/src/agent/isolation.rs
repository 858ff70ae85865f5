//! The line between the agent and the jobs its runner executes. Every workflow step is
//! untrusted code running as the runner's user; the agent holds credentials (a PAT or App key,
//! the task role's credentials URI, one-shot JIT configurations). This module is where that line
//! is drawn, so it can be read in one place:
//!
//! - [`RunAs`]: the user the runner and every job run as, when the agent (root) switches to it.
//! - [`harden_self`]: the agent is not dumpable, so its `/proc/PID/{environ,mem,...}` belong to
//!   root and no process of another uid, nor of its own uid without `CAP_SYS_PTRACE`, can read them.
//! - [`RuntimeDir`]: the agent's private folder (hook socket and hook scripts), outside
//!   `RUNNER_HOME`, short enough for a Unix socket path whatever `RUNNER_HOME` or `TMPDIR` is,
//!   owned by the agent so a job can neither replace the socket nor rewrite the hook scripts.
//! - [`as_user`]: file work inside folders a job can write (`RUNNER_HOME`, the work folder) done
//!   with the runner's filesystem identity, so a link a job planted there gives the root agent's
//!   hand no more reach than the job's own.
//! - [`has_children`]: whether the runner listener is running a job right now, read from the
//!   process table, which a job cannot forge (it cannot give its listener a child; orphans go to
//!   PID 1), unlike a hook call.
//!
//! Invariants: the socket accepts only the runner's uid; nothing here follows a link under a
//! folder a job can write while holding root's filesystem identity.

use std::path::{Path, PathBuf};

/// The user the runner runs as, when the agent switches to it.
#[derive(Clone, Debug)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub home: PathBuf,
}

/// The longest Unix socket path every supported system accepts (macOS: 104 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 103;

/// The variable that moves the agent's runtime folder.
pub const ENV_RUNTIME_DIR: &str = "HANGAR_RUNTIME_DIR";

/// Makes this process non-dumpable: its `/proc/PID/*` files become root's, so a job (another
/// uid, or the same uid without `CAP_SYS_PTRACE`) cannot read its environment or memory, and
/// it leaves no core dump holding a credential. Children are dumpable again after `exec`.
pub fn harden_self() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "could not make the agent non-dumpable");
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error(
        "the agent's runtime folder {path} cannot be used: {why}. Fix: remove it, or set {ENV_RUNTIME_DIR} to a folder only the agent's user can write"
    )]
    Unsafe { path: PathBuf, why: String },
    #[error(
        "cannot prepare the agent's runtime folder {path}: {cause}. Fix: set {ENV_RUNTIME_DIR} to a writable folder"
    )]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "the hook socket path {path} is {len} bytes, longer than a Unix socket path may be ({MAX_SOCKET_PATH}). Fix: set {ENV_RUNTIME_DIR} to a shorter folder such as /run/hangar"
    )]
    TooLong { path: PathBuf, len: usize },
}

/// The agent's private folder: `<base>/<pid>-<random>/` holding `agent.sock` and the hook scripts.
/// The base is `HANGAR_RUNTIME_DIR`, else `/run/hangar` for root, else `/tmp/hangar-<uid>`:
/// never under `RUNNER_HOME` or `TMPDIR`, which may be long. Removed when dropped.
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
}

impl RuntimeDir {
    /// Creates this agent's folder. With `shared_with` (a runner of another uid) the folder is
    /// searchable (0711) so the runner's hooks can reach the socket and scripts by name, but
    /// neither list nor change them; otherwise it is 0700. The base, which every agent of the
    /// host shares, is always 0711: an agent whose runner is root setting it to 0700 would cut
    /// off the runners of the other agents on the host (seen: two agents on one host, the
    /// second one's hooks "Permission denied"). The privacy is in each agent's own folder.
    pub fn create(
        base: Option<&Path>,
        shared_with: Option<&RunAs>,
    ) -> Result<RuntimeDir, RuntimeDirError> {
        let euid = nix::unistd::geteuid();
        let base = match base {
            Some(b) => b.to_path_buf(),
            None if euid.is_root() && Path::new("/run").is_dir() => PathBuf::from("/run/hangar"),
            None => PathBuf::from(format!("/tmp/hangar-{}", euid.as_raw())),
        };
        let mode = if shared_with.is_some() { 0o711 } else { 0o700 };
        ensure_private_dir(&base, 0o711)?;
        // The pid alone is not unique: agents in PID namespaces of their own may share the base.
        let path = base.join(format!(
            "{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        ensure_private_dir(&path, mode)?;
        let dir = RuntimeDir { path };
        let socket = dir.socket();
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(RuntimeDirError::TooLong { path: socket, len });
        }
        Ok(dir)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The job hooks' socket.
    pub fn socket(&self) -> PathBuf {
        self.path.join("agent.sock")
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Creates `dir` (and its parents) if needed, then checks it is a real folder owned by this
/// user that nobody else can write, and sets `mode`.
fn ensure_private_dir(dir: &Path, mode: u32) -> Result<(), RuntimeDirError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let io = |cause| RuntimeDirError::Io {
        path: dir.to_path_buf(),
        cause,
    };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let unsafe_because = |why: String| RuntimeDirError::Unsafe {
        path: dir.to_path_buf(),
        why,
    };
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    if !meta.file_type().is_dir() {
        return Err(unsafe_because("it is a link or not a folder".to_string()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(unsafe_because(format!(
            "it belongs to uid {}, not the agent's uid {euid}",
            meta.uid()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(())
}

/// Runs `work` with `user`'s filesystem identity (Linux: on a thread of its own, with
/// `setfsuid`/`setfsgid` and no supplementary groups, which also drops root's file
/// capabilities), so a path a job can influence reaches no further than the job could reach
/// itself. Without a user to switch to, `work` runs as the agent.
pub async fn as_user<T, F>(user: Option<&RunAs>, work: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let Some(user) = user.cloned() else {
        return Ok(work());
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hangar-as-runner".into())
        .spawn(move || {
            let result = become_fs_user(&user).map(|()| work());
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| std::io::Error::other("the file worker thread ended without an answer"))?
}

/// Switches the calling thread's filesystem identity; only this thread changes (the raw
/// syscalls are used on purpose: libc's `setgroups` would change every thread of the agent).
#[cfg(target_os = "linux")]
fn become_fs_user(user: &RunAs) -> std::io::Result<()> {
    use nix::libc;
    // SAFETY: setgroups(0, NULL) reads no memory; it only changes this thread's credentials.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: plain syscalls on integer arguments; they change this thread's credentials only.
    unsafe {
        libc::syscall(libc::SYS_setfsgid, user.gid as libc::c_long);
        libc::syscall(libc::SYS_setfsuid, user.uid as libc::c_long);
    }
    // setfs*id report failure only by leaving the old value: ask again to be sure.
    let (fsuid, fsgid) = unsafe {
        (
            libc::syscall(libc::SYS_setfsuid, -1 as libc::c_long),
            libc::syscall(libc::SYS_setfsgid, -1 as libc::c_long),
        )
    };
    if fsuid as u32 != user.uid || fsgid as u32 != user.gid {
        return Err(std::io::Error::other(format!(
            "could not take the filesystem identity of {} (uid {}, gid {})",
            user.name, user.uid, user.gid
        )));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn become_fs_user(user: &RunAs) -> std::io::Result<()> {
    Err(std::io::Error::other(format!(
        "switching file work to {} needs Linux",
        user.name
    )))
}

/// Whether process `pid` has a child. The official runner's listener runs each job in a
/// `Runner.Worker` child (the job's hooks and steps below it), and has none between jobs; the
/// stand-in runs steps and hooks as its own children. `None` when the process table cannot be
/// read (no `/proc`).
pub fn has_children(pid: u32) -> Option<bool> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(child) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if child == pid {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if parent_of(&stat) == Some(pid) {
            return Some(true);
        }
    }
    Some(false)
}

/// The parent pid in a `/proc/PID/stat` line. The command name is in parentheses and may
/// itself hold spaces or parentheses, so the fields are read after its last `)`.
pub fn parent_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    fields.next()?; // state
    fields.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        // Under /tmp, not TMPDIR: these folders hold sockets, and TMPDIR may be long.
        let dir = PathBuf::from(format!(
            "/tmp/hangar-iso-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_parent_is_read_after_the_command_name() {
        assert_eq!(parent_of("42 (bash) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("42 (a) b (c) S 9 1 1"), Some(9));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn a_process_with_a_child_is_seen_as_busy() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_eq!(has_children(me), Some(true));
        assert_eq!(has_children(child.id()), Some(false), "sleep has no child");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn the_runtime_folder_is_short_private_and_removed() {
        let base = scratch("rt");
        let dir = RuntimeDir::create(Some(&base), None).unwrap();
        let path = dir.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert!(dir.socket().starts_with(&base));
        // The shared base stays searchable, whatever this agent's runner: another agent's
        // runner of another uid must still reach its own folder.
        assert_eq!(
            std::fs::metadata(&base).unwrap().permissions().mode() & 0o777,
            0o711
        );
        drop(dir);
        assert!(!path.exists());
        std::fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn a_linked_or_foreign_runtime_folder_is_refused() {
        let base = scratch("link");
        let target = base.join("target");
        std::fs::create_dir_all(&target).unwrap();
        let link = base.join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = RuntimeDir::create(Some(&link), None).unwrap_err();
        assert!(err.to_string().contains("link"), "{err}");
        assert!(err.to_string().contains(ENV_RUNTIME_DIR), "{err}");
        std::fs::remove_dir_all(&base).ok();
    }

    #[test]
    fn a_socket_path_too_long_for_unix_says_how_to_fix_it() {
        let base = scratch("long");
        let deep = base.join("d".repeat(100));
        let err = RuntimeDir::create(Some(&deep), None).unwrap_err();
        assert!(
            matches!(err, RuntimeDirError::TooLong { .. })
                && err.to_string().contains(ENV_RUNTIME_DIR),
            "{err}"
        );
        std::fs::remove_dir_all(&base).ok();
    }

    #[tokio::test]
    async fn file_work_as_the_runner_cannot_touch_roots_files() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to switch the filesystem identity");
            return;
        }
        let base = scratch("fsuid");
        let guarded = base.join("root-only");
        std::fs::write(&guarded, "root's").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let nobody = RunAs {
            uid: 65534,
            gid: 65534,
            name: "nobody".into(),
            home: "/".into(),
        };
        let target = guarded.clone();
        let removed = as_user(Some(&nobody), move || std::fs::remove_file(&target))
            .await
            .unwrap();
        assert_eq!(
            removed.unwrap_err().kind(),
            std::io::ErrorKind::PermissionDenied
        );
        assert!(guarded.exists());
        // The agent's own threads keep root's identity.
        std::fs::remove_file(&guarded).unwrap();
        std::fs::remove_dir_all(&base).ok();
    }
}
