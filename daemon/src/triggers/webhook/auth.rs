//! Who sent a delivery: a user token, a bearer secret or a Standard Webhooks
//! (HMAC) signature, checked on the raw bytes.

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use hmac::digest::CtOutput;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sluice_shared::model::trigger::{WebhookAuth, WebhookTrigger};

use super::{Refusal, TIMESTAMP_TOLERANCE_SECS, WebhookState, header_text};
use crate::secrets::{MIN_AUTH_KEY_LEN, Secrets};

/// Why a delivery was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials were presented (401).
    Missing(String),
    /// Credentials were presented and are wrong, stale or malformed (403).
    Wrong(String),
    /// The server cannot check: a secret is not configured (500).
    Config(String),
    /// The trigger's secret is too short to authenticate anything (401).
    Disabled(String),
}

impl AuthFailure {
    pub(super) fn refusal(self, pipeline: &str) -> Refusal {
        match self {
            Self::Missing(m) => Refusal::new(StatusCode::UNAUTHORIZED, m),
            Self::Disabled(m) => Refusal::new(
                StatusCode::UNAUTHORIZED,
                format!("webhook of pipeline '{pipeline}' is disabled: {m}"),
            ),
            Self::Wrong(m) => Refusal::new(StatusCode::FORBIDDEN, m),
            Self::Config(m) => Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("webhook of pipeline '{pipeline}' cannot be verified: {m}"),
            ),
        }
    }
}

/// The user of a `slk_` bearer token, if the request presents one: unknown,
/// revoked or out-of-scope tokens are refused (403), not passed on to other checks.
pub(super) async fn user_token(
    st: &WebhookState,
    pipeline: &str,
    headers: &HeaderMap,
) -> Result<Option<String>, Refusal> {
    let Some(token) = header_text(headers, "authorization")
        .and_then(|a| {
            a.strip_prefix("Bearer ")
                .or_else(|| a.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| t.starts_with(crate::limits::tokens::TOKEN_PREFIX))
    else {
        return Ok(None);
    };
    // Issued tokens carry 32 random bytes; a short one was never issued and is not looked up.
    if token.len() < crate::limits::tokens::TOKEN_PREFIX.len() + MIN_AUTH_KEY_LEN {
        return Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "the token is too short to be a sluice token",
        ));
    }
    let row = st
        .triggers
        .engine()
        .store()
        .token_by_hash(&crate::limits::tokens::token_hash(token))
        .await
        .map_err(|e| {
            Refusal::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot check the token: {e}"),
            )
        })?;
    match row {
        None => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "the token is not valid (unknown or revoked)",
        )),
        Some(t) if t.pipeline.as_deref().is_some_and(|p| p != pipeline) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            format!("the token may not trigger pipeline '{pipeline}'"),
        )),
        Some(t) => Ok(Some(t.user)),
    }
}

/// Finds the webhook trigger the request authenticates for.
pub(super) fn authenticate<'a>(
    hooks: &[&'a WebhookTrigger],
    secrets: &Secrets,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<&'a WebhookTrigger, AuthFailure> {
    let mut failure: Option<AuthFailure> = None;
    for hook in hooks {
        let result = match hook.auth {
            WebhookAuth::None => Ok(()),
            WebhookAuth::Bearer => check_bearer(hook, secrets, headers),
            WebhookAuth::Hmac => hmac_keys(hook, secrets).and_then(|keys| {
                let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
                verify_standard_webhook(&refs, headers, body, now_secs)
            }),
        };
        match result {
            Ok(()) => return Ok(hook),
            // Keep the most telling failure: wrong credentials beat missing ones.
            Err(f) => {
                let rank = |f: &AuthFailure| match f {
                    AuthFailure::Missing(_) => 0,
                    AuthFailure::Wrong(_) => 1,
                    AuthFailure::Disabled(_) => 2,
                    AuthFailure::Config(_) => 3,
                };
                if failure.as_ref().is_none_or(|old| rank(&f) > rank(old)) {
                    failure = Some(f);
                }
            }
        }
    }
    Err(failure
        .unwrap_or_else(|| AuthFailure::Missing("no webhook trigger accepts this request".into())))
}

/// The trigger's secrets as `(name, value)`.
pub(super) fn secret_values<'s>(
    hook: &'s WebhookTrigger,
    secrets: &'s Secrets,
) -> Result<Vec<(&'s str, &'s str)>, AuthFailure> {
    let names = hook.secret.as_ref().map(|s| s.names()).unwrap_or_default();
    if names.is_empty() {
        return Err(AuthFailure::Config("no secret is named".into()));
    }
    names
        .into_iter()
        .map(|n| {
            secrets
                .get(n)
                .map(|v| (n, v))
                .ok_or_else(|| AuthFailure::Config(format!("secret '{n}' is not configured")))
        })
        .collect()
}

/// Keeps the credentials long enough to authenticate; when none is, the
/// webhook is disabled, naming the secrets.
pub(super) fn strong<T>(
    found: Vec<(&str, Option<T>, usize)>,
    what: &str,
) -> Result<Vec<T>, AuthFailure> {
    let mut weak = Vec::new();
    let mut keys = Vec::new();
    for (name, key, len) in found {
        match key {
            Some(k) if len >= MIN_AUTH_KEY_LEN => keys.push(k),
            _ => weak.push(format!("'{name}'")),
        }
    }
    if keys.is_empty() {
        return Err(AuthFailure::Disabled(format!(
            "secret {} is not a valid {what} of at least {MIN_AUTH_KEY_LEN} bytes",
            weak.join(", ")
        )));
    }
    Ok(keys)
}

/// The trigger's HMAC keys of at least [`MIN_AUTH_KEY_LEN`] bytes.
pub(super) fn hmac_keys(
    hook: &WebhookTrigger,
    secrets: &Secrets,
) -> Result<Vec<Vec<u8>>, AuthFailure> {
    let found = secret_values(hook, secrets)?
        .into_iter()
        .map(|(n, v)| {
            let key = crate::secrets::hmac_key_bytes(v);
            let len = key.as_ref().map_or(0, Vec::len);
            (n, key, len)
        })
        .collect();
    strong(found, "HMAC key")
}

pub(super) fn check_bearer(
    hook: &WebhookTrigger,
    secrets: &Secrets,
    headers: &HeaderMap,
) -> Result<(), AuthFailure> {
    let Some(auth) = header_text(headers, "authorization") else {
        return Err(AuthFailure::Missing(
            "missing Authorization: Bearer <token>".into(),
        ));
    };
    let Some(token) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    else {
        return Err(AuthFailure::Wrong(
            "the Authorization header is not a bearer token".into(),
        ));
    };
    // Compare digests in constant time, so neither content nor length leaks.
    let given = CtOutput::<Sha256>::new(Sha256::digest(token.trim().as_bytes()));
    let mut ok = false;
    let values = strong(
        secret_values(hook, secrets)?
            .into_iter()
            .map(|(n, v)| (n, Some(v), v.len()))
            .collect(),
        "bearer secret",
    )?;
    for value in values {
        let expected = CtOutput::<Sha256>::new(Sha256::digest(value.as_bytes()));
        ok |= given == expected;
    }
    if ok {
        Ok(())
    } else {
        Err(AuthFailure::Wrong("the bearer token is not valid".into()))
    }
}

/// The HMAC key of a secret: `whsec_<base64>` decodes; anything else is used as is.
pub fn hmac_key(secret: &str) -> Result<Vec<u8>, AuthFailure> {
    crate::secrets::hmac_key_bytes(secret)
        .ok_or_else(|| AuthFailure::Config("a whsec_ secret is not valid base64".into()))
}

/// Verifies a Standard Webhooks signature: `webhook-signature` holds one or
/// more space-separated `v1,<base64 HMAC-SHA256>` over `id.timestamp.body`;
/// any of `keys` may match (key rotation); the timestamp must be within
/// [`TIMESTAMP_TOLERANCE_SECS`] of `now_secs`.
pub fn verify_standard_webhook(
    keys: &[&[u8]],
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), AuthFailure> {
    let (Some(id), Some(ts), Some(sigs)) = (
        header_text(headers, "webhook-id"),
        header_text(headers, "webhook-timestamp"),
        header_text(headers, "webhook-signature"),
    ) else {
        return Err(AuthFailure::Missing(
            "missing webhook-id, webhook-timestamp or webhook-signature header".into(),
        ));
    };
    let stamp: i64 = ts.parse().map_err(|_| {
        AuthFailure::Wrong("webhook-timestamp is not a Unix time in seconds".into())
    })?;
    let skew = now_secs.saturating_sub(stamp);
    if skew.abs() > TIMESTAMP_TOLERANCE_SECS {
        return Err(AuthFailure::Wrong(format!(
            "webhook-timestamp is {}s {} the server's time (tolerance {TIMESTAMP_TOLERANCE_SECS}s)",
            skew.abs(),
            if skew > 0 { "behind" } else { "ahead of" }
        )));
    }
    let v1: Vec<&str> = sigs
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .collect();
    if v1.is_empty() {
        return Err(AuthFailure::Wrong(
            "webhook-signature has no v1 signature".into(),
        ));
    }
    // A v1 entry that is not base64 of 32 bytes is there, and does not match.
    let candidates: Vec<Vec<u8>> = v1
        .iter()
        .filter_map(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .filter(|sig| sig.len() == 32)
        .collect();
    let mut ok = false;
    for key in keys {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            continue;
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        for sig in &candidates {
            // verify_slice compares in constant time.
            ok |= mac.clone().verify_slice(sig).is_ok();
        }
    }
    if ok {
        Ok(())
    } else {
        Err(AuthFailure::Wrong("the signature does not match".into()))
    }
}

/// Signs like a Standard Webhooks sender: `v1,<base64>` (tests and benchmarks).
pub fn sign_standard_webhook(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, ts: &str, sig: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("webhook-id", id.parse().unwrap());
        h.insert("webhook-timestamp", ts.parse().unwrap());
        h.insert("webhook-signature", sig.parse().unwrap());
        h
    }

    /// The published Standard Webhooks test vector (standard-webhooks repo, libraries' tests).
    #[test]
    fn standard_webhooks_published_vector_verifies() {
        let key = hmac_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            sign_standard_webhook(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            sig
        );
        let h = headers("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", sig);
        assert_eq!(
            verify_standard_webhook(&[&key], &h, body, 1614265330),
            Ok(())
        );
        // One changed bit anywhere fails.
        assert!(
            verify_standard_webhook(&[&key], &h, br#"{"test": 2432232315}"#, 1614265330).is_err()
        );
        let h2 = headers("msg_p5jXN8AQM9LWM0D4loKWxJeK", "1614265330", sig);
        assert!(verify_standard_webhook(&[&key], &h2, body, 1614265330).is_err());
        let mut other = key.clone();
        other[0] ^= 1;
        assert!(verify_standard_webhook(&[&other], &h, body, 1614265330).is_err());
        // Either of two keys (rotation), and several signatures in the header.
        assert_eq!(
            verify_standard_webhook(&[&other, &key], &h, body, 1614265330),
            Ok(())
        );
        let multi = headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            &format!("v1,AAAA v1a,xyz {sig}"),
        );
        assert_eq!(
            verify_standard_webhook(&[&key], &multi, body, 1614265330),
            Ok(())
        );
    }

    /// A `v1,` entry that does not match (short, not base64, or another key's)
    /// is a signature that does not match, not a missing one.
    #[test]
    fn a_wrong_v1_signature_is_said_not_to_match() {
        let key = b"secret-key-bytes".to_vec();
        let ts = 1_700_000_000;
        for sig in [
            "v1,AAAA",
            "v1,!!!",
            &sign_standard_webhook(b"other", "m", ts, b"{}"),
        ] {
            let h = headers("m", &ts.to_string(), sig);
            assert_eq!(
                verify_standard_webhook(&[&key], &h, b"{}", ts),
                Err(AuthFailure::Wrong("the signature does not match".into())),
                "{sig}"
            );
        }
        let h = headers("m", &ts.to_string(), "v2,AAAA");
        assert_eq!(
            verify_standard_webhook(&[&key], &h, b"{}", ts),
            Err(AuthFailure::Wrong(
                "webhook-signature has no v1 signature".into()
            ))
        );
    }

    #[test]
    fn timestamps_within_five_minutes_only() {
        let key = b"secret-key-bytes".to_vec();
        let body = b"{}";
        for (offset, ok) in [
            (299, true),
            (-299, true),
            (300, true),
            (301, false),
            (-301, false),
        ] {
            let ts = 1_700_000_000 + offset;
            let sig = sign_standard_webhook(&key, "msg_1", ts, body);
            let h = headers("msg_1", &ts.to_string(), &sig);
            assert_eq!(
                verify_standard_webhook(&[&key], &h, body, 1_700_000_000).is_ok(),
                ok,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn short_keys_disable_the_trigger_and_name_the_secret() {
        let hook: WebhookTrigger = serde_json::from_value(
            serde_json::json!({ "auth": "hmac", "secret": ["weak", "good"] }),
        )
        .unwrap();
        let secrets = Secrets::from_map(std::collections::BTreeMap::from([
            ("weak".to_owned(), "whsec_".to_owned()),
            ("good".to_owned(), "0123456789abcdef".to_owned()),
        ]));
        assert_eq!(
            hmac_keys(&hook, &secrets).unwrap(),
            vec![b"0123456789abcdef".to_vec()]
        );
        let only_weak = Secrets::from_map(std::collections::BTreeMap::from([
            ("weak".to_owned(), "whsec_".to_owned()),
            ("good".to_owned(), "0123456789abcde".to_owned()),
        ]));
        match hmac_keys(&hook, &only_weak) {
            Err(AuthFailure::Disabled(m)) => {
                assert!(m.contains("'weak'") && m.contains("'good'"), "{m}")
            }
            other => panic!("{other:?}"),
        }
    }
}
