//! Rules that pick visitors out by path, network or a verified app token:
//! who bypasses a room, and who waits in the priority lane.
//!
//! A logged-in user is recognised by the app's own JWT, verified with its
//! key, algorithm, `iss` and `aud`; the mere presence of a cookie never counts.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pingora::http::RequestHeader;
use quick_cache::sync::Cache;

use crate::config::{Jwt, JwtKey, JwtSource, Rules};
use crate::request::cookies;
use crate::request::facts::Facts;
use crate::token::{Fingerprints, MAX_TOKEN_LEN, now_secs, understood};

/// Verified app tokens remembered per verifier.
const CACHE_SIZE: usize = 50_000;

/// Verifies the app's own tokens.
pub struct AppJwt {
    source: JwtSource,
    key: DecodingKey,
    validation: Validation,
    /// Token fingerprint → `exp` of a valid token, or 0 for an invalid one.
    cache: Cache<u128, u64>,
    fingerprints: Fingerprints,
}

impl AppJwt {
    /// The key that verifies `alg` tokens, from a PEM file.
    fn decoding_key(alg: Algorithm, path: &Path) -> Result<DecodingKey, String> {
        use Algorithm::*;
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let key = match alg {
            RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => DecodingKey::from_rsa_pem(&pem),
            ES256 | ES384 => DecodingKey::from_ec_pem(&pem),
            EdDSA => DecodingKey::from_ed_pem(&pem),
            HS256 | HS384 | HS512 => {
                return Err("HS* algorithms use a secret, not a key file".to_owned());
            }
        };
        key.map_err(|e| format!("{} is not a {alg:?} public key in PEM: {e}", path.display()))
    }

    /// A verifier for a `[[jwt]]` entry.
    pub fn new(config: &Jwt) -> Result<AppJwt, String> {
        let key = match &config.key {
            JwtKey::Secret(secret) => DecodingKey::from_secret(secret.expose().as_bytes()),
            JwtKey::PublicKey(path) => AppJwt::decoding_key(config.algorithm, path)?,
        };
        let mut validation = Validation::new(config.algorithm);
        validation.leeway = 5;
        validation.validate_nbf = true;
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(AppJwt {
            source: config.source.clone(),
            key,
            validation,
            cache: Cache::new(CACHE_SIZE),
            fingerprints: Fingerprints::new(),
        })
    }

    /// Whether the request carries a valid app token.
    pub fn matches(&self, req: &RequestHeader) -> bool {
        match &self.source {
            JwtSource::Cookie(name) => cookies::values(req, name).any(|t| self.valid(t)),
            JwtSource::Header(name) => req
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim())
                .any(|t| self.valid(t)),
        }
    }

    fn valid(&self, token: &str) -> bool {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return false;
        }
        let key = self.fingerprints.of(token.as_bytes());
        let exp = self.cache.get(&key).unwrap_or_else(|| {
            let exp = understood(token)
                .then(|| {
                    jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
                        .ok()
                })
                .flatten()
                .and_then(|d| d.claims.get("exp").and_then(serde_json::Value::as_u64))
                .unwrap_or(0);
            self.cache.insert(key, exp);
            exp
        });
        exp + self.validation.leeway > now_secs()
    }
}

/// Whether the request matches any part of the rule.
pub fn matches(rules: &Rules, facts: &Facts<'_>, jwts: &[AppJwt]) -> bool {
    if rules.is_empty() {
        return false;
    }
    rules
        .paths
        .iter()
        .any(|p| facts.path.starts_with(p.as_str()))
        || facts
            .ip
            .is_some_and(|ip| rules.cidrs.iter().any(|net| net.contains(&ip)))
        || rules
            .jwt
            .and_then(|i| jwts.get(i))
            .is_some_and(|jwt| jwt.matches(facts.req))
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::hmac;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    use super::*;
    use crate::config::Secret;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn hs256(header: serde_json::Value, claims: serde_json::Value) -> String {
        let message = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
        let tag = hmac::sign(&key, message.as_bytes());
        format!("{message}.{}", B64.encode(tag.as_ref()))
    }

    fn request_with(token: &str) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header("cookie", format!("session={token}"))
            .unwrap();
        req
    }

    #[test]
    fn an_app_token_asking_for_unknown_extensions_is_not_honoured() {
        let jwt = AppJwt::new(&Jwt {
            name: "app".into(),
            source: JwtSource::Cookie("session".into()),
            algorithm: Algorithm::HS256,
            key: JwtKey::Secret(Secret::new(SECRET)),
            issuer: None,
            audience: None,
        })
        .unwrap();
        let claims = serde_json::json!({"sub": "u1", "exp": now_secs() + 600});
        let plain = hs256(
            serde_json::json!({"alg": "HS256", "typ": "JWT"}),
            claims.clone(),
        );
        assert!(jwt.matches(&request_with(&plain)));
        let crit = hs256(
            serde_json::json!({"alg": "HS256", "typ": "JWT", "crit": ["b64"], "b64": false}),
            claims,
        );
        assert!(
            !jwt.matches(&request_with(&crit)),
            "a crit header was honoured"
        );
    }
}
