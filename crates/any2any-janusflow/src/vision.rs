//! The understanding tower: JanusFlow stores SigLIP in timm's naming
//! (`vision_und_enc_model.vision_tower.{patch_embed.proj, pos_embed, blocks.{i}.attn.qkv, …}`),
//! the same network as Janus-Pro's HF-named tower. [`siglip_tower`] builds
//! [`any2any_janus::vision::JanusVisionModel`] over a [`VarBuilder`] that renames HF keys to
//! timm's and splits the fused `qkv` into `q_proj`/`k_proj`/`v_proj` at load (the unused
//! `attn_pool` head is never read).

use crate::config::{SiglipShape, UndEncParams};
use any2any_core::candle_core::{self, DType, Device, Shape, Tensor};
use any2any_core::candle_nn::var_builder::SimpleBackend;
use any2any_core::candle_nn::{Init, VarBuilder};
use any2any_core::{Error, Result};
use any2any_janus::vision::{JanusVisionConfig, JanusVisionModel};

/// Serves HF SigLIP keys from a timm-named tower.
struct TimmSiglip {
    /// At `vision_und_enc_model.vision_tower`.
    inner: VarBuilder<'static>,
}

/// Where an HF key lives in timm's layout: the timm key and, for q/k/v, which third of the
/// fused `qkv` it is.
fn timm_name(name: &str) -> (String, Option<usize>) {
    let fixed = [
        ("embeddings.patch_embedding.", "patch_embed.proj."),
        ("embeddings.position_embedding.weight", "pos_embed"),
        ("post_layernorm.", "norm."),
    ];
    for (hf, timm) in fixed {
        if let Some(rest) = name.strip_prefix(hf) {
            return (format!("{timm}{rest}"), None);
        }
    }
    let Some(rest) = name.strip_prefix("encoder.layers.") else {
        return (name.to_string(), None);
    };
    let (layer, rest) = rest.split_once('.').unwrap_or((rest, ""));
    let parts = [
        ("layer_norm1.", "norm1.", None),
        ("layer_norm2.", "norm2.", None),
        ("self_attn.q_proj.", "attn.qkv.", Some(0)),
        ("self_attn.k_proj.", "attn.qkv.", Some(1)),
        ("self_attn.v_proj.", "attn.qkv.", Some(2)),
        ("self_attn.projection_layer.", "attn.proj.", None),
        ("mlp.", "mlp.", None),
    ];
    for (hf, timm, third) in parts {
        if let Some(p) = rest.strip_prefix(hf) {
            return (format!("blocks.{layer}.{timm}{p}"), third);
        }
    }
    (format!("blocks.{layer}.{rest}"), None)
}

impl TimmSiglip {
    fn fetch(&self, s: Shape, name: &str, h: Init, dtype: DType) -> candle_core::Result<Tensor> {
        let (key, third) = timm_name(name);
        let dims = s.dims().to_vec();
        match third {
            Some(i) => {
                let mut fused = dims.clone();
                if let Some(d0) = fused.first_mut() {
                    *d0 *= 3;
                }
                let n = dims.first().copied().unwrap_or(0);
                self.inner
                    .get_with_hints_dtype(fused, &key, h, dtype)?
                    .narrow(0, i * n, n)
            }
            None if key == "pos_embed" => {
                let mut with_batch = vec![1];
                with_batch.extend_from_slice(&dims);
                self.inner
                    .get_with_hints_dtype(with_batch, &key, h, dtype)?
                    .reshape(s)
            }
            None => self.inner.get_with_hints_dtype(s, &key, h, dtype),
        }
    }
}

impl SimpleBackend for TimmSiglip {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        _: &Device,
    ) -> candle_core::Result<Tensor> {
        self.fetch(s, name, h, dtype)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, _: &Device) -> candle_core::Result<Tensor> {
        self.inner.get_unchecked_dtype(&timm_name(name).0, dtype)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(&timm_name(name).0)
    }
}

/// The HF-style config of a timm SigLIP of `shape` (timm: exact GELU, LayerNorm ε 1e-6, qkv
/// bias, no q/k norm, no class token).
pub fn janus_config(shape: &SiglipShape, image_size: usize) -> JanusVisionConfig {
    let mut c = JanusVisionConfig::default();
    c.hidden_size = shape.width;
    c.num_hidden_layers = shape.layers;
    c.num_attention_heads = shape.heads;
    c.image_size = image_size;
    c.patch_size = shape.patch_size;
    c.mlp_ratio = shape.mlp_ratio;
    c.hidden_act = "gelu".into();
    c.layer_norm_eps = 1e-6;
    c.attention_bias = true;
    c.use_qk_norm = false;
    c
}

/// The SigLIP tower at `vb` (`vision_und_enc_model.vision_tower`).
pub fn siglip_tower(vb: VarBuilder<'static>, params: &UndEncParams) -> Result<JanusVisionModel> {
    let shape = params.shape()?;
    let cfg = janus_config(&shape, params.image_size);
    cfg.validate().map_err(|e| Error::Config {
        path: "config.json: vision_und_enc_config.params".into(),
        msg: e.to_string(),
    })?;
    let (dtype, device) = (vb.dtype(), vb.device().clone());
    let renamed = VarBuilder::from_backend(Box::new(TimmSiglip { inner: vb }), dtype, device);
    Ok(JanusVisionModel::load(renamed, &cfg)?)
}

#[cfg(test)]
mod tests {
    use super::timm_name;

    #[test]
    fn hf_keys_map_to_timm() {
        assert_eq!(
            timm_name("embeddings.patch_embedding.weight").0,
            "patch_embed.proj.weight"
        );
        assert_eq!(
            timm_name("embeddings.position_embedding.weight").0,
            "pos_embed"
        );
        assert_eq!(timm_name("post_layernorm.bias").0, "norm.bias");
        assert_eq!(
            timm_name("encoder.layers.3.self_attn.k_proj.bias"),
            ("blocks.3.attn.qkv.bias".to_string(), Some(1))
        );
        assert_eq!(
            timm_name("encoder.layers.0.self_attn.projection_layer.weight").0,
            "blocks.0.attn.proj.weight"
        );
        assert_eq!(
            timm_name("encoder.layers.1.layer_norm2.weight").0,
            "blocks.1.norm2.weight"
        );
        assert_eq!(
            timm_name("encoder.layers.1.mlp.fc2.bias").0,
            "blocks.1.mlp.fc2.bias"
        );
    }
}
