//! `shared` fns returning `Result<_, E>`: with `E: From<RemoteLoadError> + Debug` the cache
//! hands waiting processes the failure of a load that ran elsewhere (`remote_errors::<E>()`);
//! with any other `E` it compiles and works as before, with no new requirement on `E`.
use stampede_cache::{RemoteLoadError, stampede_cached};

/// Can hold a failure of another process.
#[derive(Clone, Debug)]
pub enum FleetError {
    Db(String),
    Remote(RemoteLoadError),
}

impl From<RemoteLoadError> for FleetError {
    fn from(e: RemoteLoadError) -> Self {
        FleetError::Remote(e)
    }
}

/// An error type as in the README's examples: no `From<RemoteLoadError>`.
#[derive(Clone, Debug)]
pub struct RepoError(pub String);

#[stampede_cached(ttl = "1m", shared, name = "ui.remote.fleet")]
async fn fleet(id: u64) -> Result<u64, FleetError> {
    if id == 0 {
        Err(FleetError::Db("no row".into()))
    } else {
        Ok(id)
    }
}

#[stampede_cached(ttl = "1m", shared, name = "ui.remote.plain")]
async fn plain(id: u64) -> Result<u64, RepoError> {
    if id == 0 {
        Err(RepoError("no row".into()))
    } else {
        Ok(id)
    }
}

mod error {
    pub type Result<T> = std::result::Result<T, super::FleetError>;
}

#[stampede_cached(ttl = "1m", shared, name = "ui.remote.alias")]
async fn alias(id: u64) -> error::Result<u64> {
    Ok(id)
}

#[tokio::main]
async fn main() {
    assert_eq!(fleet(1).await.unwrap(), 1);
    assert!(matches!(fleet(0).await, Err(FleetError::Db(_))));
    assert_eq!(plain(0).await.unwrap_err().0, "no row");
    assert_eq!(alias(2).await.unwrap(), 2);
    let _ = (fleet_cache(), plain_cache(), alias_cache());
}
