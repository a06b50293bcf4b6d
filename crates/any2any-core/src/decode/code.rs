use super::rows::{Head, RowBatch};
use crate::noise::NoiseSource;
use crate::progress::{Hooks, Preview};
use crate::request::Speculative;
use crate::sampling::LogitsPipeline;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// What a step of a [`CodeLoop`] may draw.
#[derive(Debug, Clone)]
pub enum Allowed {
    /// Any id.
    Any,
    /// An additive mask `[1|B, V]` (0 allowed, −∞ not), applied after guidance.
    Mask(Tensor),
    /// The image is complete: the loop ends before drawing.
    Done,
}

/// The per-step rule of an image loop: which ids step `step` may draw. Layout grammars (Emu3's
/// end-of-row tokens, Lumina-mGPT's size header and row ends) and vocabulary ranges implement it.
///
/// A stateful machine may also pick the sampling of each step ([`Constraint::pipeline`]: e.g.
/// Lumina-mGPT draws text with a text top-k and image tokens with an image top-k in one loop)
/// and end the loop right after a draw ([`Constraint::is_done`]: no forward is spent on ids
/// nobody reads).
pub trait Constraint {
    /// The rule for step `step` (0-based).
    fn allowed(&mut self, step: usize) -> Result<Allowed>;
    /// Sees the ids drawn at step `step` (`[B]` u32 on the device), for stateful grammars.
    fn observe(&mut self, step: usize, ids: &Tensor) -> Result<()> {
        let _ = (step, ids);
        Ok(())
    }
    /// The pipeline step `step` samples with, asked after [`Constraint::allowed`]; `None` (the
    /// default) takes the loop's own. Its guidance must have as many streams as the loop's
    /// pipeline (the batch's rows do not change inside a loop).
    fn pipeline(&self, step: usize) -> Option<&LogitsPipeline> {
        let _ = step;
        None
    }
    /// Whether the sequence is complete after the ids [`Constraint::observe`] last saw: the loop
    /// then ends without feeding them (default: never; the loop runs its steps or until
    /// [`Allowed::Done`]).
    fn is_done(&self) -> bool {
        false
    }
    /// What step `step` may draw, seen from before the draw of step `next` (`step ≥ next`),
    /// assuming the steps between follow the rule: speculative decoding drafts only where this
    /// is known. `None` (the default): not known ahead (it depends on the ids drawn), no draft.
    /// A step answered for samples with the same [`Constraint::pipeline`] as `next`.
    fn ahead(&self, next: usize, step: usize) -> Option<Ahead> {
        let _ = (next, step);
        None
    }
}

/// What a step ahead may draw ([`Constraint::ahead`]): its rule, the one id it is forced to
/// (a row end, a trailer token), and where it sits in a grid of rows (for the spatial prior of
/// speculative drafts).
#[derive(Debug, Clone)]
pub struct Ahead {
    /// The rule of the step.
    pub allowed: Allowed,
    /// The id the step must draw, when only one is allowed.
    pub forced: Option<u32>,
    /// `(column, steps per row)` of a code inside a grid laid out row by row; `None` where the
    /// constraint places none (the loop's [`CodeLoop::row_len`] is used then).
    pub column: Option<(usize, usize)>,
}

impl Ahead {
    /// A step that may draw what `allowed` says, with no forced id and no grid place.
    pub fn free(allowed: Allowed) -> Self {
        Self {
            allowed,
            forced: None,
            column: None,
        }
    }
}

/// Every id allowed.
pub struct NoConstraint;

impl Constraint for NoConstraint {
    fn allowed(&mut self, _step: usize) -> Result<Allowed> {
        Ok(Allowed::Any)
    }
    fn ahead(&self, _next: usize, _step: usize) -> Option<Ahead> {
        Some(Ahead::free(Allowed::Any))
    }
}

/// Only the ids marked in one fixed mask (e.g. a family's image-token range), every step.
pub struct OnlyRange(pub Tensor);

impl OnlyRange {
    /// The `[1, vocab]` mask allowing exactly `ids`.
    pub fn ids(ids: impl IntoIterator<Item = u32>, vocab: usize, device: &Device) -> Result<Self> {
        let mut m = vec![f32::NEG_INFINITY; vocab];
        for i in ids {
            let slot = m
                .get_mut(i as usize)
                .ok_or_else(|| Error::invalid("ids", format!("id {i} ≥ vocabulary {vocab}")))?;
            *slot = 0.0;
        }
        Ok(Self(Tensor::from_vec(m, (1, vocab), device)?))
    }
}

impl Constraint for OnlyRange {
    fn allowed(&mut self, _step: usize) -> Result<Allowed> {
        Ok(Allowed::Mask(self.0.clone()))
    }
    fn ahead(&self, _next: usize, _step: usize) -> Option<Ahead> {
        Some(Ahead::free(Allowed::Mask(self.0.clone())))
    }
}

/// A grid of codes written row by row, a fixed row-end token after each row and fixed trailer
/// tokens after the last row (Lumina-mGPT: `<reserved08799>` per row, then EOI; Emu3: EOL per
/// row, then EOF, EOI, EOS). Position `t` of the layout is a code inside a row, a row end at
/// every `(t + 1) % (cols + 1) == 0`, then the trailer in order; past the end, [`Allowed::Done`].
/// As a [`Constraint`], step `s` is position `start + s` (a loop may resume inside the grid).
#[derive(Debug, Clone)]
pub struct RowGrid {
    rows: usize,
    cols: usize,
    codes: Tensor,
    row_end: Tensor,
    trailer: Vec<Tensor>,
    /// The fixed ids: the row end, then the trailer.
    fixed: (u32, Vec<u32>),
    start: usize,
}

impl RowGrid {
    /// The layout of a `rows × cols` grid of `codes` ids in a vocabulary of `vocab`, `row_end`
    /// after each row and `trailer` after the last.
    pub fn new(
        (rows, cols): (usize, usize),
        codes: &[u32],
        row_end: u32,
        trailer: &[u32],
        vocab: usize,
        device: &Device,
    ) -> Result<Self> {
        if rows == 0 || cols == 0 {
            return Err(Error::invalid(
                "size",
                format!("an empty {rows}×{cols} code grid"),
            ));
        }
        let one = |id: u32| OnlyRange::ids([id], vocab, device).map(|m| m.0);
        Ok(Self {
            rows,
            cols,
            codes: OnlyRange::ids(codes.iter().copied(), vocab, device)?.0,
            row_end: one(row_end)?,
            trailer: trailer.iter().map(|&i| one(i)).collect::<Result<_>>()?,
            fixed: (row_end, trailer.to_vec()),
            start: 0,
        })
    }

    /// The same layout, its step 0 at position `t`.
    pub fn starting_at(mut self, t: usize) -> Self {
        self.start = t;
        self
    }

    /// Positions in the layout: the rows with their row ends, then the trailer.
    pub fn len(&self) -> usize {
        self.rows * (self.cols + 1) + self.trailer.len()
    }

    /// Never: a grid has at least one row of one code.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The grid `(rows, cols)`.
    pub fn grid(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// What position `t` may hold.
    pub fn at(&self, t: usize) -> Allowed {
        let body = self.rows * (self.cols + 1);
        if t < body {
            Allowed::Mask(if (t + 1).is_multiple_of(self.cols + 1) {
                self.row_end.clone()
            } else {
                self.codes.clone()
            })
        } else {
            match self.trailer.get(t - body) {
                Some(m) => Allowed::Mask(m.clone()),
                None => Allowed::Done,
            }
        }
    }

    /// Whether position `t` is a code (not a row end or trailer token).
    pub fn is_code(&self, t: usize) -> bool {
        t < self.rows * (self.cols + 1) && !(t + 1).is_multiple_of(self.cols + 1)
    }

    /// What position `t` may draw as seen ahead: its rule, its fixed id, and for a code its
    /// column in rows of `cols + 1` positions (the row end included).
    pub fn ahead_at(&self, t: usize) -> Ahead {
        Ahead {
            allowed: self.at(t),
            forced: self.fixed_at(t),
            column: self
                .is_code(t)
                .then(|| (t % (self.cols + 1), self.cols + 1)),
        }
    }

    /// The fixed id of position `t` (a row end or a trailer token); `None` for a code position
    /// or past the end.
    pub fn fixed_at(&self, t: usize) -> Option<u32> {
        let body = self.rows * (self.cols + 1);
        if t < body {
            (!self.is_code(t)).then_some(self.fixed.0)
        } else {
            self.fixed.1.get(t - body).copied()
        }
    }
}

impl Constraint for RowGrid {
    fn allowed(&mut self, step: usize) -> Result<Allowed> {
        Ok(self.at(self.start + step))
    }
    fn ahead(&self, _next: usize, step: usize) -> Option<Ahead> {
        Some(self.ahead_at(self.start + step))
    }
}

/// The code of a drawn id, `None` for layout tokens (row ends).
pub type CodeOf<'f> = dyn Fn(u32) -> Option<u32> + 'f;

/// Autoregressive image codes over a [`RowBatch`] of `streams × B` rows stacked stream-major
/// (`[s_0 rows; s_1 rows; …]`, the guidance order of the pipeline): each step mixes the
/// streams, applies the constraint, draws one id per image and feeds it to every stream of
/// that image. The drawn ids stay on the device until the end.
pub struct CodeLoop<'a> {
    /// Guidance and sampling.
    pub pipe: &'a LogitsPipeline,
    /// Steps at most (the constraint may end the image earlier).
    pub steps: usize,
    /// Progress stage name.
    pub stage: &'a str,
    /// For previews ([`Hooks::on_preview`]): the code grid, and the code of a drawn id (`None`
    /// for layout tokens such as row ends).
    pub preview: Option<((usize, usize), &'a CodeOf<'a>)>,
    /// Output index of the first image, for previews.
    pub first_output: usize,
    /// Speculative Jacobi decoding (`None`: one forward pass per step).
    pub speculative: Option<Speculative>,
    /// Steps per image row counted from step 0, for the spatial prior of speculative drafts
    /// where the constraint places steps in no grid ([`Ahead::column`]).
    pub row_len: Option<usize>,
}

impl<'a> CodeLoop<'a> {
    /// A loop of `steps` steps named "image tokens", without previews.
    pub fn new(pipe: &'a LogitsPipeline, steps: usize) -> Self {
        Self {
            pipe,
            steps,
            stage: "image tokens",
            preview: None,
            first_output: 0,
            speculative: None,
            row_len: None,
        }
    }

    /// Runs from the last hidden states `hidden` of a prefilled `batch`; the ids drawn,
    /// `[B, steps_run]` u32 (`steps_run` ≤ `steps`, fewer when the constraint ends early: before
    /// a draw with [`Allowed::Done`], after one with [`Constraint::is_done`]). Each step samples
    /// with the constraint's [`Constraint::pipeline`] when it names one, else with `pipe`.
    /// With [`CodeLoop::speculative`] set, windows of tokens are verified per forward pass
    /// (see [`jacobi`](super::jacobi)): same distribution, greedy gives the same ids.
    /// Forward passes and drafts are counted in [`Hooks::stats`].
    pub fn run(
        &self,
        batch: &mut RowBatch,
        head: &dyn Head,
        hidden: Tensor,
        constraint: &mut dyn Constraint,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let streams = self.pipe.streams();
        let rows = batch.rows();
        if rows == 0 || !rows.is_multiple_of(streams) {
            return Err(Error::invalid(
                "cfg",
                format!("{rows} rows do not split into {streams} guidance streams"),
            ));
        }
        let b = rows / streams;
        if let Some(spec) = self.speculative {
            return self.run_jacobi(spec, batch, head, hidden, constraint, noise, hooks);
        }
        let mut drawn: Vec<Tensor> = Vec::with_capacity(self.steps);
        let mut hidden = hidden;
        for step in 0..self.steps {
            hooks.step(self.stage, step, self.steps)?;
            let mask = match constraint.allowed(step)? {
                Allowed::Done => break,
                Allowed::Any => None,
                Allowed::Mask(m) => Some(m),
            };
            let logits = head.logits(&hidden)?;
            crate::limits::check_finite(&logits, self.stage)?;
            let next = {
                let pipe = constraint.pipeline(step).unwrap_or(self.pipe);
                self.check_streams(pipe, step)?;
                pipe.sample(&logits, mask.as_ref(), noise)?
            };
            constraint.observe(step, &next)?;
            hooks.stats.tokens += b;
            drawn.push(next.clone());
            self.maybe_preview(&drawn, hooks)?;
            if step + 1 == self.steps || constraint.is_done() {
                break;
            }
            let e = head.embed(&next)?;
            let fed = if streams == 1 {
                e
            } else {
                Tensor::cat(&vec![&e; streams], 0)?
            };
            hidden = batch.step(&fed)?;
            hooks.stats.forwards += 1;
        }
        hooks.step(self.stage, self.steps, self.steps)?;
        if drawn.is_empty() {
            return Ok(Tensor::zeros((b, 0), DType::U32, batch.decoder().device())?);
        }
        Ok(Tensor::stack(&drawn, 1)?)
    }

    /// Checks that `pipe` mixes as many guidance streams as the loop's own pipeline.
    pub(super) fn check_streams(&self, pipe: &LogitsPipeline, step: usize) -> Result<()> {
        let streams = self.pipe.streams();
        if pipe.streams() != streams {
            return Err(Error::invalid(
                "cfg",
                format!(
                    "step {step} samples with {} guidance streams in a loop of {streams}",
                    pipe.streams()
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn maybe_preview(&self, drawn: &[Tensor], hooks: &mut Hooks) -> Result<()> {
        let Some((grid, to_code)) = self.preview else {
            return Ok(());
        };
        if !hooks.wants_preview(drawn.len(), self.steps) {
            return Ok(());
        }
        let ids = Tensor::stack(drawn, 1)?.to_vec2::<u32>()?;
        for (i, row) in ids.iter().enumerate() {
            let codes: Vec<u32> = row.iter().filter_map(|&id| to_code(id)).collect();
            hooks.emit_preview(Preview {
                output: self.first_output + i,
                step: drawn.len(),
                total: self.steps,
                grid,
                codes: &codes,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{Decoder, LlamaTextConfig};
    use crate::decode::RowInput;
    use crate::noise::ReplayNoise;
    use crate::sampling::{Guidance, GuidanceSpace, SamplingParams};
    use candle_nn::VarBuilder;

    fn decoder() -> Decoder {
        let text: LlamaTextConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 8, "hidden_size": 8, "intermediate_size": 16,
            "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 32
        }))
        .unwrap();
        let cfg = text.to_backbone("test").unwrap();
        Decoder::load(VarBuilder::zeros(DType::F32, &Device::Cpu), &cfg).unwrap()
    }

    /// Logits `0, 1, …, V−1` on every row whatever the hidden states: a greedy draw takes the
    /// largest allowed id, a temperature-1 draw with uniform 0 the smallest.
    struct Ramp<'a>(&'a Decoder);

    impl Head for Ramp<'_> {
        fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
            let rows = hidden.dim(0)?;
            let v = self.0.config().vocab_size;
            Ok(Tensor::arange(0f32, v as f32, hidden.device())?
                .unsqueeze(0)?
                .repeat((rows, 1))?)
        }
        fn embed(&self, ids: &Tensor) -> Result<Tensor> {
            self.0.embed(&ids.unsqueeze(1)?)
        }
    }

    /// Greedy at even steps, sampled at odd ones; complete after `stop_after` draws.
    struct Alternate {
        greedy: LogitsPipeline,
        sampled: LogitsPipeline,
        seen: Vec<u32>,
        stop_after: usize,
    }

    impl Constraint for Alternate {
        fn allowed(&mut self, _step: usize) -> Result<Allowed> {
            Ok(Allowed::Any)
        }
        fn observe(&mut self, _step: usize, ids: &Tensor) -> Result<()> {
            self.seen.extend(ids.to_vec1::<u32>()?);
            Ok(())
        }
        fn pipeline(&self, step: usize) -> Option<&LogitsPipeline> {
            Some(if step.is_multiple_of(2) {
                &self.greedy
            } else {
                &self.sampled
            })
        }
        fn is_done(&self) -> bool {
            self.seen.len() == self.stop_after
        }
    }

    /// `greedy` at even steps, temperature 1 at odd ones, complete after three draws.
    fn alternate(greedy: LogitsPipeline) -> Alternate {
        let sampled = SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
        };
        Alternate {
            greedy,
            sampled: LogitsPipeline::new(None, sampled),
            seen: Vec::new(),
            stop_after: 3,
        }
    }

    /// `steps` steps of a greedy loop after the prompt `[1, 2]` under `c`: the ids drawn and
    /// the cache slots used.
    fn run_loop(
        d: &Decoder,
        steps: usize,
        c: &mut dyn Constraint,
        noise: &mut ReplayNoise,
    ) -> Result<(Vec<Vec<u32>>, usize)> {
        let greedy = LogitsPipeline::new(None, SamplingParams::greedy());
        let (mut batch, h) = RowBatch::prefill(d, &[RowInput::Ids(&[1, 2])], 16)?;
        let ids = CodeLoop::new(&greedy, steps).run(
            &mut batch,
            &Ramp(d),
            h,
            c,
            noise,
            &mut Hooks::new(),
        )?;
        Ok((ids.to_vec2::<u32>()?, batch.len()))
    }

    #[test]
    fn a_constraint_picks_the_pipeline_per_step_and_ends_after_a_draw() {
        let d = decoder();
        let mut c = alternate(LogitsPipeline::new(None, SamplingParams::greedy()));
        // only the one sampled step draws a uniform
        let mut noise = ReplayNoise::uniforms(vec![0.0]);
        let (ids, used) = run_loop(&d, 6, &mut c, &mut noise).unwrap();
        assert_eq!(ids, vec![vec![7, 0, 7]]);
        assert_eq!(noise.remaining(), (0, 0));
        assert_eq!(used, 2 + 2, "the last draw is not fed");

        // a per-step pipeline with another number of guidance streams is refused
        let guided = LogitsPipeline::new(
            Some(Guidance::two_stream(2.0, GuidanceSpace::Logits)),
            SamplingParams::greedy(),
        );
        let err = run_loop(&d, 6, &mut alternate(guided), &mut noise).unwrap_err();
        assert!(err.to_string().contains("2 guidance streams"), "{err}");
    }

    #[test]
    fn row_grid_writes_rows_row_ends_and_the_trailer() {
        let d = decoder();
        let dev = Device::Cpu;
        let grid = RowGrid::new((2, 2), &[1, 2], 5, &[6], 8, &dev).unwrap();
        assert_eq!((grid.len(), grid.grid()), (7, (2, 2)));
        let codes: Vec<bool> = (0..8).map(|t| grid.is_code(t)).collect();
        assert_eq!(codes, [true, true, false, true, true, false, false, false]);
        assert!(matches!(grid.at(7), Allowed::Done));
        let mut noise = ReplayNoise::default();
        let (ids, _) = run_loop(&d, 12, &mut grid.clone(), &mut noise).unwrap();
        assert_eq!(ids, vec![vec![2, 2, 5, 2, 2, 5, 6]]);
        let (ids, _) = run_loop(&d, 12, &mut grid.starting_at(3), &mut noise).unwrap();
        assert_eq!(ids, vec![vec![2, 2, 5, 6]]);
        assert!(RowGrid::new((0, 2), &[1], 5, &[], 8, &dev).is_err());
        assert!(RowGrid::new((1, 2), &[1], 9, &[], 8, &dev).is_err());
    }
}
