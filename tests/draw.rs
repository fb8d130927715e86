//! A launch's draw checked from outside, as a visitor, a journalist or a
//! regulator would: `anteroom verify-draw` and the standalone Python
//! verifier of docs/tools/verify_draw.py (standard library only) accept a
//! published draw and reject a changed seed, a changed order, a changed
//! public value and an entrant left out, on a seeded family of draws.

use std::path::{Path, PathBuf};
use std::process::Command;

use anteroom::draw::{self, Digest, Published, hex};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How each verifier judged one file: `(anteroom verify-draw, Python)`.
fn judged(file: &Path, entrants: &[String]) -> (bool, bool) {
    let mut ours = Command::new(env!("CARGO_BIN_EXE_anteroom"));
    ours.arg("verify-draw").arg(file);
    for e in entrants {
        ours.arg("--entrant").arg(e);
    }
    let ours = ours.output().unwrap();
    let python = Command::new("python3")
        .arg("docs/tools/verify_draw.py")
        .arg(file)
        .args(entrants)
        .output()
        .unwrap();
    (ours.status.success(), python.status.success())
}

/// The tests' pass key as anteroom signs with it, and its JWKS written to
/// `dir` (what `/.well-known/jwks.json` serves).
fn signer(dir: &Path) -> (anteroom::token::Tokens, PathBuf) {
    use anteroom::token::{SigningKey, Tokens};
    let key = SigningKey::load(&crate::common::keys().private).unwrap();
    let tokens = Tokens::new("anteroom", key, Vec::new(), 16);
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, tokens.jwks()).unwrap();
    (tokens, jwks)
}

fn write(dir: &Path, name: &str, draw: &Published) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string_pretty(draw).unwrap()).unwrap();
    path
}

#[test]
fn both_verifiers_accept_a_draw_and_catch_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(28);
    for round in 0..8 {
        let n = rng.gen_range(2..300);
        let tickets: Vec<String> = (0..n)
            .map(|i| format!("t{round}-{i}-{}", rng.r#gen::<u64>()))
            .collect();
        let entrants: Vec<Digest> = tickets
            .iter()
            .map(|t| draw::entrant("spring-drop", t))
            .collect();
        let seed: Digest = rng.r#gen();
        let public: Vec<u8> = if round % 2 == 0 {
            rng.r#gen::<[u8; 32]>().to_vec()
        } else {
            Vec::new()
        };
        let published = Published::new("web", "spring-drop", &seed, &public, &entrants);
        let receipts: Vec<String> = entrants.iter().map(|e| hex(e)).collect();

        let good = write(dir.path(), "good.json", &published);
        assert_eq!(
            judged(&good, &receipts),
            (true, true),
            "round {round}: a true draw"
        );

        let mut seed2 = seed;
        seed2[rng.gen_range(0..32)] ^= 1;
        let changed_seed = Published {
            seed: hex(&seed2),
            ..published.clone()
        };
        let f = write(dir.path(), "seed.json", &changed_seed);
        assert_eq!(
            judged(&f, &[]),
            (false, false),
            "round {round}: a changed seed"
        );

        let mut swapped = published.clone();
        let i = rng.gen_range(0..n - 1);
        swapped.line.swap(i, i + 1);
        let f = write(dir.path(), "order.json", &swapped);
        assert_eq!(
            judged(&f, &[]),
            (false, false),
            "round {round}: two places swapped"
        );

        let other_public = Published {
            public: hex(b"another round"),
            ..published.clone()
        };
        let f = write(dir.path(), "public.json", &other_public);
        assert_eq!(
            judged(&f, &[]),
            (false, false),
            "round {round}: another public value"
        );

        let mut dropped = published.clone();
        let gone = dropped.line.remove(rng.gen_range(0..n));
        let f = write(dir.path(), "dropped.json", &dropped);
        assert_eq!(
            judged(&f, &[]),
            (true, true),
            "round {round}: the rest is in order"
        );
        assert_eq!(
            judged(&f, std::slice::from_ref(&gone)),
            (false, false),
            "round {round}: the left-out entrant's receipt finds it missing"
        );
    }
}

/// A receipt checked as an outsider would: with PyJWT, against the JWKS
/// anteroom publishes, and nothing else of anteroom's; a forged one is
/// refused.
#[test]
fn a_receipt_verifies_against_the_jwks() {
    use anteroom::draw::Receipt;
    let dir = tempfile::tempdir().unwrap();
    let (tokens, jwks) = signer(dir.path());
    let receipt = Receipt::new(
        "web",
        "spring-drop",
        &[3; 32],
        "ticket-42",
        1_767_225_600_000,
    );
    let signed = tokens.sign_document(&receipt);
    let mut parts: Vec<String> = signed.split('.').map(str::to_owned).collect();
    parts[1] = parts[1].replacen('e', "f", 1);
    let forged = parts.join(".");
    let check = |token: &str| {
        Command::new("python3")
            .arg("-c")
            .arg(
                "import json, sys, jwt\n\
                 jwks = jwt.PyJWKSet.from_json(open(sys.argv[1]).read())\n\
                 kid = jwt.get_unverified_header(sys.argv[2])['kid']\n\
                 key = next(k for k in jwks.keys if k.key_id == kid)\n\
                 claims = jwt.decode(sys.argv[2], key.key, algorithms=['RS256'], options={'verify_aud': False})\n\
                 print(claims['entrant'])",
            )
            .arg(&jwks)
            .arg(token)
            .output()
            .expect("python3 with PyJWT (./scripts/setup installs it)")
    };
    let out = check(&signed);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), receipt.entrant);
    assert_eq!(
        receipt.entrant,
        hex(&draw::entrant("spring-drop", "ticket-42"))
    );
    assert!(
        !check(&forged).status.success(),
        "a forged receipt was accepted"
    );
}

/// `anteroom verify-draw --receipt --jwks`: a visitor's signed receipt is
/// checked against the JWKS and found in the line; a forged receipt, one of
/// another commitment and one left out of the line are refused.
#[test]
fn verify_draw_checks_receipts_against_the_jwks() {
    use anteroom::draw::Receipt;
    let dir = tempfile::tempdir().unwrap();
    let (tokens, jwks) = signer(dir.path());
    let seed = [5u8; 32];
    let commitment = draw::commitment(&seed);
    let tickets: Vec<String> = (0..20).map(|i| format!("ticket-{i}")).collect();
    let entrants: Vec<Digest> = tickets.iter().map(|t| draw::entrant("drop", t)).collect();
    let published = Published::new("web", "drop", &seed, b"", &entrants[..19]);
    let file = write(dir.path(), "draw.json", &published);
    let receipt = |ticket: &str, commitment: &Digest| {
        let signed = tokens.sign_document(&Receipt::new("web", "drop", commitment, ticket, 1));
        let path = dir
            .path()
            .join(format!("{ticket}-{}.jws", hex(&commitment[..2])));
        std::fs::write(&path, signed).unwrap();
        path
    };
    let run = |receipt: &Path| {
        Command::new(env!("CARGO_BIN_EXE_anteroom"))
            .arg("verify-draw")
            .arg(&file)
            .arg("--jwks")
            .arg(&jwks)
            .arg("--receipt")
            .arg(receipt)
            .output()
            .unwrap()
    };
    let good = run(&receipt("ticket-3", &commitment));
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let position = published.find(&entrants[3]).unwrap();
    assert!(
        String::from_utf8_lossy(&good.stdout).contains(&format!("at position {position}")),
        "{}",
        String::from_utf8_lossy(&good.stdout)
    );
    let forged = receipt("ticket-4", &commitment);
    let text = std::fs::read_to_string(&forged).unwrap();
    let mut parts: Vec<&str> = text.split('.').collect();
    let other = tokens.sign_document(&Receipt::new("web", "drop", &commitment, "ticket-5", 1));
    parts[1] = other.split('.').nth(1).unwrap();
    std::fs::write(&forged, parts.join(".")).unwrap();
    assert!(
        !run(&forged).status.success(),
        "a forged receipt was accepted"
    );
    assert!(
        !run(&receipt("ticket-3", &draw::commitment(&[6; 32])))
            .status
            .success(),
        "a receipt of another commitment was accepted"
    );
    assert!(
        !run(&receipt("ticket-19", &commitment)).status.success(),
        "a receipt left out of the line was accepted"
    );
}
