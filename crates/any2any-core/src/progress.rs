//! Progress reporting and cancellation for long loops.

use crate::noise::NoiseSource;
use crate::{Error, Result};
use candle_core::Tensor;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag another thread (a Ctrl-C handler, a UI) sets to stop a running loop.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not (yet) cancelled; clones share the flag.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the running loop to stop before its next step (it returns
    /// [`Error::Cancelled`]).
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    /// Whether [`CancelToken::cancel`] was called on this token or a clone.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One report: `step` of `total` done in `stage` (e.g. "prefill", "image tokens", "decode").
#[derive(Debug, Clone, Copy)]
pub struct Progress<'s> {
    /// The loop reporting ("prefill", "image", "text tokens", "vq decode", …).
    pub stage: &'s str,
    /// Steps done (0 when the stage starts).
    pub step: usize,
    /// Steps of the stage.
    pub total: usize,
}

/// A progress callback.
pub type ProgressFn<'a> = Box<dyn FnMut(Progress<'_>) + 'a>;

/// New text of one output, as it is decoded: `text` is a UTF-8-safe delta (never half a
/// character); concatenating an output's deltas gives its final text. `output` indexes the
/// outputs of the `generate_batch` call (request-major, `num_outputs` per request).
#[derive(Debug, Clone, Copy)]
pub struct TextDelta<'s> {
    /// The output the text belongs to, in the batch's output order.
    pub output: usize,
    /// The new text (never empty, never half a character).
    pub text: &'s str,
}

/// A text streaming callback.
pub type TextFn<'a> = Box<dyn FnMut(TextDelta<'_>) + 'a>;

/// A look at an image being generated: the codes drawn so far of one output, row-major on its
/// `grid` (height, width), after `step` of `total` steps.
#[derive(Debug, Clone, Copy)]
pub struct Preview<'s> {
    /// The output the image belongs to, in the batch's output order.
    pub output: usize,
    /// Steps done.
    pub step: usize,
    /// Steps of the image loop.
    pub total: usize,
    /// The code grid, (height, width).
    pub grid: (usize, usize),
    /// The codes drawn so far, row-major (fewer than `grid.0 · grid.1` for an autoregressive
    /// loop before its last step).
    pub codes: &'s [u32],
}

/// An image preview callback.
pub type PreviewFn<'a> = Box<dyn FnMut(Preview<'_>) + 'a>;

/// What the image loops run under a [`Hooks`] did: decode forward passes (the prefill not
/// counted) and, under speculative decoding, the drafts verified and accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DecodeStats {
    /// Forward passes of the decoder after the prefill (one per step; one per window under
    /// speculative decoding).
    pub forwards: usize,
    /// Image tokens committed (per image: summed over the images of a batch, once per image).
    pub tokens: usize,
    /// Draft tokens verified (per image).
    pub drafted: usize,
    /// Draft tokens accepted (per image).
    pub accepted: usize,
}

impl DecodeStats {
    /// Accepted drafts over verified drafts (0 when none were verified).
    pub fn acceptance(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}

/// Callbacks and overrides a caller passes to `generate`.
///
/// ```
/// use any2any_core::{CancelToken, Hooks, ReplayNoise};
/// let cancel = CancelToken::new();
/// let mut steps = 0;
/// let mut hooks = Hooks::new()
///     .on_progress(|p| steps = p.step)
///     .cancel_token(cancel.clone())
///     .noise(ReplayNoise::uniforms(vec![0.5; 4]));
/// hooks.step("image", 1, 2)?;
/// cancel.cancel();
/// assert!(hooks.step("image", 2, 2).is_err());
/// drop(hooks);
/// assert_eq!(steps, 1);
/// # Ok::<(), any2any_core::Error>(())
/// ```
#[derive(Default)]
pub struct Hooks<'a> {
    /// Receives every step of every loop.
    pub progress: Option<ProgressFn<'a>>,
    /// Stops the running loop between steps once cancelled.
    pub cancel: Option<CancelToken>,
    /// Replaces the seeded noise of the request (for replaying a reference's draws).
    pub noise: Option<Box<dyn NoiseSource + 'a>>,
    /// Receives each output's new text as it is decoded.
    pub text: Option<TextFn<'a>>,
    /// Receives an image preview every `.0` steps of an image loop.
    pub preview: Option<(usize, PreviewFn<'a>)>,
    /// Counters of the image loops run under these hooks (forward passes, drafts), added to
    /// by every [`CodeLoop`](crate::decode::CodeLoop) run.
    pub stats: DecodeStats,
    /// Outputs of the batch before the group now running (set by `Backend::generate_batch`),
    /// added to the output index of streamed text and previews.
    output_base: usize,
}

impl<'a> Hooks<'a> {
    /// No callbacks, no overrides.
    pub fn new() -> Self {
        Self::default()
    }
    /// Calls `f` with every step of every loop (see [`Progress`]).
    pub fn on_progress(mut self, f: impl FnMut(Progress<'_>) + 'a) -> Self {
        self.progress = Some(Box::new(f));
        self
    }
    /// Stops the running loop once `t` is cancelled.
    pub fn cancel_token(mut self, t: CancelToken) -> Self {
        self.cancel = Some(t);
        self
    }
    /// Replaces the seeded noise of the (first) request with `n`.
    pub fn noise(mut self, n: impl NoiseSource + 'a) -> Self {
        self.noise = Some(Box::new(n));
        self
    }
    /// Streams each output's text as it is decoded (see [`TextDelta`]).
    pub fn on_text(mut self, f: impl FnMut(TextDelta<'_>) + 'a) -> Self {
        self.text = Some(Box::new(f));
        self
    }
    /// Calls `f` with the codes drawn so far every `every` steps of an image loop (and after
    /// the last); `every` 0 is taken as 1.
    pub fn on_preview(mut self, every: usize, f: impl FnMut(Preview<'_>) + 'a) -> Self {
        self.preview = Some((every.max(1), Box::new(f)));
        self
    }

    /// Whether a text callback is set (loops skip incremental decoding otherwise).
    pub fn wants_text(&self) -> bool {
        self.text.is_some()
    }
    /// Delivers a text delta of `output` (empty deltas are dropped).
    pub fn emit_text(&mut self, output: usize, text: &str) {
        if let (Some(f), false) = (self.text.as_mut(), text.is_empty()) {
            f(TextDelta {
                output: self.output_base + output,
                text,
            });
        }
    }
    /// Whether step `step` (1-based count of steps done) of `total` is a preview step.
    pub fn wants_preview(&self, step: usize, total: usize) -> bool {
        match &self.preview {
            Some((every, _)) => step > 0 && (step.is_multiple_of(*every) || step == total),
            None => false,
        }
    }
    /// Delivers a preview (see [`Preview`]).
    pub fn emit_preview(&mut self, p: Preview<'_>) {
        if let Some((_, f)) = self.preview.as_mut() {
            f(Preview {
                output: self.output_base + p.output,
                ..p
            });
        }
    }

    /// The output index the running loop's output 0 has in the whole batch.
    pub fn output_base(&self) -> usize {
        self.output_base
    }

    /// Sets the number of outputs of the batch before the group (or request) about to run, so
    /// that its loops number their outputs from 0.
    pub fn set_output_base(&mut self, base: usize) {
        self.output_base = base;
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

    /// Runs `f` on items `0..n` (the images of a batch being decoded, one at a time),
    /// reporting `stage` step `i` of `n` before item `i` and `n` of `n` after the last: a
    /// cancellation stops the work between two items, not after the whole batch.
    ///
    /// ```
    /// use any2any_core::{CancelToken, Error, Hooks};
    /// let cancel = CancelToken::new();
    /// let c = cancel.clone();
    /// let mut hooks = Hooks::new().cancel_token(cancel);
    /// let r = hooks.each("vq decode", 5, |i| {
    ///     if i == 1 {
    ///         c.cancel();
    ///     }
    ///     Ok(i)
    /// });
    /// assert!(matches!(r, Err(Error::Cancelled { step: 2, total: 5, .. })));
    /// ```
    pub fn each<T>(
        &mut self,
        stage: &str,
        n: usize,
        mut f: impl FnMut(usize) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        for i in 0..n {
            self.step(stage, i, n)?;
            out.push(f(i)?);
        }
        self.step(stage, n, n)?;
        Ok(out)
    }

    /// [`Hooks::each`] over the rows of a batch tensor: `f` maps each `[1, …]` slice of `x`
    /// (dim 0), and the results are concatenated back along dim 0.
    pub fn each_row(
        &mut self,
        stage: &str,
        x: &Tensor,
        mut f: impl FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let rows = self.each(stage, x.dim(0)?, |i| f(&x.narrow(0, i, 1)?))?;
        Ok(Tensor::cat(&rows, 0)?)
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
