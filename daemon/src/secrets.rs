//! Secrets: resolved by name from `$CREDENTIALS_DIRECTORY/<name>` (systemd
//! `LoadCredential=`), then from a secrets file the daemon refuses to read
//! unless only its owner can read it. Values never appear in logs, outputs,
//! errors or events: the [`Redactor`] replaces them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// What replaces a secret value.
pub const MASK: &str = "***";

/// Secrets shorter than this are refused at load: masking them would mask
/// ordinary text, and leaving them unmasked would leak them.
pub const MIN_SECRET_LEN: usize = 4;

/// HMAC keys and bearer secrets shorter than this (in bytes) never authenticate.
pub const MIN_AUTH_KEY_LEN: usize = 16;

/// Why secrets could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The secrets file is readable by others.
    #[error(
        "refusing to read secrets file {path}: its mode is {mode:o}; make it readable by its owner only (chmod 600)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file could not be read.
    #[error("cannot read secrets from {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A secret is too short to be masked reliably.
    #[error(
        "secret '{name}' (from {path}) is {len} characters long; secrets must have at least {MIN_SECRET_LEN} so that they can be masked in logs and outputs"
    )]
    TooShort {
        /// The secret's name.
        name: String,
        /// The file or credential it came from.
        path: PathBuf,
        /// Its length in characters.
        len: usize,
    },
    /// The secrets file is not valid TOML of `name = "value"` pairs.
    #[error("secrets file {path} is not valid: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the values).
        message: String,
    },
}

fn check_len(name: &str, value: &str, path: &Path) -> Result<(), SecretsError> {
    let len = value.chars().count();
    if len < MIN_SECRET_LEN {
        return Err(SecretsError::TooShort {
            name: name.to_owned(),
            path: path.to_owned(),
            len,
        });
    }
    Ok(())
}

/// The HMAC key of a secret: `whsec_<base64>` decodes (`None` when that is
/// not base64); anything else is used as is.
pub fn hmac_key_bytes(secret: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok(),
        None => Some(secret.as_bytes().to_vec()),
    }
}

/// How long a secret is as a credential, for the minimum-length checks
/// (the lengths only: never the value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLengths {
    /// Bytes as a bearer secret.
    pub bearer: usize,
    /// Bytes as an HMAC key (`None`: a `whsec_` value that is not base64).
    pub hmac: Option<usize>,
}

/// Secret values by name.
#[derive(Clone, Default)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("names", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Secrets {
    /// Loads secrets: the credentials directory wins over the secrets file.
    pub fn load(
        credentials_dir: Option<&Path>,
        secrets_file: Option<&Path>,
    ) -> Result<Self, SecretsError> {
        let mut values = BTreeMap::new();
        if let Some(file) = secrets_file
            && file.exists()
        {
            let meta = std::fs::metadata(file).map_err(|source| SecretsError::Io {
                path: file.to_owned(),
                source,
            })?;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretsError::Permissions {
                    path: file.to_owned(),
                    mode,
                });
            }
            let text = std::fs::read_to_string(file).map_err(|source| SecretsError::Io {
                path: file.to_owned(),
                source,
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| SecretsError::Format {
                        path: file.to_owned(),
                        // toml's message can quote the offending line, which may hold a value.
                        message: format!(
                            "TOML syntax error near byte {}",
                            e.span().map_or(0, |s| s.start)
                        ),
                    })?;
            for (name, value) in table {
                match value {
                    toml::Value::String(s) => {
                        check_len(&name, &s, file)?;
                        values.insert(name, s);
                    }
                    _ => {
                        return Err(SecretsError::Format {
                            path: file.to_owned(),
                            message: format!("secret '{name}' must be a string"),
                        });
                    }
                }
            }
        }
        if let Some(dir) = credentials_dir
            && dir.is_dir()
        {
            let entries = std::fs::read_dir(dir).map_err(|source| SecretsError::Io {
                path: dir.to_owned(),
                source,
            })?;
            for entry in entries.flatten() {
                let path = entry.path();
                if !path.is_file() {
                    continue;
                }
                let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned)
                else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).map_err(|source| SecretsError::Io {
                    path: path.clone(),
                    source,
                })?;
                // Credential files usually end with a newline that is not part of the secret.
                let value = text.trim_end_matches(['\n', '\r']);
                check_len(&name, value, &path)?;
                values.insert(name, value.to_owned());
            }
        }
        Ok(Self { values })
    }

    /// Secrets from a map (tests and embedding).
    pub fn from_map(values: BTreeMap<String, String>) -> Self {
        Self { values }
    }

    /// A secret's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Each secret's lengths as a credential (never the values).
    pub fn key_lengths(&self) -> BTreeMap<String, KeyLengths> {
        self.values
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    KeyLengths {
                        bearer: v.len(),
                        hmac: hmac_key_bytes(v).map(|b| b.len()),
                    },
                )
            })
            .collect()
    }

    /// The names of the secrets (never their values).
    pub fn names(&self) -> BTreeSet<String> {
        self.values.keys().cloned().collect()
    }

    /// All secrets as a JSON object (the `secrets` template variable).
    pub fn as_json(&self) -> Value {
        Value::Object(
            self.values
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
    }

    /// A redactor for these values.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.values.values().cloned())
    }
}

/// Replaces secret values with `***` wherever they appear.
#[derive(Clone, Default)]
pub struct Redactor {
    // Longest first, so a secret containing another is masked whole.
    values: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} values)", self.values.len())
    }
}

impl Redactor {
    /// A redactor for `values`. A value spanning several lines is masked
    /// whole and line by line, since logs are redacted a line at a time
    /// (and `\r\n` may stand for `\n`). Values (and lines) shorter than
    /// [`MIN_SECRET_LEN`] are skipped: loading refuses such secrets.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut all = Vec::new();
        for v in values {
            if v.contains(['\n', '\r']) {
                all.extend(
                    v.split('\n')
                        .map(|l| l.trim_end_matches('\r').to_owned())
                        .filter(|l| !l.trim().is_empty()),
                );
                all.push(v.replace("\r\n", "\n"));
                all.push(v.replace("\r\n", "\n").replace('\n', "\r\n"));
            }
            all.push(v);
        }
        let mut values: Vec<String> = all
            .into_iter()
            .filter(|v| v.chars().count() >= MIN_SECRET_LEN)
            .collect();
        values.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        values.dedup();
        Self { values }
    }

    /// The length in bytes of the longest value masked (0 when none): text
    /// written in pieces must keep this many bytes less one together to never
    /// split a value.
    pub fn longest(&self) -> usize {
        self.values.first().map_or(0, String::len)
    }

    /// `text` with every secret value masked.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for v in &self.values {
            if out.contains(v.as_str()) {
                out = Cow::Owned(out.replace(v.as_str(), MASK));
            }
        }
        out
    }

    /// A JSON value with every string (keys included) redacted.
    pub fn redact_json(&self, value: Value) -> Value {
        if self.values.is_empty() {
            return value;
        }
        match value {
            Value::String(s) => Value::String(self.redact(&s).into_owned()),
            Value::Array(items) => {
                Value::Array(items.into_iter().map(|v| self.redact_json(v)).collect())
            }
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (self.redact(&k).into_owned(), self.redact_json(v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_in_text_and_json() {
        let r = Redactor::new(["hunter22".to_owned(), "abc".to_owned()]);
        assert_eq!(r.redact("pw=hunter22!"), "pw=***!");
        assert_eq!(
            r.redact("abc stays"),
            "abc stays",
            "too short to redact safely"
        );
        let v = r.redact_json(serde_json::json!({"a": ["x hunter22"], "hunter22": 1}));
        assert_eq!(v, serde_json::json!({"a": ["x ***"], "***": 1}));
    }

    #[test]
    fn multi_line_secrets_are_masked_whole_and_line_by_line() {
        let pem =
            "-----BEGIN KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0BAQEF\n-----END KEY-----\n".to_owned();
        let r = Redactor::new([pem.clone()]);
        assert_eq!(r.redact(&format!("key:\n{pem}done")), "key:\n***done");
        assert_eq!(r.redact(&pem.replace('\n', "\r\n")), "***");
        // A log sees one line at a time.
        for line in pem.lines() {
            assert_eq!(r.redact(&format!("> {line}")), "> ***", "{line}");
        }
        assert_eq!(r.redact("ordinary text"), "ordinary text");
    }

    #[test]
    fn secrets_too_short_to_mask_are_refused_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "fine = \"long-enough\"\npin = \"x9\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = Secrets::load(None, Some(&file)).unwrap_err().to_string();
        assert!(
            err.contains("secret 'pin'") && err.contains("at least 4") && !err.contains("x9"),
            "{err}"
        );
        std::fs::write(&file, "empty = \"\"\n").unwrap();
        let err = Secrets::load(None, Some(&file)).unwrap_err().to_string();
        assert!(
            err.contains("secret 'empty'") && err.contains("0 characters"),
            "{err}"
        );
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("otp"), "123\n").unwrap();
        let err = Secrets::load(Some(&creds), None).unwrap_err().to_string();
        assert!(
            err.contains("secret 'otp'") && err.contains("creds"),
            "{err}"
        );
    }

    #[test]
    fn key_lengths_decode_whsec_and_never_show_values() {
        let s = Secrets::from_map(BTreeMap::from([
            ("empty".to_owned(), "whsec_".to_owned()),
            ("bad".to_owned(), "whsec_!!!".to_owned()),
            ("raw".to_owned(), "0123456789abcdef".to_owned()),
        ]));
        let l = s.key_lengths();
        assert_eq!(
            l["empty"],
            KeyLengths {
                bearer: 6,
                hmac: Some(0)
            }
        );
        assert_eq!(l["bad"].hmac, None);
        assert_eq!(
            l["raw"],
            KeyLengths {
                bearer: 16,
                hmac: Some(16)
            }
        );
    }

    #[test]
    fn secrets_file_must_be_private_and_credentials_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secrets.toml");
        std::fs::write(&file, "token = \"from-file\"\nother = \"o-value\"\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secrets::load(None, Some(&file)).unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && !err.contains("from-file"),
            "{err}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let creds = dir.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        std::fs::write(creds.join("token"), "from-credentials\n").unwrap();
        let s = Secrets::load(Some(&creds), Some(&file)).unwrap();
        assert_eq!(s.get("token"), Some("from-credentials"));
        assert_eq!(s.get("other"), Some("o-value"));
        assert!(!format!("{s:?}").contains("o-value"));
    }
}
