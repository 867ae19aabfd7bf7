//! The embedded [`StateStore`]: one SQLite file, `DIR/state.sqlite`.
//!
//! SQLite (compiled in through `rusqlite`'s `bundled` feature) because it
//! is the most widely deployed crash-safe embedded database: write-ahead
//! logging with `synchronous=FULL` survives a killed process and a power
//! cut, and a damaged file is reported as an error (checked with
//! `PRAGMA quick_check` at open), never a crash. redb was tried first: a
//! page overwritten with garbage made it panic while opening.

use std::path::{Path, PathBuf};

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use volley_proto::v1;

use crate::error::SchedulerError;
use volley_dataflow::{ExecutorId, JobId};

use crate::state_store::{Epoch, Loaded, LoadedJob, StateStore, StoreOp};

/// The store's layout; a file from another layout is refused.
const SCHEMA_VERSION: i64 = 1;

/// A record as stored: its CRC-32 (little-endian), then its bytes. SQLite
/// checks its own structure, not what is inside a value.
fn seal(message: &impl Message) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut sealed = crc32fast::hash(&bytes).to_le_bytes().to_vec();
    sealed.extend_from_slice(&bytes);
    sealed
}

/// A sealed record's message, if its checksum holds.
fn unseal<M: Message + Default>(sealed: &[u8]) -> Result<M, String> {
    let (sum, bytes) = sealed
        .split_first_chunk::<4>()
        .ok_or_else(|| "a record is cut short".to_string())?;
    if crc32fast::hash(bytes) != u32::from_le_bytes(*sum) {
        return Err("a record's checksum does not match".into());
    }
    M::decode(bytes).map_err(|e| e.to_string())
}

/// The state store in one SQLite file.
#[derive(Debug)]
pub(crate) struct SqliteStore {
    path: PathBuf,
    connection: Connection,
}

impl SqliteStore {
    /// The store's file in `dir`.
    pub(crate) fn file_in(dir: &Path) -> PathBuf {
        dir.join("state.sqlite")
    }

    /// Opens (or creates) the store in `dir`, checking it is whole. With
    /// `fresh`, an existing file is kept aside as `state.sqlite.corrupt` and
    /// a new one begun.
    pub(crate) fn open(dir: &Path, fresh: bool) -> Result<Self, SchedulerError> {
        let path = Self::file_in(dir);
        let unusable = |e: &dyn std::fmt::Display| SchedulerError::StateStore {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        create_private_dir(dir).map_err(|e| unusable(&e))?;
        if fresh && path.exists() {
            let aside = path.with_extension("sqlite.corrupt");
            std::fs::rename(&path, &aside).map_err(|e| unusable(&e))?;
            for suffix in ["-wal", "-shm"] {
                let side = PathBuf::from(format!("{}{suffix}", path.display()));
                let _ = std::fs::remove_file(side);
            }
        }
        let store = Self::open_checked(&path).map_err(|e| match e {
            Opened::Corrupt(message) => SchedulerError::CorruptStateStore {
                path: path.display().to_string(),
                message,
            },
            Opened::Failed(message) => SchedulerError::StateStore {
                path: path.display().to_string(),
                message,
            },
        })?;
        Ok(store)
    }

    fn open_checked(path: &Path) -> Result<Self, Opened> {
        let connection = Connection::open(path).map_err(Opened::from)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(Opened::from)?;
        connection
            .pragma_update(None, "synchronous", "FULL")
            .map_err(Opened::from)?;
        let check: String = connection
            .query_row("PRAGMA quick_check", [], |row| row.get(0))
            .map_err(Opened::from)?;
        if check != "ok" {
            return Err(Opened::Corrupt(check.lines().next().unwrap_or("").into()));
        }
        connection
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 CREATE TABLE IF NOT EXISTS jobs (
                     job_id TEXT PRIMARY KEY,
                     seq INTEGER NOT NULL,
                     record BLOB NOT NULL,
                     status BLOB,
                     released INTEGER NOT NULL DEFAULT 0);
                 CREATE TABLE IF NOT EXISTS outputs (
                     job_id TEXT NOT NULL,
                     stage INTEGER NOT NULL,
                     map INTEGER NOT NULL,
                     output BLOB NOT NULL,
                     PRIMARY KEY (job_id, stage, map));
                 CREATE TABLE IF NOT EXISTS executors (executor_id TEXT PRIMARY KEY);",
            )
            .map_err(Opened::from)?;
        let version: Option<i64> = connection
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(Opened::from)?;
        match version {
            None => {
                connection
                    .execute(
                        "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                        params![SCHEMA_VERSION],
                    )
                    .map_err(Opened::from)?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(Opened::Failed(format!(
                    "it has layout version {other}; this scheduler reads version {SCHEMA_VERSION}"
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            connection,
        })
    }

    fn failed(&self, e: impl std::fmt::Display) -> SchedulerError {
        SchedulerError::StateStore {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, e: impl std::fmt::Display) -> SchedulerError {
        SchedulerError::CorruptStateStore {
            path: self.path.display().to_string(),
            message: e.to_string(),
        }
    }

    fn read_error(&self, e: rusqlite::Error) -> SchedulerError {
        match Opened::from(e) {
            Opened::Corrupt(message) => self.corrupt(message),
            Opened::Failed(message) => self.failed(message),
        }
    }
}

/// Why a store could not be opened.
enum Opened {
    Corrupt(String),
    Failed(String),
}

impl From<rusqlite::Error> for Opened {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
                Opened::Corrupt(e.to_string())
            }
            _ => Opened::Failed(e.to_string()),
        }
    }
}

/// Creates `dir` readable by its owner only: the store holds result tickets.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if dir.is_dir() {
        let mut permissions = std::fs::metadata(dir)?.permissions();
        if permissions.mode() & 0o077 != 0 {
            permissions.set_mode(0o700);
            std::fs::set_permissions(dir, permissions)?;
        }
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Deletes a job's map outputs: it ended, or left the history.
fn delete_outputs(transaction: &rusqlite::Transaction<'_>, job: &JobId) -> rusqlite::Result<usize> {
    transaction.execute(
        "DELETE FROM outputs WHERE job_id = ?1",
        params![job.as_str()],
    )
}

/// The epoch a scheduler claims after `last`: above it, and at least the
/// time now in milliseconds since the Unix epoch. So a scheduler started on
/// a fresh store (`--fresh-state`, or a new disk) still outranks every
/// scheduler the executors served before, which a count restarting at 1
/// would not: they would refuse it as stale and never register.
fn next_epoch(last: u64, now_ms: u64) -> u64 {
    last.saturating_add(1).max(now_ms)
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl StateStore for SqliteStore {
    fn claim(&mut self) -> Result<Epoch, SchedulerError> {
        let transaction =
            self.connection
                .transaction()
                .map_err(|e| SchedulerError::StateStore {
                    path: self.path.display().to_string(),
                    message: e.to_string(),
                })?;
        let last: Option<i64> = transaction
            .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| SchedulerError::StateStore {
                path: self.path.display().to_string(),
                message: e.to_string(),
            })?;
        let epoch = next_epoch(last.unwrap_or(0).max(0) as u64, unix_millis());
        transaction
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('epoch', ?1)",
                params![epoch as i64],
            )
            .and_then(|_| transaction.commit())
            .map_err(|e| SchedulerError::StateStore {
                path: self.path.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(Epoch(epoch))
    }

    fn load(&self) -> Result<Loaded, SchedulerError> {
        let mut jobs = Vec::new();
        let mut statement = self
            .connection
            .prepare("SELECT job_id, record, status, released FROM jobs ORDER BY seq")
            .map_err(|e| self.read_error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Vec<u8>>(1)?,
                    row.get::<_, Option<Vec<u8>>>(2)?,
                    row.get::<_, bool>(3)?,
                ))
            })
            .map_err(|e| self.read_error(e))?;
        for row in rows {
            let (job_id, record, status, released) = row.map_err(|e| self.read_error(e))?;
            let record = unseal::<v1::StoredJob>(&record)
                .map_err(|e| self.corrupt(format!("job {job_id}: {e}")))?;
            let status = status
                .map(|s| unseal::<v1::JobStatus>(&s))
                .transpose()
                .map_err(|e| self.corrupt(format!("status of job {job_id}: {e}")))?;
            jobs.push(LoadedJob {
                record,
                status,
                released,
                outputs: Vec::new(),
            });
        }
        let mut statement = self
            .connection
            .prepare("SELECT job_id, stage, map, output FROM outputs")
            .map_err(|e| self.read_error(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, u32>(1)?,
                    row.get::<_, u32>(2)?,
                    row.get::<_, Vec<u8>>(3)?,
                ))
            })
            .map_err(|e| self.read_error(e))?;
        for row in rows {
            let (job_id, stage, map, output) = row.map_err(|e| self.read_error(e))?;
            let output = unseal::<v1::StoredMapOutput>(&output)
                .map_err(|e| self.corrupt(format!("output of job {job_id}: {e}")))?;
            if let Some(job) = jobs.iter_mut().find(|j| j.record.job_id == job_id) {
                job.outputs.push((stage, map, output));
            }
        }
        let mut statement = self
            .connection
            .prepare("SELECT executor_id FROM executors")
            .map_err(|e| self.read_error(e))?;
        let executors = statement
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(|e| self.read_error(e))?
            .map(|id| id.map(ExecutorId::from).map_err(|e| self.read_error(e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Loaded { jobs, executors })
    }

    fn write(&mut self, epoch: Epoch, ops: &[StoreOp]) -> Result<(), SchedulerError> {
        let path = self.path.display().to_string();
        let failed = |e: rusqlite::Error| SchedulerError::StateStore {
            path: path.clone(),
            message: e.to_string(),
        };
        let transaction = self.connection.transaction().map_err(failed)?;
        let current: i64 = transaction
            .query_row("SELECT value FROM meta WHERE key = 'epoch'", [], |row| {
                row.get(0)
            })
            .map_err(failed)?;
        if current as u64 != epoch.0 {
            return Err(SchedulerError::Fenced {
                ours: epoch.0,
                current: current as u64,
            });
        }
        for op in ops {
            match op {
                StoreOp::Submitted(record) => {
                    transaction
                        .execute(
                            "INSERT OR REPLACE INTO jobs (job_id, seq, record)
                             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs), ?2)",
                            params![record.job_id, seal(record.as_ref())],
                        )
                        .map_err(failed)?;
                }
                StoreOp::Output {
                    job,
                    stage,
                    map,
                    output,
                } => {
                    transaction
                        .execute(
                            "INSERT OR REPLACE INTO outputs (job_id, stage, map, output)
                             VALUES (?1, ?2, ?3, ?4)",
                            params![job.as_str(), stage, map, seal(output)],
                        )
                        .map_err(failed)?;
                }
                StoreOp::Ended { job, status } => {
                    transaction
                        .execute(
                            "UPDATE jobs SET status = ?2 WHERE job_id = ?1",
                            params![job.as_str(), seal(status.as_ref())],
                        )
                        .map_err(failed)?;
                    delete_outputs(&transaction, job).map_err(failed)?;
                }
                StoreOp::Released(job) => {
                    transaction
                        .execute(
                            "UPDATE jobs SET released = 1 WHERE job_id = ?1",
                            params![job.as_str()],
                        )
                        .map_err(failed)?;
                }
                StoreOp::ExecutorJoined(id) => {
                    transaction
                        .execute(
                            "INSERT OR REPLACE INTO executors (executor_id) VALUES (?1)",
                            params![id.as_str()],
                        )
                        .map_err(failed)?;
                }
                StoreOp::ExecutorLeft(id) => {
                    transaction
                        .execute(
                            "DELETE FROM executors WHERE executor_id = ?1",
                            params![id.as_str()],
                        )
                        .map_err(failed)?;
                }
                StoreOp::Forgotten(job) => {
                    transaction
                        .execute("DELETE FROM jobs WHERE job_id = ?1", params![job.as_str()])
                        .map_err(failed)?;
                    delete_outputs(&transaction, job).map_err(failed)?;
                }
            }
        }
        transaction.commit().map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use volley_dataflow::JobId;

    fn record(id: &str) -> v1::StoredJob {
        v1::StoredJob {
            job_id: id.into(),
            target_partitions: 4,
            stage_partitions: vec![4, 1],
            submission: Some(v1::SubmitJobRequest {
                logical_plan: vec![7; 1000],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn output(executor: &str) -> v1::StoredMapOutput {
        v1::StoredMapOutput {
            stage_attempt: 0,
            executor_id: executor.into(),
            endpoint: "http://127.0.0.1:1".into(),
            partition_rows: vec![1, 2],
            partition_bytes: vec![8, 16],
            epoch: 1,
        }
    }

    #[test]
    fn what_is_written_is_loaded_after_reopening_with_a_higher_epoch() -> Result<(), SchedulerError>
    {
        let dir = tempfile::tempdir()?;
        let mut store = SqliteStore::open(dir.path(), false)?;
        let first = store.claim()?;
        let running = JobId::from("running-job");
        let ended = JobId::from("ended-job");
        store.write(
            first,
            &[
                StoreOp::Submitted(Box::new(record("running-job"))),
                StoreOp::Submitted(Box::new(record("ended-job"))),
                StoreOp::Output {
                    job: running.clone(),
                    stage: 0,
                    map: 3,
                    output: output("a"),
                },
                StoreOp::Output {
                    job: ended.clone(),
                    stage: 0,
                    map: 0,
                    output: output("b"),
                },
                StoreOp::Ended {
                    job: ended.clone(),
                    status: Box::new(v1::JobStatus {
                        job_id: ended.to_string(),
                        state: v1::JobState::Succeeded as i32,
                        ..Default::default()
                    }),
                },
                StoreOp::Released(ended.clone()),
                StoreOp::ExecutorJoined(ExecutorId::from("a")),
                StoreOp::ExecutorJoined(ExecutorId::from("b")),
                StoreOp::ExecutorLeft(ExecutorId::from("b")),
            ],
        )?;
        drop(store);
        let mut store = SqliteStore::open(dir.path(), false)?;
        assert!(store.claim()? > first);
        let jobs = store.load()?.jobs;
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].record.job_id, "running-job", "oldest first");
        assert_eq!(jobs[0].outputs, vec![(0, 3, output("a"))]);
        assert!(jobs[0].status.is_none());
        assert!(jobs[1].status.is_some() && jobs[1].released);
        assert!(jobs[1].outputs.is_empty(), "an ended job's outputs go");
        assert_eq!(store.load()?.executors, vec![ExecutorId::from("a")]);
        Ok(())
    }

    #[test]
    fn a_scheduler_whose_store_was_claimed_by_another_can_no_longer_write()
    -> Result<(), SchedulerError> {
        let dir = tempfile::tempdir()?;
        let mut old = SqliteStore::open(dir.path(), false)?;
        let epoch = old.claim()?;
        let mut new = SqliteStore::open(dir.path(), false)?;
        let current = new.claim()?;
        let refused = old.write(epoch, &[StoreOp::Submitted(Box::new(record("job-x")))]);
        assert!(
            matches!(
                refused,
                Err(SchedulerError::Fenced { ours, current: now })
                    if ours == epoch.0 && now == current.0 && now > ours
            ),
            "{refused:?}"
        );
        assert!(new.load()?.jobs.is_empty());
        Ok(())
    }

    fn written_store(dir: &Path) -> Result<PathBuf, SchedulerError> {
        let mut store = SqliteStore::open(dir, false)?;
        let epoch = store.claim()?;
        let ops: Vec<StoreOp> = (0..300)
            .map(|i| StoreOp::Submitted(Box::new(record(&format!("job-{i}")))))
            .collect();
        store.write(epoch, &ops)?;
        // Fold the write-ahead log into the file, as a clean stop does.
        store
            .connection
            .pragma_update(None, "wal_checkpoint", "TRUNCATE")
            .map_err(|e| store.failed(e))?;
        Ok(SqliteStore::file_in(dir))
    }

    #[test]
    fn epochs_grow_by_one_within_a_millisecond_and_never_fall_below_the_clock() {
        assert_eq!(next_epoch(0, 1_700_000_000_000), 1_700_000_000_000);
        assert_eq!(
            next_epoch(1_700_000_000_000, 1_700_000_000_000),
            1_700_000_000_001
        );
        // A clock set back never takes the epoch down.
        assert_eq!(
            next_epoch(1_800_000_000_000, 1_700_000_000_000),
            1_800_000_000_001
        );
        assert_eq!(next_epoch(u64::MAX, 0), u64::MAX);
    }

    fn corruption_named(result: Result<Loaded, SchedulerError>, path: &Path) {
        match result {
            Err(SchedulerError::CorruptStateStore { path: named, .. }) => {
                assert_eq!(named, path.display().to_string());
            }
            other => panic!("expected a corrupt-store error, got {other:?}"),
        }
    }

    fn open_and_load(dir: &Path) -> Result<Loaded, SchedulerError> {
        SqliteStore::open(dir, false)?.load()
    }

    #[test]
    fn a_truncated_store_is_refused_naming_its_file_and_fresh_state_starts_over()
    -> Result<(), SchedulerError> {
        let dir = tempfile::tempdir()?;
        let path = written_store(dir.path())?;
        let file = std::fs::OpenOptions::new().write(true).open(&path)?;
        file.set_len(file.metadata()?.len() / 2)?;
        corruption_named(open_and_load(dir.path()), &path);
        let before = unix_millis();
        let mut fresh = SqliteStore::open(dir.path(), true)?;
        assert!(
            fresh.claim()?.0 >= before,
            "a fresh store still outranks the schedulers before it"
        );
        assert!(fresh.load()?.jobs.is_empty());
        assert!(path.with_extension("sqlite.corrupt").exists(), "kept aside");
        Ok(())
    }

    #[test]
    fn a_store_with_garbage_in_its_pages_or_header_is_refused_naming_its_file()
    -> Result<(), SchedulerError> {
        use std::io::{Seek, SeekFrom, Write};
        for offset in [0u64, 8192, 100_000] {
            let dir = tempfile::tempdir()?;
            let path = written_store(dir.path())?;
            let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
            file.seek(SeekFrom::Start(offset))?;
            file.write_all(&[0xA5; 4096])?;
            drop(file);
            corruption_named(open_and_load(dir.path()), &path);
        }
        Ok(())
    }
}
