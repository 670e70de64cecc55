//! A development certificate authority: `meridian certs init` and the lab use it
//! to give every process (and the operator) a certificate signed by one CA.
//!
//! Certificates are ECDSA P-256, valid for both server and client use, and carry
//! the cluster name [`SERVER_NAME`] plus `localhost` and `127.0.0.1`. They are for
//! development and tests: a production deployment brings its own CA.

use crate::NetError;
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

/// Creates a new CA in `dir` and one certificate per entry of `names`. Refuses
/// to overwrite an existing `ca.pem`, so a running cluster's CA is never
/// replaced by accident.
pub fn init(dir: &Path, names: &[String]) -> Result<Issued, NetError> {
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
    for name in names {
        check_name(name)?;
    }
    let generate = |name: &str, e: rcgen::Error| NetError::Generate {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let ca_key = KeyPair::generate().map_err(|e| generate("ca", e))?;
    let mut ca_params = CertificateParams::new(Vec::new()).map_err(|e| generate("ca", e))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Meridian development CA");
    ca_params.distinguished_name = dn;
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(|e| generate("ca", e))?;
    write(&ca_path, ca_cert.pem().as_bytes())?;
    write(&dir.join("ca.key"), ca_key.serialize_pem().as_bytes())?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut certificates = Vec::with_capacity(names.len());
    for name in names {
        let key = KeyPair::generate().map_err(|e| generate(name, e))?;
        let mut params =
            CertificateParams::new(vec![SERVER_NAME.to_string(), "localhost".to_string()])
                .map_err(|e| generate(name, e))?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name.as_str());
        params.distinguished_name = dn;
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(|e| generate(name, e))?;
        let cert_path = dir.join(format!("{name}.pem"));
        write(&cert_path, cert.pem().as_bytes())?;
        write(
            &dir.join(format!("{name}.key")),
            key.serialize_pem().as_bytes(),
        )?;
        certificates.push(cert_path);
    }
    Ok(Issued {
        ca: ca_path,
        certificates,
    })
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

    #[test]
    fn issued_files_load_and_ca_is_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let issued = init(dir.path(), &["node".into(), "client".into()]).expect("init");
        assert_eq!(issued.certificates.len(), 2);
        let material = TlsFiles::in_dir(dir.path(), "node").load().expect("load");
        material.rustls_server_config().expect("server config");
        material.rustls_client_config().expect("client config");
        let again = init(dir.path(), &["x".into()]).unwrap_err();
        assert!(again.to_string().contains("already exists"), "{again}");
        assert!(init(dir.path(), &["../evil".into()]).is_err());
    }
}
