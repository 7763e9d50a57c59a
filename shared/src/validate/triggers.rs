//! Declared inputs and params, the values given for them, and triggers:
//! cron expressions and time zones, webhook authentication and secret names.

use indexmap::IndexMap;
use serde_json::Value;

use super::{Checker, is_identifier, is_valid_name};
use crate::cron;
use crate::document::DocPath;
use crate::inputs::{self, ProblemKind};
use crate::model::trigger::{MisfirePolicy, WebhookAuth};
use crate::model::{InputSpec, Trigger};

/// Checks declared inputs (or template params): names, defaults and choices.
pub fn check_inputs(
    c: &mut Checker<'_>,
    base: &DocPath,
    inputs: &IndexMap<String, InputSpec>,
    what: &str,
) {
    for (name, spec) in inputs {
        let path = base.key(name);
        if !is_identifier(name) {
            c.error(
                &path,
                true,
                format!("invalid {what} name '{name}'"),
                Some("use letters, digits and _".into()),
            );
        }
        if let Some(default) = &spec.default
            && !spec.ty.accepts(default)
        {
            c.error(
                &path.key("default"),
                false,
                format!("default of {what} '{name}' is not a {}", spec.ty.name()),
                None,
            );
        }
        for (j, choice) in spec.choices.iter().enumerate() {
            if !spec.ty.accepts(choice) {
                c.error(
                    &path.key("choices").index(j),
                    false,
                    format!(
                        "choice of {what} '{name}' is not {}",
                        spec.ty.with_article()
                    ),
                    None,
                );
            }
        }
        if let Some(default) = &spec.default
            && !spec.choices.is_empty()
            && !spec.choices.contains(default)
        {
            c.error(
                &path.key("default"),
                false,
                format!("default of {what} '{name}' is not one of its choices"),
                None,
            );
        }
    }
}

/// Checks that `values` fit the declared specs ([`inputs::check`]); missing
/// required ones are reported at `base`. `what` is "input" or "param".
pub fn check_values(
    c: &mut Checker<'_>,
    base: &DocPath,
    values: &IndexMap<String, Value>,
    specs: &IndexMap<String, InputSpec>,
    what: &'static str,
) {
    for p in inputs::check(specs, values, what) {
        let at = base.key(&p.name);
        match &p.kind {
            ProblemKind::Unknown { hint } => {
                c.error(&at, true, p.message(), Some(hint.clone()));
            }
            ProblemKind::WrongType(_) | ProblemKind::NotAChoice => {
                c.error(&at, false, p.message(), None);
            }
            // In a file the value is missing *here*: say where it could go.
            ProblemKind::Missing => c.error(
                base,
                true,
                format!("required {what} '{}' is not given", p.name),
                Some("give it a value here or a default where it is declared".into()),
            ),
        }
    }
}

/// Checks triggers: cron expressions, time zones, inputs, webhook secrets.
pub fn check_triggers(
    c: &mut Checker<'_>,
    triggers: &[(usize, Trigger)],
    inputs: &IndexMap<String, InputSpec>,
) {
    for (i, trigger) in triggers {
        let base = DocPath::root().key("triggers").index(*i);
        match trigger {
            Trigger::Cron(cron) => {
                if let Err(e) = cron::parse_expression(&cron.cron, cron.seconds) {
                    c.error(&base.key("cron"), false, e.message, e.hint);
                }
                if let Some(tz) = &cron.timezone
                    && let Err(e) = cron::parse_timezone(tz)
                {
                    c.error(&base.key("timezone"), false, e.message, e.hint);
                }
                if cron.catchup_window.is_some() && cron.misfire != MisfirePolicy::RunOnce {
                    c.warn(
                        &base.key("catchup_window"),
                        true,
                        "catchup_window only applies with `misfire: run_once`".into(),
                        None,
                    );
                }
                check_values(c, &base.key("inputs"), &cron.inputs, inputs, "input");
            }
            Trigger::Webhook(entry) => {
                let w = &entry.webhook;
                let path = base.key("webhook");
                match (&w.auth, &w.secret) {
                    (WebhookAuth::None, Some(_)) => {
                        c.warn(
                            &path.key("secret"),
                            true,
                            "`auth: none` ignores the secret".into(),
                            None,
                        );
                    }
                    (WebhookAuth::None, None) => {}
                    (auth, None) => {
                        let auth = if *auth == WebhookAuth::Hmac {
                            "hmac"
                        } else {
                            "bearer"
                        };
                        c.error(
                            &path,
                            true,
                            format!("webhook auth '{auth}' names no secret"),
                            Some("add `secret: <name>` (the name of a secret, not its value), or `auth: none` for an open hook".into()),
                        );
                    }
                    (_, Some(names)) => {
                        let list = names.names();
                        if list.is_empty() || list.len() > 2 {
                            c.error(
                                &path.key("secret"),
                                false,
                                "give one secret name, or two during a key rotation".into(),
                                None,
                            );
                        }
                        for (j, name) in list.iter().enumerate() {
                            let p = if list.len() > 1
                                || matches!(names, crate::model::trigger::SecretNames::Many(_))
                            {
                                path.key("secret").index(j)
                            } else {
                                path.key("secret")
                            };
                            if name.starts_with("whsec_") || !is_valid_name(name) {
                                c.error(&p, false, format!("'{}' is not a secret name", redact_hint(name)), Some("give the name of a secret (a file in $CREDENTIALS_DIRECTORY or a key of the secrets file), never the secret itself".into()));
                            }
                        }
                    }
                }
                if let Some(user) = &w.user
                    && user.trim().is_empty()
                {
                    c.error(&path.key("user"), false, "empty user".into(), None);
                }
            }
        }
    }
}

/// Shows only the start of something that may be a secret value.
fn redact_hint(s: &str) -> String {
    let head: String = s.chars().take(6).collect();
    if s.chars().count() > 6 {
        format!("{head}…")
    } else {
        head
    }
}
