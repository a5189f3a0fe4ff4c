//! Declared intent: the policy model (`mdm.pomona.dev/v1alpha1` documents that are both YAML in
//! a policy directory or git and Kubernetes custom resources), its validation, and the sources
//! that turn documents into an immutable, validated `PolicySnapshot`. Nothing here talks to
//! devices or the store, and nothing here imports the reconciler: a source (`dir_source`, `git`;
//! the Kubernetes one lives in `controller`) publishes what it finds on a `feed::PolicyFeed`, and
//! files a policy names are read through `files::PolicyFiles`.

pub mod actions;
pub mod confined;
pub mod crd;
pub mod dir_source;
pub mod feed;
pub mod field_lines;
pub mod files;
pub mod git;
pub mod git_signature;
pub mod load;
pub mod model;
pub mod payload_schema;
pub mod restrictions;
pub mod selector;
pub mod snapshot;
pub mod source;
