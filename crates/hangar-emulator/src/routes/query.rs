//! Query-string parsing shared by the REST routes (`runners.rs`) and the Actions service
//! (`scaleset.rs`): decoded parameters where a repeated key means its last value, and GitHub's
//! `per_page`/`page` paging. A malformed query string never fails a request: it reads as no
//! parameters, so every parameter takes its default.

use axum::extract::Query;
use axum::http::Uri;

/// Default and maximum `per_page`.
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;

/// A request's decoded query parameters, in the order sent.
pub(crate) struct QueryParams(Vec<(String, String)>);

impl QueryParams {
    /// The parameters of `uri` (none when its query does not decode).
    pub fn of(uri: &Uri) -> Self {
        Self(
            Query::<Vec<(String, String)>>::try_from_uri(uri)
                .map(|q| q.0)
                .unwrap_or_default(),
        )
    }

    /// A parameter's value (the last one if repeated).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A positive integer parameter, or `None` when absent or malformed.
    fn positive(&self, key: &str) -> Option<usize> {
        self.get(key)
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
    }

    /// The page asked for with `per_page=` (default 30, at most 100) and `page=` (default 1).
    pub fn paging(&self) -> Paging {
        Paging {
            per_page: self
                .positive("per_page")
                .unwrap_or(DEFAULT_PER_PAGE)
                .min(MAX_PER_PAGE),
            page: self.positive("page").unwrap_or(1),
        }
    }
}

/// One page of a listing; both fields are at least 1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paging {
    pub per_page: usize,
    pub page: usize,
}

impl Paging {
    /// The items of `all` on this page.
    pub fn of<I: IntoIterator>(self, all: I) -> impl Iterator<Item = I::Item> {
        all.into_iter()
            .skip((self.page - 1).saturating_mul(self.per_page))
            .take(self.per_page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &str) -> QueryParams {
        QueryParams::of(&format!("http://h/p?{query}").parse::<Uri>().unwrap())
    }

    #[test]
    fn a_repeated_key_means_its_last_value() {
        let p = params("name=a&name=b%20c&other=");
        assert_eq!(p.get("name"), Some("b c"));
        assert_eq!(p.get("other"), Some(""));
        assert_eq!(p.get("missing"), None);
    }

    #[test]
    fn paging_defaults_clamps_and_ignores_malformed_values() {
        let page = |q: &str| {
            let p = params(q).paging();
            (p.page, p.per_page)
        };
        assert_eq!(page(""), (1, 30));
        assert_eq!(page("per_page=250&page=3"), (3, 100));
        assert_eq!(page("per_page=0&page=0"), (1, 30));
        assert_eq!(page("per_page=x&page=-2"), (1, 30));
    }

    #[test]
    fn a_page_past_the_end_is_empty() {
        let paging = Paging {
            per_page: 2,
            page: 2,
        };
        assert_eq!(paging.of(1..=5).collect::<Vec<_>>(), [3, 4]);
        let past = Paging {
            per_page: 2,
            page: usize::MAX,
        };
        assert_eq!(past.of(1..=5).count(), 0);
    }
}
