//! The Janus-Pro model: Llama backbone, SigLIP understanding tower + aligner, generation
//! embeddings + aligner + head over VQ codes, and the VQ-16 codec.

use crate::config::JanusConfig;
use crate::vision::{JanusAligner, JanusVisionModel};
use crate::vq::JanusVq;
use any2any_core::backbone::{BackboneConfig, Decoder};
use any2any_core::candle_core::{Module, Tensor};
use any2any_core::candle_nn::{self, Embedding, VarBuilder};
use any2any_core::nn::Linear;
use any2any_core::{Error, Result};

/// `fc1`, then `act → hidden_layers.{i}` for each hidden layer (generation aligner).
#[derive(Debug, Clone)]
pub struct GenAligner {
    fc1: Linear,
    hidden: Vec<Linear>,
    act: candle_nn::Activation,
}

impl GenAligner {
    /// Loads `fc1` (`input → dim`) and `layers − 1` hidden layers (`dim → dim`) under `vb`.
    pub fn load(
        vb: VarBuilder,
        input: usize,
        dim: usize,
        layers: usize,
        act: candle_nn::Activation,
    ) -> Result<Self> {
        let fc1 = Linear::load(input, dim, true, vb.pp("fc1"))?;
        let hidden = (1..layers.max(1))
            .map(|i| Linear::load(dim, dim, true, vb.pp(format!("hidden_layers.{}", i - 1))))
            .collect::<Result<_>>()?;
        Ok(Self { fc1, hidden, act })
    }
}

use any2any_core::candle_core;

impl Module for GenAligner {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut h = self.fc1.forward(x)?;
        for l in &self.hidden {
            h = l.forward(&self.act.forward(&h)?)?;
        }
        Ok(h)
    }
}

/// `proj_out → act → vision_head`: hidden states to image-code logits.
#[derive(Debug, Clone)]
pub struct GenHead {
    proj_out: Linear,
    vision_head: Linear,
    act: candle_nn::Activation,
}

impl Module for GenHead {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.act.forward(&self.proj_out.forward(x)?)?;
        self.vision_head.forward(&h)
    }
}

/// Maps an HF activation name to candle's.
pub fn activation(name: &str) -> Result<candle_nn::Activation> {
    Ok(match name {
        "gelu" => candle_nn::Activation::Gelu,
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => candle_nn::Activation::NewGelu,
        "silu" | "swish" => candle_nn::Activation::Silu,
        "relu" => candle_nn::Activation::Relu,
        other => {
            return Err(Error::invalid(
                "hidden_act",
                format!("activation `{other}` is not supported"),
            ))
        }
    })
}

/// Every weight of a Janus checkpoint.
pub struct JanusModel {
    /// The checkpoint's configuration.
    pub cfg: JanusConfig,
    /// The language model's shape, from `cfg.text_config`.
    pub backbone_cfg: BackboneConfig,
    /// The Llama language model (`model.language_model`).
    pub decoder: Decoder,
    /// Text logits (`lm_head`, or the tied embeddings).
    pub lm_head: Linear,
    /// The SigLIP understanding tower (`model.vision_model`).
    pub vision: JanusVisionModel,
    /// Projects understood image features into the embedding space (`model.aligner`).
    pub aligner: JanusAligner,
    /// Embeddings of generated image codes (`model.generation_embeddings`).
    pub gen_embed: Embedding,
    /// Projects code embeddings into the embedding space (`model.generation_aligner`).
    pub gen_aligner: GenAligner,
    /// Image-code logits of hidden states (`model.generation_head`).
    pub gen_head: GenHead,
    /// The VQ-16 image tokenizer (`model.vqmodel`).
    pub vq: JanusVq,
}

impl JanusModel {
    /// `vb` at the checkpoint root (HF layout: `model.*`, `lm_head.weight`).
    pub fn load(vb: VarBuilder, cfg: &JanusConfig) -> Result<Self> {
        let bb = cfg.text_config.to_backbone("config.json: text_config")?;
        let decoder = Decoder::load(vb.pp("model.language_model"), &bb)?;
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            Linear::new(any2any_core::backbone::lm_head(vb.pp("lm_head"), &bb)?)?
        } else {
            Linear::new(candle_nn::Linear::new(
                decoder.embed_tokens().embeddings().clone(),
                None,
            ))?
        };
        let vq_cfg = &cfg.vq_config;
        let act = activation(&vq_cfg.hidden_act)?;
        let m = vb.pp("model");
        Ok(Self {
            vision: JanusVisionModel::load(m.pp("vision_model"), &cfg.vision_config)?,
            aligner: JanusAligner::load(m.pp("aligner"), &cfg.vision_config)?,
            gen_embed: candle_nn::embedding(
                vq_cfg.num_embeddings,
                vq_cfg.embed_dim,
                m.pp("generation_embeddings"),
            )?,
            gen_aligner: GenAligner::load(
                m.pp("generation_aligner"),
                vq_cfg.embed_dim,
                vq_cfg.projection_dim,
                vq_cfg.num_hidden_layers,
                act,
            )?,
            gen_head: GenHead {
                proj_out: Linear::load(
                    vq_cfg.image_token_embed_dim,
                    vq_cfg.projection_dim,
                    true,
                    m.pp("generation_head.proj_out"),
                )?,
                vision_head: Linear::load(
                    vq_cfg.projection_dim,
                    vq_cfg.num_embeddings,
                    true,
                    m.pp("generation_head.vision_head"),
                )?,
                act,
            },
            vq: JanusVq::load(m.pp("vqmodel"), vq_cfg)?,
            decoder,
            lm_head,
            backbone_cfg: bb,
            cfg: cfg.clone(),
        })
    }

    /// Image tokens per generated image (and per understood image).
    pub fn num_image_tokens(&self) -> usize {
        self.cfg.vision_config.num_image_tokens
    }

    /// Side of the generated code grid.
    pub fn image_grid(&self) -> usize {
        (self.num_image_tokens() as f64).sqrt().round() as usize
    }

    /// Aligned image features `[B, N, hidden]` of normalised pixels `[B, 3, S, S]`.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let v = self
            .vision
            .forward(&pixels.to_dtype(self.decoder.dtype())?)?;
        Ok(self.aligner.forward(&v)?)
    }

    /// Input embeddings of generated codes `[R]` → `[R, 1, hidden]`.
    pub fn code_embeddings(&self, codes: &Tensor) -> Result<Tensor> {
        let e = self.gen_embed.forward(&codes.unsqueeze(1)?)?;
        Ok(self.gen_aligner.forward(&e)?)
    }
}
