//! TLS inside the process, configured as the seeds do: `server.ssl` with a PKCS12 key store
//! (`key-store`, `key-store-password`, `keyStoreType: PKCS12`), served with rustls.

use anyhow::{bail, Context};
use p12_keystore::{KeyStore, Pkcs12ImportPolicy};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

use crate::config::SslSettings;

/// The rustls configuration from the key store, or `None` when TLS is off.
pub fn server_config(ssl: &SslSettings) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    if !ssl.enabled {
        return Ok(None);
    }
    if let Some(kind) = ssl.key_store_type.as_deref() {
        if !kind.eq_ignore_ascii_case("PKCS12") {
            bail!("server.ssl.keyStoreType {kind:?} is not supported: use a PKCS12 key store");
        }
    }
    let path = ssl
        .key_store
        .as_ref()
        .context("server.ssl.enabled needs server.ssl.key-store")?;
    let data = std::fs::read(path).with_context(|| format!("reading the key store {}", path.display()))?;
    let password = ssl.key_store_password.as_ref().map_or("", |p| p.expose());
    let store = KeyStore::from_pkcs12(&data, password, Pkcs12ImportPolicy::Strict).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a PKCS12 key store that this password opens: {e}",
            path.display()
        )
    })?;
    let (alias, chain) = store.private_key_chain().with_context(|| {
        format!(
            "the key store {} holds no private key with its certificate",
            path.display()
        )
    })?;
    let certs: Vec<CertificateDer<'static>> = chain
        .certs()
        .iter()
        .map(|c| CertificateDer::from(c.as_der().to_vec()))
        .collect();
    if certs.is_empty() {
        bail!("the key store entry {alias:?} has no certificate");
    }
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(chain.key().as_der().to_vec()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("the key of {alias:?} does not fit its certificate"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tracing::info!(alias, "TLS enabled from the PKCS12 key store");
    Ok(Some(Arc::new(config)))
}
