//! Why a reconcile failed and when to try again: one classification for the device driver and
//! the custom resource status writer. A dependency that is down (the database, the Kubernetes
//! API server) is `Transient` and retried with a growing delay; something we wait for names
//! its own delay; an invalid declared object is not retried until it changes; anything else is
//! `Stalled`, retried slowly and logged as an error.

use crate::store::StoreError;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// A dependency is unreachable or busy; nothing is wrong with what was declared.
    #[error("{0}")]
    Transient(String),
    /// Waiting for something outside our control, to be looked at again after `retry_after`.
    #[error("waiting: {reason}")]
    Waiting {
        reason: String,
        retry_after: Duration,
    },
    /// A declared object is invalid: nothing changes until it is edited.
    #[error("invalid: {}", problems.join("; "))]
    Invalid { problems: Vec<String> },
    /// A state this build cannot handle (a bug, an unknown value in the database).
    #[error("{0}")]
    Stalled(String),
}

/// The first retry of a transient failure; each failure in a row doubles it, up to
/// `MAX_BACKOFF`.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl ReconcileError {
    /// When to try again after the `failures`-th failure in a row (1 for the first): None
    /// when only a change of the declared object can help.
    pub fn retry_after(&self, failures: u32) -> Option<Duration> {
        match self {
            Self::Transient(_) => {
                let doublings = failures.saturating_sub(1).min(16);
                Some((FIRST_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF))
            }
            Self::Waiting { retry_after, .. } => Some(*retry_after),
            Self::Invalid { .. } => None,
            Self::Stalled(_) => Some(MAX_BACKOFF),
        }
    }

    /// Whether an operator should look at it (logged as an error rather than a warning).
    pub fn needs_attention(&self) -> bool {
        matches!(self, Self::Stalled(_))
    }
}

impl From<StoreError> for ReconcileError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => Self::Transient(e.to_string()),
            StoreError::NotFound(_) | StoreError::Conflict(_) | StoreError::Database(_) => {
                Self::Stalled(e.to_string())
            }
        }
    }
}

/// Errors that crossed `anyhow` on their way up keep their class: a store error inside is
/// classified as such, anything else is stalled. (The controller classifies Kubernetes API
/// errors before falling back on this.)
impl From<anyhow::Error> for ReconcileError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast_ref::<StoreError>() {
            Some(store) => store.clone().into(),
            None => Self::Stalled(format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_is_retried_as_it_deserves() {
        let transient = ReconcileError::Transient("database unavailable".into());
        let delays: Vec<_> = (1..=8)
            .map(|n| transient.retry_after(n).unwrap().as_secs())
            .collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        let waiting = ReconcileError::Waiting {
            reason: "IsSupervised".into(),
            retry_after: Duration::from_secs(30),
        };
        assert_eq!(waiting.retry_after(7), Some(Duration::from_secs(30)));
        let invalid = ReconcileError::Invalid {
            problems: vec!["DeviceGroup \"everyon\" is not declared".into()],
        };
        assert_eq!(invalid.retry_after(1), None, "only an edit helps");
        let stalled = ReconcileError::Stalled("unknown profile state".into());
        assert_eq!(stalled.retry_after(1), Some(MAX_BACKOFF));
        assert!(stalled.needs_attention() && !transient.needs_attention());
    }

    #[test]
    fn store_errors_keep_their_class_through_anyhow() {
        let down = anyhow::Error::new(StoreError::Unavailable("pool timed out".into()))
            .context("reading the reconcile view");
        assert!(matches!(
            ReconcileError::from(down),
            ReconcileError::Transient(_)
        ));
        let broken = anyhow::Error::new(StoreError::Database("no such column".into()));
        assert!(matches!(
            ReconcileError::from(broken),
            ReconcileError::Stalled(_)
        ));
        assert!(matches!(
            ReconcileError::from(anyhow::anyhow!("plan bug")),
            ReconcileError::Stalled(_)
        ));
    }
}
