//! Every query that runs per request or per worker tick is planned without reading a whole table
//! that grows with history: checked with the SQLite this binary links (the bundled one, whose
//! planner differs from the system `sqlite3`'s) and with PostgreSQL's `EXPLAIN`. The SQL is the
//! backend's own constants, so a changed query is checked as it is.

use crate::harness::*;
use serde_json::Value;
use sqlx::Row;

/// Tables that grow with traffic and history.
const GROWING: &[&str] = &[
    "commands",
    "mailbox_events",
    "callback_events",
    "callback_attempts",
    "audit_log",
    "nonces",
    "devices",
];

/// Indexes that hold only the rows a query wants (open commands, pending callbacks): walking
/// one of them whole is not a scan of history.
const PARTIAL: &[&str] = &[
    "callback_events_pending",
    "callback_events_due",
    "commands_open_by_timeout",
];

enum Bind {
    Int(i64),
    Text(&'static str),
}

fn dialect() -> hermod::store::Dialect {
    if on_postgres() {
        hermod::store::Dialect::Postgres
    } else {
        hermod::store::Dialect::Sqlite
    }
}

fn hot_queries() -> Vec<(&'static str, String, Vec<Bind>)> {
    use Bind::{Int, Text};
    vec![
        (
            "mailbox page",
            hermod::store::mailbox::PAGE_SQL.clone(),
            vec![Text("g"), Text("u"), Int(0), Text("d"), Int(100)],
        ),
        (
            "callback candidates",
            if on_postgres() {
                hermod::store::outbox::CANDIDATES_PG_SQL.into()
            } else {
                hermod::store::outbox::CANDIDATES_SQL.into()
            },
            vec![Int(0), Int(80), Text("[\"c\"]"), Text("[\"t\"]")],
        ),
        ("next callback due", hermod::store::outbox::NEXT_DUE_SQL.into(), vec![]),
        (
            "commands due to expire",
            hermod::engine::commands::DUE_SQL.clone(),
            vec![Int(0)],
        ),
        (
            "commands past lifespan",
            hermod::engine::commands::FORGET_SQL.into(),
            vec![Int(0)],
        ),
        (
            "nonces past the window",
            hermod::engine::commands::FORGET_NONCES_SQL.into(),
            vec![Int(0)],
        ),
        (
            "retention: delivered callbacks",
            hermod::store::retention::DELIVERED_CALLBACKS.sql(dialect()),
            vec![Int(0), Int(1000)],
        ),
        (
            "retention: dead callbacks",
            hermod::store::retention::DEAD_CALLBACKS.sql(dialect()),
            vec![Int(0), Int(1000)],
        ),
        (
            "retention: audit",
            hermod::store::retention::AUDIT.sql(dialect()),
            vec![Int(0), Int(1000)],
        ),
        (
            "retention: revoked devices",
            hermod::store::retention::REVOKED_DEVICES.sql(dialect()),
            vec![Int(0), Int(1000)],
        ),
        (
            "audit page",
            hermod::store::audit::PAGE_SQL.into(),
            vec![Text("t"), Int(0), Int(100)],
        ),
    ]
}

fn bound<'q>(sql: &'q str, binds: &'q [Bind]) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = match b {
            Bind::Int(i) => q.bind(*i),
            Bind::Text(t) => q.bind(*t),
        };
    }
    q
}

#[tokio::test]
async fn hot_queries_read_no_growing_table_whole() {
    let app = TestApp::start().await;
    let db = &app.state.db.read;
    let mut bad = Vec::new();
    for (name, sql, binds) in hot_queries() {
        if on_postgres() {
            // The Any driver cannot read EXPLAIN's json column: ask through the native driver.
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&app.state.db.url).await.unwrap();
            // Where an index can serve, the planner must find it even on an empty table.
            sqlx::query("SET enable_seqscan = off")
                .execute(&mut conn)
                .await
                .unwrap();
            let explain = format!("EXPLAIN (FORMAT JSON) {sql}");
            let mut q = sqlx::query(&explain);
            for b in &binds {
                q = match b {
                    Bind::Int(i) => q.bind(*i),
                    Bind::Text(t) => q.bind(*t),
                };
            }
            let row = q.fetch_one(&mut conn).await.unwrap();
            let plan: Value = serde_json::from_str(&row.try_get_unchecked::<String, _>(0).unwrap()).unwrap();
            let mut nodes = Vec::new();
            collect_scans(&plan[0]["Plan"], &mut nodes);
            for (node, table, index, cond) in nodes {
                let full = match node.as_str() {
                    "Seq Scan" => true,
                    "Index Scan" | "Index Only Scan" => !cond && !PARTIAL.contains(&index.as_str()),
                    _ => false,
                };
                if full && GROWING.contains(&table.as_str()) {
                    bad.push(format!("{name}: {node} on {table} {index}"));
                }
            }
        } else {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let rows = bound(&explain, &binds).fetch_all(db).await.unwrap();
            for row in rows {
                let detail: String = row.try_get("detail").unwrap();
                // "SCAN t" reads table t whole; "SEARCH t USING INDEX i (k=?)" does not; a scan
                // of a partial index reads only the rows it holds.
                let scans_whole = detail.starts_with("SCAN")
                    && !PARTIAL.iter().any(|i| detail.contains(&format!("INDEX {i}")))
                    && !detail.contains("CONSTANT ROW")
                    // json_each over the short list of busy receivers, not a table.
                    && !detail.contains("json_each VIRTUAL TABLE");
                if scans_whole {
                    bad.push(format!("{name}: {detail}"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "full scans of growing tables:\n{}", bad.join("\n"));
}

/// Every scan node of a PostgreSQL plan: (node type, relation, index, has an index condition).
fn collect_scans(plan: &Value, out: &mut Vec<(String, String, String, bool)>) {
    let node = plan["Node Type"].as_str().unwrap_or_default();
    if node.ends_with("Scan") {
        out.push((
            node.to_owned(),
            plan["Relation Name"].as_str().unwrap_or_default().to_owned(),
            plan["Index Name"].as_str().unwrap_or_default().to_owned(),
            plan.get("Index Cond").is_some(),
        ));
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        collect_scans(child, out);
    }
}
