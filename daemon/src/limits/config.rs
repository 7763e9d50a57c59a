//! The `[limits]` section of `sluiced.toml`, typed: `[limits.global]`,
//! `[limits.default]`, `[limits.users.<name>]` and `[limits.pipelines.<name>]`.
//! A user's table overrides the default key by key.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer};

/// `[limits]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Caps over every run.
    #[serde(default)]
    pub global: GlobalLimits,
    /// Every user's limits unless `users.<name>` overrides a key.
    #[serde(default)]
    pub default: UserLimits,
    /// Per-user overrides.
    #[serde(default)]
    pub users: BTreeMap<String, UserLimits>,
    /// Per-pipeline trigger rates (on top of the user's).
    #[serde(default)]
    pub pipelines: BTreeMap<String, PipelineLimits>,
}

/// `[limits.global]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GlobalLimits {
    /// Runs `running` at once across every user and pipeline.
    pub max_concurrent: Option<u32>,
    /// Runs accepted but not started, across every user (default 10,000); past it triggers are refused.
    pub max_queued: Option<u64>,
}

/// `[limits.default]` and `[limits.users.<name>]`; every key optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserLimits {
    /// Sustained trigger rate, e.g. `"60/min"`.
    pub rate: Option<Rate>,
    /// Triggers accepted at once before the rate applies (default: the rate's count).
    pub burst: Option<u32>,
    /// Runs of this user `running` at once.
    pub max_concurrent: Option<u32>,
    /// Runs of this user accepted but not started (default 2,000); past it triggers are refused.
    pub max_queued: Option<u64>,
    /// Runs created per day.
    pub daily_runs: Option<u64>,
    /// LLM tokens used per day.
    pub daily_llm_tokens: Option<u64>,
    /// When the day starts, e.g. `"00:00 Europe/Berlin"` (default: midnight UTC).
    pub day_starts: Option<DayStart>,
}

/// `[limits.pipelines.<name>]`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PipelineLimits {
    /// Sustained trigger rate of the pipeline, whoever triggers it.
    pub rate: Option<Rate>,
    /// Triggers accepted at once before the rate applies (default: the rate's count).
    pub burst: Option<u32>,
}

/// Runs `running` at once across every user when `[limits.global] max_concurrent` is unset.
pub const DEFAULT_MAX_CONCURRENT: u32 = 64;

impl GlobalLimits {
    /// The global concurrency cap in force: a burst beyond it waits in the
    /// (bounded) queue instead of all starting at once.
    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT)
    }
}

impl UserLimits {
    /// `self` with every unset key taken from `default`.
    pub fn or(&self, default: &UserLimits) -> UserLimits {
        UserLimits {
            rate: self.rate.or(default.rate),
            burst: self.burst.or(default.burst),
            max_concurrent: self.max_concurrent.or(default.max_concurrent),
            max_queued: self.max_queued.or(default.max_queued),
            daily_runs: self.daily_runs.or(default.daily_runs),
            daily_llm_tokens: self.daily_llm_tokens.or(default.daily_llm_tokens),
            day_starts: self
                .day_starts
                .clone()
                .or_else(|| default.day_starts.clone()),
        }
    }
}

impl LimitsConfig {
    /// The limits in force for `user`.
    pub fn for_user(&self, user: &str) -> UserLimits {
        match self.users.get(user) {
            Some(u) => u.or(&self.default),
            None => self.default.clone(),
        }
    }
}

/// A rate: `count` triggers per `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Triggers per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

impl Rate {
    /// The time one trigger's allowance takes to come back.
    pub fn interval(&self) -> Duration {
        self.per / self.count.max(1)
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s".to_owned(),
            60 => "min".to_owned(),
            3600 => "h".to_owned(),
            86_400 => "day".to_owned(),
            _ => sluice_shared::Duration(self.per).to_string(),
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid rate '{s}': {why} (write it like 60/min, 10/s, 100/h or 5/30s)")
        };
        let (n, unit) = s.split_once('/').ok_or_else(|| bad("no '/'"))?;
        let count: u32 = n
            .trim()
            .parse()
            .map_err(|_| bad("the count is not a whole number"))?;
        if count == 0 {
            return Err(bad("the count must be at least 1"));
        }
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            other => other
                .parse::<sluice_shared::Duration>()
                .map_err(|e| bad(&e.to_string()))?
                .std(),
        };
        if per.is_zero() {
            return Err(bad("the period must not be zero"));
        }
        Ok(Self { count, per })
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// When a user's day starts: a time of day in a time zone.
#[derive(Clone, Debug, PartialEq)]
pub struct DayStart {
    /// Minutes after midnight.
    pub minutes: u32,
    /// The zone the time is read in.
    pub zone: TimeZone,
    /// As written.
    pub text: String,
}

impl Default for DayStart {
    fn default() -> Self {
        Self {
            minutes: 0,
            zone: TimeZone::UTC,
            text: "00:00 UTC".into(),
        }
    }
}

impl FromStr for DayStart {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: String| {
            format!("invalid day_starts '{s}': {why} (write it like \"00:00 Europe/Berlin\")")
        };
        let mut parts = s.split_whitespace();
        let time = parts.next().ok_or_else(|| bad("it is empty".into()))?;
        let zone_name = parts.next();
        if parts.next().is_some() {
            return Err(bad("expected a time and a time zone".into()));
        }
        let (h, m) = time
            .split_once(':')
            .ok_or_else(|| bad("the time is not HH:MM".into()))?;
        let h: u32 = h
            .parse()
            .map_err(|_| bad("the hour is not a number".into()))?;
        let m: u32 = m
            .parse()
            .map_err(|_| bad("the minute is not a number".into()))?;
        if h > 23 || m > 59 {
            return Err(bad("the time is out of range".into()));
        }
        let zone = match zone_name {
            None | Some("UTC") => TimeZone::UTC,
            Some(z) => TimeZone::get(z).map_err(|e| bad(format!("unknown time zone: {e}")))?,
        };
        Ok(Self {
            minutes: h * 60 + m,
            zone,
            text: s.trim().to_owned(),
        })
    }
}

impl<'de> Deserialize<'de> for DayStart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DayStart {
    /// The day `at` falls in (`YYYY-MM-DD` of the day's start, in the zone)
    /// and the instant the next day starts.
    pub fn day_of(&self, at: jiff::Timestamp) -> (String, jiff::Timestamp) {
        let shift = jiff::SignedDuration::from_secs(i64::from(self.minutes) * 60);
        let local = at.to_zoned(self.zone.clone());
        // The day is the calendar date of (now - start time): before the start it is still yesterday.
        let shifted = local.datetime() - shift;
        let date = shifted.date();
        let next_date = date.tomorrow().unwrap_or(date);
        let next_local = next_date.to_datetime(jiff::civil::Time::midnight()) + shift;
        let next = self
            .zone
            .to_ambiguous_zoned(next_local)
            .later()
            .map_or(at + jiff::SignedDuration::from_hours(24), |z| z.timestamp());
        (date.to_string(), next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_clear_errors() {
        let r: Rate = "60/min".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_secs(1));
        let r: Rate = "5/30s".parse().unwrap();
        assert_eq!(r.interval(), Duration::from_secs(6));
        assert!("0/min".parse::<Rate>().unwrap_err().contains("at least 1"));
        assert!("ten/min".parse::<Rate>().unwrap_err().contains("60/min"));
    }

    #[test]
    fn user_tables_override_the_default_key_by_key() {
        let c: LimitsConfig = toml::from_str(
            r#"
[global]
max_concurrent = 64
[default]
rate = "60/min"
burst = 10
max_concurrent = 8
daily_runs = 5000
day_starts = "00:00 Europe/Berlin"
[users.alice]
rate = "10/min"
"#,
        )
        .unwrap();
        let a = c.for_user("alice");
        assert_eq!(a.rate, Some("10/min".parse().unwrap()));
        assert_eq!(a.burst, Some(10));
        assert_eq!(a.max_concurrent, Some(8));
        assert_eq!(c.global.max_concurrent, Some(64));
        assert_eq!(c.for_user("bob").rate, Some("60/min".parse().unwrap()));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = toml::from_str::<LimitsConfig>("[default]\nrat = \"1/s\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rat"), "{e}");
        let e = toml::from_str::<LimitsConfig>("[default]\nday_starts = \"25:00 UTC\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn days_start_at_the_configured_time_in_the_zone() {
        let d: DayStart = "06:00 Europe/Berlin".parse().unwrap();
        // 2026-11-22 04:30 UTC is 05:30 in Berlin: still the 21st's day.
        let at: jiff::Timestamp = "2026-11-22T04:30:00Z".parse().unwrap();
        let (day, next) = d.day_of(at);
        assert_eq!(day, "2026-11-21");
        assert_eq!(next.to_string(), "2026-11-22T05:00:00Z");
        let (day, _) = d.day_of("2026-11-22T05:00:00Z".parse().unwrap());
        assert_eq!(day, "2026-11-22");
    }
}
