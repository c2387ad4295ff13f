//! TLS for every door of the one port: PEM loading, the rustls `ServerConfig` (ALPN `h2` and
//! `http/1.1`, optional mTLS), and a server certificate that follows its files.
//!
//! The `ServerConfig` is built once. Its certificate comes from [`ReloadingCert`], which a
//! watcher task refreshes when the cert or key file changes (polled every second) or on
//! SIGHUP: new handshakes get the new certificate, open connections keep theirs. A bad new
//! file is logged and the last good certificate stays. The client CA of mTLS is read once at
//! start; changing it needs a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::crypto::{ring, CryptoProvider};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsFiles;

/// How often the watcher compares the cert and key files with what it last read.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct TlsError {
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it and what to do.
    pub why: String,
}

fn file_error(path: &Path, why: impl Into<String>) -> TlsError {
    TlsError {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

/// Loads the files, builds the server config and starts the reload watcher (on the current
/// Tokio runtime), which ends once the acceptor and every connection it accepted are gone.
pub fn start(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let (cert_pem, key_pem) = read_pair(files)?;
    let key = certified_key(files, &cert_pem, &key_pem, &provider)?;
    let resolver = Arc::new(ReloadingCert {
        current: ArcSwap::from_pointee(key),
    });
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| file_error(&files.cert, format!("tls setup failed: {e}")))?;
    let builder = match &files.client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider.clone())?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    spawn_watcher(
        files.clone(),
        provider,
        Arc::downgrade(&resolver),
        Ok((cert_pem, key_pem)),
    );
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Runs the server side of one connection's handshake within [`HANDSHAKE_TIMEOUT`].
pub async fn handshake(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, String> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "no handshake within {}s",
            HANDSHAKE_TIMEOUT.as_secs()
        )),
    }
}

/// The certificate new handshakes get; swapped whole on reload.
#[derive(Debug)]
struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// What the watcher last read: both files' bytes, or why they could not be read.
type Snapshot = Result<(Vec<u8>, Vec<u8>), TlsError>;

fn read_pair(files: &TlsFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| file_error(path, format!("cannot read ({e})")))
    };
    Ok((read(&files.cert)?, read(&files.key)?))
}

/// Parses a PEM chain and key and checks that the key belongs to the leaf.
fn certified_key(
    files: &TlsFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(&files.cert, format!("not a PEM certificate chain ({e})")))?;
    if chain.is_empty() {
        return Err(file_error(
            &files.cert,
            "no CERTIFICATE block; give a PEM certificate chain, leaf first",
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        file_error(
            &files.key,
            format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1) ({e})"),
        )
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        file_error(
            &files.key,
            format!(
                "does not fit the certificate in {} ({e})",
                files.cert.display()
            ),
        )
    })
}

/// The verifier of mTLS: client certificates must chain to a CA in `path`.
fn client_verifier(
    path: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, format!("cannot read the client CA ({e})")))?
    {
        let cert = cert.map_err(|e| file_error(path, format!("not a PEM certificate ({e})")))?;
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate ({e})")))?;
    }
    if roots.is_empty() {
        return Err(file_error(
            path,
            "no CERTIFICATE block; give the client CA in PEM",
        ));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| file_error(path, format!("cannot verify clients with it ({e})")))
}

/// Polls the files every [`POLL_INTERVAL`] (and reloads at once on SIGHUP) until the
/// resolver is dropped.
fn spawn_watcher(
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    resolver: Weak<ReloadingCert>,
    mut last: Snapshot,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut hangup = hangup_signal();
        loop {
            let forced = tokio::select! {
                _ = tick.tick() => false,
                _ = next_hangup(&mut hangup) => true,
            };
            let Some(resolver) = resolver.upgrade() else {
                return;
            };
            let now = read_pair(&files);
            if !forced && same(&now, &last) {
                continue;
            }
            match &now {
                Ok((cert, key)) => match certified_key(&files, cert, key, &provider) {
                    Ok(key) => {
                        resolver.current.store(Arc::new(key));
                        tracing::info!(cert = %files.cert.display(), "tls certificate reloaded");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "tls reload refused; keeping the last good certificate")
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, "tls reload failed; keeping the last good certificate")
                }
            }
            last = now;
        }
    });
}

fn same(a: &Snapshot, b: &Snapshot) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.to_string() == b.to_string(),
        _ => false,
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; tls reload follows file changes only");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

/// Resolves on the next SIGHUP; never where there is none.
#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) {
    let got = match hangup {
        Some(s) => s.recv().await.is_some(),
        None => false,
    };
    if !got {
        *hangup = None;
        std::future::pending::<()>().await;
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) {
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_string()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    fn files() -> TlsFiles {
        TlsFiles {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
            client_ca: None,
        }
    }

    #[test]
    fn a_matching_pair_loads_and_bad_files_are_named() {
        let provider = ring::default_provider();
        let (cert, key) = pair("localhost");
        let (_, other_key) = pair("other");
        let f = files();
        assert!(certified_key(&f, cert.as_bytes(), key.as_bytes(), &provider).is_ok());

        let err = certified_key(&f, b"garbage", key.as_bytes(), &provider).expect_err("no pem");
        assert_eq!(err.path, PathBuf::from("cert.pem"));
        assert!(err.why.contains("no CERTIFICATE block"), "{err}");

        let err = certified_key(&f, cert.as_bytes(), b"", &provider).expect_err("no key");
        assert_eq!(err.path, PathBuf::from("key.pem"));

        let err = certified_key(&f, cert.as_bytes(), other_key.as_bytes(), &provider)
            .expect_err("mismatch");
        assert_eq!(err.path, PathBuf::from("key.pem"));
        assert!(
            err.to_string()
                .contains("does not fit the certificate in cert.pem"),
            "{err}"
        );
    }

    #[test]
    fn snapshots_compare_by_content_and_error() {
        let a: Snapshot = Ok((b"c".to_vec(), b"k".to_vec()));
        let b: Snapshot = Ok((b"c".to_vec(), b"k2".to_vec()));
        let e: Snapshot = Err(file_error(Path::new("x"), "cannot read"));
        assert!(same(&a, &Ok((b"c".to_vec(), b"k".to_vec()))));
        assert!(!same(&a, &b));
        assert!(!same(&a, &e));
        assert!(same(&e, &Err(file_error(Path::new("x"), "cannot read"))));
    }
}
