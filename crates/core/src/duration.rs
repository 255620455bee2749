//! Kubernetes-style durations: `90s`, `30m`, `4h`, `1h30m`, `2h0m10s`.
//!
//! A duration is one or more `<digits><unit>` parts with unit `h`, `m` or `s`; the parts add
//! up. Empty, negative, zero, fractional and overflowing durations are refused, each with a
//! message that says what to write instead.

use chrono::TimeDelta;

/// The longest duration accepted: 100 years, far beyond any sensible grant, small enough that
/// adding it to any timestamp kubepam handles cannot overflow.
pub const MAX_SECONDS: i64 = 100 * 366 * 24 * 3600;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Not of the form number + unit.
    #[error("invalid duration {0:?}: use a number followed by s, m or h, e.g. 90s, 30m, 4h")]
    Syntax(String),
    /// Parses, but is zero.
    #[error("invalid duration {0:?}: it must be longer than zero, e.g. 30m or 4h")]
    Zero(String),
    /// Too large.
    #[error("invalid duration {0:?}: it must be shorter than 100 years")]
    TooLong(String),
}

/// Parse a duration such as `1h30m` into a positive [`TimeDelta`] of whole seconds.
pub fn parse(input: &str) -> Result<TimeDelta, Error> {
    parse_units(input, false)
}

/// Parse a duration that may also count days, such as `90d` (a retention period).
pub fn parse_with_days(input: &str) -> Result<TimeDelta, Error> {
    parse_units(input, true)
}

fn parse_units(input: &str, days: bool) -> Result<TimeDelta, Error> {
    let syntax = || Error::Syntax(input.to_owned());
    let too_long = || Error::TooLong(input.to_owned());
    if input.is_empty() {
        return Err(syntax());
    }
    let mut total: i64 = 0;
    let mut number: Option<i64> = None;
    for c in input.chars() {
        if let Some(d) = c.to_digit(10) {
            let n = number.unwrap_or(0);
            let n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(i64::from(d)))
                .ok_or_else(too_long)?;
            number = Some(n);
        } else {
            let unit: i64 = match c {
                'd' if days => 86_400,
                'h' => 3600,
                'm' => 60,
                's' => 1,
                _ => return Err(syntax()),
            };
            let n = number.take().ok_or_else(syntax)?;
            total = n
                .checked_mul(unit)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(too_long)?;
            if total > MAX_SECONDS {
                return Err(too_long());
            }
        }
    }
    if number.is_some() {
        // Digits without a unit at the end, e.g. "90".
        return Err(syntax());
    }
    if total == 0 {
        return Err(Error::Zero(input.to_owned()));
    }
    TimeDelta::try_seconds(total).ok_or_else(too_long)
}

/// Format a duration the way Kubernetes prints one: `4h`, `1h30m`, `90s` becomes `1m30s`.
/// Sub-second parts are dropped; zero or negative durations print as `0s`.
pub fn format(d: TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs <= 0 {
        return "0s".to_owned();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    for (n, unit) in [(h, 'h'), (m, 'm'), (s, 's')] {
        if n > 0 {
            out.push_str(&n.to_string());
            out.push(unit);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse("90s"), Ok(TimeDelta::seconds(90)));
        assert_eq!(parse("30m"), Ok(TimeDelta::minutes(30)));
        assert_eq!(parse("4h"), Ok(TimeDelta::hours(4)));
        assert_eq!(parse("1h30m"), Ok(TimeDelta::minutes(90)));
        assert_eq!(parse("2h0m10s"), Ok(TimeDelta::seconds(7210)));
        assert_eq!(parse("24h"), Ok(TimeDelta::days(1)));
    }

    #[test]
    fn refuses_bad_input_with_an_actionable_message() {
        for bad in [
            "", "4x", "-4h", "h", "4", "1.5h", " 4h", "4h ", "4H", "4d", "1h-30m",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(matches!(err, Error::Syntax(_)), "{bad:?} gave {err:?}");
        }
        assert_eq!(
            parse("4x").unwrap_err().to_string(),
            "invalid duration \"4x\": use a number followed by s, m or h, e.g. 90s, 30m, 4h"
        );
        assert!(matches!(parse("0s"), Err(Error::Zero(_))));
        assert!(matches!(parse("0h0m0s"), Err(Error::Zero(_))));
        assert!(matches!(
            parse("99999999999999999999h"),
            Err(Error::TooLong(_))
        ));
        assert!(matches!(
            parse("9223372036854775807s"),
            Err(Error::TooLong(_))
        ));
        assert!(matches!(parse("1000000h"), Err(Error::TooLong(_))));
    }

    #[test]
    fn formats_like_kubernetes() {
        assert_eq!(format(TimeDelta::hours(4)), "4h");
        assert_eq!(format(TimeDelta::seconds(90)), "1m30s");
        assert_eq!(format(TimeDelta::seconds(3601)), "1h1s");
        assert_eq!(format(TimeDelta::zero()), "0s");
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_near_misses(s in "[0-9hms]{0,30}") {
            if let Ok(d) = parse(&s) {
                prop_assert!(d > TimeDelta::zero());
                prop_assert!(d.num_seconds() <= MAX_SECONDS);
            }
        }

        #[test]
        fn every_refused_duration_is_named_and_told_what_to_write(
            s in prop_oneof![
                ".{0,40}",
                "\\PC{0,12}",
                "-?[0-9]{1,30}[hmsdHx. ]?",
                "([0-9]{0,22}[hms.,+ -]?){1,6}",
                "[0-9]{15,40}[hms]",
            ],
        ) {
            match parse(&s) {
                Ok(d) => {
                    prop_assert!(d > TimeDelta::zero() && d.num_seconds() <= MAX_SECONDS);
                    prop_assert!(s.chars().all(|c| c.is_ascii_digit() || matches!(c, 'h' | 'm' | 's')));
                }
                Err(e) => {
                    let message = e.to_string();
                    let quoted = format!("{s:?}");
                    prop_assert!(message.starts_with("invalid duration "), "{message}");
                    prop_assert!(message.contains(&quoted), "{message} does not name {quoted}");
                    prop_assert!(
                        message.contains("s, m or h")
                            || message.contains("longer than zero")
                            || message.contains("shorter than 100 years"),
                        "{message} does not say what is accepted"
                    );
                }
            }
        }

        #[test]
        fn durations_past_100_years_are_refused_as_too_long(
            excess in 1u128..=u128::from(u64::MAX) * 1000,
            unit in proptest::sample::select(vec![('h', 3600u128), ('m', 60), ('s', 1)]),
            prefix in proptest::option::of(1i64..=1000),
        ) {
            let (c, secs) = unit;
            let max = u128::try_from(MAX_SECONDS).unwrap();
            let n = max / secs + excess;
            let typed = match prefix {
                Some(p) => format!("{p}s{n}{c}"),
                None => format!("{n}{c}"),
            };
            prop_assert_eq!(parse(&typed), Err(Error::TooLong(typed.clone())));
        }

        #[test]
        fn a_duration_is_the_sum_of_its_parts(
            parts in proptest::collection::vec((0i64..=1000, proptest::sample::select(vec![('h', 3600i64), ('m', 60), ('s', 1)])), 1..6),
        ) {
            let typed = parts.iter().fold(String::new(), |mut out, (n, (c, _))| {
                out.push_str(&n.to_string());
                out.push(*c);
                out
            });
            let total: i64 = parts.iter().map(|(n, (_, secs))| n * secs).sum();
            let expected = if total == 0 {
                Err(Error::Zero(typed.clone()))
            } else {
                Ok(TimeDelta::seconds(total))
            };
            prop_assert_eq!(parse(&typed), expected);
        }

        #[test]
        fn format_then_parse_round_trips(secs in 1i64..=MAX_SECONDS) {
            let d = TimeDelta::seconds(secs);
            prop_assert_eq!(parse(&format(d)), Ok(d));
        }
    }
}
