//! Show-o's MaskGIT text→image loop (`Showo.t2i_generate`), replaying every random draw from a
//! [`NoiseSource`]: per step `N` uniforms for the multinomial (image position order), then `N`
//! for the Gumbel noise (consumed even on the last step, where the temperature is 0).
use crate::config::Vocab;
use crate::model::ShowoModel;
use any2any_core::backbone::MaskKind;
use any2any_core::decode::{RowBatch, RowInput};
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
    /// How many positions the step re-masks ([`mask_len`]).
    pub mask_len: usize,
    /// The positions re-masked (lowest confidence), ascending.
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
/// row, only the rest is run (the batch is truncated back afterwards).
fn step_logits_from(
    model: &ShowoModel,
    v: &Vocab,
    rows: &[Vec<u32>],
    mask: &MaskKind,
    n: usize,
    guidance_scale: f64,
    cache: Option<&mut RowBatch>,
) -> Result<(Tensor, Vec<Tensor>)> {
    let span = image_span_logits(model, v, rows, mask, n, cache)?;
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

/// One image of a batched MaskGIT loop: its prompt row, its unconditional row and settings.
#[derive(Debug, Clone, Copy)]
pub struct MaskgitRow<'a> {
    /// `… [soi] img×N [eoi]`; image slots hold `code + code_offset` (kept) or the mask id
    /// (regenerated).
    pub cond: &'a [u32],
    /// The unconditional row (same length; its slots from `prefix_len` on follow cond's); used
    /// when `guidance_scale > 0`.
    pub uncond: Option<&'a [u32]>,
    /// Slots before `[soi]` that differ between cond and uncond (`max_seq_length + 1`).
    pub prefix_len: usize,
    /// Show-o's `guidance_scale` s: logits = (1+s)·cond − s·uncond; 0 runs no uncond row.
    pub guidance_scale: f64,
    /// Initial Gumbel temperature (annealed and compounding, as the official loop does).
    pub temperature: f64,
}

/// Runs the MaskGIT loop on one prompt row (`cond`, ending `[soi] [mask]*N [eoi]`) and, when
/// `guidance_scale > 0`, its unconditional row `uncond` (same length; its prefix up to
/// `prefix_len` is kept and its image span follows cond's). Returns the last step's sampled
/// codes (all `N` filled, clamped to the codebook) and the per-step trace.
pub fn t2i_generate(
    model: &ShowoModel,
    cond: &[u32],
    uncond: Option<&[u32]>,
    prefix_len: usize,
    opts: &T2iOptions,
    noise: &mut dyn NoiseSource,
) -> Result<(Vec<u32>, Vec<StepTrace>)> {
    let row = MaskgitRow {
        cond,
        uncond,
        prefix_len,
        guidance_scale: opts.guidance_scale,
        temperature: opts.temperature,
    };
    let mut out = t2i_generate_batch(
        model,
        &[row],
        opts.steps,
        opts.cache_prefix,
        &mut [noise],
        &mut |_, _| Ok(()),
    )?;
    out.pop()
        .ok_or_else(|| Error::invalid("t2i", "no row was generated"))
}

/// Per-image state of a batched loop.
struct RowState {
    /// Index of the cond row (and the uncond row right after it when `cfg`).
    row: usize,
    cfg: bool,
    prefix_len: usize,
    guidance_scale: f64,
    temperature: f64,
    /// Codes (or the mask id) of the image span.
    known: Vec<u32>,
    sampled: Vec<u32>,
    trace: Vec<StepTrace>,
}

/// The MaskGIT loop over several images at once: every row of `rows` (all of one length and one
/// step count) runs in one forward per step, each with its own mask, guidance, temperature and
/// noise source (`noises[i]` feeds `rows[i]`, drawn in the same order as a lone run, so each
/// image gets exactly the codes it gets alone). `on_step(step, steps)` runs before each step
/// (progress and cancellation). Returns, per row, the final codes and the trace.
pub fn t2i_generate_batch(
    model: &ShowoModel,
    rows: &[MaskgitRow<'_>],
    steps: usize,
    cache_prefix: bool,
    noises: &mut [&mut dyn NoiseSource],
    on_step: &mut dyn FnMut(usize, usize) -> Result<()>,
) -> Result<Vec<(Vec<u32>, Vec<StepTrace>)>> {
    let v = model.config.vocab();
    let n = model.config.num_vq_tokens;
    let len = rows.first().map_or(0, |r| r.cond.len());
    if rows.is_empty() || len < n + 2 || steps == 0 || noises.len() != rows.len() {
        return Err(Error::invalid(
            "t2i",
            format!(
                "{} prompts of {len} ids for {n} codes, {steps} steps, {} noise sources",
                rows.len(),
                noises.len()
            ),
        ));
    }
    let span = len - n - 1..len - 1;
    let (mut ids, mut states) = row_states(&v, rows, len, &span, n, steps)?;
    let mask = crate::prompt::omni_mask_t2i(&v, &ids)?;
    let mut cache = if cache_prefix {
        Some(prefix_cache(model, &ids, &mask, span.start - 1, len)?)
    } else {
        None
    };
    for step in 0..steps {
        on_step(step, steps)?;
        for st in &states {
            if st.cfg {
                let (head, tail) = ids.split_at_mut(st.row + 1);
                tail[0][st.prefix_len..].copy_from_slice(&head[st.row][st.prefix_len..]);
            }
        }
        let span_logits = image_span_logits(model, &v, &ids, &mask, n, cache.as_mut())?;
        any2any_core::limits::check_finite(&span_logits, "image tokens")?;
        for (st, noise) in states.iter_mut().zip(noises.iter_mut()) {
            let cond = span_logits.get(st.row)?;
            let logits = if st.cfg {
                let unc = span_logits.get(st.row + 1)?;
                ((cond * (1.0 + st.guidance_scale))? - (unc * st.guidance_scale)?)?
            } else {
                cond
            };
            let row = &mut ids[st.row];
            one_step(&v, st, &logits, step, steps, &mut **noise, row, span.start)?;
        }
    }
    let k = v.codebook_size as u32;
    Ok(states
        .into_iter()
        .map(|st| (st.sampled.iter().map(|&c| c.min(k - 1)).collect(), st.trace))
        .collect())
}

/// The id rows of a batched loop (each cond row, followed by its uncond row when it runs
/// guidance) and the per-image state; checks every row against the first row's length `len`.
fn row_states(
    v: &Vocab,
    rows: &[MaskgitRow<'_>],
    len: usize,
    span: &std::ops::Range<usize>,
    n: usize,
    steps: usize,
) -> Result<(Vec<Vec<u32>>, Vec<RowState>)> {
    let mut ids: Vec<Vec<u32>> = Vec::new();
    let mut states = Vec::with_capacity(rows.len());
    for r in rows {
        if r.cond.len() != len {
            return Err(Error::invalid("t2i", "prompt rows of different lengths"));
        }
        let cfg = r.guidance_scale > 0.0 && r.uncond.is_some();
        let row = ids.len();
        ids.push(r.cond.to_vec());
        if cfg {
            let u = r.uncond.unwrap_or_default();
            if u.len() != len || r.prefix_len > span.start {
                return Err(Error::invalid("t2i", "uncond row does not match cond"));
            }
            ids.push(u.to_vec());
        }
        let known = r.cond[span.clone()]
            .iter()
            .map(|&t| match t.checked_sub(v.code_offset) {
                Some(c) if t != v.mask && (c as usize) < v.codebook_size => Ok(c),
                _ if t == v.mask => Ok(v.mask),
                _ => Err(Error::invalid(
                    "t2i",
                    format!("image slot holds {t}, neither a code nor the mask id"),
                )),
            })
            .collect::<Result<Vec<u32>>>()?;
        states.push(RowState {
            row,
            cfg,
            prefix_len: r.prefix_len,
            guidance_scale: r.guidance_scale,
            temperature: r.temperature,
            known,
            sampled: vec![0u32; n],
            trace: Vec::with_capacity(steps),
        });
    }
    Ok((ids, states))
}

/// A row batch (room up to `len`) prefilled with the first `text` slots of every row under the
/// loop's mask: the text slots end at `[soi]`, and their KV never depends on the image span.
fn prefix_cache<'m>(
    model: &'m ShowoModel,
    ids: &[Vec<u32>],
    mask: &MaskKind,
    text: usize,
    len: usize,
) -> Result<RowBatch<'m>> {
    let rows: Vec<RowInput> = ids.iter().map(|r| RowInput::Ids(&r[..text])).collect();
    let (batch, _) = RowBatch::prefill_with(&model.decoder, &rows, len - text, mask.clone())?;
    Ok(batch)
}

/// The `[rows, N, K]` code logits of the image span of one forward over `ids` (after what
/// `cache` holds; the batch is truncated back to its prefix afterwards).
fn image_span_logits(
    model: &ShowoModel,
    v: &Vocab,
    ids: &[Vec<u32>],
    mask: &MaskKind,
    n: usize,
    cache: Option<&mut RowBatch>,
) -> Result<Tensor> {
    let len = ids[0].len();
    let start = cache.as_ref().map_or(0, |c| c.len());
    let flat: Vec<u32> = ids
        .iter()
        .flat_map(|r| r[start..].iter())
        .copied()
        .collect();
    let x = Tensor::from_vec(flat, (ids.len(), len - start), model.device())?;
    let logits = match cache {
        Some(batch) => {
            let h = batch.step_span(&model.decoder.embed(&x)?);
            batch.truncate(start)?;
            model.logits(&h?)?
        }
        None => model.forward(&x, mask)?,
    };
    Ok(logits.narrow(1, len - start - n - 1, n)?.narrow(
        D::Minus1,
        v.code_offset as usize,
        v.codebook_size,
    )?)
}

/// Sampling, schedule and re-masking of one image after one forward (`logits` `[N, K]`).
#[allow(clippy::too_many_arguments)]
fn one_step(
    v: &Vocab,
    st: &mut RowState,
    logits: &Tensor,
    step: usize,
    steps: usize,
    noise: &mut dyn NoiseSource,
    row: &mut [u32],
    span_start: usize,
) -> Result<()> {
    let n = st.known.len();
    let u = noise.uniform(n)?;
    let drawn = draw_inverse_cdf(logits, &u)?.to_vec1::<u32>()?;
    let probs = candle_nn::ops::softmax_last_dim(logits)?.to_vec2::<f32>()?;
    let unknown: Vec<bool> = st.known.iter().map(|&c| c == v.mask).collect();
    for i in 0..n {
        st.sampled[i] = if unknown[i] { drawn[i] } else { st.known[i] };
    }
    let ratio = (step + 1) as f64 / steps as f64;
    let n_unknown = unknown.iter().filter(|&&b| b).count();
    let ml = mask_len(step, steps, n, n_unknown);
    st.temperature *= 1.0 - ratio;
    let g = noise.uniform(n)?;
    let conf: Vec<f32> = (0..n)
        .map(|i| {
            let p = if unknown[i] {
                probs[i][st.sampled[i] as usize]
            } else {
                f32::MAX
            };
            let gumbel = -official_log(-official_log(g[i]));
            official_log(p) + (st.temperature as f32) * gumbel
        })
        .collect();
    let mut sorted = conf.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let cut = sorted[ml.min(n - 1)];
    let mut remasked = Vec::new();
    for i in 0..n {
        if conf[i] < cut {
            st.known[i] = v.mask;
            row[span_start + i] = v.mask;
            remasked.push(i);
        } else {
            st.known[i] = st.sampled[i];
            row[span_start + i] = st.sampled[i] + v.code_offset;
        }
    }
    st.trace.push(StepTrace {
        drawn,
        sampled: st.sampled.clone(),
        mask_len: ml,
        remasked,
    });
    Ok(())
}
