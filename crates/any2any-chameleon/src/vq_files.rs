//! Finding and loading a Chameleon VQGAN on disk, in either of its two shapes:
//!
//! - the original release's `vqgan.ckpt` (a PyTorch Lightning checkpoint whose `state_dict`
//!   holds `encoder.*`, `decoder.*`, `quant_conv.*`, `post_quant_conv.*`,
//!   `quantize.embedding.weight`, next to training-only entries that are never read) with its
//!   `vqgan.yaml` (`model.params.{embed_dim, n_embed, ddconfig}`);
//! - a safetensors conversion with the same taming key names (`vqgan_decoder.safetensors` or
//!   `vqgan.safetensors`) with `vqgan_config.json` (same fields as the yaml, as JSON), or a
//!   `vqgan.yaml`, or the checkpoint's own `vq_config`.
//!
//! Both are looked for in a directory and in its `tokenizer/` subdirectory (where the original
//! release keeps them), as the checkpoint's `vqgan` component ([`VQGAN_LAYOUT`]), which
//! `--component vqgan=DIR_OR_HUB_ID` points elsewhere. [`load_vq_component`] (a checkpoint's) and
//! [`load_vq`] (a directory's) are the entry points for any backend that needs the VQGAN
//! (Chameleon, Anole, Lumina-mGPT, whose checkpoints ship none).

use crate::config::VqConfig;
use crate::model::DECODER_FILES;
use crate::vq::{VqDecoder, VqEncoder};
use any2any_core::candle_core::{DType, Device};
use any2any_core::candle_nn::var_builder::SimpleBackend;
use any2any_core::candle_nn::VarBuilder;
use any2any_core::loading::{Component, ComponentLayout, LayoutFile, WeightStore};
use any2any_core::{Error, ModelFiles, Result};
use std::path::{Path, PathBuf};

/// The original release's VQGAN checkpoint (PyTorch Lightning).
pub const VQGAN_CKPT: &str = "vqgan.ckpt";
/// The original release's VQGAN config.
pub const VQGAN_YAML: &str = "vqgan.yaml";
/// The JSON config that goes with a safetensors conversion.
pub const VQGAN_CONFIG_JSON: &str = "vqgan_config.json";
/// The entry of a Lightning checkpoint that holds the weights.
pub const STATE_DICT_KEY: &str = "state_dict";

/// The checkpoint's `vqgan` component: in the model directory, then `tokenizer/`, then
/// `original_tokenizers/` (where Alpha-VLLM/Chameleon_7B_mGPT, Lumina-mGPT's VQGAN, keeps it);
/// within one folder the safetensors conversions of [`DECODER_FILES`] (config
/// `vqgan_config.json` or `vqgan.yaml`) before `vqgan.ckpt` (config `vqgan.yaml`). It loads in
/// the model's dtype.
pub const VQGAN_LAYOUT: ComponentLayout = ComponentLayout {
    name: "vqgan",
    dirs: &["", "tokenizer", "original_tokenizers"],
    files: &[
        LayoutFile {
            weights: DECODER_FILES[0],
            configs: &[VQGAN_CONFIG_JSON, VQGAN_YAML],
        },
        LayoutFile {
            weights: DECODER_FILES[1],
            configs: &[VQGAN_CONFIG_JSON, VQGAN_YAML],
        },
        LayoutFile {
            weights: VQGAN_CKPT,
            configs: &[VQGAN_YAML],
        },
    ],
    dtype: None,
    optional: true,
};

/// On-disk format of a VQGAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VqFormat {
    /// `vqgan.ckpt`: a pickle whose `state_dict` entry holds the weights.
    LightningCkpt,
    /// Taming key names at the root of a safetensors file.
    Safetensors,
}

/// The files of one VQGAN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VqFiles {
    /// The weight file (`vqgan.ckpt` or safetensors).
    pub weights: PathBuf,
    /// `vqgan.yaml` or `vqgan_config.json` next to the weights, when there is one.
    pub config: Option<PathBuf>,
    /// How the weights are stored.
    pub format: VqFormat,
}

/// A loaded VQGAN: each half is present when its weights are in the file (`encoder.*` /
/// `decoder.*`).
#[derive(Debug, Clone)]
pub struct LoadedVq {
    /// Its configuration.
    pub config: VqConfig,
    /// The encoder (image → codes), when its weights are in the file.
    pub encoder: Option<VqEncoder>,
    /// The decoder (codes → image), when its weights are in the file.
    pub decoder: Option<VqDecoder>,
    /// The files it was loaded from.
    pub files: VqFiles,
}

/// Where a VQGAN is looked for next to a checkpoint directory: the directory, then `tokenizer/`,
/// then `original_tokenizers/` ([`VQGAN_LAYOUT`]'s folders).
pub fn search_dirs(dir: &Path) -> Vec<PathBuf> {
    VQGAN_LAYOUT.dirs_under(dir)
}

/// The first VQGAN in `dirs` (in order; within one directory the safetensors files of
/// [`DECODER_FILES`] come before `vqgan.ckpt`).
pub fn find_vq(dirs: &[PathBuf]) -> Option<VqFiles> {
    // The layout's files are all of a known format, so `from_component` cannot fail here.
    VQGAN_LAYOUT
        .find_in(dirs)
        .and_then(|c| VqFiles::from_component(&c).ok())
}

impl VqFiles {
    /// The VQGAN of a `vqgan` component: its one weights file (`vqgan.ckpt`, a Lightning
    /// checkpoint, or a `.safetensors` file) and config; else an error naming the component.
    pub fn from_component(c: &Component) -> Result<Self> {
        let bad = |msg: String| {
            Error::invalid(
                "component",
                format!("`{}` ({}): {msg}", c.name, c.dir.display()),
            )
        };
        let [weights] = c.weights.as_slice() else {
            return Err(bad(format!(
                "a VQGAN is one weights file ({VQGAN_CKPT} or .safetensors), found {}",
                c.weights.len()
            )));
        };
        let format = match weights.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => VqFormat::Safetensors,
            Some("ckpt") => VqFormat::LightningCkpt,
            _ => {
                return Err(bad(format!(
                    "{} is not a VQGAN checkpoint ({VQGAN_CKPT} or .safetensors)",
                    weights.display()
                )))
            }
        };
        Ok(Self {
            weights: weights.clone(),
            config: c.config.clone(),
            format,
        })
    }
}

/// Parses YAML text into JSON (mappings with string keys, sequences, scalars).
fn yaml_to_json(y: &yaml_rust2::Yaml) -> std::result::Result<serde_json::Value, String> {
    use serde_json::Value;
    use yaml_rust2::Yaml;
    Ok(match y {
        Yaml::Null => Value::Null,
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::Real(r) => match r.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            Some(n) => Value::Number(n),
            None => Value::String(r.clone()),
        },
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Array(a) => Value::Array(
            a.iter()
                .map(yaml_to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        Yaml::Hash(h) => {
            let mut m = serde_json::Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => return Err(format!("unsupported mapping key {other:?}")),
                };
                m.insert(key, yaml_to_json(v)?);
            }
            Value::Object(m)
        }
        Yaml::Alias(_) => return Err("YAML aliases are not supported".into()),
        Yaml::BadValue => return Err("invalid YAML value".into()),
    })
}

/// Reads an original `vqgan.yaml` (`model.params` as taming's `VQModel` takes it).
pub fn read_vqgan_yaml(path: &Path) -> Result<VqConfig> {
    let cfg_err = |msg: String| Error::Config {
        path: path.to_path_buf(),
        msg,
    };
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .map_err(|e| cfg_err(format!("malformed YAML: {e}")))?;
    let doc = docs
        .first()
        .ok_or_else(|| cfg_err("empty YAML document".into()))?;
    let v = yaml_to_json(doc).map_err(cfg_err)?;
    let params = v
        .get("model")
        .ok_or_else(|| cfg_err("missing `model`".into()))?
        .get("params")
        .ok_or_else(|| cfg_err("missing `model.params`".into()))?;
    VqConfig::from_taming(params).map_err(cfg_err)
}

/// Reads a `vqgan_config.json`: the yaml's content as JSON (`model.params.{ddconfig, embed_dim,
/// n_embed}`, or those fields at the top level), HF or taming names, HF defaults.
pub fn read_vqgan_config_json(path: &Path) -> Result<VqConfig> {
    let v: serde_json::Value = any2any_core::loading::read_config(path)?;
    let params = v.pointer("/model/params").cloned().unwrap_or(v);
    let mut merged = params
        .get("ddconfig")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    if let (Some(m), Some(o)) = (merged.as_object_mut(), params.as_object()) {
        for k in ["embed_dim", "n_embed"] {
            if let Some(x) = o.get(k) {
                m.insert(k.into(), x.clone());
            }
        }
    }
    VqConfig::from_json(&merged).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// The VQGAN config of `files`: its yaml / json, else `fallback` (e.g. config.json's
/// `vq_config`); a `vqgan.ckpt` always needs its `vqgan.yaml`.
pub fn vq_config(files: &VqFiles, fallback: Option<&VqConfig>) -> Result<VqConfig> {
    let dir = files.weights.parent().unwrap_or(Path::new("."));
    match &files.config {
        Some(p) if p.extension().is_some_and(|e| e == "yaml" || e == "yml") => read_vqgan_yaml(p),
        Some(p) => read_vqgan_config_json(p),
        None if files.format == VqFormat::LightningCkpt => Err(Error::MissingFile {
            dir: dir.display().to_string(),
            what: format!("config of {}", files.weights.display()),
            looked_for: VQGAN_YAML.into(),
        }),
        None => fallback.cloned().ok_or_else(|| Error::MissingFile {
            dir: dir.display().to_string(),
            what: format!("config of {}", files.weights.display()),
            looked_for: format!("{VQGAN_CONFIG_JSON} or {VQGAN_YAML}"),
        }),
    }
}

/// Loads the VQGAN halves present in `files` (`fallback` config as in [`vq_config`]).
pub fn load_vq_files(
    files: &VqFiles,
    fallback: Option<&VqConfig>,
    dtype: DType,
    device: &Device,
) -> Result<LoadedVq> {
    let config = vq_config(files, fallback)?;
    let paths = std::slice::from_ref(&files.weights);
    let store = match files.format {
        VqFormat::LightningCkpt => WeightStore::open_with_key(paths, Some(STATE_DICT_KEY))?,
        VqFormat::Safetensors => WeightStore::open(paths)?,
    };
    let has_encoder = store.contains_tensor("encoder.conv_in.weight");
    let has_decoder = store.contains_tensor("decoder.conv_in.weight");
    if !has_encoder && !has_decoder {
        return Err(Error::WeightFile {
            path: files.weights.clone(),
            msg: "neither `encoder.*` nor `decoder.*` tensors (taming VQGAN key names) found"
                .into(),
        });
    }
    let vb = VarBuilder::from_backend(Box::new(store), dtype, device.clone());
    // Typed errors raised by the store (missing tensor, shape) pass through; the rest (an
    // unsupported config) name the weights file.
    let err = |e: any2any_core::candle_core::Error| match Error::from(e) {
        Error::Candle(c) => Error::WeightFile {
            path: files.weights.clone(),
            msg: c.to_string(),
        },
        ours => ours,
    };
    let decoder = if has_decoder {
        Some(VqDecoder::load(vb.clone(), &config).map_err(err)?)
    } else {
        None
    };
    let encoder = if has_encoder {
        Some(VqEncoder::load(vb, &config).map_err(err)?)
    } else {
        None
    };
    Ok(LoadedVq {
        config,
        encoder,
        decoder,
        files: files.clone(),
    })
}

/// Finds a VQGAN in `dir` or `dir/tokenizer` and loads it; `Ok(None)` when there is none.
/// A safetensors VQGAN without its own config file uses `fallback`.
pub fn load_vq(
    dir: &Path,
    fallback: Option<&VqConfig>,
    dtype: DType,
    device: &Device,
) -> Result<Option<LoadedVq>> {
    match find_vq(&search_dirs(dir)) {
        Some(files) => load_vq_files(&files, fallback, dtype, device).map(Some),
        None => Ok(None),
    }
}

/// The VQGAN of a checkpoint: its `vqgan` component ([`VQGAN_LAYOUT`], also looked for in
/// `extra_dirs`, or the user's `--component vqgan=…`), loaded in the component's dtype, else
/// `dtype`; `Ok(None)` when there is none. A safetensors VQGAN without its own config file uses
/// `fallback`.
pub fn load_vq_component(
    files: &ModelFiles,
    extra_dirs: &[PathBuf],
    fallback: Option<&VqConfig>,
    dtype: DType,
    device: &Device,
) -> Result<Option<LoadedVq>> {
    match files.layout_component(&VQGAN_LAYOUT, extra_dirs)? {
        Some(c) => {
            let vq = VqFiles::from_component(&c)?;
            load_vq_files(&vq, fallback, c.dtype_or(dtype), device).map(Some)
        }
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 8
    n_embed: 16
    ddconfig:
      double_z: false
      z_channels: 8
      resolution: 32
      in_channels: 3
      out_ch: 3
      ch: 32
      ch_mult:
      - 1
      - 2
      num_res_blocks: 1
      attn_resolutions: [16]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.DummyLoss
";

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join(VQGAN_YAML);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn reads_the_taming_yaml() {
        let d = tempfile::tempdir().unwrap();
        let c = read_vqgan_yaml(&write(d.path(), YAML)).unwrap();
        assert_eq!(
            (
                c.embed_dim,
                c.num_embeddings,
                c.latent_channels,
                c.base_channels
            ),
            (8, 16, 8, 32)
        );
        assert_eq!(c.channel_multiplier, vec![1, 2]);
        assert_eq!((c.num_res_blocks, c.resolution), (1, 32));
        assert_eq!(c.attn_resolutions, vec![16]);
        assert!(!c.double_latent && c.attn_type == "vanilla");
    }

    #[test]
    fn yaml_errors_name_file_and_field() {
        let d = tempfile::tempdir().unwrap();
        for (text, field) in [
            (
                YAML.replace("      ch: 32\n", ""),
                "model.params.ddconfig.ch",
            ),
            (
                YAML.replace("    n_embed: 16\n", ""),
                "model.params.n_embed",
            ),
            (
                YAML.replace("num_res_blocks: 1", "num_res_blocks: two"),
                "model.params.ddconfig.num_res_blocks",
            ),
            ("model: {}\n".to_string(), "model.params"),
            ("model: [unclosed\n".to_string(), "malformed YAML"),
        ] {
            let p = write(d.path(), &text);
            let e = read_vqgan_yaml(&p).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{e:?}");
            let m = e.to_string();
            assert!(
                m.contains(&p.display().to_string()) && m.contains(field),
                "{m}"
            );
        }
    }

    #[test]
    fn taming_defaults_apply() {
        let d = tempfile::tempdir().unwrap();
        let text = YAML
            .replace("      double_z: false\n", "")
            .replace("      ch_mult:\n      - 1\n      - 2\n", "");
        let c = read_vqgan_yaml(&write(d.path(), &text)).unwrap();
        assert!(
            c.double_latent,
            "taming's Encoder defaults double_z to true"
        );
        assert_eq!(c.channel_multiplier, vec![1, 2, 4, 8]);
    }
}
