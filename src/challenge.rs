//! Proof of work (`challenge = "pow"`): before a new visitor's ticket counts,
//! their client finds a nonce such that
//!
//! ```text
//! SHA-256(seed ":" nonce)
//! ```
//!
//! starts with `difficulty` zero bits. The seed is a keyed digest of the
//! room and the ticket, so it needs no state: a solution holds for that one
//! ticket only (it cannot be replayed for another), and only while the
//! ticket waits to be confirmed (a stale one finds its ticket lapsed).
//! Checking costs one hash; finding takes about 2^difficulty of them.

use aws_lc_rs::digest::{SHA256, digest};

use crate::token::Tokens;

/// The algorithm's name in answers to clients.
pub const ALGORITHM: &str = "sha256-leading-zero-bits";
/// Header a client sends its nonce in, with its ticket.
pub const HEADER: &str = "x-anteroom-pow";
/// Longest nonce accepted: a decimal or hex counter is far shorter.
const MAX_NONCE: usize = 64;

/// The seed of a ticket's puzzle.
pub fn seed(tokens: &Tokens, room: &str, ticket: &str) -> String {
    tokens.digest(&[b"pow", room.as_bytes(), ticket.as_bytes()])
}

/// Leading zero bits of a hash.
fn leading_zeros(hash: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in hash {
        if *byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

fn hash(seed: &str, nonce: &str) -> u32 {
    let mut input = Vec::with_capacity(seed.len() + 1 + nonce.len());
    input.extend_from_slice(seed.as_bytes());
    input.push(b':');
    input.extend_from_slice(nonce.as_bytes());
    leading_zeros(digest(&SHA256, &input).as_ref())
}

/// Whether `nonce` (visible ASCII, at most 64 bytes) solves the puzzle.
pub fn solves(seed: &str, nonce: &str, difficulty: u8) -> bool {
    !nonce.is_empty()
        && nonce.len() <= MAX_NONCE
        && nonce.bytes().all(|b| b.is_ascii_graphic())
        && hash(seed, nonce) >= u32::from(difficulty)
}

/// Finds a nonce (a decimal counter from 0), as the waiting page does.
pub fn solve(seed: &str, difficulty: u8) -> String {
    (0u64..)
        .map(|n| n.to_string())
        .find(|n| hash(seed, n) >= u32::from(difficulty))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_zero_bits_are_counted_across_bytes() {
        assert_eq!(leading_zeros(&[0, 0, 0x10, 0xff]), 19);
        assert_eq!(leading_zeros(&[0x80]), 0);
        assert_eq!(leading_zeros(&[0, 0]), 16);
    }

    #[test]
    fn a_solution_holds_for_its_seed_only() {
        let nonce = solve("seed-a", 12);
        assert!(solves("seed-a", &nonce, 12));
        // The waiting page's JavaScript hashes the same bytes.
        assert!(
            leading_zeros(digest(&SHA256, format!("seed-a:{nonce}").as_bytes()).as_ref()) >= 12
        );
        let elsewhere = (0..8).filter(|i| solves(&format!("seed-{i}"), &nonce, 12));
        assert_eq!(elsewhere.count(), 0, "a nonce is no key to other seeds");
        assert!(!solves("seed-a", "", 0));
        assert!(!solves("seed-a", "a b", 0));
        assert!(!solves("seed-a", &"1".repeat(65), 0));
    }
}
