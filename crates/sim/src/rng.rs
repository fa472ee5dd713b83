//! The simulator's one source of randomness: a seeded SplitMix64 generator.
//!
//! Every random choice of a run (fault timing, message delays, client operations, the
//! nodes' election jitter seeds) is drawn from one `SimRng` created from the run's seed,
//! in a fixed order. That is what makes a seed replay exactly: no clocks, no thread
//! scheduling and no `HashMap` iteration order ever reach the simulation.

/// A small, fast, seedable PRNG (SplitMix64). Statistically good enough for fault
/// injection; not for cryptography.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// A generator for `seed`. The seed is scrambled first so that neighbouring seeds
    /// (0, 1, 2, ...) start far apart.
    pub fn new(seed: u64) -> Self {
        let mut rng = SimRng { state: seed ^ 0x5DEE_CE66_D1CE_F00D };
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `[0, bound)`; `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "below(0) has no values");
        self.next_u64() % bound
    }

    /// A value in `[low, high]` (inclusive); `high >= low`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        assert!(high >= low, "empty range {low}..={high}");
        low + self.below(high - low + 1)
    }

    /// True with probability `per_million / 1_000_000`.
    pub fn chance(&mut self, per_million: u32) -> bool {
        per_million > 0 && self.below(1_000_000) < u64::from(per_million)
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// A uniformly chosen index of `weights`, weighted by the values (not all zero).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        assert!(total > 0, "all weights are zero");
        let mut roll = self.below(total);
        for (index, &weight) in weights.iter().enumerate() {
            if roll < u64::from(weight) {
                return index;
            }
            roll -= u64::from(weight);
        }
        unreachable!("roll is below the total weight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let mut a = SimRng::new(42);
        let mut b = SimRng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SimRng::new(1).next_u64(), SimRng::new(2).next_u64());
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut rng = SimRng::new(7);
        for _ in 0..1000 {
            assert!(rng.below(3) < 3);
            let v = rng.between(5, 9);
            assert!((5..=9).contains(&v));
            assert!(rng.weighted(&[0, 1, 0]) == 1);
        }
        assert!(!rng.chance(0));
        assert!(rng.chance(1_000_000));
    }
}
