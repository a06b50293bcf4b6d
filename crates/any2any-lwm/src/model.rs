//! The LWM model on the shared backbone, and its VQGAN on the core taming codec.
//!
//! * [`LwmModel`]: the core LLaMA decoder (interleaved RoPE, θ from the config, RMSNorm 1e-6)
//!   with two vocabularies: text ids embed through `wte` (`model.embed_tokens`) and leave through
//!   `lm_head`; vision ids (the VQGAN codes, 8192 end-of-frame, 8193 end-of-vision) embed through
//!   `vte` (`model.vision_embed_tokens`) and leave through `vision_head`. A prompt's vision mask
//!   picks the table per position (`FlaxVideoLLaMAModule`); a decode step embeds with the table
//!   of the head it samples ([`TextHead`], [`VisionHead`]).
//! * [`Vqgan`]: the aMUSEd VQGAN (`lwm/vqgan.py`): the taming encoder/decoder without any
//!   attention, `quant_conv`, nearest-codebook quantization, `post_quant_conv`.

use crate::config::{LwmConfig, VqganConfig};
use any2any_core::backbone::{BackboneConfig, Decoder, LlamaTextConfig, RopeLayout};
use any2any_core::candle_core::{DType, Module, Tensor};
use any2any_core::candle_nn::{self, Conv2d, Embedding, Linear, VarBuilder};
use any2any_core::codec::taming::{self, NormConfig, TamingConfig, UpOrder};
use any2any_core::decode::{Head, RowBatch, RowInput};
use any2any_core::{Error, Result};

/// End of a frame (after each image's 256 codes but the last of a video).
pub const EOF: u32 = 8192;
/// End of the vision span (after the last frame's codes in a prompt).
pub const EOV: u32 = 8193;

/// The LLM: decoder, the two embeddings and the two heads.
pub struct LwmModel {
    /// Its configuration.
    pub cfg: LwmConfig,
    /// The decoder's runtime configuration.
    pub backbone_cfg: BackboneConfig,
    /// The shared decoder; its token embedding is `wte`.
    pub decoder: Decoder,
    /// The vision embedding `vte`, `[vision_vocab, hidden]`.
    pub vte: Embedding,
    /// Text head, `hidden → vocab`.
    pub lm_head: Linear,
    /// Vision head, `hidden → vision_vocab`.
    pub vision_head: Linear,
}

impl LwmConfig {
    /// The decoder's runtime configuration: LLaMA with interleaved (complex-pair) RoPE.
    pub fn backbone(&self, what: &str) -> Result<BackboneConfig> {
        let text: LlamaTextConfig = serde_json::from_value(serde_json::json!({
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.theta,
            "max_position_embeddings": self.max_sequence_length,
        }))
        .map_err(|e| Error::Config {
            path: what.into(),
            msg: e.to_string(),
        })?;
        if self.vision_vocab_size <= EOV as usize {
            return Err(Error::Config {
                path: what.into(),
                msg: format!(
                    "vision_vocab_size {} must exceed the end-of-vision id {EOV}",
                    self.vision_vocab_size
                ),
            });
        }
        if self.tie_word_embeddings || self.tie_vision_embeddings {
            return Err(Error::Config {
                path: what.into(),
                msg: "tied embeddings are not supported (the release has none)".into(),
            });
        }
        let mut bb = text.to_backbone(what)?;
        bb.rope_layout = RopeLayout::Interleaved;
        Ok(bb)
    }
}

impl LwmModel {
    /// Loads from tensors under the HF-style names of [`crate::weights`].
    pub fn load(vb: VarBuilder, cfg: &LwmConfig, what: &str) -> Result<Self> {
        let backbone_cfg = cfg.backbone(what)?;
        let decoder = Decoder::load(vb.pp("model"), &backbone_cfg)?;
        let h = cfg.hidden_size;
        let vte =
            candle_nn::embedding(cfg.vision_vocab_size, h, vb.pp("model.vision_embed_tokens"))?;
        let lm_head = candle_nn::linear_no_bias(h, cfg.vocab_size, vb.pp("lm_head"))?;
        let vision_head =
            candle_nn::linear_no_bias(h, cfg.vision_vocab_size, vb.pp("vision_head"))?;
        Ok(Self {
            cfg: cfg.clone(),
            backbone_cfg,
            decoder,
            vte,
            lm_head,
            vision_head,
        })
    }

    /// Input embeddings `[len, hidden]` of a prompt: `vte` where `vision` is set, `wte` elsewhere
    /// (ids checked against their vocabulary).
    pub fn embed_prompt(&self, ids: &[u32], vision: &[bool]) -> Result<Tensor> {
        if ids.len() != vision.len() || ids.is_empty() {
            return Err(Error::invalid(
                "ids",
                format!("{} ids with {} vision flags", ids.len(), vision.len()),
            ));
        }
        for (&id, &v) in ids.iter().zip(vision) {
            let (vocab, what) = if v {
                (self.cfg.vision_vocab_size, "vision")
            } else {
                (self.cfg.vocab_size, "text")
            };
            if id as usize >= vocab {
                return Err(Error::invalid(
                    "ids",
                    format!("{what} id {id} is outside the {what} vocabulary ({vocab})"),
                ));
            }
        }
        let dev = self.decoder.device();
        let text: Vec<u32> = ids
            .iter()
            .zip(vision)
            .map(|(&i, &v)| if v { 0 } else { i })
            .collect();
        let vis: Vec<u32> = ids
            .iter()
            .zip(vision)
            .map(|(&i, &v)| if v { i } else { 0 })
            .collect();
        let mask: Vec<u8> = vision.iter().map(|&v| v as u8).collect();
        let n = ids.len();
        let t = self.decoder.embed(&Tensor::from_vec(text, (1, n), dev)?)?;
        let v = self.vte.forward(&Tensor::from_vec(vis, (1, n), dev)?)?;
        let m = Tensor::from_vec(mask, (1, n, 1), dev)?.broadcast_as(t.shape())?;
        Ok(m.where_cond(&v, &t)?.squeeze(0)?)
    }

    /// The last position's `(text logits [vocab], vision logits [vision_vocab])`, f32.
    pub fn last_logits(&self, ids: &[u32], vision: &[bool]) -> Result<(Tensor, Tensor)> {
        let e = self.embed_prompt(ids, vision)?;
        let (_, h) = RowBatch::prefill(&self.decoder, &[RowInput::Embeds(&e)], 1)?;
        let text = self.lm_head.forward(&h)?.to_dtype(DType::F32)?.squeeze(0)?;
        let vis = self
            .vision_head
            .forward(&h)?
            .to_dtype(DType::F32)?
            .squeeze(0)?;
        Ok((text, vis))
    }

    /// The text head: `lm_head` out, `wte` in.
    pub fn text_head(&self) -> TextHead<'_> {
        TextHead(self)
    }
    /// The vision head: `vision_head` out, `vte` in.
    pub fn vision_head(&self) -> VisionHead<'_> {
        VisionHead(self)
    }
}

/// Decode steps over text: `lm_head` logits, drawn ids embedded by `wte`.
pub struct TextHead<'a>(&'a LwmModel);

impl Head for TextHead<'_> {
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.0.lm_head.forward(hidden)?.to_dtype(DType::F32)?)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.0.decoder.embed(&ids.unsqueeze(1)?)
    }
}

/// Decode steps over vision tokens: `vision_head` logits, drawn ids embedded by `vte`.
pub struct VisionHead<'a>(&'a LwmModel);

impl Head for VisionHead<'_> {
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.0.vision_head.forward(hidden)?.to_dtype(DType::F32)?)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(self.0.vte.forward(&ids.unsqueeze(1)?)?)
    }
}

/// The aMUSEd VQGAN: pixels in `[-1, 1]` ↔ codes.
pub struct Vqgan {
    /// Its configuration.
    pub cfg: VqganConfig,
    encoder: taming::Encoder,
    quant_conv: Conv2d,
    codebook: Tensor,
    post_quant_conv: Conv2d,
    decoder: taming::Decoder,
    dtype: DType,
}

impl VqganConfig {
    /// The taming shape: no attention at any level nor in the mid blocks; the decoder's
    /// `up.0` is the lowest resolution (flax's `UpsamplingBlock_0`).
    pub fn taming(&self) -> TamingConfig {
        TamingConfig {
            in_channels: 3,
            out_channels: 3,
            base_channels: self.hidden_channels,
            channel_multiplier: self.channel_mult.clone(),
            num_res_blocks: self.num_res_blocks,
            latent_channels: self.z_channels,
            double_latent: false,
            attn_levels: vec![false; self.channel_mult.len()],
            mid_attention: false,
            up_order: UpOrder::RunOrder,
            norm: NormConfig::default(),
        }
    }
}

impl Vqgan {
    /// `vb` at the VQGAN's prefix (`vqgan`).
    pub fn load(vb: VarBuilder, cfg: &VqganConfig) -> Result<Self> {
        if cfg.channel_mult.is_empty() || cfg.channel_mult.len() > 8 {
            return Err(Error::invalid(
                "vqgan",
                format!("{} levels", cfg.channel_mult.len()),
            ));
        }
        let t = cfg.taming();
        let encoder = taming::Encoder::load(vb.pp("encoder"), &t)?;
        let decoder = taming::Decoder::load(vb.pp("decoder"), &t)?;
        let quant_conv = taming::conv2d(
            cfg.z_channels,
            cfg.quantized_embed_dim,
            1,
            0,
            vb.pp("quant_conv"),
        )?;
        let post_quant_conv = taming::conv2d(
            cfg.quantized_embed_dim,
            cfg.z_channels,
            1,
            0,
            vb.pp("post_quant_conv"),
        )?;
        let codebook = vb
            .pp("quantize.embedding")
            .get((cfg.num_embeddings, cfg.quantized_embed_dim), "weight")?;
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            quant_conv,
            codebook,
            post_quant_conv,
            decoder,
            dtype: vb.dtype(),
        })
    }

    /// Pixels per code along each side.
    pub fn factor(&self) -> usize {
        self.cfg.factor()
    }

    /// Pixels `[B, 3, H, W]` in `[-1, 1]` → codes `[B, h·w]` u32 (row-major).
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let xs = self.encoder.forward(&pixels.to_dtype(self.dtype)?)?;
        let z = self.quant_conv.forward(&xs)?;
        any2any_core::limits::check_finite(&z, "image encoder")?;
        Ok(taming::nearest_codes(&z, &self.codebook)?)
    }

    /// Codes `[B, h·w]` → pixels `[B, 3, h·f, w·f]` f32 clipped to `[-1, 1]`. Ids past the
    /// codebook decode as its last entry (JAX's gather clamps, so the reference does).
    pub fn decode(&self, codes: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, n) = codes.dims2()?;
        if n != h * w || n == 0 {
            return Err(Error::invalid(
                "codes",
                format!("{n} codes per image for a {h}×{w} grid"),
            ));
        }
        let last = (self.cfg.num_embeddings - 1) as f64;
        let ids = codes
            .to_dtype(DType::F32)?
            .clamp(0.0, last)?
            .to_dtype(DType::U32)?
            .flatten_all()?;
        let z = self
            .codebook
            .index_select(&ids, 0)?
            .reshape((b, h, w, self.cfg.quantized_embed_dim))?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        let z = self.post_quant_conv.forward(&z)?;
        let x = self.decoder.forward(&z)?.to_dtype(DType::F32)?;
        Ok(x.clamp(-1.0, 1.0)?)
    }
}

/// Pixels in `[-1, 1]` `[B, 3, H, W]` → RGB bytes per image, `(x + 1) · 127.5` truncated (the
/// reference's `astype(uint8)`).
pub fn to_u8_hwc(x: &Tensor) -> Result<Vec<Vec<u8>>> {
    let x = ((x.to_dtype(DType::F32)? + 1.0)? * 127.5)?
        .floor()?
        .clamp(0.0, 255.0)?
        .permute((0, 2, 3, 1))?
        .to_dtype(DType::U8)?;
    let b = x.dim(0)?;
    (0..b)
        .map(|i| Ok(x.get(i)?.flatten_all()?.to_vec1::<u8>()?))
        .collect()
}

/// `u32` ids of a `[B, n]` tensor, row by row.
pub fn rows(t: &Tensor) -> Result<Vec<Vec<u32>>> {
    Ok(t.to_dtype(DType::U32)?.to_vec2::<u32>()?)
}
