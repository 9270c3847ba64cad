//! Unguessable identifiers (session ids, link ids, secrets) and constant-time comparison.
//! Join tokens themselves are signed: `capability`.

use base64::Engine;

/// Bytes of randomness in a session id (96 bits: ids are not secrets, but must not collide).
pub const ID_BYTES: usize = 12;
/// Bytes of randomness in a join link's id (72 bits: unique within a session, not a secret).
pub const LINK_ID_BYTES: usize = 9;

/// `n` random bytes from the operating system, as unpadded base64url.
pub fn random_string(n: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_urlsafe_and_distinct() {
        let a = random_string(32).expect("rng");
        let b = random_string(32).expect("rng");
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{a}"
        );
    }

    #[test]
    fn compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
