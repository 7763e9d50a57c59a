//! Webhook signature headers: any `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` values and any key through the Standard Webhooks check.
//! Nothing but a real signature may pass, and a real one always does.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sluice_daemon::triggers::webhook::{hmac_key, sign_standard_webhook, verify_standard_webhook};

const NOW: i64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    // Fields separated by 0xff (never in UTF-8): secret, id, timestamp, signature, body.
    let mut f = data.split(|b| *b == 0xff);
    let (Some(secret), Some(id), Some(ts), Some(sig)) = (f.next(), f.next(), f.next(), f.next())
    else {
        return;
    };
    let body = f.next().unwrap_or_default();
    let Ok(secret) = std::str::from_utf8(secret) else {
        return;
    };
    let Ok(key) = hmac_key(secret) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("webhook-id", id),
        ("webhook-timestamp", ts),
        ("webhook-signature", sig),
    ] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    }
    let verdict = verify_standard_webhook(&[&key], &headers, body, NOW);
    // A fuzzed header passes only if it happens to carry the real signature.
    if verdict.is_ok() {
        let (Ok(id), Ok(ts)) = (std::str::from_utf8(id), std::str::from_utf8(ts)) else {
            panic!("a non-text header passed");
        };
        // The daemon reads headers trimmed.
        let (id, ts) = (id.trim(), ts.trim());
        let stamp: i64 = ts.parse().expect("a passing timestamp is a number");
        // The signature covers the timestamp as sent; compare only when that is its plain form.
        if ts == stamp.to_string() {
            let real = sign_standard_webhook(&key, id, stamp, body);
            let sig = String::from_utf8_lossy(sig);
            assert!(
                sig.split_whitespace().any(|s| s == real),
                "{sig:?} passed without the real signature {real:?}"
            );
        }
    }
    // The real signature of the same delivery always passes.
    let Ok(id_text) = std::str::from_utf8(id) else {
        return;
    };
    if id_text.is_empty() || id_text.trim() != id_text {
        return;
    }
    // Header text is visible ASCII; anything else reads as no header at all
    // (found by this target; fuzz_regressions.rs keeps it refused).
    let Ok(id_value) = HeaderValue::from_str(id_text) else {
        return;
    };
    if id_value.to_str().is_err() {
        return;
    }
    let mut good = HeaderMap::new();
    good.insert("webhook-id", id_value);
    good.insert("webhook-timestamp", HeaderValue::from(NOW));
    let signed = sign_standard_webhook(&key, id_text, NOW, body);
    if let Ok(v) = HeaderValue::from_str(&signed) {
        good.insert("webhook-signature", v);
        verify_standard_webhook(&[&key], &good, body, NOW)
            .expect("a correctly signed delivery passes");
    }
});
