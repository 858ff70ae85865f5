//! The one-shot JIT configuration file (`RUNNER_JIT_CONFIG_FILE`, the local backend's
//! handoff): read once and deleted before the agent uses it, so the secret exists in one place
//! only, this process.

use std::path::Path;

use secrecy::SecretString;

use super::config::{AgentConfigError, ENV_JIT_CONFIG_FILE};

/// The most a one-shot JIT configuration file may hold (GitHub's are a few kilobytes).
const MAX_JIT_FILE_BYTES: u64 = 1 << 20;

/// Reads a one-shot JIT configuration file and deletes it, so the secret it holds exists in one
/// place only: this process. The file is opened, unlinked, then read through the open handle, so
/// of two agents given the same file only the one whose unlink succeeds goes on. Refuses
/// anything but a regular file (a link could point at another secret) and a file it cannot
/// delete (its secret would stay on disk).
pub fn take_jit_file(path: &Path) -> Result<SecretString, AgentConfigError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let shown = path.display();
    let once = "each file serves one agent: launch a new task with a fresh file";
    let refuse = |why: String| AgentConfigError(format!("{ENV_JIT_CONFIG_FILE} {shown}: {why}"));
    let kind = match std::fs::symlink_metadata(path) {
        Ok(m) => m.file_type(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(format!(
                "does not exist (already taken by an earlier start, or never written); {once}"
            )));
        }
        Err(e) => return Err(refuse(format!("cannot be read ({e}); {once}"))),
    };
    if !kind.is_file() {
        let what = if kind.is_symlink() {
            "a symbolic link"
        } else if kind.is_fifo() || kind.is_socket() {
            "a pipe or socket"
        } else {
            "not a regular file"
        };
        return Err(refuse(format!(
            "is {what}; the launcher must write the configuration to a regular file"
        )));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| refuse(format!("cannot be opened ({e}); {once}")))?;
    if let Err(e) = std::fs::remove_file(path) {
        let folder = path.parent().unwrap_or(Path::new("/")).display();
        return Err(refuse(format!(
            "cannot be deleted ({e}), and the agent will not run while its JIT configuration stays on disk. Fix: let the agent's user write to {folder}, or remove the file and launch a new task"
        )));
    }
    let mut blob = String::new();
    file.take(MAX_JIT_FILE_BYTES + 1)
        .read_to_string(&mut blob)
        .map_err(|e| refuse(format!("cannot be read ({e}); {once}")))?;
    if blob.len() as u64 > MAX_JIT_FILE_BYTES {
        return Err(refuse(format!(
            "holds more than {MAX_JIT_FILE_BYTES} bytes, which is no JIT configuration"
        )));
    }
    let blob = blob.trim();
    if blob.is_empty() {
        return Err(refuse(format!("is empty; {once}")));
    }
    Ok(SecretString::from(blob.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::path::PathBuf;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hangar-jit-file-{tag}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_jit_file_is_read_once_then_gone() {
        let dir = scratch("once");
        let path = dir.join("r1.jit");
        std::fs::write(&path, "eyJqaXQiOiJibG9iIn0=\n").unwrap();
        let blob = take_jit_file(&path).unwrap();
        assert_eq!(blob.expose_secret(), "eyJqaXQiOiJibG9iIn0=");
        assert!(!path.exists(), "the file is deleted once read");
        let again = take_jit_file(&path).unwrap_err().0;
        assert!(
            again.contains("does not exist") && again.contains("launch a new task"),
            "{again}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_jit_file_that_is_not_a_plain_file_or_is_empty_is_refused() {
        let dir = scratch("odd");
        let target = dir.join("elsewhere");
        std::fs::write(&target, "secret").unwrap();
        let link = dir.join("link.jit");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(
            take_jit_file(&link)
                .unwrap_err()
                .0
                .contains("symbolic link")
        );
        assert!(target.exists(), "a link's target is never deleted");
        assert!(
            take_jit_file(&dir)
                .unwrap_err()
                .0
                .contains("not a regular file")
        );
        let empty = dir.join("empty.jit");
        std::fs::write(&empty, "  \n").unwrap();
        assert!(take_jit_file(&empty).unwrap_err().0.contains("is empty"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_jit_file_that_cannot_be_deleted_is_refused_and_not_used() {
        if nix::unistd::geteuid().is_root() {
            return; // root may delete from a read-only folder; unprivileged CI runs reach this
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch("stuck");
        let path = dir.join("r1.jit");
        std::fs::write(&path, "blob").unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
        let err = take_jit_file(&path).unwrap_err().0;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(err.contains("cannot be deleted"), "{err}");
        assert!(!err.contains("blob"), "the error never holds the content");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
