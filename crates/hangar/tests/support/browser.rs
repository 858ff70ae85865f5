//! A headless Chromium for tests of the controller's web page: found as `HANGAR_CHROMIUM`, else
//! `chromium` or `chromium-browser` on `PATH` (`scripts/test` installs Debian's). Without one a
//! test says it was skipped and passes, except with `CI=true`, where it fails.
//!
//! Every run has its own profile folder (removed on drop), runs as root too (`--no-sandbox`), and
//! is killed with its whole process group when it overruns its time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub struct Chromium {
    binary: PathBuf,
    profile: PathBuf,
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Chromium {
    /// The browser, or `None` (after saying so) when the test `test` is to be skipped.
    pub fn find(test: &str) -> Option<Chromium> {
        let binary = match std::env::var_os("HANGAR_CHROMIUM").filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                assert!(
                    path.is_file(),
                    "{test}: HANGAR_CHROMIUM={} does not exist",
                    path.display()
                );
                Some(path)
            }
            None => on_path("chromium").or_else(|| on_path("chromium-browser")),
        };
        let Some(binary) = binary else {
            assert!(
                !in_ci(),
                "{test}: no Chromium (HANGAR_CHROMIUM, or chromium/chromium-browser on PATH); \
                 CI=true, so this fails instead of being skipped. Fix: apt-get install chromium"
            );
            eprintln!(
                "{test}: SKIPPED: no Chromium (set HANGAR_CHROMIUM or install chromium; \
                 CI=true makes this a failure)"
            );
            return None;
        };
        let profile = std::env::temp_dir().join(format!(
            "hangar-chromium-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        Some(Chromium { binary, profile })
    }

    /// Runs the browser headless on `url` with `args` and returns its standard output; fails the
    /// test if it does not finish within `secs` (after killing it) or fails.
    pub async fn run(&self, args: &[&str], url: &str, secs: u64) -> String {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
            ])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .args(args)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().expect("chromium starts");
        let group = child.id().expect("a pid") as i32;
        match tokio::time::timeout(Duration::from_secs(secs), child.wait_with_output()).await {
            Ok(output) => {
                let output = output.expect("chromium ran");
                assert!(
                    output.status.success(),
                    "chromium {args:?} {url} failed: {:?}\n{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
                String::from_utf8_lossy(&output.stdout).into_owned()
            }
            Err(_) => {
                // Its renderer and helpers are in the same group.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(group),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("chromium {args:?} {url} did not finish within {secs} s: killed");
            }
        }
    }

    /// The DOM after the page loaded or, with a budget, after that much virtual time (which
    /// stands still while a request is in flight: see [`one_event_proxy`]).
    pub async fn dump_dom(&self, url: &str, virtual_time_ms: Option<u64>) -> String {
        let wait = virtual_time_ms.map(|ms| format!("--virtual-time-budget={ms}"));
        let mut args = vec!["--dump-dom"];
        if let Some(wait) = &wait {
            args.push(wait);
        }
        self.run(&args, url, 20).await
    }

    /// A screenshot of `url` in a window of `width`×`height` CSS pixels, saved at `path`.
    pub async fn screenshot(&self, url: &str, path: &Path, width: u32, height: u32) {
        let shot = format!("--screenshot={}", path.display());
        let size = format!("--window-size={width},{height}");
        self.run(&[&shot, &size], url, 20).await;
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A loopback proxy to `target` that lets every `/events` stream through until its first event
/// ends, then cuts the connection (so the browser reconnects later). Chromium's virtual time
/// stands still while a request is in flight, and an event stream is in flight for ever; cut
/// short, the page's script still receives and applies an event, and virtual time runs on.
/// Every request is sent with `Connection: close`, so each has its own connection.
pub async fn one_event_proxy(target: std::net::SocketAddr) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head).into_owned();
                let events = text.starts_with("GET /events ");
                let mut rewritten = String::new();
                for line in text.split("\r\n") {
                    if !line.to_ascii_lowercase().starts_with("connection:") {
                        rewritten.push_str(line);
                        rewritten.push_str("\r\n");
                    }
                }
                let rewritten = rewritten.replacen("\r\n", "\r\nConnection: close\r\n", 1);
                let rewritten = rewritten.trim_end_matches("\r\n").to_string() + "\r\n\r\n";
                let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                if server.write_all(rewritten.as_bytes()).await.is_err() {
                    return;
                }
                if !events {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
                let mut seen = Vec::new();
                loop {
                    let n = match server.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if client.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    let body = seen
                        .windows(4)
                        .position(|w| w == b"\r\n\r\n")
                        .map(|p| &seen[p + 4..]);
                    if body.is_some_and(|b| b.windows(2).any(|w| w == b"\n\n")) {
                        return; // both connections close here
                    }
                }
            });
        }
    });
    addr
}
