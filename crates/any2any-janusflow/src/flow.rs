//! Text→image: the velocity of the README's rectified-flow loop as a core
//! [`Denoiser`], run by [`LatentLoop`](any2any_core::decode::LatentLoop) under [`FlowEuler`](any2any_core::decode::FlowEuler) (t from 0 = noise to 1 = data, the
//! model sees `t · 1000`).
//!
//! Each prompt row holds the templated prompt without its last token (the generation tag, whose
//! slot the timestep token takes). Guidance rows follow the conditioned ones (stream-major) with
//! the same ids but every token after BOS set to pad and masked out at the same positions
//! ([`MaskKind::HiddenKeys`]), so positions stay those of the conditioned row. The prefix is run
//! once and cached; each step rewinds the cache to it and runs `[t_emb, z tokens…]` after it
//! (the reference recomputes the whole sequence every step: [`FlowDenoiser::recompute`] does
//! the same, for tests).

use crate::model::JanusFlowModel;
use any2any_core::backbone::MaskKind;
use any2any_core::candle_core::Tensor;
use any2any_core::decode::{Denoiser, RowBatch, RowInput};
use any2any_core::{Error, Result};

/// The prompt rows of one text→image batch.
pub struct FlowPrompts {
    /// Per row, the prefix's input embeddings `[len, hidden]`: conditioned rows first, then (with
    /// guidance) their unconditioned copies in the same order.
    pub rows: Vec<Tensor>,
    /// The mask hiding the unconditioned rows' masked tokens.
    pub mask: MaskKind,
}

impl FlowPrompts {
    /// Rows of `prompts` (token ids, BOS first and the generation tag last): the conditioned
    /// rows, and with `guided` the unconditioned rows (`pad` after BOS), each prompt's last
    /// token dropped.
    pub fn new(
        model: &JanusFlowModel,
        prompts: &[Vec<u32>],
        pad: u32,
        guided: bool,
    ) -> Result<Self> {
        let mut ids: Vec<Vec<u32>> = Vec::new();
        for p in prompts {
            if p.len() < 2 {
                return Err(Error::invalid(
                    "prompt",
                    format!(
                        "{} token(s): a text→image prompt needs BOS and the generation tag",
                        p.len()
                    ),
                ));
            }
            ids.push(p[..p.len() - 1].to_vec());
        }
        let cond = ids.len();
        if guided {
            for i in 0..cond {
                let n = ids[i].len();
                let mut u = vec![pad; n];
                u[0] = ids[i][0];
                ids.push(u);
            }
        }
        let max = ids.iter().map(Vec::len).max().unwrap_or(0);
        let hidden = (0..ids.len())
            .map(|r| {
                let start = max - ids[r].len();
                if r >= cond {
                    vec![(start + 1, max)]
                } else {
                    Vec::new()
                }
            })
            .collect();
        let vocab = model.backbone_cfg.vocab_size as u32;
        let dev = model.decoder.device();
        let rows = ids
            .iter()
            .map(|r| {
                if let Some(bad) = r.iter().find(|&&i| i >= vocab) {
                    return Err(Error::invalid(
                        "ids",
                        format!("token id {bad} is outside the vocabulary ({vocab})"),
                    ));
                }
                model.decoder.embed(&Tensor::new(r.as_slice(), dev)?)
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            rows,
            mask: MaskKind::HiddenKeys(hidden),
        })
    }
}

/// The velocity of every row at one step (see the module docs).
pub struct FlowDenoiser<'m> {
    model: &'m JanusFlowModel,
    prompts: FlowPrompts,
    /// The cached prefix and its slot count; `None`: recompute the whole sequence every step.
    cached: Option<(RowBatch<'m>, usize)>,
    /// Each step's velocities, when recording (tests).
    pub recorded: Option<Vec<Tensor>>,
}

impl<'m> FlowDenoiser<'m> {
    /// Runs the prefix once and keeps its KV cache, with room for `span` (`1 + tokens`) slots.
    pub fn cached(model: &'m JanusFlowModel, prompts: FlowPrompts, span: usize) -> Result<Self> {
        let inputs: Vec<RowInput> = prompts.rows.iter().map(RowInput::Embeds).collect();
        let (batch, _) =
            RowBatch::prefill_with(&model.decoder, &inputs, span, prompts.mask.clone())?;
        let len = batch.len();
        Ok(Self {
            model,
            prompts,
            cached: Some((batch, len)),
            recorded: None,
        })
    }

    /// Recomputes prefix and span in one forward every step (as the reference does).
    pub fn recompute(model: &'m JanusFlowModel, prompts: FlowPrompts) -> Self {
        Self {
            model,
            prompts,
            cached: None,
            recorded: None,
        }
    }

    /// Records each step's (unguided, per-row) velocities in [`FlowDenoiser::recorded`].
    pub fn record(mut self) -> Self {
        self.recorded = Some(Vec::new());
        self
    }

    fn hidden(&mut self, span: &Tensor) -> Result<Tensor> {
        let s = span.dim(1)?;
        if let Some((batch, len)) = self.cached.as_mut() {
            batch.truncate(*len)?;
            return batch.step_span(span);
        }
        let rows = self
            .prompts
            .rows
            .iter()
            .enumerate()
            .map(|(r, p)| Ok(Tensor::cat(&[p, &span.get(r)?.to_dtype(p.dtype())?], 0)?))
            .collect::<Result<Vec<_>>>()?;
        let inputs: Vec<RowInput> = rows.iter().map(RowInput::Embeds).collect();
        let (_, h) =
            RowBatch::prefill_all(&self.model.decoder, &inputs, 0, self.prompts.mask.clone())?;
        let n = h.dim(1)?;
        Ok(h.narrow(1, n - s, s)?)
    }
}

impl Denoiser for FlowDenoiser<'_> {
    fn predict(&mut self, x: &Tensor, t: f64, _step: usize) -> Result<Tensor> {
        let rows = self.prompts.rows.len();
        if x.dim(0)? != rows {
            return Err(Error::invalid(
                "latent",
                format!("{} latents for {rows} prompt rows", x.dim(0)?),
            ));
        }
        let (span, enc) = self.model.latent_span(x, t)?;
        let h = self.hidden(&span)?;
        let tokens = h.narrow(1, 1, span.dim(1)? - 1)?;
        let v = self.model.velocity(&tokens, &enc)?;
        if let Some(r) = self.recorded.as_mut() {
            r.push(v.clone());
        }
        Ok(v)
    }
}
