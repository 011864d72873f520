//! `rke2 certificate rotate-ca --path <dir> [--force]` (docs/operations.md §4.3): new CA
//! certificates and keys, laid out as in `server/tls` (`server-ca.crt/.key`,
//! `client-ca.crt/.key`, `request-header-ca.crt/.key`, `etcd/server-ca.crt/.key`,
//! `etcd/peer-ca.crt/.key`; any subset), are checked and written into the cluster's bootstrap
//! data, from which every server takes them at its next start. Without `--force` each new CA
//! must chain to the CA it replaces — the cross-signed path: the new CA certificate signed by
//! the current CA, directly or through certificates later in its bundle — so nodes that still
//! trust only the old CA keep trusting the cluster during the rotation.

use std::collections::BTreeMap;
use std::path::Path;

use x509_parser::certificate::X509Certificate;

use crate::bootstrap::BootstrapData;

/// CA files of a rotation directory and their bootstrap-data entries (certificate, key).
pub const CA_FILES: &[(&str, &str, &str)] = &[
    ("server-ca", "ServerCA", "ServerCAKey"),
    ("client-ca", "ClientCA", "ClientCAKey"),
    ("request-header-ca", "RequestHeaderCA", "RequestHeaderCAKey"),
    ("etcd/server-ca", "ETCDServerCA", "ETCDServerCAKey"),
    ("etcd/peer-ca", "ETCDPeerCA", "ETCDPeerCAKey"),
];

/// Why new CA material was refused. Nothing is written when any check fails.
#[derive(Debug, thiserror::Error)]
pub enum RotateCaError {
    #[error("{0} holds none of the CA files ({files})", files = CA_FILES.iter().map(|(f, _, _)| format!("{f}.crt/.key")).collect::<Vec<_>>().join(", "))]
    Empty(String),
    #[error(
        "{present} is there but {missing} is missing: a CA needs both its certificate and its key"
    )]
    HalfPair { present: String, missing: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error(
        "{file}: the new CA certificate is not signed by the current {file} CA (directly or \
         through the certificates after it in the file), so nodes that trust the current CA would \
         stop trusting the cluster; cross-sign it with the current CA, or pass --force to replace \
         the CA anyway"
    )]
    NotCrossSigned { file: String },
    #[error("unknown bootstrap entry {0} in the upload")]
    UnknownEntry(String),
}

/// Reads the CA files present in `dir` as bootstrap entries (entry name → bytes).
pub fn read_dir(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, RotateCaError> {
    let mut out = BTreeMap::new();
    for (file, cert_entry, key_entry) in CA_FILES {
        let (crt, key) = (
            dir.join(format!("{file}.crt")),
            dir.join(format!("{file}.key")),
        );
        match (crt.exists(), key.exists()) {
            (false, false) => continue,
            (true, false) | (false, true) => {
                let (present, missing) = if crt.exists() { (crt, key) } else { (key, crt) };
                return Err(RotateCaError::HalfPair {
                    present: present.display().to_string(),
                    missing: missing.display().to_string(),
                });
            }
            (true, true) => {}
        }
        for (path, entry) in [(&crt, cert_entry), (&key, key_entry)] {
            let bytes = std::fs::read(path).map_err(|source| RotateCaError::Read {
                path: path.display().to_string(),
                source,
            })?;
            out.insert(entry.to_string(), bytes);
        }
    }
    if out.is_empty() {
        return Err(RotateCaError::Empty(dir.display().to_string()));
    }
    Ok(out)
}

fn ders(pem: &[u8], file: &str) -> Result<Vec<Vec<u8>>, RotateCaError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<Vec<u8>> = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<_, _>>()
        .map_err(|e| RotateCaError::Invalid {
            file: file.to_string(),
            message: format!("not a PEM certificate bundle: {e}"),
        })?;
    if certs.is_empty() {
        return Err(RotateCaError::Invalid {
            file: file.to_string(),
            message: "no certificate in the file".into(),
        });
    }
    Ok(certs)
}

fn parse<'a>(der: &'a [u8], file: &str) -> Result<X509Certificate<'a>, RotateCaError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, c)| c)
        .map_err(|e| RotateCaError::Invalid {
            file: file.to_string(),
            message: format!("unreadable certificate: {e}"),
        })
}

/// Whether `cert` chains to `anchor` through `others` (signature checks only; at most as many
/// steps as there are certificates).
fn chains_to(
    cert: &X509Certificate<'_>,
    anchor: &X509Certificate<'_>,
    others: &[X509Certificate<'_>],
) -> bool {
    let mut frontier = vec![cert];
    for _ in 0..=others.len() {
        let mut next = Vec::new();
        for c in frontier {
            if c.verify_signature(Some(anchor.public_key())).is_ok() {
                return true;
            }
            for o in others {
                if o.subject() == c.issuer()
                    && !std::ptr::eq(o, c)
                    && c.verify_signature(Some(o.public_key())).is_ok()
                {
                    next.push(o);
                }
            }
        }
        if next.is_empty() {
            return false;
        }
        frontier = next;
    }
    false
}

/// Checks the new CA entries against the `current` bootstrap data: each certificate is a CA
/// whose key is the one given; without `force`, each chains to the CA it replaces (or is it).
pub fn validate(
    current: &BootstrapData,
    new: &BTreeMap<String, Vec<u8>>,
    force: bool,
) -> Result<(), RotateCaError> {
    for name in new.keys() {
        if !CA_FILES.iter().any(|(_, c, k)| name == c || name == k) {
            return Err(RotateCaError::UnknownEntry(name.clone()));
        }
    }
    for (file, cert_entry, key_entry) in CA_FILES {
        let (Some(cert_pem), Some(key_pem)) = (new.get(*cert_entry), new.get(*key_entry)) else {
            if new.contains_key(*cert_entry) || new.contains_key(*key_entry) {
                return Err(RotateCaError::HalfPair {
                    present: format!("{file} (one half)"),
                    missing: format!("{file} (the other half)"),
                });
            }
            continue;
        };
        let file_crt = format!("{file}.crt");
        let invalid = |message: String| RotateCaError::Invalid {
            file: file_crt.clone(),
            message,
        };
        let chain = ders(cert_pem, &file_crt)?;
        let certs: Vec<X509Certificate<'_>> = chain
            .iter()
            .map(|d| parse(d, &file_crt))
            .collect::<Result<_, _>>()?;
        let first = &certs[0];
        if !first.is_ca() {
            return Err(invalid(
                "the first certificate is not a CA (basicConstraints CA:TRUE)".into(),
            ));
        }
        let now = x509_parser::time::ASN1Time::now();
        if !first.validity().is_valid_at(now) {
            return Err(invalid("the first certificate is not valid now".into()));
        }
        let key = rcgen::KeyPair::from_pem(&String::from_utf8_lossy(key_pem)).map_err(|e| {
            RotateCaError::Invalid {
                file: format!("{file}.key"),
                message: format!("not a usable private key: {e}"),
            }
        })?;
        if rcgen::PublicKeyData::subject_public_key_info(&key) != first.public_key().raw {
            return Err(RotateCaError::Invalid {
                file: format!("{file}.key"),
                message: format!("the key does not belong to the first certificate of {file}.crt"),
            });
        }
        if force {
            continue;
        }
        let Ok(current_pem) = current.content(cert_entry) else {
            continue;
        };
        let current_ders = ders(&current_pem, &file_crt)?;
        let anchor = parse(&current_ders[0], &file_crt)?;
        let same = first.public_key().raw == anchor.public_key().raw;
        if !same && !chains_to(first, &anchor, &certs[1..]) {
            return Err(RotateCaError::NotCrossSigned {
                file: file.to_string(),
            });
        }
    }
    Ok(())
}

/// Puts the new entries into `data`.
pub fn apply(data: &mut BootstrapData, new: &BTreeMap<String, Vec<u8>>) {
    for (name, bytes) in new {
        data.insert(name, bytes);
    }
}

/// Whether two bundles differ in a CA entry (certificate or key).
pub fn cas_differ(a: &BootstrapData, b: &BootstrapData) -> bool {
    CA_FILES.iter().any(|(_, c, k)| {
        [c, k]
            .iter()
            .any(|e| a.files.get(**e).map(|f| &f.content) != b.files.get(**e).map(|f| &f.content))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::CertAuthority;

    /// A CA `cn` signed by `by` (or self-signed), as a `CertAuthority`-style (cert, key) pair.
    fn ca(cn: &str, by: Option<&CertAuthority>) -> (String, String) {
        let mut params = rcgen::CertificateParams::default();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = match by {
            Some(issuer) => {
                let issuer = rcgen::Issuer::from_ca_cert_pem(
                    &issuer.cert_pem,
                    rcgen::KeyPair::from_pem(issuer.key_pem()).unwrap(),
                )
                .unwrap();
                params.signed_by(&key, &issuer).unwrap()
            }
            None => params.self_signed(&key).unwrap(),
        };
        (cert.pem(), key.serialize_pem())
    }

    fn upload(cert: &str, key: &str) -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([
            ("ServerCA".to_string(), cert.as_bytes().to_vec()),
            ("ServerCAKey".to_string(), key.as_bytes().to_vec()),
        ])
    }

    #[test]
    fn only_cas_chaining_to_the_current_one_pass_without_force() {
        let current = CertAuthority::generate("rke2-server").unwrap();
        let mut data = BootstrapData::default();
        data.insert("ServerCA", current.cert_pem.as_bytes());

        // Signed by the current CA: accepted.
        let (cross, cross_key) = ca("new", Some(&current));
        validate(&data, &upload(&cross, &cross_key), false).unwrap();
        // Through an intermediate later in the bundle: accepted.
        let (mid_cert, mid_key) = ca("mid", Some(&current));
        let mid = CertAuthority::from_pem(&mid_cert, &mid_key).unwrap();
        let (leafca, leafca_key) = ca("new-via-mid", Some(&mid));
        validate(
            &data,
            &upload(&format!("{leafca}{mid_cert}"), &leafca_key),
            false,
        )
        .unwrap();
        // Unrelated: refused, unless forced.
        let (other, other_key) = ca("other", None);
        assert!(matches!(
            validate(&data, &upload(&other, &other_key), false),
            Err(RotateCaError::NotCrossSigned { .. })
        ));
        validate(&data, &upload(&other, &other_key), true).unwrap();
        // Another certificate's key, a half pair, an unknown entry: refused even forced.
        assert!(matches!(
            validate(&data, &upload(&cross, &other_key), true),
            Err(RotateCaError::Invalid { .. })
        ));
        let mut half = upload(&cross, &cross_key);
        half.remove("ServerCAKey");
        assert!(matches!(
            validate(&data, &half, true),
            Err(RotateCaError::HalfPair { .. })
        ));
        let mut unknown = upload(&cross, &cross_key);
        unknown.insert("PasswdFile".into(), b"x".to_vec());
        assert!(matches!(
            validate(&data, &unknown, true),
            Err(RotateCaError::UnknownEntry(_))
        ));
        // A leaf is not a CA.
        let (leaf_chain, leaf_key) = current
            .issue_with_new_key(&crate::pki::LeafSpec::client("x", &[]))
            .unwrap();
        assert!(matches!(
            validate(&data, &upload(&leaf_chain, &leaf_key), true),
            Err(RotateCaError::Invalid { .. })
        ));
    }
}
