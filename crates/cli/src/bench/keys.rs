//! Keys for the workloads: `--key-space-size` distinct keys of `--key-size` bytes each,
//! picked at random or in order (`--sequential-keys`).
//!
//! etcd's benchmark writes binary varints; these keys are the key's number in decimal,
//! zero-padded to the key size (`00000042`), so that they can be read back with etcdctl
//! and sort in number order. A key space that cannot be written in `--key-size` digits is
//! refused up front instead of silently producing duplicate or longer keys. The random
//! generator is a tiny splitmix64, one per client, so picking a key takes no lock and no
//! system call.

use super::error::BenchError;

/// Produces the keys of one workload (the same for every client).
#[derive(Debug, Clone)]
pub struct KeyGen {
    size: usize,
    space: u64,
    sequential: bool,
}

impl KeyGen {
    pub fn new(size: usize, space: u64, sequential: bool) -> Result<Self, BenchError> {
        if size == 0 {
            return Err(BenchError::Flag("--key-size must be at least 1".into()));
        }
        if space == 0 {
            return Err(BenchError::Flag("--key-space-size must be at least 1".into()));
        }
        let digits = decimal_digits(space - 1);
        if digits > size {
            return Err(BenchError::Flag(format!(
                "--key-size {size} is too small for --key-space-size {space} (keys need {digits} digits)"
            )));
        }
        Ok(KeyGen { size, space, sequential })
    }

    /// Which key (0..space) request number `ticket` uses.
    pub fn index(&self, ticket: u64, rng: &mut Rng) -> u64 {
        if self.sequential {
            ticket % self.space
        } else {
            rng.below(self.space)
        }
    }

    /// The key for request number `ticket`.
    pub fn key(&self, ticket: u64, rng: &mut Rng) -> Vec<u8> {
        self.key_at(self.index(ticket, rng))
    }

    /// Key number `index`, zero-padded decimal of exactly `size` bytes.
    pub fn key_at(&self, index: u64) -> Vec<u8> {
        let mut key = vec![b'0'; self.size];
        let mut rest = index;
        for byte in key.iter_mut().rev() {
            if rest == 0 {
                break;
            }
            *byte = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        key
    }
}

fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// splitmix64: small, fast, good enough to spread keys; not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator seeded from the clock and `stream` (e.g. the client's number).
    pub fn seeded(stream: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::new(nanos ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0); the modulo bias is negligible for key spaces.
    pub fn below(&mut self, bound: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_decimal_of_the_key_size() {
        let keys = KeyGen::new(8, 1000, true).unwrap();
        assert_eq!(keys.key_at(0), b"00000000");
        assert_eq!(keys.key_at(42), b"00000042");
        assert_eq!(keys.key_at(999), b"00000999");
        let tiny = KeyGen::new(3, 1000, true).unwrap();
        assert_eq!(tiny.key_at(999), b"999");
    }

    #[test]
    fn key_space_must_fit_in_the_key_size() {
        assert!(KeyGen::new(1, 10, false).is_ok());
        assert!(KeyGen::new(1, 11, false).is_err());
        assert!(KeyGen::new(20, u64::MAX, false).is_ok());
        assert!(KeyGen::new(0, 1, false).is_err());
        assert!(KeyGen::new(8, 0, false).is_err());
    }

    #[test]
    fn sequential_keys_wrap_at_the_key_space() {
        let keys = KeyGen::new(4, 3, true).unwrap();
        let mut rng = Rng::new(1);
        let picked: Vec<Vec<u8>> = (0..5).map(|t| keys.key(t, &mut rng)).collect();
        let expected: Vec<&[u8]> = vec![b"0000", b"0001", b"0002", b"0000", b"0001"];
        assert_eq!(picked, expected);
    }

    #[test]
    fn random_keys_stay_in_the_key_space_and_cover_it() {
        let keys = KeyGen::new(2, 10, false).unwrap();
        let mut rng = Rng::new(7);
        let mut seen = [0u32; 10];
        for ticket in 0..10_000 {
            let index = keys.index(ticket, &mut rng);
            assert!(index < 10);
            seen[index as usize] += 1;
        }
        // uniform: each key about 1000 times
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    }

    #[test]
    fn a_key_space_of_one_is_always_the_same_key() {
        let keys = KeyGen::new(8, 1, false).unwrap();
        let mut rng = Rng::new(3);
        assert!((0..100).all(|t| keys.key(t, &mut rng) == b"00000000"));
    }

    #[test]
    fn chance_follows_the_probability() {
        let mut rng = Rng::new(11);
        assert!(!(0..1000).any(|_| rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(1.0)));
        let half = (0..10_000).filter(|_| rng.chance(0.5)).count();
        assert!((4_500..5_500).contains(&half), "{half}");
    }
}
