//! `batch` with result aliases: `io::Result<HashMap<..>>`-like aliases of one parameter, and
//! `returns = "result"` for an alias not named `Result`; `?` and `return` in the body.
use std::collections::HashMap;
use std::sync::Arc;

use stampede_cache::stampede_cached;

mod error {
    pub type Result<T> = std::result::Result<T, std::sync::Arc<std::io::Error>>;
}

type Fallible<T> = Result<T, Arc<str>>;

fn parse(text: &str) -> Result<u64, Arc<str>> {
    text.parse().map_err(|_| Arc::from("not a number"))
}

#[stampede_cached(ttl = "1m", batch)]
async fn lengths(words: &[String]) -> error::Result<HashMap<String, usize>> {
    Ok(words.iter().map(|w| (w.clone(), w.len())).collect())
}

#[stampede_cached(ttl = "1m", batch, returns = "result")]
async fn numbers(texts: &[String]) -> Fallible<HashMap<String, u64>> {
    let mut rows = HashMap::new();
    for t in texts {
        if t.is_empty() {
            return Err(Arc::from("empty"));
        }
        rows.insert(t.clone(), parse(t)?);
    }
    Ok(rows)
}

fn main() {
    let _ = lengths_cache();
    let _ = numbers_cache();
    let _ = async {
        let _: error::Result<HashMap<String, usize>> = lengths(&[]).await;
        let _: Fallible<HashMap<String, u64>> = numbers(&[]).await;
    };
}
