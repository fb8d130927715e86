//! Passes and tickets: JWTs that anteroom signs and verifies.
//!
//! A *pass* says a visitor was admitted: RS256, so that apps can verify it
//! with the JWKS. A *ticket* is a visitor's place in line, only ever read by
//! anteroom itself: HS256 under a key every instance derives from the signing
//! key (HKDF-SHA256 over its private key; no new secret to distribute), so
//! that a new visitor costs a MAC, not an RSA signature (ADR 0006). Both carry
//! only what is needed (room, an opaque id, lane, times), never personal data.
//! Tokens are renewed only past half their lifetime; verification results are
//! remembered (bounded, keyed by a keyed 128-bit hash of the token, until
//! `exp`), so a token seen before costs a hash and a lookup.
//!
//! Verification pins the algorithm to the kind (RS256 passes, HS256 tickets),
//! the key to a known `kid`, and checks the signature, `exp`, `nbf`, `iss`,
//! the expected room as `aud` and the kind; anything else (`alg: none`, a
//! ticket's algorithm on a pass, an unknown kid, a tampered payload, garbage,
//! a `crit` header) is treated as no token at all.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use aws_lc_rs::{hkdf, hmac};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use quick_cache::sync::Cache;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Smallest RSA key accepted.
pub const MIN_KEY_BITS: usize = 2048;
/// Clock skew tolerated between instances, in seconds.
const LEEWAY_SECS: u64 = 5;

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing a new key failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
}

fn invalid(path: &Path, reason: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The private key that signs new passes, and the ticket key derived from it.
pub struct SigningKey {
    kid: String,
    pair: RsaKeyPair,
    public: RsaPublicKey,
    ticket: TicketKey,
}

/// The HMAC key of tickets, derived from an RSA private key: every instance
/// with the same signing key has the same ticket key, and it rotates with it.
#[derive(Clone)]
struct TicketKey {
    kid: String,
    key: [u8; 32],
}

impl TicketKey {
    /// HKDF-SHA256 over the private key's PKCS#8 encoding.
    fn derive(private: &RsaPrivateKey) -> Result<TicketKey, String> {
        let der = private.to_pkcs8_der().map_err(|e| e.to_string())?;
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"anteroom ticket key v1");
        let prk = salt.extract(der.as_bytes());
        let okm = prk
            .expand(&[b"ticket"], hkdf::HKDF_SHA256)
            .map_err(|_| "cannot derive the ticket key".to_owned())?;
        let mut key = [0u8; 32];
        okm.fill(&mut key)
            .map_err(|_| "cannot derive the ticket key".to_owned())?;
        // The kid names the key without revealing it.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &key);
        let kid = format!("t-{}", &B64.encode(digest.as_ref())[..16]);
        Ok(TicketKey { kid, key })
    }
}

impl SigningKey {
    /// Loads an RSA private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY` PEM).
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = read(path)?;
        let key = RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .map_err(|_| invalid(path, "not an RSA private key in PEM (PKCS#8 or PKCS#1)"))?;
        SigningKey::from_rsa(key).map_err(|reason| invalid(path, reason))
    }

    /// A new random key; for `keygen`, the demo and tests.
    pub fn generate(bits: usize) -> Result<(SigningKey, RsaPrivateKey), String> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, bits).map_err(|e| e.to_string())?;
        Ok((SigningKey::from_rsa(key.clone())?, key))
    }

    fn from_rsa(key: RsaPrivateKey) -> Result<SigningKey, String> {
        let bits = key.size() * 8;
        if bits < MIN_KEY_BITS {
            return Err(format!(
                "the key has {bits} bits; at least {MIN_KEY_BITS} are needed"
            ));
        }
        let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
        let pair =
            RsaKeyPair::from_pkcs8(der.as_bytes()).map_err(|e| format!("unusable RSA key: {e}"))?;
        let public = key.to_public_key();
        Ok(SigningKey {
            kid: thumbprint(&public),
            pair,
            public,
            ticket: TicketKey::derive(&key)?,
        })
    }

    /// Uses this key id instead of the thumbprint.
    pub fn with_kid(mut self, kid: Option<String>) -> SigningKey {
        if let Some(kid) = kid {
            self.kid = kid;
        }
        self
    }

    /// The key id written in every token's header.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// A key that still verifies tokens (an older signing key, during rotation):
/// its public key verifies passes; given as the private key, it also
/// verifies the tickets it signed.
pub struct VerifyKey {
    kid: String,
    public: RsaPublicKey,
    ticket: Option<TicketKey>,
}

impl VerifyKey {
    /// Loads an RSA public key (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`
    /// PEM), or a private key (PKCS#8 or PKCS#1), which also verifies its
    /// tickets. Its kid is `kid`, or the RFC 7638 thumbprint as the signer
    /// derives it.
    pub fn load(path: &Path, kid: Option<&str>) -> Result<VerifyKey, KeyError> {
        let pem = read(path)?;
        let private = RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .ok();
        let public = match &private {
            Some(key) => key.to_public_key(),
            None => RsaPublicKey::from_public_key_pem(&pem)
                .or_else(|_| RsaPublicKey::from_pkcs1_pem(&pem))
                .map_err(|_| {
                    invalid(
                        path,
                        "not an RSA key in PEM (public: SPKI or PKCS#1; private: PKCS#8 or PKCS#1)",
                    )
                })?,
        };
        let ticket = private
            .as_ref()
            .map(TicketKey::derive)
            .transpose()
            .map_err(|reason| invalid(path, reason))?;
        if public.size() * 8 < MIN_KEY_BITS {
            return Err(invalid(
                path,
                format!(
                    "the key has {} bits; at least {MIN_KEY_BITS} are needed",
                    public.size() * 8
                ),
            ));
        }
        Ok(VerifyKey {
            kid: kid.map_or_else(|| thumbprint(&public), str::to_owned),
            public,
            ticket,
        })
    }
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

fn be64(n: &rsa::BigUint) -> String {
    B64.encode(n.to_bytes_be())
}

/// RFC 7638 JWK thumbprint: the standard, stable kid of a public key.
fn thumbprint(public: &RsaPublicKey) -> String {
    let canonical = format!(
        r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
        be64(public.e()),
        be64(public.n())
    );
    B64.encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// Writes a new key pair: `anteroom.key.pem` (PKCS#8, mode 0600) and
/// `anteroom.pub.pem` (SPKI). Refuses to overwrite unless `force`.
pub fn keygen(
    dir: &Path,
    bits: usize,
    force: bool,
) -> Result<(PathBuf, PathBuf, String), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let (signing, key) = SigningKey::generate(bits).map_err(|reason| invalid(dir, reason))?;
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let private_path = dir.join("anteroom.key.pem");
    let public_path = dir.join("anteroom.pub.pem");
    let private_pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| invalid(&private_path, e.to_string()))?;
    let public_pem = key
        .to_public_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| invalid(&public_path, e.to_string()))?;
    for (path, content, mode) in [
        (&private_path, private_pem.as_bytes(), 0o600),
        (&public_path, public_pem.as_bytes(), 0o644),
    ] {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(mode);
        if force {
            options.create(true).truncate(true);
        } else {
            options.create_new(true);
        }
        let write = |path: &PathBuf| -> std::io::Result<()> {
            let mut file = options.open(path)?;
            file.write_all(content)?;
            file.sync_all()
        };
        write(path).map_err(|source| KeyError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok((private_path, public_path, signing.kid))
}

/// What a token is for; a ticket is never accepted as a pass or the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Admitted.
    Pass,
    /// Waiting.
    Ticket,
}

/// The claims of a pass or ticket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Room.
    pub aud: String,
    /// Session id (pass) or ticket id (ticket), opaque.
    pub sub: String,
    /// Pass or ticket.
    pub kind: Kind,
    /// `normal` or `priority` (tickets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<String>,
    /// The client the token is bound to (a keyed digest of its user agent,
    /// and network), when its room binds tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bnd: Option<String>,
    /// When the session began, ms since the epoch (passes): a store that
    /// lost the session takes it back with its true age, so `session_max`
    /// still ends it on time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adm: Option<u64>,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expires.
    pub exp: u64,
}

impl Claims {
    /// The same claims as if issued at `issued` (seconds), valid as long:
    /// a ticket dated by its arrival, so that asking for the same place
    /// again gives the same token.
    pub fn dated(mut self, issued: u64) -> Claims {
        let ttl = self.exp - self.iat;
        self.iat = issued;
        self.nbf = issued.saturating_sub(1);
        self.exp = issued + ttl;
        self
    }

    /// Past half its lifetime: time to hand out a renewed token.
    pub fn needs_renewal(&self, now: u64) -> bool {
        now >= self.iat + (self.exp.saturating_sub(self.iat)) / 2
    }
}

/// Whether a JWS header asks for nothing anteroom does not do: RFC 7515
/// §4.1.11 says a header naming extensions in `crit` must be refused by a
/// verifier that does not implement them, and anteroom implements none.
pub fn understood(token: &str) -> bool {
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(json) = B64.decode(header) else {
        return false;
    };
    match serde_json::from_slice::<serde_json::Value>(&json) {
        Ok(serde_json::Value::Object(fields)) => !fields.contains_key("crit"),
        _ => false,
    }
}

/// Seconds since the UNIX epoch.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Cache keys for tokens: SipHash-1-3 with 128-bit output under a random
/// per-process key, a PRF, so nobody can make a forged token share the key
/// of a valid one (and it is several times cheaper than SHA-256).
pub struct Fingerprints {
    k0: u64,
    k1: u64,
}

impl Fingerprints {
    /// New random keys.
    pub fn new() -> Fingerprints {
        Fingerprints {
            k0: rand::random(),
            k1: rand::random(),
        }
    }

    /// The cache key of a token.
    pub fn of(&self, token: &[u8]) -> u128 {
        use std::hash::Hasher;
        let mut h = siphasher::sip128::SipHasher13::new_with_keys(self.k0, self.k1);
        h.write(token);
        siphasher::sip128::Hasher128::finish128(&h).as_u128()
    }
}

impl Default for Fingerprints {
    fn default() -> Self {
        Fingerprints::new()
    }
}

/// A verified token: its claims, and for a pass the header value that
/// carries it upstream, made once rather than on every request (tickets,
/// which are many, do not keep a copy).
#[derive(Debug, Clone)]
pub struct Token {
    /// What it says.
    pub claims: Arc<Claims>,
    /// A pass, ready to send as a header.
    pub value: Option<HeaderValue>,
}

#[derive(Clone)]
enum Verified {
    Valid(Token),
    Invalid,
}

/// Signs and verifies anteroom's tokens.
pub struct Tokens {
    issuer: String,
    signer: SigningKey,
    header_b64: String,
    ticket_header_b64: String,
    ticket_signer: hmac::Key,
    rng: aws_lc_rs::rand::SystemRandom,
    keys: HashMap<String, DecodingKey>,
    ticket_keys: HashMap<String, DecodingKey>,
    validation: Validation,
    ticket_validation: Validation,
    fingerprints: Fingerprints,
    cache: Cache<u128, Verified>,
    jwks: Bytes,
    jwks_etag: String,
}

impl Tokens {
    /// A signer and verifier. `verify` are the older public keys still accepted.
    pub fn new(
        issuer: &str,
        signer: SigningKey,
        verify: Vec<VerifyKey>,
        cache_size: usize,
    ) -> Tokens {
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": signer.kid});
        let header_b64 = B64.encode(header.to_string());
        let ticket_header =
            serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": signer.ticket.kid});
        let ticket_header_b64 = B64.encode(ticket_header.to_string());
        let ticket_signer = hmac::Key::new(hmac::HMAC_SHA256, &signer.ticket.key);
        let ticket_keys: HashMap<String, DecodingKey> = std::iter::once(signer.ticket.clone())
            .chain(verify.iter().filter_map(|k| k.ticket.clone()))
            .map(|t| (t.kid, DecodingKey::from_secret(&t.key)))
            .collect();
        let mut jwk = Vec::new();
        let mut keys = HashMap::new();
        let all = std::iter::once((signer.kid.clone(), signer.public.clone()))
            .chain(verify.into_iter().map(|k| (k.kid, k.public)));
        for (kid, public) in all {
            let (n, e) = (be64(public.n()), be64(public.e()));
            if let Ok(key) = DecodingKey::from_rsa_components(&n, &e) {
                if keys.insert(kid.clone(), key).is_none() {
                    jwk.push(serde_json::json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": kid, "n": n, "e": e}));
                }
            }
        }
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[issuer]);
        validation.validate_aud = false; // checked per room below
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let mut ticket_validation = validation.clone();
        ticket_validation.algorithms = vec![Algorithm::HS256];
        let jwks = Bytes::from(serde_json::json!({ "keys": jwk }).to_string());
        Tokens {
            issuer: issuer.to_owned(),
            signer,
            header_b64,
            ticket_header_b64,
            ticket_signer,
            rng: aws_lc_rs::rand::SystemRandom::new(),
            keys,
            ticket_keys,
            validation,
            ticket_validation,
            fingerprints: Fingerprints::new(),
            cache: Cache::new(cache_size),
            jwks_etag: crate::response::etag(&jwks),
            jwks,
        }
    }

    /// `/.well-known/jwks.json`: every public key that verifies a current token.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// The JWKS's entity tag: a digest of its bytes, so it changes exactly
    /// when the keys do.
    pub fn jwks_etag(&self) -> &str {
        &self.jwks_etag
    }

    /// The claims of a new token valid for `ttl` from now.
    pub fn claims(
        &self,
        kind: Kind,
        room: &str,
        sub: String,
        lane: Option<&str>,
        ttl: Duration,
    ) -> Claims {
        let issued = now_secs();
        Claims {
            iss: self.issuer.clone(),
            aud: room.to_owned(),
            sub,
            kind,
            lane: lane.map(str::to_owned),
            bnd: None,
            adm: None,
            iat: issued,
            nbf: issued.saturating_sub(1),
            exp: issued + ttl.as_secs().max(1),
        }
    }

    /// Signs claims into a compact JWS: a pass with one RSA signature, a
    /// ticket with one HMAC.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        if claims.kind == Kind::Ticket {
            let message = format!("{}.{payload}", self.ticket_header_b64);
            let tag = hmac::sign(&self.ticket_signer, message.as_bytes());
            return format!("{message}.{}", B64.encode(tag.as_ref()));
        }
        self.rs256(&payload)
    }

    /// A JWS (RS256, with the pass key's `kid`) of `payload` after the
    /// header: verifiable with the JWKS anteroom serves.
    fn rs256(&self, payload_b64: &str) -> String {
        let message = format!("{}.{payload_b64}", self.header_b64);
        let mut signature = vec![0; self.signer.pair.public_modulus_len()];
        match self.signer.pair.sign(
            &RSA_PKCS1_SHA256,
            &self.rng,
            message.as_bytes(),
            &mut signature,
        ) {
            Ok(()) => format!("{message}.{}", B64.encode(signature)),
            // Signing fails only when the system RNG does; such a token never verifies.
            Err(_) => message,
        }
    }

    /// A document anteroom publishes or hands out (a launch's commitment,
    /// a visitor's receipt, a published draw), signed with the pass key:
    /// anyone checks it with the JWKS. It never verifies as a pass or a
    /// ticket, whose payloads it does not have.
    pub fn sign_document<T: Serialize>(&self, document: &T) -> String {
        self.rs256(&B64.encode(serde_json::to_vec(document).unwrap_or_default()))
    }

    /// A signed document's content, if its signature is one of this
    /// instance's keys (current or older).
    pub fn verify_document<T: serde::de::DeserializeOwned>(&self, jws: &str) -> Option<T> {
        if jws.len() > MAX_DOCUMENT_LEN {
            return None;
        }
        let header = jsonwebtoken::decode_header(jws).ok()?;
        if header.alg != Algorithm::RS256 || !understood(jws) {
            return None;
        }
        let key = self.keys.get(header.kid.as_deref()?)?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        jsonwebtoken::decode::<T>(jws, key, &validation)
            .ok()
            .map(|d| d.claims)
    }

    /// The token if it is a valid, unexpired `kind` token for `room`.
    pub fn verify(&self, token: &str, kind: Kind, room: &str) -> Option<Token> {
        self.verify_any_room(token, kind)
            .filter(|t| t.claims.aud == room)
    }

    /// The token if it is a valid, unexpired `kind` token for any room.
    pub fn verify_any_room(&self, token: &str, kind: Kind) -> Option<Token> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let key = self.fingerprints.of(token.as_bytes());
        let verified = match self.cache.get(&key) {
            Some(v) => v,
            None => {
                let v = match self.decode(token) {
                    Some(c) => Verified::Valid(Token {
                        value: (c.kind == Kind::Pass)
                            .then(|| HeaderValue::from_str(token).ok())
                            .flatten(),
                        claims: Arc::new(c),
                    }),
                    None => Verified::Invalid,
                };
                self.cache.insert(key, v.clone());
                v
            }
        };
        let Verified::Valid(token) = verified else {
            return None;
        };
        let claims = &token.claims;
        let now = now_secs();
        let fresh = claims.exp + LEEWAY_SECS > now && claims.nbf <= now + LEEWAY_SECS;
        (fresh && claims.kind == kind).then_some(token)
    }

    /// The claims of a token whose algorithm is its kind's: RS256 for a
    /// pass, HS256 for a ticket.
    fn decode(&self, token: &str) -> Option<Claims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if !understood(token) {
            return None;
        }
        let kid = header.kid.as_deref()?;
        let (key, validation, kind) = match header.alg {
            Algorithm::RS256 => (self.keys.get(kid)?, &self.validation, Kind::Pass),
            Algorithm::HS256 => (
                self.ticket_keys.get(kid)?,
                &self.ticket_validation,
                Kind::Ticket,
            ),
            _ => return None,
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .ok()?
            .claims;
        (claims.kind == kind).then_some(claims)
    }

    /// Forgets a token (its session was released), so this instance stops honouring it at once.
    pub fn forget(&self, token: &[u8]) {
        self.cache
            .insert(self.fingerprints.of(token), Verified::Invalid);
    }

    /// A keyed digest of `parts` (HMAC-SHA256 under the ticket key, 128 bits
    /// in hex): every instance computes the same one, nobody else can. Names
    /// an `Idempotency-Key` or a client network in the store without
    /// keeping them, binds a token to its client, seals a challenge.
    pub fn digest(&self, parts: &[&[u8]]) -> String {
        let mut ctx = hmac::Context::with_key(&self.ticket_signer);
        for part in parts {
            ctx.update(&(part.len() as u64).to_be_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign();
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Longest signed document read back (a receipt is well under a kilobyte).
const MAX_DOCUMENT_LEN: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::OnceLock;

    pub(crate) fn test_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap())
    }

    fn tokens() -> Tokens {
        let signer = SigningKey::from_rsa(test_key().clone()).unwrap();
        Tokens::new("anteroom", signer, Vec::new(), 1000)
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let t = tokens();
        let claims = t.claims(
            Kind::Pass,
            "web",
            "abc".into(),
            None,
            Duration::from_secs(60),
        );
        let token = t.sign(&claims);
        let got = t.verify(&token, Kind::Pass, "web").unwrap();
        assert_eq!(*got.claims, claims);
        assert_eq!(got.value.unwrap(), token.as_str());
        // Second time from the cache.
        assert!(t.verify(&token, Kind::Pass, "web").is_some());
        assert!(t.verify(&token, Kind::Ticket, "web").is_none());
        assert!(t.verify(&token, Kind::Pass, "other").is_none());
        t.forget(token.as_bytes());
        assert!(t.verify(&token, Kind::Pass, "web").is_none());
    }

    #[test]
    fn a_crit_header_is_refused() {
        let t = tokens();
        let claims = t.claims(Kind::Pass, "web", "s".into(), None, Duration::from_secs(60));
        let token = t.sign(&claims);
        assert!(understood(&token));
        // The same token with `crit` in its header, signed by the right key.
        let payload = token.split('.').nth(1).unwrap();
        let header = B64.encode(
            serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": t.signer.kid(), "crit": ["exp"]})
                .to_string(),
        );
        let message = format!("{header}.{payload}");
        let mut signature = vec![0; t.signer.pair.public_modulus_len()];
        t.signer
            .pair
            .sign(
                &RSA_PKCS1_SHA256,
                &t.rng,
                message.as_bytes(),
                &mut signature,
            )
            .unwrap();
        let with_crit = format!("{message}.{}", B64.encode(signature));
        assert!(!understood(&with_crit));
        assert!(t.verify(&with_crit, Kind::Pass, "web").is_none());
        assert!(
            !understood("%%%.x.y"),
            "a header that is not base64url JSON"
        );
    }

    #[test]
    fn tickets_are_macs_and_passes_signatures_and_neither_is_the_other() {
        let t = tokens();
        let ticket = t.sign(&t.claims(
            Kind::Ticket,
            "web",
            "ab.1.2".into(),
            Some("normal"),
            Duration::from_secs(60),
        ));
        let pass = t.sign(&t.claims(Kind::Pass, "web", "s".into(), None, Duration::from_secs(60)));
        assert_eq!(
            jsonwebtoken::decode_header(&ticket).unwrap().alg,
            Algorithm::HS256
        );
        assert_eq!(
            jsonwebtoken::decode_header(&pass).unwrap().alg,
            Algorithm::RS256
        );
        assert!(t.verify(&ticket, Kind::Ticket, "web").is_some());
        assert!(t.verify(&ticket, Kind::Pass, "web").is_none());
        assert!(t.verify(&pass, Kind::Ticket, "web").is_none());
        // A pass's claims under the ticket key: an HMAC may not make a pass.
        let payload = pass.split('.').nth(1).unwrap();
        let message = format!("{}.{payload}", t.ticket_header_b64);
        let tag = hmac::sign(&t.ticket_signer, message.as_bytes());
        let forged = format!("{message}.{}", B64.encode(tag.as_ref()));
        assert!(t.verify(&forged, Kind::Pass, "web").is_none());
        // Another signing key derives another ticket key.
        let other = Tokens::new(
            "anteroom",
            SigningKey::generate(2048).unwrap().0,
            Vec::new(),
            16,
        );
        assert!(other.verify(&ticket, Kind::Ticket, "web").is_none());
    }

    #[test]
    fn an_old_private_key_keeps_its_tickets_valid_through_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (old_private, old_public, _) = keygen(dir.path(), 2048, false).unwrap();
        let old = Tokens::new(
            "anteroom",
            SigningKey::load(&old_private).unwrap(),
            Vec::new(),
            16,
        );
        let ticket = old.sign(&old.claims(
            Kind::Ticket,
            "web",
            "x".into(),
            None,
            Duration::from_secs(60),
        ));
        // A new signing key, verifying with the old one as a key file.
        let rotated = |old: &Path| {
            let signer = SigningKey::from_rsa(test_key().clone()).unwrap();
            let verify = vec![VerifyKey::load(old, None).unwrap()];
            Tokens::new("anteroom", signer, verify, 16)
        };
        let with_public = rotated(&old_public);
        assert!(with_public.verify(&ticket, Kind::Ticket, "web").is_none());
        let with_private = rotated(&old_private);
        assert!(with_private.verify(&ticket, Kind::Ticket, "web").is_some());
    }

    #[test]
    fn a_signed_document_verifies_and_is_never_a_pass() {
        use crate::draw::Receipt;
        let signer = || SigningKey::from_rsa(test_key().clone()).unwrap();
        let tokens = Tokens::new("anteroom", signer(), Vec::new(), 16);
        let receipt = Receipt::new("web", "spring-drop", &[1; 32], "ticket-1", 1_000);
        let jws = tokens.sign_document(&receipt);
        assert_eq!(
            tokens.verify_document::<Receipt>(&jws),
            Some(receipt.clone())
        );
        assert!(tokens.verify(&jws, Kind::Pass, "web").is_none());
        assert!(tokens.verify(&jws, Kind::Ticket, "web").is_none());
        // Another entrant under the same signature.
        let parts: Vec<&str> = jws.split('.').collect();
        let forged = Receipt {
            entrant: "00".repeat(32),
            ..receipt
        };
        let body = B64.encode(serde_json::to_vec(&forged).unwrap());
        let forged = format!("{}.{body}.{}", parts[0], parts[2]);
        assert!(tokens.verify_document::<Receipt>(&forged).is_none());
        // Another key.
        let other = Tokens::new(
            "anteroom",
            SigningKey::generate(2048).unwrap().0,
            Vec::new(),
            16,
        );
        assert!(other.verify_document::<Receipt>(&jws).is_none());
        // A pass is no receipt.
        let pass = tokens.sign(&tokens.claims(
            Kind::Pass,
            "web",
            "s".into(),
            None,
            Duration::from_secs(60),
        ));
        assert!(tokens.verify_document::<Receipt>(&pass).is_none());
    }

    #[test]
    fn renewal_at_half_life() {
        let c = Claims {
            iss: "i".into(),
            aud: "r".into(),
            sub: "s".into(),
            kind: Kind::Pass,
            lane: None,
            bnd: None,
            adm: None,
            iat: 100,
            nbf: 100,
            exp: 200,
        };
        assert!(!c.needs_renewal(149));
        assert!(c.needs_renewal(150));
    }

    #[test]
    fn jwks_lists_the_signing_key() {
        let t = tokens();
        let jwks: serde_json::Value = serde_json::from_slice(&t.jwks()).unwrap();
        assert_eq!(jwks["keys"][0]["kid"], t.signer.kid());
        assert_eq!(jwks["keys"][0]["alg"], "RS256");
        assert_eq!(jwks["keys"][0]["e"], "AQAB");
    }

    #[test]
    fn old_keys_keep_verifying_during_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let (_, old_public, old_kid) = keygen(dir.path(), 2048, false).unwrap();
        let old = Tokens::new(
            "anteroom",
            SigningKey::load(&dir.path().join("anteroom.key.pem")).unwrap(),
            Vec::new(),
            100,
        );
        let token =
            old.sign(&old.claims(Kind::Pass, "web", "s".into(), None, Duration::from_secs(60)));
        let new_signer = SigningKey::from_rsa(test_key().clone()).unwrap();
        let without = Tokens::new(
            "anteroom",
            SigningKey::from_rsa(test_key().clone()).unwrap(),
            Vec::new(),
            100,
        );
        assert!(
            without.verify(&token, Kind::Pass, "web").is_none(),
            "unknown kid"
        );
        let with = Tokens::new(
            "anteroom",
            new_signer,
            vec![VerifyKey::load(&old_public, None).unwrap()],
            100,
        );
        assert!(with.verify(&token, Kind::Pass, "web").is_some());
        let jwks: serde_json::Value = serde_json::from_slice(&with.jwks()).unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids.len(), 2);
        assert!(kids.contains(&old_kid.as_str()));
    }

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (private, public, _) = keygen(dir.path(), 2048, false).unwrap();
        assert_eq!(
            std::fs::metadata(&private).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            std::fs::read_to_string(&public)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert!(keygen(dir.path(), 2048, false).is_err(), "never overwrites");
        assert!(keygen(dir.path(), 2048, true).is_ok());
    }

    #[test]
    fn small_keys_are_refused() {
        let small = RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        assert!(SigningKey::from_rsa(small).is_err());
    }
}
