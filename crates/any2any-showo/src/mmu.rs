//! Show-o image→text (`Showo.mmu_generate` with `top_k=1`): greedy over the full merged
//! vocabulary under the MMU omni mask (bidirectional `[mmu] [soi] image [eoi]` prefix, causal
//! after); the stop token is appended and then generation stops.
use crate::model::ShowoModel;
use crate::prompt::omni_mask_mmu;
use any2any_core::{Error, Result};
use candle_core::{Tensor, D};

/// Greedy MMU generation over `ids` (`[mmu] [soi] codes [eoi] text…`). With `cached` the
/// prompt's KV is computed once and each new token is one step; without, every step re-runs
/// the whole sequence as the reference does. Returns the new ids and the step-0 logits.
pub fn mmu_greedy(
    model: &ShowoModel,
    ids: &[u32],
    max_new_tokens: usize,
    eot: Option<u32>,
    cached: bool,
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
    let mut cache = model.decoder.new_cache(1, total)?;
    let mut fed = 0;
    for step in 0..max_new_tokens {
        let logits = if cached {
            let new = Tensor::from_slice(&seq[fed..], (1, seq.len() - fed), dev)?;
            fed = seq.len();
            model.forward_cached(&new, &mask, &mut cache)?
        } else {
            let all = Tensor::from_slice(&seq, (1, seq.len()), dev)?;
            let len = seq.len();
            model.forward(&all, &sub_mask(&mask, total, len))?
        };
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
