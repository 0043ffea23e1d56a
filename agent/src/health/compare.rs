//! The statistics behind `compare = "stable"`: one-sided tests of whether a canary is worse
//! than the stable cohort measured in the same window, as Kayenta judges a canary.
//!
//! * **Latency**: a Mann–Whitney U test on the two latency histograms. The front door keeps
//!   bucket counts, not single latencies, so every response in a bucket is a tie with every
//!   other in it: each gets the bucket's mid-rank, and the variance of U is tie-corrected.
//!   U counts the (canary, stable) pairs in which the canary's response was slower, a tie
//!   counting ½; under "no difference" it is `n₁n₂/2` with variance
//!   `n₁n₂/12 · ((N+1) − Σ(t³−t) / (N(N−1)))` (t: responses in a bucket, both cohorts;
//!   N = n₁+n₂). The p-value is the normal approximation's upper tail of
//!   `z = (U − n₁n₂/2 − ½) / σ` (with the continuity correction, as SciPy's `mannwhitneyu`
//!   with `alternative="greater"`).
//! * **Errors**: a two-proportion z-test on the shares of 5xx responses,
//!   `z = (p₁ − p₂) / √(p(1−p)(1/n₁ + 1/n₂))` with the pooled share p; the p-value is the
//!   upper tail of z.
//!
//! When every observation ties (one bucket; no error, or nothing but errors, on either side)
//! nothing tells the cohorts apart: z is taken as 0 (errors) or −∞ (latency) and the p-value
//! is 0.5 or 1, never a failure.

/// A one-sided test's result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestResult {
    /// The test's statistic: U for Mann–Whitney, z for the two-proportion test.
    pub statistic: f64,
    /// The standard normal score it is judged by.
    pub z: f64,
    /// The probability of a difference at least this large towards "canary worse" if the two
    /// cohorts behaved the same.
    pub p_value: f64,
}

/// Mann–Whitney U of `canary` against `stable`, per-bucket counts of the same ascending
/// buckets (not cumulative); large when the canary's values are larger. `None` when either
/// side has no observation or the bucket lists differ in length.
pub fn mann_whitney_greater(canary: &[u64], stable: &[u64]) -> Option<TestResult> {
    if canary.len() != stable.len() {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let f = |n: u64| n as f64;
    let n1: u64 = canary.iter().sum();
    let n2: u64 = stable.iter().sum();
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let (mut u, mut ties, mut stable_below) = (0.0, 0.0, 0u64);
    for (x, y) in canary.iter().zip(stable) {
        // Each canary response here is slower than every stable one below and ties with the
        // stable ones in the bucket.
        u += f(*x) * (f(stable_below) + f(*y) / 2.0);
        let t = f(x + y);
        ties += t * t * t - t;
        stable_below += y;
    }
    let (n1, n2) = (f(n1), f(n2));
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let variance = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    let z = if variance > 0.0 {
        (u - mean - 0.5) / variance.sqrt()
    } else {
        f64::NEG_INFINITY
    };
    Some(TestResult {
        statistic: u,
        z,
        p_value: normal_upper_tail(z),
    })
}

/// The two-proportion z-test of whether `canary_bad / canary_n` is above
/// `stable_bad / stable_n`. `None` when either side has no observation or more bad ones than
/// observations.
pub fn two_proportion_greater(
    canary_bad: u64,
    canary_n: u64,
    stable_bad: u64,
    stable_n: u64,
) -> Option<TestResult> {
    if canary_n == 0 || stable_n == 0 || canary_bad > canary_n || stable_bad > stable_n {
        return None;
    }
    #[allow(clippy::cast_precision_loss)]
    let f = |n: u64| n as f64;
    let (p1, p2) = (f(canary_bad) / f(canary_n), f(stable_bad) / f(stable_n));
    let pooled = f(canary_bad + stable_bad) / f(canary_n + stable_n);
    let se = (pooled * (1.0 - pooled) * (1.0 / f(canary_n) + 1.0 / f(stable_n))).sqrt();
    let z = if se > 0.0 { (p1 - p2) / se } else { 0.0 };
    Some(TestResult {
        statistic: z,
        z,
        p_value: normal_upper_tail(z),
    })
}

/// P(Z > z) for a standard normal Z.
pub fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function, to about 1e-10 relative: below 3 from the series
/// `erf(x) = 2/√π · e^(−x²) · Σ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))` (all terms positive, so no
/// cancellation), above it from the continued fraction
/// `erfc(x) = e^(−x²)/√π · 1/(x + ½/(x + 1/(x + (3/2)/(x + …))))`.
fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x == f64::INFINITY {
        return 0.0;
    }
    let gauss = (-x * x).exp() / std::f64::consts::PI.sqrt();
    if x < 3.0 {
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term > 1e-17 * sum {
            n += 1.0;
            term *= 2.0 * x * x / (2.0 * n + 1.0);
            sum += term;
        }
        1.0 - 2.0 * gauss * sum
    } else {
        let mut fraction = x;
        for k in (1..=60).rev() {
            fraction = x + f64::from(k) / 2.0 / fraction;
        }
        gauss / fraction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn close(got: f64, want: f64, rel: f64) {
        assert!(
            (got - want).abs() <= rel * want.abs().max(1e-300),
            "{got} is not within {rel} of {want}"
        );
    }

    #[test]
    fn the_normal_tail_matches_known_values() {
        // Python's math.erfc, as 0.5 * erfc(z / sqrt(2)).
        close(normal_upper_tail(0.0), 0.5, 1e-12);
        close(normal_upper_tail(1.644_853_626_951_472_2), 0.05, 1e-9);
        close(normal_upper_tail(1.959_963_984_540_054), 0.025, 1e-9);
        close(normal_upper_tail(3.0), 0.001_349_898_031_630_095_7, 1e-9);
        close(normal_upper_tail(5.0), 2.866_515_718_791_946e-7, 1e-9);
        close(normal_upper_tail(8.5), 9.479_534_822_203_355e-18, 1e-9);
        close(normal_upper_tail(-2.0), 0.977_249_868_051_820_8, 1e-9);
        assert_eq!(normal_upper_tail(f64::INFINITY), 0.0);
        assert_eq!(normal_upper_tail(f64::NEG_INFINITY), 1.0);
    }

    #[test]
    fn mann_whitney_on_buckets_uses_mid_ranks_and_the_tie_correction() {
        // By hand: canary 1, 2, 3 and stable 3, 2, 1 responses in three buckets.
        // U = 1·(0 + 3/2) + 2·(3 + 2/2) + 3·(5 + 1/2) = 26; mean 6·6/2 = 18.
        // Ties: three buckets of 4, Σ(t³ − t) = 180; N = 12.
        // σ² = 36/12 · (13 − 180/132) = 34.909…; z = (26 − 18 − 0.5)/5.9084 = 1.26938.
        let r = mann_whitney_greater(&[1, 2, 3], &[3, 2, 1]).unwrap();
        assert_eq!(r.statistic, 26.0);
        close(r.z, 1.269_381_000_724_368_9, 1e-9);
        close(r.p_value, 0.102_152_604_560_356_59, 1e-8);
        // The same U as counting the 6·4 pairs one by one (ties ½): 25.
        let r = mann_whitney_greater(&[2, 3, 1, 0], &[4, 2, 0, 0]).unwrap();
        assert_eq!(r.statistic, 25.0);
        close(r.z, 1.158_132_048_287_172_2, 1e-9);
        close(r.p_value, 0.123_405_076_630_905_83, 1e-8);
        // Every canary response slower than every stable one.
        let r = mann_whitney_greater(&[0, 0, 5], &[5, 0, 0]).unwrap();
        assert_eq!(r.statistic, 25.0);
        close(r.z, 2.88, 1e-9);
        close(r.p_value, 0.001_988_375_854_894_326, 1e-8);
        // Larger counts (values from ranking the 200 expanded samples one by one).
        let r = mann_whitney_greater(&[10, 30, 50, 10], &[20, 40, 30, 10]).unwrap();
        assert_eq!(r.statistic, 6000.0);
        close(r.z, 2.590_479_484_150_744, 1e-9);
        close(r.p_value, 0.004_792_116_707_924_497, 1e-8);
    }

    #[test]
    fn mann_whitney_is_one_sided_and_needs_both_sides() {
        let faster = mann_whitney_greater(&[5, 0, 0], &[0, 0, 5]).unwrap();
        assert!(faster.p_value > 0.99, "{faster:?}");
        // All in one bucket: nothing tells them apart.
        let same = mann_whitney_greater(&[0, 4], &[0, 6]).unwrap();
        assert_eq!((same.statistic, same.p_value), (12.0, 1.0));
        assert_eq!(mann_whitney_greater(&[0, 0], &[1, 2]), None);
        assert_eq!(mann_whitney_greater(&[1, 2], &[0, 0]), None);
        assert_eq!(mann_whitney_greater(&[1, 2], &[1]), None);
    }

    #[test]
    fn the_two_proportion_test_matches_hand_computed_values() {
        // 6 of 300 against 0 of 300: pooled 0.01, se = √(0.01 · 0.99 · 2/300) = 0.0081240;
        // z = 0.02 / 0.0081240 = 2.46183.
        let r = two_proportion_greater(6, 300, 0, 300).unwrap();
        close(r.z, 2.461_829_819_586_655, 1e-9);
        close(r.p_value, 0.006_911_511_910_188_324, 1e-8);
        let r = two_proportion_greater(20, 1000, 10, 1000).unwrap();
        close(r.z, 1.839_590_920_463_876, 1e-9);
        close(r.p_value, 0.032_914_159_187_595_31, 1e-8);
        // Fewer errors than stable: far from "worse".
        let r = two_proportion_greater(3, 1000, 5, 1000).unwrap();
        close(r.z, -0.708_525_251_581_419_7, 1e-9);
        close(r.p_value, 0.760_690_431_685_185_5, 1e-8);
        // No errors anywhere, or only errors: no difference.
        assert_eq!(two_proportion_greater(0, 10, 0, 10).unwrap().p_value, 0.5);
        assert_eq!(two_proportion_greater(10, 10, 10, 10).unwrap().p_value, 0.5);
        assert_eq!(two_proportion_greater(0, 0, 0, 10), None);
        assert_eq!(two_proportion_greater(0, 10, 0, 0), None);
        assert_eq!(two_proportion_greater(11, 10, 0, 10), None);
    }
}
