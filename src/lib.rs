//! Fala, the client: signaling, the terminal client, media and the window.

pub mod app;
pub mod net;
pub mod term;
