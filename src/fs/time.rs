//! Midas dates (`YYYY-MM-DD HH:MM:SS`, UTC, no offset) as `SystemTime`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Parses a Midas date; `None` for an empty or malformed one (old rows hold `0000-00-00 00:00:00`).
pub fn parse_midas_date(s: &str) -> Option<SystemTime> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&day)
        || y < 1970
        || hh > 23
        || mm > 59
        || ss > 60
    {
        return None;
    }
    let secs = days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_midas_dates_as_utc() {
        let t = parse_midas_date("2026-11-27 16:37:53").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_797_473
        );
        assert_eq!(parse_midas_date("1970-01-01 00:00:00"), Some(UNIX_EPOCH));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "0000-00-00 00:00:00",
            "2026-13-01 00:00:00",
            "yesterday",
            "2026-11-27",
        ] {
            assert_eq!(parse_midas_date(s), None, "{s}");
        }
    }
}
