//! Enrolment: the single-use token a `provision` command yields, and its link and QR code.
//!
//! The token is `{command id}.{base64url HMAC(server key, command id)}`: the server recognises
//! it without storing it, can show the same QR code again while the command is open, and the
//! command's status (answered once, then final) makes it single-use.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::command::CommandId;

type HmacSha256 = Hmac<Sha256>;

/// The deep-link scheme the authenticator app registers.
pub const DEEP_LINK_SCHEME: &str = "hermod";

/// The MAC of the token format from before key ids (see `keys`).
pub(crate) fn legacy_mac(server_key: &[u8], command: &CommandId) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(server_key).expect("HMAC takes any key length");
    mac.update(b"hermod/enrolment-token/v1\n");
    mac.update(command.as_str().as_bytes());
    mac
}

/// The enrolment token of a provisioning command.
pub fn issue_token(server_key: &[u8], command: &CommandId) -> String {
    format!(
        "{}.{}",
        command,
        URL_SAFE_NO_PAD.encode(legacy_mac(server_key, command).finalize().into_bytes())
    )
}

/// The provisioning command a token belongs to, if the token is genuine.
pub fn verify_token(server_key: &[u8], token: &str) -> Option<CommandId> {
    let (id, tag) = token.trim().split_once('.')?;
    let command = CommandId::parse(id)?;
    let given = URL_SAFE_NO_PAD.decode(tag).ok()?;
    legacy_mac(server_key, &command).verify_slice(&given).ok()?;
    Some(command)
}

/// `hermod://enrol?ms=<public url>&token=<token>`: what the QR code holds and the app opens.
pub fn deep_link(public_url: &str, token: &str) -> String {
    format!(
        "{DEEP_LINK_SCHEME}://enrol?ms={}&token={}",
        percent_encode(public_url),
        percent_encode(token)
    )
}

/// Reads a deep link back into (public url, token).
pub fn parse_deep_link(link: &str) -> Option<(String, String)> {
    let query = link.strip_prefix(&format!("{DEEP_LINK_SCHEME}://enrol?"))?;
    let (mut ms, mut token) = (None, None);
    for pair in query.split('&') {
        match pair.split_once('=')? {
            ("ms", v) => ms = Some(percent_decode(v)?),
            ("token", v) => token = Some(percent_decode(v)?),
            _ => {}
        }
    }
    Some((ms?, token?))
}

/// The deep link as a QR code, an SVG document.
/// `None` when `data` is too long for a QR code (about 2.3 KB at this correction level).
pub fn qr_svg(data: &str) -> Option<String> {
    let code = qrcode::QrCode::with_error_correction_level(data.as_bytes(), qrcode::EcLevel::M).ok()?;
    Some(
        code.render::<qrcode::render::svg::Color>()
            .min_dimensions(256, 256)
            .build(),
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> CommandId {
        CommandId::from_random([0x42; 16])
    }

    #[test]
    fn tokens_verify_only_with_their_key_and_intact() {
        let token = issue_token(b"key one", &command());
        assert_eq!(verify_token(b"key one", &token), Some(command()));
        assert_eq!(verify_token(b"key two", &token), None);
        assert_eq!(verify_token(b"key one", &token[..token.len() - 2]), None);
        assert_eq!(verify_token(b"key one", ""), None);
        assert_eq!(verify_token(b"key one", &format!("{}.", command())), None);
        let other = CommandId::from_random([0x43; 16]);
        let (_, tag) = token.split_once('.').unwrap();
        assert_eq!(verify_token(b"key one", &format!("{other}.{tag}")), None);
    }

    #[test]
    fn deep_links_round_trip() {
        let link = deep_link("https://msg.example.com:8443/hermod/rest/ms", "cmd_ab.x-y_z");
        assert_eq!(
            link,
            "hermod://enrol?ms=https%3A%2F%2Fmsg.example.com%3A8443%2Fhermod%2Frest%2Fms&token=cmd_ab.x-y_z"
        );
        assert_eq!(
            parse_deep_link(&link),
            Some((
                "https://msg.example.com:8443/hermod/rest/ms".into(),
                "cmd_ab.x-y_z".into()
            ))
        );
        assert_eq!(parse_deep_link("https://example.com"), None);
        assert_eq!(parse_deep_link("hermod://enrol?ms=%zz&token=t"), None);
    }

    /// Level M, version 40 holds 5,596 digits, 3,391 upper-case alphanumerics or 2,331 bytes:
    /// exactly that fits, one more is refused (no panic).
    #[test]
    fn qr_codes_hold_exactly_the_capacity_of_the_largest_version_in_each_mode() {
        for (unit, capacity) in [("7", 5596), ("A", 3391), ("a", 2331)] {
            let svg = qr_svg(&unit.repeat(capacity)).unwrap_or_else(|| panic!("{capacity} × {unit:?} fits"));
            assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
            assert_eq!(qr_svg(&unit.repeat(capacity + 1)), None, "{} × {unit:?}", capacity + 1);
        }
        // A mixed text at the byte capacity fits in bytes whatever its mix.
        let mixed: String = "a7A/".chars().cycle().take(2331).collect();
        assert!(qr_svg(&mixed).is_some());
    }

    proptest::proptest! {
        // Rendering a large code takes a while in a debug build: a few dozen texts, each of any
        // characters and any length to past every capacity.
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn any_text_is_rendered_or_refused_and_never_panics(text in "\\PC{0,3000}") {
            match qr_svg(&text) {
                Some(svg) => {
                    proptest::prop_assert!(text.len() <= 5596);
                    proptest::prop_assert!(svg.contains("<svg"));
                }
                None => proptest::prop_assert!(text.len() > 2331, "{} bytes fit a code", text.len()),
            }
        }
    }

    #[test]
    fn qr_code_is_an_svg() {
        let svg = qr_svg(&deep_link("https://h/ms", &issue_token(b"k", &command()))).unwrap();
        assert_eq!(
            qr_svg(&"x".repeat(4_000)),
            None,
            "too long for a QR code: refused, no panic"
        );
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
    }
}
