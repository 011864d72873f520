//! The value formats of upstream's encryption providers (docs/security.md, "Encryption at
//! rest"), byte for byte as kube-apiserver writes them into etcd, so a cluster's data stays
//! readable by either implementation:
//!
//! - `k8s:enc:aescbc:v1:<key name>:` + 16-byte IV + AES-CBC ciphertext with PKCS#7 padding;
//! - `k8s:enc:aesgcm:v1:<key name>:` + 12-byte nonce + AES-GCM ciphertext + 16-byte tag, the
//!   etcd key authenticated as additional data (upstream's `DefaultContext`);
//! - `k8s:enc:secretbox:v1:<key name>:` + 24-byte nonce + Poly1305 tag + XSalsa20 ciphertext.
//!
//! Every nonce and IV comes from the operating system's CSPRNG.

use aes::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit, block_padding::Pkcs7};
use crypto_secretbox::aead::{Aead, KeyInit};
use ring::aead;
use ring::rand::{SecureRandom, SystemRandom};

/// The provider families with keys (identity has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    AesCbc,
    AesGcm,
    Secretbox,
}

/// Why a value could not be encrypted or decrypted. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("{cipher} key \"{name}\" must be {expected}, not {got} bytes")]
    KeyLength {
        cipher: &'static str,
        name: String,
        expected: &'static str,
        got: usize,
    },
    #[error("the value is too short for {0}")]
    TooShort(&'static str),
    #[error("{0} decryption failed (wrong key or corrupt value)")]
    Decrypt(&'static str),
}

impl Cipher {
    /// The provider's name in the configuration file and in value prefixes.
    pub fn provider(self) -> &'static str {
        match self {
            Cipher::AesCbc => "aescbc",
            Cipher::AesGcm => "aesgcm",
            Cipher::Secretbox => "secretbox",
        }
    }

    /// The key type `secrets-encrypt status` shows (RKE2's words).
    pub fn display(self) -> &'static str {
        match self {
            Cipher::AesCbc => "AES-CBC",
            Cipher::AesGcm => "AES-GCM",
            Cipher::Secretbox => "XSalsa20-POLY1305",
        }
    }

    /// The provider named `name` in a configuration file.
    pub fn from_provider(name: &str) -> Option<Cipher> {
        [Cipher::AesCbc, Cipher::AesGcm, Cipher::Secretbox]
            .into_iter()
            .find(|c| c.provider() == name)
    }

    /// `k8s:enc:<provider>:v1:`.
    pub fn prefix(self) -> String {
        format!("k8s:enc:{}:v1:", self.provider())
    }

    fn check_len(self, name: &str, len: usize) -> Result<(), ProviderError> {
        let (ok, expected) = match self {
            Cipher::AesCbc => (matches!(len, 16 | 24 | 32), "16, 24 or 32"),
            // ring offers AES-128 and AES-256 in GCM mode.
            Cipher::AesGcm => (matches!(len, 16 | 32), "16 or 32"),
            Cipher::Secretbox => (len == 32, "32"),
        };
        if ok {
            Ok(())
        } else {
            Err(ProviderError::KeyLength {
                cipher: self.provider(),
                name: name.to_string(),
                expected,
                got: len,
            })
        }
    }
}

/// One named key of a provider.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderKey {
    pub cipher: Cipher,
    pub name: String,
    secret: Vec<u8>,
}

impl std::fmt::Debug for ProviderKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key bytes never reach a log line.
        f.debug_struct("ProviderKey")
            .field("cipher", &self.cipher)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `len` bytes from the OS CSPRNG.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    SystemRandom::new()
        .fill(&mut out)
        .expect("the OS random number generator failed");
    out
}

impl ProviderKey {
    /// A key with the given bytes, checked for the cipher's length.
    pub fn new(cipher: Cipher, name: &str, secret: Vec<u8>) -> Result<ProviderKey, ProviderError> {
        cipher.check_len(name, secret.len())?;
        Ok(ProviderKey {
            cipher,
            name: name.to_string(),
            secret,
        })
    }

    /// A fresh 32-byte key from the CSPRNG.
    pub fn generate(cipher: Cipher, name: &str) -> ProviderKey {
        ProviderKey {
            cipher,
            name: name.to_string(),
            secret: random_bytes(32),
        }
    }

    /// The key bytes (for the configuration file only).
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }

    /// `k8s:enc:<provider>:v1:<name>:`: what every value this key wrote starts with.
    pub fn value_prefix(&self) -> String {
        format!("{}{}:", self.cipher.prefix(), self.name)
    }

    /// Encrypts `plain` stored under etcd key `etcd_key` into upstream's stored form.
    pub fn seal(&self, etcd_key: &str, plain: &[u8]) -> Vec<u8> {
        let nonce_len = match self.cipher {
            Cipher::AesCbc => 16,
            Cipher::AesGcm => 12,
            Cipher::Secretbox => 24,
        };
        let nonce = random_bytes(nonce_len);
        let mut out = self.value_prefix().into_bytes();
        out.extend(self.seal_with(&nonce, etcd_key, plain));
        out
    }

    /// The part after the prefix, with the given IV/nonce (fixed in known-answer tests).
    fn seal_with(&self, nonce: &[u8], etcd_key: &str, plain: &[u8]) -> Vec<u8> {
        let mut out = nonce.to_vec();
        match self.cipher {
            Cipher::AesCbc => out.extend(cbc_encrypt(&self.secret, nonce, plain)),
            Cipher::AesGcm => {
                let key = gcm_key(&self.secret);
                let mut sealed = plain.to_vec();
                key.seal_in_place_append_tag(
                    aead::Nonce::try_assume_unique_for_key(nonce).expect("12-byte nonce"),
                    aead::Aad::from(etcd_key.as_bytes()),
                    &mut sealed,
                )
                .expect("AES-GCM sealing cannot fail for in-memory data");
                out.extend(sealed);
            }
            Cipher::Secretbox => {
                let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&self.secret)
                    .expect("32-byte key");
                let sealed = cipher
                    .encrypt(crypto_secretbox::Nonce::from_slice(nonce), plain)
                    .expect("secretbox sealing cannot fail for in-memory data");
                out.extend(sealed);
            }
        }
        out
    }

    /// Decrypts `data`, the bytes after this key's [`ProviderKey::value_prefix`].
    pub fn open(&self, etcd_key: &str, data: &[u8]) -> Result<Vec<u8>, ProviderError> {
        let name = self.cipher.provider();
        match self.cipher {
            Cipher::AesCbc => {
                if data.len() < 32 || !data.len().is_multiple_of(16) {
                    return Err(ProviderError::TooShort(name));
                }
                let (iv, ct) = data.split_at(16);
                cbc_decrypt(&self.secret, iv, ct).ok_or(ProviderError::Decrypt(name))
            }
            Cipher::AesGcm => {
                if data.len() < 12 + 16 {
                    return Err(ProviderError::TooShort(name));
                }
                let (nonce, sealed) = data.split_at(12);
                let mut buf = sealed.to_vec();
                let plain = gcm_key(&self.secret)
                    .open_in_place(
                        aead::Nonce::try_assume_unique_for_key(nonce).expect("12-byte nonce"),
                        aead::Aad::from(etcd_key.as_bytes()),
                        &mut buf,
                    )
                    .map_err(|_| ProviderError::Decrypt(name))?;
                Ok(plain.to_vec())
            }
            Cipher::Secretbox => {
                if data.len() < 24 + 16 {
                    return Err(ProviderError::TooShort(name));
                }
                let (nonce, sealed) = data.split_at(24);
                crypto_secretbox::XSalsa20Poly1305::new_from_slice(&self.secret)
                    .expect("32-byte key")
                    .decrypt(crypto_secretbox::Nonce::from_slice(nonce), sealed)
                    .map_err(|_| ProviderError::Decrypt(name))
            }
        }
    }
}

fn gcm_key(secret: &[u8]) -> aead::LessSafeKey {
    let alg = if secret.len() == 16 {
        &aead::AES_128_GCM
    } else {
        &aead::AES_256_GCM
    };
    aead::LessSafeKey::new(aead::UnboundKey::new(alg, secret).expect("checked key length"))
}

fn cbc_encrypt(key: &[u8], iv: &[u8], plain: &[u8]) -> Vec<u8> {
    fn run<C>(key: &[u8], iv: &[u8], plain: &[u8]) -> Vec<u8>
    where
        cbc::Encryptor<C>: KeyIvInit + BlockEncryptMut,
        C: aes::cipher::BlockCipher + aes::cipher::BlockEncryptMut,
    {
        cbc::Encryptor::<C>::new_from_slices(key, iv)
            .expect("checked key and IV lengths")
            .encrypt_padded_vec_mut::<Pkcs7>(plain)
    }
    match key.len() {
        16 => run::<aes::Aes128>(key, iv, plain),
        24 => run::<aes::Aes192>(key, iv, plain),
        _ => run::<aes::Aes256>(key, iv, plain),
    }
}

fn cbc_decrypt(key: &[u8], iv: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    fn run<C>(key: &[u8], iv: &[u8], ct: &[u8]) -> Option<Vec<u8>>
    where
        cbc::Decryptor<C>: KeyIvInit + BlockDecryptMut,
        C: aes::cipher::BlockCipher + aes::cipher::BlockDecryptMut,
    {
        cbc::Decryptor::<C>::new_from_slices(key, iv)
            .ok()?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .ok()
    }
    match key.len() {
        16 => run::<aes::Aes128>(key, iv, ct),
        24 => run::<aes::Aes192>(key, iv, ct),
        _ => run::<aes::Aes256>(key, iv, ct),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    const ETCD_KEY: &str = "/registry/secrets/default/s1";

    #[test]
    fn every_provider_round_trips_with_its_prefix() {
        for cipher in [Cipher::AesCbc, Cipher::AesGcm, Cipher::Secretbox] {
            let key = ProviderKey::generate(cipher, "k1");
            let plain = br#"{"kind":"Secret","data":{"p":"c2VjcmV0"}}"#;
            let sealed = key.seal(ETCD_KEY, plain);
            let prefix = format!("k8s:enc:{}:v1:k1:", cipher.provider());
            assert!(sealed.starts_with(prefix.as_bytes()), "{cipher:?}");
            assert!(!sealed.windows(8).any(|w| w == b"c2VjcmV0"), "{cipher:?}");
            let body = &sealed[prefix.len()..];
            assert_eq!(key.open(ETCD_KEY, body).unwrap(), plain, "{cipher:?}");
            // Fresh randomness each time: the same plaintext never seals the same way twice.
            assert_ne!(key.seal(ETCD_KEY, plain), sealed);
            // Another key of the same name cannot open it. CBC is unauthenticated (as
            // upstream's): a wrong key fails on the padding, or by chance (about 1 in 256)
            // yields garbage; the authenticated ciphers always refuse.
            let other = ProviderKey::generate(cipher, "k1");
            match (cipher, other.open(ETCD_KEY, body)) {
                (Cipher::AesCbc, Ok(garbage)) => assert_ne!(garbage, plain),
                (_, r) => assert!(r.is_err(), "{cipher:?}"),
            }
            // Truncated values are refused, not a panic.
            assert!(key.open(ETCD_KEY, &body[..8]).is_err());
        }
    }

    #[test]
    fn aesgcm_binds_the_etcd_key() {
        let key = ProviderKey::generate(Cipher::AesGcm, "g");
        let sealed = key.seal(ETCD_KEY, b"v");
        let body = &sealed[key.value_prefix().len()..];
        assert!(key.open("/registry/secrets/default/s2", body).is_err());
        assert_eq!(key.open(ETCD_KEY, body).unwrap(), b"v");
    }

    #[test]
    fn aescbc_known_answer_nist_sp800_38a() {
        // SP 800-38A F.2.5 CBC-AES256.Encrypt; our output adds one PKCS#7 padding block.
        let key = ProviderKey::new(
            Cipher::AesCbc,
            "aescbckey",
            unhex("603deb1015ca71be2b73aef0857d7781 1f352c073b6108d72d9810a30914dff4"),
        )
        .unwrap();
        let iv = unhex("000102030405060708090a0b0c0d0e0f");
        let plain = unhex(
            "6bc1bee22e409f96e93d7e117393172a ae2d8a571e03ac9c9eb76fac45af8e51
             30c81c46a35ce411e5fbc1191a0a52ef f69f2445df4f9b17ad2b417be66c3710",
        );
        let out = key.seal_with(&iv, ETCD_KEY, &plain);
        assert_eq!(&out[..16], iv.as_slice());
        assert_eq!(
            hex::encode(&out[16..80]),
            "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d\
             39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b"
        );
        assert_eq!(out.len(), 16 + 80, "one block of PKCS#7 padding");
        assert_eq!(key.open(ETCD_KEY, &out).unwrap(), plain);
    }

    #[test]
    fn aesgcm_known_answer_mcgrew_viega_case_14() {
        // "The Galois/Counter Mode of Operation", test case 14 (AES-256, zero key/IV/block),
        // with no additional data; ours authenticates the etcd key, so the tag differs then.
        let key = ProviderKey::new(Cipher::AesGcm, "k", vec![0; 32]).unwrap();
        let out = key.seal_with(&[0; 12], "", &[0; 16]);
        assert_eq!(
            hex::encode(&out[12..]),
            "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919"
        );
        assert_eq!(key.open("", &out).unwrap(), vec![0; 16]);
        assert_ne!(key.seal_with(&[0; 12], ETCD_KEY, &[0; 16]), out);
    }

    #[test]
    fn secretbox_known_answer_nacl() {
        // The crypto_secretbox vector of "Cryptography in NaCl" (Bernstein), as in libsodium's
        // test/default/secretbox.c: output is tag ‖ ciphertext, as Go's secretbox.Seal.
        let key = ProviderKey::new(
            Cipher::Secretbox,
            "k",
            unhex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389"),
        )
        .unwrap();
        let nonce = unhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37");
        let plain = unhex(
            "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffc
             e5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb31
             0e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde
             048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f93776384864
             5e0705",
        );
        let out = key.seal_with(&nonce, ETCD_KEY, &plain);
        assert_eq!(
            hex::encode(&out[24..]),
            "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce\
             48332ea7164d96a4476fb8c531a1186ac0dfc17c98dce87b4da7f011ec48c972\
             71d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae\
             90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b3\
             7973f622a43d14a6599b1f654cb45a74e355a5"
        );
        assert_eq!(key.open(ETCD_KEY, &out).unwrap(), plain);
    }

    #[test]
    fn key_lengths_are_checked_without_showing_the_key() {
        let e = ProviderKey::new(Cipher::Secretbox, "sb", vec![7; 16]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "secretbox key \"sb\" must be 32, not 16 bytes"
        );
        assert!(ProviderKey::new(Cipher::AesGcm, "g", vec![0; 24]).is_err());
        assert!(ProviderKey::new(Cipher::AesCbc, "c", vec![0; 24]).is_ok());
        let k = ProviderKey::generate(Cipher::AesCbc, "c");
        assert!(!format!("{k:?}").contains(&format!("{:?}", k.secret())));
    }
}
