//! EVA-CLIP-E as Emu2 uses it (`Emu2/emu/eva_vit.py`): patch embedding, a CLS token, absolute
//! positions, post-norm blocks (`x + norm1(attn(x))`, `x + norm2(mlp(x))`) with `q_bias` /
//! `v_bias` attention and an exact-GELU MLP, and no final norm. [`EvaTower::encode`] drops the
//! CLS token and average-pools the patch grid to the `n_query` tokens.

use crate::config::EvaConfig;
use any2any_core::candle_core::{DType, Module, Tensor};
use any2any_core::candle_nn::{self as nn, LayerNorm, VarBuilder};
use any2any_core::nn::Linear;
use any2any_core::{Error, Result};

struct Attention {
    qkv: Tensor,
    qkv_bias: Option<Tensor>,
    proj: Linear,
    heads: usize,
}

impl Attention {
    fn load(c: &EvaConfig, vb: VarBuilder) -> Result<Self> {
        let w = c.width;
        let qkv = vb.get((3 * w, w), "qkv.weight")?;
        let qkv_bias = if c.qkv_bias {
            let q = vb.get(w, "q_bias")?;
            let v = vb.get(w, "v_bias")?;
            Some(Tensor::cat(&[&q, &q.zeros_like()?, &v], 0)?)
        } else {
            None
        };
        Ok(Self {
            qkv,
            qkv_bias,
            proj: Linear::load(w, w, true, vb.pp("proj"))?,
            heads: c.heads(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let hd = c / self.heads;
        let mut qkv = x.broadcast_matmul(&self.qkv.t()?)?;
        if let Some(bias) = &self.qkv_bias {
            qkv = qkv.broadcast_add(bias)?;
        }
        let qkv = qkv
            .reshape((b, n, 3, self.heads, hd))?
            .permute((2, 0, 3, 1, 4))?;
        let q = (qkv.get(0)?.contiguous()? * (hd as f64).powf(-0.5))?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let att = q.matmul(&k.t()?)?;
        let att = nn::ops::softmax_last_dim(&att.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b, n, c))?;
        Ok(self.proj.forward(&y)?)
    }
}

struct Block {
    norm1: LayerNorm,
    attn: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
}

impl Block {
    fn load(c: &EvaConfig, vb: VarBuilder) -> Result<Self> {
        let (w, m) = (c.width, c.mlp_width());
        Ok(Self {
            norm1: nn::layer_norm(w, c.layer_norm_eps, vb.pp("norm1"))?,
            attn: Attention::load(c, vb.pp("attn"))?,
            norm2: nn::layer_norm(w, c.layer_norm_eps, vb.pp("norm2"))?,
            fc1: Linear::load(w, m, true, vb.pp("mlp.fc1"))?,
            fc2: Linear::load(m, w, true, vb.pp("mlp.fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = (x + self.norm1.forward(&self.attn.forward(x)?)?)?;
        let h = self.fc2.forward(&self.fc1.forward(&x)?.gelu_erf()?)?;
        Ok((&x + self.norm2.forward(&h)?)?)
    }
}

/// The EVA tower (`visual.*`).
pub struct EvaTower {
    cfg: EvaConfig,
    patch: nn::Conv2d,
    cls: Tensor,
    pos: Tensor,
    blocks: Vec<Block>,
}

impl EvaTower {
    /// `vb` at the tower (`model.visual` in the HF encoder).
    pub fn load(cfg: &EvaConfig, vb: VarBuilder) -> Result<Self> {
        let w = cfg.width;
        let conv = nn::Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let patch = nn::conv2d(3, w, cfg.patch_size, conv, vb.pp("patch_embed.proj"))?;
        let n = cfg.grid() * cfg.grid();
        let blocks = (0..cfg.layers)
            .map(|i| Block::load(cfg, vb.pp(format!("blocks.{i}"))))
            .collect::<Result<_>>()?;
        Ok(Self {
            patch,
            cls: vb.get((1, 1, w), "cls_token")?,
            pos: vb.get((1, n + 1, w), "pos_embed")?,
            blocks,
            cfg: cfg.clone(),
        })
    }

    /// The tower's config.
    pub fn config(&self) -> &EvaConfig {
        &self.cfg
    }

    /// Normalised pixels `[B, 3, S, S]` → the features of CLS and every patch `[B, 1 + N, width]`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = pixels.dims4()?;
        let s = self.cfg.image_size;
        if c != 3 || h != s || w != s {
            return Err(Error::invalid(
                "image",
                format!(
                    "pixels {:?}: the EVA tower takes [B, 3, {s}, {s}]",
                    pixels.dims()
                ),
            ));
        }
        let x = self.patch.forward(&pixels.to_dtype(self.pos.dtype())?)?;
        let x = x.flatten_from(2)?.transpose(1, 2)?;
        let cls = self.cls.repeat((b, 1, 1))?;
        let mut x = Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.pos)?;
        for blk in &self.blocks {
            x = blk.forward(&x)?;
        }
        Ok(x)
    }

    /// `encode_image`: the patch features (CLS dropped) average-pooled to `n_query` tokens,
    /// `[B, n_query, width]`.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let f = self.forward(pixels)?;
        let (b, n, c) = f.dims3()?;
        let g = self.cfg.grid();
        let s = self.cfg.pool_stride();
        let x = f
            .narrow(1, 1, n - 1)?
            .transpose(1, 2)?
            .reshape((b, c, g, g))?;
        let x = x.avg_pool2d(s)?;
        Ok(x.flatten_from(2)?.transpose(1, 2)?.contiguous()?)
    }
}
