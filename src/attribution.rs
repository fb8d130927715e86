//! Campaign attribution: the UTM parameters (and ad click ids) of a visitor's
//! first request, kept with their ticket or pass on the server and passed
//! upstream with every forwarded request.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::Attribution;

/// Longest value kept; longer ones are cut (they are labels, not payloads).
const MAX_VALUE: usize = 200;

/// Whether a request's campaign may be recorded and passed on: always when
/// the site asks for no consent, else when its consent cookie holds one of
/// the values that mean consent (any value when none are listed).
pub fn consents(attribution: &Attribution, req: &pingora::http::RequestHeader) -> bool {
    let Some(consent) = &attribution.consent else {
        return true;
    };
    crate::request::cookies::values(req, &consent.cookie).any(|value| {
        !value.is_empty()
            && (consent.values.is_empty() || consent.values.iter().any(|v| v == value))
    })
}

/// The campaign a visitor came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Utm {
    /// `utm_source`, e.g. `meta`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `utm_medium`, e.g. `cpc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// `utm_campaign`, e.g. `launch1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    /// `utm_term`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
    /// `utm_content`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Google Ads click id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gclid: Option<String>,
    /// Meta click id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbclid: Option<String>,
}

impl Utm {
    /// The campaign parameters of a query string, if it has any.
    pub fn from_query(query: Option<&str>) -> Option<Arc<Utm>> {
        let query = query?;
        if !query.contains("utm_") && !query.contains("clid=") {
            return None;
        }
        let mut utm = Utm::default();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            let slot = match key.as_ref() {
                "utm_source" => &mut utm.source,
                "utm_medium" => &mut utm.medium,
                "utm_campaign" => &mut utm.campaign,
                "utm_term" => &mut utm.term,
                "utm_content" => &mut utm.content,
                "gclid" => &mut utm.gclid,
                "fbclid" => &mut utm.fbclid,
                _ => continue,
            };
            let clean: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_VALUE)
                .collect();
            if slot.is_none() && !clean.is_empty() {
                *slot = Some(clean);
            }
        }
        (utm != Utm::default()).then(|| Arc::new(utm))
    }

    /// The `X-Anteroom-Utm-*` headers for the upstream. Values are
    /// percent-encoded where they are not plain visible ASCII.
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        [
            ("x-anteroom-utm-source", &self.source),
            ("x-anteroom-utm-medium", &self.medium),
            ("x-anteroom-utm-campaign", &self.campaign),
            ("x-anteroom-utm-term", &self.term),
            ("x-anteroom-utm-content", &self.content),
            ("x-anteroom-gclid", &self.gclid),
            ("x-anteroom-fbclid", &self.fbclid),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, header_safe(value.as_deref()?))))
    }
}

/// `utm_source` of a visitor, for log lines.
pub fn source(utm: Option<&Utm>) -> Option<&str> {
    utm.and_then(|u| u.source.as_deref())
}

/// `utm_campaign` of a visitor, for log lines.
pub fn campaign(utm: Option<&Utm>) -> Option<&str> {
    utm.and_then(|u| u.campaign.as_deref())
}

fn header_safe(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Maps campaign values to metric labels, keeping cardinality bounded:
/// values outside the configured allowlists count as `other`, none as `none`.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    sources: Vec<String>,
    campaigns: Vec<String>,
}

impl Labels {
    /// Labels from `[attribution]`.
    pub fn new(config: &Attribution) -> Labels {
        Labels {
            sources: config.sources.clone(),
            campaigns: config.campaigns.clone(),
        }
    }

    /// `(source, campaign)` labels for a visitor.
    pub fn of<'a>(&'a self, utm: Option<&'a Utm>) -> (&'a str, &'a str) {
        let pick = |allowed: &'a [String], value: Option<&'a String>| match value {
            None => "none",
            Some(v) if allowed.iter().any(|a| a == v) => v.as_str(),
            Some(_) => "other",
        };
        (
            pick(&self.sources, utm.and_then(|u| u.source.as_ref())),
            pick(&self.campaigns, utm.and_then(|u| u.campaign.as_ref())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_campaign_parameters() {
        let utm = Utm::from_query(Some(
            "a=1&utm_source=meta&utm_campaign=Frühling%20launch&fbclid=IwAR1&utm_source=x",
        ))
        .unwrap();
        assert_eq!(utm.source.as_deref(), Some("meta"));
        assert_eq!(utm.campaign.as_deref(), Some("Frühling launch"));
        assert_eq!(utm.fbclid.as_deref(), Some("IwAR1"));
        let headers: Vec<_> = utm.headers().collect();
        assert!(headers.contains(&("x-anteroom-utm-campaign", "Fr%C3%BChling launch".to_owned())));
        assert!(Utm::from_query(Some("q=shoes")).is_none());
        assert!(Utm::from_query(None).is_none());
        assert!(Utm::from_query(Some("utm_source=")).is_none());
    }

    #[test]
    fn consent_is_the_cookie_with_a_value_that_means_it() {
        let mut req = pingora::http::RequestHeader::build("GET", b"/", None).unwrap();
        let site = |values: &[&str]| Attribution {
            sources: vec![],
            campaigns: vec![],
            consent: Some(crate::config::Consent {
                cookie: "cmp".into(),
                values: values.iter().map(|v| v.to_string()).collect(),
            }),
        };
        let none = Attribution {
            sources: vec![],
            campaigns: vec![],
            consent: None,
        };
        assert!(consents(&none, &req), "no consent asked for: always");
        assert!(!consents(&site(&[]), &req), "no cookie: no consent");
        req.insert_header("cookie", "other=1; cmp=necessary")
            .unwrap();
        assert!(consents(&site(&[]), &req), "any value, none listed");
        assert!(!consents(&site(&["all", "marketing"]), &req));
        req.insert_header("cookie", "cmp=marketing").unwrap();
        assert!(consents(&site(&["all", "marketing"]), &req));
    }

    #[test]
    fn labels_are_bounded() {
        let labels = Labels::new(&Attribution {
            sources: vec!["meta".into()],
            campaigns: vec![],
            consent: None,
        });
        let utm = Utm {
            source: Some("meta".into()),
            campaign: Some("x".into()),
            ..Utm::default()
        };
        assert_eq!(labels.of(Some(&utm)), ("meta", "other"));
        assert_eq!(labels.of(None), ("none", "none"));
    }
}
