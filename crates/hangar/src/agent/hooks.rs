//! The job hooks' channel back to the agent. The runner runs `ACTIONS_RUNNER_HOOK_JOB_STARTED`
//! and `_COMPLETED` scripts around every job; ours run `hangar agent hook started|completed`,
//! which sends one JSON line over a Unix socket in the agent's runtime folder (see
//! `isolation::RuntimeDir`) and waits for the agent's answer. The agent does the work (task
//! protection, workspace wipe, logs) before it answers, so protection is on before the job's
//! first step and the wipe is finished before the runner can take the next job.
//!
//! The socket accepts only the runner's uid (`SO_PEERCRED`), but a job runs as that uid too, so
//! any call may be forged by a workflow step: the agent treats a hook as a claim, never as proof
//! (see `supervise::on_hook` for what a forged call can and cannot do).
//!
//! A hook that cannot reach the agent warns and exits 0: failing the user's job would be worse
//! than a missing log line. Nothing secret crosses the socket: only the job's name, run id,
//! repository and workspace path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// Which hook ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HookKind {
    Started,
    Completed,
}

/// What a hook tells the agent, from the environment the runner gives hooks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookEvent {
    pub kind: HookKind,
    #[serde(default)]
    pub job: Option<String>,
    #[serde(default)]
    pub run_id: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub workspace: Option<String>,
}

impl HookEvent {
    /// The event as the hook process sees it (`GITHUB_JOB`, `GITHUB_RUN_ID`, ...).
    pub fn from_env(kind: HookKind, get: &dyn Fn(&str) -> Option<String>) -> HookEvent {
        HookEvent {
            kind,
            job: get("GITHUB_JOB"),
            run_id: get("GITHUB_RUN_ID"),
            repository: get("GITHUB_REPOSITORY"),
            workspace: get("GITHUB_WORKSPACE"),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct HookReply {
    ok: bool,
}

/// One hook call waiting for the agent: answer through `done` when the work is finished.
#[derive(Debug)]
pub struct PendingHook {
    pub event: HookEvent,
    pub done: oneshot::Sender<()>,
}

/// Binds the socket in the agent's runtime folder and forwards every hook call from
/// `runner_uid` to the returned receiver; calls from any other uid are refused unread. With
/// `shared` (the runner is another user than the agent) the socket is world-writable, so the
/// runner can connect, and the peer check is what keeps everyone else out.
pub fn listen(
    socket: &Path,
    runner_uid: u32,
    shared: bool,
) -> std::io::Result<mpsc::Receiver<PendingHook>> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(socket)?;
    let mode = if shared { 0o666 } else { 0o600 };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match stream.peer_cred() {
                Ok(peer) if peer.uid() == runner_uid => {}
                Ok(peer) => {
                    tracing::warn!(
                        uid = peer.uid(),
                        pid = peer.pid(),
                        "refused a job hook call from a process that is not the runner's user"
                    );
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "refused a job hook call whose sender is unknown");
                    continue;
                }
            }
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Err(e) = serve_one(stream, tx).await {
                    tracing::debug!(error = %e, "hook connection failed");
                }
            });
        }
    });
    Ok(rx)
}

async fn serve_one(stream: UnixStream, tx: mpsc::Sender<PendingHook>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    // One short JSON line; a bound keeps a confused client from growing this without limit.
    let mut reader = BufReader::new(read.take(16 * 1024));
    reader.read_line(&mut line).await?;
    let event: HookEvent = serde_json::from_str(line.trim())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let (done, wait) = oneshot::channel();
    if tx.send(PendingHook { event, done }).await.is_err() {
        return Ok(());
    }
    let ok = wait.await.is_ok();
    let mut reply = serde_json::to_vec(&HookReply { ok }).unwrap_or_default();
    reply.push(b'\n');
    write.write_all(&reply).await
}

/// Sends `event` to the agent at `socket` and waits (up to `timeout`) for its answer.
pub async fn notify(socket: &Path, event: &HookEvent, timeout: Duration) -> Result<(), String> {
    let call = async {
        let mut stream = UnixStream::connect(socket)
            .await
            .map_err(|e| format!("cannot reach the agent at {}: {e}", socket.display()))?;
        let mut line = serde_json::to_vec(event).map_err(|e| e.to_string())?;
        line.push(b'\n');
        stream.write_all(&line).await.map_err(|e| e.to_string())?;
        let mut answer = String::new();
        BufReader::new(stream)
            .read_line(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let reply: HookReply =
            serde_json::from_str(answer.trim()).map_err(|_| "the agent hung up".to_string())?;
        if reply.ok {
            Ok(())
        } else {
            Err("the agent could not finish the hook's work".into())
        }
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("the agent did not answer within {timeout:?}"))?
}

/// `hangar agent hook started|completed`: tell the agent, never fail the job.
pub async fn run_hook(kind: HookKind, socket: PathBuf) -> std::process::ExitCode {
    let event = HookEvent::from_env(kind, &|name| std::env::var(name).ok());
    if let Err(e) = notify(&socket, &event, Duration::from_secs(90)).await {
        eprintln!("hangar hook: warning: {e}; the job goes on without the agent's {kind:?} work");
    }
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime_dir() -> crate::agent::isolation::RuntimeDir {
        let base = std::path::PathBuf::from(format!(
            "/tmp/hangar-hooks-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        crate::agent::isolation::RuntimeDir::create(Some(&base), None).unwrap()
    }

    fn event() -> HookEvent {
        HookEvent {
            kind: HookKind::Started,
            job: Some("build".into()),
            run_id: Some("9".into()),
            repository: Some("o/r".into()),
            workspace: None,
        }
    }

    #[tokio::test]
    async fn a_hook_waits_for_the_agent_to_finish() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let dir = runtime_dir();
            let socket = dir.socket();
            let mut rx = listen(&socket, nix::unistd::geteuid().as_raw(), false).unwrap();
            let event = event();
            let sent = event.clone();
            let sock = socket.clone();
            let client =
                tokio::spawn(async move { notify(&sock, &sent, Duration::from_secs(5)).await });
            let pending = rx.recv().await.unwrap();
            assert_eq!(pending.event, event);
            assert!(
                !client.is_finished(),
                "the hook must wait for the agent's answer"
            );
            pending.done.send(()).unwrap();
            client.await.unwrap().unwrap();
            // An agent that drops the call answers "not ok".
            let sent = event.clone();
            let sock = socket.clone();
            let client =
                tokio::spawn(async move { notify(&sock, &sent, Duration::from_secs(5)).await });
            drop(rx.recv().await.unwrap());
            assert!(client.await.unwrap().is_err());
            std::fs::remove_dir_all(dir.path().parent().unwrap()).ok();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_caller_of_another_uid_is_refused_unread() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let dir = runtime_dir();
            let socket = dir.socket();
            let me = nix::unistd::geteuid().as_raw();
            let mut rx = listen(&socket, me.wrapping_add(1), false).unwrap();
            let err = notify(&socket, &event(), Duration::from_secs(5))
                .await
                .unwrap_err();
            assert!(err.contains("hung up") || err.contains("os error"), "{err}");
            assert!(
                rx.try_recv().is_err(),
                "a call from another uid must never reach the agent"
            );
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::remove_dir_all(dir.path().parent().unwrap()).ok();
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn no_agent_is_an_error_not_a_hang() {
        let r = notify(
            Path::new("/nonexistent/agent.sock"),
            &HookEvent::from_env(HookKind::Completed, &|_| None),
            Duration::from_secs(2),
        )
        .await;
        assert!(r.unwrap_err().contains("cannot reach the agent"));
    }
}
