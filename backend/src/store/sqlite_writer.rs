//! SQLite's one writer, with group commit. SQLite takes one writer at a time; rather than
//! queue transactions on a connection pool (each statement hopping to sqlx's worker thread and
//! back), every hot-path transition is a closure sent to one thread that owns a rusqlite
//! connection with cached prepared statements. The thread takes everything waiting (up to
//! [`MAX_BATCH`]), runs it in one `BEGIN IMMEDIATE … COMMIT`, each closure inside a savepoint
//! of its own (a closure that fails rolls back only its own changes), and answers each caller
//! only after the commit: a caller that got an answer has its change on disk.
//!
//! `synchronous = NORMAL` in WAL mode: a commit is in the WAL before the caller hears of it, so a
//! killed process loses nothing it answered; only a power cut can lose the last commits (the
//! WAL is synced at checkpoints). Grouping makes `FULL` cheap too, should an operator want it.

use rusqlite::Connection;
use std::path::Path;
use std::sync::mpsc;
use tokio::sync::oneshot;

use crate::domain::error::ApiError;
use hermod_shared::ErrorCode;

/// Most transitions committed together.
pub const MAX_BATCH: usize = 256;

type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A transition waiting for the writer: run it (and answer after the commit), or answer it
/// with a failure without running it.
trait Transition: Send {
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply);
    fn abort(self: Box<Self>, error: String);
}

type Job = Box<dyn Transition>;

struct Pending<F, R> {
    f: F,
    tx: oneshot::Sender<Result<R, ApiError>>,
}

impl<F, R> Transition for Pending<F, R>
where
    R: Send + 'static,
    F: FnOnce(&Connection) -> Result<R, ApiError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> (bool, Reply) {
        let Pending { f, tx } = *self;
        let out = f(conn);
        let ok = out.is_ok();
        let reply: Reply = Box::new(move |committed| {
            let result = match committed {
                Ok(()) => out,
                Err(e) => {
                    tracing::error!(error = %e, "a group commit failed");
                    Err(ErrorCode::Internal.into())
                }
            };
            let _ = tx.send(result);
        });
        (ok, reply)
    }

    fn abort(self: Box<Self>, error: String) {
        tracing::error!(%error, "a group commit could not begin");
        let _ = self.tx.send(Err(ErrorCode::Internal.into()));
    }
}

/// A handle to the writer thread; cloning it is cheap. The thread ends when the last handle
/// is dropped.
#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sqlite::Writer")
    }
}

impl From<rusqlite::Error> for ApiError {
    fn from(e: rusqlite::Error) -> Self {
        tracing::error!(error = %e, "database error");
        ErrorCode::Internal.into()
    }
}

impl Writer {
    /// Opens the database file (already created and migrated) and starts the thread.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open(path)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
        )?;
        conn.set_prepared_statement_cache_capacity(64);
        let (jobs, inbox) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("hermod-sqlite-writer".into())
            .spawn(move || run(conn, inbox))?;
        Ok(Self { jobs })
    }

    /// Runs `f` in the next group commit; resolves after that commit with what `f` returned
    /// (or, if the commit failed, with an internal error).
    pub async fn run<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, ApiError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R, ApiError>>();
        let job: Job = Box::new(Pending { f, tx });
        self.jobs.send(job).map_err(|_| ApiError::from(ErrorCode::Internal))?;
        rx.await.map_err(|_| ApiError::from(ErrorCode::Internal))?
    }
}

/// SQLite's readers: a few threads, each with its own connection (WAL lets them read while the
/// writer writes), taking the hot-path reads from one queue. A read runs against the last
/// commit; it never waits for the writer.
#[derive(Clone)]
pub struct Readers {
    jobs: mpsc::Sender<ReadJob>,
}

type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sqlite::Readers")
    }
}

impl Readers {
    /// Opens `threads` read connections to the database file.
    pub fn open(path: &Path, threads: usize) -> anyhow::Result<Self> {
        let (jobs, inbox) = mpsc::channel::<ReadJob>();
        let inbox = std::sync::Arc::new(std::sync::Mutex::new(inbox));
        for n in 0..threads.max(1) {
            let conn = Connection::open(path)?;
            conn.execute_batch("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")?;
            conn.set_prepared_statement_cache_capacity(64);
            let inbox = std::sync::Arc::clone(&inbox);
            std::thread::Builder::new()
                .name(format!("hermod-sqlite-reader-{n}"))
                .spawn(move || loop {
                    // The lock is held only to take one job, never while running it.
                    let job = inbox.lock().map(|rx| rx.recv());
                    match job {
                        Ok(Ok(job)) => {
                            // A read that panics loses its own answer, not the thread.
                            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&conn)));
                            if ran.is_err() {
                                tracing::error!("a read panicked");
                            }
                        }
                        _ => return,
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    /// Runs the read `f` on a reader thread.
    pub async fn run<R, F>(&self, f: F) -> Result<R, ApiError>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> Result<R, ApiError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<R, ApiError>>();
        self.jobs
            .send(Box::new(move |conn| {
                let _ = tx.send(f(conn));
            }))
            .map_err(|_| ApiError::from(ErrorCode::Internal))?;
        rx.await.map_err(|_| ApiError::from(ErrorCode::Internal))?
    }
}

fn run(conn: Connection, inbox: mpsc::Receiver<Job>) {
    while let Ok(first) = inbox.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let replies = commit(&conn, batch);
        for (reply, result) in replies {
            reply(result);
        }
    }
}

/// One group commit: every job in its own savepoint inside one transaction.
fn commit(conn: &Connection, batch: Vec<Job>) -> Vec<(Reply, Result<(), String>)> {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        for job in batch {
            job.abort(e.to_string());
        }
        return Vec::new();
    }
    let mut replies = Vec::with_capacity(batch.len());
    for job in batch {
        let savepoint = conn.execute_batch("SAVEPOINT job");
        // A transition that panics is rolled back alone; its caller, whose answer was dropped
        // with it, gets an internal error, and the writer goes on with the others.
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run(conn)));
        let Ok((ok, reply)) = ran else {
            tracing::error!("a transition panicked; it was rolled back");
            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
            continue;
        };
        let closed = match (savepoint, ok) {
            (Ok(()), true) => conn.execute_batch("RELEASE job"),
            (Ok(()), false) => conn.execute_batch("ROLLBACK TO job; RELEASE job"),
            (Err(e), _) => Err(e),
        };
        replies.push((reply, closed.map_err(|e| e.to_string())));
    }
    let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
    if committed.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    replies
        .into_iter()
        .map(|(reply, own)| {
            let result = match (&committed, own) {
                (Err(e), _) => Err(e.clone()),
                (Ok(()), own) => own,
            };
            (reply, result)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &tempfile::TempDir) -> Writer {
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            .unwrap();
        Writer::open(&path).unwrap()
    }

    #[tokio::test]
    async fn many_callers_commit_together_and_a_failing_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        let mut calls = Vec::new();
        for k in 0..200i64 {
            let w = w.clone();
            calls.push(tokio::spawn(async move {
                w.run(move |c| {
                    c.prepare_cached("INSERT INTO t (k, v) VALUES (?1, 'x')")?
                        .execute([k])?;
                    if k % 10 == 0 {
                        // Writes, then refuses: its insert must not survive.
                        return Err(ApiError::from(ErrorCode::Conflict));
                    }
                    Ok(k)
                })
                .await
            }));
        }
        let mut ok = 0;
        for c in calls {
            if c.await.unwrap().is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 180);
        let count: i64 = w
            .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(count, 180, "the refused callers' inserts were rolled back");
        let multiples: i64 = w
            .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t WHERE k % 10 = 0", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(multiples, 0);
    }

    #[tokio::test]
    async fn a_transition_that_panics_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        let panicking = w
            .run(|c| -> Result<(), ApiError> {
                c.execute("INSERT INTO t (k, v) VALUES (7, 'x')", [])?;
                panic!("a bug in a transition")
            })
            .await;
        assert!(panicking.is_err());
        let count: i64 = w
            .run(|c| Ok(c.query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(count, 0, "its insert was rolled back, and the writer still answers");
    }

    #[tokio::test]
    async fn an_answer_comes_after_the_commit_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let w = writer(&dir);
        w.run(|c| Ok(c.execute("INSERT INTO t (k, v) VALUES (1, 'a')", [])?))
            .await
            .unwrap();
        // Another connection sees it at once: it was committed before the answer.
        let other = Connection::open(dir.path().join("w.db")).unwrap();
        let v: String = other
            .query_row("SELECT v FROM t WHERE k = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, "a");
    }
}
