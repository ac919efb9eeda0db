//! The server's keys: a ring of versioned keys that device secrets and enrolment tokens derive
//! from. Each key has an id; what a key derives carries that id (an enrolment token names it,
//! a device's secret is derived with it in the HKDF info, and the device row records it), so
//! keys rotate without re-enrolling anyone: a new key is appended and becomes current, new
//! enrolments use it, devices keep their own key until they move on (`POST /ms/rekey`) or are
//! re-enrolled, and the old key is dropped once no active device uses it.
//!
//! The ring's text form, one key a line (`#` starts a comment), the last line current:
//!
//! ```text
//! legacy 3q2+7w…=      # a key from before versioning: its derivations are the old ones
//! k2 Zm9vYmFy…=        # base64 of at least 32 random bytes
//! ```
//!
//! A key with the id `legacy` derives as Hermod did before keys had ids (HMAC, no id), so the
//! devices and links made with it keep working; every other key derives with HKDF-SHA256.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

use crate::command::{CommandId, DeviceId};
use crate::signing::DeviceSecret;

/// The id of a key that derives the way Hermod did before key ids.
pub const LEGACY_KEY_ID: &str = "legacy";

/// One key of the ring.
#[derive(Clone)]
pub struct ServerKey {
    id: String,
    secret: Vec<u8>,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerKey({}, <redacted>)", self.id)
    }
}

fn valid_id(id: &str) -> bool {
    (1..=16).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl ServerKey {
    /// A key from its id and secret (at least 32 bytes).
    pub fn new(id: &str, secret: Vec<u8>) -> Result<Self, String> {
        if !valid_id(id) {
            return Err(format!("key id {id:?}: 1-16 of a-z, 0-9 and -"));
        }
        if secret.len() < 32 {
            return Err(format!("key {id}: at least 32 bytes"));
        }
        Ok(Self {
            id: id.to_owned(),
            secret,
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn is_legacy(&self) -> bool {
        self.id == LEGACY_KEY_ID
    }

    /// HKDF-SHA256 of this key for one purpose and subject: 32 bytes.
    fn derive(&self, purpose: &str, subject: &str) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(b"hermod/server-key/v2"), &self.secret);
        let info = format!("{purpose}\n{}\n{subject}", self.id);
        let mut out = [0u8; 32];
        hk.expand(info.as_bytes(), &mut out)
            .expect("32 bytes is a valid HKDF length");
        out
    }

    /// The secret a device signs with.
    pub fn device_secret(&self, device: &DeviceId) -> DeviceSecret {
        if self.is_legacy() {
            DeviceSecret::derive(&self.secret, device)
        } else {
            DeviceSecret::from_bytes(self.derive("device-secret", device.as_str()))
        }
    }

    fn token_mac(&self, command: &CommandId) -> Hmac<Sha256> {
        if self.is_legacy() {
            crate::enrolment::legacy_mac(&self.secret, command)
        } else {
            let mut mac =
                Hmac::<Sha256>::new_from_slice(&self.derive("enrolment-token", "")).expect("HMAC takes any key length");
            mac.update(command.as_str().as_bytes());
            mac
        }
    }

    /// The enrolment token of a provisioning command: `{command}.{key id}.{mac}` (a legacy key
    /// gives the older `{command}.{mac}`).
    pub fn issue_token(&self, command: &CommandId) -> String {
        let tag = URL_SAFE_NO_PAD.encode(self.token_mac(command).finalize().into_bytes());
        if self.is_legacy() {
            format!("{command}.{tag}")
        } else {
            format!("{command}.{}.{tag}", self.id)
        }
    }

    /// This key as a line of the ring's text form.
    pub fn to_line(&self) -> String {
        format!("{} {}", self.id, STANDARD.encode(&self.secret))
    }
}

/// The keys, the current one last.
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Vec<ServerKey>,
}

impl KeyRing {
    /// A ring of one key.
    pub fn single(key: ServerKey) -> Self {
        Self { keys: vec![key] }
    }

    /// Parses the text form; at least one key, ids unique.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<ServerKey> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(b64), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(format!("line {}: `<id> <base64 key>`", n + 1));
            };
            let secret = STANDARD
                .decode(b64)
                .map_err(|_| format!("line {}: the key is not base64", n + 1))?;
            let key = ServerKey::new(id, secret).map_err(|e| format!("line {}: {e}", n + 1))?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(format!("line {}: key id {id} appears twice", n + 1));
            }
            keys.push(key);
        }
        if keys.is_empty() {
            return Err("no key".into());
        }
        Ok(Self { keys })
    }

    /// The ring with `key` added before the current one (an older key that still verifies), if
    /// its id is not there yet.
    pub fn with_older(mut self, key: ServerKey) -> Self {
        if self.get(&key.id).is_none() {
            self.keys.insert(0, key);
        }
        self
    }

    /// The key new enrolments use.
    pub fn current(&self) -> &ServerKey {
        self.keys.last().expect("a ring has a key")
    }

    pub fn get(&self, id: &str) -> Option<&ServerKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// Every key, the current one first.
    pub fn newest_first(&self) -> impl Iterator<Item = &ServerKey> {
        self.keys.iter().rev()
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        self.keys.iter().map(|k| k.to_line() + "\n").collect()
    }

    /// The command and the key of a genuine enrolment token.
    pub fn verify_token(&self, token: &str) -> Option<(CommandId, &ServerKey)> {
        let parts: Vec<&str> = token.trim().split('.').collect();
        let (id, key, tag) = match parts.as_slice() {
            [id, tag] => (*id, self.get(LEGACY_KEY_ID)?, *tag),
            [id, kid, tag] if *kid != LEGACY_KEY_ID => (*id, self.get(kid)?, *tag),
            _ => return None,
        };
        let command = CommandId::parse(id)?;
        let given = URL_SAFE_NO_PAD.decode(tag).ok()?;
        key.token_mac(&command).verify_slice(&given).ok()?;
        Some((command, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, fill: u8) -> ServerKey {
        ServerKey::new(id, vec![fill; 32]).unwrap()
    }

    #[test]
    fn the_text_form_round_trips_and_the_last_key_is_current() {
        let ring = KeyRing::single(key("legacy", 1)).with_older(key("k0", 0));
        let text = format!("{}# rotated in December\n{}\n", ring.to_text(), key("k2", 2).to_line());
        let parsed = KeyRing::parse(&text).unwrap();
        assert_eq!(parsed.current().id(), "k2");
        assert_eq!(
            parsed.newest_first().map(ServerKey::id).collect::<Vec<_>>(),
            ["k2", "legacy", "k0"]
        );
        for bad in [
            "",
            "k1",
            "K1 AAAA",
            "k1 !!!",
            "k1 AAAA",
            "k1 a b",
            &format!("{}\n{}", key("a", 1).to_line(), key("a", 2).to_line()),
        ] {
            assert!(KeyRing::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_legacy_key_derives_as_before_keys_had_ids() {
        let device = DeviceId::from_random([7; 16]);
        let command = CommandId::from_random([9; 16]);
        let legacy = key("legacy", 5);
        assert_eq!(
            legacy.device_secret(&device).to_base64(),
            DeviceSecret::derive(&[5; 32], &device).to_base64()
        );
        assert_eq!(
            legacy.issue_token(&command),
            crate::enrolment::issue_token(&[5; 32], &command)
        );
    }

    #[test]
    fn each_key_derives_its_own_secrets_and_tokens_name_their_key() {
        let device = DeviceId::from_random([7; 16]);
        let command = CommandId::from_random([9; 16]);
        let ring = KeyRing::parse(&format!("{}\n{}\n", key("legacy", 1).to_line(), key("k2", 2).to_line())).unwrap();
        let (old, new) = (ring.get("legacy").unwrap(), ring.current());
        assert_ne!(
            old.device_secret(&device).to_base64(),
            new.device_secret(&device).to_base64()
        );
        assert_ne!(
            new.device_secret(&device).to_base64(),
            key("k3", 2).device_secret(&device).to_base64(),
            "the key id is part of what is derived"
        );
        for k in [old, new] {
            let token = k.issue_token(&command);
            let (cmd, by) = ring.verify_token(&token).unwrap();
            assert_eq!((cmd, by.id()), (command.clone(), k.id()));
        }
        let token = new.issue_token(&command);
        assert!(token.contains(".k2."));
        // A token of a key the ring no longer holds, or with its key id changed, is refused.
        assert!(KeyRing::single(key("k9", 2)).verify_token(&token).is_none());
        assert!(ring.verify_token(&token.replace(".k2.", ".legacy.")).is_none());
        assert!(ring.verify_token(&format!("{token}.x")).is_none());
    }
}
