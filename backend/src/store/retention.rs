//! Retention: the statements that remove what outlived its purpose, each a bounded batch found
//! through an index (migration 0004), so one batch is a short write that never stalls the
//! writer and never scans history. `$1` is the cutoff (unix ms), `$2` the batch size.
//!
//! - finished callback events (delivered, or dead letters) with their attempts (cascade);
//!   pending ones are never removed;
//! - audit records;
//! - revoked devices (their nonces go with the signature window; commands that named one end
//!   with their lifespan).
//!
//! Commands and their mailbox events leave with their lifespan in the sweeper
//! (`commands::FORGET_SQL`), nonces with the signature window.

use super::Dialect;

/// One kind of row to remove: `filter` picks it (`$1` the cutoff), `key` names it.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    pub table: &'static str,
    pub key: &'static str,
    pub filter: &'static str,
}

impl Batch {
    /// The statement removing at most `$2` rows. PostgreSQL gets the keys as an array, so the
    /// delete looks each up by its key (an `IN (subquery)` may be planned as a join over the
    /// whole table).
    pub fn sql(&self, dialect: Dialect) -> String {
        let Batch { table, key, filter } = self;
        match dialect {
            Dialect::Sqlite => {
                format!("DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} WHERE {filter} LIMIT $2)")
            }
            Dialect::Postgres => format!(
                "DELETE FROM {table} WHERE {key} = ANY (ARRAY(SELECT {key} FROM {table} WHERE {filter} LIMIT $2))"
            ),
        }
    }
}

/// Delivered callback events created before the cutoff (the first term lets the partial
/// index serve).
pub const DELIVERED_CALLBACKS: Batch = Batch {
    table: "callback_events",
    key: "id",
    filter: "status <> 'pending' AND created_at < $1 AND status = 'delivered'",
};

/// Dead letters created before the cutoff (kept longer than delivered events: they can be
/// recovered until then).
pub const DEAD_CALLBACKS: Batch = Batch {
    table: "callback_events",
    key: "id",
    filter: "status <> 'pending' AND created_at < $1 AND status = 'dead'",
};

/// Audit records older than the cutoff.
pub const AUDIT: Batch = Batch {
    table: "audit_log",
    key: "seq",
    filter: "at < $1",
};

/// Devices revoked before the cutoff.
pub const REVOKED_DEVICES: Batch = Batch {
    table: "devices",
    key: "id",
    filter: "revoked_at IS NOT NULL AND revoked_at < $1",
};
