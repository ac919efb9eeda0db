//! What a command carries for the person who confirms it, so that a relayed request is caught:
//! the challenge its verification code derives from, its animated QR code's token and secret,
//! the number to match and the choices the device offers, and the text the device shows. Made
//! once when the command is created (from random draws the caller makes), stored with it as
//! JSON, read back by the views.

use hermod_shared::approval::{self as shared, DeclineReason, OutcomeReason};
use hermod_shared::wire::{Decision, DeviceResponse};
use hermod_shared::ErrorCode;
use serde::{Deserialize, Serialize};

use super::command::Refusal;

/// A command's approval material, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// Hex of the 32 random bytes the verification code derives from.
    pub challenge: String,
    pub qr_token: String,
    pub qr_secret: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choices: Option<[u8; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding_message: Option<String>,
}

/// The random bytes a new command's approval material is made of.
#[derive(Debug, Clone, Copy)]
pub struct Draws {
    pub challenge: [u8; 32],
    pub qr_token: [u8; 16],
    pub qr_secret: [u8; 16],
    pub number: u8,
    pub choices: [u8; 3],
}

/// What a create request asks of the approval.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    pub binding_message: Option<String>,
    pub number_matching: bool,
}

/// Checks what a create request asks: a `binding_message` the device can show as it is, and
/// nothing of the kind for a `provision` (its person confirms at enrolment, not in a mailbox).
pub fn asked(
    provision: bool,
    binding_message: Option<String>,
    number_matching: Option<bool>,
) -> Result<Asked, Refusal> {
    if let Some(text) = &binding_message {
        if !shared::binding_message_ok(text) {
            return Err(Refusal::new(
                ErrorCode::InvalidRequest,
                "binding_message must be 1-256 characters without control, invisible or bidi formatting characters",
            ));
        }
    }
    let number_matching = number_matching.unwrap_or(false);
    if provision && (binding_message.is_some() || number_matching) {
        return Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "binding_message and number_matching are for commands a device answers, not provision",
        ));
    }
    Ok(Asked {
        binding_message,
        number_matching,
    })
}

impl Approval {
    pub fn new(asked: Asked, draws: Draws) -> Self {
        let number = asked.number_matching.then(|| shared::number_to_match(draws.number));
        Self {
            challenge: hex::encode(draws.challenge),
            qr_token: shared::uuid_v4(draws.qr_token),
            qr_secret: shared::uuid_v4(draws.qr_secret),
            number,
            choices: number.map(|n| shared::number_choices(n, draws.choices)),
            binding_message: asked.binding_message,
        }
    }

    pub fn verification_code(&self) -> String {
        shared::verification_code(&hex::decode(&self.challenge).unwrap_or_default())
    }
}

/// What a claim's frame that does not verify answers.
pub fn frame_refused(refusal: shared::FrameRefusal) -> Refusal {
    match refusal {
        shared::FrameRefusal::Foreign | shared::FrameRefusal::Forged => ErrorCode::InvalidQrFrame.into(),
        shared::FrameRefusal::Stale => ErrorCode::QrFrameStale.into(),
    }
}

/// How a device's answer ends a command: its status and, where known, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub decision: Decision,
    pub reason: Option<OutcomeReason>,
}

/// Judges what a device's answer says against the command's number to match (`None`: no
/// number matching). A decline carries a reason (`user_declined` when none is given); an approval
/// carries none, and for number matching the number the user picked: the wrong one declines the
/// command with `number_mismatch`.
pub fn outcome(number: Option<u8>, response: &DeviceResponse) -> Result<Outcome, Refusal> {
    match response.result {
        Decision::Declined => Ok(Outcome {
            decision: Decision::Declined,
            reason: Some(response.reason.unwrap_or(DeclineReason::UserDeclined).into()),
        }),
        Decision::Approved => {
            if response.reason.is_some() {
                return Err(Refusal::new(
                    ErrorCode::InvalidRequest,
                    "reason is given only with declined",
                ));
            }
            match (number, response.number) {
                (None, None) => Ok(Outcome {
                    decision: Decision::Approved,
                    reason: None,
                }),
                (None, Some(_)) => Err(Refusal::new(
                    ErrorCode::InvalidRequest,
                    "number is only for a command with number matching",
                )),
                (Some(_), None) => Err(Refusal::new(
                    ErrorCode::InvalidRequest,
                    "number is required: the one the user picked among number_choices",
                )),
                (Some(expected), Some(picked)) if expected == picked => Ok(Outcome {
                    decision: Decision::Approved,
                    reason: None,
                }),
                (Some(_), Some(_)) => Ok(Outcome {
                    decision: Decision::Declined,
                    reason: Some(OutcomeReason::NumberMismatch),
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn draws(seed: u8) -> Draws {
        Draws {
            challenge: [seed; 32],
            qr_token: [seed; 16],
            qr_secret: [seed.wrapping_add(1); 16],
            number: seed,
            choices: [seed, seed.wrapping_mul(7), seed.wrapping_add(2)],
        }
    }

    fn response(result: Decision, reason: Option<DeclineReason>, number: Option<u8>) -> DeviceResponse {
        DeviceResponse {
            result,
            reason,
            number,
            data: None,
        }
    }

    #[test]
    fn binding_messages_are_checked_and_provision_takes_none() {
        assert!(asked(false, Some("Log in to Example".into()), Some(true)).is_ok());
        let bad = asked(false, Some("a\u{202E}b".into()), None).unwrap_err();
        assert_eq!(bad.code, ErrorCode::InvalidRequest);
        assert!(bad.detail.unwrap().contains("binding_message"));
        assert!(asked(true, Some("x".into()), None).is_err());
        assert!(asked(true, None, Some(true)).is_err());
        assert_eq!(asked(true, None, Some(false)), Ok(Asked::default()));
    }

    #[test]
    fn material_round_trips_as_json_and_shows_its_number_among_the_choices() {
        let a = Approval::new(
            Asked {
                binding_message: Some("hi".into()),
                number_matching: true,
            },
            draws(42),
        );
        let n = a.number.unwrap();
        assert!(a.choices.unwrap().contains(&n));
        assert_eq!(a.verification_code().len(), 4);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<Approval>(&json).unwrap(), a);
        let plain = Approval::new(Asked::default(), draws(1));
        assert_eq!((plain.number, plain.choices), (None, None));
        assert_ne!(plain.qr_token, plain.qr_secret);
    }

    #[test]
    fn answers_carry_their_reasons() {
        let declined = outcome(None, &response(Decision::Declined, None, None)).unwrap();
        assert_eq!(declined.reason, Some(OutcomeReason::UserDeclined));
        for r in [
            DeclineReason::UserDeclined,
            DeclineReason::NotMe,
            DeclineReason::WrongNumber,
            DeclineReason::DeviceError,
        ] {
            let o = outcome(Some(12), &response(Decision::Declined, Some(r), None)).unwrap();
            assert_eq!(
                o,
                Outcome {
                    decision: Decision::Declined,
                    reason: Some(r.into())
                }
            );
        }
        assert!(outcome(None, &response(Decision::Approved, Some(DeclineReason::NotMe), None)).is_err());
        assert!(outcome(None, &response(Decision::Approved, None, Some(12))).is_err());
        assert!(outcome(Some(12), &response(Decision::Approved, None, None)).is_err());
    }

    proptest! {
        /// With number matching, only the right number approves; any other declines with
        /// `number_mismatch`.
        #[test]
        fn only_the_right_number_approves(expected in 10u8..=99, picked in 0u8..=255) {
            let o = outcome(Some(expected), &response(Decision::Approved, None, Some(picked))).unwrap();
            if picked == expected {
                prop_assert_eq!(o, Outcome { decision: Decision::Approved, reason: None });
            } else {
                prop_assert_eq!(o, Outcome { decision: Decision::Declined, reason: Some(OutcomeReason::NumberMismatch) });
            }
        }
    }
}
