//! The `hermod` binary as a user runs it: serve with a config file, gen-client, and the device
//! simulator taking a command from provisioning to the callback.

use crate::harness::*;
use serde_json::json;
use std::process::Command;
use std::time::Duration;

const HERMOD: &str = env!("CARGO_BIN_EXE_hermod");

#[tokio::test]
async fn gen_client_prints_an_entry_that_serve_accepts_and_the_device_simulator_completes_a_login() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let receiver = Receiver::start().await;

    let out = Command::new(HERMOD)
        .args(["gen-client", "--client-id", "idm", "--group", "smartid"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let entry = String::from_utf8(out.stdout).unwrap();
    let key = entry
        .lines()
        .find_map(|l| l.trim().strip_prefix("key: "))
        .unwrap()
        .to_owned();
    assert_eq!(key.len(), 64, "a 256-bit hex key");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));

    // The generated entry pasted into a config file in the seeds' format, with camelCase too.
    let config = dir.path().join("hermod-conf.yml");
    let entry = entry.replace(
        "  # callback-url: https://<HOST>/callback",
        &format!("  callback-url: {}", receiver.url),
    );
    std::fs::write(
        &config,
        format!(
            "server:\n  address: 127.0.0.1\n  port: 8080\n  ssl:\n    enabled: false\ndatabase:\n  url: sqlite://hermod.db\nallowed-clients:\n{}\n  - clientId: da\n    key: {DA_KEY}\n    group: smartid\n    callbackUrl: {}\n",
            entry.lines().filter(|l| !l.starts_with('#')).map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"),
            receiver.url
        ),
    )
    .unwrap();
    let server = hermod_serve(&config, dir.path(), &db.url);
    if !on_postgres() {
        assert!(
            dir.path().join("hermod.db").exists(),
            "the SQLite file is created on first start"
        );
    }

    let http = reqwest::Client::new();
    let token = hermod_shared::credential::ClientCredential {
        client_id: "idm".into(),
        key,
    }
    .token();
    let provision: serde_json::Value =
        post_command(&server.base, &token, "provision", json!({ "user_id": "pat" })).await;
    let link = provision["enrolment"]["link"].as_str().unwrap();
    let state = dir.path().join("device.json");
    let ms = format!("{}/ms", server.base);
    let enrol = Command::new(HERMOD)
        .args(["device", "enrol", "--link", link, "--ms", &ms, "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(enrol.status.success(), "{}", String::from_utf8_lossy(&enrol.stderr));

    // The access gateway (camelCase entry, same group) asks the device provisioned via idm.
    let da = Creds::da();
    let created: serde_json::Value = http
        .post(format!("{}/command/authenticate", server.base))
        .header("x-api-key", da.0.token())
        .json(&json!({ "user_id": "pat", "payload": { "text": "Log in to the portal?" } }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let run = Command::new(HERMOD)
        .args(["device", "run", "--once", "--wait", "5", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains(&format!("received {id} (authenticate)")), "{stdout}");

    let cb = receiver.callback_for(id).await;
    assert_eq!(cb.event().event_type, "command.approved");
    drop(server);
}

#[test]
fn the_sample_config_in_the_repository_loads() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/hermod-conf.yml");
    let settings = hermod::Settings::load(Some(&sample)).unwrap();
    assert_eq!(settings.allowed_clients.len(), 2);
    assert_eq!(
        settings.allowed_clients[1].client_id, "da",
        "camelCase clientId is read"
    );
    assert_eq!(settings.public_url.as_deref(), Some("http://127.0.0.1:8080/ms"));
}

/// Logs written to a file or a pipe carry no colour codes; `--log-format json` writes one JSON
/// object a line for log shippers.
#[test]
fn logs_to_a_pipe_are_plain_text_or_one_json_object_a_line() {
    let sample = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/hermod-conf.yml");
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(HERMOD)
            .args(["migrate", "--log-format", format, "--config"])
            .arg(&sample)
            .current_dir(dir.path())
            .env_remove("NO_COLOR")
            .env("HERMOD_LOG", "info")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let log = String::from_utf8(out.stderr).unwrap();
        assert!(!log.trim().is_empty(), "{format}: nothing logged");
        assert!(!log.contains('\x1b'), "{format}: colour codes in a piped log:\n{log}");
        if format == "json" {
            for line in log.lines().filter(|l| !l.trim().is_empty()) {
                let record: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                assert!(record["level"].is_string() && record["fields"].is_object(), "{line}");
            }
        }
    }
}

#[test]
fn a_broken_config_is_refused_at_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    for (yaml, message) in [
        ("allowed-clients:\n  - client-id: a\n    key: short\n    group: g\n", "shorter than 32"),
        ("allowed-clients:\n  - client-id: a\n    key: 0123456789abcdef0123456789abcdef\n    group: g\n    callback-url: ftp://x\n", "the callback-url of a must be an absolute http(s) URL"),
        // One rule for the config file and the admin API (`domain::callback`).
        ("allowed-clients:\n  - client-id: a\n    key: 0123456789abcdef0123456789abcdef\n    group: g\n    callback-url: https://u:p@x.example/cb\n", "with no user:password in it"),
        ("allowed-clients:\n  - client-id: a\n    key: 0123456789abcdef0123456789abcdef\n    group: g\n    callback-url: https://x.example/cb\n    callback-basic-auth: \"u:p\\u0007\"\n", "the callback-basic-auth of a must be user:password"),
        ("commands:\n  default-timeout: 600\n  default-lifespan: 60\n", "default-timeout"),
        ("server:\n  port: many\n", "port"),
        // Values a first fuzzing probe found to pass validation and then panic or misbehave.
        ("callbacks:\n  retry-schedule: [-5]\n", "retry-schedule"),
        ("callbacks:\n  retry-schedule: [.nan]\n", "retry-schedule"),
        ("callbacks:\n  request-timeout: -1\n", "request-timeout"),
        ("devices:\n  signature-window: 9223372036854775807\n", "signature-window"),
        ("devices:\n  signature-window: 0\n", "signature-window"),
        ("public-url: https://example.com/ms", "public-url"),
        ("server:\n  header-read-timeout: 0\n", "header-read-timeout"),
        ("long-polls:\n  per-device: 0\n", "long-polls"),
        ("egress:\n  allow: [\"10.0.0.0/33\"]\n", "egress.allow"),
        ("max-body-bytes: 0\n", "max-body-bytes"),
        // A typo no longer passes unnoticed.
        ("allowed-clients:\n  - client-id: a\n    key: 0123456789abcdef0123456789abcdef\n    group: g\n    callback-ulr: http://x\n", "`allowed-clients.0.callback-ulr` (did you mean `callback-url`?)"),
        ("servr:\n  port: 1\n", "`servr` (did you mean `server`?)"),
        ("database:\n  max-conections: 4\n", "did you mean `max-connections`?"),
        // Found by the config fuzz target: a zero timer interval, written as a sequence.
        ("retention: \n-    0 # s", "retention.interval"),
        ("retention:\n  interval: 0\n", "retention.interval"),
        ("retention:\n  batch: 0\n", "retention.batch"),
        ("admin:\n  auth-failure-summary: 0\n", "auth-failure-summary"),
        ("admin:\n  rate-limit: 0\n", "admin.rate-limit"),
    ] {
        let yaml = if yaml.starts_with("public-url") {
            format!("public-url: https://example.com/{}\n", "m".repeat(3_000))
        } else {
            yaml.to_owned()
        };
        let yaml = yaml.as_str();
        let file = dir.path().join("hermod-conf.yml");
        std::fs::write(&file, yaml).unwrap();
        let out = Command::new(HERMOD).args(["migrate", "--config"]).arg(&file).current_dir(dir.path()).output().unwrap();
        assert!(!out.status.success(), "{yaml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{yaml}: {stderr}");
        assert!(!stderr.contains("0123456789abcdef0123456789abcdef"), "keys never in messages");
    }
}

#[tokio::test]
async fn cacerts_are_logged_at_start_and_a_file_that_is_not_a_certificate_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let pki = crate::certs::TestPki::new();
    std::fs::create_dir(dir.path().join("cacerts")).unwrap();
    std::fs::write(dir.path().join("cacerts/test-ca.cer"), &pki.ca_pem).unwrap();
    let config = dir.path().join("hermod-conf.yml");
    std::fs::write(&config, "server:\n  address: 127.0.0.1\n").unwrap();
    let server = hermod_serve(&config, dir.path(), &db.url);
    assert_eq!(
        server
            .log
            .iter()
            .filter(|l| l.contains("Adding certificate test-ca.cer using alias test-ca"))
            .count(),
        1,
        "logged once: {:#?}",
        server.log
    );
    drop(server);

    std::fs::write(dir.path().join("cacerts/broken.cer"), "this is not a certificate").unwrap();
    let out = Command::new(HERMOD)
        .args(["serve", "--config"])
        .arg(&config)
        .env("HERMOD_SERVER__PORT", "0")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("broken.cer is not a PEM certificate"), "{stderr}");
}

#[tokio::test]
async fn kill_9_during_a_burst_of_callbacks_then_a_restart_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let receiver = Receiver::start().await;
    receiver.behave("/ws/hermod", Duration::from_millis(40), 204);
    let config = dir.path().join("hermod-conf.yml");
    std::fs::write(
        &config,
        format!(
            "server:\n  address: 127.0.0.1\ncommands:\n  sweep-interval-ms: 100\ncallbacks:\n  per-receiver-concurrency: 2\n\
             allowed-clients:\n  - client-id: idm\n    key: {IDM_KEY}\n    group: smartid\n    callback-url: {}\n",
            receiver.url
        ),
    )
    .unwrap();
    let mut first = hermod_serve(&config, dir.path(), &db.url);
    let token = Creds::idm().0.token();
    let provision: serde_json::Value =
        post_command(&first.base, &token, "provision", json!({ "user_id": "walt" })).await;
    let enrolment_token = provision["enrolment"]["token"].as_str().unwrap();
    hermod_device::Device::enrol(enrolment_token, Some(&format!("{}/ms", first.base)), None)
        .await
        .unwrap();

    // 60 commands that all expire after a second: a burst of 60 callbacks.
    const BURST: usize = 60;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..BURST {
        let created: serde_json::Value = post_command(
            &first.base,
            &token,
            "authenticate",
            json!({ "user_id": "walt", "timeout": 1, "lifespan": 600 }),
        )
        .await;
        ids.insert(created["id"].as_str().unwrap().to_owned());
    }
    let expired = |r: &Received| r.event().event_type == "command.expired";
    receiver
        .wait_for(Duration::from_secs(20), |_| {
            receiver.received().iter().filter(|r| expired(r)).count() >= 10
        })
        .await;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let before = receiver.received().iter().filter(|r| expired(r)).count();
    assert!(
        before < BURST,
        "the kill came in the middle of the burst ({before} of {BURST} delivered)"
    );

    let _second = hermod_serve(&config, dir.path(), &db.url);
    receiver
        .wait_for(Duration::from_secs(30), |_| {
            let seen: std::collections::HashSet<String> = receiver
                .received()
                .iter()
                .filter(|r| expired(r))
                .map(|r| r.event().data.id.to_string())
                .collect();
            ids.is_subset(&seen)
        })
        .await;
    let total = receiver.received().iter().filter(|r| expired(r)).count();
    println!(
        "{BURST} callbacks, {before} before the kill, {} duplicates (at least once)",
        total - BURST
    );
}

/// Operators who set the database up by hand get the schema as versioned SQL files
/// (`migrations/versioned/<dialect>/V{n}__{name}.sql`, what `hermod migrate --print-sql`
/// writes); a database built from them is one Hermod takes as migrated: it starts on it, runs
/// none of its migrations again, and serves.
#[tokio::test]
async fn a_database_built_from_the_versioned_sql_files_is_one_hermod_accepts() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The committed files are exactly what the binary prints.
    for dialect in ["postgres", "sqlite"] {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(HERMOD)
            .args(["migrate", "--print-sql", "--dialect", dialect, "--out"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let committed = repo.join("migrations/versioned").join(dialect);
        let names = |d: &std::path::Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            names(dir.path()),
            names(&committed),
            "{dialect}: regenerate with --print-sql --out"
        );
        for name in names(&committed) {
            assert_eq!(
                std::fs::read_to_string(dir.path().join(&name)).unwrap(),
                std::fs::read_to_string(committed.join(&name)).unwrap(),
                "{dialect}/{name} differs from what hermod prints: regenerate it"
            );
        }
    }
    // An upgrade prints only the versions after the database's.
    let out = Command::new(HERMOD)
        .args(["migrate", "--print-sql", "--from", "4"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("V5__") && !text.contains("V4__"), "{text}");

    // Build this pass's database from the files, by hand.
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let dialect = if on_postgres() { "postgres" } else { "sqlite" };
    let files = repo.join("migrations/versioned").join(dialect);
    let mut names: Vec<_> = std::fs::read_dir(&files).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort_by_key(|p| {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        name[1..name.find("__").unwrap()].parse::<i64>().unwrap()
    });
    {
        let hand = hermod::store::Db::connect(&db.url).await.unwrap();
        for file in &names {
            let sql = std::fs::read_to_string(file).unwrap();
            sqlx::raw_sql(&sql)
                .execute(&hand.write)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
        hand.write.close().await;
        hand.read.close().await;
    }
    let app = TestApp::start_on(db, dir, |_| {}).await;
    let applied: Vec<(i64, i64)> =
        sqlx::query_as("SELECT version, execution_time FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&app.state.db.write)
            .await
            .unwrap();
    assert_eq!(applied.len(), names.len());
    assert!(
        applied.iter().all(|(_, took)| *took == 0),
        "Hermod ran a migration again: {applied:?}"
    );
    let device = app.enrol(&Creds::idm(), "hilde").await;
    let created = app
        .create_ok(&Creds::idm(), "ping", json!({ "user_id": "hilde" }))
        .await;
    let mut device = device;
    let page = device.poll(0).await.unwrap();
    assert_eq!(page.items[0].command.id.as_str(), created["id"].as_str().unwrap());
}
