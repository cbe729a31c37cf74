//! TLS material: on first start a private CA is generated into the data directory
//! (`ca.pem`, which clients trust, and `ca-key.pem`); at every start a fresh server
//! certificate for the hub's host names is issued by it, so adding `--hostname`
//! needs no manual step. A user-supplied certificate and key replace both.

use crate::config::DataDir;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

fn ca_params() -> Result<CertificateParams, String> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Twinhub local CA");
    dn.push(DnType::OrganizationName, "Twinhub");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(params)
}

/// Returns the certificate chain and key to serve: the user's files when given,
/// otherwise a server certificate issued by the data directory's CA.
pub(crate) fn server_identity(
    data: &DataDir,
    host_names: &[String],
    user_cert: Option<&Path>,
    user_key: Option<&Path>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    match (user_cert, user_key) {
        (Some(cert), Some(key)) => return load_user_files(cert, key),
        (None, None) => {}
        _ => return Err("--tls-cert and --tls-key go together".into()),
    }
    let ca_key = if data.ca_key().exists() {
        let pem = std::fs::read_to_string(data.ca_key())
            .map_err(|e| format!("cannot read the CA key: {e}"))?;
        KeyPair::from_pem(&pem).map_err(|e| format!("the CA key is not valid: {e}"))?
    } else {
        KeyPair::generate().map_err(|e| e.to_string())?
    };
    // Re-signing the same subject with the same key reproduces an equivalent CA,
    // so the ca.pem clients already trust keeps verifying new server certificates.
    let ca_cert = ca_params()?
        .self_signed(&ca_key)
        .map_err(|e| e.to_string())?;
    if !data.ca_key().exists() || !data.ca_pem().exists() {
        data.write_private(&data.ca_key(), ca_key.serialize_pem().as_bytes())?;
        std::fs::write(data.ca_pem(), ca_cert.pem())
            .map_err(|e| format!("cannot write ca.pem: {e}"))?;
    }

    let mut names: Vec<String> = host_names.to_vec();
    for extra in ["localhost", "127.0.0.1", "::1"] {
        if !names.iter().any(|n| n.eq_ignore_ascii_case(extra)) {
            names.push(extra.into());
        }
    }
    let mut params = CertificateParams::new(names).map_err(|e| format!("bad host name: {e}"))?;
    params.distinguished_name.push(
        DnType::CommonName,
        host_names.first().map_or("localhost", String::as_str),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params
        .signed_by(&key, &ca_cert, &ca_key)
        .map_err(|e| e.to_string())?;
    let chain = vec![cert.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    Ok((chain, key))
}

fn load_user_files(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let chain = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not a PEM certificate chain: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{} is not a PEM private key: {e}", key.display()))?
        .ok_or_else(|| format!("{} holds no private key", key.display()))?;
    Ok((chain, key))
}

/// A rustls server configuration for the chain, advertising `alpn`.
pub(crate) fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| format!("the TLS certificate or key is not usable: {e}"))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}
