//! The people you call, and the identity key each one proved on the first call.
//!
//! A contact's key is pinned the first time a call with them connects (trust on first use, as
//! SSH and Signal do). From then on a call whose identity key differs is held apart: the key is
//! noted as a change, an outgoing call is refused and an incoming one rings with a loud
//! warning, until the user accepts the new key. Comparing the safety number once (in person or
//! over a call) and marking the contact verified turns "probably them" into "them".

use std::collections::BTreeMap;

use fala_proto::hex;
use fala_proto::identity::{safety_number, IDENTITY_LEN};
use fala_proto::name::name_key;
use serde::{Deserialize, Serialize};

/// One person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// As they write it.
    pub name: String,
    /// The identity key pinned for them, in hex.
    #[serde(default)]
    pub identity: Option<String>,
    /// The safety number was compared and found equal (for the pinned key).
    #[serde(default)]
    pub verified: bool,
    /// A different key seen since, in hex, until the user accepts or dismisses it.
    #[serde(default)]
    pub changed_to: Option<String>,
    /// Shown in the contact list (added by the user); `false`: only pinned by a call.
    #[serde(default)]
    pub listed: bool,
    /// Their calls are refused (by the server, told at each registration, and here).
    #[serde(default)]
    pub blocked: bool,
}

/// What a call's identity key means for the person on the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// First call with them: the key is pinned now.
    FirstSeen,
    /// The pinned key; `verified` if the safety number was compared.
    Known { verified: bool },
    /// Not the pinned key: another person with that name, or a man in the middle.
    Changed,
}

/// Everyone this client knows, by name key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContactBook {
    by_key: BTreeMap<String, Contact>,
}

impl ContactBook {
    pub fn get(&self, name: &str) -> Option<&Contact> {
        self.by_key.get(&name_key(name))
    }

    /// The contacts shown in the list, in alphabetical order.
    pub fn listed(&self) -> Vec<&Contact> {
        let mut shown: Vec<&Contact> = self.by_key.values().filter(|c| c.listed).collect();
        shown.sort_by_cached_key(|c| c.name.to_lowercase());
        shown
    }

    fn entry(&mut self, name: &str) -> &mut Contact {
        self.by_key
            .entry(name_key(name))
            .or_insert_with(|| Contact {
                name: name.to_string(),
                identity: None,
                verified: false,
                changed_to: None,
                listed: false,
                blocked: false,
            })
    }

    /// Adds `name` to the contact list (keeping any pinned key).
    /// Adding someone blocked unblocks them.
    pub fn add(&mut self, name: &str) {
        let contact = self.entry(name);
        contact.listed = true;
        contact.blocked = false;
    }

    /// Takes `name` off the list; its pinned key stays (forgetting it would let a changed key
    /// pass unnoticed).
    pub fn remove(&mut self, name: &str) {
        if let Some(c) = self.by_key.get_mut(&name_key(name)) {
            c.listed = false;
        }
    }

    /// Blocks (or unblocks) `name`'s calls; a blocked person leaves the contact list.
    pub fn set_blocked(&mut self, name: &str, blocked: bool) {
        let contact = self.entry(name);
        contact.blocked = blocked;
        if blocked {
            contact.listed = false;
        }
    }

    pub fn is_blocked(&self, name: &str) -> bool {
        self.get(name).is_some_and(|c| c.blocked)
    }

    /// The blocked people, in alphabetical order.
    pub fn blocked(&self) -> Vec<&Contact> {
        let mut shown: Vec<&Contact> = self.by_key.values().filter(|c| c.blocked).collect();
        shown.sort_by_cached_key(|c| c.name.to_lowercase());
        shown
    }

    /// What `identity` would mean for `name`, without pinning or noting anything (an incoming
    /// call not yet accepted).
    pub fn peek(&self, name: &str, identity: &[u8]) -> KeyCheck {
        let seen = hex::encode(identity);
        match self
            .get(name)
            .and_then(|c| c.identity.as_ref().map(|i| (c, i)))
        {
            None => KeyCheck::FirstSeen,
            Some((c, pinned)) if *pinned == seen => KeyCheck::Known {
                verified: c.verified,
            },
            Some(_) => KeyCheck::Changed,
        }
    }

    /// A call with `name` presents `identity`: pins it the first time, compares it after.
    pub fn check(&mut self, name: &str, identity: &[u8]) -> KeyCheck {
        let seen = hex::encode(identity);
        let contact = self.entry(name);
        match &contact.identity {
            None => {
                contact.identity = Some(seen);
                contact.name = name.to_string();
                KeyCheck::FirstSeen
            }
            Some(pinned) if *pinned == seen => {
                contact.changed_to = None;
                KeyCheck::Known {
                    verified: contact.verified,
                }
            }
            Some(_) => {
                contact.changed_to = Some(seen);
                KeyCheck::Changed
            }
        }
    }

    /// The user trusts the changed key: it becomes the pinned one, not verified.
    pub fn accept_changed_key(&mut self, name: &str) {
        if let Some(c) = self.by_key.get_mut(&name_key(name)) {
            if let Some(new) = c.changed_to.take() {
                c.identity = Some(new);
                c.verified = false;
            }
        }
    }

    /// Marks the safety number of `name` compared (or not).
    pub fn set_verified(&mut self, name: &str, verified: bool) {
        if let Some(c) = self.by_key.get_mut(&name_key(name)) {
            c.verified = verified && c.identity.is_some();
        }
    }

    /// The safety number between `mine` and `name`'s pinned key.
    pub fn safety_number(&self, mine: &[u8; IDENTITY_LEN], name: &str) -> Option<String> {
        let theirs = hex::decode::<IDENTITY_LEN>(self.get(name)?.identity.as_deref()?)?;
        Some(safety_number(mine, &theirs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_pinned_on_first_use_and_a_change_is_held_until_accepted() {
        let mut book = ContactBook::default();
        let (bob, eve) = ([1u8; 32], [2u8; 32]);
        assert_eq!(book.check("Bob", &bob), KeyCheck::FirstSeen);
        assert_eq!(book.check("BOB", &bob), KeyCheck::Known { verified: false });
        book.set_verified("bob", true);
        assert_eq!(book.check("bob", &bob), KeyCheck::Known { verified: true });
        assert_eq!(book.check("bob", &eve), KeyCheck::Changed);
        // Still changed, and the pinned key has not moved.
        assert_eq!(book.check("bob", &eve), KeyCheck::Changed);
        assert_eq!(book.check("bob", &bob), KeyCheck::Known { verified: true });
        book.check("bob", &eve);
        book.accept_changed_key("bob");
        assert_eq!(book.check("bob", &eve), KeyCheck::Known { verified: false });
    }

    #[test]
    fn the_list_keeps_pinned_keys_and_survives_json() {
        let mut book = ContactBook::default();
        book.add("Zoë");
        book.add("ana");
        book.check("ana", &[3; 32]);
        book.remove("ana");
        assert_eq!(
            book.listed()
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["Zoë"]
        );
        book.add("ANA");
        assert_eq!(book.listed().len(), 2);
        assert!(book.get("ana").unwrap().identity.is_some());
        let json = serde_json::to_string(&book).unwrap();
        let back: ContactBook = serde_json::from_str(&json).unwrap();
        assert_eq!(back, book);
        let me = [9u8; 32];
        assert_eq!(
            back.safety_number(&me, "ana"),
            Some(safety_number(&me, &[3; 32]))
        );
        assert_eq!(back.safety_number(&me, "Zoë"), None);
    }

    #[test]
    fn blocking_takes_someone_off_the_list_and_adding_them_unblocks() {
        let mut book = ContactBook::default();
        book.add("bob");
        book.set_blocked("BOB", true);
        book.set_blocked("eve", true);
        assert!(book.listed().is_empty());
        assert!(book.is_blocked("Eve"));
        let names: Vec<_> = book.blocked().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["bob", "eve"]);
        book.add("bob");
        assert!(!book.is_blocked("bob"));
        assert_eq!(book.listed().len(), 1);
        // An older file without the field reads as not blocked.
        let old: ContactBook = serde_json::from_str(r#"{"ana": {"name": "ana"}}"#).unwrap();
        assert!(!old.is_blocked("ana"));
    }
}
