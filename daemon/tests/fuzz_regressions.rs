//! Inputs the fuzz targets in `fuzz/` found, kept as ordinary tests.

use axum::http::{HeaderMap, HeaderValue};
use sluice_daemon::triggers::webhook::{sign_standard_webhook, verify_standard_webhook};

/// webhook_signature, crash-fd42dab2: a `webhook-id` that is not ASCII (here
/// "ק@Γ") cannot be read as header text. Even correctly signed over those
/// bytes, the delivery is refused, never accepted on a partial reading.
#[test]
fn a_non_ascii_webhook_id_is_refused_even_when_signed() {
    let key: &[u8] = b"0123456789abcdef0123456789abcdef";
    let id = "\u{5e7}@\u{393}";
    let now = 1_700_000_000;
    let mut headers = HeaderMap::new();
    headers.insert("webhook-id", HeaderValue::from_str(id).unwrap());
    headers.insert("webhook-timestamp", HeaderValue::from(now));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&sign_standard_webhook(key, id, now, b"")).unwrap(),
    );
    assert!(verify_standard_webhook(&[key], &headers, b"", now).is_err());
    // The same delivery with an ASCII id passes, so the refusal is about the id.
    headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
    headers.insert(
        "webhook-signature",
        HeaderValue::from_str(&sign_standard_webhook(key, "msg_1", now, b"")).unwrap(),
    );
    assert!(verify_standard_webhook(&[key], &headers, b"", now).is_ok());
}
