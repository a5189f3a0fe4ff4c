//! From declared to reported: desired-state resolution and the pure planner (`plan.rs`). The
//! driver that runs plans against the store and wakes devices arrives with the rest of the
//! reconciler issue. Nothing here parses HTTP.

pub mod driver;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod preview;
pub mod reported;
