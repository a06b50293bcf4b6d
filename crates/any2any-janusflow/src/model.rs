//! Every weight of a JanusFlow checkpoint (one safetensors, the official module names).

use crate::config::JanusFlowConfig;
use crate::uvit::{Encoded, ShallowUViTDecoder, ShallowUViTEncoder};
use crate::vision::siglip_tower;
use any2any_core::backbone::{BackboneConfig, Decoder};
use any2any_core::candle_core::{DType, Module, Tensor};
use any2any_core::candle_nn::{self, RmsNorm, VarBuilder};
use any2any_core::nn::Linear;
use any2any_core::{Error, Result};
use any2any_janus::vision::JanusVisionModel;

/// The loaded model: the LLM with its LM head, the understanding tower and its aligner, and the
/// generation encoder/decoder with their aligners.
pub struct JanusFlowModel {
    /// The checkpoint's configuration.
    pub cfg: JanusFlowConfig,
    /// The LLM's shape.
    pub backbone_cfg: BackboneConfig,
    /// `language_model.model`.
    pub decoder: Decoder,
    /// `language_model.lm_head`.
    pub lm_head: Linear,
    /// `vision_und_enc_model.vision_tower` (timm SigLIP).
    pub vision: JanusVisionModel,
    /// `vision_und_enc_aligner`: SigLIP width → LLM width.
    pub und_aligner: Linear,
    /// `beg_of_und_embed` `[hidden]`: replaces the embedding of an understood image's BOI.
    pub beg_of_und: Tensor,
    /// `vision_gen_enc_model`.
    pub gen_enc: ShallowUViTEncoder,
    /// `vision_gen_enc_aligner`: token width → LLM width.
    pub gen_enc_aligner: Linear,
    /// `vision_gen_dec_aligner_norm`: RMSNorm after the LLM's own final norm.
    pub gen_dec_norm: RmsNorm,
    /// `vision_gen_dec_aligner`: LLM width → decoder width.
    pub gen_dec_aligner: Linear,
    /// `vision_gen_dec_model`.
    pub gen_dec: ShallowUViTDecoder,
    /// Optional tower normalisation (`pixel_mean`, `pixel_std` of the tower's params).
    tower_norm: Option<([f64; 3], [f64; 3])>,
}

impl JanusFlowModel {
    /// `vb` at the checkpoint root.
    pub fn load(vb: VarBuilder<'static>, cfg: &JanusFlowConfig) -> Result<Self> {
        cfg.validate()?;
        let bb = cfg
            .language_config
            .to_backbone("config.json: language_config")?;
        let lm = vb.pp("language_model");
        let decoder = Decoder::load(lm.pp("model"), &bb)?;
        let lm_head = Linear::new(any2any_core::backbone::lm_head(lm.pp("lm_head"), &bb)?)?;
        let und = &cfg.vision_und_enc_config.params;
        let width = und.shape()?.width;
        let hidden = bb.hidden_size;
        let enc = &cfg.vision_gen_enc_config.params;
        let dec = &cfg.vision_gen_dec_config.params;
        if enc.hidden_size != hidden || dec.hidden_size != hidden {
            return Err(Error::Config {
                path: "config.json".into(),
                msg: format!(
                    "vision_gen_enc/dec hidden_size {} / {} differ from the LLM's {hidden}",
                    enc.hidden_size, dec.hidden_size
                ),
            });
        }
        let beg = vb.get((1, hidden), "beg_of_und_embed")?.squeeze(0)?;
        Ok(Self {
            vision: siglip_tower(vb.pp("vision_und_enc_model.vision_tower"), und)?,
            und_aligner: Linear::load(width, hidden, true, vb.pp("vision_und_enc_aligner"))?,
            beg_of_und: beg,
            gen_enc: ShallowUViTEncoder::load(vb.pp("vision_gen_enc_model"), enc)?,
            gen_enc_aligner: Linear::load(
                cfg.enc_width(),
                hidden,
                true,
                vb.pp("vision_gen_enc_aligner"),
            )?,
            gen_dec_norm: candle_nn::rms_norm(
                hidden,
                bb.norm_eps,
                vb.pp("vision_gen_dec_aligner_norm"),
            )?,
            gen_dec_aligner: Linear::load(
                hidden,
                dec.in_channels,
                true,
                vb.pp("vision_gen_dec_aligner"),
            )?,
            gen_dec: ShallowUViTDecoder::load(vb.pp("vision_gen_dec_model"), dec)?,
            tower_norm: und.pixel_mean.zip(und.pixel_std),
            decoder,
            lm_head,
            backbone_cfg: bb,
            cfg: cfg.clone(),
        })
    }

    /// Understanding input side in pixels.
    pub fn und_image_size(&self) -> usize {
        self.cfg.vision_und_enc_config.params.image_size
    }

    /// Placeholder tokens per understood image (the tower's patches).
    pub fn und_tokens(&self) -> usize {
        self.vision.config().num_patches()
    }

    /// `[beg_of_und_embed, aligner(SigLIP(pixels))]` per image: `[B, 1 + patches, hidden]`, for
    /// the BOI slot and the placeholders of each image.
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        let px = match self.tower_norm {
            Some((m, s)) => {
                let dev = pixels.device();
                let m = Tensor::new(&m.map(|v| v as f32), dev)?.reshape((1, 3, 1, 1))?;
                let s = Tensor::new(&s.map(|v| v as f32), dev)?.reshape((1, 3, 1, 1))?;
                pixels
                    .to_dtype(DType::F32)?
                    .broadcast_sub(&m)?
                    .broadcast_div(&s)?
            }
            None => pixels.clone(),
        };
        let f = self.vision.forward(&px.to_dtype(self.decoder.dtype())?)?;
        let f = self.und_aligner.forward(&f)?;
        let b = f.dim(0)?;
        let beg = self
            .beg_of_und
            .to_dtype(f.dtype())?
            .reshape((1, 1, ()))?
            .repeat((b, 1, 1))?;
        Ok(Tensor::cat(&[&beg, &f], 1)?)
    }

    /// The latent `z` `[B, 4, H, W]` at model timestep `t` → the LLM's input span
    /// `[B, 1 + h·w, hidden]` (`[t_emb, tokens…]`, tokens row-major) and the encoder's output.
    pub fn latent_span(&self, z: &Tensor, t: f64) -> Result<(Tensor, Encoded)> {
        let enc = self
            .gen_enc
            .forward(&z.to_dtype(self.decoder.dtype())?, t)?;
        let tokens = enc.x_emb.flatten_from(2)?.transpose(1, 2)?;
        let tokens = self.gen_enc_aligner.forward(&tokens)?;
        let span = Tensor::cat(
            &[&enc.t_emb.unsqueeze(1)?.to_dtype(tokens.dtype())?, &tokens],
            1,
        )?;
        Ok((span, enc))
    }

    /// The LLM's final-normed hidden states of the image tokens `[B, h·w, hidden]` → the
    /// velocity `[B, 4, H, W]` (f32).
    pub fn velocity(&self, hidden: &Tensor, enc: &Encoded) -> Result<Tensor> {
        let (b, c, h, w) = enc.x_emb.dims4()?;
        let _ = c;
        let x = self
            .gen_dec_aligner
            .forward(&self.gen_dec_norm.forward(&hidden.contiguous()?)?)?;
        let x = x.reshape((b, h, w, ()))?.permute((0, 3, 1, 2))?;
        let v = self.gen_dec.forward(&x, &enc.x_emb, &enc.t_emb)?;
        Ok(v.to_dtype(DType::F32)?)
    }
}
