//! Mailboxes as stored: a log per user of a group, numbered in the statement that writes each
//! event under the mailbox row's lock (see `engine::mailbox`).

use sqlx::AnyConnection;

use super::commands::COLUMNS;

/// A page of a device's mailbox: `$1` group, `$2` user, `$3` cursor, `$4` device, `$5` limit.
pub static PAGE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let columns = COLUMNS
        .split(", ")
        .map(|c| format!("c.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "SELECT e.mailbox_seq AS seq, e.kind, {columns} FROM mailbox_events e JOIN commands c ON c.id = e.command_id
         WHERE e.group_id = $1 AND e.user_id = $2 AND e.mailbox_seq > $3 AND (e.device_id IS NULL OR e.device_id = $4)
         ORDER BY e.mailbox_seq LIMIT $5"
    )
});

/// [`PAGE_SQL`] for a device that takes the page (PostgreSQL, one statement): the open
/// commands in it (`$6` now) are marked delivered as they are read; `delivered_now` says which.
/// The devices of one user read the same commands at once: rows are locked in id order and a
/// row another statement holds is passed by (that one delivers or ends it), so two pages never
/// wait on each other in a circle (a deadlock, which PostgreSQL ends by failing one).
pub static PAGE_DELIVER_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH page AS ({page}),
         d AS (UPDATE commands SET status = 'delivered'
               WHERE id IN (SELECT c.id FROM commands c
                            WHERE c.id IN (SELECT id FROM page WHERE kind = 'command')
                              AND c.status = 'pending' AND c.timeout_at > $6
                            ORDER BY c.id FOR UPDATE SKIP LOCKED)
               RETURNING id)
         SELECT page.*, page.id IN (SELECT id FROM d) AS delivered_now FROM page ORDER BY page.seq",
        page = *PAGE_SQL
    )
});

/// What a mailbox event says.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Command,
    Cancelled,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Command => "command",
            Kind::Cancelled => "cancelled",
        }
    }
}

/// Appends an event to the mailbox of `user_id` in `group_id` (for one of its devices when
/// `device_id` is given), numbered next in that mailbox, in the caller's transaction
/// (PostgreSQL).
pub async fn append(
    conn: &mut AnyConnection,
    group_id: &str,
    user_id: &str,
    device_id: Option<&str>,
    command_id: &str,
    kind: Kind,
    now: i64,
) -> sqlx::Result<()> {
    // One statement: the number and the event commit together even outside a transaction.
    // (SQLite writes its mailbox events on the writer thread: `sqlite::append_mailbox`.)
    sqlx::query(
        "WITH next AS (
             INSERT INTO mailboxes (group_id, user_id, last_seq) VALUES ($1, $2, 1)
             ON CONFLICT (group_id, user_id) DO UPDATE SET last_seq = mailboxes.last_seq + 1 RETURNING last_seq)
         INSERT INTO mailbox_events (group_id, user_id, device_id, command_id, kind, created_at, mailbox_seq)
         SELECT $1, $2, $3, $4, $5, $6, last_seq FROM next",
    )
    .bind(group_id)
    .bind(user_id)
    .bind(device_id)
    .bind(command_id)
    .bind(kind.as_str())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
