//! From declared to reported: the pure planner (`plan.rs`), the group membership index
//! (`membership.rs`), what devices report (`reported.rs`), the driver that runs plans against
//! the store and wakes devices (`driver.rs`), device actions (`actions.rs`, run by
//! `action_runner.rs`), and previews of a candidate policy
//! (`preview.rs`). Nothing here parses HTTP.

pub mod action_runner;
pub mod actions;
pub mod driver;
pub mod membership;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod preview;
pub mod reported;
