//! The backbone contract: a decoder-only transformer that takes input embeddings, per-row
//! positions, an attention-mask kind and a preallocated KV cache, and returns final-normed hidden
//! states; logits come from a head the family picks (the LM head, a vocabulary slice, or its own).
//! Variants (q/k norm, swin-norm, biases, GQA, rope θ, partial rotary) are configuration.

mod config;
mod decoder;
mod mask;

pub use config::{
    BackboneConfig, BlockOrder, LlamaTextConfig, MlpKind, NormKind, PhiConfig, QkNorm, RopeLayout,
    RopeParameters, WeightNaming,
};
pub use decoder::{lm_head, Decoder, ForwardArgs};
pub use mask::{MaskKind, RowLayout};
