//! The logits pipeline, in one fixed order: CFG mix → allowed-token constraint → temperature →
//! top-k → top-p → draw. It runs on the logits' device; only the drawn ids (one per row) and one
//! uniform per row cross between host and device.
//!
//! ```
//! use any2any_core::candle_core::{Device, Tensor};
//! use any2any_core::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
//! use any2any_core::SeededNoise;
//! // one output row with classifier-free guidance: [cond; uncond] logits over 3 tokens
//! let logits = Tensor::new(&[[1f32, 2.0, 0.0], [0.0, 1.0, 0.0]], &Device::Cpu)?;
//! let pipe = LogitsPipeline::new(
//!     Some(Guidance::two_stream(3.0, GuidanceSpace::Logits)),
//!     SamplingParams::greedy(),
//! );
//! assert_eq!(pipe.streams(), 2);
//! // u + 3·(c − u) = [3, 4, 0]: greedy picks token 1
//! let mixed = pipe.process(&logits, None)?;
//! assert_eq!(mixed.to_vec2::<f32>()?, vec![vec![3.0, 4.0, 0.0]]);
//! let ids = pipe.sample(&logits, None, &mut SeededNoise::new(0))?;
//! assert_eq!(ids.to_vec1::<u32>()?, vec![1]);
//! # Ok::<(), any2any_core::Error>(())
//! ```

use crate::noise::NoiseSource;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor, D};

/// How guidance streams are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuidanceSpace {
    /// Mix raw logits (Janus, Chameleon, Lumina).
    Logits,
    /// Mix log-softmaxes (HF unbatched CFG, Emu3).
    LogProbs,
}

/// Classifier-free guidance over `n ≥ 2` streams stacked on the batch axis as
/// `[s_0 rows; s_1 rows; …; s_{n-1} rows]`, `s_0` the fully conditioned stream and `s_{n-1}` the
/// unconditioned one. The mix is `s_{n-1} + Σ_i w_i·(s_i − s_{i+1})`: for two streams the usual
/// `u + w·(c − u)`; for Chameleon's three `u + w_1·(img − u) + w_0·(full − img)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Guidance {
    /// `n − 1` weights.
    pub weights: Vec<f32>,
    /// Whether logits or log-probabilities are mixed.
    pub space: GuidanceSpace,
}

impl Guidance {
    /// The usual two streams, `[cond; uncond]`, mixed as `u + w·(c − u)`.
    pub fn two_stream(w: f32, space: GuidanceSpace) -> Self {
        Self {
            weights: vec![w],
            space,
        }
    }
    /// Number of streams (weights + 1).
    pub fn streams(&self) -> usize {
        self.weights.len() + 1
    }

    /// `logits`: `[streams·B, V]` → `[B, V]`.
    pub fn mix(&self, logits: &Tensor) -> Result<Tensor> {
        let n = self.streams();
        let rows = logits.dim(0)?;
        if rows % n != 0 {
            return Err(Error::invalid(
                "cfg",
                format!("{rows} logit rows do not split into {n} guidance streams"),
            ));
        }
        let b = rows / n;
        let logits = match self.space {
            GuidanceSpace::Logits => logits.clone(),
            GuidanceSpace::LogProbs => candle_nn::ops::log_softmax(logits, D::Minus1)?,
        };
        let s: Vec<Tensor> = (0..n)
            .map(|i| logits.narrow(0, i * b, b))
            .collect::<candle_core::Result<_>>()?;
        let mut out = s[n - 1].clone();
        for (i, w) in self.weights.iter().enumerate() {
            out = (out + ((&s[i] - &s[i + 1])? * (*w as f64))?)?;
        }
        Ok(out)
    }
}

/// Temperature, top-k and top-p. `temperature == 0` is greedy (argmax after CFG and constraint).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 is greedy.
    pub temperature: f32,
    /// Keep the `k` most likely tokens (ties at the k-th value kept).
    pub top_k: Option<usize>,
    /// Keep the smallest nucleus whose mass reaches `p` (always at least one token).
    pub top_p: Option<f32>,
    /// Drop the tokens whose probability (after the temperature) is below `min_p` × the
    /// largest one (min-p sampling, arXiv 2407.01082; Transfusion's `text_min_p`).
    pub min_p: Option<f32>,
}

impl SamplingParams {
    /// A request's temperature, top-k and top-p where it sets them, a family's `defaults`
    /// elsewhere.
    pub fn from_params(p: &crate::GenerationParams, defaults: SamplingParams) -> Self {
        Self {
            temperature: p.temperature.unwrap_or(defaults.temperature),
            top_k: p.top_k.or(defaults.top_k),
            top_p: p.top_p.or(defaults.top_p),
            min_p: defaults.min_p,
        }
    }

    /// Argmax decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
        }
    }
    /// Whether the temperature is 0.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// How a sampled (non-greedy) step turns warped logits into ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DrawRule {
    /// One uniform per row, inverse CDF of the softmax (`torch.multinomial`'s rule).
    #[default]
    InverseCdf,
    /// `V` uniforms per row (row-major), `argmax(logits − ln(−ln u))`: JAX's
    /// `jax.random.categorical` (Gumbel-max), which LWM's reference samples with.
    GumbelMax,
}

/// The whole logits pipeline of one loop.
#[derive(Debug, Clone)]
pub struct LogitsPipeline {
    /// Classifier-free guidance over stacked streams (`None`: one stream).
    pub guidance: Option<Guidance>,
    /// Temperature, top-k and top-p.
    pub sampling: SamplingParams,
    /// How sampled steps draw.
    pub draw_rule: DrawRule,
}

impl LogitsPipeline {
    /// A pipeline of optional guidance and sampling settings.
    pub fn new(guidance: Option<Guidance>, sampling: SamplingParams) -> Self {
        Self {
            guidance,
            sampling,
            draw_rule: DrawRule::default(),
        }
    }

    /// The same pipeline drawing with `rule`.
    pub fn with_draw_rule(mut self, rule: DrawRule) -> Self {
        self.draw_rule = rule;
        self
    }

    /// Number of logit rows per output row.
    pub fn streams(&self) -> usize {
        self.guidance.as_ref().map_or(1, |g| g.streams())
    }

    /// CFG then the constraint; `allowed` is an additive `[1|B, V]` mask (0 allowed, −∞ not).
    pub fn process(&self, logits: &Tensor, allowed: Option<&Tensor>) -> Result<Tensor> {
        let logits = logits.to_dtype(DType::F32)?;
        let mut l = match &self.guidance {
            Some(g) => g.mix(&logits)?,
            None => logits,
        };
        if let Some(mask) = allowed {
            l = l.broadcast_add(&mask.to_dtype(DType::F32)?)?;
        }
        Ok(l)
    }

    /// Applies temperature, min-p, top-k and top-p (no-ops for greedy) to processed logits
    /// `[B, V]`.
    pub fn warp(&self, logits: &Tensor) -> Result<Tensor> {
        let s = &self.sampling;
        if s.is_greedy() {
            return Ok(logits.clone());
        }
        let mut l = (logits / s.temperature as f64)?;
        let v = l.dim(D::Minus1)?;
        if let Some(m) = s.min_p.filter(|&m| m > 0.0) {
            // p_i < m · p_max  ⇔  l_i < l_max + ln m
            let limit = (l.max_keepdim(D::Minus1)? + (m as f64).ln())?;
            l = mask_below(&l, &limit)?;
        }
        if let Some(k) = s.top_k {
            if k < v {
                let (sorted, _) = l.sort_last_dim(false)?;
                let kth = sorted.narrow(D::Minus1, k - 1, 1)?;
                l = mask_below(&l, &kth)?;
            }
        }
        if let Some(p) = s.top_p {
            if p < 1.0 {
                // Ascending sort; drop the low tail whose cumulative mass is ≤ 1 − p, always
                // keeping the most likely token.
                let (sorted, _) = l.sort_last_dim(true)?;
                let probs = candle_nn::ops::softmax_last_dim(&sorted)?;
                let cum = cumsum_last_dim(&probs)?;
                let removed = cum
                    .le(1.0 - p as f64)?
                    .to_dtype(DType::F32)?
                    .sum_keepdim(D::Minus1)?
                    .clamp(0f64, (v - 1) as f64)?
                    .to_dtype(DType::U32)?;
                let threshold = sorted.gather(&removed, D::Minus1)?;
                l = mask_below(&l, &threshold)?;
            }
        }
        Ok(l)
    }

    /// Draws one id per row of processed logits `[B, V]`; returns `[B]` u32 on the same device.
    /// Greedy takes the argmax; otherwise inverse-CDF sampling with one uniform per row.
    pub fn draw(&self, logits: &Tensor, noise: &mut dyn NoiseSource) -> Result<Tensor> {
        if self.sampling.is_greedy() {
            return Ok(logits.argmax(D::Minus1)?);
        }
        let warped = self.warp(logits)?;
        let b = warped.dim(0)?;
        match self.draw_rule {
            DrawRule::InverseCdf => {
                let u = noise.uniform(b)?;
                draw_inverse_cdf(&warped, &u)
            }
            DrawRule::GumbelMax => {
                let u = noise.uniform(warped.elem_count())?;
                draw_gumbel_max(&warped, &u)
            }
        }
    }

    /// `process` then `draw`.
    pub fn sample(
        &self,
        logits: &Tensor,
        allowed: Option<&Tensor>,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let l = self.process(logits, allowed)?;
        self.draw(&l, noise)
    }
}

fn mask_below(l: &Tensor, threshold: &Tensor) -> Result<Tensor> {
    let keep = l.broadcast_ge(threshold)?;
    let ninf = Tensor::full(f32::NEG_INFINITY, l.shape(), l.device())?;
    Ok(keep.where_cond(l, &ninf)?)
}

/// Gumbel-max draw: row `r` takes `argmax_i(logits[r, i] − ln(−ln u[r·V + i]))`, the Gumbel
/// values computed in f32 (JAX's `categorical` with the uniforms it drew).
pub fn draw_gumbel_max(logits: &Tensor, uniforms: &[f32]) -> Result<Tensor> {
    let (b, v) = logits.dims2()?;
    if uniforms.len() != b * v {
        return Err(Error::invalid(
            "noise",
            format!("{} uniforms for {b} rows of {v}", uniforms.len()),
        ));
    }
    let g: Vec<f32> = uniforms.iter().map(|&u| -(-u.ln()).ln()).collect();
    let g = Tensor::from_vec(g, (b, v), logits.device())?;
    Ok((logits.to_dtype(DType::F32)? + g)?.argmax(D::Minus1)?)
}

/// Inverse-CDF draw: row `r` picks the first index whose cumulative probability exceeds
/// `u_r · total`. The reference fixtures replay `torch.multinomial` with the same rule.
pub fn draw_inverse_cdf(logits: &Tensor, uniforms: &[f32]) -> Result<Tensor> {
    let (b, v) = logits.dims2()?;
    if uniforms.len() != b {
        return Err(Error::invalid(
            "noise",
            format!("{} uniforms for {b} rows", uniforms.len()),
        ));
    }
    let probs = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
    let cdf = cumsum_last_dim(&probs)?;
    let total = cdf.narrow(D::Minus1, v - 1, 1)?;
    let u = Tensor::from_slice(uniforms, (b, 1), logits.device())?;
    let target = (total * u)?;
    let idx = cdf
        .broadcast_le(&target)?
        .to_dtype(DType::F32)?
        .sum(D::Minus1)?
        .clamp(0f64, (v - 1) as f64)?
        .to_dtype(DType::U32)?;
    Ok(idx)
}

const CUMSUM_BLOCK: usize = 256;

fn triu_ones(n: usize, strict: bool, device: &Device) -> Result<Tensor> {
    // m[i][j] = 1 where i ≤ j (i < j when strict): x · m is an (exclusive) prefix sum.
    let mut m = vec![0f32; n * n];
    for i in 0..n {
        for j in 0..n {
            if i < j || (!strict && i == j) {
                m[i * n + j] = 1.0;
            }
        }
    }
    Ok(Tensor::from_vec(m, (n, n), device)?)
}

/// Inclusive prefix sum over the last axis of `[B, V]` in two blocked matmuls, so that large
/// vocabularies never build a `V × V` matrix (candle's `cumsum` does).
pub fn cumsum_last_dim(x: &Tensor) -> Result<Tensor> {
    let (b, v) = x.dims2()?;
    if v <= CUMSUM_BLOCK {
        return Ok(x.matmul(&triu_ones(v, false, x.device())?)?);
    }
    let nb = v.div_ceil(CUMSUM_BLOCK);
    let padded = x.pad_with_zeros(D::Minus1, 0, nb * CUMSUM_BLOCK - v)?;
    let blocks = padded.reshape((b * nb, CUMSUM_BLOCK))?;
    let within = blocks
        .matmul(&triu_ones(CUMSUM_BLOCK, false, x.device())?)?
        .reshape((b, nb, CUMSUM_BLOCK))?;
    let totals = within
        .narrow(D::Minus1, CUMSUM_BLOCK - 1, 1)?
        .squeeze(D::Minus1)?;
    let offsets = totals.matmul(&triu_ones(nb, true, x.device())?)?;
    let out = within.broadcast_add(&offsets.unsqueeze(D::Minus1)?)?;
    Ok(out
        .reshape((b, nb * CUMSUM_BLOCK))?
        .narrow(D::Minus1, 0, v)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::{ReplayNoise, SeededNoise};

    fn t(v: &[f32], b: usize) -> Tensor {
        Tensor::from_slice(v, (b, v.len() / b), &Device::Cpu).unwrap()
    }

    #[test]
    fn two_and_three_stream_cfg() {
        let l = t(&[1.0, 2.0, 0.0, 1.0], 2); // cond [1,2], uncond [0,1]
        let g = Guidance::two_stream(3.0, GuidanceSpace::Logits);
        let m = g.mix(&l).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(m, vec![vec![3.0, 4.0]]); // u + 3(c-u)
        let l3 = t(&[4.0, 3.0, 1.0], 3); // full, img, uncond (V = 1)
        let g3 = Guidance {
            weights: vec![3.0, 1.2],
            space: GuidanceSpace::Logits,
        };
        let m3 = g3.mix(&l3).unwrap().to_vec2::<f32>().unwrap()[0][0];
        assert!((m3 - (1.0 + 1.2 * 2.0 + 3.0 * 1.0)).abs() < 1e-6);
    }

    #[test]
    fn cumsum_matches_sequential_for_large_vocab() {
        let v = 1000;
        let x: Vec<f32> = (0..2 * v).map(|i| ((i * 37) % 11) as f32 * 0.1).collect();
        let c = cumsum_last_dim(&t(&x, 2))
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for r in 0..2 {
            let mut acc = 0f32;
            for j in 0..v {
                acc += x[r * v + j];
                assert!((c[r][j] - acc).abs() < 1e-3, "row {r} col {j}");
            }
        }
    }

    #[test]
    fn greedy_is_argmax_and_topk1_is_argmax() {
        let l = t(&[0.1, 3.0, 0.2, -1.0, 5.0, 2.0], 2);
        let p = LogitsPipeline::new(None, SamplingParams::greedy());
        let ids = p.sample(&l, None, &mut SeededNoise::new(0)).unwrap();
        assert_eq!(ids.to_vec1::<u32>().unwrap(), vec![1, 1]);
        let p = LogitsPipeline::new(
            None,
            SamplingParams {
                temperature: 5.0,
                top_k: Some(1),
                top_p: None,
                min_p: None,
            },
        );
        for seed in 0..20 {
            let ids = p.sample(&l, None, &mut SeededNoise::new(seed)).unwrap();
            assert_eq!(ids.to_vec1::<u32>().unwrap(), vec![1, 1]);
        }
    }

    #[test]
    fn gumbel_max_takes_argmax_of_logits_plus_gumbel_row_by_row() {
        // row 0: the noise lifts id 2 above id 0; row 1: top-k 1 leaves only id 1
        let l = t(&[1.0, 0.0, 0.5, 0.0, 3.0, 2.9], 2);
        let p = LogitsPipeline::new(
            None,
            SamplingParams {
                temperature: 1.0,
                top_k: Some(1),
                top_p: None,
                min_p: None,
            },
        )
        .with_draw_rule(DrawRule::GumbelMax);
        // −ln(−ln u): u = 0.5 → 0.367, u = 0.9 → 2.25, u = 0.1 → −0.834
        let u = vec![0.5, 0.5, 0.9, 0.1, 0.1, 0.999];
        let ids = p.sample(&l, None, &mut ReplayNoise::uniforms(u.clone()));
        assert_eq!(ids.unwrap().to_vec1::<u32>().unwrap(), vec![0, 1]);
        let free = p.clone().with_draw_rule(DrawRule::GumbelMax);
        let free = LogitsPipeline {
            sampling: SamplingParams {
                top_k: None,
                ..free.sampling
            },
            ..free
        };
        let ids = free
            .sample(&l, None, &mut ReplayNoise::uniforms(u))
            .unwrap();
        assert_eq!(ids.to_vec1::<u32>().unwrap(), vec![2, 2]);
        // V uniforms per row are taken; fewer is an error
        let mut short = ReplayNoise::uniforms(vec![0.5; 5]);
        assert!(free.sample(&l, None, &mut short).is_err());
    }

    #[test]
    fn inverse_cdf_picks_expected_bucket() {
        // probs = [0.25, 0.25, 0.5] → u in [0,.25) → 0, [.25,.5) → 1, [.5,1) → 2
        let l = t(&[0.0, 0.0, 2f32.ln()], 1);
        let p = LogitsPipeline::new(
            None,
            SamplingParams {
                temperature: 1.0,
                top_k: None,
                top_p: None,
                min_p: None,
            },
        );
        for (u, want) in [(0.1, 0u32), (0.3, 1), (0.6, 2), (0.99, 2)] {
            let ids = p
                .sample(&l, None, &mut ReplayNoise::uniforms(vec![u]))
                .unwrap();
            assert_eq!(ids.to_vec1::<u32>().unwrap(), vec![want], "u={u}");
        }
    }

    #[test]
    fn top_p_keeps_smallest_nucleus_and_constraint_masks() {
        // probs ≈ [0.6, 0.3, 0.1]; top_p 0.5 keeps only the first token.
        let l = t(&[0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()], 1);
        let p = LogitsPipeline::new(
            None,
            SamplingParams {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.5),
                min_p: None,
            },
        );
        let w = p.warp(&l).unwrap().to_vec2::<f32>().unwrap();
        assert!(
            w[0][0].is_finite() && w[0][1] == f32::NEG_INFINITY && w[0][2] == f32::NEG_INFINITY
        );
        // top_p 0.95 keeps the first two.
        let p = LogitsPipeline::new(
            None,
            SamplingParams {
                temperature: 1.0,
                top_k: None,
                top_p: Some(0.85),
                min_p: None,
            },
        );
        let w = p.warp(&l).unwrap().to_vec2::<f32>().unwrap();
        assert!(w[0][1].is_finite() && w[0][2] == f32::NEG_INFINITY);
        let mask = t(&[f32::NEG_INFINITY, 0.0, 0.0], 1);
        let g = LogitsPipeline::new(None, SamplingParams::greedy());
        let ids = g.sample(&l, Some(&mask), &mut SeededNoise::new(0)).unwrap();
        assert_eq!(ids.to_vec1::<u32>().unwrap(), vec![1]);
    }

    #[test]
    fn min_p_drops_tokens_below_a_share_of_the_most_likely() {
        // probs ∝ [1, 0.5, 0.11, 0.09] at temperature 1; min_p 0.1 drops only the last
        let l = t(&[1f32.ln(), 0.5f32.ln(), 0.11f32.ln(), 0.09f32.ln()], 1);
        let p = LogitsPipeline::new(
            None,
            SamplingParams {
                temperature: 1.0,
                min_p: Some(0.1),
                ..SamplingParams::greedy()
            },
        );
        let w = p.warp(&l).unwrap().to_vec2::<f32>().unwrap();
        assert!(w[0][..3].iter().all(|v| v.is_finite()), "{w:?}");
        assert_eq!(w[0][3], f32::NEG_INFINITY);
        // at temperature 2 the probabilities flatten (∝ √p): nothing falls below 0.1 × max
        let p = LogitsPipeline::new(
            None,
            SamplingParams {
                temperature: 2.0,
                min_p: Some(0.1),
                ..SamplingParams::greedy()
            },
        );
        let w = p.warp(&l).unwrap().to_vec2::<f32>().unwrap();
        assert!(w[0].iter().all(|v| v.is_finite()), "{w:?}");
    }
}
