//! HTTPS for the API: a rustls acceptor from PEM files.

use std::io;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls;

use super::serve::TlsFiles;

/// Reads the certificate chain and key; an error names the file and what is wrong.
pub(crate) fn acceptor(files: &TlsFiles) -> io::Result<tokio_rustls::TlsAcceptor> {
    let bad = |what: &std::path::Path, e: &dyn std::fmt::Display| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("tls: {}: {e}", what.display()),
        )
    };
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad(&files.cert, &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&files.cert, &e))?;
    if chain.is_empty() {
        return Err(bad(&files.cert, &"no certificate in the file"));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad(&files.key, &e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(crate::util::tls_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&files.cert, &e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(&files.cert, &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
