//! Certificates for registries that speak HTTPS: a private CA and loopback server certificates it signs.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

use super::Workspace;

/// A test CA: its PEM path in `ws` and an issuer to sign with.
pub fn test_ca(ws: &Workspace, name: &str) -> (std::path::PathBuf, Issuer<'static, KeyPair>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("bundle test {name}"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    (ws.write(&format!("{name}.pem"), &ca_cert.pem()), Issuer::new(ca_params, ca_key))
}

/// A server certificate for loopback signed by `issuer`: (cert path, key path).
pub fn server_cert(ws: &Workspace, issuer: &Issuer<'static, KeyPair>) -> (std::path::PathBuf, std::path::PathBuf) {
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, issuer)
        .unwrap();
    (ws.write("server.pem", &server.pem()), ws.write("server-key.pem", &server_key.serialize_pem()))
}
