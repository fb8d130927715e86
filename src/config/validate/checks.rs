//! The list of problems every check adds to, and the checks more than one
//! section uses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::file::RulesFile;
use crate::config::{Problem, Rules, Secret, is_name};

/// How long a ticket lives unless `[tokens] ticket_ttl` says otherwise.
pub(super) const DEFAULT_TICKET_TTL: Duration = Duration::from_secs(1800);

/// Longest duration any key takes: beyond it a value is surely a mistake,
/// and arithmetic on it could overflow.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Largest file a key may name (keys, templates, CA bundles, secrets).
pub(super) const MAX_FILE_BYTES: u64 = 1 << 20;

/// Collects problems while the rest of the file is still checked.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<Problem>);

impl Problems {
    pub(super) fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }

    /// A duration that must be longer than zero, `default` if not given.
    pub(super) fn positive(
        &mut self,
        key: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Duration {
        let d = self.duration(key, value.as_deref(), default);
        if d.is_zero() {
            self.add(key, "must be longer than 0");
        }
        d
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value {
            None => default,
            Some(text) => match humantime::parse_duration(text) {
                Ok(d) if d > MAX_DURATION => {
                    self.add(
                        key,
                        format!(
                            "{text:?} is longer than {}d, the longest any duration may be",
                            MAX_DURATION.as_secs() / 86_400
                        ),
                    );
                    default
                }
                Ok(d) => d,
                Err(e) => {
                    self.add(
                        key,
                        format!("cannot parse {text:?} as a duration ({e}); write e.g. \"250ms\", \"10s\", \"5m\""),
                    );
                    default
                }
            },
        }
    }

    pub(super) fn socket_addr(&mut self, key: &str, text: &str) -> Option<SocketAddr> {
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => {
                self.add(key, format!("{text:?} has port 0; give a fixed port"));
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                self.add(
                    key,
                    format!("{text:?} is not an IP:port address (e.g. \"127.0.0.1:8080\" or \"[::]:8080\")"),
                );
                None
            }
        }
    }

    pub(super) fn int_in(&mut self, key: &str, value: i64, min: i64, max: i64) -> Option<i64> {
        if value < min {
            self.add(key, format!("must be at least {min}, got {value}"));
            None
        } else if value > max {
            self.add(key, format!("must be at most {max}, got {value}"));
            None
        } else {
            Some(value)
        }
    }

    pub(super) fn name(&mut self, key: &str, name: &str) {
        if !is_name(name) {
            self.add(
                key,
                format!(
                    "{name:?} is not a valid name: use 1 to 64 letters, digits, '-', '_' or '.'"
                ),
            );
        }
    }

    /// A file the config names, which must be a regular file of at most
    /// `MAX_FILE_BYTES` (a device such as `/dev/zero` would never end).
    pub(super) fn readable_file(&mut self, key: &str, path: &str) -> PathBuf {
        if let Err(message) = regular_file(Path::new(path), MAX_FILE_BYTES) {
            self.add(key, message);
        }
        PathBuf::from(path)
    }

    /// A secret kept in a file of its own (`token_file`, `password_file`,
    /// `secret_file`), without the line end an editor adds.
    pub(super) fn secret_file(&mut self, key: &str, path: &str) -> Option<String> {
        let read = regular_file(Path::new(path), MAX_FILE_BYTES).and_then(|()| {
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"))
        });
        match read {
            Ok(text) => Some(text.trim().to_owned()),
            Err(message) => {
                self.add(key, message);
                None
            }
        }
    }

    /// A value given inline or in a file, not both.
    /// A secret given inline as `key` or in the file named by `key_file`
    /// (not both).
    pub(super) fn secret(
        &mut self,
        key: &str,
        inline: &Option<String>,
        file: &Option<String>,
    ) -> Option<Secret> {
        let file_key = format!("{key}_file");
        match (inline, file) {
            (Some(_), Some(_)) => {
                let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_owned();
                self.add(
                    key,
                    format!("give either {} or {}, not both", last(key), last(&file_key)),
                );
                None
            }
            (Some(value), None) => Some(Secret(value.clone())),
            (None, Some(path)) => self.secret_file(&file_key, path).map(Secret),
            (None, None) => None,
        }
    }
}

/// Whether `path` is a regular file of at most `max` bytes; the message says why not.
pub(super) fn regular_file(path: &Path, max: u64) -> Result<(), String> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) => Err(format!("cannot read \"{shown}\": {e}")),
        Ok(m) if !m.is_file() => Err(format!("\"{shown}\" is not a regular file")),
        Ok(m) if m.len() > max => Err(format!(
            "\"{shown}\" is {} bytes; at most {max} are read",
            m.len()
        )),
        Ok(_) => Ok(()),
    }
}

pub(super) fn cidr(p: &mut Problems, key: &str, text: &str) -> Option<ipnet::IpNet> {
    let parsed = text
        .parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
    match parsed {
        Ok(net) => Some(net.trunc()),
        Err(_) => {
            p.add(
                key,
                format!("{text:?} is not an IP network (e.g. \"10.0.0.0/8\" or \"2001:db8::/32\")"),
            );
            None
        }
    }
}

pub(super) fn rules(
    p: &mut Problems,
    key: &str,
    r: Option<&RulesFile>,
    jwts: &HashMap<String, usize>,
) -> Rules {
    let Some(r) = r else {
        return Rules::default();
    };
    for (i, path) in r.paths.iter().enumerate() {
        if !path.starts_with('/') {
            p.add(
                format!("{key}.paths[{i}]"),
                format!("{path:?} must start with '/'"),
            );
        }
    }
    let jwt = r.jwt.as_ref().and_then(|name| {
        let found = jwts.get(name).copied();
        if found.is_none() {
            p.add(
                format!("{key}.jwt"),
                format!("unknown [[jwt]] {name:?} (known: {})", known(jwts)),
            );
        }
        found
    });
    Rules {
        paths: r.paths.clone(),
        cidrs: r
            .cidrs
            .iter()
            .enumerate()
            .filter_map(|(i, c)| cidr(p, &format!("{key}.cidrs[{i}]"), c))
            .collect(),
        jwt,
    }
}

pub(super) fn known(names: &HashMap<String, usize>) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    let mut v: Vec<_> = names.iter().collect();
    v.sort_by_key(|(_, i)| **i);
    v.iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn index_by_name<'a>(
    p: &mut Problems,
    kind: &str,
    names: impl Iterator<Item = &'a String>,
) -> HashMap<String, usize> {
    let mut index = HashMap::new();
    for (i, name) in names.enumerate() {
        if let Some(first) = index.insert(name.clone(), i) {
            p.add(
                format!("{kind}[{i}].name"),
                format!("duplicate name {name:?}, already used by {kind}[{first}]"),
            );
            index.insert(name.clone(), first);
        }
    }
    index
}
