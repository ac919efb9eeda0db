//! Phishing-resistant approval, as pure functions: the animated QR code's frames (BankID's
//! construction), the verification code both screens show (Smart-ID's), the numbers of number
//! matching, the reasons a device may give for a decline, and the text a device shows.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// What Hermod's QR frames start with.
pub const QR_PREFIX: &str = "hermod";

/// One frame of the animated QR code: `{prefix}.{token}.{t}.{hex(HMAC-SHA256(key = secret as
/// UTF-8, msg = decimal t))}`, with `t` the whole seconds since the command was created.
pub fn qr_frame(prefix: &str, token: &str, secret: &str, t: u64) -> String {
    format!("{prefix}.{token}.{t}.{}", hex::encode(qr_code(secret, t)))
}

fn qr_code(secret: &str, t: u64) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.finalize().into_bytes().into()
}

/// The frame of a command created at `created_at_ms`, as of `now_ms`.
pub fn current_qr_frame(token: &str, secret: &str, created_at_ms: i64, now_ms: i64) -> String {
    qr_frame(QR_PREFIX, token, secret, seconds_since(created_at_ms, now_ms))
}

fn seconds_since(created_at_ms: i64, now_ms: i64) -> u64 {
    u64::try_from(now_ms.saturating_sub(created_at_ms) / 1000).unwrap_or(0)
}

/// Why a scanned frame does not claim a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameRefusal {
    /// Not a Hermod frame, or a frame of another command.
    Foreign,
    /// The command's token, but a code its secret did not make.
    Forged,
    /// A genuine frame, older than the accepted age (or from the future).
    Stale,
}

/// A frame's token (which command it names), before it is verified.
pub fn frame_token(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix(QR_PREFIX)?.strip_prefix('.')?;
    let (token, _) = rest.split_once('.')?;
    Some(token)
}

/// Checks a scanned frame against the command's token and secret: it must be one of the
/// command's frames, at most `max_age_secs` older than the current one.
pub fn verify_frame(
    frame: &str,
    token: &str,
    secret: &str,
    created_at_ms: i64,
    now_ms: i64,
    max_age_secs: u64,
) -> Result<(), FrameRefusal> {
    let mut parts = frame.split('.');
    let (Some(prefix), Some(frame_token), Some(t), Some(code), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(FrameRefusal::Foreign);
    };
    if prefix != QR_PREFIX || frame_token != token {
        return Err(FrameRefusal::Foreign);
    }
    // One spelling per frame: `t` in decimal without sign or leading zero, the code in 64
    // lowercase hex digits (as the frame function writes them).
    let t = crate::parse_unix_seconds(t).ok_or(FrameRefusal::Forged)? as u64;
    let lowercase_hex = code.len() == 64 && code.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !lowercase_hex {
        return Err(FrameRefusal::Forged);
    }
    let code = hex::decode(code).map_err(|_| FrameRefusal::Forged)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.verify_slice(&code).map_err(|_| FrameRefusal::Forged)?;
    let current = seconds_since(created_at_ms, now_ms);
    if t > current || current - t > max_age_secs {
        return Err(FrameRefusal::Stale);
    }
    Ok(())
}

/// The 4-digit verification code of a challenge `x`: `%04d` of the big-endian integer of the
/// last two bytes of SHA-256(x), mod 10000 (Smart-ID's verification code).
pub fn verification_code(x: &[u8]) -> String {
    let digest = Sha256::digest(x);
    let n = u16::from_be_bytes([digest[30], digest[31]]);
    format!("{:04}", n % 10_000)
}

/// The three numbers a device shows for number matching: `number` (10–99) and two other
/// different 2-digit numbers, in an order. `draws` are random bytes the caller draws (this crate
/// has no RNG): the first picks the decoys, the last the position of the right number.
pub fn number_choices(number: u8, draws: [u8; 3]) -> [u8; 3] {
    debug_assert!((10..=99).contains(&number));
    let next = |from: u8, skip: &[u8]| {
        let mut n = 10 + from % 90;
        while skip.contains(&n) {
            n = if n == 99 { 10 } else { n + 1 };
        }
        n
    };
    let first = next(draws[0], &[number]);
    let second = next(draws[1], &[number, first]);
    let mut choices = [first, second, number];
    choices.swap(2, usize::from(draws[2] % 3));
    choices
}

/// A 2-digit number to match, from a random byte.
pub fn number_to_match(draw: u8) -> u8 {
    10 + draw % 90
}

/// Why a device declines, signed with the rest of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// The user chose not to approve.
    UserDeclined,
    /// The user says they started nothing: someone else is trying to log in as them.
    NotMe,
    /// The number the client showed was not among the device's choices.
    WrongNumber,
    /// The device could not do what was asked (no key, a broken keystore…).
    DeviceError,
}

/// Why a command ended the way it did, when a reason is known: a device's decline reason, or
/// `number_mismatch` when the device chose a number the client did not show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum OutcomeReason {
    UserDeclined,
    NotMe,
    WrongNumber,
    DeviceError,
    NumberMismatch,
}

impl OutcomeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserDeclined => "user_declined",
            Self::NotMe => "not_me",
            Self::WrongNumber => "wrong_number",
            Self::DeviceError => "device_error",
            Self::NumberMismatch => "number_mismatch",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user_declined" => Self::UserDeclined,
            "not_me" => Self::NotMe,
            "wrong_number" => Self::WrongNumber,
            "device_error" => Self::DeviceError,
            "number_mismatch" => Self::NumberMismatch,
            _ => return None,
        })
    }
}

impl From<DeclineReason> for OutcomeReason {
    fn from(r: DeclineReason) -> Self {
        match r {
            DeclineReason::UserDeclined => Self::UserDeclined,
            DeclineReason::NotMe => Self::NotMe,
            DeclineReason::WrongNumber => Self::WrongNumber,
            DeclineReason::DeviceError => Self::DeviceError,
        }
    }
}

/// The longest `binding_message`, in characters.
pub const MAX_BINDING_MESSAGE: usize = 256;

/// Whether a `binding_message` (the text a device shows with the request) may be shown: 1–256
/// characters, no control characters (line breaks included) and none of the invisible ones that
/// reorder or hide what is shown.
pub fn binding_message_ok(text: &str) -> bool {
    let len = text.chars().count();
    (1..=MAX_BINDING_MESSAGE).contains(&len)
        && !text
            .chars()
            .any(|c| c.is_control() || crate::command::is_invisible_format(c))
}

/// A UUID (version 4 layout) from 16 random bytes the caller draws: the form of a QR start token.
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h = hex::encode(bytes);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// BankID's published example of its animated QR code.
    const BANKID_TOKEN: &str = "67df3917-fa0d-44e5-b327-edcc928297f8";
    const BANKID_SECRET: &str = "d28db9a7-4cde-429e-a983-359be676944c";

    #[test]
    fn frames_reproduce_bankids_example() {
        assert_eq!(
            qr_frame("bankid", BANKID_TOKEN, BANKID_SECRET, 0),
            format!("bankid.{BANKID_TOKEN}.0.dc69358e712458a66a7525beef148ae8526b1c71610eff2c16cdffb4cdac9bf8")
        );
        assert_eq!(
            qr_frame("bankid", BANKID_TOKEN, BANKID_SECRET, 1),
            format!("bankid.{BANKID_TOKEN}.1.949d559bf23403952a94d103e67743126381eda00f0b3cbddbf7c96b1adcbce2")
        );
    }

    #[test]
    fn verification_codes_match_smart_ids_examples() {
        assert_eq!(verification_code(&[0x1b, 0xbb]), "4555");
        assert_eq!(verification_code(&Sha256::digest(b"Hello World!")), "7712");
    }

    #[test]
    fn frames_verify_only_fresh_own_and_genuine() {
        let created = 1_000_000;
        let frame = current_qr_frame("tok", "sec", created, created + 3_500);
        assert_eq!(frame_token(&frame), Some("tok"));
        assert_eq!(verify_frame(&frame, "tok", "sec", created, created + 3_999, 2), Ok(()));
        assert_eq!(verify_frame(&frame, "tok", "sec", created, created + 5_000, 2), Ok(()));
        assert_eq!(
            verify_frame(&frame, "tok", "sec", created, created + 6_000, 2),
            Err(FrameRefusal::Stale)
        );
        // From the future: a frame for t = 3 shown at t = 2.
        assert_eq!(
            verify_frame(&frame, "tok", "sec", created, created + 2_000, 2),
            Err(FrameRefusal::Stale)
        );
        assert_eq!(
            verify_frame(&frame, "other", "sec", created, created + 3_500, 2),
            Err(FrameRefusal::Foreign)
        );
        assert_eq!(
            verify_frame(&frame, "tok", "guess", created, created + 3_500, 2),
            Err(FrameRefusal::Forged)
        );
        // The same frame spelt otherwise is not the frame.
        let (head, code) = frame.rsplit_once('.').unwrap();
        let upper = format!("{head}.{}", code.to_uppercase());
        assert_eq!(
            verify_frame(&upper, "tok", "sec", created, created + 3_500, 2),
            Err(FrameRefusal::Forged)
        );
        let padded = frame.replace(".3.", ".03.");
        assert_eq!(
            verify_frame(&padded, "tok", "sec", created, created + 3_500, 2),
            Err(FrameRefusal::Forged)
        );
        let signed = frame.replace(".3.", ".+3.");
        assert_eq!(
            verify_frame(&signed, "tok", "sec", created, created + 3_500, 2),
            Err(FrameRefusal::Forged)
        );
        let bankid = qr_frame("bankid", "tok", "sec", 3);
        assert_eq!(
            verify_frame(&bankid, "tok", "sec", created, created + 3_500, 2),
            Err(FrameRefusal::Foreign)
        );
        for garbage in [
            "",
            "hermod",
            "hermod.tok",
            "hermod.tok.3",
            "hermod.tok.x.00",
            "hermod.tok.3.zz",
            "hermod.tok.3.00.extra",
        ] {
            assert!(
                verify_frame(garbage, "tok", "sec", created, created + 3_500, 2).is_err(),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn binding_messages() {
        assert!(binding_message_ok("Log in to Example Bank: 4 Dec, 10:31"));
        assert!(binding_message_ok(&"é".repeat(MAX_BINDING_MESSAGE)));
        for bad in [
            String::new(),
            "a".repeat(MAX_BINDING_MESSAGE + 1),
            "line\nbreak".into(),
            "tab\there".into(),
            "pay \u{202E}001$".into(),
            "zero\u{200B}width".into(),
            "\u{7f}".into(),
        ] {
            assert!(!binding_message_ok(&bad), "{bad:?}");
        }
    }

    #[test]
    fn uuids_have_the_v4_layout() {
        let u = uuid_v4([0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
    }

    proptest! {
        /// The right number is among the choices exactly once, the three differ, all have two
        /// digits, and the right one can be anywhere.
        #[test]
        fn number_choices_hold_the_number_once(draw in any::<u8>(), draws in any::<[u8; 3]>()) {
            let number = number_to_match(draw);
            prop_assert!((10..=99).contains(&number));
            let choices = number_choices(number, draws);
            prop_assert_eq!(choices.iter().filter(|&&c| c == number).count(), 1);
            prop_assert!(choices[0] != choices[1] && choices[1] != choices[2] && choices[0] != choices[2]);
            prop_assert!(choices.iter().all(|c| (10..=99).contains(c)));
            prop_assert_eq!(choices.iter().position(|&c| c == number), Some(usize::from(draws[2] % 3)));
        }

        /// Every frame verifies within its age and is refused as stale after it.
        #[test]
        fn frames_age_out(t in 0u64..100_000, age in 0u64..20, max_age in 0u64..10) {
            let created = 1_700_000_000_000i64;
            let frame = qr_frame(QR_PREFIX, "tok", "sec", t);
            let now = created + ((t + age) * 1000) as i64 + 999;
            let verdict = verify_frame(&frame, "tok", "sec", created, now, max_age);
            prop_assert_eq!(verdict.is_ok(), age <= max_age);
        }

        /// Every challenge gives four digits.
        #[test]
        fn codes_are_four_digits(x in proptest::collection::vec(any::<u8>(), 0..64)) {
            let code = verification_code(&x);
            prop_assert_eq!(code.len(), 4);
            prop_assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn outcome_reasons_round_trip() {
        for r in [
            OutcomeReason::UserDeclined,
            OutcomeReason::NotMe,
            OutcomeReason::WrongNumber,
            OutcomeReason::DeviceError,
            OutcomeReason::NumberMismatch,
        ] {
            assert_eq!(OutcomeReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
    }
}
