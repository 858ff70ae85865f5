//! The runner's files as the agent sees them: its install folder (`RUNNER_HOME`, with
//! `bin/Runner.Listener`), the `.runner` settings file the runner writes when configured, the
//! JIT configuration blob (GitHub's shape: base64 of a JSON map from file name to base64 file
//! content), the job hook scripts the agent installs, and the work folder it wipes between jobs.
//!
//! Invariants: nothing here reads or writes a credential file's content except to delete it;
//! jobs can write `RUNNER_HOME`, so nothing here follows a link found in it (the supervisor also
//! runs every change there with the runner's identity, see `isolation::as_user`).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};

/// Files the runner keeps in its root once configured; removing them "unconfigures" it locally.
pub const LOCAL_CONFIG_FILES: [&str; 3] = [".runner", ".credentials", ".credentials_rsaparams"];

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error(
        "RUNNER_HOME {home} has no executable bin/Runner.Listener. Fix: point RUNNER_HOME (or --runner-home) at the folder the actions/runner release was unpacked into"
    )]
    NoRunner { home: PathBuf },
    #[error(
        "the JIT runner configuration is not valid: {0}. Fix: pass the encoded_jit_config exactly as GitHub returned it"
    )]
    BadJitConfig(String),
    #[error("cannot read the runner's settings file {path}: {cause}")]
    Settings { path: PathBuf, cause: String },
    #[error("{action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> FilesError + 'a {
    move |cause| FilesError::Io {
        action,
        path: path.to_path_buf(),
        cause,
    }
}

/// What the agent needs to know of a registered runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerIdentity {
    pub id: u64,
    pub name: String,
    pub ephemeral: bool,
}

/// The runner install folder.
#[derive(Clone, Debug)]
pub struct RunnerHome {
    root: PathBuf,
}

impl RunnerHome {
    /// Checks that `root/bin/Runner.Listener` exists and is executable.
    pub fn open(root: &Path) -> Result<RunnerHome, FilesError> {
        use std::os::unix::fs::PermissionsExt;
        let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
        let listener = root.join("bin").join("Runner.Listener");
        match std::fs::metadata(&listener) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(RunnerHome { root }),
            _ => Err(FilesError::NoRunner { home: root }),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn listener(&self) -> PathBuf {
        self.root.join("bin").join("Runner.Listener")
    }

    /// The work folder (`--work`), relative to the root unless absolute.
    pub fn work_folder(&self, work: &str) -> PathBuf {
        let p = Path::new(work);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    /// The registered runner, if the root holds a configuration (`.runner`). Only a regular
    /// file is read: a job could have left a link or a pipe in its place.
    pub fn configured(&self) -> Result<Option<RunnerIdentity>, FilesError> {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.root.join(".runner");
        let read = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(&path)
            .and_then(|file| {
                if !file.metadata()?.is_file() {
                    return Err(std::io::Error::other("not a regular file"));
                }
                let mut bytes = Vec::new();
                file.take(1 << 20).read_to_end(&mut bytes)?;
                Ok(bytes)
            });
        match read {
            Ok(bytes) => parse_runner_settings(&bytes)
                .map(Some)
                .map_err(|cause| FilesError::Settings { path, cause }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FilesError::Settings {
                path,
                cause: e.to_string(),
            }),
        }
    }

    /// Deletes the local configuration (what `config.sh remove --local` does).
    pub fn remove_local_config(&self) -> Result<(), FilesError> {
        for name in LOCAL_CONFIG_FILES {
            let path = self.root.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("cannot delete", &path)(e)),
            }
        }
        Ok(())
    }
}

/// Reads `.runner` (the runner writes camelCase keys with a BOM; older facts show PascalCase),
/// so keys are matched without regard to case.
pub fn parse_runner_settings(bytes: &[u8]) -> Result<RunnerIdentity, String> {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_start_matches('\u{feff}');
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let obj = value.as_object().ok_or("not a JSON object")?;
    let get = |key: &str| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    };
    let id = get("agentId")
        .and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .ok_or("no agentId")?;
    let name = get("agentName")
        .and_then(|v| v.as_str())
        .ok_or("no agentName")?
        .to_string();
    let ephemeral = get("ephemeral")
        .map(|v| v.as_bool().unwrap_or_else(|| v.as_str() == Some("true")))
        .unwrap_or(false);
    Ok(RunnerIdentity {
        id,
        name,
        ephemeral,
    })
}

/// The runner a JIT configuration registers, read from its `.runner` entry. The blob itself
/// stays secret: it carries the runner's credential.
pub fn jit_identity(encoded: &SecretString) -> Result<RunnerIdentity, FilesError> {
    let bad = |what: String| FilesError::BadJitConfig(what);
    let outer = STANDARD
        .decode(encoded.expose_secret().trim())
        .map_err(|_| bad("not base64".into()))?;
    let files: std::collections::HashMap<String, String> =
        serde_json::from_slice(&outer).map_err(|_| bad("not a JSON map of runner files".into()))?;
    let runner = files
        .get(".runner")
        .ok_or_else(|| bad("it has no .runner entry".into()))?;
    let runner = STANDARD
        .decode(runner.trim())
        .map_err(|_| bad("its .runner entry is not base64".into()))?;
    let mut id =
        parse_runner_settings(&runner).map_err(|e| bad(format!("its .runner entry: {e}")))?;
    // GitHub only issues JIT configurations for ephemeral runners.
    id.ephemeral = true;
    Ok(id)
}

/// Writes the two job hook scripts into `dir` (the agent's runtime folder, which jobs cannot
/// write): each runs `hangar agent hook started|completed --socket SOCKET`. Returns (started,
/// completed).
pub fn install_hooks(
    dir: &Path,
    hangar_exe: &Path,
    socket: &Path,
) -> Result<(PathBuf, PathBuf), FilesError> {
    use std::os::unix::fs::PermissionsExt;
    let mut paths = Vec::new();
    for event in ["started", "completed"] {
        let path = dir.join(format!("job-{event}.sh"));
        let script = format!(
            "#!/usr/bin/env bash\n# Installed by hangar agent: tells the agent a job {event}.\nexec {} agent hook {event} --socket {}\n",
            shell_quote(&hangar_exe.to_string_lossy()),
            shell_quote(&socket.to_string_lossy()),
        );
        std::fs::write(&path, script).map_err(io("cannot write", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(io("cannot make executable", &path))?;
        paths.push(path);
    }
    let completed = paths.pop().unwrap_or_default();
    let started = paths.pop().unwrap_or_default();
    Ok((started, completed))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Empties the work folder after a job, so nothing of one job is visible to the next:
/// checkouts, `_tool`, `_actions` (a job could tamper with cached action code) all go. `_temp`
/// stays: the runner still uses it until the job ends and clears it itself. Returns the number
/// of entries removed. A work folder that is a link is not followed (a job may have planted
/// it): the link itself is removed. Entries are removed without following links
/// (`remove_dir_all` never leaves the tree it was given).
pub fn wipe_work_folder(work: &Path) -> Result<usize, FilesError> {
    match std::fs::symlink_metadata(work) {
        Ok(m) if m.file_type().is_symlink() => {
            std::fs::remove_file(work).map_err(io("cannot delete", work))?;
            return Ok(1);
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("cannot inspect", work)(e)),
    }
    let entries = match std::fs::read_dir(work) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("cannot list", work)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io("cannot list", work))?;
        if entry.file_name() == "_temp" {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let result = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(io("cannot delete", &path))?;
        removed += 1;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hangar-files-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn runner_settings_are_read_in_any_key_case_and_with_a_bom() {
        let camel = "\u{feff}{\"agentId\": 7, \"agentName\": \"n\", \"ephemeral\": true}";
        assert_eq!(
            parse_runner_settings(camel.as_bytes()).unwrap(),
            RunnerIdentity {
                id: 7,
                name: "n".into(),
                ephemeral: true
            }
        );
        let pascal = r#"{"AgentId": "8", "AgentName": "m"}"#;
        assert_eq!(parse_runner_settings(pascal.as_bytes()).unwrap().id, 8);
        assert!(
            parse_runner_settings(b"{}")
                .unwrap_err()
                .contains("agentId")
        );
        assert!(parse_runner_settings(b"nope").is_err());
    }

    #[test]
    fn jit_identity_reads_github_shaped_blobs() {
        let runner = STANDARD.encode(r#"{"agentId": 42, "agentName": "jit-1"}"#);
        let map = serde_json::json!({".runner": runner, ".credentials": STANDARD.encode("{}")});
        let blob = SecretString::from(STANDARD.encode(map.to_string()));
        assert_eq!(
            jit_identity(&blob).unwrap(),
            RunnerIdentity {
                id: 42,
                name: "jit-1".into(),
                ephemeral: true
            }
        );
        for bad in [
            "%%%",
            &STANDARD.encode("[1]"),
            &STANDARD.encode("{\".credentials\": \"e30=\"}"),
        ] {
            let err = jit_identity(&SecretString::from(bad.to_string())).unwrap_err();
            assert!(
                err.to_string()
                    .contains("JIT runner configuration is not valid"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_home_without_the_listener_is_refused() {
        let dir = temp_dir("home");
        let err = RunnerHome::open(&dir).unwrap_err();
        assert!(err.to_string().contains("bin/Runner.Listener"));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::fs::write(dir.join("bin/Runner.Listener"), "#!/bin/sh\n").unwrap();
        assert!(RunnerHome::open(&dir).is_err(), "not executable yet");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("bin/Runner.Listener"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let home = RunnerHome::open(&dir).unwrap();
        assert_eq!(home.configured().unwrap(), None);
        std::fs::write(dir.join(".runner"), r#"{"agentId": 3, "agentName": "x"}"#).unwrap();
        std::fs::write(dir.join(".credentials"), "{}").unwrap();
        assert_eq!(home.configured().unwrap().unwrap().id, 3);
        home.remove_local_config().unwrap();
        assert_eq!(home.configured().unwrap(), None);
        assert!(!dir.join(".credentials").exists());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn wiping_keeps_only_temp() {
        let work = temp_dir("work");
        for d in ["repo/repo", "_tool/node", "_actions/x", "_temp"] {
            std::fs::create_dir_all(work.join(d)).unwrap();
        }
        std::fs::write(work.join("repo/repo/secret.txt"), "left by a job").unwrap();
        std::fs::write(work.join("stray.txt"), "x").unwrap();
        assert_eq!(wipe_work_folder(&work).unwrap(), 4);
        let left: Vec<_> = std::fs::read_dir(&work)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("_temp")]);
        assert_eq!(wipe_work_folder(&work.join("missing")).unwrap(), 0);
        std::fs::remove_dir_all(work).ok();
    }

    #[test]
    fn wiping_never_follows_a_link_a_job_planted() {
        let base = temp_dir("links");
        let outside = base.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep.txt"), "not the job's").unwrap();
        let work = base.join("_work");
        std::fs::create_dir_all(work.join("repo")).unwrap();
        std::os::unix::fs::symlink(&outside, work.join("link-to-outside")).unwrap();
        std::os::unix::fs::symlink(&outside, work.join("repo/nested-link")).unwrap();
        assert_eq!(wipe_work_folder(&work).unwrap(), 2);
        assert!(
            outside.join("keep.txt").exists(),
            "a link's target is never entered"
        );
        // The work folder itself replaced by a link: only the link goes.
        std::fs::remove_dir_all(&work).unwrap();
        std::os::unix::fs::symlink(&outside, &work).unwrap();
        assert_eq!(wipe_work_folder(&work).unwrap(), 1);
        assert!(outside.join("keep.txt").exists());
        assert!(std::fs::symlink_metadata(&work).is_err());
        std::fs::remove_dir_all(base).ok();
    }

    #[test]
    fn a_runner_settings_file_that_is_not_a_regular_file_is_not_read() {
        let dir = temp_dir("settings");
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let home = RunnerHome { root: dir.clone() };
        std::fs::write(dir.join("elsewhere"), r#"{"agentId": 3, "agentName": "x"}"#).unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join(".runner")).unwrap();
        assert!(home.configured().is_err(), "a link is not followed");
        std::fs::remove_file(dir.join(".runner")).unwrap();
        nix::unistd::mkfifo(
            &dir.join(".runner"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        assert!(
            home.configured().is_err(),
            "a pipe is not read (nor waited on)"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn hook_scripts_call_back_into_the_agent() {
        let dir = temp_dir("hooks");
        let (started, completed) = install_hooks(
            &dir,
            Path::new("/usr/local/bin/hangar"),
            Path::new("/x/it's.sock"),
        )
        .unwrap();
        let s = std::fs::read_to_string(&started).unwrap();
        assert!(
            s.contains(
                "exec '/usr/local/bin/hangar' agent hook started --socket '/x/it'\\''s.sock'"
            ),
            "{s}"
        );
        assert!(
            std::fs::read_to_string(completed)
                .unwrap()
                .contains("hook completed")
        );
        std::fs::remove_dir_all(dir).ok();
    }
}
