//! Parsers and printers for the scalar value types of PgBouncer's config: booleans, integers in
//! a range, time values, octal modes and comma lists. Each parser says what it expected on failure;
//! the caller adds file, line, key and value.

use std::path::PathBuf;
use std::time::Duration;

use super::problem::Expected;

/// Parses a boolean the way PgBouncer's integers-as-flags are written (`0`/`1`) plus the usual
/// words: yes/no, on/off, true/false (case-insensitive).
pub fn parse_bool(value: &str) -> Result<bool, Expected> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Ok(true),
        "0" | "no" | "off" | "false" => Ok(false),
        _ => Err(Expected::Bool),
    }
}

/// Parses a decimal integer within `min..=max` (no sign, no fraction).
pub fn parse_u32(value: &str, min: u32, max: u32) -> Result<u32, Expected> {
    let expected = Expected::Integer {
        min: u64::from(min),
        max: u64::from(max),
    };
    let text = value.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(expected);
    }
    match text.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(expected),
    }
}

/// Parses a TCP port, 1 to 65535.
pub fn parse_port(value: &str) -> Result<u16, Expected> {
    let n = parse_u32(value, 1, u32::from(u16::MAX))?;
    u16::try_from(n).map_err(|_| Expected::Integer { min: 1, max: 65535 })
}

/// Parses a PgBouncer time value: a plain number means seconds and may be fractional (`0.5`);
/// pgfunnel also accepts a unit suffix `us`, `ms`, `s`, `min`, `h` or `d` (`250ms`, `2 min`).
pub fn parse_duration(value: &str) -> Result<Duration, Expected> {
    parse_time(value, 1.0).ok_or(Expected::Duration)
}

/// Parses a time value whose plain numbers mean milliseconds (PgBouncer's `tcp_user_timeout`);
/// unit suffixes work as in [`parse_duration`].
pub fn parse_millis(value: &str) -> Result<Duration, Expected> {
    parse_time(value, 0.001).ok_or(Expected::Milliseconds)
}

fn parse_time(value: &str, plain_unit_secs: f64) -> Option<Duration> {
    let text = value.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if !number.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let number: f64 = number.parse().ok()?;
    let unit_secs = match unit.trim() {
        "" => plain_unit_secs,
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(number * unit_secs).ok()
}

/// Parses a Unix file mode written in octal, with or without a leading `0` or `0o` (`0777`, `770`).
pub fn parse_octal_mode(value: &str) -> Result<u32, Expected> {
    let text = value.trim();
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() {
        return Err(Expected::OctalMode);
    }
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(Expected::OctalMode),
    }
}

/// Splits a comma-separated list, trimming items and dropping empty ones (`a, b,,c` → a, b, c).
pub fn parse_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// An empty value means "not set".
pub fn parse_opt_string(value: &str) -> Option<String> {
    let text = value.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

/// An empty value means "not set"; anything else is a path, kept as written.
pub fn parse_opt_path(value: &str) -> Option<PathBuf> {
    parse_opt_string(value).map(PathBuf::from)
}

/// Prints a boolean as PgBouncer's SHOW CONFIG does: `1` or `0`.
pub fn show_bool(value: bool) -> String {
    if value { "1" } else { "0" }.to_owned()
}

/// Prints a time value in seconds, with a fraction only when needed (`3600`, `0.5`).
pub fn show_secs(value: Duration) -> String {
    if value.subsec_nanos() == 0 {
        value.as_secs().to_string()
    } else {
        format!("{}", value.as_secs_f64())
    }
}

/// Prints a time value in whole milliseconds (fractions when needed).
pub fn show_millis(value: Duration) -> String {
    let micros = value.as_micros();
    if micros.is_multiple_of(1000) {
        (micros / 1000).to_string()
    } else {
        format!("{}", value.as_secs_f64() * 1000.0)
    }
}

/// Prints a list the way it is written in the file: items joined by `,`.
pub fn show_list(value: &[String]) -> String {
    value.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_digits_and_words() {
        for yes in ["1", "yes", "ON", "true", " True "] {
            assert_eq!(parse_bool(yes), Ok(true), "{yes}");
        }
        for no in ["0", "no", "off", "FALSE"] {
            assert_eq!(parse_bool(no), Ok(false), "{no}");
        }
        assert_eq!(parse_bool("2"), Err(Expected::Bool));
        assert_eq!(parse_bool(""), Err(Expected::Bool));
    }

    #[test]
    fn integers_respect_range_and_refuse_signs() {
        assert_eq!(parse_u32("20", 0, 100), Ok(20));
        assert!(parse_u32("-1", 0, 100).is_err());
        assert!(parse_u32("+1", 0, 100).is_err());
        assert!(parse_u32("101", 0, 100).is_err());
        assert!(parse_u32("1.5", 0, 100).is_err());
        assert!(parse_u32("99999999999", 0, u32::MAX).is_err());
        assert_eq!(parse_port("6432"), Ok(6432));
        assert!(parse_port("0").is_err());
        assert!(parse_port("65536").is_err());
    }

    #[test]
    fn plain_time_values_are_fractional_seconds() {
        assert_eq!(parse_duration("120"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(".25"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn time_values_accept_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2 min"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_millis("1500"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_millis("2s"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn bad_time_values_are_refused() {
        for bad in ["", "abc", "-1", "5 minutes", "1.2.3", "ms", "1e3"] {
            assert_eq!(parse_duration(bad), Err(Expected::Duration), "{bad}");
        }
    }

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal_mode("0777"), Ok(0o777));
        assert_eq!(parse_octal_mode("770"), Ok(0o770));
        assert_eq!(parse_octal_mode("0o600"), Ok(0o600));
        assert!(parse_octal_mode("0778").is_err());
        assert!(parse_octal_mode("1777").is_err());
        assert!(parse_octal_mode("").is_err());
    }

    #[test]
    fn lists_trim_and_drop_empty_items() {
        assert_eq!(parse_list(" a, b,,c "), vec!["a", "b", "c"]);
        assert!(parse_list("").is_empty());
    }

    #[test]
    fn printers_use_pgbouncer_spelling() {
        assert_eq!(show_bool(true), "1");
        assert_eq!(show_secs(Duration::from_secs(3600)), "3600");
        assert_eq!(show_secs(Duration::from_millis(500)), "0.5");
        assert_eq!(show_millis(Duration::from_millis(1500)), "1500");
        assert_eq!(show_list(&["a".into(), "b".into()]), "a,b");
    }
}
