//! Human-friendly durations in pipeline files: `30s`, `15m`, `1h 30m`, `2d`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written with units, e.g. `2s`, `15m`, `1h30m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration '{input}': {reason} (write it like 30s, 15m, 1h30m or 2d)")]
pub struct DurationError {
    input: String,
    reason: String,
}

impl Duration {
    /// The duration as a std value.
    pub fn std(self) -> std::time::Duration {
        self.0
    }

    /// A duration of `secs` seconds.
    pub fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| DurationError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(err("it is empty"));
        }
        if trimmed.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("a unit is missing"));
        }
        let signed = match trimmed.parse::<jiff::SignedDuration>() {
            Ok(d) => d,
            // Days and weeks are calendar units to jiff; in a pipeline a day is 24 hours.
            Err(_) => trimmed
                .parse::<jiff::Span>()
                .and_then(|span| span.to_duration(jiff::SpanRelativeTo::days_are_24_hours()))
                .map_err(|_| err("not a duration"))?,
        };
        if signed.is_negative() {
            return Err(err("it is negative"));
        }
        std::time::Duration::try_from(signed)
            .map(Self)
            .map_err(|_| err("out of range"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match jiff::SignedDuration::try_from(self.0) {
            Ok(d) => write!(f, "{d:#}"),
            Err(_) => write!(f, "{}s", self.0.as_secs()),
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as 30s, 15m or 1h30m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a unit is missing (write it like {v}s or {v}m)"
                )))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
                Err(E::custom(format!(
                    "invalid duration {v}: a unit is missing (write it like 30s or 15m)"
                )))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with units, e.g. 30s, 15m, 1h30m, 2d",
            "examples": ["30s", "15m", "1h30m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_friendly_forms() {
        assert_eq!("2s".parse::<Duration>().unwrap().std().as_secs(), 2);
        assert_eq!("15m".parse::<Duration>().unwrap().std().as_secs(), 900);
        assert_eq!("1h 30m".parse::<Duration>().unwrap().std().as_secs(), 5400);
        assert_eq!("1h30m".parse::<Duration>().unwrap().std().as_secs(), 5400);
        assert_eq!("250ms".parse::<Duration>().unwrap().std().as_millis(), 250);
    }

    #[test]
    fn refuses_bad_forms_clearly() {
        let err = "5 minits".parse::<Duration>().unwrap_err().to_string();
        assert!(err.contains("'5 minits'"), "{err}");
        let err = "30".parse::<Duration>().unwrap_err().to_string();
        assert!(err.contains("unit is missing"), "{err}");
        assert!("-5s".parse::<Duration>().is_err());
    }

    #[test]
    fn round_trips_through_display() {
        for s in ["2s", "15m", "1h 30m", "2d"] {
            let d: Duration = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
    }
}
