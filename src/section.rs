//! [`SectionError`]: the one error a config section's own validation returns
//! (`[audio]`, `[amd]`, `[ai]`, `[voicemail]`), naming the section and the key
//! at fault, so `config.rs` can point at the key's line in the file. A leaf:
//! every section module uses it, and it uses none of them.

use std::fmt;

/// A section's value that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionError {
    /// `audio`, `amd`, `ai`, `voicemail`.
    pub section: &'static str,
    /// The key at fault, within the section (`echo.rate` for a subtable's key).
    pub key: &'static str,
    pub message: String,
}

impl SectionError {
    pub fn new(section: &'static str, key: &'static str, message: impl Into<String>) -> SectionError {
        SectionError { section, key, message: message.into() }
    }

    /// `section.key`, as written in the TOML file.
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.key)
    }
}

impl fmt::Display for SectionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}: {}", self.section, self.key, self.message)
    }
}

impl std::error::Error for SectionError {}
