//! Cron expressions and time zones: parsing, checking and next fire times.
//!
//! Expressions are read by croner (Vixie/OCPS semantics, names like MON-FRI and
//! JAN, macros like @daily) strictly as five fields unless seconds are asked
//! for. Fire times are computed in the trigger's IANA zone with jiff, so a
//! schedule keeps its wall-clock time across daylight-saving changes.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use jiff::{Timestamp, Zoned};

use crate::suggest;

/// Why a cron expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CronError {
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// A parsed schedule: expression plus time zone.
#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

/// Parses a cron expression; six fields are accepted only with `seconds`.
pub fn parse_expression(expr: &str, seconds: bool) -> Result<Cron, CronError> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err(CronError {
            message: "empty cron expression".into(),
            hint: Some("e.g. \"0 7 * * MON-FRI\" or \"@daily\"".into()),
        });
    }
    if !trimmed.starts_with('@') {
        let fields = trimmed.split_whitespace().count();
        let wanted = if seconds { "6 (with seconds)" } else { "5" };
        let bad = if seconds {
            !(5..=6).contains(&fields)
        } else {
            fields != 5
        };
        if bad {
            let hint = if fields == 6 && !seconds {
                Some("six fields mean a leading seconds field; add `seconds: true` to the trigger if that is what you want".into())
            } else {
                Some("fields are: minute hour day-of-month month day-of-week".into())
            };
            return Err(CronError {
                message: format!(
                    "invalid cron expression '{trimmed}': expected {wanted} fields, found {fields}"
                ),
                hint,
            });
        }
    }
    let parser = CronParser::builder()
        .seconds(if seconds {
            Seconds::Optional
        } else {
            Seconds::Disallowed
        })
        .year(Year::Disallowed)
        .build();
    parser.parse(trimmed).map_err(|e| {
        let hint = Some("fields are: minute hour day-of-month month day-of-week; names like MON-FRI and JAN and macros like @daily work".into());
        match culprit(&parser, trimmed) {
            // croner says "Number out of bounds" without naming the field: say which, and its range.
            Some((name, text, range)) if e.to_string().contains("out of bounds") => CronError {
                message: format!(
                    "invalid cron expression '{trimmed}': the {name} field '{text}' is out of range ({name} takes {range})"
                ),
                hint,
            },
            Some((name, text, range)) => CronError {
                message: format!(
                    "invalid cron expression '{trimmed}': the {name} field '{text}' is not valid ({name} takes {range}): {e}"
                ),
                hint,
            },
            None => CronError {
                message: format!("invalid cron expression '{trimmed}': {e}"),
                hint,
            },
        }
    })
}

/// The first field croner refuses on its own (every other field `*`): its
/// name, its text and the values it takes.
fn culprit<'a>(
    parser: &CronParser,
    expr: &'a str,
) -> Option<(&'static str, &'a str, &'static str)> {
    const FIVE: [(&str, &str); 5] = [
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day-of-month", "1-31"),
        ("month", "1-12 or JAN-DEC"),
        ("day-of-week", "0-7 or SUN-SAT"),
    ];
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let names: Vec<(&str, &str)> = match fields.len() {
        5 => FIVE.to_vec(),
        6 => std::iter::once(("second", "0-59")).chain(FIVE).collect(),
        _ => return None,
    };
    (0..fields.len()).find_map(|i| {
        let alone: Vec<&str> = (0..fields.len())
            .map(|j| if j == i { fields[i] } else { "*" })
            .collect();
        parser
            .parse(&alone.join(" "))
            .is_err()
            .then(|| (names[i].0, fields[i], names[i].1))
    })
}

/// Looks up an IANA time zone by name, suggesting a near name when it is unknown.
pub fn parse_timezone(name: &str) -> Result<TimeZone, CronError> {
    TimeZone::get(name).map_err(|_| {
        let names: Vec<String> = jiff::tz::db().available().map(|n| n.to_string()).collect();
        let hint = suggest::did_you_mean(name, names.iter().map(String::as_str)).or_else(|| {
            Some("use an IANA name such as Europe/Berlin, America/New_York or UTC".into())
        });
        CronError {
            message: format!("unknown time zone '{name}'"),
            hint,
        }
    })
}

impl Schedule {
    /// A schedule from an expression and an optional zone (default: the system's).
    pub fn new(expr: &str, timezone: Option<&str>, seconds: bool) -> Result<Self, CronError> {
        let cron = parse_expression(expr, seconds)?;
        let tz = match timezone {
            Some(name) => parse_timezone(name)?,
            None => TimeZone::system(),
        };
        Ok(Self { cron, tz })
    }

    /// The schedule's time zone.
    pub fn timezone(&self) -> &TimeZone {
        &self.tz
    }

    /// The first fire strictly after `after`, or `None` if there is none.
    pub fn next_after(&self, after: Timestamp) -> Option<Zoned> {
        let start = after.to_zoned(self.tz.clone());
        self.cron.find_next_occurrence(&start, false).ok()
    }

    /// The next `n` fires strictly after `after`.
    pub fn upcoming(&self, after: Timestamp, n: usize) -> Vec<Zoned> {
        let mut out = Vec::with_capacity(n);
        let mut cursor = after;
        while out.len() < n {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            cursor = next.timestamp();
            out.push(next);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn an_out_of_range_value_names_its_field_and_range() {
        let err = parse_expression("0 25 * * *", false).unwrap_err();
        assert_eq!(
            err.message,
            "invalid cron expression '0 25 * * *': the hour field '25' is out of range (hour takes 0-23)"
        );
        for (expr, seconds, expected) in [
            ("61 * * * *", false, "the minute field '61'"),
            ("0 0 32 * *", false, "the day-of-month field '32'"),
            ("0 0 * 13 *", false, "month field '13'"),
            ("0 0 * * FOO", false, "the day-of-week field 'FOO'"),
            ("70 0 7 * * *", true, "the second field '70'"),
        ] {
            let err = parse_expression(expr, seconds).unwrap_err();
            assert!(err.message.contains(expected), "{expr}: {}", err.message);
        }
        let err = parse_expression("0 0 * 13 *", false).unwrap_err();
        assert!(err.message.contains("1-12"), "{}", err.message);
    }

    #[test]
    fn five_fields_strict_unless_seconds() {
        assert!(parse_expression("0 7 * * MON-FRI", false).is_ok());
        let err = parse_expression("0 0 7 * * MON-FRI", false).unwrap_err();
        assert!(err.hint.unwrap().contains("seconds: true"));
        assert!(parse_expression("0 0 7 * * MON-FRI", true).is_ok());
        assert!(parse_expression("@daily", false).is_ok());
        assert!(parse_expression("61 * * * *", false).is_err());
    }

    #[test]
    fn unknown_zone_gets_a_suggestion() {
        let err = parse_timezone("Europe/Berln").unwrap_err();
        assert_eq!(err.hint.as_deref(), Some("did you mean 'Europe/Berlin'?"));
    }

    #[test]
    fn spring_forward_gap_fires_once_after_the_gap() {
        let s = Schedule::new("30 2 * * *", Some("America/New_York"), false).unwrap();
        let fires = s.upcoming(ts("2026-03-07T12:00:00Z"), 3);
        let shown: Vec<String> = fires
            .iter()
            .map(|z| z.strftime("%F %T%:z").to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "2026-03-08 03:00:00-04:00",
                "2026-03-09 02:30:00-04:00",
                "2026-03-10 02:30:00-04:00"
            ]
        );
    }

    #[test]
    fn fall_back_overlap_fires_once() {
        let s = Schedule::new("30 1 * * *", Some("America/New_York"), false).unwrap();
        let fires = s.upcoming(ts("2026-10-31T12:00:00Z"), 2);
        let shown: Vec<String> = fires
            .iter()
            .map(|z| z.strftime("%F %T%:z").to_string())
            .collect();
        assert_eq!(
            shown,
            ["2026-11-01 01:30:00-04:00", "2026-11-02 01:30:00-05:00"]
        );
    }
}
