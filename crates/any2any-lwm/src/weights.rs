//! The release's tensors under HF-style names, ready for a `VarBuilder` or a safetensors file.
//!
//! LLM (`params`, flax names, scan-stacked on a leading layer axis, dense kernels `[in, out]`):
//!
//! | flax key | name here |
//! |---|---|
//! | `transformer/wte/embedding` | `model.embed_tokens.weight` |
//! | `transformer/vte/embedding` | `model.vision_embed_tokens.weight` |
//! | `transformer/h/scan_decoder/attention/{wq,wk,wv,wo}/kernel` `[L, in, out]` | `model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` = `k[i]ᵀ` |
//! | `…/feed_forward/{w1,w3,w2}/kernel` | `model.layers.{i}.mlp.{gate,up,down}_proj.weight` (ᵀ) |
//! | `…/attention_norm/kernel`, `…/ffn_norm/kernel` `[L, H]` | `model.layers.{i}.{input,post_attention}_layernorm.weight` |
//! | `transformer/ln_f/kernel` | `model.norm.weight` |
//! | `lm_head/kernel`, `vision_head/kernel` | `lm_head.weight`, `vision_head.weight` (ᵀ) |
//!
//! Unscanned files (`transformer/h/{i}/…`, 2-D kernels) map the same way. q/k stay in the
//! checkpoint's interleaved RoPE layout (no rotate-half permutation).
//!
//! VQGAN (flax auto-names, convs HWIO → OIHW) under `vqgan.` with the core taming codec's names:
//! `encoder/Conv_0` → `encoder.conv_in`, `DownsamplingBlock_l/ResnetBlock_i/{GroupNorm_0, Conv_0,
//! GroupNorm_1, Conv_1, Conv_2}` → `down.l.block.i.{norm1, conv1, norm2, conv2, nin_shortcut}`,
//! `Downsample_0/Conv_0` → `downsample.conv`, `MidBlock_0/ResnetBlock_{0,1}` →
//! `mid.block_{1,2}`, `GroupNorm_0` / `Conv_1` → `norm_out` / `conv_out`, the decoder's
//! `UpsamplingBlock_r` (r = 0 the lowest resolution) → `up.r` (run order), `quant_conv`,
//! `post_quant_conv`, `quantize/embeddings` → `quantize.embedding.weight`.

use crate::config::{LwmConfig, VqganConfig};
use crate::msgpack::{Dtype, RawArray};
use any2any_core::candle_core::{DType, Device, Tensor};
use any2any_core::{Error, Result};
use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

/// Named tensors (CPU).
pub type Tensors = HashMap<String, Tensor>;

/// `len` bytes from `start` of an array's concatenated parts (borrowed when inside one part).
fn bytes_at<'a>(a: &RawArray<'a>, start: usize, len: usize) -> Cow<'a, [u8]> {
    let mut off = 0;
    for (i, p) in a.parts.iter().enumerate() {
        if start < off + p.len() {
            let s = start - off;
            if s + len <= p.len() {
                return match p {
                    Cow::Borrowed(b) => Cow::Borrowed(&b[s..s + len]),
                    Cow::Owned(v) => Cow::Owned(v[s..s + len].to_vec()),
                };
            }
            let mut v = Vec::with_capacity(len);
            v.extend_from_slice(&p[s..]);
            for q in &a.parts[i + 1..] {
                let need = len - v.len();
                v.extend_from_slice(&q[..need.min(q.len())]);
                if v.len() == len {
                    break;
                }
            }
            return Cow::Owned(v);
        }
        off += p.len();
    }
    Cow::Owned(Vec::new())
}

fn dtype(d: Dtype) -> DType {
    match d {
        Dtype::Bf16 => DType::BF16,
        Dtype::F16 => DType::F16,
        Dtype::F32 => DType::F32,
    }
}

/// The sub-array `index` of the leading axis (or the whole array for `None`), cast to `to`.
fn tensor(a: &RawArray, index: Option<usize>, to: DType) -> Result<Tensor> {
    let size = a.dtype.size();
    let (shape, start) = match index {
        None => (a.shape.clone(), 0),
        Some(i) => {
            let inner: Vec<usize> = a.shape[1..].to_vec();
            let n: usize = inner.iter().product();
            (inner, i * n * size)
        }
    };
    let n: usize = shape.iter().product();
    let bytes = bytes_at(a, start, n * size);
    let t = Tensor::from_raw_buffer(&bytes, dtype(a.dtype), &shape, &Device::Cpu)?;
    Ok(t.to_dtype(to)?)
}

fn bad(path: &Path, msg: String) -> Error {
    Error::WeightFile {
        path: path.to_path_buf(),
        msg,
    }
}

/// The LLM's tensors under HF-style names, cast to `to`; `layers` is the block count.
pub fn llm_tensors(
    path: &Path,
    records: &[(String, RawArray)],
    to: DType,
) -> Result<(Tensors, usize)> {
    let mut out = Tensors::new();
    let mut layers = 0usize;
    let dense = |leaf: &str| -> Option<(&'static str, bool)> {
        Some(match leaf {
            "attention/wq/kernel" => ("self_attn.q_proj.weight", true),
            "attention/wk/kernel" => ("self_attn.k_proj.weight", true),
            "attention/wv/kernel" => ("self_attn.v_proj.weight", true),
            "attention/wo/kernel" => ("self_attn.o_proj.weight", true),
            "feed_forward/w1/kernel" => ("mlp.gate_proj.weight", true),
            "feed_forward/w3/kernel" => ("mlp.up_proj.weight", true),
            "feed_forward/w2/kernel" => ("mlp.down_proj.weight", true),
            "attention_norm/kernel" => ("input_layernorm.weight", false),
            "ffn_norm/kernel" => ("post_attention_layernorm.weight", false),
            _ => return None,
        })
    };
    for (key, a) in records {
        let key = key.strip_prefix("params/").unwrap_or(key);
        let whole = |name: &str, transpose: bool, rank: usize| -> Result<(String, Tensor)> {
            if a.shape.len() != rank {
                return Err(bad(
                    path,
                    format!("`{key}`: shape {:?}, expected rank {rank}", a.shape),
                ));
            }
            let t = tensor(a, None, to)?;
            let t = if transpose { t.t()?.contiguous()? } else { t };
            Ok((name.to_string(), t))
        };
        let (name, t) = match key {
            "transformer/wte/embedding" => whole("model.embed_tokens.weight", false, 2)?,
            "transformer/vte/embedding" => whole("model.vision_embed_tokens.weight", false, 2)?,
            "transformer/ln_f/kernel" => whole("model.norm.weight", false, 1)?,
            "lm_head/kernel" => whole("lm_head.weight", true, 2)?,
            "vision_head/kernel" => whole("vision_head.weight", true, 2)?,
            k => {
                if let Some(leaf) = k.strip_prefix("transformer/h/scan_decoder/") {
                    let (hf, tr) =
                        dense(leaf).ok_or_else(|| bad(path, format!("unknown tensor `{k}`")))?;
                    let rank = if tr { 3 } else { 2 };
                    if a.shape.len() != rank || a.shape[0] == 0 {
                        return Err(bad(
                            path,
                            format!(
                                "`{k}`: shape {:?}, expected [layers, …] of rank {rank}",
                                a.shape
                            ),
                        ));
                    }
                    if layers != 0 && a.shape[0] != layers {
                        return Err(bad(
                            path,
                            format!("`{k}`: {} layers, other tensors have {layers}", a.shape[0]),
                        ));
                    }
                    layers = a.shape[0];
                    for i in 0..layers {
                        let t = tensor(a, Some(i), to)?;
                        let t = if tr { t.t()?.contiguous()? } else { t };
                        out.insert(format!("model.layers.{i}.{hf}"), t);
                    }
                    continue;
                }
                let rest = k
                    .strip_prefix("transformer/h/")
                    .ok_or_else(|| bad(path, format!("unknown tensor `{k}`")))?;
                let (idx, leaf) = rest
                    .split_once('/')
                    .ok_or_else(|| bad(path, format!("unknown tensor `{k}`")))?;
                let i: usize = idx
                    .parse()
                    .map_err(|_| bad(path, format!("unknown tensor `{k}`")))?;
                let (hf, tr) =
                    dense(leaf).ok_or_else(|| bad(path, format!("unknown tensor `{k}`")))?;
                layers = layers.max(i + 1);
                whole(
                    &format!("model.layers.{i}.{hf}"),
                    tr,
                    if tr { 2 } else { 1 },
                )?
            }
        };
        out.insert(name, t);
    }
    Ok((out, layers))
}

/// The LLM's sizes from its tensors (HF names), over `base` (a config file's values or the
/// 7B defaults): vocabularies, width, MLP width and depth; heads stay `base`'s.
pub fn infer_llm(t: &Tensors, layers: usize, base: &LwmConfig, path: &Path) -> Result<LwmConfig> {
    let dims = |name: &str| -> Result<Vec<usize>> {
        t.get(name)
            .map(|x| x.dims().to_vec())
            .ok_or_else(|| Error::MissingTensor {
                name: name.into(),
                files: path.display().to_string(),
            })
    };
    let wte = dims("model.embed_tokens.weight")?;
    let vte = dims("model.vision_embed_tokens.weight")?;
    let gate = dims("model.layers.0.mlp.gate_proj.weight")?;
    let mut c = base.clone();
    c.vocab_size = wte[0];
    c.hidden_size = wte[1];
    c.vision_vocab_size = vte[0];
    c.intermediate_size = gate[0];
    c.num_hidden_layers = layers;
    Ok(c)
}

/// The VQGAN's tensors under `vqgan.` + taming names, cast to `to`.
pub fn vqgan_tensors(path: &Path, arrays: &[(String, RawArray)], to: DType) -> Result<Tensors> {
    let mut out = Tensors::new();
    for (key, a) in arrays {
        let key = key.strip_prefix("params/").unwrap_or(key);
        let name =
            vq_name(key).ok_or_else(|| bad(path, format!("unknown VQGAN tensor `{key}`")))?;
        let mut t = tensor(a, None, to)?;
        if key.ends_with("/kernel") {
            if a.shape.len() != 4 {
                return Err(bad(
                    path,
                    format!(
                        "`{key}`: shape {:?}, a conv kernel [kh, kw, in, out] expected",
                        a.shape
                    ),
                ));
            }
            t = t.permute((3, 2, 0, 1))?.contiguous()?;
        }
        out.insert(format!("vqgan.{name}"), t);
    }
    Ok(out)
}

fn num(s: &str, prefix: &str) -> Option<usize> {
    s.strip_prefix(prefix)?.parse().ok()
}

fn resnet_part(p: &str) -> Option<&'static str> {
    Some(match p {
        "GroupNorm_0" => "norm1",
        "Conv_0" => "conv1",
        "GroupNorm_1" => "norm2",
        "Conv_1" => "conv2",
        "Conv_2" => "nin_shortcut",
        _ => return None,
    })
}

fn leaf(p: &str) -> Option<&'static str> {
    Some(match p {
        "kernel" | "scale" => "weight",
        "bias" => "bias",
        _ => return None,
    })
}

/// The taming name of a flax VQGAN key.
fn vq_name(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let (last, body) = parts.split_last()?;
    if key == "quantize/embeddings" {
        return Some("quantize.embedding.weight".into());
    }
    let l = leaf(last)?;
    let module = match body {
        ["quant_conv"] => "quant_conv".to_string(),
        ["post_quant_conv"] => "post_quant_conv".to_string(),
        [side @ ("encoder" | "decoder"), rest @ ..] => {
            let s = match rest {
                ["Conv_0"] => "conv_in".to_string(),
                ["Conv_1"] => "conv_out".to_string(),
                ["GroupNorm_0"] => "norm_out".to_string(),
                ["MidBlock_0", rb, p] => {
                    format!(
                        "mid.block_{}.{}",
                        num(rb, "ResnetBlock_")? + 1,
                        resnet_part(p)?
                    )
                }
                [blk, "Downsample_0", "Conv_0"] => {
                    format!("down.{}.downsample.conv", num(blk, "DownsamplingBlock_")?)
                }
                [blk, "Upsample_0", "Conv_0"] => {
                    format!("up.{}.upsample.conv", num(blk, "UpsamplingBlock_")?)
                }
                [blk, rb, p] => {
                    let (lvl, kind) = match num(blk, "DownsamplingBlock_") {
                        Some(l) => (l, "down"),
                        None => (num(blk, "UpsamplingBlock_")?, "up"),
                    };
                    format!(
                        "{kind}.{lvl}.block.{}.{}",
                        num(rb, "ResnetBlock_")?,
                        resnet_part(p)?
                    )
                }
                _ => return None,
            };
            format!("{side}.{s}")
        }
        _ => return None,
    };
    Some(format!("{module}.{l}"))
}

/// The VQGAN's configuration read off its tensors (names as [`vqgan_tensors`] gives them).
pub fn infer_vqgan(t: &Tensors, path: &Path) -> Result<VqganConfig> {
    let dims = |name: &str| -> Result<Vec<usize>> {
        t.get(&format!("vqgan.{name}"))
            .map(|x| x.dims().to_vec())
            .ok_or_else(|| Error::MissingTensor {
                name: format!("vqgan.{name}"),
                files: path.display().to_string(),
            })
    };
    let hidden = dims("encoder.conv_in.weight")?[0];
    let mut mult = Vec::new();
    while let Ok(d) = dims(&format!("encoder.down.{}.block.0.conv1.weight", mult.len())) {
        if hidden == 0 || d[0] % hidden != 0 {
            return Err(bad(
                path,
                format!(
                    "encoder level {} has {} channels, not a multiple of {hidden}",
                    mult.len(),
                    d[0]
                ),
            ));
        }
        mult.push(d[0] / hidden);
        if mult.len() > 8 {
            break;
        }
    }
    if mult.is_empty() {
        return Err(Error::MissingTensor {
            name: "vqgan.encoder.down.0.block.0.conv1.weight".into(),
            files: path.display().to_string(),
        });
    }
    let mut nrb = 0;
    while t.contains_key(&format!("vqgan.encoder.down.0.block.{nrb}.conv1.weight")) {
        nrb += 1;
    }
    let z = dims("encoder.conv_out.weight")?[0];
    let emb = dims("quantize.embedding.weight")?;
    Ok(VqganConfig {
        resolution: 16 << (mult.len() - 1),
        hidden_channels: hidden,
        channel_mult: mult,
        num_res_blocks: nrb,
        z_channels: z,
        quantized_embed_dim: emb[1],
        num_embeddings: emb[0],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layer_spanning_chunks_is_reassembled() {
        // [3, 2] f32 stacked over chunks of 5, 3 and 4 elements... as bytes
        let data: Vec<u8> = (0..12u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let a = RawArray {
            shape: vec![3, 2, 2],
            dtype: Dtype::F32,
            parts: vec![
                Cow::Borrowed(&data[..20]),
                Cow::Borrowed(&data[20..32]),
                Cow::Borrowed(&data[32..]),
            ],
        };
        for i in 0..3 {
            let t = tensor(&a, Some(i), DType::F32).unwrap();
            let want: Vec<f32> = (0..4).map(|j| (i * 4 + j) as f32).collect();
            assert_eq!(t.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        }
        let whole = tensor(&a, None, DType::F32).unwrap();
        assert_eq!(whole.dims(), [3, 2, 2]);
    }

    #[test]
    fn flax_vqgan_names_map_to_taming_names() {
        for (flax, ours) in [
            ("encoder/Conv_0/kernel", "encoder.conv_in.weight"),
            (
                "encoder/DownsamplingBlock_3/ResnetBlock_1/Conv_2/bias",
                "encoder.down.3.block.1.nin_shortcut.bias",
            ),
            (
                "encoder/DownsamplingBlock_0/Downsample_0/Conv_0/kernel",
                "encoder.down.0.downsample.conv.weight",
            ),
            (
                "decoder/MidBlock_0/ResnetBlock_1/GroupNorm_0/scale",
                "decoder.mid.block_2.norm1.weight",
            ),
            (
                "decoder/UpsamplingBlock_0/ResnetBlock_2/GroupNorm_1/bias",
                "decoder.up.0.block.2.norm2.bias",
            ),
            (
                "decoder/UpsamplingBlock_1/Upsample_0/Conv_0/kernel",
                "decoder.up.1.upsample.conv.weight",
            ),
            ("decoder/GroupNorm_0/scale", "decoder.norm_out.weight"),
            ("quantize/embeddings", "quantize.embedding.weight"),
            ("post_quant_conv/bias", "post_quant_conv.bias"),
        ] {
            assert_eq!(vq_name(flax).as_deref(), Some(ours), "{flax}");
        }
        assert_eq!(vq_name("encoder/AttnBlock_0/Conv_0/kernel"), None);
    }
}
