//! A program with a deliberately slow initialisation: it sieves the primes
//! up to 200 million (about a tenth of a second), then answers questions
//! about numbers given as arguments. Under prefork-interp the sieve is
//! built once; every later call is a fork of the process that has it.
//!
//! ```text
//! #!/usr/bin/prefork-interp -U,/path/to/primes
//! ```
//!
//! Then `./script 1000003 42` prints, for each number, whether it is prime
//! and how many primes lie at or below it. Run directly (`primes 97`) it
//! does the same, paying for the sieve every time.

use std::io::Write;
use std::process::exit;

const LIMIT: usize = 200_000_000;

/// Sieve of Eratosthenes over odd numbers, plus a running count so that
/// "how many primes up to n" is one lookup per 64 numbers.
struct Primes {
    /// Bit i set: 2i+1 is composite (or 1).
    composite: Vec<u64>,
    /// Primes below 128 * block, for each block of 64 odd numbers.
    count_before_block: Vec<u32>,
}

impl Primes {
    fn sieve(limit: usize) -> Self {
        let odd = limit / 2 + 1;
        let mut composite = vec![0u64; odd.div_ceil(64)];
        composite[0] |= 1; // 1 is not prime
        let mut i = 1;
        while (2 * i + 1) * (2 * i + 1) <= limit {
            if composite[i / 64] >> (i % 64) & 1 == 0 {
                let p = 2 * i + 1;
                let mut j = p * p / 2;
                while j < odd {
                    composite[j / 64] |= 1 << (j % 64);
                    j += p;
                }
            }
            i += 1;
        }
        let mut count_before_block = Vec::with_capacity(composite.len());
        let mut count = 1; // the prime 2
        for word in &composite {
            count_before_block.push(count);
            count += (!word).count_ones();
        }
        Primes {
            composite,
            count_before_block,
        }
    }

    fn is_prime(&self, n: usize) -> bool {
        match n {
            0 | 1 => false,
            2 => true,
            _ if n.is_multiple_of(2) => false,
            _ => self.composite[n / 2 / 64] >> (n / 2 % 64) & 1 == 0,
        }
    }

    /// How many primes are <= n.
    fn count_up_to(&self, n: usize) -> u32 {
        if n < 2 {
            return 0;
        }
        let i = (n - 1) / 2; // odd numbers 2k+1 <= n: k in 0..=i
        let (block, bit) = (i / 64, i % 64);
        let mask = if bit == 63 {
            u64::MAX
        } else {
            (1u64 << (bit + 1)) - 1
        };
        self.count_before_block[block] + (!self.composite[block] & mask).count_ones()
    }
}

fn main() {
    let primes = Primes::sieve(LIMIT);
    let invocation =
        prefork_interp::initialisation_complete(Default::default()).unwrap_or_else(|e| {
            eprintln!("primes: {e}");
            exit(127)
        });

    let mut out = std::io::stdout().lock();
    let mut status = 0;
    for arg in &invocation.args {
        match arg.to_str().and_then(|a| a.parse::<usize>().ok()) {
            Some(n) if n <= LIMIT => {
                let verdict = if primes.is_prime(n) {
                    "is prime"
                } else {
                    "is not prime"
                };
                let _ = writeln!(
                    out,
                    "{n} {verdict}; {} primes up to it",
                    primes.count_up_to(n)
                );
            }
            _ => {
                eprintln!("primes: {arg:?} is not a whole number from 0 to {LIMIT}");
                status = 2;
            }
        }
    }
    let _ = out.flush();
    exit(status);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_numbers() {
        let p = Primes::sieve(1000);
        let naive = |n: usize| {
            n >= 2
                && (2..n)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
        };
        let mut count = 0;
        for n in 0..=1000 {
            assert_eq!(p.is_prime(n), naive(n), "{n}");
            count += naive(n) as u32;
            assert_eq!(p.count_up_to(n), count, "{n}");
        }
    }
}
