//! Container ids and names.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdError {
    #[error("invalid container name {0:?}: names must match [a-zA-Z0-9][a-zA-Z0-9_.-]{{0,127}}")]
    InvalidName(String),
    #[error("cannot generate a container id: {0}")]
    Random(String),
}

/// A new random id: 64 lowercase hex characters (256 bits).
pub fn generate_id() -> Result<String, IdError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| IdError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// True for a full container id.
pub fn is_full_id(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Names match `[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}`.
pub fn validate_name(name: &str) -> Result<(), IdError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(IdError::InvalidName(name.to_string()))
    }
}

/// The short form shown in tables: the first 12 characters.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let a = generate_id().unwrap();
        let b = generate_id().unwrap();
        assert!(is_full_id(&a));
        assert_ne!(a, b);
        assert!(!is_full_id("abc"));
        assert_eq!(short_id(&a).len(), 12);
    }

    #[test]
    fn names() {
        assert!(validate_name("web").is_ok());
        assert!(validate_name("a_b.c-d9").is_ok());
        assert!(validate_name(&"a".repeat(128)).is_ok());
        assert!(validate_name(&"a".repeat(129)).is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("a b").is_err());
    }
}
