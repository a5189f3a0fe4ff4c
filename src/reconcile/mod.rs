//! From declared to reported: the pure planner (`plan.rs`), the group membership index
//! (`membership.rs`), what devices report (`reported.rs`, its common text kept once in `shared_text.rs`) and folding command results into it (`fold.rs`), the driver that runs plans against
//! the store and wakes devices (`driver.rs`), its keyed work queue (`work_queue.rs`) and fleet index (`fleet.rs`), device actions (`actions.rs`, run by
//! `action_runner.rs`), why a reconcile failed and when to retry (`outcome.rs`), and previews of a candidate policy
//! (`preview.rs`). Nothing here parses HTTP.

pub mod action_runner;
pub mod actions;
mod by_id;
pub mod driver;
mod fleet;
pub mod fold;
pub mod membership;
pub mod outcome;
pub mod plan;
#[cfg(test)]
mod plan_tests;
pub mod preview;
pub mod reported;
pub mod shared_text;
mod work_queue;
