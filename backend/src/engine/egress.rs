//! Outgoing HTTP under the egress policy (`domain::egress`): a reqwest client whose resolver
//! drops every address the policy refuses, after DNS and on each lookup, so the address the
//! connector connects to is always one the policy allowed (DNS rebinding cannot pass: there is
//! no second lookup between the check and the connect). IP literals never reach a resolver, so
//! [`Egress::check`] judges them before the request starts. Proxies from the environment are
//! ignored: a proxy would connect on Hermod's behalf where the policy cannot see.

use hermod_shared::ErrorCode;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::config::EgressSettings;
use crate::domain::egress::{Allowance, EgressPolicy, Refusal};

/// The error a refused lookup fails with; found again in reqwest's error chain.
#[derive(Debug)]
pub struct EgressRefused;

impl std::fmt::Display for EgressRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("every address of the host is refused by the egress policy")
    }
}

impl std::error::Error for EgressRefused {}

/// The policy and the fixed name entries, shared by the resolver and the pre-flight check.
#[derive(Debug, Clone)]
pub struct Egress {
    policy: Arc<EgressPolicy>,
    hosts: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl Egress {
    /// The policy for tenants' requests, from `egress.allow`.
    pub fn from_settings(settings: &EgressSettings) -> anyhow::Result<Self> {
        let mut allow = Vec::new();
        for entry in &settings.allow {
            allow.push(Allowance::parse(entry).map_err(|e| anyhow::anyhow!("egress.allow: {e}"))?);
        }
        let hosts = settings
            .hosts
            .iter()
            .map(|(name, ip)| (name.trim_end_matches('.').to_ascii_lowercase(), vec![*ip]))
            .collect();
        Ok(Self {
            policy: Arc::new(EgressPolicy { allow }),
            hosts: Arc::new(hosts),
        })
    }

    /// For the config file's own clients: the operator wrote their URLs, so every address is
    /// allowed (the `egress.hosts` entries still apply).
    pub fn unrestricted(settings: &EgressSettings) -> anyhow::Result<Self> {
        let mut egress = Self::from_settings(settings)?;
        egress.policy = Arc::new(EgressPolicy {
            allow: vec![
                Allowance::Network("0.0.0.0/0".parse()?),
                Allowance::Network("::/0".parse()?),
            ],
        });
        Ok(egress)
    }

    /// Whether a request to `url` may start (scheme, literal address, no credentials in it).
    pub fn check(&self, url: &str) -> Result<url::Url, Refusal> {
        let parsed = url::Url::parse(url).map_err(|_| Refusal::NoHost)?;
        self.policy.check_url(&parsed)?;
        Ok(parsed)
    }

    /// A reqwest client builder with this policy's resolver, no proxies and no redirects.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(self.clone()))
    }
}

impl Resolve for Egress {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let policy = Arc::clone(&self.policy);
        let fixed = self.hosts.get(&host).cloned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = match fixed {
                Some(ips) => ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect(),
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| policy.permits_address(&host, a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(EgressRefused) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// What a tenant may be told about a failed request: a coarse reason, never a socket error's
/// text (it would tell an open port from a closed one) nor the URL (it may hold a password).
pub fn coarse_reason(e: &reqwest::Error) -> &'static str {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut tls = false;
    while let Some(err) = source {
        if err.is::<EgressRefused>() {
            return "refused by the egress policy: not a public address";
        }
        if err.is::<rustls::Error>() || err.to_string().to_ascii_lowercase().contains("certificate") {
            // Only certificate failures are told apart: the rest of a handshake error's text
            // could describe the peer.
            tls = true;
        }
        source = err.source();
    }
    if e.is_timeout() {
        "timed out"
    } else if tls {
        "TLS handshake failed: the receiver's certificate is not trusted"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

/// A callback URL a tenant sets through the admin API: refused at once (422) when its scheme or
/// literal address can never pass; names are judged again at each connect.
/// Credentials belong in `callback_basic_auth`, where they are kept out of views and the audit
/// log, not in the URL.
pub fn check_tenant_url(egress: &Egress, url: &str) -> Result<(), crate::domain::error::ApiError> {
    let refuse = |refusal: Refusal| {
        crate::domain::error::ApiError::new(ErrorCode::InvalidRequest, format!("callback_url: {refusal}"))
    };
    let parsed = egress.check(url).map_err(refuse)?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(refuse(Refusal::Credentials));
    }
    Ok(())
}
