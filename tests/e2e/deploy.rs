//! The operator files under `deploy/`: the Grafana dashboard and the Prometheus alert rules are
//! well-formed, and every Hermod metric they query is one that `/metrics` exposes (a renamed or
//! removed counter must not leave a panel or an alert silently empty).

use crate::harness::*;
use figment::providers::{Format, Yaml};
use figment::Figment;
use hermod_shared::wire::Decision;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const DASHBOARD: &str = include_str!("../../deploy/grafana/hermod-dashboard.json");
const ALERTS: &str = include_str!("../../deploy/prometheus/hermod-alerts.yml");

#[derive(Debug, Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
struct Rule {
    alert: Option<String>,
    expr: Option<String>,
    #[serde(rename = "for")]
    for_: Option<String>,
    annotations: Option<BTreeMap<String, String>>,
}

/// The identifiers in a PromQL expression that start with `hermod_`.
fn hermod_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            if word.starts_with("hermod_") {
                names.insert(word.clone());
            }
            word.clear();
        }
    }
    names
}

/// Every string under a key `expr` or `query` (panel targets, template variables), at any depth.
fn queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match v {
                    Value::String(s) if key == "expr" || key == "query" => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                queries(v, out);
            }
        }
        _ => {}
    }
}

/// Whether the exposition has `name`: as a sample name, or as a family (`# TYPE`) once the
/// suffix the sample adds to it (`_total`, `_bucket`, `_sum`, `_count`) is taken off.
fn exposed(samples: &BTreeSet<String>, families: &BTreeSet<String>, name: &str) -> bool {
    samples.contains(name)
        || ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| name.strip_suffix(suffix))
            .any(|family| families.contains(family))
}

#[tokio::test]
async fn the_dashboard_and_the_alert_rules_query_only_metrics_that_exist() {
    // The dashboard: valid JSON, the settings it is imported with, and the names it queries.
    let dashboard: Value = serde_json::from_str(DASHBOARD).expect("the dashboard is valid JSON");
    assert_eq!(dashboard["uid"], "hermod");
    assert_eq!(dashboard["schemaVersion"], 39);
    assert!(
        dashboard["__inputs"]
            .as_array()
            .is_some_and(|inputs| inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS")),
        "the dashboard has no DS_PROMETHEUS input"
    );
    let mut dashboard_queries = Vec::new();
    queries(&dashboard, &mut dashboard_queries);
    let dashboard_names: BTreeSet<String> = dashboard_queries
        .iter()
        .flat_map(|q| hermod_names(q.as_str()))
        .collect();
    assert!(
        dashboard_names.contains("hermod_http_requests_total"),
        "no metric found in the dashboard's queries: {dashboard_queries:?}"
    );

    // The rules: each an alert with an expression, a duration and a summary.
    let rules: RuleFile = Figment::new()
        .merge(Yaml::string(ALERTS))
        .extract()
        .unwrap_or_else(|e| panic!("the alert rules do not parse: {e}"));
    assert!(!rules.groups.is_empty(), "no rule group");
    let mut rule_names = BTreeSet::new();
    for group in &rules.groups {
        assert!(!group.rules.is_empty(), "group {} has no rules", group.name);
        for rule in &group.rules {
            let alert = rule
                .alert
                .as_deref()
                .unwrap_or_else(|| panic!("a rule of group {} has no `alert`: {rule:?}", group.name));
            let expr = rule
                .expr
                .as_deref()
                .unwrap_or_else(|| panic!("alert {alert} has no `expr`"));
            assert!(!expr.trim().is_empty(), "alert {alert} has an empty `expr`");
            assert!(
                rule.for_.as_deref().is_some_and(|f| !f.trim().is_empty()),
                "alert {alert} has no `for`"
            );
            assert!(
                rule.annotations
                    .as_ref()
                    .and_then(|a| a.get("summary"))
                    .is_some_and(|s| !s.trim().is_empty()),
                "alert {alert} has no `annotations.summary`"
            );
            rule_names.extend(hermod_names(expr));
        }
    }
    assert!(!rule_names.is_empty(), "no Hermod metric found in the alert rules");

    // What Hermod exposes.
    let app = TestApp::start().await;
    let response = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let exposition = response.text().await.unwrap();
    let mut samples = BTreeSet::new();
    let mut families = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(family) = rest.split(' ').next() {
                families.insert(family.to_owned());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            samples.insert(name.to_owned());
        }
    }
    assert!(!samples.is_empty(), "/metrics exposes nothing:\n{exposition}");

    let missing_in_dashboard: Vec<&String> = dashboard_names
        .iter()
        .filter(|n| !exposed(&samples, &families, n))
        .collect();
    assert!(
        missing_in_dashboard.is_empty(),
        "the dashboard queries metrics /metrics does not expose: {missing_in_dashboard:?}\n{exposition}"
    );
    let missing_in_rules: Vec<&String> = rule_names.iter().filter(|n| !exposed(&samples, &families, n)).collect();
    assert!(
        missing_in_rules.is_empty(),
        "the alert rules query metrics /metrics does not expose: {missing_in_rules:?}\n{exposition}"
    );

    // And the other way round: a metric added to Hermod gets a panel.
    let not_shown: Vec<&String> = samples
        .iter()
        .filter(|s| s.starts_with("hermod_") && !dashboard_names.contains(*s))
        .collect();
    assert!(
        not_shown.is_empty(),
        "metrics no dashboard panel shows (add one to deploy/grafana/hermod-dashboard.json): {not_shown:?}"
    );
}

/// The metrics count what their names say: each final status, the long-polls held, and 503s.
#[tokio::test]
async fn metrics_count_final_statuses_held_long_polls_and_unavailable_answers() {
    let app = TestApp::start_with(|s| {
        s.commands.sweep_interval_ms = 50;
        s.long_polls.max = 1;
    })
    .await;
    let idm = Creds::idm();
    let device = app.enrol(&idm, "mona").await;
    let r = app.http.get(format!("{}/metrics", app.base)).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(r.text().await.unwrap().trim_end().ends_with("# EOF"));

    for decision in [Decision::Approved, Decision::Declined] {
        let created = app.create_ok(&idm, "authenticate", json!({ "user_id": "mona" })).await;
        let id = hermod_shared::CommandId::parse(created["id"].as_str().unwrap()).unwrap();
        let answer = device.respond(&id, decision, None).await.unwrap();
        assert_eq!(answer.status(), 200);
    }
    let created = app.create_ok(&idm, "authenticate", json!({ "user_id": "mona" })).await;
    let id = created["id"].as_str().unwrap();
    assert_eq!(app.delete(&idm, &format!("/command/{id}")).await.0, 200);
    app.create_ok(&idm, "ping", json!({ "user_id": "mona", "timeout": 1, "lifespan": 60 }))
        .await;
    let finished = |status: &'static str| {
        let base = app.base.clone();
        async move { metric(&base, &format!("hermod_commands_finished_total{{status=\"{status}\"}}")).await }
    };
    eventually(Duration::from_secs(10), "the ping expires", || async {
        finished("expired").await == 1
    })
    .await;
    // The provision command that enrolled the device ended approved too.
    assert_eq!(finished("approved").await, 2);
    assert_eq!(finished("declined").await, 1);
    assert_eq!(finished("cancelled").await, 1);

    // One long-poll held (the cap is 1): the gauge shows it, a second device's poll gets 503,
    // counted.
    let mut waiting = device.clone();
    while !waiting.poll(0).await.unwrap().items.is_empty() {}
    let held = tokio::spawn(async move { waiting.poll(30).await });
    eventually(Duration::from_secs(10), "the long-poll is held", || async {
        metric(&app.base, "hermod_long_polls_open").await == 1
    })
    .await;
    let mut other = app.enrol(&idm, "nils").await;
    let refused = other.poll(30).await;
    assert!(refused.is_err(), "over long-polls.max: refused");
    assert!(metric(&app.base, "hermod_http_unavailable_total").await >= 1);
    held.abort();
}
