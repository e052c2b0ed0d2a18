//! RSA client keys sign user authentication with *ring*, never with the
//! `rsa` crate.
//!
//! The `rsa` crate (pulled in by russh's `rsa` feature, which RSA host keys
//! and RSA key files need) has a timing side channel in its private-key
//! operations with no fixed version (the Marvin attack, RUSTSEC-2023-0071).
//! So an RSA private key is turned, once when it is loaded, into a
//! `ring::signature::RsaKeyPair` (ring's RSA signing is constant-time), and
//! the `russh::keys::PrivateKey` holding it is dropped: it never reaches
//! russh's `PrivateKeyWithHashAlg` (whose signing goes through the `rsa`
//! crate). russh asks for the signature through [`russh::Signer`] (the way
//! it asks an SSH agent), and gets the SSH signature blob from here.
//!
//! ring signs with rsa-sha2-512 and rsa-sha2-256 only: a server that
//! announces neither in `server-sig-algs` would need SHA-1 `ssh-rsa`
//! signatures, which ring does not make (OpenSSH 8.8 stopped accepting them
//! by default too). ring takes keys of 2048 to 4096 bits.

use num_bigint::BigUint;
use ring::rand::SystemRandom;
use ring::signature::RsaKeyPair;
use russh::keys::agent::AgentIdentity;
use russh::keys::ssh_key::private::RsaKeypair;
use russh::keys::HashAlg;

/// An RSA client key in ring's hands, with what russh needs to ask for
/// signatures.
pub(super) struct RingRsaSigner {
    key_pair: RsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for RingRsaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingRsaSigner")
            .field("bits", &(self.key_pair.public().modulus_len() * 8))
            .finish_non_exhaustive()
    }
}

/// Why an RSA signature was not made.
#[derive(Debug, thiserror::Error)]
pub(super) enum RsaSignError {
    #[error(transparent)]
    Send(#[from] russh::SendError),
    #[error("the server announces neither rsa-sha2-512 nor rsa-sha2-256 (server-sig-algs), and Ferry does not make SHA-1 ssh-rsa signatures (OpenSSH 8.8 stopped accepting them by default too); use an ed25519 key")]
    NoSha2,
    #[error("ring could not sign with the RSA key")]
    Sign,
}

impl RingRsaSigner {
    /// ring's key pair for an RSA key read from a key file. dP and dQ (the
    /// CRT exponents, which OpenSSH's format does not store) are computed
    /// here, once, as d mod (p-1) and d mod (q-1) with num-bigint (already
    /// in the tree: russh's Diffie-Hellman uses it); that arithmetic is not
    /// constant-time, but it is done once, locally, when the key is loaded,
    /// with nothing a peer can time. Every signature is ring's.
    pub(super) fn new(key: &RsaKeypair) -> Result<Self, String> {
        let public = key.public();
        let private = key.private();
        let bytes = |name: &str, m: &russh::keys::ssh_key::Mpint| {
            m.as_positive_bytes()
                .map(<[u8]>::to_vec)
                .ok_or_else(|| format!("has a negative RSA {name}"))
        };
        let (n, e) = (bytes("n", public.n())?, bytes("e", public.e())?);
        let (d, p, q) = (
            bytes("d", private.d())?,
            bytes("p", private.p())?,
            bytes("q", private.q())?,
        );
        let q_inv = bytes("iqmp", private.iqmp())?;
        let one = BigUint::from(1u32);
        let crt_exponent = |prime: &[u8]| {
            let prime = BigUint::from_bytes_be(prime);
            if prime <= one {
                return Err("has an RSA prime that is not above 1".to_string());
            }
            Ok((BigUint::from_bytes_be(&d) % (prime - &one)).to_bytes_be())
        };
        let (dp, dq) = (crt_exponent(&p)?, crt_exponent(&q)?);
        let components = ring::rsa::KeyPairComponents {
            public_key: ring::rsa::PublicKeyComponents { n: &n, e: &e },
            d: &d,
            p: &p,
            q: &q,
            dP: &dp,
            dQ: &dq,
            qInv: &q_inv,
        };
        let key_pair = RsaKeyPair::from_components(&components).map_err(|why| {
            format!(
                "is an RSA key ({} bits) that ring refuses ({why}); Ferry signs RSA with ring, which takes two-prime keys of 2048 to 4096 bits with e >= 65537: make a new key with ssh-keygen -t ed25519 (or -t rsa -b 3072)",
                key.key_size()
            )
        })?;
        Ok(RingRsaSigner {
            key_pair,
            rng: SystemRandom::new(),
        })
    }

    /// The SSH signature blob of `data` (RFC 8332): the algorithm's name
    /// (`rsa-sha2-512` or `rsa-sha2-256`) and the PKCS#1 v1.5 signature,
    /// each as an SSH string.
    pub(super) fn sign(&self, hash: Option<HashAlg>, data: &[u8]) -> Result<Vec<u8>, RsaSignError> {
        let (name, padding) = match hash {
            Some(HashAlg::Sha512) => ("rsa-sha2-512", &ring::signature::RSA_PKCS1_SHA512),
            Some(HashAlg::Sha256) => ("rsa-sha2-256", &ring::signature::RSA_PKCS1_SHA256),
            _ => return Err(RsaSignError::NoSha2),
        };
        let mut sig = vec![0; self.key_pair.public().modulus_len()];
        self.key_pair
            .sign(padding, &self.rng, data, &mut sig)
            .map_err(|_| RsaSignError::Sign)?;
        let mut blob = Vec::with_capacity(8 + name.len() + sig.len());
        put_string(&mut blob, name.as_bytes());
        put_string(&mut blob, &sig);
        Ok(blob)
    }

    /// The public half, as ring sees it (for tests that verify).
    #[cfg(test)]
    pub(super) fn public_components(&self) -> ring::signature::RsaPublicKeyComponents<Vec<u8>> {
        ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(self.key_pair.public())
    }
}

fn put_string(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

impl russh::Signer for RingRsaSigner {
    type Error = RsaSignError;

    /// russh hands over what is to be signed (session id and the
    /// user-auth request) and wants it back with the signature blob
    /// appended as an SSH string, as an agent's answer is.
    async fn auth_sign(
        &mut self,
        _key: &AgentIdentity,
        hash_alg: Option<HashAlg>,
        mut to_sign: Vec<u8>,
    ) -> Result<Vec<u8>, Self::Error> {
        let blob = self.sign(hash_alg, &to_sign)?;
        put_string(&mut to_sign, &blob);
        Ok(to_sign)
    }
}
