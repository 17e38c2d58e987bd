//! Validity periods and how times are converted and shown.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::CertError;

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// Lifetime of the cluster CA in days (about ten years).
///
/// Replacing the CA means reissuing every node certificate, so it is made to
/// outlast any realistic cluster.
pub const CA_VALIDITY_DAYS: u32 = 3650;

/// Default lifetime of a node certificate in days.
pub const DEFAULT_NODE_VALIDITY_DAYS: u32 = 365;

/// Maximum lifetime of a node certificate in days.
///
/// A node certificate stops working when its CA expires, so a lifetime longer
/// than the CA's would promise more than the certificate delivers.
pub const MAX_NODE_VALIDITY_DAYS: u32 = CA_VALIDITY_DAYS;

/// How far before "now" a new certificate's validity starts.
///
/// Peers whose clocks lag behind the issuing machine by up to this much still
/// accept the certificate at once.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(60 * 60);

/// Latest year an X.509 time can hold: GeneralizedTime has four year digits.
const MAX_X509_YEAR: i32 = 9999;

/// The period in which a certificate is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// Returns a period that starts [`CLOCK_SKEW_ALLOWANCE`] before now and
    /// ends `days` days after now.
    ///
    /// `days` must be between 1 and [`MAX_NODE_VALIDITY_DAYS`].
    pub fn days_from_now(days: u32) -> Result<Self, CertError> {
        if !(1..=MAX_NODE_VALIDITY_DAYS).contains(&days) {
            return Err(CertError::ValidityDaysOutOfRange {
                days,
                max_days: MAX_NODE_VALIDITY_DAYS,
            });
        }
        Ok(Self::days_from(SystemTime::now(), days))
    }

    /// Returns the period from [`CLOCK_SKEW_ALLOWANCE`] before `now` to `days`
    /// days after `now`. Any `u32` day count fits in a `SystemTime`, and the
    /// result is range-checked again when a certificate is made from it.
    pub(crate) fn days_from(now: SystemTime, days: u32) -> Self {
        let lifetime = Duration::from_secs(u64::from(days) * SECONDS_PER_DAY);
        Self {
            not_before: now - CLOCK_SKEW_ALLOWANCE,
            not_after: now + lifetime,
        }
    }

    /// Converts the period to the form rcgen takes, checking that it is not
    /// empty and that both ends fit in an X.509 time.
    pub(crate) fn to_offset_pair(self) -> Result<(OffsetDateTime, OffsetDateTime), CertError> {
        let invalid = || CertError::InvalidValidity {
            not_before: self.not_before,
            not_after: self.not_after,
        };

        if self.not_after <= self.not_before {
            return Err(invalid());
        }
        let not_before = to_offset(self.not_before).ok_or_else(invalid)?;
        let not_after = to_offset(self.not_after).ok_or_else(invalid)?;
        Ok((not_before, not_after))
    }
}

impl Default for Validity {
    /// Returns [`DEFAULT_NODE_VALIDITY_DAYS`] days from now.
    fn default() -> Self {
        Self::days_from(SystemTime::now(), DEFAULT_NODE_VALIDITY_DAYS)
    }
}

/// Converts a `SystemTime` to a UTC `OffsetDateTime` with a year that X.509
/// can encode, or returns `None` when it is out of that range.
fn to_offset(moment: SystemTime) -> Option<OffsetDateTime> {
    let converted = match moment.duration_since(UNIX_EPOCH) {
        Ok(after) => OffsetDateTime::UNIX_EPOCH.checked_add(after.try_into().ok()?),
        Err(before) => OffsetDateTime::UNIX_EPOCH.checked_sub(before.duration().try_into().ok()?),
    }?;
    (1..=MAX_X509_YEAR)
        .contains(&converted.year())
        .then_some(converted)
}

/// Formats a time as RFC 3339 in UTC, or as seconds since the Unix epoch when
/// it is outside the range RFC 3339 can show.
pub(crate) fn format_time(moment: SystemTime) -> String {
    let rfc3339 = to_offset(moment).and_then(|time| time.format(&Rfc3339).ok());
    match (rfc3339, moment.duration_since(UNIX_EPOCH)) {
        (Some(text), _) => text,
        (None, Ok(after)) => format!("{} s after the Unix epoch", after.as_secs()),
        (None, Err(before)) => format!("{} s before the Unix epoch", before.duration().as_secs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_from_starts_before_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let validity = Validity::days_from(now, 2);
        assert_eq!(validity.not_before, now - Duration::from_secs(3600));
        assert_eq!(validity.not_after, now + Duration::from_secs(2 * 86_400));
    }

    #[test]
    fn days_from_now_rejects_out_of_range() {
        for days in [0, MAX_NODE_VALIDITY_DAYS + 1] {
            let err = Validity::days_from_now(days).unwrap_err();
            assert!(
                matches!(err, CertError::ValidityDaysOutOfRange { days: got, .. } if got == days),
                "{err:?}"
            );
        }
        assert!(Validity::days_from_now(MAX_NODE_VALIDITY_DAYS).is_ok());
    }

    #[test]
    fn empty_period_is_invalid() {
        let now = SystemTime::now();
        let validity = Validity {
            not_before: now,
            not_after: now,
        };
        let err = validity.to_offset_pair().unwrap_err();
        assert!(matches!(err, CertError::InvalidValidity { .. }), "{err:?}");
    }

    #[test]
    fn year_beyond_x509_range_is_invalid() {
        let validity = Validity {
            not_before: SystemTime::now(),
            not_after: UNIX_EPOCH + Duration::from_secs(300_000_000_000),
        };
        let err = validity.to_offset_pair().unwrap_err();
        assert!(matches!(err, CertError::InvalidValidity { .. }), "{err:?}");
    }

    #[test]
    fn format_time_is_rfc3339_utc() {
        let moment = UNIX_EPOCH + Duration::from_secs(86_400);
        assert_eq!(format_time(moment), "1970-01-02T00:00:00Z");
    }

    #[test]
    fn format_time_handles_pre_epoch() {
        let moment = UNIX_EPOCH - Duration::from_secs(86_400);
        assert_eq!(format_time(moment), "1969-12-31T00:00:00Z");
    }
}
