//! `[smtp]` in `sluiced.toml`: the server notification emails go through.
//! Checked while the file is parsed, so a mistake is reported with the file's
//! name and line; the password's secret is looked up when the daemon starts.

use lettre::message::Mailbox;
use serde::Deserialize;
use sluice_shared::Duration;

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Tls,
    /// No encryption at all (a local relay or a test server; port 25).
    None,
}

impl SmtpTls {
    /// The port used when `port` is not given.
    pub fn default_port(self) -> u16 {
        match self {
            Self::Starttls => 587,
            Self::Tls => 465,
            Self::None => 25,
        }
    }

    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starttls => "starttls",
            Self::Tls => "tls",
            Self::None => "none",
        }
    }
}

/// `[smtp]`: server, credentials (the password by secret name) and sender.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawSmtp")]
pub struct SmtpConfig {
    /// Server host name (also the name its TLS certificate must carry).
    pub host: String,
    /// Server port (default from `tls`: 587, 465 or 25).
    pub port: u16,
    /// `starttls` (default), `tls` or `none`.
    pub tls: SmtpTls,
    /// User name for AUTH, if the server wants one.
    pub username: Option<String>,
    /// The name of the secret holding the password (never the password itself).
    pub password: Option<String>,
    /// The sender, `name@example.com` or `Sluice <name@example.com>`.
    pub from: Mailbox,
    /// Time limit for each SMTP command and for connecting.
    pub timeout: Duration,
}

/// Default time limit for SMTP commands.
pub const DEFAULT_SMTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSmtp {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    tls: SmtpTls,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    from: String,
    #[serde(default)]
    timeout: Option<Duration>,
}

impl TryFrom<RawSmtp> for SmtpConfig {
    type Error = String;

    fn try_from(raw: RawSmtp) -> Result<Self, Self::Error> {
        let host = raw.host.trim().to_owned();
        if host.is_empty() {
            return Err("[smtp] host must not be empty".into());
        }
        if raw.port == Some(0) {
            return Err("[smtp] port must be between 1 and 65535".into());
        }
        match (&raw.username, &raw.password) {
            (Some(_), None) => {
                return Err(
                    "[smtp] username is set but password is not; give the name of the secret that holds the password"
                        .into(),
                );
            }
            (None, Some(_)) => {
                return Err("[smtp] password is set but username is not".into());
            }
            _ => {}
        }
        if let Some(name) = &raw.password
            && (name.is_empty() || name.contains(char::is_whitespace) || name.contains('/'))
        {
            // Most likely the password itself was pasted here; do not echo it.
            return Err("[smtp] password must be the name of a secret (a single word such as \"smtp_password\"), not the password itself".into());
        }
        let local = matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1" | "[::1]");
        if raw.tls == SmtpTls::None && raw.username.is_some() && !local {
            return Err(format!(
                "[smtp] tls = \"none\" would send the password to {host} unencrypted; use \"starttls\" or \"tls\" (plain SMTP with credentials is allowed only to localhost)"
            ));
        }
        let from: Mailbox = raw.from.parse().map_err(|e| {
            format!(
                "[smtp] from '{}' is not an email address ({e}); write it as \"sluice@example.com\" or \"Sluice <sluice@example.com>\"",
                raw.from
            )
        })?;
        let timeout = raw
            .timeout
            .unwrap_or_else(|| Duration::from_secs(DEFAULT_SMTP_TIMEOUT.as_secs()));
        if timeout.std().is_zero() {
            return Err("[smtp] timeout must be more than zero".into());
        }
        Ok(Self {
            port: raw.port.unwrap_or(raw.tls.default_port()),
            host,
            tls: raw.tls,
            username: raw.username,
            password: raw.password,
            from,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SmtpConfig, String> {
        #[derive(Deserialize)]
        struct Wrapper {
            smtp: SmtpConfig,
        }
        toml::from_str::<Wrapper>(text)
            .map(|w| w.smtp)
            .map_err(|e| e.message().to_owned())
    }

    #[test]
    fn the_design_sketch_parses_with_defaults() {
        let c = parse(
            r#"[smtp]
host = "mail.example.com"
username = "sluice"
password = "smtp_password"
from = "sluice@example.com"
"#,
        )
        .unwrap();
        assert_eq!(c.host, "mail.example.com");
        assert_eq!(c.port, 587);
        assert_eq!(c.tls, SmtpTls::Starttls);
        assert_eq!(c.password.as_deref(), Some("smtp_password"));
        assert_eq!(c.from.email.to_string(), "sluice@example.com");
        assert_eq!(c.timeout.std(), DEFAULT_SMTP_TIMEOUT);
    }

    #[test]
    fn tls_mode_picks_the_port_unless_given() {
        let base = "host = \"h\"\nfrom = \"Sluice <s@example.com>\"\n";
        assert_eq!(
            parse(&format!("[smtp]\n{base}tls = \"tls\"\n"))
                .unwrap()
                .port,
            465
        );
        assert_eq!(
            parse(&format!("[smtp]\n{base}tls = \"none\"\n"))
                .unwrap()
                .port,
            25
        );
        let c = parse(&format!(
            "[smtp]\n{base}tls = \"none\"\nport = 2525\ntimeout = \"5s\"\n"
        ))
        .unwrap();
        assert_eq!((c.port, c.timeout.std().as_secs()), (2525, 5));
        assert_eq!(c.from.name.as_deref(), Some("Sluice"));
    }

    #[test]
    fn mistakes_are_clear() {
        let err = parse("[smtp]\nhost = \"h\"\nfrom = \"not an address\"\n").unwrap_err();
        assert!(
            err.contains("[smtp] from 'not an address' is not an email address"),
            "{err}"
        );
        let err = parse("[smtp]\nhost = \"h\"\nfrom = \"a@b.c\"\nusername = \"u\"\n").unwrap_err();
        assert!(err.contains("password is not"), "{err}");
        let err = parse(
            "[smtp]\nhost = \"h\"\nfrom = \"a@b.c\"\nusername = \"u\"\npassword = \"hunter2 !\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("name of a secret") && !err.contains("hunter2"),
            "{err}"
        );
        let err = parse("[smtp]\nhost = \"h\"\nfrom = \"a@b.c\"\ntls = \"ssl\"\n").unwrap_err();
        assert!(err.contains("ssl"), "{err}");
        let err = parse("[smtp]\nhost = \"h\"\nfrom = \"a@b.c\"\nuser = \"u\"\n").unwrap_err();
        assert!(err.contains("user"), "{err}");
        let err = parse(
            "[smtp]\nhost = \"mail.example.com\"\nfrom = \"a@b.c\"\ntls = \"none\"\nusername = \"u\"\npassword = \"pw\"\n",
        )
        .unwrap_err();
        assert!(err.contains("unencrypted"), "{err}");
        assert!(
            parse("[smtp]\nhost = \"localhost\"\nfrom = \"a@b.c\"\ntls = \"none\"\nusername = \"u\"\npassword = \"pw\"\n")
                .is_ok()
        );
        let err = parse("[smtp]\nfrom = \"a@b.c\"\n").unwrap_err();
        assert!(err.contains("host"), "{err}");
    }
}
