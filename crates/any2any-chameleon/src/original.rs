//! Meta's original Chameleon release layout, which GAIR/Anole-7b-v0.1 ships too:
//!
//! ```text
//! <root>/models/7b/params.json            model hyper-parameters (+ optional consolidate_params.json)
//! <root>/models/7b/consolidated.pth       raw weights: Meta names, wq/wk NOT permuted for rotate-half
//! <root>/tokenizer/text_tokenizer.json    the tokenizer (its vocab holds IMGIMG…Z, <racm3:break>, …)
//! <root>/tokenizer/vqgan.ckpt, vqgan.yaml the VQGAN (PyTorch Lightning checkpoint + taming config)
//! ```
//!
//! The user may name `<root>` or `<root>/models/7b`. The weights load into the shared decoder with
//! [`WeightNaming::Meta`] and [`RopeLayout::Interleaved`] (adjacent-pair RoPE on the unpermuted
//! q/k, and the q/k LayerNorm on the same unpermuted layout); the LM head is `output`.

use crate::config::{ChameleonConfig, VocabMapping, VqConfig};
use crate::vq_files::{self, LoadedVq, VQGAN_CKPT, VQGAN_YAML};
use any2any_core::backbone::{BlockOrder, LlamaTextConfig, QkNorm, RopeLayout, WeightNaming};
use any2any_core::candle_core::{DType, Device};
use any2any_core::loading::read_json;
use any2any_core::{Error, ModelFiles, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The text model's config in `models/<size>/`.
pub const PARAMS_JSON: &str = "params.json";
/// Merged over params.json by the reference loader (`model_parallel_size` of the consolidated
/// checkpoint).
pub const CONSOLIDATE_PARAMS_JSON: &str = "consolidate_params.json";
/// The text model's weights in `models/<size>/` (a PyTorch pickle).
pub const CONSOLIDATED_PTH: &str = "consolidated.pth";
/// The folder of the tokenizers, next to `models/`.
pub const TOKENIZER_DIR: &str = "tokenizer";
/// The text tokenizer in `tokenizer/`.
pub const TEXT_TOKENIZER_JSON: &str = "text_tokenizer.json";
/// The reserved token the HF converter renames to `<image>` (the prompt's image placeholder).
pub const IMAGE_PLACEHOLDER_RESERVED: &str = "<reserved08707>";

/// Whether `files` describe the original layout (as [`resolve_dir`] builds them).
pub fn is_original(files: &ModelFiles) -> bool {
    files.config.file_name().is_some_and(|n| n == PARAMS_JSON)
}

/// `consolidated.NN.pth` shards in `dir`, sorted.
fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("consolidated."))
                .and_then(|n| n.strip_suffix(".pth"))
                .is_some_and(|mid| !mid.is_empty() && mid.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect();
    v.sort();
    v
}

fn looks_like_model_dir(dir: &Path) -> bool {
    dir.join(PARAMS_JSON).is_file()
        || dir.join(CONSOLIDATED_PTH).is_file()
        || !shards(dir).is_empty()
}

/// The single weights file of a model directory: `consolidated.pth`, or a lone
/// `consolidated.00.pth`. Model-parallel shards are not merged.
pub fn weights_file(model_dir: &Path) -> Result<PathBuf> {
    let single = model_dir.join(CONSOLIDATED_PTH);
    if single.is_file() {
        return Ok(single);
    }
    let s = shards(model_dir);
    match s.len() {
        0 => Err(Error::MissingFile {
            dir: model_dir.display().to_string(),
            what: "Chameleon weights".into(),
            looked_for: format!("{CONSOLIDATED_PTH} or consolidated.00.pth"),
        }),
        1 => Ok(s[0].clone()),
        n => Err(Error::Config {
            path: model_dir.to_path_buf(),
            msg: format!(
                "a model-parallel checkpoint sharded into {n} files (consolidated.00.pth … consolidated.{:02}.pth) is not supported: merge the shards into one consolidated.pth, or convert the release with transformers' convert_chameleon_weights_to_hf.py and load the HF directory",
                n - 1
            ),
        }),
    }
}

/// The files of a hub repository in the original layout (GAIR/Anole-7b-v0.1), fetched before
/// [`resolve_dir`] runs on the snapshot.
pub const HUB_FILES: &[&str] = &[
    "models/7b/params.json",
    "models/7b/consolidated.pth",
    "tokenizer/text_tokenizer.json",
    "tokenizer/vqgan.yaml",
    "tokenizer/vqgan.ckpt",
];

/// The model directory of the layout at `dir`: `dir` itself, or its one `models/<size>`;
/// `Ok(None)` when `dir` has nothing of that layout.
fn find_model_dir(dir: &Path) -> Result<Option<PathBuf>> {
    if looks_like_model_dir(dir) {
        return Ok(Some(dir.to_path_buf()));
    }
    let models = dir.join("models");
    let looked_for = format!("models/<size>/{PARAMS_JSON} + {CONSOLIDATED_PTH}");
    if !models.is_dir() {
        if dir.join(TOKENIZER_DIR).join(TEXT_TOKENIZER_JSON).is_file() {
            return Err(Error::MissingFile {
                dir: dir.display().to_string(),
                what: "Chameleon model next to tokenizer/ (original layout)".into(),
                looked_for,
            });
        }
        return Ok(None);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(&models)
        .map_err(|source| Error::Io {
            path: models.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && looks_like_model_dir(p))
        .collect();
    found.sort();
    match found.len() {
        0 => Err(Error::MissingFile {
            dir: models.display().to_string(),
            what: "Chameleon model directory (original layout)".into(),
            looked_for,
        }),
        1 => Ok(found.pop()),
        _ => {
            let names: Vec<String> = found
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            Err(Error::invalid(
                "model",
                format!(
                    "{} holds several models ({}): pass one of them, e.g. {}",
                    models.display(),
                    names.join(", "),
                    found[0].display()
                ),
            ))
        }
    }
}

/// Family hook: recognises `<root>` (with `models/<size>/` and `tokenizer/`) or `<root>/models/<size>`
/// (with `../../tokenizer/`). `Ok(None)` when `dir` has nothing of that layout.
pub fn resolve_dir(dir: &Path) -> Result<Option<ModelFiles>> {
    let Some(model_dir) = find_model_dir(dir)? else {
        return Ok(None);
    };
    let params = model_dir.join(PARAMS_JSON);
    if !params.is_file() {
        return Err(Error::MissingFile {
            dir: model_dir.display().to_string(),
            what: "Chameleon model parameters (original layout)".into(),
            looked_for: PARAMS_JSON.into(),
        });
    }
    let weights = weights_file(&model_dir)?;
    let mut tok_dirs = vec![dir.join(TOKENIZER_DIR), model_dir.join(TOKENIZER_DIR)];
    if let Some(up) = model_dir.parent() {
        tok_dirs.push(up.join(TOKENIZER_DIR));
        if let Some(up2) = up.parent() {
            tok_dirs.push(up2.join(TOKENIZER_DIR));
        }
    }
    let tokenizer = tok_dirs
        .iter()
        .map(|d| d.join(TEXT_TOKENIZER_JSON))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingFile {
            dir: dir.display().to_string(),
            what: "Chameleon text tokenizer (original layout)".into(),
            looked_for: format!(
                "{TOKENIZER_DIR}/{TEXT_TOKENIZER_JSON} next to models/ (../../{TOKENIZER_DIR} from models/<size>)"
            ),
        })?;
    let opt = |name: &str| Some(model_dir.join(name)).filter(|p| p.is_file());
    let mut files = ModelFiles {
        name: dir.display().to_string(),
        generation_config: opt("generation_config.json"),
        preprocessor_config: opt("preprocessor_config.json"),
        dir: model_dir,
        config: params,
        weights: vec![weights],
        tokenizer: Some(tokenizer),
        components: Default::default(),
    };
    // The VQGAN sits next to the text tokenizer (`<root>/tokenizer/`), outside the model folder.
    let extra: Vec<PathBuf> = tokenizer_dir(&files).into_iter().collect();
    if let Some(vq) = files.layout_component(&vq_files::VQGAN_LAYOUT, &extra)? {
        files.components.insert(vq.name.clone(), vq);
    }
    Ok(Some(files))
}

/// The directory of `text_tokenizer.json` (where the release keeps the VQGAN too).
fn tokenizer_dir(files: &ModelFiles) -> Option<PathBuf> {
    files
        .tokenizer
        .as_ref()
        .and_then(|t| t.parent())
        .map(Path::to_path_buf)
}

/// The VQGAN of an original-layout checkpoint (`tokenizer/vqgan.ckpt` + `vqgan.yaml`, or a
/// safetensors conversion next to the weights); its encoder is required (image input).
pub fn load_vq(files: &ModelFiles, dtype: DType, device: &Device) -> Result<LoadedVq> {
    let extra: Vec<PathBuf> = tokenizer_dir(files).into_iter().collect();
    let vq = vq_files::load_vq_component(files, &extra, None, dtype, device)?.ok_or_else(|| {
        let mut dirs = vq_files::search_dirs(&files.dir);
        for t in &extra {
            if !dirs.contains(t) {
                dirs.push(t.clone());
            }
        }
        Error::MissingFile {
            dir: files.name.clone(),
            what: "Chameleon VQGAN (original layout)".into(),
            looked_for: format!(
                "{TOKENIZER_DIR}/{VQGAN_CKPT} + {TOKENIZER_DIR}/{VQGAN_YAML} (in {})",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    })?;
    if vq.encoder.is_none() {
        return Err(Error::WeightFile {
            path: vq.files.weights.clone(),
            msg: "no VQGAN encoder (`encoder.*`) in this file; the original-layout loader needs it (vqgan.ckpt has it)".into(),
        });
    }
    Ok(vq)
}

/// `params.json` merged as the reference loader does: top level, then its `model` object, then
/// `consolidate_params.json`.
fn merged_params(files: &ModelFiles) -> Result<serde_json::Map<String, serde_json::Value>> {
    let v: serde_json::Value = read_json(&files.config)?;
    let top = v.as_object().ok_or_else(|| Error::Config {
        path: files.config.clone(),
        msg: "expected a JSON object".into(),
    })?;
    let mut m = top.clone();
    if let Some(inner) = top.get("model").and_then(|x| x.as_object()) {
        m.extend(inner.clone());
    }
    let cp = files.dir.join(CONSOLIDATE_PARAMS_JSON);
    if cp.is_file() {
        let c: serde_json::Map<String, serde_json::Value> =
            any2any_core::loading::read_config(&cp)?;
        m.extend(c);
    }
    m.remove("model");
    Ok(m)
}

/// The text vocabulary of `text_tokenizer.json`: `model.vocab` plus `added_tokens`; `<image>` is
/// `<reserved08707>` when the file has no `<image>` (as the HF converter renames it).
pub fn read_vocab(path: &Path) -> Result<HashMap<String, u32>> {
    let v: serde_json::Value = read_json(path)?;
    let bad = |msg: &str| Error::Config {
        path: path.to_path_buf(),
        msg: msg.into(),
    };
    let vocab = v
        .pointer("/model/vocab")
        .and_then(|x| x.as_object())
        .ok_or_else(|| bad("missing `model.vocab` (a tokenizers JSON with a BPE vocab)"))?;
    let mut map = HashMap::with_capacity(vocab.len() + 64);
    for (k, id) in vocab {
        let id = id
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| bad(&format!("`model.vocab[{k:?}]` is not a token id")))?;
        map.insert(k.clone(), id);
    }
    for t in v
        .get("added_tokens")
        .and_then(|x| x.as_array())
        .into_iter()
        .flatten()
    {
        if let (Some(c), Some(id)) = (
            t.get("content").and_then(|x| x.as_str()),
            t.get("id").and_then(|x| x.as_u64()),
        ) {
            if let Ok(id) = u32::try_from(id) {
                map.insert(c.to_string(), id);
            }
        }
    }
    if !map.contains_key("<image>") {
        if let Some(&id) = map.get(IMAGE_PLACEHOLDER_RESERVED) {
            map.insert("<image>".into(), id);
        }
    }
    Ok(map)
}

/// The reference FFN width: `int(8·dim/3)`, times `ffn_dim_multiplier` (truncated), rounded up to
/// a multiple of `multiple_of`.
pub fn ffn_hidden_size(dim: usize, multiple_of: usize, ffn_dim_multiplier: Option<f64>) -> usize {
    let mut h = 8 * dim / 3;
    if let Some(m) = ffn_dim_multiplier {
        h = (m * h as f64) as usize;
    }
    multiple_of * h.div_ceil(multiple_of)
}

/// params.json (merged, see [`merged_params`]) as the reference loader reads it; `null` is
/// absent.
#[derive(Debug, Deserialize)]
struct Params {
    dim: usize,
    n_layers: usize,
    n_heads: usize,
    vocab_size: usize,
    n_kv_heads: Option<usize>,
    multiple_of: Option<usize>,
    model_parallel_size: Option<usize>,
    norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    ffn_dim_multiplier: Option<f64>,
    qk_normalization: Option<bool>,
    swin_norm: Option<bool>,
}

impl Params {
    /// The Llama text config they describe, after the checks the reference relies on.
    fn text(&self) -> std::result::Result<LlamaTextConfig, String> {
        let n_kv_heads = self.n_kv_heads.unwrap_or(self.n_heads);
        let multiple_of = self.multiple_of.unwrap_or(256);
        let mp = self.model_parallel_size.unwrap_or(1);
        for (k, v) in [
            ("dim", self.dim),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("vocab_size", self.vocab_size),
            ("n_kv_heads", n_kv_heads),
            ("multiple_of", multiple_of),
        ] {
            if v == 0 {
                return Err(format!("`{k}` must be a positive integer, got 0"));
            }
        }
        if mp != 1 {
            return Err(format!("model_parallel_size {mp}: only consolidated (model_parallel_size 1) checkpoints are supported"));
        }
        if !self.dim.is_multiple_of(self.n_heads) {
            return Err(format!(
                "dim {} is not a multiple of n_heads {}",
                self.dim, self.n_heads
            ));
        }
        let rope_theta = self.rope_theta.unwrap_or(10000.0);
        Ok(LlamaTextConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.dim,
            intermediate_size: ffn_hidden_size(self.dim, multiple_of, self.ffn_dim_multiplier),
            num_hidden_layers: self.n_layers,
            num_attention_heads: self.n_heads,
            num_key_value_heads: Some(n_kv_heads),
            head_dim: None,
            rms_norm_eps: self.norm_eps.unwrap_or(1e-5),
            rope_theta: Some(rope_theta),
            rope_parameters: None,
            // transformers' converter: 4096 for θ ≤ 10000 (Chameleon v1), else 16384
            max_position_embeddings: if rope_theta > 10000.0 { 16384 } else { 4096 },
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: false,
            hidden_act: any2any_core::candle_nn::Activation::Silu,
        })
    }
}

/// The model config of an original-layout checkpoint: params.json for the text model, the
/// tokenizer's vocab for image tokens and special ids, `vq` for the image grid.
pub fn config(files: &ModelFiles, vq: &VqConfig) -> Result<ChameleonConfig> {
    let path = &files.config;
    let cfg_err = |msg: String| Error::Config {
        path: path.clone(),
        msg,
    };
    let p = Params::deserialize(serde_json::Value::Object(merged_params(files)?))
        .map_err(|e| cfg_err(e.to_string()))?;
    let text = p.text().map_err(cfg_err)?;
    let mut backbone = text.to_backbone(&path.display().to_string())?;
    if p.qk_normalization == Some(true) {
        backbone.qk_norm = QkNorm::PerHead;
    }
    if p.swin_norm == Some(true) {
        backbone.block = BlockOrder::SwinNorm;
    }
    backbone.naming = WeightNaming::Meta;
    backbone.rope_layout = RopeLayout::Interleaved;
    let tok = files.tokenizer.as_ref().ok_or_else(|| Error::MissingFile {
        dir: files.name.clone(),
        what: "Chameleon text tokenizer (original layout)".into(),
        looked_for: format!("{TOKENIZER_DIR}/{TEXT_TOKENIZER_JSON}"),
    })?;
    let map = read_vocab(tok)?;
    let vocab = VocabMapping::new(&map, p.vocab_size).map_err(|e| Error::Config {
        path: tok.clone(),
        msg: e.to_string(),
    })?;
    Ok(ChameleonConfig {
        text,
        backbone,
        vq: vq.clone(),
        vocab,
        mask_image_logits: true,
        architectures: Vec::new(),
        target_size: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ffn_width_matches_the_reference() {
        // Chameleon-7B: dim 4096, multiple_of 256, no multiplier → 11008
        assert_eq!(ffn_hidden_size(4096, 256, None), 11008);
        assert_eq!(ffn_hidden_size(32, 64, Some(0.75)), 64);
    }
}
