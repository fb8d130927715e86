//! `[attribution]`: which campaign parameters are kept.

use super::checks::Problems;
use crate::config::file::AttributionFile;
use crate::config::{Attribution, Consent};

const MAX_ATTRIBUTION_VALUES: usize = 100;

pub(super) fn attribution(p: &mut Problems, a: &AttributionFile) -> Attribution {
    for (field, values) in [("sources", &a.sources), ("campaigns", &a.campaigns)] {
        if values.len() > MAX_ATTRIBUTION_VALUES {
            p.add(
                format!("attribution.{field}"),
                format!(
                    "at most {MAX_ATTRIBUTION_VALUES} values (each is a metric label), got {}",
                    values.len()
                ),
            );
        }
        if values.iter().any(|v| v.is_empty() || v == "other") {
            p.add(
                format!("attribution.{field}"),
                "values must not be empty or \"other\"",
            );
        }
    }
    let token = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let consent = match (&a.consent_cookie, &a.consent_values) {
        (None, None) => None,
        (None, Some(_)) => {
            p.add(
                "attribution.consent_values",
                "only applies with consent_cookie",
            );
            None
        }
        (Some(cookie), values) => {
            if !token(cookie) {
                p.add(
                    "attribution.consent_cookie",
                    format!("{cookie:?} is not a cookie name"),
                );
            }
            let values = values.clone().unwrap_or_default();
            if values.iter().any(|v| v.is_empty() || v.len() > 200) {
                p.add(
                    "attribution.consent_values",
                    "values must be 1 to 200 characters",
                );
            }
            Some(Consent {
                cookie: cookie.clone(),
                values,
            })
        }
    };
    Attribution {
        sources: a.sources.clone(),
        campaigns: a.campaigns.clone(),
        consent,
    }
}
