//! LLM providers: the `[llm.providers.<name>]` tables of `sluiced.toml`, typed
//! and resolved (URL checked, API key read from its secret) once at start, so a
//! mistake shows when the daemon starts rather than at the first `llm` node.

use std::time::Duration;

use indexmap::IndexMap;
use reqwest::Url;
use serde::Deserialize;

use crate::secrets::Secrets;

/// Request time limit when a provider sets none (local models can be slow).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// `[llm]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    /// Providers by name, in file order: the first is the default.
    #[serde(default)]
    pub providers: IndexMap<String, ProviderConfig>,
}

/// Which wire protocol a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Ollama's `/api/chat` (NDJSON stream).
    Ollama,
    /// OpenAI's `/chat/completions` (SSE stream), spoken by many servers.
    Openai,
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ollama => "ollama",
            Self::Openai => "openai",
        })
    }
}

/// `[llm.providers.<name>]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `ollama` or `openai`.
    pub kind: ProviderKind,
    /// e.g. `http://127.0.0.1:11434` (Ollama) or `https://api.openai.com/v1`.
    pub base_url: String,
    /// The name of the secret holding the API key (never the key itself).
    #[serde(default)]
    pub api_key: Option<String>,
    /// Model used when a node names none.
    #[serde(default)]
    pub default_model: Option<String>,
    /// Time limit for one request, streaming included (default 5m).
    #[serde(default)]
    pub timeout: Option<sluice_shared::Duration>,
}

/// Why the `[llm]` section cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LlmConfigError {
    /// `base_url` is not an http(s) URL.
    #[error("[llm.providers.{provider}] base_url '{url}' is not valid: {reason}")]
    BaseUrl {
        /// The provider.
        provider: String,
        /// The value given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// `api_key` names a secret that does not exist.
    #[error(
        "[llm.providers.{provider}] api_key names the secret '{secret}', which is not defined (put it in $CREDENTIALS_DIRECTORY/{secret} or the secrets file)"
    )]
    MissingSecret {
        /// The provider.
        provider: String,
        /// The secret's name.
        secret: String,
    },
    /// A secret value that cannot travel in an HTTP header.
    #[error(
        "[llm.providers.{provider}] the secret '{secret}' cannot be sent as an API key (control characters or non-ASCII text)"
    )]
    BadSecret {
        /// The provider.
        provider: String,
        /// The secret's name.
        secret: String,
    },
}

/// A configured provider, ready to call.
#[derive(Clone)]
pub struct Provider {
    /// Its name in `sluiced.toml`.
    pub name: String,
    /// Its wire protocol.
    pub kind: ProviderKind,
    /// Its base URL (no trailing slash).
    pub base_url: Url,
    /// Model used when a node names none.
    pub default_model: Option<String>,
    /// Time limit for one request.
    pub timeout: Duration,
    api_key: Option<String>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url.as_str())
            .field("default_model", &self.default_model)
            .field("timeout", &self.timeout)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Provider {
    /// The API key, for the `Authorization` header only.
    pub fn api_key(&self) -> Option<&str> {
        self.api_key.as_deref()
    }

    /// The chat endpoint for this provider's protocol.
    pub fn chat_url(&self) -> Url {
        let base = self.base_url.as_str().trim_end_matches('/');
        let path = match self.kind {
            ProviderKind::Ollama => "/api/chat",
            ProviderKind::Openai => "/chat/completions",
        };
        // Joining two valid parts of a URL whose base already parsed cannot fail;
        // fall back to the base rather than panic if it somehow does.
        Url::parse(&format!("{base}{path}")).unwrap_or_else(|_| self.base_url.clone())
    }
}

/// Every configured provider, in file order. Cheap to share behind an `Arc`.
#[derive(Clone, Debug, Default)]
pub struct LlmProviders {
    providers: Vec<Provider>,
}

impl LlmProviders {
    /// Resolves the `[llm]` section: URLs checked, API keys read from secrets.
    pub fn from_config(config: &LlmConfig, secrets: &Secrets) -> Result<Self, LlmConfigError> {
        let mut providers = Vec::with_capacity(config.providers.len());
        for (name, p) in &config.providers {
            let base_url = Url::parse(p.base_url.trim()).map_err(|e| LlmConfigError::BaseUrl {
                provider: name.clone(),
                url: p.base_url.clone(),
                reason: e.to_string(),
            })?;
            if !matches!(base_url.scheme(), "http" | "https") {
                return Err(LlmConfigError::BaseUrl {
                    provider: name.clone(),
                    url: p.base_url.clone(),
                    reason: format!(
                        "the scheme must be http or https, not '{}'",
                        base_url.scheme()
                    ),
                });
            }
            let api_key = match &p.api_key {
                None => None,
                Some(secret) => {
                    let value =
                        secrets
                            .get(secret)
                            .ok_or_else(|| LlmConfigError::MissingSecret {
                                provider: name.clone(),
                                secret: secret.clone(),
                            })?;
                    let value = value.trim();
                    if reqwest::header::HeaderValue::from_str(&format!("Bearer {value}")).is_err() {
                        return Err(LlmConfigError::BadSecret {
                            provider: name.clone(),
                            secret: secret.clone(),
                        });
                    }
                    Some(value.to_owned())
                }
            };
            providers.push(Provider {
                name: name.clone(),
                kind: p.kind,
                base_url,
                default_model: p.default_model.clone().filter(|m| !m.trim().is_empty()),
                timeout: p.timeout.map_or(DEFAULT_TIMEOUT, |t| t.std()),
                api_key,
            });
        }
        Ok(Self { providers })
    }

    /// Providers built directly (tests and embedding); the first is the default.
    pub fn from_providers(providers: Vec<Provider>) -> Self {
        Self { providers }
    }

    /// The provider a node asks for, or the first when it names none.
    pub fn get(&self, name: Option<&str>) -> Result<&Provider, String> {
        let names = || {
            self.providers
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
        };
        match name {
            None => self.providers.first().ok_or_else(|| {
                "no LLM provider is configured: add an [llm.providers.<name>] table to sluiced.toml"
                    .to_owned()
            }),
            Some(name) => self
                .providers
                .iter()
                .find(|p| p.name == name)
                .ok_or_else(|| {
                    let names = names();
                    let hint = sluice_shared::suggest::did_you_mean(name, names.iter().copied())
                        .map_or_else(
                            || {
                                if names.is_empty() {
                                    " (none is configured in sluiced.toml)".to_owned()
                                } else {
                                    format!(" (configured: {})", names.join(", "))
                                }
                            },
                            |h| format!(" ({h})"),
                        );
                    format!("unknown LLM provider '{name}'{hint}")
                }),
        }
    }

    /// Whether no provider is configured.
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
    }
}

impl Provider {
    /// A provider built directly (tests and embedding).
    pub fn new(
        name: &str,
        kind: ProviderKind,
        base_url: Url,
        api_key: Option<String>,
        default_model: Option<String>,
        timeout: Duration,
    ) -> Self {
        Self {
            name: name.to_owned(),
            kind,
            base_url,
            default_model,
            timeout,
            api_key,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("sluiced.toml")).unwrap()
    }

    #[test]
    fn providers_keep_file_order_and_resolve_keys_from_secrets() {
        let config = parse(
            r#"
[llm.providers.zeta]
kind = "ollama"
base_url = "http://127.0.0.1:11434"
default_model = "llama3.2"

[llm.providers.alpha]
kind = "openai"
base_url = "https://api.openai.com/v1/"
api_key = "openai_key"
timeout = "90s"
"#,
        );
        let secrets = Secrets::from_map(BTreeMap::from([(
            "openai_key".to_owned(),
            "sk-test-123".to_owned(),
        )]));
        let providers = LlmProviders::from_config(&config.llm, &secrets).unwrap();
        let first = providers.get(None).unwrap();
        assert_eq!(first.name, "zeta", "the first in the file is the default");
        assert_eq!(first.default_model.as_deref(), Some("llama3.2"));
        assert_eq!(first.timeout, DEFAULT_TIMEOUT);
        assert_eq!(first.chat_url().as_str(), "http://127.0.0.1:11434/api/chat");
        let alpha = providers.get(Some("alpha")).unwrap();
        assert_eq!(alpha.api_key(), Some("sk-test-123"));
        assert_eq!(alpha.timeout, Duration::from_secs(90));
        assert_eq!(
            alpha.chat_url().as_str(),
            "https://api.openai.com/v1/chat/completions"
        );
        assert!(!format!("{alpha:?}").contains("sk-test"));
        let err = providers.get(Some("alpah")).unwrap_err();
        assert!(err.contains("did you mean 'alpha'"), "{err}");
    }

    #[test]
    fn mistakes_are_clear() {
        let err = Config::parse(
            "[llm.providers.x]\nkind = \"claude\"\nbase_url = \"http://x\"\n",
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 2") && err.contains("claude"), "{err}");
        let err = Config::parse(
            "[llm.providers.x]\nkind = \"ollama\"\nbase_url = \"http://x\"\nmodel = \"m\"\n",
            Path::new("s.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("model"), "{err}");

        let missing = parse(
            "[llm.providers.hosted]\nkind = \"openai\"\nbase_url = \"https://h/v1\"\napi_key = \"k\"\n",
        );
        let err = LlmProviders::from_config(&missing.llm, &Secrets::default())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("[llm.providers.hosted] api_key names the secret 'k'"),
            "{err}"
        );
        let bad_url = parse("[llm.providers.l]\nkind = \"ollama\"\nbase_url = \"ftp://h\"\n");
        let err = LlmProviders::from_config(&bad_url.llm, &Secrets::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("http or https"), "{err}");
        let none = LlmProviders::default();
        assert!(
            none.get(None)
                .unwrap_err()
                .contains("[llm.providers.<name>]")
        );
    }
}
