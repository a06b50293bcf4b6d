//! Progress reporting and cancellation for long loops.

use crate::noise::NoiseSource;
use crate::{Error, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag another thread (a Ctrl-C handler, a UI) sets to stop a running loop.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One report: `step` of `total` done in `stage` (e.g. "prefill", "image tokens", "decode").
#[derive(Debug, Clone, Copy)]
pub struct Progress<'s> {
    pub stage: &'s str,
    pub step: usize,
    pub total: usize,
}

/// A progress callback.
pub type ProgressFn<'a> = Box<dyn FnMut(Progress<'_>) + 'a>;

/// Callbacks and overrides a caller passes to `generate`.
#[derive(Default)]
pub struct Hooks<'a> {
    pub progress: Option<ProgressFn<'a>>,
    pub cancel: Option<CancelToken>,
    /// Replaces the seeded noise of the request (for replaying a reference's draws).
    pub noise: Option<Box<dyn NoiseSource + 'a>>,
}

impl<'a> Hooks<'a> {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn on_progress(mut self, f: impl FnMut(Progress<'_>) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }
    pub fn cancel_token(mut self, t: CancelToken) -> Self {
        self.cancel = Some(t);
        self
    }
    pub fn noise(mut self, n: impl NoiseSource + 'a) -> Self {
        self.noise = Some(Box::new(n));
        self
    }

    /// Reports a step and returns `Err(Cancelled)` if cancellation was requested.
    pub fn step(&mut self, stage: &str, step: usize, total: usize) -> Result<()> {
        if let Some(c) = &self.cancel {
            if c.is_cancelled() {
                return Err(Error::Cancelled {
                    stage: stage.to_string(),
                    step,
                    total,
                });
            }
        }
        if let Some(p) = self.progress.as_mut() {
            p(Progress { stage, step, total });
        }
        Ok(())
    }

    /// The noise for a request: the override if given, else a source seeded with `seed`.
    pub fn take_noise(&mut self, seed: u64) -> Box<dyn NoiseSource + 'a> {
        self.noise
            .take()
            .unwrap_or_else(|| Box::new(crate::noise::SeededNoise::new(seed)))
    }

    /// The noise of a batch: one source per request (`(seed, rows)` in row order; the override,
    /// if given, goes to the first), so each request draws what it would alone.
    pub fn batch_noise(&mut self, parts: &[(u64, usize)]) -> crate::noise::StackedNoise<'a> {
        crate::noise::StackedNoise::new(
            parts
                .iter()
                .map(|&(seed, rows)| (self.take_noise(seed), rows))
                .collect(),
        )
    }
}
