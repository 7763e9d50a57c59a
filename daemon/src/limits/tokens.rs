//! Users' webhook tokens: random bearer tokens shown once, stored as hashes.

use std::io::Read;

use sha2::{Digest, Sha256};

/// How a token starts, so it can be recognised (and found by secret scanners).
pub const TOKEN_PREFIX: &str = "slk_";

/// The stored form of a token: hex SHA-256.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new token: the prefix and 32 random bytes from the kernel, base64url.
pub fn new_token() -> std::io::Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() > 40);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a), token_hash(&format!(" {a} ")));
        assert_eq!(token_hash(&a).len(), 64);
    }
}
