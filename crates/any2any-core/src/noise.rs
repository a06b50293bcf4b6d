//! Every random draw goes through a [`NoiseSource`], so tests can replay a reference's exact noise
//! and the same seed always gives the same output.

use crate::{Error, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A source of uniform `[0, 1)` and standard-normal draws, consumed in a fixed order.
pub trait NoiseSource: Send {
    /// `n` uniforms in `[0, 1)`.
    fn uniform(&mut self, n: usize) -> Result<Vec<f32>>;
    /// `n` standard-normal values.
    fn normal(&mut self, n: usize) -> Result<Vec<f32>>;
}

/// The default source: ChaCha8, whose stream is fixed across platforms and crate versions.
pub struct SeededNoise {
    rng: ChaCha8Rng,
}

impl SeededNoise {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }
}

impl NoiseSource for SeededNoise {
    fn uniform(&mut self, n: usize) -> Result<Vec<f32>> {
        Ok((0..n).map(|_| self.rng.random::<f32>()).collect())
    }
    fn normal(&mut self, n: usize) -> Result<Vec<f32>> {
        Ok((0..n)
            .map(|_| StandardNormal.sample(&mut self.rng))
            .collect())
    }
}

/// Replays pre-drawn values (e.g. saved from the reference implementation) in order.
#[derive(Debug, Clone, Default)]
pub struct ReplayNoise {
    uniforms: Vec<f32>,
    normals: Vec<f32>,
    next_uniform: usize,
    next_normal: usize,
}

impl ReplayNoise {
    pub fn new(uniforms: Vec<f32>, normals: Vec<f32>) -> Self {
        Self {
            uniforms,
            normals,
            next_uniform: 0,
            next_normal: 0,
        }
    }
    pub fn uniforms(uniforms: Vec<f32>) -> Self {
        Self::new(uniforms, Vec::new())
    }
    /// Draws not yet consumed: (uniforms, normals).
    pub fn remaining(&self) -> (usize, usize) {
        (
            self.uniforms.len() - self.next_uniform,
            self.normals.len() - self.next_normal,
        )
    }
}

fn take(buf: &[f32], next: &mut usize, n: usize, what: &str) -> Result<Vec<f32>> {
    if *next + n > buf.len() {
        return Err(Error::invalid(
            "noise",
            format!(
                "replay source has {} {what} values left, {n} requested",
                buf.len() - *next
            ),
        ));
    }
    let out = buf[*next..*next + n].to_vec();
    *next += n;
    Ok(out)
}

impl NoiseSource for ReplayNoise {
    fn uniform(&mut self, n: usize) -> Result<Vec<f32>> {
        take(&self.uniforms, &mut self.next_uniform, n, "uniform")
    }
    fn normal(&mut self, n: usize) -> Result<Vec<f32>> {
        take(&self.normals, &mut self.next_normal, n, "normal")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SeededNoise::new(7);
        let mut b = SeededNoise::new(7);
        assert_eq!(a.uniform(5).unwrap(), b.uniform(5).unwrap());
        assert_ne!(
            SeededNoise::new(8).uniform(5).unwrap(),
            SeededNoise::new(7).uniform(5).unwrap()
        );
        assert!(a
            .uniform(1000)
            .unwrap()
            .iter()
            .all(|u| (0.0..1.0).contains(u)));
    }

    #[test]
    fn replay_in_order_then_errors() {
        let mut r = ReplayNoise::uniforms(vec![0.1, 0.2, 0.3]);
        assert_eq!(r.uniform(2).unwrap(), vec![0.1, 0.2]);
        assert_eq!(r.uniform(1).unwrap(), vec![0.3]);
        assert!(r.uniform(1).is_err());
    }
}
