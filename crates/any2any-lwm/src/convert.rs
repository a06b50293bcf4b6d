//! The release layout: recognising it, reading it into named tensors, and converting it to
//! safetensors.

use crate::config::{ConvertedConfig, LwmConfig, VqganConfig};
use crate::msgpack::{self, Mapped};
use crate::weights::{self, Tensors};
use crate::{pickle, tokenizer};
use any2any_core::candle_core::DType;
use any2any_core::loading::read_json;
use any2any_core::{Error, ModelFiles, Result};
use std::path::{Path, PathBuf};

/// The LLM's weights in the release.
pub const PARAMS: &str = "params";
/// The VQGAN's weights in the release.
pub const VQGAN: &str = "vqgan";
/// The SentencePiece model in the release.
pub const TOKENIZER_MODEL: &str = "tokenizer.model";
/// The optional `VideoLLaMAConfig` JSON next to `params`.
pub const LWM_CONFIG: &str = "lwm_config.json";

/// The files of a hub repository in the release layout, fetched before [`resolve_dir`] runs.
pub const HUB_FILES: &[&str] = &[PARAMS, VQGAN, TOKENIZER_MODEL];

/// Family hook: a directory holding `params` (and no `config.json`) is the JAX release; it must
/// also hold `vqgan` and `tokenizer.model` (or `tokenizer.json`). `Ok(None)` otherwise.
pub fn resolve_dir(dir: &Path) -> Result<Option<ModelFiles>> {
    let params = dir.join(PARAMS);
    if !params.is_file() || dir.join("config.json").is_file() {
        return Ok(None);
    }
    let need = |name: &str, what: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(Error::MissingFile {
                dir: dir.display().to_string(),
                what: format!("LWM {what} (JAX release layout, next to `params`)"),
                looked_for: name.into(),
            })
        }
    };
    need(VQGAN, "VQGAN")?;
    if !dir.join("tokenizer.json").is_file() {
        need(TOKENIZER_MODEL, "tokenizer")?;
    }
    let cfg = dir.join(LWM_CONFIG);
    Ok(Some(ModelFiles {
        name: dir.display().to_string(),
        dir: dir.to_path_buf(),
        config: if cfg.is_file() { cfg } else { params.clone() },
        weights: vec![params],
        tokenizer: Some(dir.join("tokenizer.json")).filter(|p| p.is_file()),
        generation_config: None,
        preprocessor_config: None,
        components: Default::default(),
    }))
}

/// Whether `files` are the release layout (as [`resolve_dir`] builds them).
pub fn is_release(files: &ModelFiles) -> bool {
    files.weights.len() == 1 && files.weights[0].file_name().is_some_and(|n| n == PARAMS)
}

/// A release read into memory: configurations and the named tensors of both models.
pub struct Release {
    /// The LLM's configuration (the file's, or the 7B defaults, with sizes from the tensors).
    pub cfg: LwmConfig,
    /// The VQGAN's configuration, read off its tensors.
    pub vqgan: VqganConfig,
    /// LLM tensors (HF names) and VQGAN tensors (`vqgan.` + taming names).
    pub tensors: Tensors,
}

/// Reads a release directory: `params` cast to `llm_dtype`, `vqgan` to `vq_dtype`.
pub fn read_release(dir: &Path, llm_dtype: DType, vq_dtype: DType) -> Result<Release> {
    let base: LwmConfig = if dir.join(LWM_CONFIG).is_file() {
        read_json(&dir.join(LWM_CONFIG))?
    } else {
        LwmConfig::default()
    };
    let params = dir.join(PARAMS);
    let map = Mapped::open(&params)?;
    let records = msgpack::streaming_records(&map)?;
    let (mut tensors, layers) = weights::llm_tensors(&params, &records, llm_dtype)?;
    drop(records);
    drop(map);
    let cfg = weights::infer_llm(&tensors, layers, &base, &params)?;
    let vq_path = dir.join(VQGAN);
    let vq_map = Mapped::open(&vq_path)?;
    let arrays = if pickle::looks_like_pickle(vq_map.bytes()) {
        pickle::param_dict(&vq_map)?
    } else {
        msgpack::state_dict(&vq_map)?
    };
    let vq = weights::vqgan_tensors(&vq_path, &arrays, vq_dtype)?;
    drop(arrays);
    let vqgan = weights::infer_vqgan(&vq, &vq_path)?;
    tensors.extend(vq);
    Ok(Release {
        cfg,
        vqgan,
        tensors,
    })
}

/// Converts a release directory to `out`: `model.safetensors` (LLM in bf16 as in `params`,
/// VQGAN in f32 as in `vqgan`), `config.json` (`model_type: "lwm"`, both configurations),
/// `tokenizer.json` (the SentencePiece model rebuilt, or the release's own) and a copy of
/// `tokenizer.model`. `out` is created; existing files of those names are replaced.
pub fn convert(dir: &Path, out: &Path) -> Result<()> {
    if resolve_dir(dir)?.is_none() {
        return Err(Error::MissingFile {
            dir: dir.display().to_string(),
            what: "LWM JAX release (nothing else converts)".into(),
            looked_for: format!("{PARAMS}, {VQGAN}, {TOKENIZER_MODEL}"),
        });
    }
    let rel = read_release(dir, DType::BF16, DType::F32)?;
    let tok = tokenizer::load(dir)?.ok_or_else(|| Error::MissingFile {
        dir: dir.display().to_string(),
        what: "tokenizer".into(),
        looked_for: format!("{TOKENIZER_MODEL} or tokenizer.json"),
    })?;
    std::fs::create_dir_all(out).map_err(|source| Error::Io {
        path: out.to_path_buf(),
        source,
    })?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| Error::Io { path: p, source }
    };
    let st = out.join("model.safetensors");
    any2any_core::candle_core::safetensors::save(&rel.tensors, &st)?;
    let cfg = ConvertedConfig {
        model_type: "lwm".into(),
        llm: rel.cfg,
        vqgan: rel.vqgan,
    };
    let json = serde_json::to_string_pretty(&cfg).map_err(|e| Error::Config {
        path: out.join("config.json"),
        msg: e.to_string(),
    })?;
    let cfg_path = out.join("config.json");
    std::fs::write(&cfg_path, json + "\n").map_err(io(&cfg_path))?;
    let tj = out.join("tokenizer.json");
    tok.save(&tj, false)
        .map_err(|e| Error::Tokenizer(format!("{}: {e}", tj.display())))?;
    let spm = dir.join(TOKENIZER_MODEL);
    if spm.is_file() {
        let to = out.join(TOKENIZER_MODEL);
        std::fs::copy(&spm, &to).map_err(io(&to))?;
    }
    Ok(())
}
