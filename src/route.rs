//! Picks the route for a request: first match in file order wins.

use crate::config::Route;

/// The routes in the order they were written.
#[derive(Debug, Clone)]
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    /// A router over validated routes.
    pub fn new(routes: Vec<Route>) -> Router {
        Router { routes }
    }

    /// The index of the first route matching this host and path, both in
    /// canonical form (`canonical`: the host without port, in lower case).
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| path.starts_with(&r.path_prefix) && host_matches(r.host.as_deref(), host))
    }

    /// The route at an index returned by `find`.
    pub fn get(&self, index: usize) -> Option<&Route> {
        self.routes.get(index)
    }

    /// All routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

fn host_matches(pattern: Option<&str>, host: Option<&str>) -> bool {
    let Some(pattern) = pattern else {
        return true;
    };
    let Some(host) = host else {
        return false;
    };
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            let (host, suffix) = (host.as_bytes(), suffix.as_bytes());
            host.len() > suffix.len() + 1
                && &host[host.len() - suffix.len()..] == suffix
                && host[host.len() - suffix.len() - 1] == b'.'
        }
        None => host == pattern,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<&str>, prefix: &str) -> Route {
        Route {
            name: prefix.into(),
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            upstream: 0,
            room: None,
            bypass: Default::default(),
            retry_429: false,
        }
    }

    #[test]
    fn first_match_wins() {
        let r = Router::new(vec![
            route(Some("api.example.com"), "/v1/"),
            route(Some("*.example.com"), "/"),
            route(None, "/api/gemini/"),
            route(None, "/"),
        ]);
        assert_eq!(r.find(Some("api.example.com"), "/v1/x"), Some(0));
        assert_eq!(r.find(Some("api.example.com"), "/v2"), Some(1));
        assert_eq!(r.find(Some("www.example.com"), "/api/gemini/x"), Some(1));
        assert_eq!(r.find(Some("example.com"), "/api/gemini/x"), Some(2));
        assert_eq!(r.find(None, "/api/gemini"), Some(3));
        assert_eq!(r.find(Some("[::1]"), "/"), Some(3));
    }

    #[test]
    fn no_match() {
        let r = Router::new(vec![route(Some("a.com"), "/")]);
        assert_eq!(r.find(Some("b.com"), "/"), None);
        assert_eq!(r.find(None, "/"), None);
        assert_eq!(r.find(Some("xa.com"), "/"), None);
    }
}
