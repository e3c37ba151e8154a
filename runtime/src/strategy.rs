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
    /// Early refresh after XFetch (Vattani, Chierichetti, Lowenstein, VLDB
    /// 2015), made rate-independent: each load draws ONE early-refresh
    /// instant `expiry − δ − δ·β·(−ln U)`, where `δ` is the measured duration
    /// of that load; the first call after it starts one background refresh.
    /// The paper rolls `now − δβ·ln U ≥ expiry` on every request, so its
    /// refresh comes earlier as traffic grows (≈ βδ(ln(rβδ) + 0.58) early at
    /// r requests/s); one draw per load gives ≈ ttl / (ttl − βδ) loads per ttl
    /// at any traffic, a hit costs no random number, and the extra `δ` in the
    /// lead lets the refresh finish before expiry, so callers never wait.
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

/// Timing of a cached entry.
///
/// Compact and cheap to test, since every hit clones the entry out of L1
/// and checks it: the two instants a hit compares against are kept as
/// `Instant`s; the others, only looked at once the entry is no longer
/// fresh, as nanosecond offsets from `fresh_until` (saturated at
/// [`FOREVER`]), read through the accessors below. Invariants:
/// `refresh_at <= fresh_until <= stale_until <= servable_until`;
/// `retry_after` is only ever compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Freshness {
    /// The entry is fresh strictly before this instant.
    fresh_until: Instant,
    /// XFetch: from this instant on, a hit on the fresh entry starts one
    /// background refresh. Drawn once per load (see [`refresh_lead`]);
    /// `= fresh_until` for the other strategies (never while fresh).
    refresh_at: Instant,
    /// `swr` serves it stale (with a background refresh) strictly before
    /// `fresh_until + stale`; 0 for the other strategies.
    stale: u64,
    /// The end of the fail-safe window, after `fresh_until`: until then the
    /// value may stand in for a load that fails, panics or times out.
    /// `= stale` without `fail_safe`.
    servable: u64,
    /// No load or refresh of this key starts before `fresh_until + retry`
    /// (ns, negative: before it): set after a failed load or refresh
    /// (FusionCache's fail-safe throttle), so a down origin is retried once
    /// per backoff, not once per call. Meanwhile the value is served (while
    /// it is servable). `i64::MIN` at write time: no throttle.
    retry: i64,
    /// How long the load that produced the entry took (XFetch's `delta`), in ns.
    delta: u64,
}

/// `span` in nanoseconds, saturated at [`FOREVER`].
#[inline]
fn nanos(span: Duration) -> u64 {
    // FOREVER (≈ 3.2e18 ns) fits a u64 and an i64.
    span.min(FOREVER).as_nanos() as u64
}

impl Freshness {
    /// The timing of a value written at `now`, fresh for `fresh_for`, whose
    /// early refresh (XFetch) is due `refresh_lead` before it expires.
    pub(crate) fn written(
        now: Instant,
        fresh_for: Duration,
        windows: Windows,
        delta: Duration,
        refresh_lead: Duration,
    ) -> Self {
        let fresh_until = after(now, fresh_for);
        let stale = nanos(windows.stale);
        Freshness {
            fresh_until,
            // Clamped to the entry's life: a lead longer than it refreshes at once.
            refresh_at: fresh_until
                .checked_sub(refresh_lead)
                .map_or(now, |at| at.max(now)),
            stale,
            servable: nanos(windows.fail_safe).max(stale),
            retry: i64::MIN,
            delta: nanos(delta),
        }
    }

    /// How far past freshness `now` is, in ns (0 while fresh).
    #[inline]
    fn past(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.fresh_until).as_nanos() as u64
    }

    /// Whether no load may start at `now` (the retry backoff runs).
    #[inline]
    fn throttled(&self, now: Instant) -> bool {
        if self.retry == i64::MIN {
            return false;
        }
        let at = if self.retry >= 0 {
            self.fresh_until + Duration::from_nanos(self.retry as u64)
        } else {
            self.fresh_until
                .checked_sub(Duration::from_nanos(self.retry.unsigned_abs()))
                .unwrap_or(self.fresh_until)
        };
        now < at
    }

    /// The entry is fresh strictly before this instant.
    pub(crate) fn fresh_until(&self) -> Instant {
        self.fresh_until
    }

    /// `swr` may serve it stale strictly before this instant.
    #[cfg(test)]
    pub(crate) fn stale_until(&self) -> Instant {
        self.fresh_until + Duration::from_nanos(self.stale)
    }

    /// The end of the fail-safe window.
    #[cfg(test)]
    pub(crate) fn servable_until(&self) -> Instant {
        self.fresh_until + Duration::from_nanos(self.servable)
    }

    /// XFetch's early-refresh instant.
    #[cfg(test)]
    pub(crate) fn refresh_at(&self) -> Instant {
        self.refresh_at
    }

    /// How long the load that produced the entry took.
    pub(crate) fn delta(&self) -> Duration {
        Duration::from_nanos(self.delta)
    }

    /// Whether `now` is before the end of freshness.
    #[inline]
    pub(crate) fn fresh_at(&self, now: Instant) -> bool {
        now < self.fresh_until
    }

    /// Whether `now` is within `swr`'s stale window (or fresh).
    #[inline]
    pub(crate) fn stale_at(&self, now: Instant) -> bool {
        now < self.fresh_until || self.past(now) < self.stale
    }

    /// Whether the value may stand in for a failed or slow load at `now`.
    #[inline]
    pub(crate) fn servable_at(&self, now: Instant) -> bool {
        now < self.fresh_until || self.past(now) < self.servable
    }

    /// No load of this key starts before `until` (the retry backoff).
    pub(crate) fn retry_after(&mut self, until: Instant) {
        self.retry = if until >= self.fresh_until {
            nanos(until - self.fresh_until) as i64
        } else {
            -(nanos(self.fresh_until - until) as i64)
        };
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

/// Decides what to do with `entry` at `now`. No clock, no random number:
/// a hit is one comparison of instants (two for XFetch).
#[inline]
pub(crate) fn decide(strategy: &Strategy, entry: Option<&Freshness>, now: Instant) -> Decision {
    let Some(entry) = entry else {
        return Decision::Load;
    };
    if now < entry.fresh_until {
        return match strategy {
            Strategy::XFetch { .. } if now >= entry.refresh_at && !entry.throttled(now) => {
                Decision::ServeAndRefresh(RefreshReason::Early)
            }
            _ => Decision::Serve,
        };
    }
    not_fresh(entry, now)
}

/// [`decide`] for an entry past its freshness (the slow path).
#[cold]
fn not_fresh(entry: &Freshness, now: Instant) -> Decision {
    let past = entry.past(now);
    let throttled = entry.throttled(now);
    if past < entry.stale {
        // Only `swr` has a stale window.
        return if throttled {
            Decision::ServeThrottled
        } else {
            Decision::ServeAndRefresh(RefreshReason::Stale)
        };
    }
    if throttled && past < entry.servable {
        return Decision::ServeThrottled;
    }
    Decision::Load
}

/// How long before expiry a value loaded in `delta` is refreshed early:
/// for XFetch `delta + delta·β·(−ln u)` — the paper's lead `δβ(−ln U)`,
/// drawn once per load instead of once per request, plus `δ` so the refresh
/// is done by expiry; zero for the other strategies. `u ~ Uniform(0, 1]` is
/// clamped into `[f64::MIN_POSITIVE, 1]` (`ln 0` would be −∞).
pub(crate) fn refresh_lead(strategy: &Strategy, delta: Duration, u: f64) -> Duration {
    let Strategy::XFetch { beta } = strategy else {
        return Duration::ZERO;
    };
    let u = u.clamp(f64::MIN_POSITIVE, 1.0);
    let lead = delta.as_secs_f64() * (1.0 + beta * -u.ln());
    Duration::try_from_secs_f64(lead)
        .unwrap_or(FOREVER)
        .min(FOREVER)
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
        // XFetch's early refresh is tested on its own: no lead here.
        Freshness::written(written, TTL, windows, DELTA, Duration::ZERO)
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
            let got = decide(&strategy, present.then_some(&e), now);
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
        let mut e = Freshness::written(t0, TTL, windows, DELTA, Duration::ZERO);
        assert_eq!(e.servable_until(), t0 + TTL + Duration::from_secs(600));
        let failed_at = t0 + TTL + Duration::from_secs(1);
        e.retry_after(failed_at + Duration::from_secs(1));
        for strategy in [
            Strategy::Lock,
            Strategy::XFetch { beta: 1.0 },
            Strategy::Swr { stale: STALE },
        ] {
            let swr_stale = {
                let windows = Windows {
                    stale: STALE,
                    fail_safe: Duration::from_secs(600),
                };
                let mut e = Freshness::written(t0, TTL, windows, DELTA, Duration::ZERO);
                e.retry_after(failed_at + Duration::from_secs(1));
                e
            };
            let e = if matches!(strategy, Strategy::Swr { .. }) {
                swr_stale
            } else {
                e
            };
            assert_eq!(
                decide(&strategy, Some(&e), failed_at),
                Decision::ServeThrottled,
                "{strategy:?} inside the backoff"
            );
            let after_backoff = failed_at + Duration::from_secs(1);
            let expected = if matches!(strategy, Strategy::Swr { .. }) {
                Decision::ServeAndRefresh(RefreshReason::Stale)
            } else {
                Decision::Load
            };
            assert_eq!(decide(&strategy, Some(&e), after_backoff), expected);
            assert_eq!(
                decide(&strategy, Some(&e), e.servable_until()),
                Decision::Load,
                "{strategy:?}: past the fail-safe window nothing is served"
            );
        }
        // A fresh XFetch entry whose early refresh failed is served without a
        // new roll until the backoff passes.
        let xfetch = Strategy::XFetch { beta: 1.0 };
        let mut fresh = Freshness::written(t0, TTL, Windows::default(), DELTA, DELTA);
        fresh.retry_after(t0 + TTL);
        assert_eq!(
            decide(&xfetch, Some(&fresh), t0 + TTL - Duration::from_nanos(1)),
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
        let e = Freshness::written(t0, Duration::MAX, windows, Duration::MAX, Duration::MAX);
        assert_eq!(e.fresh_until(), t0 + FOREVER);
        assert!(e.fresh_until() <= e.stale_until() && e.stale_until() <= e.servable_until());
        assert_eq!(
            decide(&Strategy::Lock, Some(&e), t0 + FOREVER / 2),
            Decision::Serve
        );
    }

    #[test]
    fn boundaries_are_exclusive() {
        let t0 = Instant::now();
        let swr = Strategy::Swr { stale: STALE };
        let e = entry(t0, &swr);
        assert_eq!(
            decide(&swr, Some(&e), e.fresh_until()),
            Decision::ServeAndRefresh(RefreshReason::Stale)
        );
        assert_eq!(decide(&swr, Some(&e), e.stale_until()), Decision::Load);
        let lock = Strategy::Lock;
        let e = entry(t0, &lock);
        assert_eq!(
            decide(&lock, Some(&e), e.fresh_until() - Duration::from_nanos(1)),
            Decision::Serve
        );
        assert_eq!(decide(&lock, Some(&e), e.fresh_until()), Decision::Load);
    }

    #[test]
    fn xfetch_refreshes_from_its_drawn_instant_on_and_draws_nothing_on_a_hit() {
        let t0 = Instant::now();
        let xfetch = Strategy::XFetch { beta: 1.0 };
        let lead = refresh_lead(&xfetch, DELTA, (-1.0f64).exp()); // δ + δ·β·1
        assert_eq!(lead, DELTA * 2);
        let e = Freshness::written(t0, TTL, Windows::default(), DELTA, lead);
        assert_eq!(e.refresh_at(), t0 + TTL - DELTA * 2);
        let just_before = e.refresh_at() - Duration::from_nanos(1);
        assert_eq!(decide(&xfetch, Some(&e), just_before), Decision::Serve);
        assert_eq!(
            decide(&xfetch, Some(&e), e.refresh_at()),
            Decision::ServeAndRefresh(RefreshReason::Early)
        );
        assert_eq!(decide(&xfetch, Some(&e), e.fresh_until()), Decision::Load);
        // The other strategies never refresh a fresh entry early.
        for other in [Strategy::Lock, Strategy::Swr { stale: STALE }] {
            assert_eq!(refresh_lead(&other, DELTA, 0.001), Duration::ZERO);
        }
    }

    #[test]
    fn refresh_lead_edges() {
        let xfetch = Strategy::XFetch { beta: 1.0 };
        // U = 1: no random lead, but still δ early, so the refresh is done by expiry.
        assert_eq!(refresh_lead(&xfetch, DELTA, 1.0), DELTA);
        // U -> 0 (and U = 0 or below, outside the range) is guarded: finite, no panic.
        for u in [0.0, f64::MIN_POSITIVE, -0.5] {
            let lead = refresh_lead(&xfetch, DELTA, u);
            assert!(
                lead > DELTA && lead < Duration::from_secs(1000),
                "{u}: {lead:?}"
            );
        }
        // delta = 0 (an instant load) never refreshes early.
        assert_eq!(
            refresh_lead(&xfetch, Duration::ZERO, 1e-300),
            Duration::ZERO
        );
        // A huge beta saturates instead of overflowing; the lead is clamped to the entry's life.
        let huge = refresh_lead(&XFetch_huge(), Duration::MAX, 1e-300);
        assert_eq!(huge, FOREVER);
        let t0 = Instant::now();
        let e = Freshness::written(t0, TTL, Windows::default(), DELTA, huge);
        assert_eq!(
            e.refresh_at(),
            t0,
            "a lead longer than the life refreshes at once"
        );
    }

    #[allow(non_snake_case)]
    fn XFetch_huge() -> Strategy {
        Strategy::XFetch { beta: 1e300 }
    }

    /// The drawn lead minus `δ` is `δβ·Exp(1)`: its tail `P(lead − δ > x)`
    /// matches `exp(−x / (βδ))` within 3σ at several x and betas.
    #[test]
    fn the_drawn_lead_follows_the_xfetch_distribution() {
        const N: usize = 200_000;
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        for beta in [0.5, 1.0, 2.0] {
            let xfetch = Strategy::XFetch { beta };
            let leads: Vec<Duration> = (0..N)
                .map(|_| refresh_lead(&xfetch, DELTA, 1.0 - rng.f64()))
                .collect();
            for x_ms in [10u64, 50, 100, 200, 400] {
                let x = Duration::from_millis(x_ms);
                let beyond = leads.iter().filter(|l| **l > DELTA + x).count();
                let p = (-(x.as_secs_f64()) / (beta * DELTA.as_secs_f64())).exp();
                let sigma = (p * (1.0 - p) / N as f64).sqrt();
                let empirical = beyond as f64 / N as f64;
                assert!(
                    (empirical - p).abs() <= 3.0 * sigma + 1e-9,
                    "beta {beta}, x {x_ms} ms: empirical {empirical}, expected {p} ± {}",
                    3.0 * sigma
                );
            }
            let mean = leads.iter().map(|l| l.as_secs_f64()).sum::<f64>() / N as f64;
            let expected = DELTA.as_secs_f64() * (1.0 + beta);
            assert!(
                (mean - expected).abs() < expected * 0.01,
                "beta {beta}: mean lead {mean}"
            );
        }
    }
}
