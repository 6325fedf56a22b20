//! Fala, the client: signaling, media, the terminal client, headless calls and the window.

pub mod app;
pub mod headless;
pub mod media;
pub mod net;
pub mod netsim;
pub mod phone;
pub mod term;
