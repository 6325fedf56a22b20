//! Fala, the client: signaling, media, the terminal client, headless calls and the window.

pub mod headless;
pub mod media;
pub mod app;
pub mod net;
pub mod netsim;
pub mod phone;
pub mod term;
