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
    /// The stream of `seed`.
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
    /// Replays `uniforms` and `normals`, each in order; drawing past the end is an
    /// [`Error::InvalidArgument`] naming `noise`.
    pub fn new(uniforms: Vec<f32>, normals: Vec<f32>) -> Self {
        Self {
            uniforms,
            normals,
            next_uniform: 0,
            next_normal: 0,
        }
    }
    /// Replays uniforms only.
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

/// The noise of a batch whose rows come request by request: part `i` is request `i`'s own
/// source with its `rows_i` rows. A draw for every live row (`uniform(live rows)`) takes one
/// value per live row from each part in order, so every request draws exactly what it would
/// alone, whatever else shares the batch. A row that is done is retired and draws nothing more.
pub struct StackedNoise<'a> {
    parts: Vec<(Box<dyn NoiseSource + 'a>, usize)>,
    /// Per batch row: still drawing.
    live: Vec<bool>,
}

impl<'a> StackedNoise<'a> {
    /// Stacks per-request sources, each with its row count, in batch row order.
    pub fn new(parts: Vec<(Box<dyn NoiseSource + 'a>, usize)>) -> Self {
        let rows = parts.iter().map(|p| p.1).sum();
        Self {
            parts,
            live: vec![true; rows],
        }
    }

    /// Rows still drawing.
    pub fn rows(&self) -> usize {
        self.live.iter().filter(|&&l| l).count()
    }

    /// Row `row` is done: later draws skip it.
    pub fn retire(&mut self, row: usize) {
        if let Some(l) = self.live.get_mut(row) {
            *l = false;
        }
    }

    /// The source of the request that owns batch row `row`.
    pub fn part_of_row(&mut self, row: usize) -> Option<&mut (dyn NoiseSource + 'a)> {
        let mut first = 0;
        for (src, n) in self.parts.iter_mut() {
            if row < first + *n {
                return Some(src.as_mut());
            }
            first += *n;
        }
        None
    }

    fn draw(
        &mut self,
        n: usize,
        what: &str,
        f: impl Fn(&mut dyn NoiseSource, usize) -> Result<Vec<f32>>,
    ) -> Result<Vec<f32>> {
        let rows = self.rows();
        if rows == 0 || !n.is_multiple_of(rows) {
            return Err(Error::invalid(
                "noise",
                format!("{n} {what} values asked of a batch of {rows} live rows"),
            ));
        }
        let per_row = n / rows;
        let mut out = Vec::with_capacity(n);
        let mut first = 0;
        for (src, k) in self.parts.iter_mut() {
            let live = self.live[first..first + *k].iter().filter(|&&l| l).count();
            first += *k;
            if live > 0 {
                out.extend(f(src.as_mut(), live * per_row)?);
            }
        }
        Ok(out)
    }
}

impl NoiseSource for StackedNoise<'_> {
    fn uniform(&mut self, n: usize) -> Result<Vec<f32>> {
        self.draw(n, "uniform", |s, k| s.uniform(k))
    }
    fn normal(&mut self, n: usize) -> Result<Vec<f32>> {
        self.draw(n, "normal", |s, k| s.normal(k))
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
    fn stacked_parts_draw_what_they_would_alone() {
        let mut st = StackedNoise::new(vec![
            (Box::new(SeededNoise::new(1)) as Box<dyn NoiseSource>, 2),
            (Box::new(ReplayNoise::uniforms(vec![0.5, 0.25])), 1),
        ]);
        let mut alone = SeededNoise::new(1);
        let a = alone.uniform(2).unwrap();
        let b = alone.uniform(2).unwrap();
        assert_eq!(st.uniform(3).unwrap(), vec![a[0], a[1], 0.5]);
        assert_eq!(st.uniform(3).unwrap(), vec![b[0], b[1], 0.25]);
        assert!(st.uniform(3).is_err(), "the replay part is spent");
        assert!(st.uniform(2).is_err(), "2 is not a draw per row of 3 rows");
        assert!(st.part_of_row(2).is_some() && st.part_of_row(3).is_none());
        // a retired row draws nothing more: its source stays where it was
        let mut st = StackedNoise::new(vec![
            (Box::new(SeededNoise::new(1)) as Box<dyn NoiseSource>, 1),
            (Box::new(SeededNoise::new(2)), 1),
        ]);
        st.retire(0);
        assert_eq!(st.rows(), 1);
        assert_eq!(
            st.uniform(1).unwrap(),
            SeededNoise::new(2).uniform(1).unwrap()
        );
        let mut fresh = SeededNoise::new(1);
        assert_eq!(
            st.part_of_row(0).unwrap().uniform(1).unwrap(),
            fresh.uniform(1).unwrap()
        );
    }

    #[test]
    fn replay_in_order_then_errors() {
        let mut r = ReplayNoise::uniforms(vec![0.1, 0.2, 0.3]);
        assert_eq!(r.uniform(2).unwrap(), vec![0.1, 0.2]);
        assert_eq!(r.uniform(1).unwrap(), vec![0.3]);
        assert!(r.uniform(1).is_err());
    }
}
