//! Phone numbers as the API accepts them.
//!
//! Promise: a [`PhoneNumber`] is an optional leading `+` followed by 3 to 15 ASCII
//! digits, nothing else. That keeps any injected text (spaces that would split
//! Baresip's command line, `;` URI parameters, quotes) from ever reaching Baresip.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneNumber(String);

/// Why a string is not a phone number we dial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidPhoneNumber;

impl fmt::Display for InvalidPhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("phone_number must be an optional '+' followed by 3 to 15 digits")
    }
}

impl std::error::Error for InvalidPhoneNumber {}

impl PhoneNumber {
    pub fn parse(text: &str) -> Result<Self, InvalidPhoneNumber> {
        let digits = text.strip_prefix('+').unwrap_or(text);
        if (3..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(text.to_string()))
        } else {
            Err(InvalidPhoneNumber)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Written as the string; read back through [`PhoneNumber::parse`], so a
/// journal line cannot smuggle in what the API would refuse.
impl serde::Serialize for PhoneNumber {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PhoneNumber::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_international_and_bare_numbers() {
        for ok in ["+79123456789", "79123456789", "112", "+123", "123456789012345", "+123456789012345"] {
            assert_eq!(PhoneNumber::parse(ok).map(|n| n.to_string()), Ok(ok.to_string()), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_else() {
        for bad in [
            "",
            "+",
            "12",
            "+12",
            "1234567890123456",
            "++123",
            "12 34",
            "123;transport=tcp",
            "1234\"",
            "sip:123@x",
            "１２３",
            "+-123",
            "123\n",
            "0x123",
        ] {
            assert_eq!(PhoneNumber::parse(bad), Err(InvalidPhoneNumber), "{bad:?}");
        }
    }
}
