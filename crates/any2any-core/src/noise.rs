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
    /// Where the uniforms and the normals came from, for the error when they run out.
    origins: [Option<Origin>; 2],
}

/// The argument (e.g. `noise-uniform`) and file a replayed stream was read from; no file: the
/// stream was not given.
#[derive(Debug, Clone)]
struct Origin {
    arg: String,
    file: Option<String>,
}

impl ReplayNoise {
    /// Replays `uniforms` and `normals`, each in order; drawing past the end is an
    /// [`Error::InvalidArgument`] naming `noise`.
    pub fn new(uniforms: Vec<f32>, normals: Vec<f32>) -> Self {
        Self {
            uniforms,
            normals,
            ..Default::default()
        }
    }
    /// Replays uniforms only.
    pub fn uniforms(uniforms: Vec<f32>) -> Self {
        Self::new(uniforms, Vec::new())
    }
    /// Names the argument and the file (`None`: not given) the uniforms came from, so that
    /// running out of them is an error naming both.
    pub fn uniforms_from(mut self, arg: impl Into<String>, file: Option<String>) -> Self {
        self.origins[0] = Some(Origin {
            arg: arg.into(),
            file,
        });
        self
    }
    /// As [`ReplayNoise::uniforms_from`], for the normals.
    pub fn normals_from(mut self, arg: impl Into<String>, file: Option<String>) -> Self {
        self.origins[1] = Some(Origin {
            arg: arg.into(),
            file,
        });
        self
    }
    /// Draws not yet consumed: (uniforms, normals).
    pub fn remaining(&self) -> (usize, usize) {
        (
            self.uniforms.len() - self.next_uniform,
            self.normals.len() - self.next_normal,
        )
    }
    /// Draws consumed so far: (uniforms, normals).
    pub fn consumed(&self) -> (usize, usize) {
        (self.next_uniform, self.next_normal)
    }
}

/// The next `n` values of `buf`, or an error naming where they came from.
fn take(
    buf: &[f32],
    next: &mut usize,
    n: usize,
    what: &str,
    origin: Option<&Origin>,
) -> Result<Vec<f32>> {
    let end = next.checked_add(n).filter(|&e| e <= buf.len());
    let Some(end) = end else {
        let left = buf.len() - *next;
        return Err(match origin {
            None => Error::invalid(
                "noise",
                format!("replay source has {left} {what} values left, {n} requested"),
            ),
            Some(Origin { arg, file: None }) => Error::invalid(
                arg.as_str(),
                format!("the run draws {what} values ({n} requested) but none were given"),
            ),
            Some(Origin { arg, file: Some(f) }) => Error::invalid(
                arg.as_str(),
                format!(
                    "{f} ran out: it holds {} {what} values, {} were replayed and {n} more \
                     requested ({left} left)",
                    buf.len(),
                    *next
                ),
            ),
        });
    };
    let out = buf[*next..end].to_vec();
    *next = end;
    Ok(out)
}

impl NoiseSource for ReplayNoise {
    fn uniform(&mut self, n: usize) -> Result<Vec<f32>> {
        let o = self.origins[0].as_ref();
        take(&self.uniforms, &mut self.next_uniform, n, "uniform", o)
    }
    fn normal(&mut self, n: usize) -> Result<Vec<f32>> {
        let o = self.origins[1].as_ref();
        take(&self.normals, &mut self.next_normal, n, "normal", o)
    }
}

/// A borrowed source draws from what it borrows: a caller can pass `&mut source` to
/// [`crate::Hooks::noise`] and look at it after the run (e.g. [`ReplayNoise::remaining`]).
impl<N: NoiseSource + ?Sized> NoiseSource for &mut N {
    fn uniform(&mut self, n: usize) -> Result<Vec<f32>> {
        (**self).uniform(n)
    }
    fn normal(&mut self, n: usize) -> Result<Vec<f32>> {
        (**self).normal(n)
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

    #[test]
    fn running_out_names_the_argument_and_file() {
        let mut r = ReplayNoise::new(vec![0.1, 0.2], Vec::new())
            .uniforms_from("noise-uniform", Some("u.npy".into()))
            .normals_from("noise-normal", None);
        {
            // borrowed (as `Hooks::noise` boxes it), then looked at after
            let mut b: Box<dyn NoiseSource + '_> = Box::new(&mut r);
            assert_eq!(b.uniform(1).unwrap(), vec![0.1]);
        }
        assert_eq!((r.consumed(), r.remaining()), ((1, 0), (1, 0)));
        let e = r.uniform(3).unwrap_err().to_string();
        assert!(
            e.contains("`noise-uniform`") && e.contains("u.npy") && e.contains("holds 2"),
            "{e}"
        );
        assert!(e.contains("1 were replayed and 3 more"), "{e}");
        let e = r.normal(4).unwrap_err().to_string();
        assert!(
            e.contains("`noise-normal`") && e.contains("none were given"),
            "{e}"
        );
        // a failed draw consumes nothing
        assert_eq!(r.uniform(1).unwrap(), vec![0.2]);
        assert!(r.uniform(usize::MAX).is_err());
    }
}
