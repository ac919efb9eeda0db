//! The answer to a rate or quota check, and its `RateLimit-*` headers (IETF draft
//! `draft-ietf-httpapi-ratelimit-headers`), the same at the edge and at the backend.

/// Whether a request may go on, and what the caller is told about its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset_secs: i64,
}

impl RateDecision {
    /// `RateLimit-Limit`, `-Remaining`, `-Reset`, `-Policy`, and `Retry-After` when refused.
    pub fn headers(&self, window_secs: u32) -> Vec<(String, String)> {
        let mut h = vec![
            ("ratelimit-limit".to_owned(), self.limit.to_string()),
            ("ratelimit-remaining".to_owned(), self.remaining.to_string()),
            ("ratelimit-reset".to_owned(), self.reset_secs.to_string()),
            ("ratelimit-policy".to_owned(), format!("{};w={window_secs}", self.limit)),
        ];
        if !self.allowed {
            h.push(("retry-after".to_owned(), self.reset_secs.to_string()));
        }
        h
    }
}
