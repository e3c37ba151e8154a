//! Pure expiry decisions: given an entry's timing, the current instant and a
//! random draw, what should a caller do? No I/O, no clock, no RNG in here, so
//! every cell of the strategy table is tested exhaustively.

use std::time::Duration;

use tokio::time::Instant;

/// How a cache handles expiry. Every strategy coalesces misses: at most one
/// load per key is in flight at any moment.
///
/// | entry at call time     | `Lock`              | `XFetch`                                   | `Swr`                                   |
/// |------------------------|---------------------|--------------------------------------------|-----------------------------------------|
/// | absent                 | single-flight load  | single-flight load                         | single-flight load                      |
/// | fresh                  | serve               | serve; sometimes also start early refresh  | serve                                   |
/// | expired, within stale  | single-flight load  | single-flight load                         | serve stale + one background refresh    |
/// | expired beyond stale   | —                   | —                                          | single-flight load                      |
///
/// ```
/// use std::time::Duration;
/// use stampede_cache::Strategy;
///
/// let readers_never_wait = Strategy::Swr { stale: Duration::from_secs(600) };
/// let refresh_before_expiry = Strategy::XFetch { beta: 1.0 };
/// assert_eq!(Strategy::default(), Strategy::Lock);
/// # let _ = (readers_never_wait, refresh_before_expiry);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum Strategy {
    /// Per-key single flight: the first miss loads, every other caller of
    /// that key waits for its result.
    #[default]
    Lock,
    /// Stale-while-revalidate: for `stale` past the TTL, readers get the old
    /// value at once while exactly one background refresh runs. A failed
    /// refresh keeps the stale value served until `stale` ends (fail-safe).
    Swr {
        /// How long past the TTL a stale value may still be served.
        stale: Duration,
    },
    /// Probabilistic early refresh (Vattani, Chierichetti, Lowenstein, VLDB
    /// 2015): each hit refreshes early with a probability that rises toward
    /// expiry, `exp(-t / (beta * delta))` at time-to-expiry `t`, where `delta`
    /// is the measured duration of the key's last load.
    XFetch {
        /// Eagerness, > 0. `1.0` is the paper's recommendation; larger
        /// refreshes earlier.
        beta: f64,
    },
}

impl Strategy {
    /// How long an entry stays servable after it stops being fresh.
    pub(crate) fn stale_window(&self) -> Duration {
        match self {
            Strategy::Swr { stale } => *stale,
            Strategy::Lock | Strategy::XFetch { .. } => Duration::ZERO,
        }
    }
}

/// The longest span any timing is computed with: about a century. A
/// "never expire" `Duration::MAX` saturates here instead of overflowing an
/// `Instant` (whose range is platform-defined) or a backend's expiry.
pub(crate) const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + span`, saturating at [`FOREVER`] from `now`.
#[inline]
pub(crate) fn after(now: Instant, span: Duration) -> Instant {
    now + span.min(FOREVER)
}

/// Timing of a cached entry. Invariants: `fresh_until <= stale_until <=
/// servable_until`; `retry_after` is only ever compared, never ordered
/// against the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// The entry is fresh strictly before this instant.
    pub fresh_until: Instant,
    /// `swr` serves it stale (with a background refresh) strictly before
    /// this instant; `= fresh_until` for the other strategies.
    pub stale_until: Instant,
    /// The end of the fail-safe window: until then the value may stand in
    /// for a load that fails, panics or times out. `= stale_until` without
    /// `fail_safe`.
    pub servable_until: Instant,
    /// No load or refresh of this key starts before this instant: set after
    /// a failed load or refresh (FusionCache's fail-safe throttle), so a down
    /// origin is retried once per backoff, not once per call. Meanwhile the
    /// value is served (while it is servable). At write time, = the write
    /// instant (no throttle).
    pub retry_after: Instant,
    /// How long the load that produced the entry took (XFetch's `delta`).
    pub delta: Duration,
}

impl Freshness {
    /// The timing of a value written at `now`.
    pub(crate) fn written(
        now: Instant,
        fresh_for: Duration,
        windows: Windows,
        delta: Duration,
    ) -> Self {
        let fresh_until = after(now, fresh_for);
        let stale_until = after(fresh_until, windows.stale);
        let servable_until = after(fresh_until, windows.fail_safe).max(stale_until);
        Freshness {
            fresh_until,
            stale_until,
            servable_until,
            retry_after: now,
            delta,
        }
    }

    /// Whether the value may stand in for a failed or slow load at `now`.
    #[inline]
    pub(crate) fn servable_at(&self, now: Instant) -> bool {
        now < self.servable_until
    }
}

/// How long past freshness a value may still be served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Windows {
    /// `swr`'s stale window (zero for the other strategies).
    pub stale: Duration,
    /// The fail-safe window (zero without `fail_safe`).
    pub fail_safe: Duration,
}

/// Why a served entry also starts a refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RefreshReason {
    /// XFetch's roll fired on a fresh entry.
    Early,
    /// `swr` served a stale entry.
    Stale,
}

/// What a caller does with the entry it found (or did not find).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Return the cached value: it is fresh.
    Serve,
    /// Return the cached value and start one detached refresh (unless one runs).
    ServeAndRefresh(RefreshReason),
    /// Return the stale (`swr`) or fail-safe value without a refresh: the
    /// last load of this key failed and its retry backoff has not passed.
    ServeThrottled,
    /// No usable value: join or start the key's single flight and wait for it.
    Load,
}

/// Decides what to do with `entry` at `now`. `draw` yields `U ~ Uniform(0, 1]`
/// and is only called by XFetch on a fresh entry that may refresh.
#[inline]
pub(crate) fn decide(
    strategy: &Strategy,
    entry: Option<&Freshness>,
    now: Instant,
    draw: impl FnOnce() -> f64,
) -> Decision {
    let Some(entry) = entry else {
        return Decision::Load;
    };
    if now < entry.fresh_until {
        return match strategy {
            Strategy::XFetch { beta }
                if now >= entry.retry_after && xfetch_fires(now, entry, *beta, draw()) =>
            {
                Decision::ServeAndRefresh(RefreshReason::Early)
            }
            _ => Decision::Serve,
        };
    }
    let throttled = now < entry.retry_after;
    if now < entry.stale_until {
        // Only `swr` has a stale window.
        return if throttled {
            Decision::ServeThrottled
        } else {
            Decision::ServeAndRefresh(RefreshReason::Stale)
        };
    }
    if throttled && entry.servable_at(now) {
        return Decision::ServeThrottled;
    }
    Decision::Load
}

/// XFetch's test `now - delta * beta * ln(u) >= expiry`, rewritten on the
/// time left so it never overflows an `Instant`. `u` is clamped into
/// `[f64::MIN_POSITIVE, 1]`: `ln(0)` would be -inf, and a `u` of exactly 1
/// (ln = 0) never refreshes early.
pub(crate) fn xfetch_fires(now: Instant, entry: &Freshness, beta: f64, u: f64) -> bool {
    let time_left = entry
        .fresh_until
        .saturating_duration_since(now)
        .as_secs_f64();
    let u = u.clamp(f64::MIN_POSITIVE, 1.0);
    let reach = entry.delta.as_secs_f64() * beta * -u.ln();
    reach > 0.0 && reach >= time_left
}

/// A draw of `U ~ Uniform(0, 1]` from the thread-local generator.
pub(crate) fn uniform_draw() -> f64 {
    1.0 - fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(30);
    const STALE: Duration = Duration::from_secs(600);
    const DELTA: Duration = Duration::from_millis(100);

    fn entry(written: Instant, strategy: &Strategy) -> Freshness {
        let windows = Windows {
            stale: strategy.stale_window(),
            fail_safe: Duration::ZERO,
        };
        Freshness::written(written, TTL, windows, DELTA)
    }

    fn never_drawn() -> f64 {
        panic!("this decision must not draw a random number")
    }

    #[test]
    fn every_cell_of_the_design_table() {
        let t0 = Instant::now();
        let lock = Strategy::Lock;
        let swr = Strategy::Swr { stale: STALE };
        let xfetch = Strategy::XFetch { beta: 1.0 };
        let fresh = t0 + Duration::from_secs(1);
        let within_stale = t0 + TTL + Duration::from_secs(1);
        let beyond_stale = t0 + TTL + STALE + Duration::from_secs(1);
        let no_roll = || 1.0; // ln(1) = 0: XFetch never fires
        // (strategy, entry present, now, expected)
        let cases = [
            (lock, false, fresh, Decision::Load),
            (xfetch, false, fresh, Decision::Load),
            (swr, false, fresh, Decision::Load),
            (lock, true, fresh, Decision::Serve),
            (xfetch, true, fresh, Decision::Serve),
            (swr, true, fresh, Decision::Serve),
            (lock, true, within_stale, Decision::Load),
            (xfetch, true, within_stale, Decision::Load),
            (
                swr,
                true,
                within_stale,
                Decision::ServeAndRefresh(RefreshReason::Stale),
            ),
            (lock, true, beyond_stale, Decision::Load),
            (xfetch, true, beyond_stale, Decision::Load),
            (swr, true, beyond_stale, Decision::Load),
        ];
        for (strategy, present, now, expected) in cases {
            let e = entry(t0, &strategy);
            let got = decide(&strategy, present.then_some(&e), now, no_roll);
            assert_eq!(
                got,
                expected,
                "{strategy:?}, present={present}, now=t0+{:?}",
                now - t0
            );
        }
    }

    /// After a failed load the entry carries a retry instant: until then a
    /// servable value is served without a load (fail-safe throttle), and a
    /// value that is no longer servable is not.
    #[test]
    fn a_failed_load_throttles_while_the_value_is_servable() {
        let t0 = Instant::now();
        let windows = Windows {
            stale: Duration::ZERO,
            fail_safe: Duration::from_secs(600),
        };
        let mut e = Freshness::written(t0, TTL, windows, DELTA);
        assert_eq!(e.servable_until, t0 + TTL + Duration::from_secs(600));
        let failed_at = t0 + TTL + Duration::from_secs(1);
        e.retry_after = failed_at + Duration::from_secs(1);
        for strategy in [
            Strategy::Lock,
            Strategy::XFetch { beta: 1.0 },
            Strategy::Swr { stale: STALE },
        ] {
            let swr_stale = Freshness {
                stale_until: e.fresh_until + STALE,
                servable_until: e.servable_until.max(e.fresh_until + STALE),
                ..e
            };
            let e = if matches!(strategy, Strategy::Swr { .. }) {
                swr_stale
            } else {
                e
            };
            assert_eq!(
                decide(&strategy, Some(&e), failed_at, never_drawn),
                Decision::ServeThrottled,
                "{strategy:?} inside the backoff"
            );
            let after_backoff = e.retry_after;
            let expected = if matches!(strategy, Strategy::Swr { .. }) {
                Decision::ServeAndRefresh(RefreshReason::Stale)
            } else {
                Decision::Load
            };
            assert_eq!(
                decide(&strategy, Some(&e), after_backoff, never_drawn),
                expected
            );
            assert_eq!(
                decide(&strategy, Some(&e), e.servable_until, never_drawn),
                Decision::Load,
                "{strategy:?}: past the fail-safe window nothing is served"
            );
        }
        // A fresh XFetch entry whose early refresh failed is served without a
        // new roll until the backoff passes.
        let xfetch = Strategy::XFetch { beta: 1.0 };
        let mut fresh = Freshness::written(t0, TTL, Windows::default(), DELTA);
        fresh.retry_after = t0 + TTL;
        assert_eq!(
            decide(
                &xfetch,
                Some(&fresh),
                t0 + TTL - Duration::from_nanos(1),
                never_drawn
            ),
            Decision::Serve
        );
    }

    #[test]
    fn huge_spans_saturate() {
        let t0 = Instant::now();
        let windows = Windows {
            stale: Duration::MAX,
            fail_safe: Duration::MAX,
        };
        let e = Freshness::written(t0, Duration::MAX, windows, Duration::MAX);
        assert_eq!(e.fresh_until, t0 + FOREVER);
        assert!(e.fresh_until <= e.stale_until && e.stale_until <= e.servable_until);
        assert_eq!(
            decide(&Strategy::Lock, Some(&e), t0 + FOREVER / 2, never_drawn),
            Decision::Serve
        );
    }

    #[test]
    fn only_xfetch_on_a_fresh_entry_draws() {
        let t0 = Instant::now();
        for strategy in [Strategy::Lock, Strategy::Swr { stale: STALE }] {
            let e = entry(t0, &strategy);
            for now in [t0, t0 + TTL, t0 + TTL + STALE] {
                decide(&strategy, Some(&e), now, never_drawn);
            }
        }
        let xfetch = Strategy::XFetch { beta: 1.0 };
        let e = entry(t0, &xfetch);
        assert_eq!(
            decide(&xfetch, Some(&e), t0 + TTL, never_drawn),
            Decision::Load
        );
        assert_eq!(decide(&xfetch, None, t0, never_drawn), Decision::Load);
    }

    #[test]
    fn boundaries_are_exclusive() {
        let t0 = Instant::now();
        let swr = Strategy::Swr { stale: STALE };
        let e = entry(t0, &swr);
        assert_eq!(
            decide(&swr, Some(&e), e.fresh_until, || 1.0),
            Decision::ServeAndRefresh(RefreshReason::Stale)
        );
        assert_eq!(
            decide(&swr, Some(&e), e.stale_until, || 1.0),
            Decision::Load
        );
        let lock = Strategy::Lock;
        let e = entry(t0, &lock);
        assert_eq!(
            decide(
                &lock,
                Some(&e),
                e.fresh_until - Duration::from_nanos(1),
                || 1.0
            ),
            Decision::Serve
        );
        assert_eq!(
            decide(&lock, Some(&e), e.fresh_until, || 1.0),
            Decision::Load
        );
    }

    #[test]
    fn xfetch_edges() {
        let t0 = Instant::now();
        let e = entry(t0, &Strategy::XFetch { beta: 1.0 });
        // U = 1 never refreshes early, even a nanosecond before expiry.
        assert!(!xfetch_fires(
            e.fresh_until - Duration::from_nanos(1),
            &e,
            1.0,
            1.0
        ));
        // U -> 0 (and U = 0, outside the range) is guarded: no NaN, no panic, it fires.
        assert!(xfetch_fires(t0, &e, 1.0, 0.0));
        assert!(xfetch_fires(t0, &e, 1.0, f64::MIN_POSITIVE));
        assert!(xfetch_fires(t0, &e, 1.0, -0.5));
        // A huge beta refreshes at once with any U < 1.
        assert!(xfetch_fires(t0, &e, 1e12, 0.999));
        // delta = 0 (an instant load) never refreshes early.
        let instant = Freshness {
            delta: Duration::ZERO,
            ..e
        };
        assert!(!xfetch_fires(
            e.fresh_until - Duration::from_nanos(1),
            &instant,
            1.0,
            1e-300
        ));
        // With U = e^-1, the roll reaches exactly beta * delta before expiry.
        let u = (-1.0f64).exp();
        assert!(xfetch_fires(
            e.fresh_until - DELTA + Duration::from_millis(1),
            &e,
            1.0,
            u
        ));
        assert!(!xfetch_fires(
            e.fresh_until - DELTA - Duration::from_millis(1),
            &e,
            1.0,
            u
        ));
    }

    #[test]
    fn xfetch_is_monotone_in_now() {
        let t0 = Instant::now();
        let e = entry(t0, &Strategy::XFetch { beta: 1.0 });
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2_000 {
            let u = 1.0 - rng.f64();
            let mut fired = false;
            for ms in (0..=30_000).step_by(50) {
                let now_fires = xfetch_fires(t0 + Duration::from_millis(ms), &e, 1.0, u);
                assert!(
                    !fired || now_fires,
                    "fired, then stopped firing later (u = {u}, t = {ms} ms)"
                );
                fired = now_fires;
            }
        }
    }

    /// The empirical refresh probability at time-to-expiry t matches
    /// exp(-t / (beta * delta)) within 3 sigma, at several t and betas.
    #[test]
    fn xfetch_refresh_probability_matches_the_paper() {
        const N: usize = 200_000;
        let t0 = Instant::now();
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for beta in [0.5, 1.0, 2.0] {
            let xfetch = Strategy::XFetch { beta };
            let e = entry(t0, &xfetch);
            for time_left_ms in [10u64, 50, 100, 200, 400] {
                let now = e.fresh_until - Duration::from_millis(time_left_ms);
                let fired = (0..N)
                    .filter(|_| {
                        decide(&xfetch, Some(&e), now, || 1.0 - rng.f64()) != Decision::Serve
                    })
                    .count();
                let p = (-(time_left_ms as f64 / 1000.0) / (beta * DELTA.as_secs_f64())).exp();
                let sigma = (p * (1.0 - p) / N as f64).sqrt();
                let empirical = fired as f64 / N as f64;
                assert!(
                    (empirical - p).abs() <= 3.0 * sigma + 1e-9,
                    "beta {beta}, t {time_left_ms} ms: empirical {empirical}, expected {p} ± {}",
                    3.0 * sigma
                );
            }
        }
    }
}
