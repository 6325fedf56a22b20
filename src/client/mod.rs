//! The call core: what every face of Fala (the window, `fala term`, `fala call` / `fala
//! answer`) drives, written once.
//!
//! - [`model`]: the sans-IO client state (registration, presence, look-ups, the call) with
//!   [`model::Effect`]s out; time is an input.
//! - [`media_link`]: the media socket, the call's keys and the engine's start and stop; it
//!   never waits, and reports by [`LinkEvent`].
//! - [`phone`]: the model, the signaling task's handle and the media link together; it carries
//!   out the core's effects and hands every effect to the face to show.
//! - [`history`]: the call log's entries, built by the model.
//! - [`options`]: how calls sound, from a command line or the window's settings.
//! - [`identity_file`]: the client's identity key on disk.

pub mod audio_watch;
pub mod call_crypto;
pub mod contacts;
pub mod history;
pub mod identity_file;
pub mod media_link;
pub mod model;
pub mod net_watch;
pub mod options;
pub mod paths;
pub mod phone;

pub use media_link::{Advertise, AudioState, LinkEvent, MediaLink};
pub use options::MediaOptions;
pub use phone::{ConnectRequest, Phone, PhoneEvents};
