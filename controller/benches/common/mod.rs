//! What both benchmarks share.

use atropos::store::synthetic::Rng;

/// The 95 % bootstrap interval of `Σ after / Σ before` over `pairs` of (before, after)
/// measurements taken in the same round: the rounds are resampled 2000 times, whole, so
/// that what the machine did during one round weighs on both sides of it.
pub fn ratio_interval(pairs: &[(f64, f64)]) -> (f64, f64) {
    let mut rng = Rng::new(7);
    let mut ratios: Vec<f64> = (0..2000)
        .map(|_| {
            let (mut before, mut after) = (0.0, 0.0);
            for _ in 0..pairs.len() {
                let (b, a) = pairs[rng.below(pairs.len() as u64) as usize];
                before += b;
                after += a;
            }
            after / before
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ratios.len() / 40],
        ratios[ratios.len() - ratios.len() / 40 - 1],
    )
}
