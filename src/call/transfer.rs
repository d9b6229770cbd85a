//! `[transfer]`: the numbers the agent may hand a caller to, with the
//! `transfer_call` client tool (a blind transfer: REFER through Baresip).
//!
//! Promise: a transfer goes only to a number `allow` admits; an empty
//! `allow` (the default) admits none, so an agent cannot send a caller
//! anywhere the site did not list.

use serde::Deserialize;

use crate::call::incoming::{admits, normalise_patterns, without_separators};
use crate::section::SectionError;

/// `[transfer]` as written in the TOML.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransferConfig {
    /// Numbers (`+4930123456`) or prefixes ending in `*` (`+4930*`); spaces,
    /// dashes, dots and brackets are ignored. Empty: no transfers.
    pub allow: Vec<String>,
}

/// Why `transfer_call` was refused before anything was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetRefused {
    /// The tool's `number` is missing or no phone number.
    NotANumber,
    NotAllowed,
}

impl std::fmt::Display for TargetRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotANumber => write!(f, "number must be a phone number, like +4930123456"),
            Self::NotAllowed => write!(f, "that number is not one this phone may transfer to ([transfer] allow)"),
        }
    }
}

impl std::error::Error for TargetRefused {}

impl TransferConfig {
    pub fn validate(&mut self) -> Result<(), SectionError> {
        normalise_patterns("transfer", &mut self.allow)
    }

    /// The number to transfer to, if `allow` admits it (spaces, dashes,
    /// dots and brackets, as an agent may write them, are dropped first).
    pub fn target(&self, number: &str) -> Result<crate::phone::PhoneNumber, TargetRefused> {
        let number = crate::phone::PhoneNumber::parse(&without_separators(number)).map_err(|_| TargetRefused::NotANumber)?;
        if admits(&self.allow, number.as_str()) { Ok(number) } else { Err(TargetRefused::NotAllowed) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_numbers_allow_admits_are_targets() {
        let mut cfg = TransferConfig { allow: vec!["+1 555 000-1111".into(), "+4930*".into()] };
        cfg.validate().unwrap();
        assert_eq!(cfg.target("+15550001111").map(|n| n.to_string()), Ok("+15550001111".into()));
        assert!(cfg.target("+4930123456").is_ok());
        assert_eq!(cfg.target("+1 (555) 000-1111").map(|n| n.to_string()), Ok("+15550001111".into()));
        assert_eq!(cfg.target("+15550001112"), Err(TargetRefused::NotAllowed));
        assert_eq!(cfg.target("call me"), Err(TargetRefused::NotANumber));
        assert_eq!(TransferConfig::default().target("+15550001111"), Err(TargetRefused::NotAllowed), "empty admits none");
        let mut bad = TransferConfig { allow: vec!["front desk".into()] };
        assert_eq!(bad.validate().unwrap_err().path(), "transfer.allow");
    }
}
