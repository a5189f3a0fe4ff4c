//! Declared intent: the policy model (`mdm.pomona.dev/v1alpha1` documents that are both YAML in
//! a policy directory or git and Kubernetes custom resources), its validation, and the sources
//! that turn documents into an immutable, validated `PolicySnapshot`. Nothing here talks to
//! devices or the store, and nothing here imports the reconciler: a source publishes what it
//! finds through `source::PolicySink`, which the reconciler implements.

pub mod actions;
pub mod confined;
pub mod crd;
pub mod git;
pub mod git_signature;
pub mod load;
pub mod model;
pub mod payload_schema;
pub mod restrictions;
pub mod selector;
pub mod snapshot;
pub mod source;
