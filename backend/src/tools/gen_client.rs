//! `hermod gen-client`: an `allowed-clients` entry with a fresh 256-bit hex key and a
//! callback signing secret, as the seeds' "generate client" step prints.

use hermod_shared::credential::ClientCredential;
use hermod_shared::webhook::WebhookSecret;
use hermod_shared::ErrorCode;

use crate::domain::error::{ApiError, ApiResult};

pub struct NewClient {
    pub client_id: String,
    pub group: String,
    pub key: String,
    pub signing_secret: String,
}

fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl NewClient {
    pub fn generate(client_id: &str, group: &str) -> ApiResult<Self> {
        if !valid_name(client_id) || !valid_name(group) {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "client-id and group are 1-64 of [A-Za-z0-9._-]",
            ));
        }
        let key: [u8; 32] = rand::random();
        Ok(Self {
            client_id: client_id.to_owned(),
            group: group.to_owned(),
            key: hex::encode(key),
            signing_secret: WebhookSecret::from_bytes(rand::random()).expose(),
        })
    }
}

pub fn render(c: &NewClient) -> String {
    let token = ClientCredential {
        client_id: c.client_id.clone(),
        key: c.key.clone(),
    }
    .token();
    format!(
        "# Paste under allowed-clients: in hermod-conf.yml, then restart Hermod.\n\
         # The client authenticates with the header  X-API-Key: {token}\n\
         - client-id: {id}\n  key: {key}\n  group: {group}\n\
         \x20 # Where Hermod sends callbacks, and their basic auth (optional):\n\
         \x20 # callback-url: https://<HOST>/callback\n\
         \x20 # callback-basic-auth: username:password\n\
         \x20 # Verify callbacks with this secret (Standard Webhooks, webhook-signature header):\n\
         \x20 callback-signing-secrets:\n    - {secret}\n",
        id = c.client_id,
        key = c.key,
        group = c.group,
        secret = c.signing_secret,
    )
}
