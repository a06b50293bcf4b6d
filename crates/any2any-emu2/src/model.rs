//! The multimodal encoder's weights: the EVA tower, `project_up` (tower → LLM width), the LLaMA
//! with its LM head, and `project_down` (LLM → tower width).
//!
//! Key names: the HF `EmuForCausalLM` (`model.visual.*`, `model.decoder.lm.{model.*, lm_head}`,
//! `project_up`, `project_down`) or the native `EmuModel` state dict (the same without `model.`).

use crate::config::Emu2Config;
use crate::eva::EvaTower;
use any2any_core::backbone::{BackboneConfig, Decoder};
use any2any_core::candle_core::{Module, Tensor};
use any2any_core::candle_nn::VarBuilder;
use any2any_core::nn::Linear;
use any2any_core::{Error, Result};

/// The loaded encoder.
pub struct Emu2Model {
    /// Its configuration.
    pub cfg: Emu2Config,
    /// The LLM's shape.
    pub backbone_cfg: BackboneConfig,
    /// `decoder.lm.model`.
    pub decoder: Decoder,
    /// `decoder.lm.lm_head`.
    pub lm_head: Linear,
    /// `visual`.
    pub visual: EvaTower,
    /// `project_up`: tower width → LLM width, no bias.
    pub project_up: Linear,
    /// `project_down`: LLM width → tower width, no bias.
    pub project_down: Linear,
}

impl Emu2Model {
    /// `vb` at the encoder's root.
    pub fn load(vb: VarBuilder<'static>, cfg: &Emu2Config) -> Result<Self> {
        let bb = cfg.text.to_backbone("multimodal_encoder config.json")?;
        let inner = if vb.contains_tensor("model.visual.cls_token") {
            vb.pp("model")
        } else if vb.contains_tensor("visual.cls_token") {
            vb.clone()
        } else {
            return Err(Error::MissingTensor {
                name: "model.visual.cls_token (HF EmuForCausalLM) or visual.cls_token (native EmuModel)"
                    .into(),
                files: "the multimodal encoder's weights".into(),
            });
        };
        let lm = inner.pp("decoder.lm");
        let decoder = Decoder::load(lm.pp("model"), &bb)?;
        let lm_head = Linear::new(any2any_core::backbone::lm_head(lm.pp("lm_head"), &bb)?)?;
        let w = cfg.vision_config.width;
        let h = bb.hidden_size;
        Ok(Self {
            visual: EvaTower::load(&cfg.vision_config, inner.pp("visual"))?,
            project_up: Linear::load(w, h, false, vb.pp("project_up"))?,
            project_down: Linear::load(h, w, false, vb.pp("project_down"))?,
            decoder,
            lm_head,
            backbone_cfg: bb,
            cfg: cfg.clone(),
        })
    }

    /// The parts the regression loop runs on.
    pub fn regression(&self) -> crate::regress::Regression<'_> {
        crate::regress::Regression {
            decoder: &self.decoder,
            project_up: &self.project_up,
            project_down: &self.project_down,
            n_query: self.n_query(),
        }
    }

    /// Visual tokens per image (`n_query`).
    pub fn n_query(&self) -> usize {
        self.cfg.vision_config.n_query
    }

    /// `project_up(encode_image(pixels))`: `[B · n_query, hidden]`, the embeddings of the
    /// `<image>` slots of `B` images in order.
    pub fn image_embeds(&self, pixels: &Tensor) -> Result<Tensor> {
        let f = self.visual.encode(pixels)?;
        let up = self
            .project_up
            .forward(&f.to_dtype(self.decoder.dtype())?)?;
        Ok(up.flatten_to(1)?)
    }

    /// `project_down` of final-normed hidden states.
    pub fn down(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.project_down.forward(hidden)?)
    }

    /// `project_up` of regressed embeddings, in the decoder's dtype.
    pub fn up(&self, embeds: &Tensor) -> Result<Tensor> {
        Ok(self
            .project_up
            .forward(&embeds.to_dtype(self.decoder.dtype())?)?)
    }
}
