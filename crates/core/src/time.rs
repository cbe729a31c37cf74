//! Timestamps in IoT Hub's wire format.
//!
//! IoT Hub writes UTC times with seven fractional digits (`2022-12-26T00:45:18.8536385Z`)
//! and "never" as `0001-01-01T00:00:00Z`. Twinhub keeps nanoseconds since the Unix
//! epoch and formats on the way out.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A UTC instant, nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

/// How IoT Hub writes "never happened".
pub const NEVER: &str = "0001-01-01T00:00:00Z";

impl Timestamp {
    /// The instant `nanos` nanoseconds after the Unix epoch.
    pub fn from_unix_nanos(nanos: i64) -> Self {
        Self(nanos)
    }

    /// The instant `secs` seconds after the Unix epoch.
    pub fn from_unix_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1_000_000_000))
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down).
    pub fn unix_secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    /// The instant as IoT Hub writes it: `YYYY-MM-DDTHH:MM:SS.fffffffZ`.
    pub fn to_iso(self) -> String {
        self.to_string()
    }

    /// Formats an optional instant, writing `None` as IoT Hub's "never".
    pub fn iso_or_never(t: Option<Self>) -> String {
        t.map_or_else(|| NEVER.to_owned(), Self::to_iso)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = ::time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0))
            .unwrap_or(::time::OffsetDateTime::UNIX_EPOCH);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:07}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.nanosecond() / 100
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_seven_fraction_digits() {
        let t = Timestamp::from_unix_nanos(1_672_015_518_853_638_512);
        assert_eq!(t.to_iso(), "2022-12-26T00:45:18.8536385Z");
        assert_eq!(
            Timestamp::from_unix_secs(0).to_iso(),
            "1970-01-01T00:00:00.0000000Z"
        );
        assert_eq!(Timestamp::iso_or_never(None), NEVER);
    }
}
