//! The command state machine, as pure rules: what a command's status is at a moment, whom it
//! is for, and what each event (a device's answer, a cancellation, the timeout) does to it. The
//! store applies a verdict in one transaction together with the callback and mailbox rows it
//! owes; nothing here reads a clock, a database or a request.
//!
//! ```text
//! pending ──fetched──▶ delivered ──device answers──▶ approved | declined
//!    │                     │
//!    ├──────client─────────┴──▶ cancelled
//!    └──────timeout────────────▶ expired          (all leave history at lifespan end)
//! ```
//! Every path ends in exactly one final state, and each final state owes exactly one callback.

use hermod_shared::wire::Decision;
use hermod_shared::{CommandStatus, CommandType, DeviceId, ErrorCode, UserId};
use serde_json::Value;

/// A request the rules refuse: a stable code and, where it helps, what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub detail: Option<&'static str>,
}

impl Refusal {
    pub fn new(code: ErrorCode, detail: &'static str) -> Self {
        Self {
            code,
            detail: Some(detail),
        }
    }
}

impl From<ErrorCode> for Refusal {
    fn from(code: ErrorCode) -> Self {
        Self { code, detail: None }
    }
}

/// The status as of `now`: an open command past its timeout is expired even before the sweeper
/// has written so.
pub fn status_at(stored: CommandStatus, timeout_at: i64, now: i64) -> CommandStatus {
    if !stored.is_final() && now >= timeout_at {
        CommandStatus::Expired
    } else {
        stored
    }
}

/// Whose mailbox a new command goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// One device (its user is looked up).
    Device(DeviceId),
    /// Every device of a user; for `provision`, the user a new device is enrolled for.
    User(UserId),
    /// Nobody yet: the first device of the group that scans a current frame of the command's
    /// QR code claims it ("log in on another device").
    Claimable,
}

/// Checks whom a create request names: at most one of a device and a user (neither: the command
/// is claimed by QR code), and a user for a `provision` (it enrols a device that does not exist
/// yet).
pub fn recipient(
    command_type: &CommandType,
    device_id: Option<&DeviceId>,
    user_id: Option<&UserId>,
) -> Result<Recipient, Refusal> {
    let provision = *command_type == CommandType::Provision;
    match (device_id, user_id) {
        (Some(_), Some(_)) => Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "give device_id or user_id, not both",
        )),
        (None, None) if provision => Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "a provision command takes user_id: it enrols a device for that user",
        )),
        (None, None) => Ok(Recipient::Claimable),
        (Some(_), None) if provision => Err(Refusal::new(
            ErrorCode::InvalidRequest,
            "a provision command takes user_id: it enrols a new device",
        )),
        (Some(d), None) => Ok(Recipient::Device(d.clone())),
        (None, Some(u)) => Ok(Recipient::User(u.clone())),
    }
}

/// A command's payload: a JSON object, `{}` when none is given.
pub fn payload(given: Option<Value>) -> Result<Value, Refusal> {
    match given {
        None => Ok(Value::Object(Default::default())),
        Some(p @ Value::Object(_)) => Ok(p),
        Some(_) => Err(Refusal::new(ErrorCode::InvalidRequest, "payload must be a JSON object")),
    }
}

/// What the rules need to know of a stored command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts<'a> {
    pub provision: bool,
    pub device_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub status: CommandStatus,
    pub timeout_at: i64,
    pub answered_by: Option<&'a str>,
    pub response_hash: Option<&'a str>,
}

/// Whether a command is in this device's mailbox: addressed to it, or to its user. A
/// `provision` is in nobody's: it is answered by enrolling.
pub fn addressed_to(command: &Facts<'_>, device_id: &str, device_user: &str) -> bool {
    !command.provision
        && match command.device_id {
            Some(d) => d == device_id,
            None => command.user_id == Some(device_user),
        }
}

/// What a device's answer does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The command ends in this state (and owes its callback).
    Final(CommandStatus),
    /// The same device sent the same answer again: it gets the same reply, nothing changes.
    Replay,
}

/// Judges a device's answer (`body_hash` identifies the answer) at `now`. The first valid
/// answer wins; a different one later is refused.
pub fn answer(
    command: &Facts<'_>,
    device_id: &str,
    device_user: &str,
    decision: Decision,
    body_hash: &str,
    now: i64,
) -> Result<Answer, Refusal> {
    if !addressed_to(command, device_id, device_user) {
        return Err(ErrorCode::NotAddressedToDevice.into());
    }
    match status_at(command.status, command.timeout_at, now) {
        CommandStatus::Approved | CommandStatus::Declined => {
            let same = command.answered_by == Some(device_id) && command.response_hash == Some(body_hash);
            if same {
                Ok(Answer::Replay)
            } else {
                Err(ErrorCode::AlreadyAnswered.into())
            }
        }
        CommandStatus::Cancelled => Err(ErrorCode::CommandCancelled.into()),
        CommandStatus::Expired => Err(ErrorCode::CommandExpired.into()),
        CommandStatus::Pending | CommandStatus::Delivered => Ok(Answer::Final(match decision {
            Decision::Approved => CommandStatus::Approved,
            Decision::Declined => CommandStatus::Declined,
        })),
    }
}

/// What a device's claim of a command created for nobody does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The command becomes the device's (and its user's), delivered to it.
    Claim,
    /// The same device claimed it already: the same answer again, nothing changes.
    Replay,
}

/// Judges a claim at `now` by a device, once its frame verified: only an open command for
/// nobody can be claimed, once.
pub fn claim(command: &Facts<'_>, device_id: &str, now: i64) -> Result<Claim, Refusal> {
    match status_at(command.status, command.timeout_at, now) {
        CommandStatus::Expired => return Err(ErrorCode::CommandExpired.into()),
        CommandStatus::Cancelled => return Err(ErrorCode::CommandCancelled.into()),
        CommandStatus::Approved | CommandStatus::Declined if command.device_id.is_none() => {
            return Err(ErrorCode::AlreadyAnswered.into())
        }
        _ => {}
    }
    match command.device_id {
        None => Ok(Claim::Claim),
        Some(d) if d == device_id => Ok(Claim::Replay),
        Some(_) => Err(ErrorCode::AlreadyClaimed.into()),
    }
}

/// What a client's cancellation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// The command ends cancelled (and owes its callback; its devices see it withdrawn).
    Cancel,
    /// It was cancelled already: the same answer again, nothing changes.
    Replay,
}

pub fn cancel(status: CommandStatus, timeout_at: i64, now: i64) -> Result<Cancel, Refusal> {
    match status_at(status, timeout_at, now) {
        CommandStatus::Pending | CommandStatus::Delivered => Ok(Cancel::Cancel),
        CommandStatus::Cancelled => Ok(Cancel::Replay),
        CommandStatus::Expired => Err(ErrorCode::CommandExpired.into()),
        CommandStatus::Approved | CommandStatus::Declined => Err(ErrorCode::AlreadyAnswered.into()),
    }
}

/// Whether the sweeper ends the command as expired at `now` (owing its callback).
pub fn expires(status: CommandStatus, timeout_at: i64, now: i64) -> bool {
    !status.is_final() && now >= timeout_at
}

/// The longest a `provision` command (and so its enrolment token) may stay open: 72 hours. A
/// link sent by e-mail must survive a weekend's wait, not a month's.
pub const MAX_ENROLMENT_TIMEOUT: u32 = 72 * 3600;

/// Whether an enrolment may use this command's token at `now`: an open `provision`.
pub fn enrols(command: &Facts<'_>, now: i64) -> bool {
    command.provision && !status_at(command.status, command.timeout_at, now).is_final()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A command as the store would hold it, driven through the rules.
    #[derive(Debug, Clone)]
    struct Model {
        status: CommandStatus,
        timeout_at: i64,
        answered_by: Option<String>,
        response_hash: Option<String>,
        /// Final states the command has entered (each owes one callback).
        finals: Vec<CommandStatus>,
    }

    #[derive(Debug, Clone)]
    enum Event {
        Fetch,
        Answer { device: usize, approve: bool, body: u8 },
        Cancel,
        Sweep,
        Wait(i64),
    }

    const DEVICES: [&str; 3] = ["dev_a", "dev_b", "dev_other"];

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            Just(Event::Fetch),
            (0..3usize, any::<bool>(), 0..3u8).prop_map(|(device, approve, body)| Event::Answer {
                device,
                approve,
                body
            }),
            Just(Event::Cancel),
            Just(Event::Sweep),
            (0..40_000i64).prop_map(Event::Wait),
        ]
    }

    impl Model {
        fn facts(&self) -> Facts<'_> {
            Facts {
                provision: false,
                device_id: None,
                user_id: Some("alice"),
                status: self.status,
                timeout_at: self.timeout_at,
                answered_by: self.answered_by.as_deref(),
                response_hash: self.response_hash.as_deref(),
            }
        }

        fn end(&mut self, status: CommandStatus) {
            assert!(!self.status.is_final(), "a final state changed");
            self.status = status;
            self.finals.push(status);
        }

        fn apply(&mut self, event: &Event, now: &mut i64) {
            match *event {
                Event::Wait(ms) => *now += ms,
                Event::Fetch => {
                    if status_at(self.status, self.timeout_at, *now) == CommandStatus::Pending {
                        self.status = CommandStatus::Delivered;
                    }
                }
                Event::Answer { device, approve, body } => {
                    let decision = if approve {
                        Decision::Approved
                    } else {
                        Decision::Declined
                    };
                    let user = if device == 2 { "mallory" } else { "alice" };
                    let hash = format!("{approve}{body}");
                    let verdict = answer(&self.facts(), DEVICES[device], user, decision, &hash, *now);
                    if let Ok(Answer::Final(status)) = verdict {
                        self.end(status);
                        self.answered_by = Some(DEVICES[device].to_owned());
                        self.response_hash = Some(hash);
                    }
                }
                Event::Cancel => {
                    if cancel(self.status, self.timeout_at, *now) == Ok(Cancel::Cancel) {
                        self.end(CommandStatus::Cancelled);
                    }
                }
                Event::Sweep => {
                    if expires(self.status, self.timeout_at, *now) {
                        self.end(CommandStatus::Expired);
                    }
                }
            }
        }
    }

    proptest! {
        /// Whatever happens, a command enters at most one final state, never leaves it, and
        /// once its timeout has passed and the sweeper ran it has entered exactly one: every
        /// command owes exactly one callback.
        #[test]
        fn every_command_ends_once_and_stays_ended(
            events in proptest::collection::vec(event(), 0..40),
            timeout in 1..60_000i64,
        ) {
            let mut now = 0;
            let mut m = Model { status: CommandStatus::Pending, timeout_at: timeout, answered_by: None, response_hash: None, finals: vec![] };
            for e in &events {
                let before = m.status;
                m.apply(e, &mut now);
                if before.is_final() {
                    prop_assert_eq!(m.status, before);
                }
                prop_assert!(m.finals.len() <= 1);
            }
            now = now.max(timeout);
            m.apply(&Event::Sweep, &mut now);
            prop_assert_eq!(m.finals.len(), 1);
            prop_assert_eq!(status_at(m.status, m.timeout_at, now), m.finals[0]);
        }

        /// The status as of a moment only moves forward in time: once expired (or final), it
        /// stays so at every later moment.
        #[test]
        fn status_at_is_final_for_good(timeout in -1_000..1_000i64, t1 in -2_000..2_000i64, dt in 0..5_000i64) {
            for stored in [CommandStatus::Pending, CommandStatus::Delivered, CommandStatus::Approved, CommandStatus::Cancelled] {
                let early = status_at(stored, timeout, t1);
                let late = status_at(stored, timeout, t1 + dt);
                if early.is_final() {
                    prop_assert_eq!(early, late);
                }
                prop_assert_eq!(early == CommandStatus::Expired, !stored.is_final() && t1 >= timeout);
            }
        }

        /// An answer repeated by the device that gave it is a replay; any other later answer is
        /// refused, and no answer is accepted after the timeout.
        #[test]
        fn the_first_valid_answer_wins(first in 0..2usize, second in 0..2usize, same_body in any::<bool>(), late in any::<bool>()) {
            let mut m = Model { status: CommandStatus::Delivered, timeout_at: 1_000, answered_by: None, response_hash: None, finals: vec![] };
            let mut now = if late { 1_000 } else { 10 };
            m.apply(&Event::Answer { device: first, approve: true, body: 0 }, &mut now);
            if late {
                prop_assert!(m.finals.is_empty());
                return Ok(());
            }
            prop_assert_eq!(&m.finals, &vec![CommandStatus::Approved]);
            let body = if same_body { 0 } else { 1 };
            let again = answer(&m.facts(), DEVICES[second], "alice", Decision::Approved, &format!("true{body}"), now);
            if first == second && same_body {
                prop_assert_eq!(again, Ok(Answer::Replay));
            } else {
                prop_assert_eq!(again, Err(Refusal::from(ErrorCode::AlreadyAnswered)));
            }
        }
    }

    #[test]
    fn a_device_of_another_user_or_a_provision_is_not_addressed() {
        let mut facts = Facts {
            provision: false,
            device_id: None,
            user_id: Some("alice"),
            status: CommandStatus::Pending,
            timeout_at: 10,
            answered_by: None,
            response_hash: None,
        };
        assert!(addressed_to(&facts, "d1", "alice"));
        assert!(!addressed_to(&facts, "d1", "bob"));
        facts.device_id = Some("d2");
        assert!(!addressed_to(&facts, "d1", "alice"));
        assert!(addressed_to(&facts, "d2", "alice"));
        facts.provision = true;
        assert!(!addressed_to(&facts, "d2", "alice"));
        assert!(enrols(&facts, 5));
        assert!(!enrols(&facts, 10));
    }

    #[test]
    fn a_command_for_nobody_is_claimed_once() {
        let mut facts = Facts {
            provision: false,
            device_id: None,
            user_id: None,
            status: CommandStatus::Pending,
            timeout_at: 10,
            answered_by: None,
            response_hash: None,
        };
        assert_eq!(claim(&facts, "d1", 5), Ok(Claim::Claim));
        assert_eq!(claim(&facts, "d1", 10), Err(Refusal::from(ErrorCode::CommandExpired)));
        facts.device_id = Some("d1");
        facts.user_id = Some("alice");
        facts.status = CommandStatus::Delivered;
        assert_eq!(claim(&facts, "d1", 5), Ok(Claim::Replay));
        assert_eq!(claim(&facts, "d2", 5), Err(Refusal::from(ErrorCode::AlreadyClaimed)));
        facts.status = CommandStatus::Approved;
        assert_eq!(claim(&facts, "d2", 5), Err(Refusal::from(ErrorCode::AlreadyClaimed)));
        facts.status = CommandStatus::Cancelled;
        assert_eq!(claim(&facts, "d1", 5), Err(Refusal::from(ErrorCode::CommandCancelled)));
    }

    #[test]
    fn create_requests_name_exactly_one_recipient() {
        let d = DeviceId::from_random([1; 16]);
        let u = UserId::parse("alice").unwrap();
        let ping = CommandType::Ping;
        assert_eq!(recipient(&ping, Some(&d), None), Ok(Recipient::Device(d.clone())));
        assert_eq!(recipient(&ping, None, Some(&u)), Ok(Recipient::User(u.clone())));
        assert!(recipient(&ping, Some(&d), Some(&u)).is_err());
        assert_eq!(recipient(&ping, None, None), Ok(Recipient::Claimable));
        assert!(recipient(&CommandType::Provision, None, None).is_err());
        assert!(recipient(&CommandType::Provision, Some(&d), None).is_err());
        assert_eq!(payload(None).unwrap(), serde_json::json!({}));
        assert!(payload(Some(serde_json::json!([1]))).is_err());
    }
}
