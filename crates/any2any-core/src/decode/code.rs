use super::rows::{Head, RowBatch};
use crate::noise::NoiseSource;
use crate::progress::{Hooks, Preview};
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
pub trait Constraint {
    /// The rule for step `step` (0-based).
    fn allowed(&mut self, step: usize) -> Result<Allowed>;
    /// Sees the ids drawn at step `step` (`[B]` u32 on the device), for stateful grammars.
    fn observe(&mut self, step: usize, ids: &Tensor) -> Result<()> {
        let _ = (step, ids);
        Ok(())
    }
}

/// Every id allowed.
pub struct NoConstraint;

impl Constraint for NoConstraint {
    fn allowed(&mut self, _step: usize) -> Result<Allowed> {
        Ok(Allowed::Any)
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
        }
    }

    /// Runs from the last hidden states `hidden` of a prefilled `batch`; the ids drawn,
    /// `[B, steps_run]` u32 (`steps_run` ≤ `steps`, fewer when the constraint ends early).
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
            let next = self.pipe.sample(&logits, mask.as_ref(), noise)?;
            constraint.observe(step, &next)?;
            drawn.push(next.clone());
            self.maybe_preview(&drawn, hooks)?;
            if step + 1 == self.steps {
                break;
            }
            let e = head.embed(&next)?;
            let fed = if streams == 1 {
                e
            } else {
                Tensor::cat(&vec![&e; streams], 0)?
            };
            hidden = batch.step(&fed)?;
        }
        hooks.step(self.stage, self.steps, self.steps)?;
        if drawn.is_empty() {
            return Ok(Tensor::zeros((b, 0), DType::U32, batch.decoder().device())?);
        }
        Ok(Tensor::stack(&drawn, 1)?)
    }

    fn maybe_preview(&self, drawn: &[Tensor], hooks: &mut Hooks) -> Result<()> {
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
