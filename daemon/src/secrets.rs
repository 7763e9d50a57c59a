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

/// Secrets shorter than this are not redacted (they would mask ordinary text).
const MIN_REDACT_LEN: usize = 4;

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
    /// The secrets file is not valid TOML of `name = "value"` pairs.
    #[error("secrets file {path} is not valid: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the values).
        message: String,
    },
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
                values.insert(name, text.trim_end_matches(['\n', '\r']).to_owned());
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
    /// A redactor for `values`.
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        let mut values: Vec<String> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_REDACT_LEN)
            .collect();
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
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
