//! The fn's body runs inline in the load: early `return`, `?` with a `From` conversion,
//! `return Default::default()`, `self` in closures and macros, `self::` paths, and nested
//! items with a `self` of their own all keep their meaning; a local named `this` is the
//! user's own.
use stampede_cache::stampede_cached;

#[derive(Debug, Clone)]
pub struct RepoError(String);

impl From<std::num::ParseIntError> for RepoError {
    fn from(e: std::num::ParseIntError) -> Self {
        RepoError(e.to_string())
    }
}

fn helper() -> u64 {
    1
}

#[derive(Clone)]
pub struct Repo {
    base: u64,
}

impl Repo {
    #[stampede_cached(ttl = "30s")]
    async fn parse(&self, text: &str) -> Result<u64, RepoError> {
        if text.is_empty() {
            return Ok(Default::default());
        }
        if text == "base" {
            return Ok(self.base);
        }
        let n: u64 = text.parse()?;
        let add = |x: u64| x + self.base;
        let this = 1000; // the user's own `this`
        let label = format!("{}:{}", self.base, n);
        struct Inner(u64);
        impl Inner {
            fn get(&self) -> u64 {
                self.0
            }
        }
        Ok(add(n) + self::helper() + Inner(this).get() + label.len() as u64)
    }

    #[stampede_cached(ttl = "30s")]
    async fn value(&self, id: u64) -> Vec<u64> {
        if id == 0 {
            return Default::default();
        }
        vec![id, self.base]
    }
}

#[tokio::main]
async fn main() {
    let repo = Repo { base: 10 };
    assert_eq!(repo.parse("").await.unwrap(), 0);
    assert_eq!(repo.parse("base").await.unwrap(), 10);
    assert_eq!(repo.parse("5").await.unwrap(), 5 + 10 + 1 + 1000 + 4);
    assert!(
        repo.parse("x")
            .await
            .unwrap_err()
            .0
            .contains("invalid digit")
    );
    assert_eq!(repo.value(0).await, Vec::<u64>::new());
    assert_eq!(repo.value(2).await, vec![2, 10]);
}
