//! The job store (issue 14): the controller's job records ([`JobBook`], one per pool) kept in a
//! file across restarts, when `controller.job_store` names one. Without it the records live in
//! memory only, as before.
//!
//! The file is one versioned JSON document:
//!
//! ```json
//! { "version": 1, "saved_at": "2026-12-07T17:00:00Z",
//!   "pools": { "<pool name>": { "in_flight": [ ... ], "recent": [ ... ], "dropped": 0 } } }
//! ```
//!
//! Each job is its `/jobs` record (task and cost included) plus `heard_at`, the controller's
//! own time of the last news of it, which the age bound of jobs in flight needs
//! (`controller::jobs::IN_FLIGHT_MAX_AGE`); `recent` is newest first.
//!
//! Invariants:
//! - Nothing secret is stored: a record holds repository, workflow and job names, run and
//!   runner ids and names, times, results, task ids, log group and stream names and costs; no
//!   token, key or JIT configuration ever enters a `JobRecord`.
//! - Writes are atomic: the document goes to a temporary file in the target's folder (created
//!   mode 0600, the folder 0700 when it has to be created), is fsynced, then renamed over the
//!   target, and the folder is fsynced. A failed save leaves the previous file whole.
//! - A missing file is an empty store (a first start). An unreadable, corrupt or newer-version
//!   file is an error naming the file and the fix; the controller then starts with no records
//!   and never refuses to start because of the store. It keeps that file by renaming it to
//!   `<path>.corrupt-<unix time>` before saving anything, and says so in the log; if it cannot,
//!   it saves nothing in that run rather than overwrite it.
//! - Restored books keep the live bounds (`RECENT_JOBS_KEPT`, `IN_FLIGHT_MAX`, the age bound,
//!   see [`JobBook::restore`]); jobs of pools no longer in the pool file are dropped.
//! - Saving never holds a `JobBook` lock during file I/O: the books are cloned under their
//!   locks, then compared, serialized and written on a blocking thread.
//! - When: every [`SAVE_INTERVAL`], only if the records changed since the last save, and once
//!   more after the pools stop at shutdown. Comparing the snapshot with the last one saved is
//!   exact (a counter in every `JobBook` mutation would be one more thing to forget) and cheap
//!   next to a write (a few hundred records per pool); a controller killed hard loses at most
//!   the last interval's news, which the scale set's messages and the reconciler's listing
//!   partly give back. One controller per store file: two would overwrite each other.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::jobs::{JobBook, JobRecord};

/// The document's format version this controller writes and reads.
pub const VERSION: u64 = 1;

/// How often the controller saves changed records.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(30);

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot read the job store {path}: {cause}. Fix: give the controller's user read access to it, or move it away to start with no job records"
    )]
    Read { path: PathBuf, cause: String },
    #[error(
        "the job store {path} is not a job record file this controller can read: {cause}. Fix: move it away (the controller keeps it as {path}.corrupt-<unix time>) to start with no job records, or point controller.job_store at another file"
    )]
    Corrupt { path: PathBuf, cause: String },
    #[error(
        "the job store {path} has version {found}, newer than this controller's {VERSION}. Fix: run the newer controller, or move the file away to start with no job records"
    )]
    Newer { path: PathBuf, found: u64 },
    #[error(
        "cannot write the job store {path}: {cause}. Fix: let the controller's user create and write files in its folder, or point controller.job_store at a writable path"
    )]
    Write { path: PathBuf, cause: String },
}

/// One job as stored: its record and when this controller last heard of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredJob {
    pub heard_at: DateTime<Utc>,
    #[serde(flatten)]
    pub job: JobRecord,
}

impl StoredJob {
    fn of(record: &JobRecord) -> StoredJob {
        StoredJob {
            heard_at: record.heard_at,
            job: record.clone(),
        }
    }

    fn into_record(self) -> JobRecord {
        JobRecord {
            heard_at: self.heard_at,
            ..self.job
        }
    }
}

/// One pool's records as stored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolJobs {
    #[serde(default)]
    pub in_flight: Vec<StoredJob>,
    /// Newest first.
    #[serde(default)]
    pub recent: Vec<StoredJob>,
    #[serde(default)]
    pub dropped: u64,
}

impl PoolJobs {
    pub fn of(book: &JobBook) -> PoolJobs {
        PoolJobs {
            in_flight: book.in_flight().into_iter().map(StoredJob::of).collect(),
            recent: book.recent().map(StoredJob::of).collect(),
            dropped: book.dropped,
        }
    }

    /// The book these records make, with the live bounds (see [`JobBook::restore`]).
    pub fn into_book(self, keep: usize) -> JobBook {
        JobBook::restore(
            keep,
            self.in_flight
                .into_iter()
                .map(StoredJob::into_record)
                .collect(),
            self.recent
                .into_iter()
                .map(StoredJob::into_record)
                .collect(),
            self.dropped,
        )
    }
}

/// Every pool's records, by pool name.
pub type Snapshot = BTreeMap<String, PoolJobs>;

#[derive(Serialize, Deserialize)]
struct Document {
    version: u64,
    saved_at: DateTime<Utc>,
    pools: Snapshot,
}

/// The records of `books` as the store keeps them.
pub fn snapshot(books: &[(String, &JobBook)]) -> Snapshot {
    books
        .iter()
        .map(|(name, book)| (name.clone(), PoolJobs::of(book)))
        .collect()
}

/// Writes the records of `books` to `path`, atomically.
pub fn save(path: &Path, books: &[(String, &JobBook)]) -> Result<(), StoreError> {
    write(path, &snapshot(books), Utc::now())
}

/// Writes `pools` to `path` as saved at `saved_at`, atomically: a temporary file beside it
/// (mode 0600), fsynced, renamed over it.
pub fn write(path: &Path, pools: &Snapshot, saved_at: DateTime<Utc>) -> Result<(), StoreError> {
    let failed = |cause: String| StoreError::Write {
        path: path.to_path_buf(),
        cause,
    };
    let document = Document {
        version: VERSION,
        saved_at,
        pools: pools.clone(),
    };
    let mut bytes = serde_json::to_vec_pretty(&document).map_err(|e| failed(e.to_string()))?;
    bytes.push(b'\n');
    let (folder, name) = match (path.parent(), path.file_name()) {
        (Some(folder), Some(name)) => (folder, name),
        _ => return Err(failed("the path names no file".into())),
    };
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    if !folder.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .map_err(|e| failed(format!("creating its folder {}: {e}", folder.display())))?;
    }
    let temp = folder.join(format!(".{}.tmp", name.to_string_lossy()));
    // A temporary file left by a crash is stale: only this controller writes here.
    match std::fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(failed(format!("removing {}: {e}", temp.display()))),
    }
    let result = (|| {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(|e| format!("creating {}: {e}", temp.display()))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("writing {}: {e}", temp.display()))?;
        drop(file);
        std::fs::rename(&temp, path)
            .map_err(|e| format!("renaming {} over it: {e}", temp.display()))?;
        // The rename itself reaches the disk with the folder.
        if let Ok(dir) = std::fs::File::open(folder) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    result.map_err(|cause: String| {
        let _ = std::fs::remove_file(&temp);
        failed(cause)
    })
}

/// The records saved at `path`: none when there is no file yet.
pub fn load(path: &Path) -> Result<Snapshot, StoreError> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Snapshot::new()),
        Err(e) => {
            return Err(StoreError::Read {
                path: path.to_path_buf(),
                cause: e.to_string(),
            });
        }
    };
    let corrupt = |cause: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        cause,
    };
    let value: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| corrupt(e.to_string()))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(VERSION) => {}
        Some(found) if found > VERSION => {
            return Err(StoreError::Newer {
                path: path.to_path_buf(),
                found,
            });
        }
        Some(found) => return Err(corrupt(format!("unknown version {found}"))),
        None => return Err(corrupt("no \"version\" number".into())),
    }
    let document: Document = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
    Ok(document.pools)
}

/// Keeps a file the store cannot read by renaming it to `<path>.corrupt-<unix time>`.
pub fn set_aside(path: &Path, now: DateTime<Utc>) -> Result<PathBuf, StoreError> {
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{}", now.timestamp()));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside).map_err(|e| StoreError::Write {
        path: path.to_path_buf(),
        cause: format!("keeping it as {}: {e}", aside.display()),
    })?;
    Ok(aside)
}

/// The store of a running controller: where it saves and what it saved last.
pub struct Saver {
    path: PathBuf,
    /// Held for the whole of a save: saves never overlap.
    last: tokio::sync::Mutex<Option<Snapshot>>,
}

/// Opens the store at `path` at start: the records to restore, and the saver (`None` when a
/// file the store cannot read could not be kept aside, so that nothing overwrites it). Never
/// fails: every problem is logged and the controller starts with no records.
pub async fn open(path: &Path) -> (Option<Saver>, Snapshot) {
    let owned = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || load(&owned))
        .await
        .unwrap_or_else(|e| {
            Err(StoreError::Read {
                path: path.to_path_buf(),
                cause: e.to_string(),
            })
        });
    let saver = Saver {
        path: path.to_path_buf(),
        last: tokio::sync::Mutex::new(None),
    };
    match loaded {
        Ok(pools) => {
            let jobs: usize = pools
                .values()
                .map(|p| p.in_flight.len() + p.recent.len())
                .sum();
            tracing::info!(store = %path.display(), pools = pools.len(), jobs, "job records restored");
            (Some(saver), pools)
        }
        Err(e) => {
            tracing::warn!(error = %e, "the job records could not be restored; starting with none");
            let owned = path.to_path_buf();
            let aside = tokio::task::spawn_blocking(move || set_aside(&owned, Utc::now()))
                .await
                .unwrap_or_else(|e| {
                    Err(StoreError::Write {
                        path: path.to_path_buf(),
                        cause: e.to_string(),
                    })
                });
            match aside {
                Ok(aside) => {
                    tracing::warn!(store = %path.display(), kept_as = %aside.display(), "the unreadable job store was kept aside; the next save writes a fresh one");
                    (Some(saver), Snapshot::new())
                }
                Err(e) => {
                    tracing::error!(error = %e, "job records will not be saved in this run, so that the unreadable file is not overwritten");
                    (None, Snapshot::new())
                }
            }
        }
    }
}

impl Saver {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves `books` if their records changed since the last save. The books are cloned under
    /// their locks; comparing and writing happen on a blocking thread. A failure is logged
    /// (the next save tries again). Whether the file holds these records now.
    pub async fn save(&self, books: &[(String, Arc<Mutex<JobBook>>)]) -> bool {
        let mut last = self.last.lock().await;
        let copies: Vec<(String, JobBook)> = books
            .iter()
            .map(|(name, book)| {
                (
                    name.clone(),
                    book.lock().expect("job book poisoned").clone(),
                )
            })
            .collect();
        let previous = last.take();
        let path = self.path.clone();
        let saved = tokio::task::spawn_blocking(move || {
            let refs: Vec<(String, &JobBook)> =
                copies.iter().map(|(n, b)| (n.clone(), b)).collect();
            let pools = snapshot(&refs);
            if previous.as_ref() == Some(&pools) {
                return Ok((pools, false));
            }
            write(&path, &pools, Utc::now()).map(|()| (pools, true))
        })
        .await;
        match saved {
            Ok(Ok((pools, wrote))) => {
                if wrote {
                    tracing::debug!(store = %self.path.display(), "job records saved");
                }
                *last = Some(pools);
                true
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "the job records were not saved; the next save tries again");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, store = %self.path.display(), "the job records were not saved");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::backend::TaskTimes;
    use crate::controller::bills::JobCost;
    use crate::controller::jobs::{IN_FLIGHT_MAX, RECENT_JOBS_KEPT, TaskRecord};
    use chrono::TimeZone;
    use std::os::unix::fs::PermissionsExt;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
    }

    /// A fresh folder under the temporary one, removed on drop.
    struct Folder(PathBuf);

    impl Folder {
        fn new(tag: &str) -> Folder {
            let path = std::env::temp_dir().join(format!(
                "hangar-jobs-store-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Folder(path)
        }
    }

    impl Drop for Folder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn record(job_id: &str, heard: i64) -> JobRecord {
        JobRecord {
            job_id: job_id.into(),
            runner_request_id: 7,
            repository: "acme/app".into(),
            workflow_ref: "acme/app/.github/workflows/ci.yml@refs/heads/main".into(),
            job_name: "test".into(),
            run_id: 42,
            event: "push".into(),
            labels: vec!["org".into()],
            queued_at: Some(at(0)),
            assigned_at: Some(at(2)),
            started_at: None,
            completed_at: None,
            result: None,
            runner_id: None,
            runner_name: None,
            task: None,
            cost: None,
            heard_at: at(heard),
        }
    }

    fn book() -> JobBook {
        let running = JobRecord {
            runner_id: Some(5),
            runner_name: Some("org-runner5".into()),
            started_at: Some(at(20)),
            task: Some(TaskRecord {
                id: "arn:task/5".into(),
                created_at: Some(at(3)),
                log_group: Some("/hangar/runners".into()),
                log_stream: Some("runner/runner/5".into()),
                ..TaskRecord::default()
            }),
            ..record("j2", 21)
        };
        let done = JobRecord {
            runner_id: Some(4),
            runner_name: Some("org-runner4".into()),
            started_at: Some(at(20)),
            completed_at: Some(at(80)),
            result: Some("succeeded".into()),
            task: Some(TaskRecord {
                id: "arn:task/4".into(),
                times: TaskTimes {
                    started_at: Some(at(10)),
                    stopped_at: Some(at(85)),
                    ..TaskTimes::default()
                },
                capacity_provider: Some("FARGATE_SPOT".into()),
                ..TaskRecord::default()
            }),
            cost: Some(JobCost {
                task_dollars: 0.0125,
                job_dollars: 0.01,
                overhead_dollars: 0.0025,
                billed_seconds: 75.0,
                settled: true,
                estimated: false,
            }),
            ..record("j1", 81)
        };
        JobBook::restore(RECENT_JOBS_KEPT, vec![running], vec![done], 3)
    }

    #[test]
    fn records_in_flight_and_finished_come_back_whole_with_task_cost_and_heard_at() {
        let folder = Folder::new("round-trip");
        let path = folder.0.join("jobs.json");
        let book = book();
        save(&path, &[("org".into(), &book)]).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.keys().collect::<Vec<_>>(), ["org"]);
        let again = loaded["org"].clone().into_book(RECENT_JOBS_KEPT);
        assert_eq!(again.in_flight(), book.in_flight());
        assert_eq!(again.in_flight()[0].heard_at, at(21), "heard_at is kept");
        assert!(again.recent().eq(book.recent()));
        assert_eq!(again.dropped, 3);
        let cost = again.recent().next().unwrap().cost.unwrap();
        assert_eq!(cost.job_dollars, 0.01);
        // The document as promised.
        let document: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(document["version"], 1);
        assert!(document["saved_at"].is_string());
        assert_eq!(document["pools"]["org"]["dropped"], 3);
        assert_eq!(document["pools"]["org"]["recent"][0]["job_id"], "j1");
        assert_eq!(
            document["pools"]["org"]["in_flight"][0]["task"]["id"],
            "arn:task/5"
        );
        // `/jobs` still leaves heard_at out.
        assert!(
            serde_json::to_value(book.in_flight()[0])
                .unwrap()
                .get("heard_at")
                .is_none()
        );
    }

    #[test]
    fn a_missing_file_is_an_empty_store() {
        let folder = Folder::new("missing");
        assert!(load(&folder.0.join("jobs.json")).unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it_and_it_can_be_kept_aside() {
        let folder = Folder::new("corrupt");
        let path = folder.0.join("jobs.json");
        for text in [
            "{ not json",
            "{\"pools\": {}}",
            "{\"version\": 1, \"pools\": 3}",
        ] {
            std::fs::write(&path, text).unwrap();
            let e = load(&path).unwrap_err();
            assert!(matches!(e, StoreError::Corrupt { .. }), "{text}: {e:?}");
            let message = e.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("Fix:"), "{message}");
        }
        let aside = set_aside(&path, at(0)).unwrap();
        assert_eq!(
            aside,
            folder
                .0
                .join(format!("jobs.json.corrupt-{}", at(0).timestamp()))
        );
        assert!(!path.exists());
        assert_eq!(
            std::fs::read_to_string(&aside).unwrap(),
            "{\"version\": 1, \"pools\": 3}"
        );
    }

    #[test]
    fn a_newer_version_is_refused_with_its_fix() {
        let folder = Folder::new("newer");
        let path = folder.0.join("jobs.json");
        std::fs::write(
            &path,
            r#"{"version": 2, "saved_at": "2026-01-01T00:00:00Z", "pools": {}}"#,
        )
        .unwrap();
        let e = load(&path).unwrap_err();
        assert!(matches!(e, StoreError::Newer { found: 2, .. }), "{e:?}");
        let message = e.to_string();
        assert!(message.contains(&path.display().to_string()));
        assert!(message.contains("newer controller"), "{message}");
    }

    #[test]
    fn the_file_is_private_and_a_missing_folder_is_created_private() {
        let folder = Folder::new("mode");
        let path = folder.0.join("state").join("jobs.json");
        save(&path, &[("org".into(), &book())]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        // An overwrite stays private, and leaves no temporary file.
        save(&path, &[]).unwrap();
        assert_eq!(mode(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["jobs.json"]);
    }

    #[test]
    fn restored_books_keep_their_bounds() {
        let many: Vec<StoredJob> = (0..IN_FLIGHT_MAX + 5)
            .map(|n| StoredJob::of(&record(&format!("f{n}"), n as i64)))
            .collect();
        let finished: Vec<StoredJob> = (0..RECENT_JOBS_KEPT + 10)
            .map(|n| {
                StoredJob::of(&JobRecord {
                    result: Some("succeeded".into()),
                    ..record(&format!("d{n}"), 0)
                })
            })
            .collect();
        let book = PoolJobs {
            in_flight: many,
            recent: finished,
            dropped: 1,
        }
        .into_book(RECENT_JOBS_KEPT);
        assert_eq!(book.in_flight().len(), IN_FLIGHT_MAX);
        assert_eq!(book.recent().count(), RECENT_JOBS_KEPT);
        assert_eq!(book.dropped, 6, "the five let go are counted");
        // The most recently heard are the ones kept in flight.
        assert!(book.in_flight().iter().all(|r| r.heard_at >= at(5)));
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_whole() {
        let folder = Folder::new("atomic");
        let path = folder.0.join("jobs.json");
        save(&path, &[("org".into(), &book())]).unwrap();
        let before = std::fs::read(&path).unwrap();
        // Something that cannot be removed or created (even by root) where the temporary
        // file goes: the write fails before touching the target.
        let temp = folder.0.join(".jobs.json.tmp");
        std::fs::create_dir_all(temp.join("busy")).unwrap();
        let e = save(&path, &[]).unwrap_err();
        assert!(matches!(e, StoreError::Write { .. }), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(load(&path).unwrap()["org"].recent.len(), 1);
        // Once the obstacle is gone, saves work again.
        std::fs::remove_dir_all(&temp).unwrap();
        save(&path, &[]).unwrap();
        assert!(load(&path).unwrap().is_empty());
    }

    #[tokio::test]
    async fn the_saver_writes_only_when_the_records_changed() {
        let folder = Folder::new("saver");
        let path = folder.0.join("jobs.json");
        let (saver, restored) = open(&path).await;
        let saver = saver.expect("a missing file opens");
        assert!(restored.is_empty());
        let book = Arc::new(Mutex::new(book()));
        let books = vec![("org".to_string(), book.clone())];
        assert!(saver.save(&books).await);
        let first = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        saver.save(&books).await;
        assert!(!path.exists(), "unchanged records are not written again");
        book.lock().unwrap().dropped += 1;
        saver.save(&books).await;
        assert_ne!(std::fs::read(&path).unwrap(), first);
        assert_eq!(load(&path).unwrap()["org"].dropped, 4);
    }

    #[tokio::test]
    async fn opening_a_corrupt_store_keeps_it_aside_and_starts_empty() {
        let folder = Folder::new("open-corrupt");
        let path = folder.0.join("jobs.json");
        std::fs::write(&path, "garbage").unwrap();
        let (saver, restored) = open(&path).await;
        assert!(restored.is_empty());
        assert!(saver.is_some());
        assert!(!path.exists());
        let kept: Vec<String> = std::fs::read_dir(&folder.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(kept.len(), 1);
        assert!(kept[0].starts_with("jobs.json.corrupt-"), "{kept:?}");
        assert_eq!(
            std::fs::read_to_string(folder.0.join(&kept[0])).unwrap(),
            "garbage"
        );
    }
}
