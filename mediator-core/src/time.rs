//! Wall-clock instants as the registry stores them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, UTC.
///
/// Leases, eviction and selection take a `Timestamp` as an argument instead
/// of reading the clock, so tests drive a simulated clock without sleeping.
///
/// ```
/// use mediator_core::Timestamp;
/// use std::time::Duration;
/// let t = Timestamp::from_millis(1_000);
/// assert_eq!(t + Duration::from_secs(2), Timestamp::from_millis(3_000));
/// assert_eq!(Timestamp::from_millis(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_millis(millis: i64) -> Self {
        Timestamp(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (rounded down).
    pub const fn as_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The time left until `later`, or zero when it has passed.
    pub fn until(self, later: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(later.0.saturating_sub(self.0)).unwrap_or(0))
    }

    /// RFC 3339 in UTC with milliseconds, as the original's JSON shows dates.
    ///
    /// A time outside the years 1 to 9999, which RFC 3339 cannot write, is
    /// given as its milliseconds since the epoch instead.
    pub fn to_rfc3339(self) -> String {
        const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000)
            .ok()
            .and_then(|at| at.format(FORMAT).ok())
            .unwrap_or_else(|| self.0.to_string())
    }

    /// Reads an RFC 3339 time, such as [`to_rfc3339`](Self::to_rfc3339)
    /// writes; any offset is taken, and precision past the millisecond is
    /// dropped. `None` for anything else.
    ///
    /// ```
    /// use mediator_core::Timestamp;
    /// let t = Timestamp::from_millis(1_700_000_123_456);
    /// assert_eq!(Timestamp::from_rfc3339(&t.to_rfc3339()), Some(t));
    /// assert_eq!(Timestamp::from_rfc3339("1970-01-01T01:00:00+01:00"), Some(Timestamp::from_millis(0)));
    /// assert_eq!(Timestamp::from_rfc3339("yesterday"), None);
    /// ```
    pub fn from_rfc3339(text: &str) -> Option<Timestamp> {
        let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .ok()?;
        i64::try_from(at.unix_timestamp_nanos().div_euclid(1_000_000))
            .ok()
            .map(Timestamp)
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, rhs: Duration) -> Timestamp {
        let ms = i64::try_from(rhs.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, rhs: Duration) -> Timestamp {
        let ms = i64::try_from(rhs.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_sub(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_day_of_a_few_years_round_trips() {
        let mut t = Timestamp::from_millis(946_684_800_000); // 2000-01-01
        for _ in 0..(366 * 4) {
            assert_eq!(
                Timestamp::from_rfc3339(&t.to_rfc3339()),
                Some(t),
                "{}",
                t.to_rfc3339()
            );
            t = t + Duration::from_millis(86_400_000 + 1_234);
        }
    }

    #[test]
    fn formats_known_dates() {
        assert_eq!(
            Timestamp::from_millis(1_700_000_000_123).to_rfc3339(),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(
            Timestamp::from_millis(951_782_400_000).to_rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_millis(-1).to_rfc3339(),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(
            Timestamp::from_millis(i64::MAX).to_rfc3339(),
            i64::MAX.to_string()
        );
    }

    #[test]
    fn until_saturates_at_zero() {
        let a = Timestamp::from_millis(5_000);
        assert_eq!(a.until(Timestamp::from_millis(4_000)), Duration::ZERO);
        assert_eq!(
            a.until(Timestamp::from_millis(6_500)),
            Duration::from_millis(1_500)
        );
    }
}
