//! Certificates made in the test: a CA, a server certificate for 127.0.0.1/localhost signed by
//! it, and the PKCS12 key store that the seeds' `server.ssl` section points at.

use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};

pub struct TestPki {
    pub ca_pem: String,
    pub server_cert_pem: String,
    server_key_pem: String,
    server_cert_der: Vec<u8>,
    server_key_der: Vec<u8>,
    ca_der: Vec<u8>,
}

impl TestPki {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Hermod test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let server_cert = params.signed_by(&server_key, &issuer).unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            server_cert_der: server_cert.der().to_vec(),
            server_key_der: server_key.serialize_der(),
            ca_der: ca_cert.der().to_vec(),
        }
    }

    /// A rustls server configuration with the server certificate (ring, as Hermod uses).
    pub fn server_config(&self) -> std::sync::Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
        std::sync::Arc::new(config)
    }

    /// The server key and certificate chain as a PKCS12 file, like `smartidtls.p12`.
    pub fn pkcs12(&self, password: &str) -> Vec<u8> {
        let chain = PrivateKeyChain::new(
            b"hermod-test".to_vec(),
            PrivateKey::from_der(&self.server_key_der).unwrap(),
            [
                Certificate::from_der(&self.server_cert_der).unwrap(),
                Certificate::from_der(&self.ca_der).unwrap(),
            ],
        );
        let mut store = KeyStore::new();
        store.add_entry("smartidtls", KeyStoreEntry::PrivateKeyChain(chain));
        store.writer(password).write().unwrap()
    }
}
