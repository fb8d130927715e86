//! The waiting-room page: one self-contained HTML template (inline CSS and
//! JS, no external assets) in twelve languages, replaceable by the operator.
//!
//! A template is parsed once into text and placeholders, so rendering is a
//! single pass of appends. Every value is HTML-escaped. Placeholders are
//! listed in `docs/waiting-room.md`; an unknown one is an error at startup.

use std::path::Path;
use std::time::Duration;

use crate::store::Place;

mod language;

pub use language::Language;
use language::Texts;

/// The built-in template.
pub const BUILT_IN: &str = include_str!("waiting.html");

/// The script an app's own page includes to wait inside it
/// (`/__anteroom/client.js`).
pub const CLIENT_JS: &str = include_str!("client.js");

/// The script's entity tag, made once.
pub fn client_js_etag() -> &'static str {
    static ETAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ETAG.get_or_init(|| crate::response::etag(CLIENT_JS.as_bytes()))
}

/// A sessions room's page: its template and, when fixed, its language.
#[derive(Debug, Clone)]
pub struct Page {
    /// The template.
    pub template: Template,
    /// The configured language; `None` follows each browser's.
    pub language: Option<Language>,
}

impl Page {
    /// The language to show a visitor whose browser sent this `Accept-Language`.
    pub fn language_for(&self, accept_language: Option<&str>) -> Language {
        self.language
            .unwrap_or_else(|| Language::negotiate(accept_language))
    }
}

/// What the page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// In line.
    Queued,
    /// In line, admissions paused.
    Paused,
    /// The line is full: try later.
    Full,
    /// The room is closed for maintenance.
    Maintenance,
    /// The waiting room cannot take new visitors for a moment (store down).
    Unavailable,
    /// The browser does not send the waiting room's cookie back.
    NoCookies,
    /// Over a per-client limit: the page tries again after `poll`.
    Limited,
}

impl PageState {
    fn as_str(self) -> &'static str {
        match self {
            PageState::Queued => "queued",
            PageState::Paused => "paused",
            PageState::Full => "full",
            PageState::Maintenance => "maintenance",
            PageState::Unavailable => "unavailable",
            PageState::NoCookies => "no_cookies",
            PageState::Limited => "limited",
        }
    }
}

/// Everything a page shows.
#[derive(Debug, Clone)]
pub struct PageView<'a> {
    /// Room name.
    pub room: &'a str,
    /// What is happening.
    pub state: PageState,
    /// The visitor's place (absent for full and maintenance pages).
    pub place: Option<&'a Place>,
    /// How often the page asks for news.
    pub poll: Duration,
    /// Where it asks.
    pub status_url: &'a str,
    /// The visitor's ticket, sent with each poll.
    pub ticket: &'a str,
    /// The proof of work to do before the place counts: seed and difficulty.
    pub challenge: Option<(&'a str, u8)>,
    /// Page language.
    pub language: Language,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    Lang,
    Room,
    State,
    Position,
    Ahead,
    AheadAtJoin,
    QueueLength,
    Progress,
    Wait,
    WaitMs,
    PollMs,
    PollSeconds,
    Refresh,
    StatusUrl,
    Ticket,
    TTitle,
    THeading,
    TMessage,
    TPosition,
    TWait,
    TNote,
    TSoon,
    TWaitJsPrefix,
    TMinute,
    TMinutes,
    TUnitSep,
    TUnknownWait,
    TFirstEstimate,
    TRetry,
    TAdmitted,
    TPaused,
    TNoCookies,
    TNoCookiesHeading,
    ChallengeSeed,
    ChallengeDifficulty,
    TChecking,
}

const VARS: &[(&str, Var)] = &[
    ("lang", Var::Lang),
    ("room", Var::Room),
    ("state", Var::State),
    ("position", Var::Position),
    ("ahead", Var::Ahead),
    ("ahead_at_join", Var::AheadAtJoin),
    ("queue_length", Var::QueueLength),
    ("progress", Var::Progress),
    ("wait", Var::Wait),
    ("wait_ms", Var::WaitMs),
    ("poll_ms", Var::PollMs),
    ("poll_seconds", Var::PollSeconds),
    ("refresh", Var::Refresh),
    ("status_url", Var::StatusUrl),
    ("ticket", Var::Ticket),
    ("t_title", Var::TTitle),
    ("t_heading", Var::THeading),
    ("t_message", Var::TMessage),
    ("t_position", Var::TPosition),
    ("t_wait", Var::TWait),
    ("t_note", Var::TNote),
    ("t_soon", Var::TSoon),
    ("t_wait_js_prefix", Var::TWaitJsPrefix),
    ("t_minute", Var::TMinute),
    ("t_minutes", Var::TMinutes),
    ("t_unit_sep", Var::TUnitSep),
    ("t_unknown_wait", Var::TUnknownWait),
    ("t_first_estimate", Var::TFirstEstimate),
    ("t_retry", Var::TRetry),
    ("t_admitted", Var::TAdmitted),
    ("t_paused", Var::TPaused),
    ("t_no_cookies", Var::TNoCookies),
    ("t_no_cookies_heading", Var::TNoCookiesHeading),
    ("challenge_seed", Var::ChallengeSeed),
    ("challenge_difficulty", Var::ChallengeDifficulty),
    ("t_checking", Var::TChecking),
];

/// The placeholder names a template may use.
pub fn placeholders() -> impl Iterator<Item = &'static str> {
    VARS.iter().map(|(name, _)| *name)
}

#[derive(Debug, Clone)]
enum Segment {
    Text(String),
    Var(Var),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    segments: Vec<Segment>,
}

impl Template {
    /// The built-in page.
    pub fn built_in() -> Template {
        // The built-in template only uses known placeholders (tested).
        Template::parse(BUILT_IN).unwrap_or(Template {
            segments: Vec::new(),
        })
    }

    /// Reads an operator's template.
    pub fn load(path: &Path) -> Result<Template, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Template::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Splits `{{name}}` placeholders from text; unknown names are an error.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            segments.push(Segment::Text(rest[..start].to_owned()));
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| "a \"{{\" is never closed with \"}}\"".to_owned())?;
            let name = after[..end].trim();
            let var = VARS
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    format!(
                        "unknown placeholder {{{{{name}}}}}; known: {}",
                        placeholders().collect::<Vec<_>>().join(", ")
                    )
                })?;
            segments.push(Segment::Var(var));
            rest = &after[end + 2..];
        }
        segments.push(Segment::Text(rest.to_owned()));
        Ok(Template { segments })
    }

    /// The page for one visitor.
    pub fn render(&self, view: &PageView<'_>) -> String {
        let t = view.language.texts();
        let (heading, message) = match view.state {
            PageState::Queued => (t.queued_heading, t.queued),
            PageState::Paused => (t.queued_heading, t.paused),
            PageState::Full => (t.full_heading, t.full),
            PageState::Maintenance => (t.maintenance_heading, t.maintenance),
            PageState::Unavailable => (t.queued_heading, t.unavailable),
            PageState::NoCookies => (t.no_cookies_heading, t.no_cookies),
            PageState::Limited => (t.limited_heading, t.limited),
        };
        let place = view.place;
        // The share of the places ahead at arrival that have gone in: 0% for
        // whoever joined at place 1, and never 100% while still in line.
        let ahead = place.map_or(0, |p| p.ahead_told());
        let at_join = u64::from(place.map_or(0, |p| p.ahead_at_join).max(ahead)) + 1;
        let progress = (at_join - (u64::from(ahead) + 1)) * 100 / at_join;
        let wait_ms = place.map_or(Some(0), |p| p.wait.told());
        let mut out = String::with_capacity(BUILT_IN.len() + 512);
        for segment in &self.segments {
            let value: std::borrow::Cow<'_, str> = match segment {
                Segment::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Segment::Var(var) => match var {
                    Var::Lang => t.lang.into(),
                    Var::Room => view.room.into(),
                    Var::State => view.state.as_str().into(),
                    Var::Position => place.map_or(0, |p| p.position()).to_string().into(),
                    Var::Ahead => ahead.to_string().into(),
                    Var::AheadAtJoin => place.map_or(0, |p| p.ahead_at_join).to_string().into(),
                    Var::QueueLength => place.map_or(0, |p| p.queue_length).to_string().into(),
                    Var::Progress => progress.to_string().into(),
                    Var::Wait => match wait_ms {
                        None => t.unknown_wait.into(),
                        // Not measured yet: said so beside the number.
                        Some(ms) if place.is_some_and(|p| !p.wait.known) => {
                            format!("{} {}", human_wait(ms, t), t.first_estimate).into()
                        }
                        Some(ms) => human_wait(ms, t).into(),
                    },
                    Var::WaitMs => wait_ms.map_or(String::new(), |ms| ms.to_string()).into(),
                    Var::PollMs => view.poll.as_millis().to_string().into(),
                    Var::PollSeconds => view.poll.as_secs().max(1).to_string().into(),
                    // Without JavaScript the page asks again by reloading, at
                    // the status endpoint when it has one (it answers a
                    // browser that keeps no cookies without another reload).
                    Var::Refresh => match (view.state, view.status_url) {
                        (PageState::NoCookies, _) => "".into(),
                        (_, "") => view.poll.as_secs().max(1).to_string().into(),
                        (_, url) => format!("{};url={url}", view.poll.as_secs().max(1)).into(),
                    },
                    Var::StatusUrl => view.status_url.into(),
                    Var::Ticket => view.ticket.into(),
                    Var::TTitle => t.title.into(),
                    Var::THeading => heading.into(),
                    Var::TMessage => message.into(),
                    Var::TPosition => t.position.into(),
                    Var::TWait => t.wait.into(),
                    Var::TNote => t.note.into(),
                    Var::TSoon => t.soon.into(),
                    Var::TWaitJsPrefix => t.about.into(),
                    Var::TMinute => t.minute.into(),
                    Var::TMinutes => t.minutes.into(),
                    Var::TUnitSep => t.sep.into(),
                    Var::TUnknownWait => t.unknown_wait.into(),
                    Var::TFirstEstimate => t.first_estimate.into(),
                    Var::TRetry => t.retry.into(),
                    Var::TAdmitted => t.admitted.into(),
                    Var::TPaused => t.paused.into(),
                    Var::TNoCookies => t.no_cookies.into(),
                    Var::TNoCookiesHeading => t.no_cookies_heading.into(),
                    Var::ChallengeSeed => view.challenge.map_or("", |c| c.0).into(),
                    Var::ChallengeDifficulty => {
                        view.challenge.map_or(0, |c| c.1).to_string().into()
                    }
                    Var::TChecking => t.checking.into(),
                },
            };
            escape_into(&mut out, &value);
        }
        out
    }
}

/// "about 3 minutes", "less than a minute".
fn human_wait(ms: u64, t: &Texts) -> String {
    let minutes = (ms + 30_000) / 60_000;
    match minutes {
        0 => t.soon.to_owned(),
        1 => format!("{}1{}{}", t.about, t.sep, t.minute),
        n => format!("{}{n}{}{}", t.about, t.sep, t.minutes),
    }
}

fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Lane, Wait};

    #[test]
    fn built_in_template_parses() {
        assert!(Template::parse(BUILT_IN).is_ok());
    }

    #[test]
    fn unknown_placeholders_are_refused() {
        let err = Template::parse("<p>{{positon}}</p>").unwrap_err();
        assert!(err.contains("positon"), "{err}");
        assert!(Template::parse("{{position").is_err());
    }

    #[test]
    fn values_are_escaped() {
        let t = Template::parse("{{ticket}}").unwrap();
        let view = PageView {
            room: "r",
            state: PageState::Queued,
            place: None,
            poll: Duration::from_secs(5),
            status_url: "/",
            ticket: "<script>\"",
            challenge: None,
            language: Language::En,
        };
        assert_eq!(t.render(&view), "&lt;script&gt;&quot;");
    }

    #[test]
    fn every_language_has_every_sentence() {
        for lang in Language::ALL {
            let t = lang.texts();
            assert_eq!(Language::parse(t.lang), Some(lang));
            for text in [
                t.title,
                t.queued_heading,
                t.queued,
                t.paused,
                t.full_heading,
                t.full,
                t.maintenance_heading,
                t.maintenance,
                t.unavailable,
                t.position,
                t.wait,
                t.note,
                t.soon,
                t.about,
                t.minute,
                t.minutes,
                t.retry,
                t.admitted,
                t.no_cookies_heading,
                t.no_cookies,
                t.limited_heading,
                t.limited,
                t.checking,
                t.unknown_wait,
                t.first_estimate,
            ] {
                assert!(!text.trim().is_empty(), "{}: an empty sentence", t.lang);
            }
        }
    }

    #[test]
    fn language_from_accept_language() {
        let pick = |h| Language::negotiate(Some(h));
        assert_eq!(pick("de-DE,de;q=0.9,en;q=0.8"), Language::De);
        assert_eq!(pick("fr, en;q=0.5, de;q=0.4"), Language::Fr);
        assert_eq!(pick("ru, en;q=0.5, de;q=0.4"), Language::En);
        assert_eq!(pick("DE"), Language::De);
        assert_eq!(pick("pt-BR,pt;q=0.9"), Language::Pt);
        assert_eq!(pick("zh-CN"), Language::Zh);
        assert_eq!(pick("ko, ja;q=0.8"), Language::Ja);
        assert_eq!(Language::negotiate(None), Language::En);
        let fixed = Page {
            template: Template::built_in(),
            language: Some(Language::De),
        };
        assert_eq!(fixed.language_for(Some("en")), Language::De);
        assert_eq!(Language::parse("de"), Some(Language::De));
        assert_eq!(Language::parse("xx"), None);
    }

    #[test]
    fn human_waits() {
        let t = |l: Language| l.texts();
        assert_eq!(human_wait(10_000, t(Language::En)), "less than a minute");
        assert_eq!(human_wait(70_000, t(Language::En)), "about 1 minute");
        assert_eq!(human_wait(185_000, t(Language::De)), "etwa 3 Minuten");
        assert_eq!(human_wait(185_000, t(Language::Ja)), "約3分");
        assert_eq!(human_wait(185_000, t(Language::Pl)), "około 3 minut");
    }

    #[test]
    fn progress_from_place() {
        let place = Place {
            ticket: "t".into(),
            joined: 0,
            confirmed: true,
            lane: Lane::Normal,
            ahead: 5,
            unconfirmed_ahead: 0,
            ahead_at_join: 20,
            queue_length: 30,
            available: 0,
            wait: Wait {
                ms: 0,
                known: false,
            },
            state: crate::config::State::Active,
        };
        let t = Template::parse("{{progress}}|{{position}}").unwrap();
        let view = PageView {
            room: "r",
            state: PageState::Queued,
            place: Some(&place),
            poll: Duration::from_secs(5),
            status_url: "/",
            ticket: "",
            challenge: None,
            language: Language::En,
        };
        // 21 places at arrival, 6 now: 15 of 21 have gone in.
        assert_eq!(t.render(&view), "71|6");
        // A wait not measured yet says so; a measured one does not.
        let wait = Template::parse("{{wait}}").unwrap();
        let mut told = place.clone();
        told.wait = Wait {
            ms: 185_000,
            known: false,
        };
        let view = PageView {
            place: Some(&told),
            ..view
        };
        assert_eq!(wait.render(&view), "about 3 minutes (a first estimate)");
        let mut known = told.clone();
        known.wait.known = true;
        let view = PageView {
            place: Some(&known),
            ..view
        };
        assert_eq!(wait.render(&view), "about 3 minutes");
    }
}
