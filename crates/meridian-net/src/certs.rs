//! A development certificate authority: `meridian certs init` and the lab use it
//! to give every process (and the operator) a certificate signed by one CA.
//!
//! Certificates are ECDSA P-256 and carry their holder's identity as one
//! `spiffe://meridian/...` URI SAN ([`crate::identity`]). Servers' certificates
//! (nodes, gateways, control-plane members) are valid for server and client
//! use and also carry the cluster name [`SERVER_NAME`] plus `localhost` and
//! `127.0.0.1`; users' certificates are client-only, so they cannot serve. They
//! are for development and tests: a production deployment brings its own CA.

use crate::NetError;
use crate::identity::Identity;
use crate::tls::SERVER_NAME;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// The files `init` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    /// The CA certificate (`ca.pem`; its key is `ca.key`).
    pub ca: PathBuf,
    /// One `NAME.pem` / `NAME.key` pair per requested name.
    pub certificates: Vec<PathBuf>,
}

/// Creates a new CA in `dir` and one certificate per identity, written as
/// `NAME.pem` / `NAME.key` (the identity's name). Refuses to overwrite an
/// existing `ca.pem`, so a running cluster's CA is never replaced by accident.
pub fn init(dir: &Path, identities: &[Identity]) -> Result<Issued, NetError> {
    std::fs::create_dir_all(dir).map_err(|source| NetError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let ca_path = dir.join("ca.pem");
    if ca_path.exists() {
        return Err(NetError::Generate {
            name: "ca".into(),
            reason: format!(
                "{} already exists; use another directory",
                ca_path.display()
            ),
        });
    }
    check_identities(identities)?;
    let ca_key = KeyPair::generate().map_err(|e| generate("ca", e))?;
    let ca_params = ca_params()?;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| generate("ca", e))?;
    write(&ca_path, ca_cert.pem().as_bytes())?;
    write(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
    let issuer = Issuer::new(ca_params, ca_key);
    let certificates = sign_all(dir, &issuer, identities)?;
    Ok(Issued {
        ca: ca_path,
        certificates,
    })
}

/// Signs more certificates with the CA that [`init`] made in `dir`
/// (`ca.pem`, `ca.key`): a new user, or a process's next certificate
/// (rotation; `replace` allows overwriting `NAME.pem`/`NAME.key`, which a
/// running process reloads without a restart).
pub fn issue(dir: &Path, identities: &[Identity], replace: bool) -> Result<Issued, NetError> {
    check_identities(identities)?;
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path).map_err(|source| NetError::Read { path, source })
    };
    let ca_key = KeyPair::from_pem(&read(dir.join("ca.key"))?).map_err(|e| generate("ca", e))?;
    let ca_path = dir.join("ca.pem");
    read(ca_path.clone())?;
    if !replace {
        for identity in identities {
            let path = dir.join(format!("{}.pem", identity.name()));
            if path.exists() {
                return Err(NetError::Generate {
                    name: identity.name().to_string(),
                    reason: format!(
                        "{} exists; pass --replace to issue its next certificate",
                        path.display()
                    ),
                });
            }
        }
    }
    // The issuer is the CA `init` made: same name and usages, same key (the
    // authority key identifier is derived from the key).
    let issuer = Issuer::new(ca_params()?, ca_key);
    let certificates = sign_all(dir, &issuer, identities)?;
    Ok(Issued {
        ca: ca_path,
        certificates,
    })
}

fn generate(name: &str, e: rcgen::Error) -> NetError {
    NetError::Generate {
        name: name.to_string(),
        reason: e.to_string(),
    }
}

/// The development CA's certificate parameters (the same every time).
fn ca_params() -> Result<CertificateParams, NetError> {
    let mut ca_params = CertificateParams::new(Vec::new()).map_err(|e| generate("ca", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Meridian development CA");
    ca_params.distinguished_name = dn;
    Ok(ca_params)
}

fn check_identities(identities: &[Identity]) -> Result<(), NetError> {
    let mut seen = std::collections::BTreeSet::new();
    for identity in identities {
        check_name(identity.name())?;
        if !seen.insert(identity.name()) {
            return Err(NetError::Generate {
                name: identity.name().to_string(),
                reason: "two identities share this name (it names the files)".into(),
            });
        }
    }
    Ok(())
}

/// One certificate per identity, signed by `issuer`, written to `dir`.
fn sign_all(
    dir: &Path,
    issuer: &Issuer<'_, KeyPair>,
    identities: &[Identity],
) -> Result<Vec<PathBuf>, NetError> {
    let mut certificates = Vec::with_capacity(identities.len());
    for identity in identities {
        let name = identity.name();
        let key = KeyPair::generate().map_err(|e| generate(name, e))?;
        let dns = if identity.is_server() {
            vec![SERVER_NAME.to_string(), "localhost".to_string()]
        } else {
            Vec::new()
        };
        let mut params = CertificateParams::new(dns).map_err(|e| generate(name, e))?;
        if identity.is_server() {
            params
                .subject_alt_names
                .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        }
        let uri = identity.uri().try_into().map_err(|e| generate(name, e))?;
        params.subject_alt_names.push(SanType::URI(uri));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.uri());
        params.distinguished_name = dn;
        params.extended_key_usages = if identity.is_server() {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            // A user certificate cannot pose as a server.
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, issuer)
            .map_err(|e| generate(name, e))?;
        let cert_path = dir.join(format!("{name}.pem"));
        // Key first: a process reloading on the certificate's change must
        // find the matching key already in place.
        write(
            &dir.join(format!("{name}.key")),
            key.serialize_pem().as_bytes(),
        )?;
        write(&cert_path, cert.pem().as_bytes())?;
        certificates.push(cert_path);
    }
    Ok(certificates)
}

/// Names become file names.
fn check_name(name: &str) -> Result<(), NetError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name != "ca";
    if ok {
        Ok(())
    } else {
        Err(NetError::Generate {
            name: name.to_string(),
            reason: "use 1 to 64 characters from a-z, A-Z, 0-9, '-' and '_' (and not \"ca\")"
                .into(),
        })
    }
}

/// Writes a file; keys are made readable by the owner only.
fn write(path: &Path, bytes: &[u8]) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if path.extension().is_some_and(|e| e == "key") {
        0o600
    } else {
        0o644
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|source| NetError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| NetError::Write {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsFiles;
    use std::sync::Arc;

    #[test]
    fn issued_files_load_and_ca_is_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Identity::parse("node/us-east/node").unwrap();
        let user = Identity::parse("user/client").unwrap();
        let issued = init(dir.path(), &[node.clone(), user.clone()]).expect("init");
        assert_eq!(issued.certificates.len(), 2);
        let material = TlsFiles::in_dir(dir.path(), "node").load().expect("load");
        material.rustls_server_config().expect("server config");
        material.rustls_client_config().expect("client config");
        let again = init(dir.path(), &[Identity::parse("user/x").unwrap()]).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        let other = tempfile::tempdir().expect("tempdir");
        let twice = init(other.path(), &[user.clone(), user.clone()]).unwrap_err();
        assert!(twice.to_string().contains("share this name"), "{twice}");
    }

    /// A TLS handshake in memory between `client` and `server`.
    fn handshake(
        client: Arc<rustls::ClientConfig>,
        server: Arc<rustls::ServerConfig>,
    ) -> Result<(), rustls::Error> {
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        let mut c = rustls::ClientConnection::new(client, name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut wire = Vec::new();
            c.write_tls(&mut wire).unwrap();
            s.read_tls(&mut wire.as_slice()).unwrap();
            s.process_new_packets()?;
            let mut wire = Vec::new();
            s.write_tls(&mut wire).unwrap();
            c.read_tls(&mut wire.as_slice()).unwrap();
            c.process_new_packets()?;
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok(());
            }
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }

    #[test]
    fn issued_later_certificates_are_trusted_and_replace_only_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Identity::parse("node/us-east/node").unwrap();
        init(dir.path(), std::slice::from_ref(&node)).expect("init");
        let bob = Identity::parse("user/bob").unwrap();
        issue(dir.path(), std::slice::from_ref(&bob), false).expect("issue");
        let server = TlsFiles::in_dir(dir.path(), "node").load().unwrap();
        let bob_files = TlsFiles::in_dir(dir.path(), "bob").load().unwrap();
        handshake(
            bob_files.rustls_client_config().unwrap(),
            server.rustls_server_config().unwrap(),
        )
        .expect("a later certificate is signed by the same CA");
        let err = issue(dir.path(), std::slice::from_ref(&bob), false).unwrap_err();
        assert!(err.to_string().contains("--replace"), "{err}");
        let before = std::fs::read(dir.path().join("node.pem")).unwrap();
        issue(dir.path(), std::slice::from_ref(&node), true).expect("rotate");
        assert_ne!(std::fs::read(dir.path().join("node.pem")).unwrap(), before);
        let rotated = TlsFiles::in_dir(dir.path(), "node").load().unwrap();
        handshake(
            bob_files.rustls_client_config().unwrap(),
            rotated.rustls_server_config().unwrap(),
        )
        .expect("a rotated certificate is trusted");
    }

    #[test]
    fn a_user_certificate_cannot_serve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Identity::parse("node/us-east/node").unwrap();
        let user = Identity::parse("user/alice").unwrap();
        init(dir.path(), &[node, user]).expect("init");
        let node = TlsFiles::in_dir(dir.path(), "node").load().unwrap();
        let alice = TlsFiles::in_dir(dir.path(), "alice").load().unwrap();
        // alice calls the node: fine.
        handshake(
            alice.rustls_client_config().unwrap(),
            node.rustls_server_config().unwrap(),
        )
        .expect("a user calls a server");
        // The node calls "a server" presenting alice's certificate: refused.
        let error = handshake(
            node.rustls_client_config().unwrap(),
            alice.rustls_server_config().unwrap(),
        )
        .unwrap_err();
        assert!(
            matches!(error, rustls::Error::InvalidCertificate(_)),
            "{error:?}"
        );
    }

    fn first_certificate(pem: &[u8]) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::pem_slice_iter(pem)
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn certificates_carry_exactly_their_identity_and_users_cannot_serve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let node = Identity::parse("node/eu-west/eu-west-1").unwrap();
        let user = Identity::parse("user/alice").unwrap();
        init(dir.path(), &[node.clone(), user.clone()]).expect("init");
        for identity in [&node, &user] {
            let pem = std::fs::read(dir.path().join(format!("{}.pem", identity.name()))).unwrap();
            let der = first_certificate(&pem);
            assert_eq!(&Identity::from_certificate(&der).unwrap(), identity);
            let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
            let usage = cert.extended_key_usage().unwrap().unwrap().value;
            assert!(usage.client_auth);
            // Only servers may serve.
            assert_eq!(usage.server_auth, identity.is_server(), "{identity}");
        }
        // Its expiry is readable for the metrics: in the future.
        let files = crate::TlsFiles::in_dir(dir.path(), node.name());
        let expiry = files.certificate_expiry_unix().expect("expiry");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(expiry > now + 86_400, "expires {expiry}, now {now}");
        assert_eq!(
            crate::TlsFiles::in_dir(dir.path(), "nobody").certificate_expiry_unix(),
            None
        );
        // A certificate without an identity is refused by name.
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let der = first_certificate(&ca);
        let error = Identity::from_certificate(&der).unwrap_err();
        assert!(error.to_string().contains("no spiffe://"), "{error}");
    }
}
