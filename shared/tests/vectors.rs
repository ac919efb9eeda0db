//! The device protocol's test vectors (`tests/vectors/device-protocol.json`, documented in
//! docs/PROTOCOL.md): key derivations, enrolment tokens, the canonical string and signatures.
//! A device written in another language checks itself against the same file.

use base64::Engine;
use hermod_shared::keys::KeyRing;
use hermod_shared::signing::{self, SignedHeaders};
use hermod_shared::{CommandId, DeviceId};
use hmac::{Hmac, Mac};
use serde_json::Value;

fn vectors() -> Value {
    let text = include_str!("vectors/device-protocol.json");
    serde_json::from_str(text).unwrap()
}

#[test]
fn derivations_and_enrolment_tokens() {
    let v = vectors();
    let ring = KeyRing::parse(v["key_ring"].as_str().unwrap()).unwrap();
    let device = DeviceId::parse(v["device_id"].as_str().unwrap()).unwrap();
    let command = CommandId::parse(v["command_id"].as_str().unwrap()).unwrap();
    for d in v["derivations"].as_array().unwrap() {
        let key = ring.get(d["key_id"].as_str().unwrap()).unwrap();
        assert_eq!(key.device_secret(&device).to_base64(), d["device_secret"]);
        assert_eq!(key.issue_token(&command), d["enrolment_token"]);
        let (cmd, by) = ring.verify_token(d["enrolment_token"].as_str().unwrap()).unwrap();
        assert_eq!((cmd, by.id()), (command.clone(), key.id()));
    }
}

#[test]
fn canonical_strings_and_signatures() {
    let v = vectors();
    let ring = KeyRing::parse(v["key_ring"].as_str().unwrap()).unwrap();
    let device = DeviceId::parse(v["device_id"].as_str().unwrap()).unwrap();
    for r in v["signed_requests"].as_array().unwrap() {
        let secret = ring.get(r["key_id"].as_str().unwrap()).unwrap().device_secret(&device);
        let (method, path, body) = (
            r["method"].as_str().unwrap(),
            r["path"].as_str().unwrap(),
            r["body"].as_str().unwrap().as_bytes(),
        );
        let (timestamp, nonce) = (r["timestamp"].as_i64().unwrap(), r["nonce"].as_str().unwrap());
        let signed = signing::sign(&secret, &device, method, path, timestamp, nonce, body);
        assert_eq!(signed.signature, r["signature"], "{path}");
        // The signature is HMAC-SHA256(device secret, canonical string), base64: computed here
        // from the documented canonical string alone, as another implementation would.
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.to_base64())
            .unwrap();
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(r["canonical"].as_str().unwrap().as_bytes());
        let by_hand = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(by_hand, r["signature"], "{path}");
        // And the server side accepts it at its time.
        let headers = SignedHeaders::parse(
            Some(device.as_str()),
            Some(&timestamp.to_string()),
            Some(nonce),
            Some(r["signature"].as_str().unwrap()),
        )
        .unwrap();
        signing::verify(&secret, &headers, method, path, body, timestamp, 300).unwrap();
    }
}

#[test]
fn animated_qr_frames() {
    let v = vectors();
    for f in v["qr_frames"].as_array().unwrap() {
        let frame = hermod_shared::approval::qr_frame(
            f["prefix"].as_str().unwrap(),
            f["qr_start_token"].as_str().unwrap(),
            f["qr_start_secret"].as_str().unwrap(),
            f["t"].as_u64().unwrap(),
        );
        assert_eq!(frame, f["frame"]);
    }
}

#[test]
fn verification_codes() {
    let v = vectors();
    for c in v["verification_codes"].as_array().unwrap() {
        let x = hex::decode(c["challenge"].as_str().unwrap()).unwrap();
        assert_eq!(hermod_shared::approval::verification_code(&x), c["code"]);
    }
}
