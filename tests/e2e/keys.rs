//! Server keys: a rotation keeps enrolled devices working, `rekey` moves a device to the new
//! key, a key dropped from the ring stops what only it could verify; a key an older Hermod kept
//! in the database moves to a 0600 file; hosted mode will not start without a key.

use crate::harness::*;
use hermod_shared::keys::{KeyRing, ServerKey};
use serde_json::json;

fn append_key(path: &std::path::Path, key: &ServerKey) {
    let mut text = std::fs::read_to_string(path).unwrap();
    text.push_str(&key.to_line());
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Another app on the same database, with the ring at `keys`.
async fn restart(url: &str, keys: &std::path::Path) -> TestApp {
    let keys = keys.to_owned();
    TestApp::start_on(TestDb::borrowed(url), tempfile::tempdir().unwrap(), move |s| {
        s.server_key_file = Some(keys)
    })
    .await
}

async fn lifesign(device: &hermod_device::Device) -> bool {
    device.lifesign().await.is_ok()
}

#[tokio::test]
async fn a_rotated_key_keeps_devices_working_rekey_moves_them_and_a_dropped_key_stops_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let url = db.url.clone();
    let keys = dir.path().join("hermod-server-keys");
    let first = TestApp::start_on(db, dir, |_| {}).await;
    let mut moving = first.enrol(&Creds::idm(), "ada").await;
    let mut staying = first.enrol(&Creds::idm(), "bob").await;
    let old_ring = KeyRing::parse(&std::fs::read_to_string(&keys).unwrap()).unwrap();
    assert_eq!(old_ring.current().id(), "k1");

    // Rotation: k2 appended, current from the next start on.
    let k2 = hermod::engine::keys::generate("k2").unwrap();
    append_key(&keys, &k2);
    let rotated = restart(&url, &keys).await;
    for d in [&mut moving, &mut staying] {
        d.state.ms_url = rotated.ms_url();
    }
    assert!(
        lifesign(&moving).await && lifesign(&staying).await,
        "enrolled devices keep working"
    );
    // New links name the new key; new devices get secrets from it.
    let provision = rotated
        .create_ok(&Creds::idm(), "provision", json!({ "user_id": "cy" }))
        .await;
    assert!(provision["enrolment"]["token"].as_str().unwrap().contains(".k2."));
    let newcomer = rotated.enrol(&Creds::idm(), "cy").await;
    assert!(lifesign(&newcomer).await);

    // One device moves on by itself; the other does not.
    let moving_device = moving.state.device_id.clone();
    assert_eq!(moving.rekey().await.unwrap(), "k2");
    assert!(lifesign(&moving).await);
    let key_id: Option<String> = sqlx::query_scalar("SELECT key_id FROM devices WHERE id = $1")
        .bind(moving_device.as_str())
        .fetch_one(&rotated.state.db.write)
        .await
        .unwrap();
    assert_eq!(key_id.as_deref(), Some("k2"), "the device's row follows");

    // k1 dropped: what only k1 verifies stops, the rest works.
    std::fs::write(&keys, KeyRing::single(k2).to_text()).unwrap();
    let after = restart(&url, &keys).await;
    for d in [&mut moving, &mut staying] {
        d.state.ms_url = after.ms_url();
    }
    assert!(lifesign(&moving).await);
    assert!(!lifesign(&staying).await, "a device left on a dropped key is refused");
    let old_link = old_ring
        .current()
        .issue_token(&hermod_shared::CommandId::from_random([1; 16]));
    assert!(after.state.keys.verify_token(&old_link).is_none());
    drop((first, rotated));
}

#[tokio::test]
async fn a_key_an_older_hermod_kept_in_the_database_moves_to_a_0600_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path()).await;
    let url = db.url.clone();
    let old_key = [42u8; 32];
    {
        // An older Hermod: its key in the `server_keys` table, no file.
        let app = TestApp::start_on(TestDb::borrowed(&url), tempfile::tempdir().unwrap(), |_| {}).await;
        sqlx::query("INSERT INTO server_keys (name, secret, created_at) VALUES ('root', $1, 0)")
            .bind(old_key.to_vec())
            .execute(&app.state.db.write)
            .await
            .unwrap();
    }
    let file = dir.path().join("moved-keys");
    let app = TestApp::start_on(db, dir, {
        let file = file.clone();
        move |s| s.server_key_file = Some(file)
    })
    .await;
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let ring = KeyRing::parse(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(ring.current().id(), "legacy");
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM server_keys")
        .fetch_one(&app.state.db.write)
        .await
        .unwrap();
    assert_eq!(left, 0, "no key stays in the database");
    // Devices enrolled with the old key still sign with its old derivation.
    let device = app.enrol(&Creds::idm(), "ada").await;
    assert_eq!(
        device.state.device_secret,
        hermod_shared::signing::DeviceSecret::derive(&old_key, &device.state.device_id).to_base64()
    );
}

#[tokio::test]
async fn hosted_mode_and_postgresql_refuse_to_start_without_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start().await;
    let mut settings = test_settings(dir.path(), &receiver);
    settings.server_key_file = Some(dir.path().join("absent"));
    settings.admin.operator_key = Some(hermod::config::Secret::new(OPERATOR_KEY));
    let e = hermod::Application::build(settings).await.err().expect("refused");
    assert!(format!("{e:#}").contains("server key"), "{e:#}");
    assert!(
        !dir.path().join("absent").exists(),
        "hosted mode makes no key of its own"
    );

    let pg = TestDb::postgres().await;
    let mut settings = test_settings(dir.path(), &receiver);
    settings.server_key_file = None;
    settings.database.url = pg.url.clone();
    let e = hermod::Application::build(settings).await.err().expect("refused");
    assert!(format!("{e:#}").contains("server key"), "{e:#}");
}
