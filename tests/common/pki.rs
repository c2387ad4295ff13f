//! Test certificates made on the spot: CAs, server certificates for 127.0.0.1/localhost and
//! client certificates, written as PEM files, plus a client config for each.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate in PEM.
    pub pem: String,
}

/// A certificate and its key.
pub struct Leaf {
    /// Certificate in PEM.
    pub cert_pem: String,
    /// Private key in PEM.
    pub key_pem: String,
    /// Certificate in DER, to compare with what a handshake presents.
    pub der: CertificateDer<'static>,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost.
    pub fn server(&self, serial: u64) -> Leaf {
        self.leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            serial,
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate.
    pub fn client(&self, name: &str) -> Leaf {
        self.leaf(vec![name.into()], 1, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: Vec<String>, serial: u64, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names).expect("leaf params");
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf cert");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

/// Everything a TLS test needs, as files under one temp dir.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: Ca,
    /// A CA the server does not trust.
    pub other_ca: Ca,
    /// The server's certificate (serial 1).
    pub server: Leaf,
    /// A client certificate signed by `ca`.
    pub client: Leaf,
    /// A client certificate signed by `other_ca`.
    pub stranger: Leaf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let ca = Ca::new("mse test ca");
        let other_ca = Ca::new("some other ca");
        let pki = Pki {
            dir: super::temp_dir(tag),
            server: ca.server(1),
            client: ca.client("operator-1"),
            stranger: other_ca.client("stranger"),
            ca,
            other_ca,
        };
        pki.write("ca.pem", &pki.ca.pem);
        pki.write_leaf("server", &pki.server);
        pki.write_leaf("client", &pki.client);
        pki.write_leaf("stranger", &pki.stranger);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes a file under the dir (via a rename, so a reader never sees half of it).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("write pem");
        std::fs::rename(&tmp, &path).expect("rename pem");
        path
    }

    /// Writes `<name>.pem` and `<name>.key`.
    pub fn write_leaf(&self, name: &str, leaf: &Leaf) {
        self.write(&format!("{name}.key"), &leaf.key_pem);
        self.write(&format!("{name}.pem"), &leaf.cert_pem);
    }

    /// The server's TLS files; with mTLS when `mtls`.
    pub fn files(&self, mtls: bool) -> mlua_swarm_grpc::config::TlsFiles {
        mlua_swarm_grpc::config::TlsFiles {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: mtls.then(|| self.path("ca.pem")),
        }
    }

    /// A tonic client config trusting `ca`, presenting `identity` if given.
    pub fn tonic(&self, identity: Option<&Leaf>) -> tonic::transport::ClientTlsConfig {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca.pem));
        match identity {
            Some(leaf) => tls.identity(tonic::transport::Identity::from_pem(
                &leaf.cert_pem,
                &leaf.key_pem,
            )),
            None => tls,
        }
    }

    /// A rustls client config trusting `ca`, presenting `identity` if given, with `alpn`.
    pub fn rustls(&self, identity: Option<&Leaf>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.ca.pem.as_bytes()).expect("ca der"))
            .expect("trust ca");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots);
        let mut config = match identity {
            Some(leaf) => builder
                .with_client_auth_cert(
                    vec![leaf.der.clone()],
                    PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("key der"),
                )
                .expect("client auth"),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}
