//! A stand-in for a Docker daemon's socket (`docker:dind` sharing `docker.sock` through a
//! volume): a Unix socket in a short temporary folder that answers `GET /_ping` with `200 OK`,
//! listening only after a delay, as a sidecar that is still starting.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A folder for a socket: in [`super::reachable_temp_dir`] (so a runner switched to another user
/// can reach it) when the path stays short enough for a Unix socket, else under `/tmp`. Removed
/// when dropped.
pub struct SocketDir {
    pub path: PathBuf,
}

impl SocketDir {
    pub fn new(tag: &str) -> SocketDir {
        let name = format!(
            "hangar-{tag}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let tmp = super::reachable_temp_dir().join(&name);
        // Room for "/docker.sock" within a socket path's 103 bytes.
        let path = if tmp.as_os_str().len() + 12 <= 100 {
            tmp
        } else {
            PathBuf::from("/tmp").join(&name)
        };
        std::fs::create_dir_all(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        SocketDir { path }
    }

    pub fn socket(&self) -> PathBuf {
        self.path.join("docker.sock")
    }

    /// `DOCKER_HOST` for [`Self::socket`].
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The stand-in daemon: how many pings it answered. Stops with the test's runtime.
pub struct FakeDockerd {
    pub pings: Arc<AtomicUsize>,
}

impl FakeDockerd {
    /// Starts listening on `socket` after `delay`, answering every request `200 OK` / `OK` (what
    /// dockerd answers to `/_ping`).
    pub fn start_after(socket: PathBuf, delay: Duration) -> FakeDockerd {
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = pings.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let listener = tokio::net::UnixListener::bind(&socket).unwrap();
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let counted = counted.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    if request.starts_with(b"GET /_ping ") {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = conn
                        .write_all(b"HTTP/1.1 200 OK\r\nApi-Version: 1.45\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 2\r\nConnection: close\r\n\r\nOK")
                        .await;
                });
            }
        });
        FakeDockerd { pings }
    }

    pub fn pings(&self) -> usize {
        self.pings.load(Ordering::SeqCst)
    }
}
