//! Fala, the client: signaling, the terminal client, media and the window.

pub mod media;
pub mod net;
pub mod netsim;
pub mod term;
