//! A visitor of a waiting room as an API client would be: it keeps the
//! ticket and pass it is given and sends them back in headers.

use reqwest::{Method, Response, StatusCode};
use serde_json::Value;

use super::client;

/// One visitor with its own tokens.
pub struct Visitor {
    base: String,
    http: reqwest::Client,
    pub ticket: Option<String>,
    pub pass: Option<String>,
    /// The last JSON body anteroom answered with.
    pub last: Value,
}

/// The value of a `Set-Cookie` header for `name`, if set (empty when cleared).
pub fn set_cookie(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let (k, rest) = v.split_once('=')?;
            (k == name).then(|| rest.split(';').next().unwrap_or_default().to_owned())
        })
}

impl Visitor {
    pub fn new(base: String) -> Visitor {
        Visitor {
            base,
            http: client(),
            ticket: None,
            pass: None,
            last: Value::Null,
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(t) = &self.ticket {
            req = req.header("x-anteroom-ticket", t);
        }
        if let Some(p) = &self.pass {
            req = req.header("x-anteroom-pass", p);
        }
        req
    }

    /// Remembers the tokens a response hands out: a ticket while queued, a
    /// pass once admitted; a 503 means any pass it sent is no good.
    async fn absorb(&mut self, resp: Response) -> (StatusCode, Value) {
        let status = resp.status();
        let pass_cookie = set_cookie(&resp, "anteroom_pass");
        let ticket_cookie = set_cookie(&resp, "anteroom_ticket");
        let is_json = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let body = if is_json {
            resp.json().await.unwrap_or(Value::Null)
        } else {
            Value::Null
        };
        if body["code"] == "QUEUE_REQUIRED" {
            self.pass = None;
        }
        if let Some(pass) = pass_cookie {
            self.pass = (!pass.is_empty()).then_some(pass);
        }
        if let Some(ticket) = ticket_cookie {
            self.ticket = (!ticket.is_empty()).then_some(ticket);
        }
        if let Some(t) = body["ticket"].as_str() {
            self.ticket = Some(t.to_owned());
        }
        match body["state"].as_str() {
            Some("admitted") => {
                self.pass = body["pass"].as_str().map(str::to_owned);
                self.ticket = None;
            }
            Some("expired") => self.ticket = None,
            _ => {}
        }
        if self.pass.is_some() && status.is_success() {
            self.ticket = None;
        }
        self.last = body.clone();
        (status, body)
    }

    /// A request to the app through anteroom. Like a client that keeps its
    /// tokens (a waiting page, an API client), it comes back at once with a
    /// ticket it was just given, which makes the ticket count.
    pub async fn get(&mut self, path: &str) -> (StatusCode, Value) {
        let before = self.ticket.clone();
        let resp = self.request(Method::GET, path).send().await.unwrap();
        let answer = self.absorb(resp).await;
        if self.ticket.is_some() && self.ticket != before {
            self.poll().await;
            self.last = answer.1.clone();
        }
        answer
    }

    /// A `POST` to the app through anteroom, with the visitor's tokens.
    pub async fn post(&mut self, path: &str) -> (StatusCode, Value) {
        let resp = self.request(Method::POST, path).send().await.unwrap();
        self.absorb(resp).await
    }

    /// `GET /__anteroom/status`.
    pub async fn poll(&mut self) -> Value {
        let resp = self
            .request(Method::GET, "/__anteroom/status")
            .send()
            .await
            .unwrap();
        self.absorb(resp).await.1
    }

    /// Polls until `done` holds for the status (5 s at most); returns it.
    pub async fn poll_until(&mut self, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let status = self.poll().await;
            if done(&status) {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "status never reached the condition; last: {status}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `POST /__anteroom/leave`.
    pub async fn leave(&mut self) -> Value {
        let resp = self
            .request(Method::POST, "/__anteroom/leave")
            .send()
            .await
            .unwrap();
        let (_, body) = self.absorb(resp).await;
        self.pass = None;
        self.ticket = None;
        body
    }

    /// The pass the visitor holds.
    /// The ticket the visitor holds while waiting.
    pub fn ticket(&self) -> Option<String> {
        self.ticket.clone()
    }

    pub fn pass_header(&self) -> Option<String> {
        self.pass.clone()
    }

    /// Whether the visitor holds a pass.
    pub fn admitted(&self) -> bool {
        self.pass.is_some()
    }
}
