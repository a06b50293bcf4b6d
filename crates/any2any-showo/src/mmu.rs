//! Show-o image→text (`Showo.mmu_generate` with `top_k=1`): greedy over the full merged
//! vocabulary under the MMU omni mask (bidirectional `[mmu] [soi] image [eoi]` prefix, causal
//! after); the stop token is appended and then generation stops.
use crate::model::ShowoModel;
use crate::prompt::omni_mask_mmu;
use any2any_core::backbone::MaskKind;
use any2any_core::decode::{Head, LmHead, RowBatch, RowInput, TextLoop, TextRow, TokenAction};
use any2any_core::noise::{SeededNoise, StackedNoise};
use any2any_core::sampling::{LogitsPipeline, SamplingParams};
use any2any_core::{Error, Hooks, Result};
use candle_core::{Tensor, D};

/// Greedy MMU generation over `ids` (`[mmu] [soi] codes [eoi] text…`). With `cached` the
/// prompt's KV is computed once and each new token is one step of the shared text loop;
/// without, every step re-runs the whole sequence as the reference does. Returns the new ids
/// and the step-0 logits.
pub fn mmu_greedy(
    model: &ShowoModel,
    ids: &[u32],
    max_new_tokens: usize,
    eot: Option<u32>,
    cached: bool,
) -> Result<(Vec<u32>, Vec<f32>)> {
    if !cached {
        return mmu_greedy_uncached(model, ids, max_new_tokens, eot);
    }
    let pipe = LogitsPipeline::new(None, SamplingParams::greedy());
    let stop: Vec<u32> = eot.into_iter().collect();
    let mut noise = StackedNoise::new(vec![(Box::new(SeededNoise::new(0)), 1)]);
    let req = Mmu {
        prompts: &[ids],
        outputs: &[1],
        max_new: max_new_tokens,
        stop: &stop,
        pipe: &pipe,
    };
    let (mut rows, step0) = mmu_generate(model, &req, &mut noise, &mut Hooks::new(), None)?;
    Ok((rows.pop().map(|r| r.ids).unwrap_or_default(), step0))
}

/// One MMU batch: prompts (each `[mmu] [soi] codes [eoi] text…`), outputs per prompt, the
/// budget, the stop ids and the sampling.
pub struct Mmu<'a> {
    /// The prompts, each `[mmu] [soi] codes [eoi] text…`.
    pub prompts: &'a [&'a [u32]],
    /// Outputs (rows) per prompt, one entry per prompt.
    pub outputs: &'a [usize],
    /// Most new tokens per row.
    pub max_new: usize,
    /// Ids that end a row (appended, then the row stops).
    pub stop: &'a [u32],
    /// The sampling of every row.
    pub pipe: &'a LogitsPipeline,
}

/// MMU generation on the shared text loop: every output of every prompt is one row; the
/// image prefix (through `[eoi]`) is bidirectional, the rest causal. Returns each row's text
/// and the first row's step-0 logits.
pub fn mmu_generate(
    model: &ShowoModel,
    req: &Mmu,
    noise: &mut StackedNoise,
    hooks: &mut Hooks,
    tok: Option<&any2any_core::tokenizers::Tokenizer>,
) -> Result<(Vec<TextRow>, Vec<f32>)> {
    let v = model.config.vocab();
    let eoi = req
        .prompts
        .iter()
        .map(|ids| ids.iter().position(|&t| t == v.eoi))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| Error::invalid("prompt", "MMU prompt holds no [eoi]"))?;
    let longest = req.prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    // The bidirectional prefix in padded slots; every prompt's [eoi] must sit at the same slot.
    let prefix: Vec<usize> = req
        .prompts
        .iter()
        .zip(&eoi)
        .map(|(p, e)| longest - p.len() + e + 1)
        .collect();
    if prefix.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::invalid(
            "prompt",
            "MMU prompts of one batch must share their text length",
        ));
    }
    let mut rows = Vec::new();
    for (p, &n) in req.prompts.iter().zip(req.outputs) {
        rows.extend(std::iter::repeat_n(RowInput::Ids(p), n));
    }
    let mask = MaskKind::BidirectionalPrefix(prefix.first().copied().unwrap_or(0));
    let (mut batch, hidden) = RowBatch::prefill_with(&model.decoder, &rows, req.max_new, mask)?;
    let head = LmHead {
        decoder: &model.decoder,
        head: &model.lm_head,
    };
    let step0 = head
        .logits(&hidden.narrow(0, 0, 1)?)?
        .squeeze(0)?
        .to_vec1::<f32>()?;
    let out = TextLoop::new(req.pipe, req.max_new, req.stop)
        .tokenizer(tok)
        .run(&mut batch, &head, hidden, noise, hooks, &mut |_, _| {
            TokenAction::Continue
        })?;
    Ok((out, step0))
}

/// The reference's way: the whole sequence re-run every step under the MMU omni mask.
fn mmu_greedy_uncached(
    model: &ShowoModel,
    ids: &[u32],
    max_new_tokens: usize,
    eot: Option<u32>,
) -> Result<(Vec<u32>, Vec<f32>)> {
    let v = model.config.vocab();
    let eoi = ids
        .iter()
        .position(|&t| t == v.eoi)
        .ok_or_else(|| Error::invalid("prompt", "MMU prompt holds no [eoi]"))?;
    let total = ids.len() + max_new_tokens;
    let mask = omni_mask_mmu(1, eoi, total);
    let dev = model.device();
    let mut seq = ids.to_vec();
    let mut out = Vec::new();
    let mut step0 = Vec::new();
    for step in 0..max_new_tokens {
        let all = Tensor::from_slice(&seq, (1, seq.len()), dev)?;
        let logits = model.forward(&all, &sub_mask(&mask, total, seq.len()))?;
        let last = logits.get(0)?.get(logits.dim(1)? - 1)?;
        if step == 0 {
            step0 = last.to_vec1::<f32>()?;
        }
        let next = last.argmax(D::Minus1)?.to_scalar::<u32>()?;
        out.push(next);
        seq.push(next);
        if Some(next) == eot {
            break;
        }
    }
    Ok((out, step0))
}

/// The top-left `len × len` corner of a one-row explicit mask over `total` slots.
fn sub_mask(
    mask: &any2any_core::backbone::MaskKind,
    total: usize,
    len: usize,
) -> any2any_core::backbone::MaskKind {
    use any2any_core::backbone::MaskKind;
    match mask {
        MaskKind::Explicit { visible, .. } => MaskKind::Explicit {
            len,
            visible: (0..len)
                .flat_map(|q| visible[q * total..q * total + len].iter().copied())
                .collect(),
        },
        other => other.clone(),
    }
}
