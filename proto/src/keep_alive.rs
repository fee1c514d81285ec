//! Keep-alive strings: how long a model stays loaded after its last request.
//!
//! The API carries them as strings so that shells and config files can write
//! `5m`. The grammar is Go's duration syntax (what Ollama's `keep_alive`
//! accepts) plus two conventions:
//!
//! - a number with a unit: `30s`, `5m`, `1h`, `1.5h`, `1h30m`, `250ms`
//!   (units `ns`, `us` or `µs`, `ms`, `s`, `m`, `h`);
//! - a bare number is seconds: `300`, `2.5`;
//! - `0` (any zero) unloads the model right after the request;
//! - `-1` (any negative value) keeps it loaded until it is unloaded or
//!   evicted: [`KeepAlive::Forever`].
//!
//! [`format_keep_alive`] writes the normalized form (`1h30m`, `0`, `-1`),
//! which [`parse_keep_alive`] reads back to the same value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How long a model stays loaded after its last request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeepAlive {
    /// Until it is unloaded or evicted (`-1`).
    Forever,
    /// This long; [`Duration::ZERO`] unloads it right after the request.
    Duration(Duration),
}

impl KeepAlive {
    /// Unload right after the request (`0`).
    pub const UNLOAD_AFTER_REQUEST: KeepAlive = KeepAlive::Duration(Duration::ZERO);

    /// The duration, or `None` for [`KeepAlive::Forever`].
    pub fn duration(self) -> Option<Duration> {
        match self {
            KeepAlive::Forever => None,
            KeepAlive::Duration(d) => Some(d),
        }
    }

    /// A number of seconds, as JSON carries it: negative is forever, `0`
    /// unloads after the request.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kolm_proto::KeepAlive;
    ///
    /// assert_eq!(KeepAlive::from_seconds(90.0), Ok(KeepAlive::Duration(Duration::from_secs(90))));
    /// assert_eq!(KeepAlive::from_seconds(-1.0), Ok(KeepAlive::Forever));
    /// assert!(KeepAlive::from_seconds(f64::NAN).is_err());
    /// ```
    pub fn from_seconds(seconds: f64) -> Result<KeepAlive, ParseKeepAliveError> {
        let input = || seconds.to_string();
        if seconds.is_nan() {
            return Err(ParseKeepAliveError::ExpectedNumber {
                input: input(),
                rest: input(),
            });
        }
        if seconds < 0.0 {
            return Ok(KeepAlive::Forever);
        }
        Duration::try_from_secs_f64(seconds)
            .map(KeepAlive::Duration)
            .map_err(|_| ParseKeepAliveError::TooLong { input: input() })
    }

    /// The keep-alive as a number of seconds, `-1.0` for forever (how the
    /// HTTP API reports it).
    pub fn as_seconds(self) -> f64 {
        match self {
            KeepAlive::Forever => -1.0,
            KeepAlive::Duration(d) => d.as_secs_f64(),
        }
    }
}

impl From<Duration> for KeepAlive {
    fn from(d: Duration) -> Self {
        KeepAlive::Duration(d)
    }
}

impl FromStr for KeepAlive {
    type Err = ParseKeepAliveError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_keep_alive(s)
    }
}

impl fmt::Display for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_keep_alive(*self))
    }
}

/// Why a keep-alive string was refused. Each variant names the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseKeepAliveError {
    /// Nothing was given (or only blanks).
    #[error(
        "empty keep-alive: give a duration such as `5m` or `300` (seconds), \
         `0` to unload after the request, or `-1` to keep the model loaded"
    )]
    Empty,
    /// A number was expected at `rest` (e.g. `m`, `-`, `--1`).
    #[error("invalid keep-alive `{input}`: expected a number at `{rest}`")]
    ExpectedNumber { input: String, rest: String },
    /// A number without a unit is not the whole input (`5m30`, `1..5s`).
    #[error(
        "invalid keep-alive `{input}`: `{number}` has no unit; use ns, us, ms, s, m or h \
         (only a bare number on its own means seconds)"
    )]
    MissingUnit { input: String, number: String },
    /// A unit that is not one of `ns`, `us`, `µs`, `ms`, `s`, `m`, `h`.
    #[error("invalid keep-alive `{input}`: unknown unit `{unit}`; use ns, us, ms, s, m or h")]
    UnknownUnit { input: String, unit: String },
    /// More than [`Duration::MAX`]; use `-1` for "forever".
    #[error("keep-alive `{input}` is too long; use `-1` to keep the model loaded")]
    TooLong { input: String },
    /// A negative value where only a duration is meaningful
    /// ([`parse_duration`]).
    #[error("`{input}` is negative; give a duration such as `30s` or `0`")]
    Negative { input: String },
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Nanoseconds per unit, or `None` for an unknown unit.
fn unit_nanos(unit: &str) -> Option<u128> {
    Some(match unit {
        "ns" => 1,
        // U+00B5 (micro sign) and U+03BC (Greek mu), as Go accepts.
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => NANOS_PER_SEC,
        "m" => 60 * NANOS_PER_SEC,
        "h" => 3_600 * NANOS_PER_SEC,
        _ => return None,
    })
}

/// Parses a keep-alive string; see the [module docs](self) for the grammar.
///
/// ```
/// use std::time::Duration;
/// use kolm_proto::{parse_keep_alive, KeepAlive};
///
/// assert_eq!(parse_keep_alive("5m"), Ok(KeepAlive::Duration(Duration::from_secs(300))));
/// assert_eq!(parse_keep_alive("90"), Ok(KeepAlive::Duration(Duration::from_secs(90))));
/// assert_eq!(parse_keep_alive("0"), Ok(KeepAlive::UNLOAD_AFTER_REQUEST));
/// assert_eq!(parse_keep_alive("-1"), Ok(KeepAlive::Forever));
/// assert!(parse_keep_alive("5 minutes").is_err());
/// ```
pub fn parse_keep_alive(input: &str) -> Result<KeepAlive, ParseKeepAliveError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(ParseKeepAliveError::Empty);
    }
    let (negative, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let too_long = || ParseKeepAliveError::TooLong {
        input: input.to_owned(),
    };

    // `None` once the sum overflows; parsing goes on so that a syntax error
    // later in the input is still reported as such.
    let mut total: Option<u128> = Some(0);
    let mut rest = body;
    let mut first = true;
    loop {
        let (number, after_number) =
            split_number(rest).ok_or_else(|| ParseKeepAliveError::ExpectedNumber {
                input: input.to_owned(),
                rest: rest.to_owned(),
            })?;
        let unit_len = after_number
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after_number.len());
        let (unit, after_unit) = after_number.split_at(unit_len);
        let nanos_per_unit = if unit.is_empty() {
            // A bare number is seconds, but only on its own: `5m30` is a
            // mistake, not `5m` plus 30 seconds.
            if !first || !after_unit.is_empty() {
                return Err(ParseKeepAliveError::MissingUnit {
                    input: input.to_owned(),
                    number: number.to_owned(),
                });
            }
            NANOS_PER_SEC
        } else {
            unit_nanos(unit).ok_or_else(|| ParseKeepAliveError::UnknownUnit {
                input: input.to_owned(),
                unit: unit.to_owned(),
            })?
        };
        total = total
            .zip(number_nanos(number, nanos_per_unit))
            .and_then(|(a, b)| a.checked_add(b));
        first = false;
        rest = after_unit;
        if rest.is_empty() {
            break;
        }
    }

    // Any negative value means forever, however large.
    if negative && total != Some(0) {
        return Ok(KeepAlive::Forever);
    }
    let total = total.ok_or_else(too_long)?;
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| too_long())?;
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| too_long())?;
    Ok(KeepAlive::Duration(Duration::new(secs, nanos)))
}

/// A duration in the keep-alive grammar that may not be negative (kolmd's
/// `shutdown_grace`): `30s`, `1h30m`, `250ms`, or a bare number of seconds.
///
/// ```
/// use std::time::Duration;
/// use kolm_proto::keep_alive::parse_duration;
///
/// assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
/// assert!(parse_duration("-1").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, ParseKeepAliveError> {
    match parse_keep_alive(input)? {
        KeepAlive::Duration(d) => Ok(d),
        KeepAlive::Forever => Err(ParseKeepAliveError::Negative {
            input: input.to_owned(),
        }),
    }
}

/// Splits a leading decimal number (`12`, `1.5`, `.5`, `5.`) off `s`;
/// `None` if `s` does not start with one.
fn split_number(s: &str) -> Option<(&str, &str)> {
    let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
    let mut len = int_len;
    let mut frac_len = 0;
    if s.as_bytes().get(len) == Some(&b'.') {
        frac_len = s[len + 1..].bytes().take_while(u8::is_ascii_digit).count();
        len += 1 + frac_len;
    }
    if int_len + frac_len == 0 {
        return None;
    }
    Some(s.split_at(len))
}

/// `number` (as split by [`split_number`]) times `unit` nanoseconds; the
/// fraction is truncated to whole nanoseconds. `None` on overflow.
fn number_nanos(number: &str, unit: u128) -> Option<u128> {
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let mut value: u128 = 0;
    for d in int.bytes() {
        value = value.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
    }
    let mut nanos = value.checked_mul(unit)?;
    // Digits past the 20th are far below a nanosecond for every unit.
    let (mut num, mut den): (u128, u128) = (0, 1);
    for d in frac.bytes().take(20) {
        num = num * 10 + u128::from(d - b'0');
        den *= 10;
    }
    nanos = nanos.checked_add(num * unit / den)?;
    Some(nanos)
}

/// The normalized string of a keep-alive: `-1` for forever, `0` for zero,
/// else its parts from hours down to nanoseconds with zero parts left out
/// (`5m`, `1h30m`, `1s500ms`). [`parse_keep_alive`] reads it back exactly.
///
/// ```
/// use std::time::Duration;
/// use kolm_proto::{format_keep_alive, KeepAlive};
///
/// assert_eq!(format_keep_alive(KeepAlive::Duration(Duration::from_secs(5400))), "1h30m");
/// assert_eq!(format_keep_alive(KeepAlive::Forever), "-1");
/// ```
pub fn format_keep_alive(keep_alive: KeepAlive) -> String {
    let d = match keep_alive {
        KeepAlive::Forever => return "-1".to_owned(),
        KeepAlive::Duration(d) if d.is_zero() => return "0".to_owned(),
        KeepAlive::Duration(d) => d,
    };
    let secs = d.as_secs();
    let sub = d.subsec_nanos();
    let parts = [
        (secs / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
        (u64::from(sub / 1_000_000), "ms"),
        (u64::from(sub / 1_000 % 1_000), "us"),
        (u64::from(sub % 1_000), "ns"),
    ];
    let mut out = String::new();
    for (value, unit) in parts {
        if value > 0 {
            out.push_str(&value.to_string());
            out.push_str(unit);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> KeepAlive {
        KeepAlive::Duration(Duration::from_secs(s))
    }

    #[test]
    fn parses_units_and_bare_seconds() {
        let cases = [
            ("5m", secs(300)),
            ("30s", secs(30)),
            ("1h", secs(3600)),
            ("1h30m", secs(5400)),
            ("2h0m5s", secs(7205)),
            ("1.5h", secs(5400)),
            (".5m", secs(30)),
            ("5.m", secs(300)),
            ("300", secs(300)),
            ("+300", secs(300)),
            ("  5m\n", secs(300)),
            ("2.5", KeepAlive::Duration(Duration::from_millis(2500))),
            ("250ms", KeepAlive::Duration(Duration::from_millis(250))),
            ("1s500ms", KeepAlive::Duration(Duration::from_millis(1500))),
            ("7us", KeepAlive::Duration(Duration::from_micros(7))),
            ("7\u{b5}s", KeepAlive::Duration(Duration::from_micros(7))),
            ("7\u{3bc}s", KeepAlive::Duration(Duration::from_micros(7))),
            ("9ns", KeepAlive::Duration(Duration::from_nanos(9))),
            ("0.1ns", KeepAlive::UNLOAD_AFTER_REQUEST),
        ];
        for (input, want) in cases {
            assert_eq!(parse_keep_alive(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn zero_and_negative() {
        for zero in ["0", "0s", "0m0s", "-0", "0.0", "00"] {
            assert_eq!(
                parse_keep_alive(zero),
                Ok(KeepAlive::UNLOAD_AFTER_REQUEST),
                "{zero:?}"
            );
        }
        let huge = format!("-{}h", "9".repeat(60));
        for forever in ["-1", "-5m", "-0.5", "-1ns", "-99999999999999999999h", &huge] {
            assert_eq!(
                parse_keep_alive(forever),
                Ok(KeepAlive::Forever),
                "{forever:?}"
            );
        }
    }

    #[test]
    fn from_str_and_display() {
        let k: KeepAlive = "90s".parse().unwrap();
        assert_eq!(k, secs(90));
        assert_eq!(k.to_string(), "1m30s");
        assert_eq!(k.duration(), Some(Duration::from_secs(90)));
        assert_eq!(KeepAlive::Forever.duration(), None);
        assert_eq!(KeepAlive::from(Duration::from_secs(1)), secs(1));
    }

    #[test]
    fn formats_normalized() {
        let cases = [
            (KeepAlive::Forever, "-1"),
            (KeepAlive::UNLOAD_AFTER_REQUEST, "0"),
            (secs(300), "5m"),
            (secs(30), "30s"),
            (secs(3600), "1h"),
            (secs(5400), "1h30m"),
            (secs(7205), "2h5s"),
            (secs(100 * 3600), "100h"),
            (KeepAlive::Duration(Duration::from_millis(1500)), "1s500ms"),
            (
                KeepAlive::Duration(Duration::new(0, 1_002_003)),
                "1ms2us3ns",
            ),
        ];
        for (k, want) in cases {
            assert_eq!(format_keep_alive(k), want);
        }
    }

    #[test]
    fn round_trips() {
        let values = [
            KeepAlive::Forever,
            KeepAlive::UNLOAD_AFTER_REQUEST,
            secs(1),
            secs(59),
            secs(61),
            secs(86_399),
            KeepAlive::Duration(Duration::new(3661, 123_456_789)),
            KeepAlive::Duration(Duration::MAX),
        ];
        for k in values {
            assert_eq!(parse_keep_alive(&format_keep_alive(k)), Ok(k), "{k:?}");
        }
    }

    #[test]
    fn refuses_bad_input_with_clear_errors() {
        assert_eq!(parse_keep_alive(""), Err(ParseKeepAliveError::Empty));
        assert_eq!(parse_keep_alive("  "), Err(ParseKeepAliveError::Empty));

        let unknown = |input: &str, unit: &str| {
            assert_eq!(
                parse_keep_alive(input),
                Err(ParseKeepAliveError::UnknownUnit {
                    input: input.into(),
                    unit: unit.into()
                }),
                "{input:?}"
            );
        };
        unknown("5x", "x");
        unknown("5 minutes", " minutes");
        unknown("1d", "d");
        unknown("5M", "M");
        unknown("5m-", "m-");

        let expected_number = |input: &str, rest: &str| {
            assert_eq!(
                parse_keep_alive(input),
                Err(ParseKeepAliveError::ExpectedNumber {
                    input: input.into(),
                    rest: rest.into()
                }),
                "{input:?}"
            );
        };
        expected_number("m", "m");
        expected_number("-", "");
        expected_number("+", "");
        expected_number("--1", "-1");
        expected_number(".", ".");

        let missing_unit = |input: &str, number: &str| {
            assert_eq!(
                parse_keep_alive(input),
                Err(ParseKeepAliveError::MissingUnit {
                    input: input.into(),
                    number: number.into()
                }),
                "{input:?}"
            );
        };
        missing_unit("5m30", "30");
        missing_unit("1..5s", "1.");
        missing_unit("1.5.5", "1.5");

        assert_eq!(
            parse_keep_alive("99999999999999999999999999999999999999999h"),
            Err(ParseKeepAliveError::TooLong {
                input: "99999999999999999999999999999999999999999h".into()
            })
        );
        // Just past Duration::MAX.
        assert!(matches!(
            parse_keep_alive("18446744073709551616s"),
            Err(ParseKeepAliveError::TooLong { .. })
        ));
    }

    #[test]
    fn error_messages_name_the_input_and_the_fix() {
        let msg = parse_keep_alive("5x").unwrap_err().to_string();
        assert_eq!(
            msg,
            "invalid keep-alive `5x`: unknown unit `x`; use ns, us, ms, s, m or h"
        );
        let msg = parse_keep_alive("").unwrap_err().to_string();
        assert!(msg.contains("`-1` to keep the model loaded"), "{msg}");
        let msg = parse_keep_alive("5m30").unwrap_err().to_string();
        assert!(msg.contains("`30` has no unit"), "{msg}");
    }
}
