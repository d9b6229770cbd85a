//! Where secrets and the legacy overrides come from: the process environment
//! and systemd credentials (`$CREDENTIALS_DIRECTORY/<name>`), behind
//! [`Environment`] so tests need no real environment; and [`Secret`], the one
//! type that holds a secret (the API token, the ElevenLabs key).
//!
//! Promises: a [`Secret`] never reaches a log line (its `Debug` is redacted,
//! it has no `Display`); empty values count as unset. A leaf: it depends on
//! no other module of the crate.

use std::fmt;
use std::path::Path;

/// Where secrets and legacy overrides come from.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
    /// A systemd credential's contents (`$CREDENTIALS_DIRECTORY/<name>`).
    fn credential(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    fn credential(&self, name: &str) -> Option<String> {
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
        let text = std::fs::read_to_string(Path::new(&dir).join(name)).ok()?;
        Some(text.trim_end_matches(['\n', '\r']).to_string()).filter(|v| !v.is_empty())
    }
}

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// `$VAR`, else the systemd credential `credential`, trimmed; `None` if
    /// both are unset or blank.
    pub fn from_environment(env: &dyn Environment, var: &str, credential: &str) -> Option<Secret> {
        env.var(var).or_else(|| env.credential(credential)).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).map(Secret)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Env(Option<&'static str>, Option<&'static str>);
    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            (name == "KEY").then_some(self.0?.to_string())
        }
        fn credential(&self, name: &str) -> Option<String> {
            (name == "key-cred").then_some(self.1?.to_string())
        }
    }

    #[test]
    fn the_environment_comes_before_the_credential_and_nothing_is_printed() {
        let read = |e: &Env| Secret::from_environment(e, "KEY", "key-cred").map(|s| s.expose().to_string());
        assert_eq!(read(&Env(Some("sk_env"), Some("sk_cred"))).as_deref(), Some("sk_env"));
        assert_eq!(read(&Env(None, Some("sk_cred\n"))).as_deref(), Some("sk_cred"));
        assert_eq!(read(&Env(Some("  "), None)), None);
        assert_eq!(read(&Env(None, None)), None);
        assert!(!format!("{:?}", Secret::new("sk_secret_value")).contains("sk_secret"));
    }
}
