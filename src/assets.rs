//! What a configuration's files hold, loaded once: the keys that sign and
//! verify passes and tickets, the keys of the app's own tokens, and each
//! waiting room's page. `anteroom check` and `anteroom run` both load them
//! here, so a broken key or template is reported the same way by both,
//! naming its key, before anything listens.

use std::sync::Arc;

use crate::bypass::AppJwt;
use crate::codes::CodeBook;
use crate::config::{Config, ConfigError, Problem};
use crate::page::{Language, Page, Template};
use crate::token::{SigningKey, Tokens, VerifyKey};

/// Everything loaded from the files a config names.
pub struct Assets {
    /// Signs and verifies passes and tickets (`[tokens]`).
    pub tokens: Option<Arc<Tokens>>,
    /// Verifiers of the app's tokens, by `Config::jwts` index.
    pub jwts: Arc<Vec<AppJwt>>,
    /// The page of each room, by `Config::rooms` index (`None`: a requests room).
    pub pages: Vec<Option<Page>>,
    /// The code books of each room (`[[room.codes]]`), by `Config::rooms` index.
    pub codes: Vec<Vec<Arc<CodeBook>>>,
}

impl Assets {
    /// Loads every file; all problems are reported at once, with their keys.
    pub fn load(config: &Config) -> Result<Assets, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: String, message: String| problems.push(Problem { key, message });

        let tokens = config.tokens.as_ref().and_then(|t| {
            let signer = SigningKey::load(&t.signing_key)
                .map_err(|e| problem("tokens.signing_key".to_owned(), e.to_string()))
                .ok()?;
            let mut verify = Vec::with_capacity(t.verify_keys.len());
            for (i, (path, kid)) in t.verify_keys.iter().enumerate() {
                match VerifyKey::load(path, kid.as_deref()) {
                    Ok(key) => verify.push(key),
                    Err(e) => problem(format!("tokens.verify_keys[{i}]"), e.to_string()),
                }
            }
            (verify.len() == t.verify_keys.len()).then(|| {
                Arc::new(Tokens::new(
                    &t.issuer,
                    signer.with_kid(t.signing_kid.clone()),
                    verify,
                    t.cache_size,
                ))
            })
        });

        let jwts = config
            .jwts
            .iter()
            .enumerate()
            .filter_map(|(i, j)| {
                AppJwt::new(j)
                    .map_err(|e| problem(format!("jwt[{i}].public_key"), e))
                    .ok()
            })
            .collect();

        let pages = config
            .rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                let s = room.sessions()?;
                let template = match &s.page_template {
                    None => Template::built_in(),
                    Some(path) => Template::load(path)
                        .map_err(|e| problem(format!("room[{i}].page_template"), e))
                        .ok()?,
                };
                let language = match s.language.as_deref() {
                    None => None,
                    Some(code) => Some(Language::parse(code).or_else(|| {
                        let known: Vec<&str> = Language::ALL.iter().map(|l| l.code()).collect();
                        problem(
                            format!("room[{i}].language"),
                            format!(
                                "{code:?} is not a page language: use \"auto\" or one of {}",
                                known.join(", ")
                            ),
                        );
                        None
                    })?),
                };
                Some(Page { template, language })
            })
            .collect();

        let codes = config
            .rooms
            .iter()
            .enumerate()
            .map(|(i, room)| {
                let Some(s) = room.sessions() else {
                    return Vec::new();
                };
                s.codes
                    .iter()
                    .enumerate()
                    .filter_map(|(j, c)| {
                        let key = format!("room[{i}].codes[{j}].file");
                        let text = std::fs::read_to_string(&c.file)
                            .map_err(|e| problem(key.clone(), format!("{}: {e}", c.file.display())))
                            .ok()?;
                        CodeBook::parse(c, &text)
                            .map_err(|e| problem(key, format!("{}: {e}", c.file.display())))
                            .ok()
                            .map(Arc::new)
                    })
                    .collect()
            })
            .collect();

        // Launches and codes are checked in full (above and in the config),
        // but this version does not run them yet: a room would silently
        // ignore them, so the config is refused instead.
        for (i, s) in config
            .rooms
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.sessions()?)))
        {
            for (key, given) in [
                ("event", !s.launches.is_empty()),
                ("codes", !s.codes.is_empty()),
                ("invite_only", s.invite_only),
            ] {
                if given {
                    problems.push(Problem {
                        key: format!("room[{i}].{key}"),
                        message: "launches, codes and invite-only rooms are checked but not yet run by this version; remove it until they are".to_owned(),
                    });
                }
            }
        }

        if problems.is_empty() {
            Ok(Assets {
                tokens,
                jwts: Arc::new(jwts),
                pages,
                codes,
            })
        } else {
            Err(ConfigError::Invalid {
                path: config.origin.clone(),
                problems,
            })
        }
    }
}
