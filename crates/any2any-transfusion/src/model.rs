//! The transformer of transfusion-pytorch 0.20 (`Transformer` and the parts of `Transfusion`
//! around it), written from its source:
//!
//! - every attention and feed-forward sits in an `AdaptiveWrapper`: a LayerNorm without affine,
//!   then for text tokens `x·(1+γ)` in and `out·(1+layerscale)` out, for modality tokens FiLM
//!   `x·(1+g)+b` from the time condition in and `out·sigmoid(ada(cond))` out;
//! - attention: fused `to_qk`, per-head RMSNorm of q and k (`l2norm·√d·(1+γ)`), interleaved
//!   rotary embeddings (`rotary_embedding_torch`, one position per modality instance), logits
//!   soft-clamped `tanh(s/50)·50`, a per-head sigmoid gate on the output; optional value
//!   residual and LASER;
//! - feed-forward: GEGLU (`gelu(gates)·x`, exact GELU), inner width `int(dim·4·2/3)`;
//! - U-Net skips: each latter-half layer projects `cat(x, skip)` and adds it to `x`;
//! - after every layer an "attention residual": the next layer's input is a per-token softmax
//!   mix of all hidden states so far (the embedding included), scored by a learned query
//!   against their RMSNorm;
//! - the time condition is `SiLU(Linear([t, sin 2πtw, cos 2πtw]))` with fixed random `w`;
//! - a final RMSNorm, then the text head (`to_text_logits`) or `model_to_latent`.

use crate::config::{ModalitySpec, TransfusionConfig, Vocab};
use any2any_core::backbone::MaskKind;
use any2any_core::backbone::RowLayout;
use any2any_core::decode::Head;
use any2any_core::kv_cache::KvCache;
use any2any_core::nn::Linear;
use any2any_core::{Error, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, VarBuilder};

/// `l2norm(x)·√d·(1+γ)` over the last dimension (the library's unit-offset RMSNorm).
#[derive(Debug, Clone)]
struct Rms {
    gamma1: Tensor,
    scale: f64,
}

impl Rms {
    fn load(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gamma1: (vb.get(dim, "gamma")? + 1.0)?,
            scale: (dim as f64).sqrt(),
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok((l2norm(x)? * self.scale)?.broadcast_mul(&self.gamma1)?)
    }
}

/// `F.normalize(x, dim = -1)`: `x / max(‖x‖, 1e-12)`.
fn l2norm(x: &Tensor) -> Result<Tensor> {
    let n = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&n)?)
}

/// LayerNorm over the last dimension without affine parameters (eps 1e-5).
fn layer_norm(x: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(xc.broadcast_div(&(var + 1e-5)?.sqrt()?)?)
}

/// `tanh(x / c)·c`.
fn softclamp(x: &Tensor, c: f64) -> Result<Tensor> {
    Ok(((x / c)?.tanh()? * c)?)
}

/// Which tokens of a chunk are modality tokens (the same for every row).
#[derive(Debug, Clone)]
pub enum Kinds {
    /// All text.
    Text,
    /// All modality tokens.
    Modality,
    /// Mixed: a `[1, n, 1]` u8 mask, 1 at modality tokens.
    Mixed(Tensor),
}

impl Kinds {
    /// The kinds of `flags` (true = modality token).
    pub fn of(flags: &[bool], device: &Device) -> Result<Self> {
        Ok(if flags.iter().all(|&f| !f) {
            Kinds::Text
        } else if flags.iter().all(|&f| f) {
            Kinds::Modality
        } else {
            let m: Vec<u8> = flags.iter().map(|&f| f as u8).collect();
            Kinds::Mixed(Tensor::from_vec(m, (1, flags.len(), 1), device)?)
        })
    }
}

/// `AdaptiveWrapper`: the norm and conditioning around one attention or feed-forward.
#[derive(Debug, Clone)]
struct Adaptive {
    gamma1: Tensor,
    layerscale1: Tensor,
    film: Linear,
    ada: Linear,
}

impl Adaptive {
    fn load(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            gamma1: (vb.get(dim, "layernorm_gamma")? + 1.0)?,
            layerscale1: (vb.get(dim, "layerscale")? + 1.0)?,
            film: Linear::load(dim * 4, dim * 2, true, vb.pp("to_film"))?,
            ada: Linear::load(dim * 4, dim, true, vb.pp("to_ada_ln_zero"))?,
        })
    }

    fn run(
        &self,
        x: &Tensor,
        cond: Option<&Tensor>,
        kinds: &Kinds,
        f: impl FnOnce(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let xn = layer_norm(x)?;
        let text_in = || -> Result<Tensor> { Ok(xn.broadcast_mul(&self.gamma1)?) };
        let cond = || cond.ok_or_else(|| Error::invalid("times", "modality tokens need a time"));
        let film = |c: &Tensor| -> Result<Tensor> {
            let gb = self.film.forward(c)?;
            let g = gb.narrow(D::Minus1, 0, xn.dim(D::Minus1)?)?;
            let b = gb.narrow(D::Minus1, xn.dim(D::Minus1)?, xn.dim(D::Minus1)?)?;
            Ok(xn.broadcast_mul(&(g + 1.0)?)?.broadcast_add(&b)?)
        };
        let gate =
            |c: &Tensor| -> Result<Tensor> { Ok(candle_nn::ops::sigmoid(&self.ada.forward(c)?)?) };
        match kinds {
            Kinds::Text => Ok(f(&text_in()?)?.broadcast_mul(&self.layerscale1)?),
            Kinds::Modality => {
                let c = cond()?;
                Ok(f(&film(c)?)?.broadcast_mul(&gate(c)?)?)
            }
            Kinds::Mixed(m) => {
                let c = cond()?;
                let m = m.broadcast_as(xn.shape())?;
                let out = f(&m.where_cond(&film(c)?, &text_in()?)?)?;
                let text_out = out.broadcast_mul(&self.layerscale1)?;
                Ok(m.where_cond(&out.broadcast_mul(&gate(c)?)?, &text_out)?)
            }
        }
    }
}

/// One attention layer (`Attention`).
#[derive(Debug, Clone)]
struct Attention {
    to_qk: Linear,
    to_v: Linear,
    qk_norm: Option<(Rms, Rms)>,
    value_mix: Option<Linear>,
    gates: Option<Linear>,
    to_out: Linear,
    heads: usize,
    dim_head: usize,
    softcap: f64,
    laser: Option<f64>,
}

/// What one attention call needs besides its input.
struct AttnArgs<'a> {
    cos: &'a Tensor,
    sin: &'a Tensor,
    mask: Option<&'a Tensor>,
    layer: usize,
}

impl Attention {
    fn load(cfg: &TransfusionConfig, first: bool, vb: VarBuilder) -> Result<Self> {
        let t = &cfg.transformer;
        let inner = t.heads * t.dim_head;
        let qk_norm = if t.qk_rmsnorm {
            Some((
                Rms::load(t.dim_head, vb.pp("q_norm"))?,
                Rms::load(t.dim_head, vb.pp("k_norm"))?,
            ))
        } else {
            None
        };
        let value_mix = if t.use_value_residual && !first {
            Some(Linear::load(
                t.dim,
                t.heads,
                true,
                vb.pp("to_learned_value_residual.0"),
            )?)
        } else {
            None
        };
        let gates = if t.attn_kwargs.gate_values {
            Some(Linear::load(t.dim, t.heads, false, vb.pp("to_gates.0"))?)
        } else {
            None
        };
        Ok(Self {
            to_qk: Linear::load_quantizable(t.dim, inner * 2, false, vb.pp("to_qk.0"))?,
            to_v: Linear::load_quantizable(t.dim, inner, false, vb.pp("to_v.0"))?,
            qk_norm,
            value_mix,
            gates,
            to_out: Linear::load_quantizable(inner, t.dim, false, vb.pp("to_out.1"))?,
            heads: t.heads,
            dim_head: t.dim_head,
            softcap: t.attn_kwargs.softcap_value,
            laser: cfg.laser().then_some(t.attn_kwargs.laser_softclamp_value),
        })
    }

    /// `[b, n, h]` → `[b, h, n, 1]`.
    fn per_head(x: &Tensor) -> Result<Tensor> {
        Ok(x.transpose(1, 2)?.unsqueeze(D::Minus1)?)
    }

    /// The output and this layer's (un-mixed) values `[b, h, n, d]`.
    fn forward(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        a: &AttnArgs,
        cache: &mut KvCache,
    ) -> Result<(Tensor, Tensor)> {
        let (b, n, _) = x.dims3()?;
        let (h, d) = (self.heads, self.dim_head);
        let qk = self.to_qk.forward(x)?.reshape((b, n, 2, h, d))?;
        let q = qk.narrow(2, 0, 1)?.squeeze(2)?.transpose(1, 2)?;
        let k = qk.narrow(2, 1, 1)?.squeeze(2)?.transpose(1, 2)?;
        let v = self
            .to_v
            .forward(x)?
            .reshape((b, n, h, d))?
            .transpose(1, 2)?;
        let (q, k) = match &self.qk_norm {
            Some((qn, kn)) => (qn.forward(&q)?, kn.forward(&k)?),
            None => (q, k),
        };
        let orig_v = v.contiguous()?;
        let v = match (&self.value_mix, residual) {
            (Some(mix), Some(r)) => {
                let m = Self::per_head(&candle_nn::ops::sigmoid(&mix.forward(x)?)?)?;
                (orig_v.broadcast_mul(&m)? + r.broadcast_mul(&(1.0 - &m)?)?)?
            }
            _ => orig_v.clone(),
        };
        let q = candle_nn::rotary_emb::rope_i(&q.contiguous()?, a.cos, a.sin)?;
        let k = candle_nn::rotary_emb::rope_i(&k.contiguous()?, a.cos, a.sin)?;
        let (k, v) = cache.append(a.layer, &k, &v)?;
        let v = match self.laser {
            Some(c) => softclamp(&v, c)?.exp()?,
            None => v,
        };
        let scale = (d as f64).powf(-0.5);
        let sim = (q * scale)?.matmul(&k.t()?.contiguous()?)?;
        let sim = softclamp(&sim, self.softcap)?;
        let sim = match a.mask {
            Some(m) => sim.broadcast_add(m)?,
            None => sim,
        };
        let attn = candle_nn::ops::softmax_last_dim(&sim)?;
        let mut out = attn.matmul(&v.contiguous()?)?;
        if self.laser.is_some() {
            out = out.clamp(1e-20, f64::MAX)?.log()?;
        }
        if let Some(g) = &self.gates {
            out = out.broadcast_mul(&Self::per_head(&candle_nn::ops::sigmoid(&g.forward(x)?)?)?)?;
        }
        let out = out.transpose(1, 2)?.reshape((b, n, h * d))?;
        Ok((self.to_out.forward(&out)?, orig_v))
    }
}

/// GEGLU feed-forward.
#[derive(Debug, Clone)]
struct FeedForward {
    w_in: Linear,
    w_out: Linear,
    inner: usize,
}

impl FeedForward {
    fn load(cfg: &TransfusionConfig, vb: VarBuilder) -> Result<Self> {
        let (dim, inner) = (cfg.transformer.dim, cfg.ff_inner());
        Ok(Self {
            w_in: Linear::load_quantizable(dim, inner * 2, true, vb.pp("net.0"))?,
            w_out: Linear::load_quantizable(inner, dim, true, vb.pp("net.3"))?,
            inner,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.w_in.forward(x)?;
        let a = h.narrow(D::Minus1, 0, self.inner)?;
        let gates = h.narrow(D::Minus1, self.inner, self.inner)?;
        Ok(self.w_out.forward(&(gates.gelu_erf()? * a)?)?)
    }
}

/// `AttentionResidual`: a per-token softmax mix of the hidden states so far.
#[derive(Debug, Clone)]
struct AttnResidual {
    norm_keys: Rms,
    queries: Tensor,
    scale: f64,
}

impl AttnResidual {
    fn load(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm_keys: Rms::load(dim, vb.pp("norm_keys"))?,
            queries: vb.get(dim, "pseudo_queries")?.unsqueeze(1)?,
            scale: (dim as f64).powf(-0.5),
        })
    }
    fn forward(&self, hiddens: &[Tensor]) -> Result<Tensor> {
        let h = Tensor::stack(hiddens, 2)?; // [b, n, L, d]
        let keys = self.norm_keys.forward(&h)?;
        let sim = (keys.broadcast_matmul(&self.queries)? * self.scale)?; // [b, n, L, 1]
        let attn = candle_nn::ops::softmax(&sim, 2)?;
        Ok(h.broadcast_mul(&attn)?.sum(2)?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    skip: Option<Linear>,
    attn_wrap: Adaptive,
    attn: Attention,
    ff_wrap: Adaptive,
    ff: FeedForward,
    residual: AttnResidual,
}

/// One chunk of tokens fed after what a cache holds: input embeddings and, per token (the same
/// for every row), its rotary position, whether it is a modality token and its flow time.
#[derive(Debug, Clone)]
pub struct Chunk<'a> {
    /// `[rows, n, dim]` input embeddings.
    pub x: &'a Tensor,
    /// Rotary position of each token.
    pub positions: &'a [u32],
    /// Whether each token is a modality token.
    pub modality: &'a [bool],
    /// The flow time of each token (0 for text; unused there).
    pub times: &'a [f32],
}

/// The Transfusion model: embeddings, transformer, text head and latent projections.
#[derive(Debug, Clone)]
pub struct TransfusionModel {
    /// The checkpoint's configuration.
    pub config: TransfusionConfig,
    /// Its vocabulary layout.
    pub vocab: Vocab,
    /// The (single) modality's latent layout.
    pub modality: ModalitySpec,
    text_embed: Embedding,
    to_text_logits: Linear,
    latent_in: Option<Linear>,
    latent_out: Linear,
    rotary_freqs: Tensor,
    fourier: Tensor,
    time_mlp: Linear,
    layers: Vec<Layer>,
    norm: Rms,
    params: usize,
    dtype: DType,
    device: Device,
}

impl TransfusionModel {
    /// Loads the state dict under `vb` (its own key names: `text_embed`, `transformer.layers`,
    /// `latent_to_model_projs.0`, …); a shape the config does not imply is an error naming the
    /// tensor.
    pub fn load(vb: VarBuilder, config: TransfusionConfig) -> Result<Self> {
        let t = config.transformer.clone();
        let vocab = config.vocab();
        let modality = config.modality(0);
        let dl = modality.dim_latent;
        let (lin, lout) = if modality.channel_first {
            ("latent_to_model_projs.0.1", "model_to_latent_projs.0.0")
        } else {
            ("latent_to_model_projs.0", "model_to_latent_projs.0")
        };
        let latent_in = if dl != t.dim {
            Some(Linear::load(dl, t.dim, true, vb.pp(lin))?)
        } else {
            None
        };
        let tvb = vb.pp("transformer");
        let mut layers = Vec::with_capacity(t.depth);
        for i in 0..t.depth {
            let lvb = tvb.pp("layers").pp(i);
            let latter = i as f64 >= t.depth as f64 / 2.0;
            layers.push(Layer {
                skip: if latter && t.unet_skips {
                    Some(Linear::load(t.dim * 2, t.dim, false, lvb.pp("0"))?)
                } else {
                    None
                },
                attn_wrap: Adaptive::load(t.dim, lvb.pp("1"))?,
                attn: Attention::load(&config, i == 0, lvb.pp("1").pp("fn"))?,
                ff_wrap: Adaptive::load(t.dim, lvb.pp("2"))?,
                ff: FeedForward::load(&config, lvb.pp("2").pp("fn"))?,
                residual: AttnResidual::load(t.dim, lvb.pp("3"))?,
            });
        }
        let emb = vb.get((vocab.size, t.dim), "text_embed.weight")?;
        let model = Self {
            text_embed: Embedding::new(emb, t.dim),
            to_text_logits: Linear::load(t.dim, vocab.size, false, vb.pp("to_text_logits"))?,
            latent_in,
            latent_out: Linear::load(t.dim, dl, false, vb.pp(lout))?,
            rotary_freqs: vb
                .get(t.dim_head / 2, "rotary_emb.freqs")?
                .to_dtype(DType::F32)?,
            fourier: vb.get(t.dim / 2, "transformer.to_time_cond.0.weights")?,
            time_mlp: Linear::load(t.dim + 1, t.dim * 4, true, tvb.pp("to_time_cond.1"))?,
            norm: Rms::load(t.dim, tvb.pp("norm"))?,
            layers,
            params: 0,
            dtype: vb.dtype(),
            device: vb.device().clone(),
            config,
            vocab,
            modality,
        };
        Ok(Self {
            params: model.count_params(),
            ..model
        })
    }

    /// `sum(p.numel() for p in model.parameters())` of the library's module (buffers such as
    /// the Fourier weights excluded).
    fn count_params(&self) -> usize {
        let t = &self.config.transformer;
        let (d, inner, ff, h) = (t.dim, t.heads * t.dim_head, self.config.ff_inner(), t.heads);
        let wrapper = 2 * d + (4 * d * 2 * d + 2 * d) + (4 * d * d + d);
        let mut n = 0;
        for l in &self.layers {
            n += 2 * wrapper + 2 * d; // two wrappers, the attention residual
            n += l.skip.as_ref().map_or(0, |_| 2 * d * d);
            n += 3 * d * inner + inner * d;
            n += l.attn.qk_norm.as_ref().map_or(0, |_| 2 * t.dim_head);
            n += l.attn.gates.as_ref().map_or(0, |_| d * h);
            n += l.attn.value_mix.as_ref().map_or(0, |_| d * h + h);
            n += d * 2 * ff + 2 * ff + ff * d + d;
        }
        let dl = self.modality.dim_latent;
        n + 2 * self.vocab.size * d
            + (d + 1) * 4 * d
            + 4 * d
            + d
            + t.dim_head / 2
            + self.latent_in.as_ref().map_or(0, |_| dl * d + d)
            + d * dl
    }

    /// Parameters of the library's module.
    pub fn num_params(&self) -> usize {
        self.params
    }
    /// The weights' dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The device.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty cache of `rows` rows with room for `capacity` tokens.
    pub fn new_cache(&self, rows: usize, capacity: usize) -> Result<KvCache> {
        let t = &self.config.transformer;
        KvCache::new(
            t.depth,
            rows,
            t.heads,
            t.dim_head,
            capacity,
            self.dtype,
            &self.device,
        )
    }

    /// `[..]` u32 ids → their embeddings `[.., dim]`; ids outside the vocabulary are refused.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let max = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max as usize >= self.vocab.size {
            return Err(Error::invalid(
                "ids",
                format!(
                    "token id {max} is outside the vocabulary ({})",
                    self.vocab.size
                ),
            ));
        }
        Ok(self.text_embed.forward(ids)?)
    }

    /// `[.., dim_latent]` latent tokens → model tokens `[.., dim]` (`latent_to_model`).
    pub fn latent_to_model(&self, z: &Tensor) -> Result<Tensor> {
        let z = z.to_dtype(self.dtype)?;
        match &self.latent_in {
            Some(l) => Ok(l.forward(&z)?),
            None => Ok(z),
        }
    }

    /// Final hidden states `[.., dim]` → latent tokens `[.., dim_latent]` f32
    /// (`model_to_latent`).
    pub fn model_to_latent(&self, h: &Tensor) -> Result<Tensor> {
        Ok(self.latent_out.forward(h)?.to_dtype(DType::F32)?)
    }

    /// Final hidden states → text logits `[.., vocab]` f32 over the whole vocabulary.
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        Ok(self.to_text_logits.forward(h)?.to_dtype(DType::F32)?)
    }

    /// The time condition `[1, n, 4·dim]` of per-token times.
    fn time_cond(&self, times: &[f32]) -> Result<Tensor> {
        let t =
            Tensor::from_slice(times, (1, times.len(), 1), &self.device)?.to_dtype(self.dtype)?;
        let f =
            ((t.broadcast_mul(&self.fourier.reshape((1, 1, ()))?)? * 2.0)? * std::f64::consts::PI)?;
        let emb = Tensor::cat(&[&t, &f.sin()?, &f.cos()?], D::Minus1)?;
        Ok(candle_nn::ops::silu(&self.time_mlp.forward(&emb)?)?)
    }

    /// Rotary cos/sin `[n, dim_head/2]` at `positions`.
    fn rotary(&self, positions: &[u32]) -> Result<(Tensor, Tensor)> {
        let p: Vec<f32> = positions.iter().map(|&p| p as f32).collect();
        let p = Tensor::from_vec(p, (positions.len(), 1), &self.device)?;
        let ang = p.broadcast_mul(&self.rotary_freqs.unsqueeze(0)?)?;
        Ok((
            ang.cos()?.to_dtype(self.dtype)?,
            ang.sin()?.to_dtype(self.dtype)?,
        ))
    }

    /// Runs `chunk` after what `cache` holds (every row seeing its keys under `mask`, in
    /// absolute cache slots); the final-normed hidden states `[rows, n, dim]`.
    pub fn forward(&self, chunk: &Chunk, mask: &MaskKind, cache: &mut KvCache) -> Result<Tensor> {
        let (rows, n, _) = chunk.x.dims3()?;
        if chunk.positions.len() != n || chunk.modality.len() != n || chunk.times.len() != n {
            return Err(Error::invalid(
                "tokens",
                format!("a chunk of {n} tokens with per-token data of other lengths"),
            ));
        }
        let kinds = Kinds::of(chunk.modality, &self.device)?;
        let cond = match kinds {
            Kinds::Text => None,
            _ => Some(self.time_cond(chunk.times)?),
        };
        let (cos, sin) = self.rotary(chunk.positions)?;
        let mask = mask.build(
            &RowLayout::dense(rows),
            cache.len(),
            n,
            self.dtype,
            &self.device,
        )?;
        let mut x = chunk.x.to_dtype(self.dtype)?;
        let depth = self.layers.len();
        let (mut skips, mut hiddens) = (Vec::new(), vec![x.clone()]);
        let mut value_residual: Option<Tensor> = None;
        for (i, l) in self.layers.iter().enumerate() {
            if i < depth / 2 {
                skips.push(x.clone());
            } else if let Some(p) = &l.skip {
                if let Some(s) = skips.pop() {
                    x = (p.forward(&Tensor::cat(&[&x, &s], D::Minus1)?)? + &x)?;
                }
            }
            let args = AttnArgs {
                cos: &cos,
                sin: &sin,
                mask: mask.as_ref(),
                layer: i,
            };
            let mut values = None;
            let a = l.attn_wrap.run(&x, cond.as_ref(), &kinds, |h| {
                let (out, v) = l.attn.forward(h, value_residual.as_ref(), &args, cache)?;
                values = Some(v);
                Ok(out)
            })?;
            if self.config.transformer.use_value_residual && value_residual.is_none() {
                value_residual = values;
            }
            x = (a + &x)?;
            x = (l
                .ff_wrap
                .run(&x, cond.as_ref(), &kinds, |h| l.ff.forward(h))?
                + &x)?;
            hiddens.push(x.clone());
            x = l.residual.forward(&hiddens)?;
        }
        cache.advance(n);
        self.norm.forward(&x)
    }
}

/// The text end of a decode step: `to_text_logits` out, `text_embed` in.
pub struct TextHead<'m>(pub &'m TransfusionModel);

impl Head for TextHead<'_> {
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.0.logits(hidden)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.0.embed(&ids.unsqueeze(1)?)
    }
}
