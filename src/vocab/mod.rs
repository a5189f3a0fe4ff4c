//! The shared vocabulary: the few words every layer of Pomona speaks — the clock, small file
//! helpers, device actions, and the persisted states that the store writes and the planner reads.
//!
//! It sits at the bottom of the crate, next to `protocol` and `pki`, so that `store`, `policy`,
//! `reconcile` and everything above them can share these types without importing each other
//! (see the layer table in `tests/dependency_direction.rs`).
//!
//! It must not import any other module of this crate, do network or database I/O, or hold
//! behaviour beyond what its types need to name themselves (parse, print). A type moves here
//! only when two layers that must not know each other both need it; if it belongs to one
//! layer, it stays there.

pub mod actions;
pub mod clock;
pub mod facts;
pub mod fs;
pub mod persisted;
pub mod profiles;
