//! Client tokens: HS256 JSON Web Tokens.
//!
//! A token carries `sub` (the user id), `exp` (expiry, seconds since the Unix epoch) and
//! `rooms`: the rooms the holder may join, each an exact name or a prefix ending in `*`
//! (`"chat.*"` admits `chat.lobby`; a lone `"*"` admits every room).
//!
//! Only HS256 is accepted. The header's `alg` is checked before anything else, so `none`,
//! other HMAC sizes and asymmetric algorithms are rejected by name (no algorithm confusion).
//! Expiry is checked against the caller's `now` with no leeway: the gateway passes the wall
//! clock (`SystemTime::now()`, since `exp` is wall time), tests pass a fixed instant.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// User id; pushes to `/v1/push/user/{sub}` reach this connection.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Rooms the holder may join: exact names or prefixes ending in `*`.
    #[serde(default)]
    pub rooms: Vec<String>,
}

impl Claims {
    /// Whether the token admits joining `room`.
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms.iter().any(|pattern| admits(pattern, room))
    }
}

/// Whether one `rooms` pattern (an exact name, or a prefix ending in `*`) admits `room`.
fn admits(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

/// What a connection keeps of its token's `rooms` claim: only what JOIN and resume check
/// later. A lone `"*"` anywhere in the list (the common case) costs no heap memory; other
/// lists are kept as exact-size boxed patterns (a deserialized `Vec<String>` keeps spare
/// capacity: 96 bytes for a one-room list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomGrants {
    /// Every room.
    All,
    /// Exact names or prefixes ending in `*` (empty: no room).
    Patterns(Box<[Box<str>]>),
}

impl RoomGrants {
    /// The grants of a verified token's `rooms` claim.
    pub fn from_claim(rooms: Vec<String>) -> RoomGrants {
        if rooms.iter().any(|p| p == "*") {
            return RoomGrants::All;
        }
        RoomGrants::Patterns(rooms.into_iter().map(String::into_boxed_str).collect())
    }

    /// No room at all (anonymous connections and connections before WELCOME).
    pub fn none() -> RoomGrants {
        RoomGrants::Patterns(Box::default())
    }

    /// Whether these grants admit joining `room`.
    pub fn may_join(&self, room: &str) -> bool {
        match self {
            RoomGrants::All => true,
            RoomGrants::Patterns(p) => p.iter().any(|pattern| admits(pattern, room)),
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not three base64url parts with a JSON header and the required claims.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("token algorithm {0:?} is not accepted (only HS256)")]
    UnsupportedAlgorithm(String),
    /// The signature does not match the secret.
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` is at or before now.
    #[error("token expired at {exp} (now {now})")]
    Expired { exp: u64, now: u64 },
    /// The secret is unusable (empty) or signing failed.
    #[error("cannot sign token: {0}")]
    Signing(String),
}

/// Verifies tokens against one secret; build once, share per shard (it is `Send + Sync`).
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { key: <redacted> }")
    }
}

impl Verifier {
    pub fn new(secret: &[u8]) -> Verifier {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false; // checked in `verify` against the caller's clock
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Verifier {
            key: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Verifies `token` at time `now`: HS256 only, valid signature, `exp` after `now`.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, AuthError> {
        let alg = header_alg(token)?;
        if alg != "HS256" {
            return Err(AuthError::UnsupportedAlgorithm(alg));
        }
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::InvalidSignature => AuthError::BadSignature,
                    ErrorKind::InvalidAlgorithm => AuthError::UnsupportedAlgorithm(alg.clone()),
                    _ => AuthError::Malformed(e.to_string()),
                }
            })?;
        let now = unix_seconds(now);
        if data.claims.exp <= now {
            return Err(AuthError::Expired {
                exp: data.claims.exp,
                now,
            });
        }
        Ok(data.claims)
    }
}

/// One-shot [`Verifier::verify`].
pub fn verify(token: &str, secret: &[u8], now: SystemTime) -> Result<Claims, AuthError> {
    Verifier::new(secret).verify(token, now)
}

/// Signs a token for `user` admitting `rooms`, valid for `ttl` from `now`.
pub fn mint(
    user: &str,
    rooms: &[String],
    ttl: Duration,
    secret: &[u8],
    now: SystemTime,
) -> Result<String, AuthError> {
    if secret.is_empty() {
        return Err(AuthError::Signing("empty secret".into()));
    }
    let claims = Claims {
        sub: user.to_owned(),
        exp: unix_seconds(now).saturating_add(ttl.as_secs().max(1)),
        rooms: rooms.to_vec(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| AuthError::Signing(e.to_string()))
}

fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Reads the `alg` field of the header without trusting anything else.
fn header_alg(token: &str) -> Result<String, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "expected three dot-separated parts".into(),
        ));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|e| AuthError::Malformed(format!("header is not base64url: {e}")))?;
    #[derive(Deserialize)]
    struct AlgOnly {
        alg: String,
    }
    let h: AlgOnly = serde_json::from_slice(&bytes)
        .map_err(|e| AuthError::Malformed(format!("header is not JSON with alg: {e}")))?;
    Ok(h.alg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn rooms(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn mint_then_verify() {
        let t = mint(
            "u1",
            &rooms(&["lobby", "chat.*"]),
            Duration::from_secs(60),
            SECRET,
            at(1000),
        )
        .unwrap();
        let c = verify(&t, SECRET, at(1059)).unwrap();
        assert_eq!(c.sub, "u1");
        assert_eq!(c.exp, 1060);
        assert!(c.may_join("lobby"));
        assert!(c.may_join("chat.a"));
        assert!(!c.may_join("lobby2"));
        assert!(!c.may_join("chat"));
    }

    #[test]
    fn may_join_patterns() {
        let c = Claims {
            sub: "u".into(),
            exp: 0,
            rooms: rooms(&["*"]),
        };
        assert!(c.may_join("anything"));
        let none = Claims {
            sub: "u".into(),
            exp: 0,
            rooms: vec![],
        };
        assert!(!none.may_join("lobby"));
    }

    #[test]
    fn room_grants_admit_what_the_claim_admits() {
        let lists: [&[&str]; 4] = [&["*"], &[], &["lobby", "chat.*"], &["a", "*", "b"]];
        for list in lists {
            let c = Claims {
                sub: "u".into(),
                exp: 0,
                rooms: rooms(list),
            };
            let g = RoomGrants::from_claim(c.rooms.clone());
            for room in ["lobby", "lobby2", "chat", "chat.x", "a", "zzz"] {
                assert_eq!(g.may_join(room), c.may_join(room), "{list:?} / {room}");
            }
        }
        assert_eq!(RoomGrants::from_claim(rooms(&["a", "*"])), RoomGrants::All);
        assert!(!RoomGrants::none().may_join("lobby"));
    }

    #[test]
    fn rejects_expired() {
        let t = mint("u", &[], Duration::from_secs(10), SECRET, at(1000)).unwrap();
        assert_eq!(
            verify(&t, SECRET, at(1010)),
            Err(AuthError::Expired {
                exp: 1010,
                now: 1010
            })
        );
    }

    #[test]
    fn rejects_bad_signature() {
        let t = mint("u", &[], Duration::from_secs(10), SECRET, at(1000)).unwrap();
        assert_eq!(
            verify(&t, b"another-secret-another-secret-xx", at(1000)),
            Err(AuthError::BadSignature)
        );
        // Tampered claims under the original signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(br#"{"sub":"admin","exp":99999999999,"rooms":["*"]}"#);
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), SECRET, at(1000)),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn rejects_alg_none() {
        let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = B64.encode(br#"{"sub":"u","exp":99999999999,"rooms":["*"]}"#);
        let token = format!("{header}.{claims}.");
        assert_eq!(
            verify(&token, SECRET, at(0)),
            Err(AuthError::UnsupportedAlgorithm("none".into()))
        );
    }

    #[test]
    fn rejects_other_algorithms() {
        let claims = Claims {
            sub: "u".into(),
            exp: 99_999_999_999,
            rooms: vec![],
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(
            verify(&t, SECRET, at(0)),
            Err(AuthError::UnsupportedAlgorithm("HS512".into()))
        );
        let header = B64.encode(br#"{"alg":"RS256"}"#);
        let token = format!("{header}.e30.c2ln");
        assert_eq!(
            verify(&token, SECRET, at(0)),
            Err(AuthError::UnsupportedAlgorithm("RS256".into()))
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "a.b", "a.b.c.d", "!!!.e30.sig", "e30.e30.sig"] {
            assert!(
                matches!(verify(bad, SECRET, at(0)), Err(AuthError::Malformed(_))),
                "{bad:?}"
            );
        }
        // Correctly signed but without `sub`.
        let header = Header::new(Algorithm::HS256);
        #[derive(Serialize)]
        struct NoSub {
            exp: u64,
        }
        let t = jsonwebtoken::encode(
            &header,
            &NoSub {
                exp: 99_999_999_999,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(
            verify(&t, SECRET, at(0)),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn mint_refuses_empty_secret() {
        assert!(matches!(
            mint("u", &[], Duration::from_secs(1), b"", at(0)),
            Err(AuthError::Signing(_))
        ));
    }
}
