//! The wall clock. The core takes `now` as an argument; this is where it comes from.

use twinhub_core::Timestamp;

/// The current time.
pub fn now() -> Timestamp {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_unix_nanos(nanos)
}
