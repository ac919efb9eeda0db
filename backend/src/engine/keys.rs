//! Where the server's key ring comes from (see `hermod_shared::keys` for what it derives):
//!
//! - `server-key-file` (relative to the config file): the ring's text form, one `<id> <base64>`
//!   line a key, the last current. Checked to be readable by its owner only.
//! - `server-key` / `HERMOD_SERVER_KEY`: one key from before key ids (the `legacy` key), kept so
//!   devices enrolled with it keep working; with a file it joins the ring as an older key.
//! - Neither, on SQLite on-premises: a ring file `hermod-server-keys` (mode 0600) is made next
//!   to the database at first start. A key an older Hermod kept in the database moves into that
//!   file and leaves the database: no key is ever stored there in plain text.
//! - Neither, in hosted mode (an edge secret or an operator key is set) or on PostgreSQL (the
//!   replicas must share one ring): Hermod refuses to start.

use anyhow::Context;
use hermod_shared::keys::{KeyRing, ServerKey, LEGACY_KEY_ID};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::Settings;
use crate::store::{Db, Dialect};

/// The ring file made at first start, next to the SQLite database.
pub const DEFAULT_FILE_NAME: &str = "hermod-server-keys";

fn decode(b64: &str, what: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .with_context(|| format!("{what} is not base64"))
}

/// A fresh key with a new id.
pub fn generate(id: &str) -> anyhow::Result<ServerKey> {
    ServerKey::new(id, rand::random::<[u8; 32]>().to_vec()).map_err(anyhow::Error::msg)
}

/// Writes a new ring file, readable by its owner only; never overwrites one.
fn create_file(path: &Path, ring: &KeyRing) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating the server key file {}", path.display()))?;
    file.write_all(b"# Hermod's server keys: `<id> <base64>` a line, the last current. Keep secret.\n")?;
    file.write_all(ring.to_text().as_bytes())?;
    file.sync_all()?;
    Ok(())
}

fn read_file(path: &Path) -> anyhow::Result<KeyRing> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(file = %path.display(), "the server key file is readable by others than its owner: chmod 600 it");
    }
    let text = std::fs::read_to_string(path)?;
    KeyRing::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Rewrites a ring file with `ring` (atomically: a new file renamed over the old one).
fn rewrite_file(path: &Path, ring: &KeyRing) -> anyhow::Result<()> {
    let fresh = path.with_extension("new");
    let _ = std::fs::remove_file(&fresh);
    create_file(&fresh, ring)?;
    std::fs::rename(&fresh, path)?;
    Ok(())
}

/// The ring this process uses; see the module's rules.
pub async fn load(settings: &Settings, db: &Db) -> anyhow::Result<KeyRing> {
    let hosted = settings.edge.secret.is_some() || settings.admin.operator_key.is_some();
    let from_env = match &settings.server_key {
        Some(b64) => Some(
            ServerKey::new(LEGACY_KEY_ID, decode(b64.expose(), "HERMOD_SERVER_KEY")?)
                .map_err(|_| anyhow::anyhow!("HERMOD_SERVER_KEY must hold at least 32 bytes"))?,
        ),
        None => None,
    };
    let in_db = db.legacy_server_key().await?;
    let file: Option<PathBuf> = settings.server_key_file.clone().or_else(|| {
        (db.dialect == Dialect::Sqlite && from_env.is_none())
            .then(|| db.sqlite_path().map(|p| p.with_file_name(DEFAULT_FILE_NAME)))
            .flatten()
    });
    let ring = match (&file, from_env) {
        (Some(path), env) if path.exists() => {
            let mut ring = read_file(path)?;
            if let Some(old) = in_db.clone() {
                if ring.get(LEGACY_KEY_ID).is_none() {
                    ring = ring.with_older(ServerKey::new(LEGACY_KEY_ID, old).map_err(anyhow::Error::msg)?);
                    rewrite_file(path, &ring)?;
                }
            }
            match env {
                Some(key) => ring.with_older(key),
                None => ring,
            }
        }
        (_, Some(key)) => KeyRing::single(key),
        (Some(path), None) => {
            anyhow::ensure!(
                !hosted,
                "hosted mode needs its server key from HERMOD_SERVER_KEY or server-key-file ({} does not exist)",
                path.display()
            );
            let ring = match in_db.clone() {
                Some(old) => KeyRing::single(ServerKey::new(LEGACY_KEY_ID, old).map_err(anyhow::Error::msg)?),
                None => KeyRing::single(generate("k1")?),
            };
            create_file(path, &ring)?;
            tracing::info!(file = %path.display(), "server key file created (mode 0600): back it up with the database");
            ring
        }
        (None, None) => anyhow::bail!(
            "a server key is required: set HERMOD_SERVER_KEY or server-key-file (hosted mode and PostgreSQL \
             replicas must share one; only an embedded SQLite set-up makes its own)"
        ),
    };
    if in_db.is_some() {
        db.forget_legacy_server_key().await?;
        tracing::info!("the server key kept in the database by an older Hermod was moved out of it");
    }
    Ok(ring)
}
