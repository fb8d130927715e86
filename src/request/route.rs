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
            .position(|r| prefix_matches(r, path) && host_matches(r.host.as_deref(), host))
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

fn prefix_matches(route: &Route, path: &str) -> bool {
    if !route.case_insensitive {
        return path.starts_with(&route.path_prefix);
    }
    let prefix = route.path_prefix.as_bytes();
    path.len() >= prefix.len() && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix)
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
            case_insensitive: false,
        }
    }

    #[test]
    fn a_case_insensitive_route_matches_its_prefix_in_any_case() {
        let guarded = Route {
            case_insensitive: true,
            ..route(None, "/api/gemini/")
        };
        let r = Router::new(vec![guarded, route(None, "/")]);
        for path in [
            "/api/gemini/x",
            "/API/gemini/x",
            "/Api/GEMINI/x",
            "/api/gemini/",
        ] {
            assert_eq!(r.find(None, path), Some(0), "{path}");
        }
        for path in ["/api/gemini", "/api/gemin/x", "/"] {
            assert_eq!(r.find(None, path), Some(1), "{path}");
        }
        // By default the prefix is compared as written, as nginx does.
        let r = Router::new(vec![route(None, "/api/gemini/"), route(None, "/")]);
        assert_eq!(r.find(None, "/API/gemini/x"), Some(1));
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
