//! Zipf(1.0) sampling by inverse CDF over ranks `0..n`: a few ranks come up
//! in most draws, most ranks in few — list-endpoint traffic. Shared by
//! `examples/postgres_repo.rs` and `benches/batch.rs` through `#[path]`.

/// The cumulative distribution of Zipf(1.0) over `n` ranks.
pub struct Zipf(Vec<f64>);

impl Zipf {
    pub fn new(n: usize) -> Zipf {
        let total: f64 = (1..=n).map(|rank| 1.0 / rank as f64).sum();
        let mut acc = 0.0;
        Zipf(
            (1..=n)
                .map(|rank| {
                    acc += 1.0 / rank as f64 / total;
                    acc
                })
                .collect(),
        )
    }

    /// One rank, in `0..n`.
    pub fn draw(&self, rng: &mut fastrand::Rng) -> usize {
        let u = rng.f64();
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}
