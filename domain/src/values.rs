//! Value types parsed at the edge ("parse, don't validate"). Their serde form is transparent so
//! that stored events always load, even if a parsing rule is tightened later.

use std::fmt;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::ValueError;

/// Free text: trimmed, non-empty, bounded, no control characters except newlines and tabs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text(String);

impl Text {
    pub fn parse(field: &'static str, raw: &str, max_chars: usize) -> Result<Self, ValueError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(ValueError::new(field, "must not be empty"));
        }
        if trimmed.chars().count() > max_chars {
            return Err(ValueError::new(
                field,
                format!("must be at most {max_chars} characters"),
            ));
        }
        if trimmed
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r')
        {
            return Err(ValueError::new(
                field,
                "must not contain control characters",
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An e-mail address, kept in lower case so that uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim().to_lowercase();
        let invalid = || ValueError::new(field, "must be an e-mail address like name@example.com");
        if s.len() > 254 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        let (local, domain) = s.split_once('@').ok_or_else(invalid)?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && domain
                .split('.')
                .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(invalid());
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A phone or WhatsApp number: digits with optional `+`, spaces, dashes, dots and parentheses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim();
        let digits = s.chars().filter(char::is_ascii_digit).count();
        let allowed = s
            .chars()
            .enumerate()
            .all(|(i, c)| c.is_ascii_digit() || " -.()".contains(c) || (c == '+' && i == 0));
        if !allowed || !(5..=20).contains(&digits) || s.len() > 32 {
            return Err(ValueError::new(
                field,
                "must be a phone number of 5 to 20 digits, optionally starting with +",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Customer tier; feeds the priority engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Free,
    Paid,
    Enterprise,
}

/// Severity of the reported issue; feeds the priority engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    Major,
    Minor,
}

/// What a ticket is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Repair,
    Warranty,
    Technical,
    Billing,
    Account,
    General,
}

/// How many people or how much of the business the issue affects, from 1 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Impact(u8);

impl Impact {
    pub fn parse(field: &'static str, raw: i64) -> Result<Self, ValueError> {
        match u8::try_from(raw) {
            Ok(v @ 1..=5) => Ok(Self(v)),
            _ => Err(ValueError::new(field, "must be an integer from 1 to 5")),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// An amount of money of at least one minor unit: what a payment records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Positive(Money);

impl Positive {
    pub fn get(self) -> Money {
        self.0
    }
}

/// A number of units in one move of stock (received, used, given back): 1 to 1,000,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Quantity(u32);

impl Quantity {
    pub const MAX: u32 = 1_000_000;

    pub fn parse(field: &'static str, raw: i64) -> Result<Self, ValueError> {
        match u32::try_from(raw) {
            Ok(v @ 1..=Self::MAX) => Ok(Self(v)),
            _ => Err(ValueError::new(
                field,
                format!("must be a whole number from 1 to {}", Self::MAX),
            )),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// A customer's rating of a repair: 1 to 5 stars. Out of range it is the rule
/// `RATING_OUT_OF_RANGE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rating(u8);

impl Rating {
    pub fn parse(raw: i64) -> Result<Self, crate::DomainError> {
        match u8::try_from(raw) {
            Ok(v @ 1..=5) => Ok(Self(v)),
            _ => Err(crate::DomainError::RatingOutOfRange),
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// An amount of money in minor units (cents), never negative. Integers only: no float ever
/// touches money.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(i64);

impl Money {
    pub const ZERO: Money = Money(0);
    /// Largest accepted amount: 10^13 minor units, far below overflow when summed.
    const MAX: i64 = 10_000_000_000_000;

    pub fn parse(field: &'static str, minor_units: i64) -> Result<Self, ValueError> {
        if !(0..=Self::MAX).contains(&minor_units) {
            return Err(ValueError::new(
                field,
                format!("must be an amount in minor units from 0 to {}", Self::MAX),
            ));
        }
        Ok(Self(minor_units))
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }

    /// An amount of at least one minor unit (a payment).
    pub fn parse_positive(field: &'static str, minor_units: i64) -> Result<Positive, ValueError> {
        if minor_units < 1 {
            return Err(ValueError::new(field, "must be at least 1 minor unit"));
        }
        Self::parse(field, minor_units).map(Positive)
    }

    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// `self - other`, or zero when `other` is larger.
    pub fn saturating_sub(self, other: Money) -> Money {
        Money((self.0 - other.0).max(0))
    }

    pub fn times(self, quantity: u32) -> Money {
        Money(self.0.saturating_mul(i64::from(quantity)))
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// A serial number: trimmed, upper-cased, 1 to 64 letters, digits, `-`, `_`, `.` or `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SerialNumber(String);

impl SerialNumber {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim().to_uppercase();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
        if !ok {
            return Err(ValueError::new(
                field,
                "must be 1 to 64 letters, digits, '-', '_', '.' or '/'",
            ));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How a payment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Cash,
    Card,
    BankTransfer,
    Upi,
    Other,
}

/// Who may read a note: everyone involved, or staff only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    Public,
    Internal,
}

/// A ticket number `TKT-YYYYMMDD-XXXXXX`: the raise date and six characters of 0-9A-Z.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TicketNumber(String);

const NUMBER_ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

impl TicketNumber {
    /// Builds a number for the given day from caller-supplied entropy (the domain draws no
    /// randomness itself).
    pub fn generate(date: NaiveDate, entropy: u64) -> Self {
        let mut suffix = [0u8; 6];
        let mut n = entropy;
        for slot in suffix.iter_mut() {
            *slot = NUMBER_ALPHABET[(n % 36) as usize];
            n /= 36;
        }
        let suffix = String::from_utf8_lossy(&suffix);
        Self(format!("TKT-{}-{suffix}", date.format("%Y%m%d")))
    }

    pub fn parse(field: &'static str, raw: &str) -> Result<Self, ValueError> {
        let s = raw.trim().to_ascii_uppercase();
        let invalid = || ValueError::new(field, "must look like TKT-YYYYMMDD-XXXXXX");
        let rest = s.strip_prefix("TKT-").ok_or_else(invalid)?;
        let (date, suffix) = rest.split_once('-').ok_or_else(invalid)?;
        if date.len() != 8 || NaiveDate::parse_from_str(date, "%Y%m%d").is_err() {
            return Err(invalid());
        }
        if suffix.len() != 6 || !suffix.bytes().all(|b| NUMBER_ALPHABET.contains(&b)) {
            return Err(invalid());
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TicketNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails_are_normalised_and_checked() {
        assert_eq!(
            Email::parse("email", " Ana@Example.COM ").map(|e| e.0),
            Ok("ana@example.com".to_owned())
        );
        for bad in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "a b@x.io",
            "a@@x.io",
        ] {
            assert!(Email::parse("email", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn impact_is_one_to_five() {
        assert!(Impact::parse("impact", 0).is_err());
        assert!(Impact::parse("impact", 6).is_err());
        assert!(Impact::parse("impact", -1).is_err());
        assert_eq!(Impact::parse("impact", 3).map(Impact::get), Ok(3));
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(
            Text::parse("s", "  hi ", 5).map(|t| t.0),
            Ok("hi".to_owned())
        );
        assert!(Text::parse("s", "   ", 5).is_err());
        assert!(Text::parse("s", "toolong", 5).is_err());
        assert!(Text::parse("s", "a\u{0}b", 5).is_err());
    }

    proptest! {
        #[test]
        fn generated_ticket_numbers_parse(entropy in any::<u64>(), days in 0i64..40_000) {
            let date = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(days);
            let number = TicketNumber::generate(date, entropy);
            prop_assert_eq!(TicketNumber::parse("n", number.as_str()), Ok(number.clone()));
            prop_assert_eq!(number.as_str().len(), "TKT-YYYYMMDD-XXXXXX".len());
        }

        #[test]
        fn phone_parse_never_panics(s in ".{0,40}") {
            let _ = Phone::parse("phone", &s);
            let _ = Email::parse("email", &s);
            let _ = TicketNumber::parse("number", &s);
        }
    }
}
