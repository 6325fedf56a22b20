//! TLS for signaling: the server's certificate and key, made once and kept, or given.
//!
//! A server nobody set up a certificate for makes a self-signed one on its first start and keeps
//! it in its data folder, so its fingerprint stays the same across restarts: clients pin it on
//! first contact (trust on first use) and refuse a changed one. A real certificate (from a CA
//! the clients' systems trust) can be given instead.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::data_dir;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("the certificate and key do not go together: {0}")]
    Config(#[from] rustls::Error),
}

/// What a TLS server presents.
pub struct TlsIdentity {
    /// The acceptor's configuration.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the certificate the server presents (its end-entity certificate), in the
    /// form clients show and pin (see [`fingerprint`]).
    pub fingerprint: String,
}

/// Loads a certificate chain and its key from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsError> {
    let read = |path: &Path, source| TlsError::Read {
        path: path.to_owned(),
        source,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| read(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| read(cert, e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, e))?;
    identity(chain, key, cert)
}

/// A self-signed certificate for `names`, with its key.
fn self_signed(names: &[String]) -> Result<(rcgen::Certificate, rcgen::KeyPair), TlsError> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fala-server");
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    Ok((cert, key_pair))
}

/// A self-signed certificate kept nowhere: a new fingerprint every time (for a server that
/// lives as long as one test, or a window with nowhere to keep files).
pub fn make(names: &[String]) -> Result<TlsIdentity, TlsError> {
    let (cert, key_pair) = self_signed(names)?;
    let key = PrivateKeyDer::try_from(key_pair.serialize_der())
        .map_err(|e| TlsError::Config(rustls::Error::General(e.to_string())))?;
    identity(vec![cert.der().clone()], key, Path::new("memory"))
}

/// The certificate kept in `dir` (`cert.pem`, `key.pem`), made on first use for `names` (host
/// names and addresses it is reached by). The key is written readable by its owner only.
pub fn load_or_make(dir: &Path, names: &[String]) -> Result<TlsIdentity, TlsError> {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        return load(&cert, &key);
    }
    let (made_cert, key_pair) = self_signed(names)?;
    let write = |path: &Path, text: String, mode: u32| -> Result<(), TlsError> {
        let err = |source| TlsError::Write {
            path: path.to_owned(),
            source,
        };
        data_dir::create(dir).map_err(err)?;
        data_dir::write_file(path, text.as_bytes(), mode).map_err(err)
    };
    write(&key, key_pair.serialize_pem(), 0o600)?;
    write(&cert, made_cert.pem(), 0o644)?;
    load(&cert, &key)
}

fn identity(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    from: &Path,
) -> Result<TlsIdentity, TlsError> {
    let first = chain
        .first()
        .ok_or_else(|| TlsError::NoCertificate(from.to_owned()))?;
    let fingerprint = fala_proto::hex::certificate_fingerprint(first);
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    Ok(TlsIdentity {
        config: Arc::new(config),
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_made_certificate_is_kept_and_its_fingerprint_stays() {
        let dir = std::env::temp_dir().join(format!("fala-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = load_or_make(&dir, &names).unwrap();
        let again = load_or_make(&dir, &names).unwrap();
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint.len(), 32 * 3 - 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
