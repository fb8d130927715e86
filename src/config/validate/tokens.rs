//! `[tokens]` and `[[jwt]]`: the keys passes are signed and app tokens verified with.

use std::time::Duration;

use super::checks::{DEFAULT_TICKET_TTL, Problems};
use crate::config::file::{JwtFile, TokensFile, VerifyKeyFile};
use crate::config::{Jwt, JwtKey, JwtSource, Tokens};

pub(super) fn tokens(p: &mut Problems, t: &TokensFile) -> Tokens {
    let issuer = t.issuer.clone().unwrap_or_else(|| "anteroom".to_owned());
    if issuer.is_empty() {
        p.add("tokens.issuer", "must not be empty");
    }
    let signing_key = p.readable_file("tokens.signing_key", &t.signing_key);
    let verify_keys = t
        .verify_keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let key = format!("tokens.verify_keys[{i}]");
            let (file, kid) = match k {
                VerifyKeyFile::Path(f) => (f.as_str(), None),
                VerifyKeyFile::WithKid(t) => (t.file.as_str(), Some(t.kid.clone())),
            };
            (p.readable_file(&key, file), kid)
        })
        .collect();
    if let Some(kid) = &t.signing_kid {
        if kid.is_empty() || kid.len() > 128 || !kid.bytes().all(|b| b.is_ascii_graphic()) {
            p.add(
                "tokens.signing_kid",
                "must be 1 to 128 visible ASCII characters",
            );
        }
    }
    let ticket_ttl = p.duration(
        "tokens.ticket_ttl",
        t.ticket_ttl.as_deref(),
        DEFAULT_TICKET_TTL,
    );
    if ticket_ttl < Duration::from_secs(60) {
        p.add("tokens.ticket_ttl", "must be at least 1m");
    }
    let cache_size = t
        .cache_size
        .and_then(|n| p.int_in("tokens.cache_size", n, 16, 100_000_000))
        .unwrap_or(200_000) as usize;
    Tokens {
        issuer,
        signing_key,
        signing_kid: t.signing_kid.clone(),
        verify_keys,
        ticket_ttl,
        cache_size,
    }
}

pub(super) fn jwt(p: &mut Problems, i: usize, j: &JwtFile) -> Option<Jwt> {
    use jsonwebtoken::Algorithm::*;
    let key = format!("jwt[{i}]");
    p.name(&format!("{key}.name"), &j.name);
    let source = match (&j.cookie, &j.header) {
        (Some(c), None) if !c.is_empty() => Some(JwtSource::Cookie(c.clone())),
        (None, Some(h)) => match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(JwtSource::Header(name)),
            Err(_) => {
                p.add(
                    format!("{key}.header"),
                    format!("{h:?} is not a header name"),
                );
                None
            }
        },
        _ => {
            p.add(
                format!("{key}.cookie"),
                "give exactly one of cookie or header",
            );
            None
        }
    };
    let algorithm = j.algorithm.parse::<jsonwebtoken::Algorithm>().ok();
    if algorithm.is_none() {
        p.add(
            format!("{key}.algorithm"),
            format!("{:?} is not a JWT algorithm: use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA", j.algorithm),
        );
    }
    let secret = p.secret(&format!("{key}.secret"), &j.secret, &j.secret_file);
    let jwt_key = match (algorithm?, secret, &j.public_key) {
        (HS256 | HS384 | HS512, Some(secret), None) => {
            if secret.expose().len() < 32 {
                p.add(
                    format!("{key}.secret"),
                    "an HMAC secret must be at least 32 characters",
                );
            }
            Some(JwtKey::Secret(secret))
        }
        (HS256 | HS384 | HS512, _, _) => {
            p.add(
                format!("{key}.secret"),
                "an HS* algorithm needs secret (or secret_file) and no public_key",
            );
            None
        }
        (_, None, Some(path)) => Some(JwtKey::PublicKey(
            p.readable_file(&format!("{key}.public_key"), path),
        )),
        (_, _, _) => {
            p.add(
                format!("{key}.public_key"),
                "a public-key algorithm needs public_key (PEM) and no secret",
            );
            None
        }
    };
    Some(Jwt {
        name: j.name.clone(),
        source: source?,
        algorithm: algorithm?,
        key: jwt_key?,
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
    })
}
