//! The regression loop of `EmuModel.generate_image`: the prompt ends with `[IMG]`; the final-
//! normed hidden state there, through `project_down`, is the first visual embedding; each next
//! one comes from feeding `project_up` of the previous one as an `<image>` slot.
//!
//! The reference re-runs the whole sequence for each of the `n_query` embeddings; the LLM is
//! causal, so the hidden states of the earlier slots do not change and a KV cache gives the same
//! result ([`regress`]). [`regress_recompute`] does it the reference's way, for tests.

use crate::model::Emu2Model;
use any2any_core::candle_core::Tensor;
use any2any_core::decode::{RowBatch, RowInput};
use any2any_core::{Hooks, Result};

/// The progress stage of the loop.
pub const STAGE: &str = "regress";

/// Regresses `n_query` embeddings for every row of `prompts` (input embeddings `[len, hidden]`,
/// each ending at `[IMG]`), batched with a KV cache: `[rows, n_query, width]`. Each row keeps
/// its own positions from 0, as when the reference runs each prompt alone.
pub fn regress(model: &Emu2Model, prompts: &[Tensor], hooks: &mut Hooks) -> Result<Tensor> {
    let n = model.n_query();
    let inputs: Vec<RowInput> = prompts.iter().map(RowInput::Embeds).collect();
    hooks.step(STAGE, 0, n)?;
    let (mut batch, h) = RowBatch::prefill(&model.decoder, &inputs, n.saturating_sub(1))?;
    let mut outs = vec![model.down(&h)?];
    for k in 1..n {
        hooks.step(STAGE, k, n)?;
        let prev = outs.last().map(|t| t.unsqueeze(1)).transpose()?;
        let Some(prev) = prev else { break };
        let h = batch.step(&model.up(&prev)?)?;
        outs.push(model.down(&h)?);
    }
    hooks.step(STAGE, n, n)?;
    Ok(Tensor::stack(&outs, 1)?)
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
