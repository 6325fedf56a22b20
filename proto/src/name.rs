//! User name rules, shared so the client can tell a user about a bad name before it is sent.

use thiserror::Error;

/// Longest allowed name, in Unicode scalar values (characters), after trimming.
pub const NAME_MAX_CHARS: usize = 32;

/// Why a proposed user name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("a name must not be empty")]
    Empty,
    #[error("a name may have at most {NAME_MAX_CHARS} characters")]
    TooLong,
    #[error("a name may only contain letters, digits, spaces and . _ - (found {0:?})")]
    BadCharacter(char),
}

/// Checks a name and returns its canonical display form (trimmed).
///
/// Letters and digits of any script are allowed so people can use their own names; the few
/// punctuation characters are the ones that read well in a contact list.
pub fn validate_name(raw: &str) -> Result<String, NameError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(NameError::TooLong);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, ' ' | '.' | '_' | '-')))
    {
        return Err(NameError::BadCharacter(bad));
    }
    Ok(name.to_string())
}

/// The key under which a name is stored and compared: names differ only if they differ after
/// Unicode lower-casing, so "Ana" and "ana" cannot both be online.
pub fn name_key(name: &str) -> String {
    name.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unicode_letters_and_allowed_punctuation() {
        assert_eq!(
            validate_name("  João da Silva-2.b_c "),
            Ok("João da Silva-2.b_c".into())
        );
        assert_eq!(validate_name("李小龍"), Ok("李小龍".into()));
    }

    #[test]
    fn refuses_empty_long_and_odd_names() {
        assert_eq!(validate_name("   "), Err(NameError::Empty));
        assert_eq!(validate_name(&"a".repeat(33)), Err(NameError::TooLong));
        assert!(validate_name(&"é".repeat(32)).is_ok());
        assert_eq!(validate_name("bob!"), Err(NameError::BadCharacter('!')));
        assert_eq!(validate_name("a\tb"), Err(NameError::BadCharacter('\t')));
    }

    #[test]
    fn keys_ignore_case() {
        assert_eq!(name_key("Ana"), name_key(" aNA "));
        assert_eq!(name_key("ÉLODIE"), name_key("élodie"));
    }
}
