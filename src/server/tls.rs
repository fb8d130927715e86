//! The certificates of the TLS listeners, held so that a reload can replace
//! them: each listener's handshakes ask its [`Certificate`] for the key in
//! force, and a reload swaps in the newly read files. Connections already
//! established keep the certificate they were made with.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};

/// A listener's certificate and key, replaceable while it runs.
pub struct Certificate {
    key: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificate").finish_non_exhaustive()
    }
}

impl Certificate {
    /// Reads the PEM chain and key; the error says what is wrong with which file.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Certificate>, String> {
        Ok(Arc::new(Certificate {
            key: ArcSwap::from_pointee(read(cert, key)?),
        }))
    }

    /// Uses this key for the handshakes from now on.
    pub fn replace(&self, key: CertifiedKey) {
        self.key.store(Arc::new(key));
    }
}

/// Reads a PEM chain and its private key.
pub fn read(cert: &Path, key: &Path) -> Result<CertifiedKey, String> {
    let (chain, private) =
        pingora::tls::load_certs_and_key_files(&cert.to_string_lossy(), &key.to_string_lossy())
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "{} holds no certificate or {} no private key",
                    cert.display(),
                    key.display()
                )
            })?;
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| "no TLS crypto provider installed".to_owned())?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| format!("{}: {e}", key.display()))
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key.load_full())
    }
}
