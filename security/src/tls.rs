//! TLS for every connection, with rustls through tonic's own features:
//! what a server presents ([`ServerTls`]), what a client trusts
//! ([`ClientTls`]), the URL scheme that must go with each, and development
//! certificates ([`generate`], behind `volley certs generate`).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::cluster::write_private;
use crate::error::SecurityError;

fn read(path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// What a TLS server presents, and whose client certificates it accepts.
#[derive(Clone, Debug)]
pub struct ServerTls {
    identity: Identity,
    client_ca: Option<Certificate>,
}

impl ServerTls {
    /// The certificate chain and key in PEM files (`--tls-cert`,
    /// `--tls-key`); with `client_ca`, clients may also present a
    /// certificate signed by it (mutual TLS between executors).
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<Self, SecurityError> {
        Ok(Self {
            identity: Identity::from_pem(read(cert)?, read(key)?),
            client_ca: client_ca.map(read).transpose()?.map(Certificate::from_pem),
        })
    }

    /// tonic's server configuration.
    pub fn config(&self) -> ServerTlsConfig {
        let config = ServerTlsConfig::new().identity(self.identity.clone());
        match &self.client_ca {
            Some(ca) => config.client_ca_root(ca.clone()).client_auth_optional(true),
            None => config,
        }
    }
}

/// What a TLS client trusts, and the certificate it may present.
#[derive(Clone, Debug)]
pub struct ClientTls {
    ca: Certificate,
    identity: Option<Identity>,
}

impl ClientTls {
    /// Trusts the CA certificate in `ca` (`--tls-ca`, `VOLLEY_TLS_CA`).
    pub fn load(ca: &Path) -> Result<Self, SecurityError> {
        Ok(Self {
            ca: Certificate::from_pem(read(ca)?),
            identity: None,
        })
    }

    /// Also presents this certificate and key (`--tls-client-cert`,
    /// `--tls-client-key`).
    pub fn with_identity(mut self, cert: &Path, key: &Path) -> Result<Self, SecurityError> {
        self.identity = Some(Identity::from_pem(read(cert)?, read(key)?));
        Ok(self)
    }

    /// tonic's client configuration.
    pub fn config(&self) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(self.ca.clone());
        match &self.identity {
            Some(identity) => config.identity(identity.clone()),
            None => config,
        }
    }
}

/// The scheme URLs use with or without TLS.
pub fn scheme(tls: bool) -> &'static str {
    if tls { "https" } else { "http" }
}

/// Refuses a URL whose scheme does not match whether TLS is configured: an
/// `https://` URL without a CA would otherwise be tried in cleartext, and
/// an `http://` one with TLS configured would send credentials unencrypted.
pub fn check_scheme(url: &str, tls: bool) -> Result<(), String> {
    match (url.split_once("://").map(|(s, _)| s), tls) {
        (Some("https"), true) | (Some("http"), false) => Ok(()),
        (Some("https"), false) => Err(format!(
            "{url} asks for TLS, but no CA certificate is configured to check the server \
             with (pass --tls-ca or set VOLLEY_TLS_CA)"
        )),
        (Some("http"), true) => Err(format!(
            "{url} is plain HTTP, but TLS is configured: use https://"
        )),
        _ => Err(format!("{url} is not an http:// or https:// URL")),
    }
}

/// Development certificates: a CA, and one certificate for the given hosts
/// that every node uses as server and client. Written to `dir` as
/// `ca.pem`, `ca-key.pem`, `node.pem` and `node-key.pem` (keys readable by
/// their owner only). For production, use your organisation's CA.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<Vec<PathBuf>, SecurityError> {
    let failed = |e: rcgen::Error| SecurityError::Certificates(e.to_string());
    if hosts.is_empty() {
        return Err(SecurityError::Invalid(
            "name at least one host (--hosts localhost,127.0.0.1,...)".into(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|source| SecurityError::Write {
        path: dir.to_path_buf(),
        source,
    })?;

    let ca_key = KeyPair::generate().map_err(failed)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Volley development CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(failed)?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let node_key = KeyPair::generate().map_err(failed)?;
    let mut node_params = CertificateParams::new(hosts.to_vec()).map_err(failed)?;
    node_params
        .distinguished_name
        .push(DnType::CommonName, "Volley node");
    node_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    node_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let node_cert = node_params.signed_by(&node_key, &issuer).map_err(failed)?;

    let files = [
        ("ca.pem", ca_cert.pem(), false),
        ("ca-key.pem", ca_key.serialize_pem(), true),
        ("node.pem", node_cert.pem(), false),
        ("node-key.pem", node_key.serialize_pem(), true),
    ];
    let mut written = Vec::new();
    for (name, text, private) in files {
        let path = dir.join(name);
        if private {
            write_private(&path, &text)?;
        } else {
            std::fs::write(&path, text).map_err(|source| SecurityError::Write {
                path: path.clone(),
                source,
            })?;
        }
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_as_server_and_client_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let files = generate(dir.path(), &hosts).unwrap();
        assert_eq!(files.len(), 4);
        let server = ServerTls::load(
            &dir.path().join("node.pem"),
            &dir.path().join("node-key.pem"),
            Some(&dir.path().join("ca.pem")),
        );
        assert!(server.is_ok());
        let client = ClientTls::load(&dir.path().join("ca.pem"))
            .unwrap()
            .with_identity(
                &dir.path().join("node.pem"),
                &dir.path().join("node-key.pem"),
            );
        assert!(client.is_ok());
        assert!(
            generate(dir.path(), &hosts).is_err(),
            "keys are never replaced"
        );
    }

    #[test]
    fn a_url_scheme_that_does_not_match_the_tls_setting_is_refused() {
        assert!(check_scheme("https://h:1", true).is_ok());
        assert!(check_scheme("http://h:1", false).is_ok());
        assert!(
            check_scheme("https://h:1", false)
                .unwrap_err()
                .contains("--tls-ca")
        );
        assert!(
            check_scheme("http://h:1", true)
                .unwrap_err()
                .contains("https://")
        );
    }
}
