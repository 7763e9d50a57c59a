//! Triggers: cron schedules and webhooks. Manual triggers need no declaration.

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::node::{FieldError, from_value_at};
use crate::document::DocPath;
use crate::duration::Duration;

/// Something that starts runs on its own.
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Trigger {
    /// A cron schedule.
    Cron(CronTrigger),
    /// `POST /hooks/<pipeline>` on the daemon's HTTP listener.
    Webhook(WebhookEntry),
}

/// What to do about fires missed while the daemon was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MisfirePolicy {
    /// Record the missed fires and wait for the next one (the default).
    #[default]
    Skip,
    /// Run once for the missed fires if the latest is within `catchup_window`.
    RunOnce,
}

/// A cron schedule.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronTrigger {
    /// Five fields (`min hour dom mon dow`), names (MON-FRI, JAN) or a macro (@daily).
    pub cron: String,
    /// IANA time zone the expression is read in (default: the daemon's local zone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Allow a sixth, leading seconds field.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub seconds: bool,
    /// Input values for runs this schedule starts.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub inputs: IndexMap<String, Value>,
    /// What to do about fires missed while the daemon was down.
    #[serde(default)]
    pub misfire: MisfirePolicy,
    /// With `misfire: run_once`: how old a missed fire may be and still run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catchup_window: Option<Duration>,
    /// Start paused (resume from the console or CLI).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

/// A webhook trigger as written: `- webhook: { auth: hmac, secret: name }`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookEntry {
    /// The webhook's settings.
    pub webhook: WebhookTrigger,
}

/// How webhook requests prove who sent them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookAuth {
    /// Standard Webhooks HMAC-SHA256 signature (the default).
    #[default]
    Hmac,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// No authentication; only sensible on a private listener.
    None,
}

/// One secret name, or two during a key rotation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum SecretNames {
    /// One secret.
    One(String),
    /// Several, all accepted (for key rotation).
    Many(Vec<String>),
}

impl SecretNames {
    /// The names as a list.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Self::One(s) => vec![s.as_str()],
            Self::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// Webhook settings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookTrigger {
    /// `hmac`, `bearer` or `none`.
    #[serde(default)]
    pub auth: WebhookAuth,
    /// Name(s) of the secret holding the key or token; never the value itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretNames>,
    /// The user whose limits apply to runs this webhook starts (default: the owner).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

const CRON_FIELDS: &[&str] = &[
    "cron",
    "timezone",
    "seconds",
    "inputs",
    "misfire",
    "catchup_window",
    "paused",
];
const WEBHOOK_FIELDS: &[&str] = &["auth", "secret", "user"];

impl Trigger {
    /// Reads a trigger from its document value.
    pub fn from_value(value: &Value) -> Result<Trigger, FieldError> {
        let map = value.as_object();
        if map.is_some_and(|m| m.contains_key("cron")) {
            return from_value_at(value.clone(), "a cron trigger", CRON_FIELDS).map(Trigger::Cron);
        }
        if map.is_some_and(|m| m.contains_key("webhook")) {
            return from_value_at(value.clone(), "a webhook trigger", &["webhook"])
                .map(Trigger::Webhook)
                .map_err(|mut e| {
                    // Hints inside `webhook:` should list the webhook's own fields.
                    if e.message.starts_with("unknown field") && e.path.0.len() > 1 {
                        let field = e.path.to_string();
                        let name = field.rsplit('.').next().unwrap_or_default();
                        e.hint = crate::suggest::did_you_mean(name, WEBHOOK_FIELDS.iter().copied())
                            .or_else(|| {
                                Some(format!("allowed fields: {}", WEBHOOK_FIELDS.join(", ")))
                            });
                    }
                    e
                });
        }
        Err(FieldError {
            path: DocPath::root(),
            message: "a trigger needs `cron:` or `webhook:`".into(),
            hint: Some("e.g. `- cron: \"0 7 * * MON-FRI\"` or `- webhook: { auth: hmac, secret: hook_key }`".into()),
            at_key: false,
        })
    }
}

impl<'de> Deserialize<'de> for Trigger {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Trigger::from_value(&value).map_err(|e| serde::de::Error::custom(e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_forms() {
        let t = Trigger::from_value(&json!({"cron": "0 7 * * *", "timezone": "Europe/Berlin"}))
            .unwrap();
        assert!(matches!(t, Trigger::Cron(c) if c.timezone.as_deref() == Some("Europe/Berlin")));
        let t =
            Trigger::from_value(&json!({"webhook": {"auth": "bearer", "secret": "tok"}})).unwrap();
        assert!(matches!(t, Trigger::Webhook(w) if w.webhook.auth == WebhookAuth::Bearer));
    }

    #[test]
    fn neither_form_is_explained() {
        let e = Trigger::from_value(&json!({"every": "5m"})).unwrap_err();
        assert!(e.message.contains("`cron:` or `webhook:`"));
    }

    #[test]
    fn serialises_back_to_the_written_shape() {
        let v = json!({"webhook": {"auth": "hmac", "secret": "k"}});
        let t = Trigger::from_value(&v).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), v);
    }
}
