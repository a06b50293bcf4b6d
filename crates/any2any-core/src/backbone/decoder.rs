use super::config::{
    BackboneConfig, BlockOrder, MlpKind, NormKind, QkNorm, RopeLayout, WeightNaming,
};
use super::mask::{MaskKind, RowLayout};
use crate::kv_cache::KvCache;
use crate::nn::Linear;
use crate::{Error, Result};
use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{linear_no_bias, Activation, Embedding, VarBuilder};

/// What a forward needs besides the embeddings and the cache.
#[derive(Debug, Clone, Copy)]
pub struct ForwardArgs<'a> {
    /// How the batch's rows sit in the cache (left padding per row).
    pub layout: &'a RowLayout,
    /// Which attention mask the new positions get.
    pub mask: &'a MaskKind,
}

/// Tensor names of one checkpoint convention, relative to the decoder prefix / a layer.
struct Names {
    embed: &'static str,
    attn: &'static str,
    q: &'static str,
    k: &'static str,
    v: &'static str,
    o: &'static str,
    q_norm: &'static str,
    k_norm: &'static str,
    mlp: &'static str,
    gate: &'static str,
    up: &'static str,
    down: &'static str,
    ln1: &'static str,
    ln2: &'static str,
    final_norm: &'static str,
}

impl Names {
    fn of(naming: WeightNaming) -> Self {
        let llama = Names {
            embed: "embed_tokens",
            attn: "self_attn",
            q: "q_proj",
            k: "k_proj",
            v: "v_proj",
            o: "o_proj",
            q_norm: "q_norm",
            k_norm: "k_norm",
            mlp: "mlp",
            gate: "gate_proj",
            up: "up_proj",
            down: "down_proj",
            ln1: "input_layernorm",
            ln2: "post_attention_layernorm",
            final_norm: "norm",
        };
        match naming {
            WeightNaming::Llama => llama,
            WeightNaming::Phi => Names {
                o: "dense",
                q_norm: "q_layernorm",
                k_norm: "k_layernorm",
                final_norm: "final_layernorm",
                ..llama
            },
            WeightNaming::Meta => Names {
                embed: "tok_embeddings",
                attn: "attention",
                q: "wq",
                k: "wk",
                v: "wv",
                o: "wo",
                q_norm: "q_normalization",
                k_norm: "k_normalization",
                mlp: "feed_forward",
                gate: "w1",
                up: "w3",
                down: "w2",
                ln1: "attention_norm",
                ln2: "ffn_norm",
                final_norm: "norm",
            },
        }
    }
}

#[derive(Debug, Clone)]
enum Norm {
    Rms { weight: Tensor, eps: f32 },
    Layer(candle_nn::LayerNorm),
}

impl Norm {
    fn load(vb: VarBuilder, size: usize, kind: NormKind, eps: f64) -> Result<Self> {
        Ok(match kind {
            NormKind::Rms => Norm::Rms {
                weight: vb.get(size, "weight")?,
                eps: eps as f32,
            },
            NormKind::Layer => Norm::Layer(candle_nn::layer_norm(size, eps, vb)?),
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Norm::Rms { weight, eps } => candle_nn::ops::rms_norm(&x.contiguous()?, weight, *eps)?,
            Norm::Layer(l) => l.forward(x)?,
        })
    }
}

/// Per-head LayerNorm over head_dim with a `[heads, head_dim]` affine (Chameleon q/k norm) or
/// one `[head_dim]` affine shared by all heads (Show-o's Phi `q/k_layernorm`).
#[derive(Debug, Clone)]
struct HeadNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl HeadNorm {
    /// Accepts `[heads, head_dim]`, `[1|mp, head_dim]` (broadcast, as Lumina stores it) or
    /// `[head_dim]` (one LayerNorm shared by all heads, as Meta's `consolidated.pth` stores it).
    fn load(vb: VarBuilder, heads: usize, head_dim: usize) -> Result<Self> {
        let get = |name: &str| -> Result<Tensor> {
            if !vb.contains_tensor(name) {
                // Stores that cannot list tensors (zeros, var maps) get the full shape.
                return Ok(vb.get((heads, head_dim), name)?);
            }
            let t = vb.get_unchecked(name)?;
            let t = match t.dims() {
                [d] if *d == head_dim => t.unsqueeze(0)?,
                _ => t,
            };
            match t.dims() {
                [h, d] if *d == head_dim && (*h == heads || heads.is_multiple_of(*h)) => {
                    let rep = heads / h;
                    Ok(t.unsqueeze(1)?
                        .broadcast_as((*h, rep, head_dim))?
                        .reshape((heads, head_dim))?
                        .to_dtype(vb.dtype())?)
                }
                found => Err(Error::ShapeMismatch {
                    name: format!("{}.{name}", vb.prefix()),
                    file: "the checkpoint".into(),
                    expected: vec![heads, head_dim],
                    found: found.to_vec(),
                }),
            }
        };
        Ok(Self {
            weight: get("weight")?,
            bias: get("bias")?,
            eps: 1e-5,
        })
    }

    /// One `[head_dim]` affine broadcast over the heads.
    fn load_shared(vb: VarBuilder, head_dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(head_dim, "weight")?,
            bias: vb.get(head_dim, "bias")?,
            eps,
        })
    }

    /// `x`: `[rows, len, heads, head_dim]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let mean = xf.mean_keepdim(D::Minus1)?;
        let xc = xf.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xn = xc
            .broadcast_div(&(var + self.eps)?.sqrt()?)?
            .to_dtype(dtype)?;
        Ok(xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    q_norm: Option<HeadNorm>,
    k_norm: Option<HeadNorm>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rot: usize,
    rope_layout: RopeLayout,
}

#[derive(Debug, Clone)]
enum MlpLayers {
    Gated {
        gate: Linear,
        up: Linear,
        down: Linear,
    },
    Plain {
        fc1: Linear,
        fc2: Linear,
    },
}

#[derive(Debug, Clone)]
struct Mlp {
    layers: MlpLayers,
    act: Activation,
}

#[derive(Debug, Clone)]
struct Block {
    attn: Attention,
    mlp: Mlp,
    ln1: Norm,
    /// `None` for a parallel block (one norm feeds both sublayers).
    ln2: Option<Norm>,
    order: BlockOrder,
}

/// The shared decoder-only transformer (`embed_tokens`, `layers.N.*`, `norm`).
#[derive(Debug, Clone)]
pub struct Decoder {
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Norm,
    /// RoPE inverse frequencies `[1, rotary_dim / 2]` f32; the cos/sin of the positions a
    /// forward needs are computed from them (nothing is sized by `max_position_embeddings`).
    inv_freq: Tensor,
    cfg: BackboneConfig,
    dtype: DType,
    device: Device,
}

impl Attention {
    fn load(vb: VarBuilder, c: &BackboneConfig) -> Result<Self> {
        let q = c.num_heads * c.head_dim;
        let kv = c.num_kv_heads * c.head_dim;
        let b = c.attention_bias;
        let n = Names::of(c.naming);
        let head_norm = |name: &str, heads: usize| -> Result<Option<HeadNorm>> {
            Ok(match c.qk_norm {
                QkNorm::None => None,
                QkNorm::PerHead => Some(HeadNorm::load(vb.pp(name), heads, c.head_dim)?),
                QkNorm::Shared => Some(HeadNorm::load_shared(vb.pp(name), c.head_dim, c.norm_eps)?),
            })
        };
        Ok(Self {
            q_proj: Linear::load_quantizable(c.hidden_size, q, b, vb.pp(n.q))?,
            k_proj: Linear::load_quantizable(c.hidden_size, kv, b, vb.pp(n.k))?,
            v_proj: Linear::load_quantizable(c.hidden_size, kv, b, vb.pp(n.v))?,
            o_proj: Linear::load_quantizable(q, c.hidden_size, b, vb.pp(n.o))?,
            q_norm: head_norm(n.q_norm, c.num_heads)?,
            k_norm: head_norm(n.k_norm, c.num_kv_heads)?,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            rot: c.rotary_dim(),
            rope_layout: c.rope_layout,
        })
    }

    /// RoPE on the first `rot` dims of each head; both layouts share the `[len, rot/2]` tables.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let apply = |x: &Tensor| match self.rope_layout {
            RopeLayout::HalfSplit => candle_nn::rotary_emb::rope(x, cos, sin),
            RopeLayout::Interleaved => candle_nn::rotary_emb::rope_i(x, cos, sin),
        };
        if self.rot == self.head_dim {
            return Ok(apply(&x.contiguous()?)?);
        }
        let r = x.narrow(D::Minus1, 0, self.rot)?.contiguous()?;
        let pass = x.narrow(D::Minus1, self.rot, self.head_dim - self.rot)?;
        Ok(Tensor::cat(&[&apply(&r)?, &pass], D::Minus1)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: &mut KvCache,
        layer: usize,
    ) -> Result<Tensor> {
        let (r, l, _) = x.dims3()?;
        let q = self
            .q_proj
            .forward(x)?
            .reshape((r, l, self.heads, self.head_dim))?;
        let k = self
            .k_proj
            .forward(x)?
            .reshape((r, l, self.kv_heads, self.head_dim))?;
        let v = self
            .v_proj
            .forward(x)?
            .reshape((r, l, self.kv_heads, self.head_dim))?;
        let q = match &self.q_norm {
            Some(n) => n.forward(&q)?,
            None => q,
        };
        let k = match &self.k_norm {
            Some(n) => n.forward(&k)?,
            None => k,
        };
        let q = self.rope(&q.transpose(1, 2)?, cos, sin)?;
        let k = self.rope(&k.transpose(1, 2)?, cos, sin)?;
        let v = v.transpose(1, 2)?.contiguous()?;
        let (k, v) = cache.append(layer, &k, &v)?;
        let t = k.dim(2)?;
        // GQA without copying the cache: group the query heads that share a kv head.
        let rep = self.heads / self.kv_heads;
        let q = q
            .contiguous()?
            .reshape((r, self.kv_heads, rep * l, self.head_dim))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?.to_dtype(DType::F32)?;
        let scores = match mask {
            Some(m) => scores
                .reshape((r, self.kv_heads, rep, l, t))?
                .broadcast_add(&m.unsqueeze(1)?)?
                .reshape((r, self.kv_heads, rep * l, t))?,
            None => scores,
        };
        let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let out = probs
            .matmul(&v)?
            .reshape((r, self.heads, l, self.head_dim))?
            .transpose(1, 2)?
            .reshape((r, l, self.heads * self.head_dim))?;
        Ok(self.o_proj.forward(&out)?)
    }
}

impl Mlp {
    fn load(vb: VarBuilder, c: &BackboneConfig) -> Result<Self> {
        let b = c.mlp_bias;
        let (h, i) = (c.hidden_size, c.intermediate_size);
        let n = Names::of(c.naming);
        let layers = match c.mlp {
            MlpKind::Gated => MlpLayers::Gated {
                gate: Linear::load_quantizable(h, i, b, vb.pp(n.gate))?,
                up: Linear::load_quantizable(h, i, b, vb.pp(n.up))?,
                down: Linear::load_quantizable(i, h, b, vb.pp(n.down))?,
            },
            MlpKind::Plain => MlpLayers::Plain {
                fc1: Linear::load_quantizable(h, i, b, vb.pp("fc1"))?,
                fc2: Linear::load_quantizable(i, h, b, vb.pp("fc2"))?,
            },
        };
        Ok(Self {
            layers,
            act: c.hidden_act,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match &self.layers {
            MlpLayers::Gated { gate, up, down } => {
                let g = self.act.forward(&gate.forward(x)?)?;
                down.forward(&(g * up.forward(x)?)?)?
            }
            MlpLayers::Plain { fc1, fc2 } => fc2.forward(&self.act.forward(&fc1.forward(x)?)?)?,
        })
    }
}

impl Decoder {
    /// `vb` at the decoder's prefix (the one holding `embed_tokens`, `layers`, `norm`).
    pub fn load(vb: VarBuilder, cfg: &BackboneConfig) -> Result<Self> {
        let n = Names::of(cfg.naming);
        let embed = candle_nn::embedding(cfg.vocab_size, cfg.hidden_size, vb.pp(n.embed))?;
        let blocks = (0..cfg.num_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(Block {
                    attn: Attention::load(vb.pp(n.attn), cfg)?,
                    mlp: Mlp::load(vb.pp(n.mlp), cfg)?,
                    ln1: Norm::load(vb.pp(n.ln1), cfg.hidden_size, cfg.norm, cfg.norm_eps)?,
                    ln2: if cfg.block == BlockOrder::Parallel {
                        None
                    } else {
                        Some(Norm::load(
                            vb.pp(n.ln2),
                            cfg.hidden_size,
                            cfg.norm,
                            cfg.norm_eps,
                        )?)
                    },
                    order: cfg.block,
                })
            })
            .collect::<Result<_>>()?;
        let norm = Norm::load(vb.pp(n.final_norm), cfg.hidden_size, cfg.norm, cfg.norm_eps)?;
        let inv_freq = rope_inv_freq(cfg, vb.device())?;
        Ok(Self {
            embed,
            blocks,
            norm,
            inv_freq,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// The runtime configuration it was built from.
    pub fn config(&self) -> &BackboneConfig {
        &self.cfg
    }
    /// The dtype of its weights, embeddings and hidden states.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// The device its weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }
    /// The token embedding, `[vocab_size, hidden_size]` (a tied LM head reuses its weight).
    pub fn embed_tokens(&self) -> &Embedding {
        &self.embed
    }

    /// `ids` `[rows, len]` u32 → `[rows, len, hidden]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.embed.forward(ids)?)
    }

    /// A cache for `rows` rows of up to `capacity` tokens.
    /// The memory is estimated first: a cache beyond [`crate::limits::memory_budget`] is an
    /// [`Error::TooLarge`] naming the rows and positions asked for.
    pub fn new_cache(&self, rows: usize, capacity: usize) -> Result<KvCache> {
        if capacity > self.cfg.max_position_embeddings {
            return Err(Error::ContextOverflow {
                len: capacity,
                max: self.cfg.max_position_embeddings,
                reserved: 0,
            });
        }
        let c = &self.cfg;
        crate::limits::check_memory(
            &format!(
                "a KV cache of {rows} rows × {capacity} positions (rows: prompts × --num, \
                 doubled under guidance; positions: prompt + --max-new-tokens)"
            ),
            crate::limits::bytes_of(
                &[2, c.num_layers, rows, c.num_kv_heads, c.head_dim, capacity],
                self.dtype,
            ),
        )?;
        KvCache::new(
            self.cfg.num_layers,
            rows,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
            capacity,
            self.dtype,
            &self.device,
        )
    }

    fn rope_for(&self, layout: &RowLayout, offset: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let rows = if layout.is_dense() { 1 } else { layout.rows() };
        let mut pos = Vec::with_capacity(rows * len);
        for r in 0..rows {
            for i in 0..len {
                pos.push(layout.position(r, offset + i) as u32);
            }
        }
        let (cos, sin) = rope_of(&pos, &self.inv_freq, self.dtype)?;
        if layout.is_dense() {
            return Ok((cos, sin));
        }
        let half = cos.dim(1)?;
        Ok((
            cos.reshape((rows, len, half))?,
            sin.reshape((rows, len, half))?,
        ))
    }

    /// Runs `x` (`[rows, len, hidden]`) after what `cache` holds; returns final-normed hidden
    /// states `[rows, len, hidden]` and advances the cache by `len`.
    pub fn forward(&self, x: &Tensor, args: ForwardArgs, cache: &mut KvCache) -> Result<Tensor> {
        let (rows, len, _) = x.dims3()?;
        if rows != args.layout.rows() || rows != cache.rows() {
            return Err(Error::invalid(
                "batch",
                format!(
                    "{rows} input rows, {} layout rows, {} cache rows",
                    args.layout.rows(),
                    cache.rows()
                ),
            ));
        }
        let offset = cache.len();
        if offset + len > self.cfg.max_position_embeddings {
            return Err(Error::ContextOverflow {
                len: offset + len,
                max: self.cfg.max_position_embeddings,
                reserved: 0,
            });
        }
        let (cos, sin) = self.rope_for(args.layout, offset, len)?;
        let mask = args
            .mask
            .build(args.layout, offset, len, DType::F32, &self.device)?;
        let mut h = x.to_dtype(self.dtype)?;
        for (i, b) in self.blocks.iter().enumerate() {
            h = match &b.ln2 {
                None => {
                    let x = b.ln1.forward(&h)?;
                    let a = b.attn.forward(&x, &cos, &sin, mask.as_ref(), cache, i)?;
                    let m = b.mlp.forward(&x)?;
                    ((&h + a)? + m)?
                }
                Some(ln2) if b.order == BlockOrder::SwinNorm => {
                    let a = b.attn.forward(&h, &cos, &sin, mask.as_ref(), cache, i)?;
                    let h1 = (&h + b.ln1.forward(&a)?)?;
                    let m = b.mlp.forward(&h1)?;
                    (&h1 + ln2.forward(&m)?)?
                }
                Some(ln2) => {
                    let a =
                        b.attn
                            .forward(&b.ln1.forward(&h)?, &cos, &sin, mask.as_ref(), cache, i)?;
                    let h1 = (&h + a)?;
                    let m = b.mlp.forward(&ln2.forward(&h1)?)?;
                    (&h1 + m)?
                }
            };
        }
        cache.advance(len);
        self.norm.forward(&h)
    }
}

/// A plain LM head `hidden → vocab` without bias.
pub fn lm_head(vb: VarBuilder, cfg: &BackboneConfig) -> Result<candle_nn::Linear> {
    Ok(linear_no_bias(cfg.hidden_size, cfg.vocab_size, vb)?)
}

/// `1 / θ^(2i / rot)` for the rotated pairs, `[1, rot / 2]` f32.
fn rope_inv_freq(cfg: &BackboneConfig, device: &Device) -> Result<Tensor> {
    let rot = cfg.rotary_dim();
    let inv: Vec<f32> = (0..rot / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / rot as f64) as f32)
        .collect();
    Ok(Tensor::from_vec(inv, (1, rot / 2), device)?)
}

/// cos and sin `[n, rot / 2]` in `dtype` of positions `pos`: `(p as f32) · inv_freq`, in f32,
/// element for element what a precomputed table holds.
fn rope_of(pos: &[u32], inv_freq: &Tensor, dtype: DType) -> Result<(Tensor, Tensor)> {
    let n = pos.len();
    let pos = Tensor::from_slice(pos, n, inv_freq.device())?
        .to_dtype(DType::F32)?
        .reshape((n, 1))?;
    let freqs = pos.broadcast_mul(inv_freq)?;
    Ok((freqs.cos()?.to_dtype(dtype)?, freqs.sin()?.to_dtype(dtype)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::config::{LlamaTextConfig, RopeLayout};
    use std::collections::HashMap;

    fn config() -> BackboneConfig {
        let text: LlamaTextConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": 16, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-5
        }))
        .unwrap();
        let mut c = text.to_backbone("test").unwrap();
        c.qk_norm = QkNorm::PerHead;
        c
    }

    /// HF's converter permutation of `wq`/`wk` rows for rotate-half: per head, the interleaved
    /// pairs (2i, 2i+1) become (i, i + d/2).
    fn permute_rows(w: &Tensor, heads: usize) -> Tensor {
        let (out, inp) = w.dims2().unwrap();
        w.reshape((heads, out / heads / 2, 2, inp))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((out, inp))
            .unwrap()
    }

    fn permute_norm(v: &Tensor, heads: usize) -> Tensor {
        let d = v.dim(0).unwrap();
        v.reshape((d / 2, 2))
            .unwrap()
            .t()
            .unwrap()
            .reshape((1, d))
            .unwrap()
            .broadcast_as((heads, d))
            .unwrap()
            .contiguous()
            .unwrap()
    }

    /// A raw Meta-layout decoder (unpermuted q/k, one `[head_dim]` q/k LayerNorm, interleaved
    /// RoPE) equals the HF-layout decoder built from the converter's permutation of the same
    /// weights (rotate-half RoPE).
    #[test]
    fn meta_interleaved_equals_hf_permuted() {
        let dev = Device::Cpu;
        let c = config();
        let (h, hd, i) = (c.hidden_size, c.head_dim, c.intermediate_size);
        let r = |shape: &[usize]| Tensor::randn(0f32, 0.5, shape, &dev).unwrap();
        let mut meta = HashMap::new();
        let mut hf = HashMap::new();
        let emb = r(&[c.vocab_size, h]);
        meta.insert("tok_embeddings.weight".to_string(), emb.clone());
        hf.insert("embed_tokens.weight".to_string(), emb);
        let norm = (r(&[h]) + 1.0).unwrap();
        meta.insert("norm.weight".into(), norm.clone());
        hf.insert("norm.weight".into(), norm);
        for l in 0..c.num_layers {
            let m = |n: &str| format!("layers.{l}.{n}");
            let wq = r(&[c.num_heads * hd, h]);
            let wk = r(&[c.num_kv_heads * hd, h]);
            hf.insert(m("self_attn.q_proj.weight"), permute_rows(&wq, c.num_heads));
            hf.insert(
                m("self_attn.k_proj.weight"),
                permute_rows(&wk, c.num_kv_heads),
            );
            meta.insert(m("attention.wq.weight"), wq);
            meta.insert(m("attention.wk.weight"), wk);
            for (raw, ours, heads) in [
                ("q_normalization", "q_norm", c.num_heads),
                ("k_normalization", "k_norm", c.num_kv_heads),
            ] {
                for (p, off) in [("weight", 1.0), ("bias", 0.0)] {
                    let v = (r(&[hd]) + off).unwrap();
                    hf.insert(m(&format!("self_attn.{ours}.{p}")), permute_norm(&v, heads));
                    meta.insert(m(&format!("attention.{raw}.{p}")), v);
                }
            }
            for (raw, ours, shape) in [
                ("attention.wv", "self_attn.v_proj", [c.num_kv_heads * hd, h]),
                ("attention.wo", "self_attn.o_proj", [h, c.num_heads * hd]),
                ("feed_forward.w1", "mlp.gate_proj", [i, h]),
                ("feed_forward.w2", "mlp.down_proj", [h, i]),
                ("feed_forward.w3", "mlp.up_proj", [i, h]),
            ] {
                let w = r(&shape);
                meta.insert(m(&format!("{raw}.weight")), w.clone());
                hf.insert(m(&format!("{ours}.weight")), w);
            }
            for (raw, ours) in [
                ("attention_norm", "input_layernorm"),
                ("ffn_norm", "post_attention_layernorm"),
            ] {
                let w = (r(&[h]) + 1.0).unwrap();
                meta.insert(m(&format!("{raw}.weight")), w.clone());
                hf.insert(m(&format!("{ours}.weight")), w);
            }
        }
        let mut mc = c.clone();
        mc.naming = WeightNaming::Meta;
        mc.rope_layout = RopeLayout::Interleaved;
        let dm = Decoder::load(VarBuilder::from_tensors(meta, DType::F32, &dev), &mc).unwrap();
        let dh = Decoder::load(VarBuilder::from_tensors(hf.clone(), DType::F32, &dev), &c).unwrap();
        let ids = Tensor::new(&[[1u32, 5, 9, 3, 14, 2, 7]], &dev).unwrap();
        let layout = RowLayout::dense(1);
        let args = ForwardArgs {
            layout: &layout,
            mask: &MaskKind::Causal,
        };
        let run = |d: &Decoder| {
            let mut cache = d.new_cache(1, 8).unwrap();
            let x = d.embed(&ids).unwrap();
            let a = d
                .forward(&x.narrow(1, 0, 5).unwrap(), args, &mut cache)
                .unwrap();
            let b = d
                .forward(&x.narrow(1, 5, 2).unwrap(), args, &mut cache)
                .unwrap();
            Tensor::cat(&[a, b], 1).unwrap()
        };
        let (ym, yh) = (run(&dm), run(&dh));
        let diff = (ym - &yh)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-5, "max abs diff {diff}");
        // and the layout matters: interleaved RoPE on the HF (permuted) weights differs
        let mut wrong = c.clone();
        wrong.rope_layout = RopeLayout::Interleaved;
        let dw = Decoder::load(VarBuilder::from_tensors(hf, DType::F32, &dev), &wrong).unwrap();
        let d2 = (run(&dw) - &yh)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d2 > 1e-3, "rope layout had no effect ({d2})");
    }
}
