//! The draw at a launch's start, and how anyone checks it.
//!
//! Before the pre-queue opens anteroom picks a secret 32-byte `seed` and
//! publishes its `commitment`, `SHA-256(seed)`. Each pre-queue entrant is
//! known by a digest that stands for its ticket (`entrant`), given to the
//! visitor in a receipt. At the start every entrant gets a rank,
//! `SHA-256(key || entrant)`, where the `key` is
//! `SHA-256("anteroom-draw-v1" || seed || public)` and `public` is an
//! optional value nobody could know before the pre-queue closed (a drand
//! round's randomness, entered by the operator). The line is the entrants
//! sorted by rank (ties, which SHA-256 makes all but impossible, by
//! digest). After the start the seed and the entrants are published: with
//! them anyone recomputes the commitment and every position.
//!
//! Ordering by a keyed hash is a uniformly random permutation as long as
//! SHA-256 behaves as a random function, and it needs no state between
//! entrants: each rank is computed alone, so a shared store can put a
//! million entrants in line in small batches (no script runs for the whole
//! draw), and a verifier needs nothing but SHA-256 and a sort. docs/adr/0015
//! says why this and not a seeded shuffle.

use aws_lc_rs::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

/// The domain of the draw key: a key made for anything else never equals it.
const KEY_DOMAIN: &[u8] = b"anteroom-draw-v1";
/// The domain of an entrant's digest.
const ENTRANT_DOMAIN: &[u8] = b"anteroom-entrant-v1";

/// A SHA-256 digest.
pub type Digest = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Digest {
    let mut context = Context::new(&SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// What is published before the pre-queue opens: `SHA-256(seed)`.
pub fn commitment(seed: &Digest) -> Digest {
    sha256(&[seed])
}

/// The digest that stands for a ticket in the draw of `event`:
/// `SHA-256("anteroom-entrant-v1" || 0 || event || 0 || ticket)`. It tells
/// nothing of the ticket, which stays the visitor's secret.
pub fn entrant(event: &str, ticket: &str) -> Digest {
    sha256(&[
        ENTRANT_DOMAIN,
        &[0],
        event.as_bytes(),
        &[0],
        ticket.as_bytes(),
    ])
}

/// The key every rank is made with: `SHA-256("anteroom-draw-v1" || seed ||
/// public)`, `public` empty when there is none.
pub fn key(seed: &Digest, public: &[u8]) -> Digest {
    sha256(&[KEY_DOMAIN, seed, public])
}

/// An entrant's rank: `SHA-256(key || entrant)`. The line is in rank order.
pub fn rank(key: &Digest, entrant: &Digest) -> Digest {
    sha256(&[key, entrant])
}

/// The entrants in line order: by rank, then by digest.
pub fn order(key: &Digest, entrants: &[Digest]) -> Vec<Digest> {
    let mut ranked: Vec<(Digest, Digest)> = entrants.iter().map(|e| (rank(key, e), *e)).collect();
    ranked.sort_unstable();
    ranked.into_iter().map(|(_, e)| e).collect()
}

/// What a pre-queue entrant is given, signed with the pass key
/// (`Tokens::sign_document`): proof that it entered the draw of `event`
/// under `commitment`, as `entrant`, at `arrived`. After the draw it finds
/// its place in the published line, or shows it was left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receipt {
    /// Always `"anteroom-receipt-v1"`.
    pub version: String,
    /// The room.
    pub room: String,
    /// The event.
    pub event: String,
    /// The draw's commitment, in hex.
    pub commitment: String,
    /// The entrant's digest, in hex (it stands for the ticket).
    pub entrant: String,
    /// When it joined the pre-queue, in milliseconds since the Unix epoch.
    pub arrived_ms: u64,
}

impl Receipt {
    /// The receipt of `ticket`, which joined the pre-queue of `event` at `arrived_ms`.
    pub fn new(
        room: &str,
        event: &str,
        commitment: &Digest,
        ticket: &str,
        arrived_ms: u64,
    ) -> Receipt {
        Receipt {
            version: "anteroom-receipt-v1".to_owned(),
            room: room.to_owned(),
            event: event.to_owned(),
            commitment: hex(commitment),
            entrant: hex(&entrant(event, ticket)),
            arrived_ms,
        }
    }
}

impl Receipt {
    /// A signed receipt's content, checked against a JWKS (what anteroom
    /// serves at `/.well-known/jwks.json`): RS256 by the key its `kid` names.
    pub fn verify(jws: &str, jwks: &str) -> Result<Receipt, DrawError> {
        use jsonwebtoken::jwk::JwkSet;
        use jsonwebtoken::{Algorithm, DecodingKey, Validation};
        let bad = |message: String| DrawError::Format {
            field: "receipt",
            message,
        };
        let set: JwkSet = serde_json::from_str(jwks).map_err(|e| bad(format!("the JWKS: {e}")))?;
        let header = jsonwebtoken::decode_header(jws.trim()).map_err(|e| bad(e.to_string()))?;
        if header.alg != Algorithm::RS256 {
            return Err(bad(format!("signed with {:?}, not RS256", header.alg)));
        }
        let kid = header
            .kid
            .ok_or_else(|| bad("names no key (kid)".to_owned()))?;
        let jwk = set
            .find(&kid)
            .ok_or_else(|| bad(format!("key {kid:?} is not in the JWKS")))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(e.to_string()))?;
        let mut validation = Validation::new(Algorithm::RS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.set_required_spec_claims::<&str>(&[]);
        let receipt = jsonwebtoken::decode::<Receipt>(jws.trim(), &key, &validation)
            .map_err(|e| bad(format!("the signature or content does not check out: {e}")))?
            .claims;
        if receipt.version != "anteroom-receipt-v1" {
            return Err(bad(format!(
                "{:?} is not a receipt this verifier knows",
                receipt.version
            )));
        }
        Ok(receipt)
    }
}

/// A draw as published after the start: everything needed to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Published {
    /// Always `"anteroom-draw-v1"`.
    pub version: String,
    /// The room.
    pub room: String,
    /// The event.
    pub event: String,
    /// `SHA-256(seed)` in hex, as published before the pre-queue opened.
    pub commitment: String,
    /// The seed in hex.
    pub seed: String,
    /// The public value mixed in, in hex (empty: none).
    #[serde(default)]
    pub public: String,
    /// Every entrant's digest in hex, in line order: position 1 first.
    pub line: Vec<String>,
}

/// Why a published draw does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrawError {
    /// A field is not what its format says.
    #[error("{field}: {message}")]
    Format {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The seed is not the one committed to.
    #[error("the seed does not match the commitment")]
    Commitment,
    /// The line is not the order the seed gives.
    #[error("position {position}: the seed puts {expected} there, the line has {found}")]
    Order {
        /// The first position that differs, from 1.
        position: usize,
        /// The entrant the seed puts there.
        expected: String,
        /// The entrant the line has.
        found: String,
    },
    /// An entrant with a receipt is not in the line.
    #[error("entrant {0} has a receipt but is not in the line")]
    Missing(String),
    /// An entrant appears twice.
    #[error("entrant {0} appears more than once")]
    Duplicate(String),
}

/// Hex of a digest, lower case.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A digest from its hex.
pub fn parse_digest(field: &'static str, text: &str) -> Result<Digest, DrawError> {
    let bytes = parse_hex(field, text)?;
    bytes.try_into().map_err(|_| DrawError::Format {
        field,
        message: format!("{text:?} is not 32 bytes of hex"),
    })
}

fn parse_hex(field: &'static str, text: &str) -> Result<Vec<u8>, DrawError> {
    let bad = || DrawError::Format {
        field,
        message: format!("{text:?} is not hex"),
    };
    if text.len() % 2 != 0 || !text.is_ascii() {
        return Err(bad());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).map_err(|_| bad()))
        .collect()
}

impl Published {
    /// The draw of `entrants` (in any order) with this seed and public value.
    pub fn new(
        room: &str,
        event: &str,
        seed: &Digest,
        public: &[u8],
        entrants: &[Digest],
    ) -> Published {
        let key = key(seed, public);
        Published {
            version: String::from_utf8_lossy(KEY_DOMAIN).into_owned(),
            room: room.to_owned(),
            event: event.to_owned(),
            commitment: hex(&commitment(seed)),
            seed: hex(seed),
            public: hex(public),
            line: order(&key, entrants).iter().map(|d| hex(d)).collect(),
        }
    }

    /// Checks the draw: the seed is the one committed to, and the line is
    /// exactly the order it gives its entrants.
    pub fn verify(&self) -> Result<(), DrawError> {
        if self.version.as_bytes() != KEY_DOMAIN {
            return Err(DrawError::Format {
                field: "version",
                message: format!("{:?} is not a draw this verifier knows", self.version),
            });
        }
        let seed = parse_digest("seed", &self.seed)?;
        if hex(&commitment(&seed)) != self.commitment.to_ascii_lowercase() {
            return Err(DrawError::Commitment);
        }
        let public = parse_hex("public", &self.public)?;
        let entrants = self
            .line
            .iter()
            .map(|e| parse_digest("line", e))
            .collect::<Result<Vec<_>, _>>()?;
        let mut seen = std::collections::HashSet::with_capacity(entrants.len());
        if let Some(twice) = entrants.iter().find(|e| !seen.insert(**e)) {
            return Err(DrawError::Duplicate(hex(twice)));
        }
        let expected = order(&key(&seed, &public), &entrants);
        match expected.iter().zip(&entrants).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => Err(DrawError::Order {
                position: i + 1,
                expected: hex(&expected[i]),
                found: hex(&entrants[i]),
            }),
        }
    }

    /// The position (from 1) of an entrant, if it is in the line.
    pub fn position(&self, entrant: &Digest) -> Option<usize> {
        let wanted = hex(entrant);
        self.line.iter().position(|e| *e == wanted).map(|i| i + 1)
    }

    /// A verified receipt's place in this draw: it must be of this room,
    /// event and commitment, and its entrant in the line.
    pub fn place(&self, receipt: &Receipt) -> Result<usize, DrawError> {
        if receipt.room != self.room || receipt.event != self.event {
            return Err(DrawError::Format {
                field: "receipt",
                message: format!(
                    "is for {:?} in room {:?}, not this draw",
                    receipt.event, receipt.room
                ),
            });
        }
        if !receipt.commitment.eq_ignore_ascii_case(&self.commitment) {
            return Err(DrawError::Commitment);
        }
        self.find(&parse_digest("entrant", &receipt.entrant)?)
    }

    /// A receipt's entrant: its position, or the error that it was left out.
    pub fn find(&self, entrant: &Digest) -> Result<usize, DrawError> {
        self.position(entrant)
            .ok_or_else(|| DrawError::Missing(hex(entrant)))
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn entrants(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| entrant("spring-drop", &format!("ticket-{i}")))
            .collect()
    }

    #[test]
    fn a_published_draw_verifies_and_a_changed_one_does_not() {
        let seed = [7u8; 32];
        let all = entrants(50);
        let draw = Published::new("web", "spring-drop", &seed, b"drand", &all);
        assert_eq!(draw.verify(), Ok(()));
        assert_eq!(draw.line.len(), 50);
        // Every entrant has exactly one position.
        for e in &all {
            assert!(draw.position(e).is_some());
        }
        // Another seed: the commitment no longer matches.
        let mut other = draw.clone();
        other.seed = hex(&[8u8; 32]);
        assert_eq!(other.verify(), Err(DrawError::Commitment));
        // Two places swapped.
        let mut swapped = draw.clone();
        swapped.line.swap(3, 4);
        assert!(matches!(
            swapped.verify(),
            Err(DrawError::Order { position: 4, .. })
        ));
        // An entrant dropped: the rest is still in order, so it is its
        // receipt that finds it missing.
        let first = parse_digest("line", &draw.line[0]).unwrap();
        assert_eq!(draw.find(&first), Ok(1));
        let mut dropped = draw.clone();
        dropped.line.remove(0);
        assert_eq!(dropped.verify(), Ok(()));
        assert_eq!(dropped.find(&first), Err(DrawError::Missing(hex(&first))));
        // Another public value: another order.
        let mut public = draw.clone();
        public.public = hex(b"other");
        assert!(matches!(public.verify(), Err(DrawError::Order { .. })));
        // An entrant twice.
        let mut twice = draw.clone();
        twice.line[1] = twice.line[0].clone();
        assert!(matches!(twice.verify(), Err(DrawError::Duplicate(_))));
    }

    #[test]
    fn the_order_does_not_depend_on_the_entrants_arrival_order() {
        let seed = [1u8; 32];
        let mut all = entrants(100);
        let key = key(&seed, b"");
        let first = order(&key, &all);
        all.reverse();
        assert_eq!(order(&key, &all), first);
    }

    /// Chi-square over many draws with random seeds: each entrant's position
    /// is uniform (p > 0.001), for every entrant, on a seeded family of seeds.
    #[test]
    fn every_entrant_is_equally_likely_at_every_position() {
        const N: usize = 8;
        const DRAWS: usize = 4000;
        // The 0.999 quantile of chi-square with N - 1 = 7 degrees of freedom.
        const CRITICAL: f64 = 24.32;
        let all = entrants(N);
        let mut counts = [[0u32; N]; N];
        let mut rng = StdRng::seed_from_u64(2027);
        for _ in 0..DRAWS {
            let seed: Digest = rng.r#gen();
            let line = order(&key(&seed, b""), &all);
            for (position, e) in line.iter().enumerate() {
                let who = all.iter().position(|a| a == e).unwrap();
                counts[who][position] += 1;
            }
        }
        let expected = DRAWS as f64 / N as f64;
        for (who, row) in counts.iter().enumerate() {
            let chi2: f64 = row
                .iter()
                .map(|&c| (f64::from(c) - expected).powi(2) / expected)
                .sum();
            assert!(
                chi2 < CRITICAL,
                "entrant {who}: chi-square {chi2:.1}, counts {row:?}"
            );
        }
    }

    /// Without the seed the line cannot be told: the same entrants under two
    /// seeds one bit apart share no more of their order than chance.
    #[test]
    fn one_bit_of_seed_changes_the_whole_order() {
        let all = entrants(1000);
        let mut a = [0u8; 32];
        let mut b = a;
        b[31] = 1;
        let (one, two) = (order(&key(&a, b""), &all), order(&key(&b, b""), &all));
        let same = one.iter().zip(&two).filter(|(x, y)| x == y).count();
        assert!(same < 10, "{same} of 1000 positions kept");
        a[0] = 9;
        assert_ne!(order(&key(&a, b""), &all), one);
    }
}
