//! Secrets that never print, and the hashes they are checked by.

use std::fmt;

use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::error::SecurityError;

/// A secret string (a user's token, a derived credential). `Debug` and
/// `Display` print `<redacted>`, so it cannot leak into a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// A fresh random secret: 32 bytes from the OS, as 64 hex digits.
    pub fn random() -> Result<Self, SecurityError> {
        Ok(Self(hex::encode(random_bytes::<32>()?)))
    }

    /// The secret itself, for sending it where it belongs.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Its SHA-256, what a tokens file stores and a ticket binds.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(self.0.as_bytes())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `N` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N], SecurityError> {
    let mut bytes = [0u8; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SecurityError::Random)?;
    Ok(bytes)
}

/// The SHA-256 of a credential. Tokens are 256 random bits, so a plain hash
/// is as hard to invert as the token is to guess (a password would need a
/// slow hash; these are not passwords). Compared in constant time.
#[derive(Clone, Copy, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        Self(hash)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Self::from_bytes(&bytes)
    }

    /// From its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// As 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not the secret, but there is no reason to print it whole.
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_itself() {
        let secret = Secret::new("hunter2-hunter2");
        assert_eq!(format!("{secret:?} {secret}"), "<redacted> <redacted>");
        assert!(!format!("{:?}", secret.hash()).contains("hunter2"));
    }

    #[test]
    fn random_secrets_differ_and_hashes_round_trip_through_hex() {
        let (a, b) = (Secret::random().unwrap(), Secret::random().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), 64);
        assert_eq!(TokenHash::from_hex(&a.hash().to_hex()), Some(a.hash()));
        assert_ne!(a.hash(), b.hash());
        assert_eq!(TokenHash::from_hex("abc"), None);
    }
}
