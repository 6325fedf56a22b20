//! Fala, the client: the call core, signaling, media, and its faces (the window, the terminal
//! client and the headless commands).

pub mod app;
pub mod client;
pub mod headless;
pub mod media;
pub mod net;
pub mod private_files;
pub mod term;
