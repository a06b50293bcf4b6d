//! The regression loop of `EmuModel.generate_image`: the prompt ends with `[IMG]`; the final-
//! normed hidden state there, through `project_down`, is the first visual embedding; each next
//! one comes from feeding `project_up` of the previous one as an `<image>` slot.
//!
//! The reference re-runs the whole sequence for each of the `n_query` embeddings; the LLM is
//! causal, so the hidden states of the earlier slots do not change and a KV cache gives the same
//! result ([`regress`]). [`regress_recompute`] does it the reference's way, for tests.

use crate::model::Emu2Model;
use any2any_core::backbone::Decoder;
use any2any_core::candle_core::{Module, Tensor};
use any2any_core::decode::{RowBatch, RowInput};
use any2any_core::nn::Linear;
use any2any_core::{Hooks, Result};

/// The progress stage of the loop.
pub const STAGE: &str = "regress";

/// What the regression runs on: the LLM and the two projections (the EVA tower plays no part,
/// so `any2any bench` builds only these).
#[derive(Clone, Copy)]
pub struct Regression<'a> {
    /// The LLM.
    pub decoder: &'a Decoder,
    /// `project_up`: tower width → LLM width.
    pub project_up: &'a Linear,
    /// `project_down`: LLM width → tower width.
    pub project_down: &'a Linear,
    /// Embeddings to regress per prompt.
    pub n_query: usize,
}

impl Regression<'_> {
    /// `project_down` of final-normed hidden states.
    fn down(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.project_down.forward(hidden)?)
    }

    /// `project_up` of regressed embeddings, in the decoder's dtype.
    fn up(&self, embeds: &Tensor) -> Result<Tensor> {
        Ok(self
            .project_up
            .forward(&embeds.to_dtype(self.decoder.dtype())?)?)
    }

    /// Regresses `n_query` embeddings for every row of `prompts` (input embeddings
    /// `[len, hidden]`, each ending at `[IMG]`), batched with a KV cache:
    /// `[rows, n_query, width]`. Each row keeps its own positions from 0, as when the reference
    /// runs each prompt alone. Progress goes to `hooks` once per embedding.
    pub fn run(&self, prompts: &[Tensor], hooks: &mut Hooks) -> Result<Tensor> {
        let n = self.n_query;
        let inputs: Vec<RowInput> = prompts.iter().map(RowInput::Embeds).collect();
        hooks.step(STAGE, 0, n)?;
        let (mut batch, h) = RowBatch::prefill(self.decoder, &inputs, n.saturating_sub(1))?;
        let mut outs = vec![self.down(&h)?];
        for k in 1..n {
            hooks.step(STAGE, k, n)?;
            let prev = outs.last().map(|t| t.unsqueeze(1)).transpose()?;
            let Some(prev) = prev else { break };
            let h = batch.step(&self.up(&prev)?)?;
            outs.push(self.down(&h)?);
        }
        hooks.step(STAGE, n, n)?;
        Ok(Tensor::stack(&outs, 1)?)
    }
}

/// [`Regression::run`] on the model's parts.
pub fn regress(model: &Emu2Model, prompts: &[Tensor], hooks: &mut Hooks) -> Result<Tensor> {
    model.regression().run(prompts, hooks)
}

/// [`regress`] as the reference does it: for `k` = 1…n, the prompt plus `project_up` of the
/// `k − 1` embeddings so far run from scratch, and the last `k` hidden states give all `k`.
pub fn regress_recompute(model: &Emu2Model, prompts: &[Tensor]) -> Result<Tensor> {
    let n = model.n_query();
    let mut out: Option<Tensor> = None;
    for k in 1..=n {
        let rows = prompts
            .iter()
            .enumerate()
            .map(|(r, p)| match &out {
                Some(o) => Ok(Tensor::cat(&[p, &model.up(&o.get(r)?)?], 0)?),
                None => Ok(p.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        let inputs: Vec<RowInput> = rows.iter().map(RowInput::Embeds).collect();
        let (_, h) = RowBatch::prefill_all(
            &model.decoder,
            &inputs,
            0,
            any2any_core::backbone::MaskKind::Causal,
        )?;
        let len = h.dim(1)?;
        out = Some(model.down(&h.narrow(1, len - k, k)?)?);
    }
    out.ok_or_else(|| any2any_core::Error::invalid("n_query", "0 visual tokens to regress"))
}
