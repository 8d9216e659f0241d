//! A byte string that must never be printed: secret values and unsealed key material.

use std::fmt;

use zeroize::Zeroizing;

/// Bytes of a secret value or other unsealed material.
///
/// `Debug` prints only the length, there is no `Display`, and the buffer is zeroized on drop.
/// Code that needs the bytes calls [`SecretBytes::expose`], which makes every use greppable.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps `bytes`, taking ownership so no unzeroized copy is left behind by this call.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The secret bytes themselves. Callers must not log or persist them unsealed.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Length in bytes (not secret: sealed blobs reveal it too).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<Vec<u8>> for SecretBytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<&str> for SecretBytes {
    fn from(s: &str) -> Self {
        Self::new(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBytes(<redacted, {} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_value() {
        let s = SecretBytes::from("hunter2-very-secret");
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("19 bytes"), "{shown}");
    }
}
