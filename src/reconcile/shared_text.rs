//! Text that many devices report alike — model identifiers ("iPhone15,2"), OS versions
//! ("17.4.1") — kept once for the whole fleet index rather than once per device. A fleet of any
//! size reports a few hundred distinct values; each device's entry points at the shared copy.
//! Besides the bytes, this keeps the fleet index from allocating a small block per device and
//! value whenever facts arrive: such blocks live as long as the device, and allocated in the
//! middle of a rollout's burst they pin the pages the burst frees (BENCHMARKS.md, "Ten profiles
//! per device").
//!
//! Devices choose what they report, so the table is bounded: past `MAX_SHARED` values, or for a
//! value longer than `MAX_SHARED_LEN`, a device keeps its own copy as it did before. Values stay
//! in the table for the life of the process (at most a few hundred kilobytes). Text that is
//! each device's own (a serial number) is set with `set_own`, which likewise leaves a value
//! that did not change as it is.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock};

/// Distinct values the table keeps.
const MAX_SHARED: usize = 4096;

/// Longer values are never shared (model identifiers and OS versions are short).
const MAX_SHARED_LEN: usize = 64;

/// The shared copy of `text`, made if it is the first; a copy of its own when the table is full.
pub fn shared(text: &str) -> Arc<str> {
    static TABLE: OnceLock<Mutex<HashSet<Arc<str>>>> = OnceLock::new();
    let mut table = TABLE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(found) = table.get(text) {
        return found.clone();
    }
    let copy: Arc<str> = text.into();
    if table.len() < MAX_SHARED && text.len() <= MAX_SHARED_LEN {
        table.insert(copy.clone());
    }
    copy
}

/// Sets `field` to the shared copy of `value`, unless it holds that text already.
pub fn set_shared(field: &mut Option<Arc<str>>, value: &str) {
    if field.as_deref() != Some(value) {
        *field = Some(shared(value));
    }
}

/// Sets `field` to a copy of `value` of its own (text no two devices share, a serial number),
/// unless it holds that text already.
pub fn set_own(field: &mut Option<Box<str>>, value: &str) {
    if field.as_deref() != Some(value) {
        *field = Some(value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_text_is_one_allocation_and_long_text_is_not_kept() {
        let first = shared("iPhone15,2-shared-text-test");
        let second = shared(&String::from("iPhone15,2-shared-text-test"));
        assert!(Arc::ptr_eq(&first, &second));
        assert_ne!(&*shared("17.4.1-shared-text-test"), &*first);
        let long = "x".repeat(MAX_SHARED_LEN + 1);
        let (a, b) = (shared(&long), shared(&long));
        assert_eq!(a, b);
        assert!(
            !Arc::ptr_eq(&a, &b),
            "a value past MAX_SHARED_LEN is the device's own"
        );
    }

    #[test]
    fn setting_the_same_text_again_keeps_the_field_as_it_is() {
        let mut field = Some(Arc::<str>::from("18.1-set-shared-test"));
        let before = field.clone().unwrap();
        set_shared(&mut field, "18.1-set-shared-test");
        assert!(Arc::ptr_eq(field.as_ref().unwrap(), &before));
        set_shared(&mut field, "18.2-set-shared-test");
        assert!(Arc::ptr_eq(
            field.as_ref().unwrap(),
            &shared("18.2-set-shared-test")
        ));
    }
}
