//! Show-o's prompt layouts and omni-attention masks (`training/prompting_utils.py`).
use crate::config::Vocab;
use any2any_core::backbone::MaskKind;
use any2any_core::{Error, Result};

/// `[PAD]*k [t2i] [bos] text [eos] [soi] [mask]*N [eoi]`, the part before `[soi]` left-padded to
/// `max_seq_length + 1`. `bos` is prepended only when `text` does not start with it.
pub fn t2i_prompt(
    v: &Vocab,
    text: &[u32],
    bos_eos: u32,
    max_seq_length: usize,
    num_vq_tokens: usize,
) -> Result<Vec<u32>> {
    let mut t = vec![v.t2i];
    if text.first() != Some(&bos_eos) {
        t.push(bos_eos);
    }
    t.extend_from_slice(text);
    t.push(bos_eos);
    if t.len() > max_seq_length + 1 {
        // Show-o truncates the text; we refuse rather than cut silently.
        return Err(Error::invalid(
            "prompt",
            format!(
                "{} text tokens exceed max_seq_length {max_seq_length}",
                t.len() - 1
            ),
        ));
    }
    let mut ids = vec![v.pad; max_seq_length + 1 - t.len()];
    ids.extend(t);
    ids.push(v.soi);
    ids.extend(std::iter::repeat_n(v.mask, num_vq_tokens));
    ids.push(v.eoi);
    Ok(ids)
}

/// `create_attention_mask_predict_next(rm_pad_in_image=True)` for each row of `rows`
/// (all of one length): text rows causal, rows after the last pad never see pads, rows from
/// `[soi]` to `[eoi]` see every non-pad token; pad rows causal among themselves.
pub fn omni_mask_t2i(v: &Vocab, rows: &[Vec<u32>]) -> Result<MaskKind> {
    let len = rows.first().map_or(0, |r| r.len());
    let mut visible = vec![false; rows.len() * len * len];
    for (r, ids) in rows.iter().enumerate() {
        if ids.len() != len {
            return Err(Error::invalid("prompt", "rows of different lengths"));
        }
        let last_pad = ids.iter().rposition(|&t| t == v.pad);
        let soi = ids.iter().position(|&t| t == v.soi);
        let mut in_img = vec![false; len];
        let mut open = false;
        for (i, &t) in ids.iter().enumerate() {
            if t == v.soi {
                open = true;
            }
            in_img[i] = open;
            if t == v.eoi {
                open = false;
            }
        }
        for q in 0..len {
            for k in 0..len {
                let is_pad_k = ids[k] == v.pad;
                let ok = if in_img[q] {
                    // bidirectional over all tokens, pads removed from soi on
                    !(soi.is_some_and(|s| q >= s) && is_pad_k)
                } else {
                    k <= q && !last_pad.is_some_and(|p| q > p && k <= p)
                };
                visible[(r * len + q) * len + k] = ok;
            }
        }
    }
    Ok(MaskKind::Explicit { len, visible })
}

/// `create_attention_mask_for_mmu`: causal, plus every row sees columns `0..=eoi` (the
/// bidirectional `[mmu] [soi] image [eoi]` prefix); rows past `prefix_len` are causal (Show-o's
/// generation extends the mask by copying the last row). `len` = total slots.
pub fn omni_mask_mmu(rows: usize, eoi_index: usize, len: usize) -> MaskKind {
    let mut visible = vec![false; rows * len * len];
    for r in 0..rows {
        for q in 0..len {
            for k in 0..len {
                visible[(r * len + q) * len + k] = k <= q || k <= eoi_index;
            }
        }
    }
    MaskKind::Explicit { len, visible }
}
