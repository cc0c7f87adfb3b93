//! Time helpers: unix microseconds in the store, RFC 3339 at the edges, and a lenient parser
//! for conversational timestamps such as LoCoMo's "1:56 pm on 8 May, 2023".

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};

/// The earliest time the store accepts (0001-01-01T00:00:00Z) in unix microseconds. Bounding
/// parsed times keeps every later difference and offset of two times far from `i64` overflow.
pub const MIN_MICROS: i64 = -62_135_596_800_000_000;
/// The latest time the store accepts (9999-12-31T23:59:59Z) in unix microseconds.
pub const MAX_MICROS: i64 = 253_402_300_799_000_000;

/// Now, in unix microseconds.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Formats unix micros as RFC 3339 (UTC, second precision unless sub-second parts exist).
pub fn micros_to_rfc3339(us: i64) -> String {
    match Utc.timestamp_micros(us).single() {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => String::new(),
    }
}

/// Parses a time given as RFC 3339, ISO 8601 date/datetime, unix seconds, or the free-form
/// conversational forms LoCoMo and chat logs use. Returns unix micros (UTC) when understood.
/// Times outside years 1-9999 are not understood (`None`).
pub fn parse_time(s: &str) -> Option<i64> {
    parse_unbounded(s).filter(|us| (MIN_MICROS..=MAX_MICROS).contains(us))
}

fn parse_unbounded(s: &str) -> Option<i64> {
    let t = s.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_micros());
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    if let Ok(n) = t.parse::<i64>() {
        // Seconds or milliseconds since the epoch; out of the representable range: not a time.
        let us = if n > 100_000_000_000 {
            n.checked_mul(1000)
        } else {
            n.checked_mul(1_000_000)
        };
        return us;
    }
    // "1:56 pm on 8 May, 2023", "10:37 am on 27 June, 2023"
    let lower = t.to_lowercase().replace(',', "");
    for f in [
        "%I:%M %p on %d %B %Y",
        "%I:%M %p on %d %b %Y",
        "%H:%M on %d %B %Y",
        "%d %B %Y %I:%M %p",
        "%B %d %Y %I:%M %p",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(&lower, f) {
            return Some(d.and_utc().timestamp_micros());
        }
    }
    for f in ["%d %B %Y", "%B %d %Y", "%d %b %Y", "%b %d %Y"] {
        if let Ok(d) = NaiveDate::parse_from_str(&lower, f) {
            return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_locomo_and_iso() {
        let a = parse_time("1:56 pm on 8 May, 2023").unwrap();
        assert_eq!(micros_to_rfc3339(a), "2023-05-08T13:56:00Z");
        let b = parse_time("2023-05-08T13:56:00Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            micros_to_rfc3339(parse_time("2024-01-02").unwrap()),
            "2024-01-02T00:00:00Z"
        );
        assert!(parse_time("sometime last week").is_none());
    }

    #[test]
    fn integer_limits_are_not_times() {
        for s in [
            "9223372036854775807",
            "-9223372036854775808",
            "92233720368547758",
            "+262143-01-01",
        ] {
            assert_eq!(parse_time(s), None, "{s}");
        }
        assert_eq!(
            micros_to_rfc3339(parse_time("9999-12-31T23:59:59Z").unwrap()),
            "9999-12-31T23:59:59Z"
        );
        assert_eq!(parse_time("10000-01-01T00:00:00Z"), None);
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000));
        assert_eq!(parse_time("1700000000000"), Some(1_700_000_000_000_000));
    }
}
