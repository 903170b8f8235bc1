//! A log-linear latency histogram in nanoseconds.
//!
//! Fixed size (a few thousand counters whatever is recorded), so every task
//! can keep its own and merge at the end; 64 sub-buckets per power of two
//! bound the error of any percentile to about 1.6%, well under the
//! run-to-run noise of a loopback benchmark.

/// Sub-buckets per power of two (as a shift): 2^6 = 64.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any u64.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Counts of recorded values.
#[derive(Clone, Debug)]
pub struct Hist {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist::new()
    }
}

impl Hist {
    /// An empty histogram.
    pub fn new() -> Hist {
        Hist { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }

    fn index(v: u64) -> usize {
        if v < 2 * SUB {
            return v as usize;
        }
        let bits = 63 - v.leading_zeros();
        let shift = bits - SUB_BITS;
        (u64::from(shift) * SUB + (v >> shift)) as usize
    }

    /// The middle of bucket `i`'s range.
    fn value(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB {
            return i;
        }
        let shift = i / SUB - 1;
        let mantissa = i % SUB + SUB;
        (mantissa << shift) + (1u64 << shift) / 2
    }

    /// Records one value.
    pub fn record(&mut self, v: u64) {
        let i = Hist::index(v).min(BUCKETS - 1);
        self.counts[i] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value below which a fraction `q` of the recorded values lie, or
    /// `None` if nothing was recorded.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Hist::value(i).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut last = 0;
        for v in [0u64, 1, 127, 128, 129, 255, 256, 1000, 1 << 20, u64::MAX / 2, u64::MAX] {
            let i = Hist::index(v);
            assert!(i >= last, "index of {v} went backwards");
            assert!(i < BUCKETS, "index of {v} out of range");
            last = i;
        }
    }

    #[test]
    fn quantiles_are_within_two_percent() {
        let mut h = Hist::new();
        for v in 1..=100_000u64 {
            h.record(v * 10);
        }
        for (q, want) in [(0.5, 500_000.0), (0.99, 990_000.0), (0.999, 999_000.0)] {
            let got = h.quantile(q).expect("recorded") as f64;
            assert!((got - want).abs() / want < 0.02, "q{q}: got {got}, want {want}");
        }
        let mut other = Hist::new();
        other.record(5_000_000);
        h.merge(&other);
        assert_eq!(h.count(), 100_001);
        assert_eq!(h.quantile(1.0), Some(5_000_000));
        assert_eq!(Hist::new().quantile(0.5), None);
    }
}
