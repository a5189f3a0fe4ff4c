//! The wall clock, read in one place. Everything that stores or compares times uses Unix
//! milliseconds as an `i64`; code below the driver takes `now` as an argument rather than
//! reading the clock, so that it stays testable.

/// Current time in Unix milliseconds (0 if the system clock is before 1970).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
