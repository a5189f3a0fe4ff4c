//! How a policy source hands on what it finds: a channel of `PolicyUpdate`s, in the order the
//! source observed them. A source (directory, git, Kubernetes) only sends; whoever applies policy
//! (the reconciler) owns the receiving end, so no source knows its consumer and the sources can
//! be run, and tested, with nothing but a receiver.

use super::snapshot::PolicySnapshot;
use tokio::sync::mpsc;

/// One thing a policy source observed.
#[derive(Debug)]
pub enum PolicyUpdate {
    /// The source started; `description` names it (`git <url> <branch> <path>`, `dir <path>`).
    Started { description: String },
    /// A fetch from a remote source succeeded at `at` (Unix ms).
    FetchSucceeded { at: i64 },
    /// A fetch failed; the last good revision keeps serving.
    FetchFailed { error: String },
    /// A new valid revision: its snapshot is the policy from now on. `commit` is the full SHA
    /// when the source is git.
    Applied {
        snapshot: Box<PolicySnapshot>,
        commit: Option<String>,
    },
    /// A change that does not validate, with its problems; the previous revision keeps serving
    /// (or, before any, nothing is planned). `commit` is the refused SHA when the source is git.
    Refused {
        problems: Vec<String>,
        commit: Option<String>,
    },
}

/// The sending end a source publishes on. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PolicyFeed(mpsc::UnboundedSender<PolicyUpdate>);

impl PolicyFeed {
    /// A feed and the receiver its updates arrive on. Unbounded because sources publish rarely
    /// (on a change) and must never wait on whoever applies policy.
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<PolicyUpdate>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self(sender), receiver)
    }

    /// Publishes an update. When the receiver is gone the server is shutting down and nothing
    /// applies policy any more, so the update is dropped.
    pub fn send(&self, update: PolicyUpdate) {
        let _ = self.0.send(update);
    }
}
