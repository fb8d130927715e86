//! Invite and priority codes (`[[room.codes]]`): each file holds the
//! SHA-256 digests of its codes, one per line in hex, so that the file (and
//! anything that reads it) holds no code. A code a visitor enters is hashed
//! and looked up; the code itself is never kept or logged.

use std::collections::HashSet;

use aws_lc_rs::digest::{SHA256, digest as sha256};

use crate::config::{CodeLane, Codes};

/// The digest of a code: what the file holds and what is looked up.
pub type CodeDigest = [u8; 32];

/// One file of codes, loaded.
#[derive(Debug, Clone)]
pub struct CodeBook {
    /// What a code does for its holder.
    pub lane: CodeLane,
    /// How many times each code may be used.
    pub uses: u32,
    digests: HashSet<CodeDigest>,
}

/// A line of a codes file that is not a digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct BadLine {
    /// Its number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub message: String,
}

impl CodeBook {
    /// The codes of `text` (the file's content): one lower- or upper-case
    /// hex SHA-256 digest per line; blank lines and `#` comments are
    /// skipped. The first bad line is named.
    pub fn parse(settings: &Codes, text: &str) -> Result<CodeBook, BadLine> {
        let mut digests = HashSet::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let digest = parse_digest(line).ok_or_else(|| BadLine {
                line: i + 1,
                message:
                    "not a SHA-256 digest (64 hex digits); the file holds digests, never codes"
                        .to_owned(),
            })?;
            digests.insert(digest);
        }
        Ok(CodeBook {
            lane: settings.lane,
            uses: settings.uses,
            digests,
        })
    }

    /// Whether `code` (as the visitor entered it) is one of this book's.
    pub fn holds(&self, code: &str) -> Option<CodeDigest> {
        let digest = digest(code);
        self.digests.contains(&digest).then_some(digest)
    }

    /// How many codes it holds.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// The digest of a code as entered: surrounding spaces are not part of it.
pub fn digest(code: &str) -> CodeDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(sha256(&SHA256, code.trim().as_bytes()).as_ref());
    out
}

fn parse_digest(hex: &str) -> Option<CodeDigest> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Codes {
        Codes {
            file: "codes.sha256".into(),
            lane: CodeLane::Priority,
            uses: 1,
        }
    }

    fn hex(d: CodeDigest) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn a_book_holds_the_codes_whose_digests_it_lists() {
        let text = format!(
            "# the spring drop\n{}\n\n  {}  \n",
            hex(digest("VIP-1")),
            hex(digest("VIP-2")).to_uppercase()
        );
        let book = CodeBook::parse(&settings(), &text).unwrap();
        assert_eq!(book.len(), 2);
        assert!(book.holds("VIP-1").is_some());
        assert!(book.holds(" VIP-2 ").is_some(), "spaces around a code");
        assert!(book.holds("VIP-3").is_none());
        assert!(
            book.holds(&hex(digest("VIP-1"))).is_none(),
            "a digest is no code"
        );
    }

    #[test]
    fn a_bad_line_is_named() {
        let text = format!("{}\nVIP-1\n", hex(digest("a")));
        let err = CodeBook::parse(&settings(), &text).unwrap_err();
        assert_eq!(err.line, 2);
        let text = format!("{}\n{}\n", hex(digest("a")), &hex(digest("b"))[..63]);
        assert_eq!(CodeBook::parse(&settings(), &text).unwrap_err().line, 2);
    }
}
