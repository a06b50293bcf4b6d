//! The Show-o transformer: the Phi decoder and LM head over the merged vocabulary, with the
//! explicit-mask forwards the MaskGIT and MMU loops use.

use crate::config::ShowoConfig;
use any2any_core::backbone::{BackboneConfig, Decoder, ForwardArgs, MaskKind, RowLayout};
use any2any_core::nn::Linear;
use any2any_core::Result;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;

/// The Show-o transformer: a Phi decoder (`showo.model.*`) and a biased LM head
/// (`showo.lm_head`) over the merged text + special + code + mask vocabulary.
#[derive(Debug, Clone)]
pub struct ShowoModel {
    /// The Phi decoder (`showo.model`).
    pub decoder: Decoder,
    /// Logits over the merged vocabulary (`showo.lm_head`).
    pub lm_head: Linear,
    /// The checkpoint's configuration.
    pub config: ShowoConfig,
}

impl ShowoModel {
    /// `vb` at the checkpoint root (holding `showo.`).
    pub fn load(vb: VarBuilder, config: ShowoConfig, bb: &BackboneConfig) -> Result<Self> {
        let vb = vb.pp("showo");
        let decoder = Decoder::load(vb.pp("model"), bb)?;
        let lm_head = Linear::load(bb.hidden_size, bb.vocab_size, true, vb.pp("lm_head"))?;
        Ok(Self {
            decoder,
            lm_head,
            config,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.decoder.device()
    }

    /// `[rows, len, hidden]` final-normed hidden states → f32 logits `[rows, len, vocab]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?.to_dtype(DType::F32)?)
    }

    /// A whole forward of `ids` (`[rows, len]`) without a kept cache, under an explicit mask
    /// over absolute slots; positions are the plain slot index (pads included, as Show-o does).
    /// Returns f32 logits `[rows, len, vocab]`.
    pub fn forward(&self, ids: &Tensor, mask: &MaskKind) -> Result<Tensor> {
        let (rows, len) = ids.dims2()?;
        let mut cache = self.decoder.new_cache(rows, len)?;
        let layout = RowLayout::dense(rows);
        let h = self.decoder.forward(
            &self.decoder.embed(ids)?,
            ForwardArgs {
                layout: &layout,
                mask,
            },
            &mut cache,
        )?;
        self.logits(&h)
    }
}
