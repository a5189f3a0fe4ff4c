//! Reading back the enum values the store writes as text (states, statuses, kinds). An unknown
//! value — written by a newer replica in the middle of an upgrade, or by hand — is an error that
//! names the column and the value, never a silent fall-back to some other state: read as
//! `pending` or `queued`, it would make the planner act on a state nobody wrote.

/// A persisted value this build does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    /// What the value is (`profile state`, `command status`, …).
    pub what: &'static str,
    pub value: String,
}

impl UnknownValue {
    pub fn new(what: &'static str, value: &str) -> Self {
        Self {
            what,
            value: value.to_string(),
        }
    }
}

impl std::fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown {} {:?} in the database (written by a newer Pomona?): not guessing what it means",
            self.what, self.value
        )
    }
}

impl std::error::Error for UnknownValue {}
