//! HELLO tokens: anonymous (empty), one fixed token for everybody, or HS256 tokens minted
//! here for users `bench-<i>` with a secret the server shares.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

#[derive(Debug, Clone)]
pub enum Tokens {
    Anonymous,
    Fixed(Vec<u8>),
    /// HS256 secret; every user may join every room (`rooms: ["*"]`), valid for an hour.
    Secret(String),
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    rooms: [&'static str; 1],
}

impl Tokens {
    pub fn for_user(&self, i: usize) -> Vec<u8> {
        match self {
            Tokens::Anonymous => Vec::new(),
            Tokens::Fixed(t) => t.clone(),
            Tokens::Secret(s) => mint(&format!("bench-{i}"), s, Duration::from_secs(3600)),
        }
    }
}

/// An HS256 JWT with claims `sub`, `exp` and `rooms: ["*"]`.
pub fn mint(user: &str, secret: &str, ttl: Duration) -> Vec<u8> {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + ttl.as_secs();
    let claims = Claims {
        sub: user,
        exp,
        rooms: ["*"],
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signing with a byte secret cannot fail")
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_three_part_jwts_per_user() {
        let t = Tokens::Secret("0123456789abcdef0123456789abcdef".into());
        let a = String::from_utf8(t.for_user(1)).unwrap();
        assert_eq!(a.split('.').count(), 3);
        assert_ne!(t.for_user(1), t.for_user(2));
        assert!(Tokens::Anonymous.for_user(3).is_empty());
    }
}
