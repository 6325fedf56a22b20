//! User name rules, shared so the client can tell a user about a bad name before it is sent.
//!
//! A name is shown as typed (trimmed, in Unicode NFC, so a decomposed "José" is the same name
//! as a composed one). Names are *compared* by [`name_key`], which folds case, compatibility
//! forms and look-alike characters together: "Ana", "ANA", "Аna" (Cyrillic А) and "ａｎａ"
//! (full width) are one name, so nobody can pose as someone else with a name that reads the same.

use thiserror::Error;
use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;
use unicode_security::confusable_detection::skeleton;

/// Longest allowed name, in Unicode scalar values (characters), after trimming and NFC.
pub const NAME_MAX_CHARS: usize = 32;

/// Why a proposed user name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("a name must not be empty")]
    Empty,
    #[error("a name may have at most {NAME_MAX_CHARS} characters")]
    TooLong,
    #[error("a name may only contain letters, digits, single spaces and . _ - (found {0:?})")]
    BadCharacter(char),
    #[error("a name may not have two spaces in a row")]
    DoubleSpace,
}

/// Checks a name and returns its canonical display form (trimmed, NFC).
///
/// Letters and digits of any script are allowed (Unicode Alphabetic or Numeric, and the
/// combining marks that follow them), so people can use their own names; the few
/// punctuation characters are the ones that read well in a contact list.
pub fn validate_name(raw: &str) -> Result<String, NameError> {
    let name: String = raw.trim().nfc().collect();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > NAME_MAX_CHARS {
        return Err(NameError::TooLong);
    }
    // A combining mark (a virama, a vowel sign) is part of the letter before it.
    let mut after_letter = false;
    for c in name.chars() {
        let letter = c.is_alphanumeric() || (after_letter && is_combining_mark(c));
        if !(letter || matches!(c, ' ' | '.' | '_' | '-')) {
            return Err(NameError::BadCharacter(c));
        }
        after_letter = letter;
    }
    if name.contains("  ") {
        return Err(NameError::DoubleSpace);
    }
    Ok(name)
}

/// The key under which a name is stored and compared: two names with the same key are the same
/// name. It is the name in NFKC, lower-cased, mapped to its confusable skeleton (Unicode
/// TS #39) and lower-cased again, twice, so case and look-alikes meet ("B0B" and "bob" share a
/// key: the skeleton maps `0` to `O`, which lower-cases to `o`). Clients never need to compute
/// it: the server does, and answers with display names.
pub fn name_key(name: &str) -> String {
    let mut key: String = name.trim().nfkc().collect::<String>().to_lowercase();
    for _ in 0..2 {
        key = skeleton(&key).collect::<String>().to_lowercase();
    }
    key
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
        assert_eq!(validate_name("नमस्ते"), Ok("नमस्ते".into()));
    }

    #[test]
    fn a_decomposed_name_is_accepted_and_composed() {
        let decomposed = "Jose\u{301}";
        assert_eq!(validate_name(decomposed), Ok("Jos\u{e9}".into()));
        assert_eq!(name_key(decomposed), name_key("Jos\u{e9}"));
    }

    #[test]
    fn refuses_empty_long_and_odd_names() {
        assert_eq!(validate_name("   "), Err(NameError::Empty));
        assert_eq!(validate_name(&"a".repeat(33)), Err(NameError::TooLong));
        assert!(validate_name(&"é".repeat(32)).is_ok());
        assert_eq!(validate_name("bob!"), Err(NameError::BadCharacter('!')));
        assert_eq!(validate_name("a\tb"), Err(NameError::BadCharacter('\t')));
        assert_eq!(validate_name("a  b"), Err(NameError::DoubleSpace));
        assert_eq!(
            validate_name("\u{301}a"),
            Err(NameError::BadCharacter('\u{301}'))
        );
        assert_eq!(
            validate_name("a\u{200b}b"),
            Err(NameError::BadCharacter('\u{200b}'))
        );
    }

    #[test]
    fn keys_ignore_case_width_and_look_alikes() {
        assert_eq!(name_key("Ana"), name_key(" aNA "));
        assert_eq!(name_key("ÉLODIE"), name_key("élodie"));
        // Cyrillic А and е, full-width letters, digits that read as letters.
        assert_eq!(name_key("\u{410}na"), name_key("ana"));
        assert_eq!(name_key("\u{435}cho"), name_key("echo"));
        assert_eq!(name_key("ａｎａ"), name_key("ana"));
        assert_eq!(name_key("B0B"), name_key("bob"));
        assert_eq!(name_key("paypa1"), name_key("PAYPAL"));
        // Different names stay different.
        assert_ne!(name_key("ana"), name_key("ann"));
        assert_ne!(name_key("José"), name_key("Jose"));
        assert_ne!(name_key("李小龍"), name_key("李小龙"));
    }

    #[test]
    fn a_key_is_its_own_key() {
        for name in [
            "Ana",
            "B0B",
            "José",
            "\u{410}na",
            "李小龍",
            "Zoë O'x",
            "ﬁx",
            "echo",
        ] {
            let key = name_key(name);
            assert_eq!(name_key(&key), key, "{name}");
        }
    }
}
