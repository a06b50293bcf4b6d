//! Show-o's MaskGIT text→image loop (`Showo.t2i_generate`), replaying every random draw from a
//! [`NoiseSource`]: per step `N` uniforms for the multinomial (image position order), then `N`
//! for the Gumbel noise (consumed even on the last step, where the temperature is 0).
use crate::config::Vocab;
use crate::model::ShowoModel;
use any2any_core::backbone::MaskKind;
use any2any_core::kv_cache::KvCache;
use any2any_core::sampling::draw_inverse_cdf;
use any2any_core::{Error, NoiseSource, Result};
use candle_core::{Tensor, D};

/// Options of one text→image run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct T2iOptions {
    /// MaskGIT steps (`timesteps`).
    pub steps: usize,
    /// Show-o's `guidance_scale` s: logits = (1+s)·cond − s·uncond; 0 runs no uncond row.
    pub guidance_scale: f64,
    /// Initial Gumbel temperature (annealed and compounding, as the official loop does).
    pub temperature: f64,
    /// Compute the KV of the text part (everything before `[soi]`, which never sees the image)
    /// once and re-run only `[soi] image [eoi]` per step; the reference re-runs everything.
    pub cache_prefix: bool,
}

/// `cos(ratio · π/2)` evaluated in f32 like `cosine_schedule(torch.tensor(ratio))`.
pub fn cosine_mask_ratio(step: usize, steps: usize) -> f32 {
    let ratio = (step + 1) as f64 / steps as f64;
    let t = ratio as f32;
    (t * std::f32::consts::PI * 0.5f32).cos()
}

/// Number of positions re-masked after `step`: `max(1, min(unknown-1, floor(N·mask_ratio)))`.
pub fn mask_len(step: usize, steps: usize, n: usize, unknown: usize) -> usize {
    let raw = (n as f32 * cosine_mask_ratio(step, steps)).floor() as i64;
    raw.min(unknown as i64 - 1).max(1) as usize
}

fn official_log(x: f32) -> f32 {
    x.max(1e-20).ln()
}

/// The per-step record of a run (for tests and traces).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepTrace {
    /// The raw multinomial draws (every position, before known codes are restored).
    pub drawn: Vec<u32>,
    /// Codes after restoring the known ones.
    pub sampled: Vec<u32>,
    pub mask_len: usize,
    pub remasked: Vec<usize>,
}

/// The cond/uncond image-span logits of one forward: `[N, K]` after CFG (codes only).
pub fn step_logits(
    model: &ShowoModel,
    v: &Vocab,
    rows: &[Vec<u32>],
    mask: &MaskKind,
    n: usize,
    guidance_scale: f64,
) -> Result<(Tensor, Vec<Tensor>)> {
    step_logits_from(model, v, rows, mask, n, guidance_scale, None)
}

/// As [`step_logits`]; with a `cache` holding the KV of the first `cache.len()` slots of every
/// row, only the rest is run (the cache is truncated back afterwards).
fn step_logits_from(
    model: &ShowoModel,
    v: &Vocab,
    rows: &[Vec<u32>],
    mask: &MaskKind,
    n: usize,
    guidance_scale: f64,
    cache: Option<&mut KvCache>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let len = rows[0].len();
    let start = cache.as_ref().map_or(0, |c| c.len());
    let flat: Vec<u32> = rows
        .iter()
        .flat_map(|r| r[start..].iter())
        .copied()
        .collect();
    let ids = Tensor::from_vec(flat, (rows.len(), len - start), model.device())?;
    let logits = match cache {
        Some(c) => {
            let out = model.forward_cached(&ids, mask, c)?;
            c.truncate(start);
            out
        }
        None => model.forward(&ids, mask)?,
    };
    let k = v.codebook_size;
    let span =
        logits
            .narrow(1, len - start - n - 1, n)?
            .narrow(D::Minus1, v.code_offset as usize, k)?;
    let per_row: Vec<Tensor> = (0..rows.len())
        .map(|r| span.get(r))
        .collect::<candle_core::Result<_>>()?;
    let out = if rows.len() == 2 {
        ((&per_row[0] * (1.0 + guidance_scale))? - (&per_row[1] * guidance_scale)?)?
    } else {
        per_row[0].clone()
    };
    Ok((out, per_row))
}

/// Runs the MaskGIT loop on one prompt row (`cond`, ending `[soi] [mask]*N [eoi]`) and, when
/// `guidance_scale > 0`, its unconditional row `uncond` (same length; its prefix up to
/// `prefix_len` is kept and its image span follows cond's). Returns the last step's sampled
/// codes (all `N` filled) and the per-step trace.
pub fn t2i_generate(
    model: &ShowoModel,
    cond: &[u32],
    uncond: Option<&[u32]>,
    prefix_len: usize,
    opts: &T2iOptions,
    noise: &mut dyn NoiseSource,
) -> Result<(Vec<u32>, Vec<StepTrace>)> {
    let v = model.config.vocab();
    let n = model.config.num_vq_tokens;
    let len = cond.len();
    if len < n + 2 || opts.steps == 0 {
        return Err(Error::invalid(
            "t2i",
            format!("prompt of {len} ids for {n} codes, {} steps", opts.steps),
        ));
    }
    let span = len - n - 1..len - 1;
    let use_cfg = opts.guidance_scale > 0.0 && uncond.is_some();
    let mut rows = vec![cond.to_vec()];
    if use_cfg {
        let u = uncond.unwrap_or_default();
        if u.len() != len || prefix_len > span.start {
            return Err(Error::invalid("t2i", "uncond row does not match cond"));
        }
        rows.push(u.to_vec());
    }
    let mask = crate::prompt::omni_mask_t2i(&v, &rows)?;
    // text slots end at [soi]; their KV never depends on the image span
    let mut cache = if opts.cache_prefix {
        let text = span.start - 1;
        let mut c = model.decoder.new_cache(rows.len(), len)?;
        let flat: Vec<u32> = rows
            .iter()
            .flat_map(|r| r[..text].iter())
            .copied()
            .collect();
        let ids = Tensor::from_vec(flat, (rows.len(), text), model.device())?;
        model.forward_cached(&ids, &mask, &mut c)?;
        Some(c)
    } else {
        None
    };
    // codes (or the mask id) of the image span
    let mut known: Vec<u32> = cond[span.clone()]
        .iter()
        .map(|&t| {
            if t == v.mask {
                v.mask
            } else {
                t - v.code_offset
            }
        })
        .collect();
    let mut temperature = opts.temperature;
    let mut trace = Vec::with_capacity(opts.steps);
    let mut sampled = vec![0u32; n];
    for step in 0..opts.steps {
        if use_cfg {
            let (head, tail) = rows.split_at_mut(1);
            tail[0][prefix_len..].copy_from_slice(&head[0][prefix_len..]);
        }
        let (logits, _) = step_logits_from(
            model,
            &v,
            &rows,
            &mask,
            n,
            opts.guidance_scale,
            cache.as_mut(),
        )?;
        let u = noise.uniform(n)?;
        let drawn = draw_inverse_cdf(&logits, &u)?.to_vec1::<u32>()?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
        let unknown: Vec<bool> = known.iter().map(|&c| c == v.mask).collect();
        for i in 0..n {
            sampled[i] = if unknown[i] { drawn[i] } else { known[i] };
        }
        let ratio = (step + 1) as f64 / opts.steps as f64;
        let n_unknown = unknown.iter().filter(|&&b| b).count();
        let ml = mask_len(step, opts.steps, n, n_unknown);
        temperature *= 1.0 - ratio;
        let g = noise.uniform(n)?;
        let conf: Vec<f32> = (0..n)
            .map(|i| {
                let p = if unknown[i] {
                    probs[i][sampled[i] as usize]
                } else {
                    f32::MAX
                };
                let gumbel = -official_log(-official_log(g[i]));
                official_log(p) + (temperature as f32) * gumbel
            })
            .collect();
        let mut sorted = conf.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let cut = sorted[ml.min(n - 1)];
        let mut remasked = Vec::new();
        for i in 0..n {
            if conf[i] < cut {
                known[i] = v.mask;
                rows[0][span.start + i] = v.mask;
                remasked.push(i);
            } else {
                known[i] = sampled[i];
                rows[0][span.start + i] = sampled[i] + v.code_offset;
            }
        }
        trace.push(StepTrace {
            drawn,
            sampled: sampled.clone(),
            mask_len: ml,
            remasked,
        });
    }
    let k = v.codebook_size as u32;
    Ok((sampled.iter().map(|&c| c.min(k - 1)).collect(), trace))
}
