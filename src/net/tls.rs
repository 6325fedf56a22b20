//! TLS to the server, with the server's certificate pinned on first use.
//!
//! A certificate a public CA vouches for (for the name the user typed) is accepted as browsers
//! accept it. Anything else (a self-signed server certificate, which is what a `fala-server`
//! makes for itself) is trusted the first time this client meets that server, and its SHA-256
//! fingerprint is remembered under the server's address in `known_servers.json`; from then on a
//! different certificate at that address is refused, with the old and new fingerprints, until
//! the user removes the line. That is SSH's rule: it turns a man in the middle into a loud error
//! everywhere except on the very first connection.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use fala_proto::hex::certificate_fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Why a TLS connection was not made.
#[derive(Debug, Error)]
pub enum TlsError {
    /// The server presented another certificate than the one pinned for it.
    #[error(
        "the server at {server} presented a different certificate than before (it was {was}, \
         now it is {now}). Someone may be in the middle. If the server's owner changed its \
         certificate, remove its line from {store} to trust the new one"
    )]
    Changed {
        server: String,
        was: String,
        now: String,
        store: String,
    },
    #[error("{server} is not an address a certificate can name")]
    BadName { server: String },
    #[error("the TLS handshake with {server} failed ({detail}); if that server runs with --plain, connect with --plain too")]
    Handshake { server: String, detail: String },
}

/// The fingerprints of servers this client has met, by `host:port`, kept in a file (or in
/// memory only, when there is no file: a window under test). The file is read on the signaling
/// task's first connection ([`KnownServers::ready`]), never by the caller's thread.
#[derive(Debug, Default)]
pub struct KnownServers {
    path: Option<PathBuf>,
    pins: Mutex<Pins>,
}

#[derive(Debug, Default)]
struct Pins {
    /// The file has been read.
    loaded: bool,
    by_server: BTreeMap<String, String>,
    /// A pin added since the file was last written.
    unsaved: bool,
    /// The last refusal, for the error the handshake's caller reports.
    refused: Option<(String, String)>,
}

/// What a certificate is to this client.
enum Verdict {
    Known,
    New,
    Changed,
}

impl KnownServers {
    /// The servers remembered in `path` (in memory only without one), read by
    /// [`KnownServers::ready`].
    pub fn at(path: Option<PathBuf>) -> KnownServers {
        KnownServers {
            path,
            pins: Mutex::default(),
        }
    }

    /// Reads the file on a blocking-work thread, once (a missing or unreadable file is no
    /// pins yet).
    pub async fn ready(self: &Arc<Self>) {
        if self.pins().loaded {
            return;
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || me.load_now()).await;
    }

    fn load_now(&self) {
        let by_server: BTreeMap<String, String> = self
            .path
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let mut pins = self.pins();
        if !pins.loaded {
            pins.loaded = true;
            // Pins made meanwhile (none, unless ready was skipped) win over the file.
            for (server, fp) in by_server {
                pins.by_server.entry(server).or_insert(fp);
            }
        }
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, Pins> {
        self.pins.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The fingerprint pinned for `server`, if any.
    pub fn pinned(&self, server: &str) -> Option<String> {
        self.pins().by_server.get(server).cloned()
    }

    fn judge(&self, server: &str, fingerprint: &str) -> Verdict {
        let mut pins = self.pins();
        match pins.by_server.get(server) {
            Some(was) if was == fingerprint => Verdict::Known,
            Some(was) => {
                pins.refused = Some((was.clone(), fingerprint.to_string()));
                Verdict::Changed
            }
            None => {
                pins.by_server
                    .insert(server.to_string(), fingerprint.to_string());
                pins.unsaved = true;
                Verdict::New
            }
        }
    }

    /// Writes new pins to the file (readable by its owner only), if there are any.
    pub fn save(&self) -> std::io::Result<()> {
        use std::io::Write;
        let Some(path) = &self.path else {
            return Ok(());
        };
        let json = {
            let mut pins = self.pins();
            if !std::mem::take(&mut pins.unsaved) {
                return Ok(());
            }
            serde_json::to_vec_pretty(&pins.by_server)?
        };
        if let Some(dir) = path.parent() {
            crate::private_files::create_dir(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        crate::private_files::create(&tmp)?.write_all(&json)?;
        std::fs::rename(&tmp, path)
    }

    fn store_name(&self) -> String {
        self.path
            .as_ref()
            .map_or("the client's known servers".into(), |p| {
                p.display().to_string()
            })
    }
}

/// Accepts what a public CA vouches for, else what was pinned (or pins it, first time).
#[derive(Debug)]
struct PinningVerifier {
    server: String,
    known: Arc<KnownServers>,
    webpki: Arc<WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let vouched =
            self.webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        if vouched.is_ok() {
            return vouched;
        }
        match self
            .known
            .judge(&self.server, &certificate_fingerprint(end_entity))
        {
            Verdict::Known | Verdict::New => Ok(ServerCertVerified::assertion()),
            Verdict::Changed => Err(rustls::Error::General(
                "the server's certificate changed".into(),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs the TLS handshake over `tcp` with `server` (`host:port`, as the user typed it: the pin
/// is kept under it), pinning its certificate on first use.
pub async fn connect(
    tcp: TcpStream,
    server: &str,
    known: &Arc<KnownServers>,
) -> Result<TlsStream<TcpStream>, TlsError> {
    let host = host_of(server);
    let name = ServerName::try_from(host.to_string()).map_err(|_| TlsError::BadName {
        server: server.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let handshake_failed = |detail: String| TlsError::Handshake {
        server: server.to_string(),
        detail,
    };
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| handshake_failed(e.to_string()))?;
    let verifier = PinningVerifier {
        server: server.to_string(),
        known: known.clone(),
        webpki,
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| handshake_failed(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match connector.connect(name, tcp).await {
        Ok(stream) => Ok(stream),
        Err(e) => {
            if let Some((was, now)) = known.pins().refused.take() {
                return Err(TlsError::Changed {
                    server: server.to_string(),
                    was,
                    now,
                    store: known.store_name(),
                });
            }
            Err(handshake_failed(e.to_string()))
        }
    }
}

/// The host part of `host:port` (IPv6 in brackets too).
fn host_of(server: &str) -> &str {
    let host = server.rsplit_once(':').map_or(server, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_certificate_is_pinned_and_a_different_one_refused() {
        let known = KnownServers::at(None);
        assert!(matches!(known.judge("s:1", "AA"), Verdict::New));
        assert!(matches!(known.judge("s:1", "AA"), Verdict::Known));
        assert!(matches!(known.judge("s:1", "BB"), Verdict::Changed));
        assert_eq!(
            known.pinned("s:1").as_deref(),
            Some("AA"),
            "the old pin stays"
        );
        assert!(matches!(known.judge("other:1", "BB"), Verdict::New));
    }

    #[test]
    fn pins_survive_in_their_file() {
        let path = std::env::temp_dir()
            .join(format!("fala-known-{}", std::process::id()))
            .join("known_servers.json");
        let known = KnownServers::at(Some(path.clone()));
        known.load_now();
        known.judge("host:7400", "AB:CD");
        known.save().unwrap();
        let again = KnownServers::at(Some(path.clone()));
        again.load_now();
        assert_eq!(again.pinned("host:7400").as_deref(), Some("AB:CD"));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[test]
    fn hosts_come_out_of_addresses() {
        assert_eq!(host_of("127.0.0.1:7400"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7400"), "::1");
        assert_eq!(host_of("fala.example.org:7400"), "fala.example.org");
    }
}
