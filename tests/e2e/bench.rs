//! `hermod bench --quick`: the benchmark runs end to end against the floor and Hermod. A smoke
//! test only: it judges no timing (benchmarks are not tests), only that commands complete, none
//! is lost and the floor ratio is reported.

use crate::harness::on_postgres;
use std::process::Command;

#[test]
fn the_quick_benchmark_completes_commands_loses_none_and_reports_the_floor_ratio() {
    let charts = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hermod"));
    command.args(["bench", "--quick", "--scenario", "e2e", "--json", "--plot"]);
    command.arg(charts.path());
    if on_postgres() {
        command.args(["--db", "postgres"]);
        if let Ok(admin) = std::env::var("HERMOD_TEST_POSTGRES") {
            command.args(["--postgres-admin-url", &admin]);
        }
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "hermod bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let load = report["load"].as_array().unwrap();
    let floor = load.iter().find(|r| r["server"] == "floor").expect("a floor run");
    assert!(floor["outcome"]["completed"].as_u64().unwrap() > 0);
    let hermod = load.iter().find(|r| r["server"] == "hermod").expect("a Hermod run");
    assert!(hermod["outcome"]["completed"].as_u64().unwrap() > 0, "{hermod:#}");
    assert_eq!(hermod["outcome"]["lost"], 0, "{hermod:#}");
    assert!(hermod["ratio_to_floor"].as_f64().is_some_and(|r| r > 0.0), "{hermod:#}");
    // The figures a script reads, one object per database.
    let db = if on_postgres() { "postgres" } else { "sqlite" };
    let summary = &report["e2e"][db];
    for field in [
        "cycles_per_second",
        "floor_cycles_per_second",
        "ratio_to_floor",
        "server_cpu_ms_per_cycle",
        "create_to_device_p99_ms",
        "answer_to_callback_p99_ms",
        "server_peak_rss_mb",
    ] {
        assert!(summary[field].as_f64().is_some_and(|v| v > 0.0), "{field}: {summary:#}");
    }
    assert_eq!(summary["lost"], 0);
    // `--plot`: the run as SVG charts, each naming the floor and Hermod's database.
    let hermod_label = if on_postgres() {
        "Hermod PostgreSQL"
    } else {
        "Hermod SQLite"
    };
    for chart in ["throughput.svg", "latency.svg"] {
        let svg = std::fs::read_to_string(charts.path().join(chart)).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{chart}");
        assert!(svg.contains("floor") && svg.contains(hermod_label), "{chart}: {svg}");
        assert!(svg.matches("<rect").count() >= 3, "{chart}: bars drawn");
    }
}

/// `hermod bench --quick --scenario edge`: the edge scenario runs through `wrangler dev` and
/// straight to the backend, and reports what reached the backend and whether every device was
/// woken (a smoke test: no timing is judged).
#[test]
fn the_quick_edge_scenario_runs_through_the_edge_and_directly() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(env!("CARGO_BIN_EXE_hermod"));
    command
        .args(["bench", "--quick", "--scenario", "edge", "--json", "--edge-repo"])
        .arg(&repo);
    if on_postgres() {
        command.args(["--db", "postgres"]);
        if let Ok(admin) = std::env::var("HERMOD_TEST_POSTGRES") {
            command.args(["--postgres-admin-url", &admin]);
        }
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "hermod bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let runs = report["edge"].as_array().unwrap();
    let via = |name: &str| {
        runs.iter()
            .find(|r| r["via"] == name)
            .unwrap_or_else(|| panic!("no {name} run"))
    };
    let (edge, direct) = (via("edge"), via("direct"));
    for r in [edge, direct] {
        assert_eq!(r["woken"], r["devices"], "{r:#}");
        assert_eq!(r["errors"], 0, "{r:#}");
        assert!(r["idle_polls"].as_u64().unwrap() > 0, "{r:#}");
    }
    // Straight to the backend every long-poll is a backend request (counted when it starts, the
    // polls when they end: they differ by at most one a device); through the edge, at most one
    // request per device.
    let n = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap();
    assert!(
        n(direct, "backend_requests_idle") + n(direct, "devices") >= n(direct, "idle_polls"),
        "{direct:#}"
    );
    assert!(n(edge, "backend_requests_idle") <= n(edge, "devices"), "{edge:#}");
    assert!(report["targets"].as_array().unwrap().len() >= 3);
}

/// `hermod bench --quick --scenario push`: every command's push reaches the real push service
/// (web-push-testing from the repository's node_modules).
#[test]
fn the_quick_push_benchmark_gets_every_push_to_the_push_service() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut command = Command::new(env!("CARGO_BIN_EXE_hermod"));
    command.args(["bench", "--quick", "--scenario", "push", "--json", "--edge-repo"]);
    command.arg(&repo);
    if on_postgres() {
        command.args(["--db", "postgres"]);
        if let Ok(admin) = std::env::var("HERMOD_TEST_POSTGRES") {
            command.args(["--postgres-admin-url", &admin]);
        }
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "hermod bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["push"][0];
    assert!(run["commands"].as_u64().unwrap() > 0, "{run:#}");
    assert_eq!(run["received"], run["commands"], "{run:#}");
    assert_eq!(run["sent"], run["commands"], "{run:#}");
    assert!(
        run["create_to_push"]["p50_ms"].as_f64().is_some_and(|v| v > 0.0),
        "{run:#}"
    );
}
