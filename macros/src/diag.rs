//! Diagnostics helpers: error collection and "did you mean".

use proc_macro2::Span;

/// A `syn::Error` at `span`.
pub fn err(span: Span, msg: impl std::fmt::Display) -> syn::Error {
    syn::Error::new(span, msg)
}

/// Collects errors so one compile shows them all.
#[derive(Default)]
pub struct Errors(Option<syn::Error>);

impl Errors {
    /// Adds one error (which may itself hold several).
    pub fn push(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    /// Adds the error of `r`, if any, and gives back its value.
    pub fn check<T>(&mut self, r: syn::Result<T>) -> Option<T> {
        r.map_err(|e| self.push(e)).ok()
    }

    /// `Err` with every pushed error, or `Ok(())`.
    pub fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Edit distance with adjacent transpositions (optimal string alignment), for "did you mean".
pub fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The candidate `got` is most likely a misspelling of, if any is close enough.
pub fn closest<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (distance(got, c), c))
        .filter(|(d, c)| *d <= 2.min(c.len() / 2).max(1))
        .min()
        .map(|(_, c)| c)
}

/// "did you mean `x`? " when a candidate is close, else "".
pub fn suggest<'a>(got: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(got, candidates)
        .map(|c| format!("did you mean `{c}`? "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_counts_edits_and_transpositions() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("ttl", "ttl"), 0);
        assert_eq!(distance("", "abc"), 3);
        assert_eq!(distance("abc", ""), 3);
        assert_eq!(distance("tll", "ttl"), 1); // substitution
        assert_eq!(distance("tl", "ttl"), 1); // insertion
        assert_eq!(distance("ttll", "ttl"), 1); // deletion
        assert_eq!(distance("stlae", "stale"), 1); // transposition counts once
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("µs", "us"), 1); // chars, not bytes
    }

    #[test]
    fn suggest_picks_the_closest_candidate_within_reach() {
        let valid = ["ttl", "strategy", "stale", "skip", "shared"];
        assert_eq!(suggest("tll", valid), "did you mean `ttl`? ");
        assert_eq!(suggest("stategy", valid), "did you mean `strategy`? ");
        assert_eq!(suggest("sahred", valid), "did you mean `shared`? ");
        assert_eq!(
            suggest("swrr", ["lock", "swr", "xfetch"]),
            "did you mean `swr`? "
        );
        // too far from everything
        assert_eq!(suggest("frobnicate", valid), "");
        // short candidates allow one edit only
        assert_eq!(suggest("xyz", ["ttl"]), "");
        assert_eq!(suggest("bd", ["db", "id"]), "did you mean `db`? ");
        assert_eq!(suggest("anything", std::iter::empty()), "");
        assert_eq!(closest("lock_tll", ["ttl", "lock_ttl"]), Some("lock_ttl"));
        assert_eq!(closest("frobnicate", valid), None);
    }

    #[test]
    fn errors_collects_and_reports_all() {
        let mut errors = Errors::default();
        assert_eq!(errors.check(Ok::<_, syn::Error>(3)), Some(3));
        errors.push(err(Span::call_site(), "first"));
        assert_eq!(
            errors.check::<()>(Err(err(Span::call_site(), "second"))),
            None
        );
        let all: Vec<String> = errors
            .finish()
            .unwrap_err()
            .into_iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(all, ["first", "second"]);
        assert!(Errors::default().finish().is_ok());
    }
}
