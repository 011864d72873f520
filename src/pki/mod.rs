//! Certificate authorities and leaf certificates (docs/architecture.md §2, docs/protocol.md §4):
//! ECDSA P-256 via rcgen, CAs for 10 years, leaves for 365 days, leaves renewed at start when
//! within 120 days of expiry or when their subject, SANs or issuer no longer match. CAs are never
//! replaced silently.

pub mod rotate;
pub mod rotate_ca;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};

use crate::fsutil::{self, IoContext, PathError};
use crate::paths::CertPair;

/// CA lifetime.
pub const CA_VALIDITY: Duration = Duration::from_secs(3650 * 86400);
/// Leaf lifetime.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86400);
/// Leaves expiring sooner than this are regenerated (at start and while running).
pub const RENEW_BEFORE: Duration = Duration::from_secs(120 * 86400);

/// When a leaf of `validity` is renewed: 120 days before expiry, or a third of its lifetime
/// before when it lives shorter than a year (`leaf-cert-validity`), so a short-lived leaf is
/// not renewed on every check.
pub fn renew_before(validity: Duration) -> Duration {
    RENEW_BEFORE.min(validity / 3)
}

/// PKI errors.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {message}")]
    BadFile { path: String, message: String },
    #[error("invalid certificate signing request: {0}")]
    BadCsr(#[source] rcgen::Error),
    #[error("invalid certificate: {0}")]
    BadCert(String),
    #[error("invalid certificate: {0}")]
    BadPem(#[source] rustls::pki_types::pem::Error),
    #[error("invalid certificate: {0}")]
    BadX509(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    #[error(transparent)]
    Io(#[from] PathError),
}

fn to_offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// A certificate authority: its certificate and signing key.
pub struct CertAuthority {
    pub cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// SubjectKeyIdentifier of the CA certificate, to check leaves were issued by it.
    ski: Option<Vec<u8>>,
}

impl std::fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertAuthority").finish_non_exhaustive()
    }
}

impl CertAuthority {
    /// Generates a new self-signed CA named `<prefix>-ca@<unix seconds>`.
    pub fn generate(prefix: &str) -> Result<CertAuthority, PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{prefix}-ca@{}", unix_now()));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::CrlSign,
        ];
        let now = SystemTime::now();
        params.not_before = to_offset(now - Duration::from_secs(3600));
        params.not_after = to_offset(now + CA_VALIDITY);
        let cert = params.self_signed(&key)?;
        Self::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// Loads a CA from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<CertAuthority, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        let ski = first_cert_der(cert_pem.as_bytes())
            .ok()
            .and_then(|der| CertInfo::parse(&der).ok())
            .and_then(|i| i.subject_key_id);
        Ok(CertAuthority {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
            ski,
        })
    }

    /// Loads a CA from its files.
    pub fn load(pair: &CertPair) -> Result<CertAuthority, PkiError> {
        let cert = std::fs::read_to_string(&pair.cert).at(&pair.cert)?;
        let key = std::fs::read_to_string(&pair.key).at(&pair.key)?;
        Self::from_pem(&cert, &key).map_err(|e| PkiError::BadFile {
            path: pair.cert.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Loads the CA at `pair`, or creates it when neither file exists. A half-present CA
    /// (certificate without key or the reverse) is an error: replacing it would silently
    /// invalidate every certificate and token in the cluster.
    pub fn load_or_create(
        pair: &CertPair,
        prefix: &str,
    ) -> Result<(CertAuthority, bool), PkiError> {
        match (pair.cert.exists(), pair.key.exists()) {
            (true, true) => Ok((Self::load(pair)?, false)),
            (false, false) => {
                let ca = Self::generate(prefix)?;
                ca.save(pair)?;
                Ok((ca, true))
            }
            (c, _) => Err(PkiError::BadFile {
                path: if c { &pair.key } else { &pair.cert }.display().to_string(),
                message: "missing while its CA counterpart exists; restore it from a backup \
                          (the CA is never regenerated silently)"
                    .into(),
            }),
        }
    }

    /// Writes certificate (0644) and key (0600) atomically.
    pub fn save(&self, pair: &CertPair) -> Result<(), PkiError> {
        fsutil::write_atomic_mkdir(&pair.key, self.key_pem.as_bytes(), fsutil::SECRET_FILE_MODE)
            .at(&pair.key)?;
        fsutil::write_atomic_mkdir(
            &pair.cert,
            self.cert_pem.as_bytes(),
            fsutil::PUBLIC_FILE_MODE,
        )
        .at(&pair.cert)?;
        Ok(())
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Issues a leaf for `public_key`; returns leaf PEM followed by the CA PEM.
    pub fn issue(
        &self,
        spec: &LeafSpec,
        public_key: &impl PublicKeyData,
    ) -> Result<String, PkiError> {
        let params = spec.params()?;
        let cert = params.signed_by(public_key, &self.issuer)?;
        let mut out = cert.pem();
        out.push_str(&self.cert_pem);
        Ok(out)
    }

    /// Issues a leaf with a fresh key; returns (chain PEM, key PEM).
    pub fn issue_with_new_key(&self, spec: &LeafSpec) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let chain = self.issue(spec, &key)?;
        Ok((chain, key.serialize_pem()))
    }

    /// Signs a DER PKCS#10 request. Only its public key is used: subject and SANs come from
    /// `spec`, so a client cannot ask for names it was not given.
    pub fn sign_csr(&self, csr_der: &[u8], spec: &LeafSpec) -> Result<String, PkiError> {
        self.issue(spec, &parse_csr(csr_der)?.public_key)
    }

    /// Makes sure the leaf at `pair` exists, is issued by this CA, matches `spec` and is not
    /// about to expire; regenerates it (with a new key) otherwise. Returns whether it did.
    pub fn ensure_leaf(&self, pair: &CertPair, spec: &LeafSpec) -> Result<bool, PkiError> {
        if let (Ok(pem), true) = (std::fs::read(&pair.cert), pair.key.exists())
            && let Ok(der) = first_cert_der(&pem)
            && let Ok(info) = CertInfo::parse(&der)
            && info.satisfies(spec, self.ski.as_deref())
        {
            return Ok(false);
        }
        let (chain, key) = self.issue_with_new_key(spec)?;
        fsutil::write_atomic_mkdir(&pair.key, key.as_bytes(), fsutil::SECRET_FILE_MODE)
            .at(&pair.key)?;
        fsutil::write_atomic_mkdir(&pair.cert, chain.as_bytes(), fsutil::PUBLIC_FILE_MODE)
            .at(&pair.cert)?;
        Ok(true)
    }
}

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafUsage {
    Client,
    Server,
    ServerAndClient,
}

/// The subject, names and usage of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// DNS names and IP literals.
    pub sans: Vec<String>,
    pub usage: LeafUsage,
    /// Lifetime from issue ([`LEAF_VALIDITY`] unless `leaf-cert-validity` says otherwise).
    pub validity: Duration,
}

impl LeafSpec {
    pub fn client(cn: &str, orgs: &[&str]) -> LeafSpec {
        LeafSpec {
            common_name: cn.to_string(),
            organizations: orgs.iter().map(|s| s.to_string()).collect(),
            sans: Vec::new(),
            usage: LeafUsage::Client,
            validity: LEAF_VALIDITY,
        }
    }

    pub fn server(cn: &str, sans: Vec<String>) -> LeafSpec {
        LeafSpec {
            common_name: cn.to_string(),
            organizations: Vec::new(),
            sans,
            usage: LeafUsage::Server,
            validity: LEAF_VALIDITY,
        }
    }

    /// The same leaf with another lifetime.
    pub fn valid_for(mut self, validity: Duration) -> LeafSpec {
        self.validity = validity;
        self
    }

    fn params(&self) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for o in &self.organizations {
            dn.push(DnType::OrganizationName, o.clone());
        }
        dn.push(DnType::CommonName, self.common_name.clone());
        params.distinguished_name = dn;
        params.subject_alt_names = self
            .sans
            .iter()
            .map(|s| match s.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => s
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(PkiError::Generate),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = match self.usage {
            LeafUsage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            LeafUsage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            LeafUsage::ServerAndClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = to_offset(now - Duration::from_secs(3600));
        params.not_after = to_offset(now + self.validity);
        // A random serial: two certificates for the same subject must never collide.
        let mut serial = hex::decode(crate::token::random_hex(16)).unwrap_or_default();
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        Ok(params)
    }
}

/// Parses (and verifies the self-signature of) a DER PKCS#10 request.
pub fn parse_csr(csr_der: &[u8]) -> Result<CertificateSigningRequestParams, PkiError> {
    CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der.to_vec()))
        .map_err(PkiError::BadCsr)
}

/// The first certificate of a PEM bundle, as DER.
pub fn first_cert_der(pem: &[u8]) -> Result<CertificateDer<'static>, PkiError> {
    CertificateDer::pem_slice_iter(pem)
        .next()
        .ok_or_else(|| PkiError::BadCert("no certificate in PEM data".into()))?
        .map_err(PkiError::BadPem)
}

/// The fields of a certificate the daemon checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub sans: Vec<String>,
    /// Seconds since the epoch.
    pub not_after: i64,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
}

impl CertInfo {
    pub fn parse(der: &[u8]) -> Result<CertInfo, PkiError> {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(PkiError::BadX509)?;
        let subject = cert.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .unwrap_or_default()
            .to_string();
        let organizations = subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok().map(str::to_string))
            .collect();
        let mut sans = Vec::new();
        let mut ski = None;
        let mut aki = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectAlternativeName(san) => {
                    for name in &san.general_names {
                        match name {
                            GeneralName::DNSName(d) => sans.push(d.to_string()),
                            GeneralName::IPAddress(b) => {
                                if let Ok(a) = <[u8; 4]>::try_from(*b) {
                                    sans.push(IpAddr::from(a).to_string());
                                } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                                    sans.push(IpAddr::from(a).to_string());
                                }
                            }
                            _ => {}
                        }
                    }
                }
                ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(k) => {
                    aki = k.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => {}
            }
        }
        Ok(CertInfo {
            common_name,
            organizations,
            sans,
            not_after: cert.validity().not_after.timestamp(),
            subject_key_id: ski,
            authority_key_id: aki,
        })
    }

    /// Seconds until expiry (negative when expired).
    pub fn seconds_left(&self) -> i64 {
        self.not_after - unix_now() as i64
    }

    fn satisfies(&self, spec: &LeafSpec, ca_ski: Option<&[u8]>) -> bool {
        let mut want: Vec<String> = spec.sans.iter().map(|s| normalize_san(s)).collect();
        let mut have: Vec<String> = self.sans.iter().map(|s| normalize_san(s)).collect();
        want.sort();
        want.dedup();
        have.sort();
        have.dedup();
        let mut want_orgs = spec.organizations.clone();
        let mut have_orgs = self.organizations.clone();
        want_orgs.sort();
        have_orgs.sort();
        self.seconds_left() > renew_before(spec.validity).as_secs() as i64
            && self.common_name == spec.common_name
            && want_orgs == have_orgs
            && want == have
            && match (ca_ski, &self.authority_key_id) {
                (Some(ca), Some(aki)) => ca == aki.as_slice(),
                _ => false,
            }
    }
}

fn normalize_san(s: &str) -> String {
    match s.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => s.to_ascii_lowercase(),
    }
}

/// Creates a new P-256 key and a DER CSR with an empty subject (the server decides the
/// subject); returns (key PEM, CSR DER).
pub fn new_key_and_csr() -> Result<(String, Vec<u8>), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_and_checks_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let ca_pair = CertPair {
            cert: dir.path().join("ca.crt"),
            key: dir.path().join("ca.key"),
        };
        let (ca, created) = CertAuthority::load_or_create(&ca_pair, "rke2-server").unwrap();
        assert!(created);
        let (ca2, created) = CertAuthority::load_or_create(&ca_pair, "rke2-server").unwrap();
        assert!(!created);
        assert_eq!(ca.cert_pem, ca2.cert_pem);

        let leaf = CertPair {
            cert: dir.path().join("leaf.crt"),
            key: dir.path().join("leaf.key"),
        };
        let spec = LeafSpec::server(
            "kube-apiserver",
            vec!["127.0.0.1".into(), "localhost".into()],
        );
        assert!(ca.ensure_leaf(&leaf, &spec).unwrap());
        assert!(
            !ca.ensure_leaf(&leaf, &spec).unwrap(),
            "unchanged leaf is kept"
        );
        let mut spec2 = spec.clone();
        spec2.sans.push("lb.example.com".into());
        assert!(
            ca.ensure_leaf(&leaf, &spec2).unwrap(),
            "new SAN regenerates"
        );
        let info =
            CertInfo::parse(&first_cert_der(&std::fs::read(&leaf.cert).unwrap()).unwrap()).unwrap();
        assert!(info.sans.contains(&"lb.example.com".to_string()));
        assert!(info.seconds_left() > 360 * 86400);

        // A different CA invalidates the leaf.
        let other = CertAuthority::generate("other").unwrap();
        assert!(other.ensure_leaf(&leaf, &spec2).unwrap());

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&leaf.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn signs_csrs_with_server_chosen_subject() {
        let ca = CertAuthority::generate("rke2-client").unwrap();
        let (_key, csr) = new_key_and_csr().unwrap();
        let pem = ca
            .sign_csr(&csr, &LeafSpec::client("system:node:n1", &["system:nodes"]))
            .unwrap();
        let info = CertInfo::parse(&first_cert_der(pem.as_bytes()).unwrap()).unwrap();
        assert_eq!(info.common_name, "system:node:n1");
        assert_eq!(info.organizations, vec!["system:nodes"]);
        assert!(
            ca.sign_csr(b"garbage", &LeafSpec::client("x", &[]))
                .is_err()
        );
    }

    #[test]
    fn refuses_half_present_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pair = CertPair {
            cert: dir.path().join("ca.crt"),
            key: dir.path().join("ca.key"),
        };
        std::fs::write(&pair.cert, "x").unwrap();
        assert!(CertAuthority::load_or_create(&pair, "x").is_err());
    }
}
