//! Finding and reading a checkpoint: a local directory or a hub id (hf-hub, honouring `HF_HOME`
//! and `HF_HUB_OFFLINE`); config JSON into serde structs; single or sharded safetensors (mmapped,
//! validated up front so a truncated file is named) or PyTorch `.bin`/`.pth`; per-tensor dtype
//! casts; errors that name the file, the tensor and both shapes.

use crate::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// `None`: bf16 on CUDA, f32 elsewhere.
    pub dtype: Option<DType>,
    /// Never touch the network (also on when `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    pub revision: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: None,
            offline: false,
            revision: None,
        }
    }
}

impl LoadOptions {
    pub fn dtype(&self) -> DType {
        self.dtype.unwrap_or(if self.device.is_cuda() {
            DType::BF16
        } else {
            DType::F32
        })
    }
}

/// Parses `cpu`, `cuda`, `cuda:N` or `metal`.
pub fn parse_device(s: &str) -> Result<Device> {
    let dev = match s {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Device::new_cuda(0),
        "metal" => Device::new_metal(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::new_cuda(i),
            _ => {
                return Err(Error::invalid(
                    "device",
                    format!("`{s}` (expected cpu, cuda, cuda:N or metal)"),
                ))
            }
        },
    };
    dev.map_err(|e| Error::invalid("device", format!("`{s}` is not available: {e}")))
}

/// Parses `f32`, `bf16` or `f16`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        s => Err(Error::invalid(
            "dtype",
            format!("`{s}` (expected f32, bf16 or f16)"),
        )),
    }
}

/// The files of one checkpoint, resolved to local paths.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    /// What the user named (a directory or a hub id), for messages.
    pub name: String,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub weights: Vec<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub generation_config: Option<PathBuf>,
    pub preprocessor_config: Option<PathBuf>,
}

const WEIGHT_INDEXES: [&str; 2] = [
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
];
const WEIGHT_SINGLES: [&str; 3] = ["model.safetensors", "pytorch_model.bin", "model.pth"];

#[derive(serde::Deserialize)]
struct WeightIndex {
    weight_map: HashMap<String, String>,
}

fn opt(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    p.is_file().then_some(p)
}

impl ModelFiles {
    /// A local directory, or else a hub id.
    pub fn resolve(name: &str, opts: &LoadOptions) -> Result<Self> {
        let p = Path::new(name);
        if p.is_dir() {
            return Self::from_dir(p);
        }
        if p.exists() {
            return Err(Error::invalid(
                "model",
                format!("{name} is a file, not a model directory"),
            ));
        }
        if name.starts_with('.') || name.starts_with('/') || name.split('/').count() != 2 {
            return Err(Error::invalid(
                "model",
                format!("{name}: no such directory, and not a hub id of the form owner/name"),
            ));
        }
        Self::from_hub(name, opts)
    }

    pub fn from_dir(dir: &Path) -> Result<Self> {
        let name = dir.display().to_string();
        let config = opt(dir, "config.json").ok_or_else(|| Error::MissingFile {
            dir: name.clone(),
            what: "model config".into(),
            looked_for: "config.json".into(),
        })?;
        let weights = Self::weights_in(dir)?;
        Ok(Self {
            name,
            dir: dir.to_path_buf(),
            config,
            weights,
            tokenizer: opt(dir, "tokenizer.json"),
            generation_config: opt(dir, "generation_config.json"),
            preprocessor_config: opt(dir, "preprocessor_config.json"),
        })
    }

    fn weights_in(dir: &Path) -> Result<Vec<PathBuf>> {
        for idx in WEIGHT_INDEXES {
            if let Some(p) = opt(dir, idx) {
                let index: WeightIndex = read_json(&p)?;
                let mut files: Vec<String> = index.weight_map.into_values().collect();
                files.sort();
                files.dedup();
                return files
                    .into_iter()
                    .map(|f| {
                        opt(dir, &f).ok_or_else(|| Error::MissingFile {
                            dir: dir.display().to_string(),
                            what: format!("weight shard listed in {idx}"),
                            looked_for: f,
                        })
                    })
                    .collect();
            }
        }
        for single in WEIGHT_SINGLES {
            if let Some(p) = opt(dir, single) {
                return Ok(vec![p]);
            }
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        found.sort();
        if found.is_empty() {
            return Err(Error::MissingFile {
                dir: dir.display().to_string(),
                what: "weights".into(),
                looked_for: format!(
                    "{}, {} or *.safetensors",
                    WEIGHT_INDEXES.join(", "),
                    WEIGHT_SINGLES.join(", ")
                ),
            });
        }
        Ok(found)
    }

    /// Downloads (or finds in the HF cache) the files of a hub repository.
    /// Fetches the files of a repository that has no config.json, at the given relative paths
    /// (a family's own layout, e.g. `models/7b/params.json`), and returns the local snapshot
    /// directory that holds them as the repository does. `Ok(None)` when the first file does
    /// not exist there; a missing later file is an error naming it.
    pub fn fetch_hub_tree(id: &str, opts: &LoadOptions, paths: &[&str]) -> Result<Option<PathBuf>> {
        let (fetch, offline) = hub_fetcher(id, opts)?;
        let Some(first) = paths.first() else {
            return Ok(None);
        };
        let Some(p) = fetch(first)? else {
            return Ok(None);
        };
        for f in &paths[1..] {
            fetch(f)?.ok_or_else(|| Error::MissingFile {
                dir: format!("hub:{id}{}", if offline { " (offline cache)" } else { "" }),
                what: (*f).into(),
                looked_for: (*f).into(),
            })?;
        }
        // The snapshot root: strip the first path's components.
        let depth = Path::new(first).components().count();
        let mut root = p;
        for _ in 0..depth {
            root = root
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
        }
        Ok(Some(root))
    }

    pub fn from_hub(id: &str, opts: &LoadOptions) -> Result<Self> {
        let (fetch, offline) = hub_fetcher(id, opts)?;
        let need = |f: &str| -> Result<PathBuf> {
            fetch(f)?.ok_or_else(|| Error::MissingFile {
                dir: format!("hub:{id}{}", if offline { " (offline cache)" } else { "" }),
                what: f.into(),
                looked_for: f.into(),
            })
        };
        let config = need("config.json")?;
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut weights = None;
        for idx in WEIGHT_INDEXES {
            if let Some(p) = fetch(idx)? {
                let index: WeightIndex = read_json(&p)?;
                let mut files: Vec<String> = index.weight_map.into_values().collect();
                files.sort();
                files.dedup();
                weights = Some(files.iter().map(|f| need(f)).collect::<Result<Vec<_>>>()?);
                break;
            }
        }
        if weights.is_none() {
            for single in WEIGHT_SINGLES {
                if let Some(p) = fetch(single)? {
                    weights = Some(vec![p]);
                    break;
                }
            }
        }
        let weights = weights.ok_or_else(|| Error::MissingFile {
            dir: format!("hub:{id}"),
            what: "weights".into(),
            looked_for: format!(
                "{} or {}",
                WEIGHT_INDEXES.join(", "),
                WEIGHT_SINGLES.join(", ")
            ),
        })?;
        Ok(Self {
            name: id.to_string(),
            dir,
            config,
            weights,
            tokenizer: fetch("tokenizer.json")?,
            generation_config: fetch("generation_config.json")?,
            preprocessor_config: fetch("preprocessor_config.json")?,
        })
    }

    /// The raw config.json.
    pub fn config_json(&self) -> Result<serde_json::Value> {
        read_json(&self.config)
    }

    /// Reads an optional JSON file into `T`, or `T::default()` when absent.
    pub fn optional_json<T: DeserializeOwned + Default>(path: &Option<PathBuf>) -> Result<T> {
        match path {
            Some(p) => read_json(p),
            None => Ok(T::default()),
        }
    }

    /// The tokenizer, or an error saying it is needed and missing.
    pub fn load_tokenizer(&self) -> Result<Option<tokenizers::Tokenizer>> {
        match &self.tokenizer {
            None => Ok(None),
            Some(p) => tokenizers::Tokenizer::from_file(p)
                .map(Some)
                .map_err(|e| Error::Tokenizer(format!("{}: {e}", p.display()))),
        }
    }

    /// A `VarBuilder` over every weight file.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> Result<VarBuilder<'static>> {
        let store = WeightStore::open(&self.weights)?;
        Ok(VarBuilder::from_backend(
            Box::new(store),
            dtype,
            device.clone(),
        ))
    }
}

/// Looks a file up in a hub repository (`None` when the repository has no such file).
/// A file getter for a hub repository: the HF cache only when offline (`--offline` or
/// `HF_HUB_OFFLINE`), else hf-hub downloads into it; `Ok(None)` for a file the repo lacks.
fn hub_fetcher(id: &str, opts: &LoadOptions) -> Result<(Box<Fetch<'static>>, bool)> {
    let offline = opts.offline
        || std::env::var("HF_HUB_OFFLINE")
            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let revision = opts.revision.clone().unwrap_or_else(|| "main".into());
    let repo = hf_hub::Repo::with_revision(id.to_string(), hf_hub::RepoType::Model, revision);
    let fetch: Box<Fetch<'static>> = if offline {
        let cache = hf_hub::Cache::from_env().repo(repo);
        Box::new(move |f: &str| Ok(cache.get(f)))
    } else {
        let api = hf_hub::api::sync::ApiBuilder::from_env()
            .with_progress(true)
            .build()
            .map_err(|e| Error::Hub(format!("{id}: {e}")))?
            .repo(repo);
        let id = id.to_string();
        Box::new(move |f: &str| match api.get(f) {
            Ok(p) => Ok(Some(p)),
            Err(hf_hub::api::sync::ApiError::RequestError(e)) if e.to_string().contains("404") => {
                Ok(None)
            }
            Err(e) => Err(Error::Hub(format!("{id}/{f}: {e}"))),
        })
    };
    Ok((fetch, offline))
}

type Fetch<'a> = dyn Fn(&str) -> Result<Option<PathBuf>> + 'a;

/// Reads and parses a JSON file, naming it in errors.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })
}

enum Source {
    Safetensors(candle_core::safetensors::MmapedSafetensors),
    Pth(candle_core::pickle::PthTensors),
}

/// All weight files of a checkpoint behind one name → tensor lookup.
pub struct WeightStore {
    files: Vec<(PathBuf, Source)>,
    index: HashMap<String, usize>,
}

impl WeightStore {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        Self::open_with_key(paths, None)
    }

    /// Like [`WeightStore::open`], but every PyTorch pickle is read from the dict entry `key` of
    /// its top-level object (e.g. `"state_dict"` of a PyTorch Lightning `.ckpt`, whose other
    /// entries, optimizer states and training metadata, are never read). Safetensors files ignore
    /// `key`. A pickle without that entry, or with no tensor under it, is a
    /// [`Error::WeightFile`] naming the file and the key.
    pub fn open_with_key(paths: &[PathBuf], key: Option<&str>) -> Result<Self> {
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for (i, p) in paths.iter().enumerate() {
            let bad = |msg: String| Error::WeightFile {
                path: p.clone(),
                msg,
            };
            let is_st = p.extension().is_some_and(|e| e == "safetensors");
            let names: Vec<String>;
            let src = if is_st {
                validate_safetensors(p)?;
                // SAFETY: the file is mapped read-only; like every mmap-based loader we assume it
                // is not truncated or rewritten while the model is alive.
                let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(p) }
                    .map_err(|e| bad(e.to_string()))?;
                names = st.tensors().into_iter().map(|(n, _)| n).collect();
                Source::Safetensors(st)
            } else {
                let pth = candle_core::pickle::PthTensors::new(p, key).map_err(|e| {
                    let e = e.to_string();
                    match key {
                        // candle's message when the top-level dict lacks the key
                        Some(k) if e.contains(&format!("key {k} not found")) => bad(format!(
                            "no `{k}` entry in the checkpoint's top-level dict (expected e.g. a PyTorch Lightning checkpoint)"
                        )),
                        _ => bad(format!("not a readable PyTorch checkpoint: {e}")),
                    }
                })?;
                names = pth.tensor_infos().keys().cloned().collect();
                if let (Some(k), true) = (key, names.is_empty()) {
                    return Err(bad(format!("the `{k}` entry holds no tensors")));
                }
                Source::Pth(pth)
            };
            for n in names {
                index.insert(n, i);
            }
            files.push((p.clone(), src));
        }
        Ok(Self { files, index })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    fn file_list(&self) -> String {
        self.files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn load(&self, name: &str, dev: &Device) -> Result<(Tensor, &Path)> {
        let i = *self.index.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.to_string(),
            files: self.file_list(),
        })?;
        let (path, src) = &self.files[i];
        let bad = |e: candle_core::Error| Error::WeightFile {
            path: path.clone(),
            msg: format!("tensor `{name}`: {e}"),
        };
        let t = match src {
            Source::Safetensors(st) => st.load(name, dev).map_err(bad)?,
            Source::Pth(p) => p
                .get(name)
                .map_err(bad)?
                .ok_or_else(|| Error::MissingTensor {
                    name: name.to_string(),
                    files: path.display().to_string(),
                })?
                .to_device(dev)?,
        };
        Ok((t, path))
    }
}

fn validate_safetensors(p: &Path) -> Result<()> {
    let file = std::fs::File::open(p).map_err(|source| Error::Io {
        path: p.to_path_buf(),
        source,
    })?;
    // SAFETY: read-only map used only for this check.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| Error::Io {
        path: p.to_path_buf(),
        source,
    })?;
    safetensors::SafeTensors::deserialize(&mmap).map_err(|e| Error::WeightFile {
        path: p.to_path_buf(),
        msg: format!("corrupt or truncated safetensors: {e}"),
    })?;
    Ok(())
}

impl SimpleBackend for WeightStore {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let (t, path) = self.load(name, dev)?;
        if t.shape() != &s {
            return Err(Error::ShapeMismatch {
                name: name.to_string(),
                file: path.display().to_string(),
                expected: s.dims().to_vec(),
                found: t.dims().to_vec(),
            }
            .into());
        }
        t.to_dtype(dtype)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        self.load(name, dev)?.0.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// A token id or a list of them (`eos_token_id` is either in HF configs).
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
    pub fn first(&self) -> Option<u32> {
        self.to_vec().first().copied()
    }
}

/// `generation_config.json` as HF writes it (the keys the families use; others ignored).
#[derive(Debug, Clone, serde::Deserialize, Default, PartialEq)]
pub struct GenerationConfigJson {
    pub bos_token_id: Option<TokenIds>,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<TokenIds>,
    pub guidance_scale: Option<f32>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub max_new_tokens: Option<usize>,
    #[serde(default)]
    pub generation_kwargs: serde_json::Map<String, serde_json::Value>,
}

/// Token ids of `text` without special tokens, or an error telling the caller to pass ids when
/// the checkpoint has no tokenizer.
pub fn tokenize(tok: Option<&tokenizers::Tokenizer>, text: &str) -> Result<Vec<u32>> {
    let tok = tok.ok_or_else(|| {
        Error::invalid(
            "prompt",
            "this checkpoint has no tokenizer.json: pass token ids (--raw-ids) instead of text",
        )
    })?;
    Ok(tok
        .encode(text, false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?
        .get_ids()
        .to_vec())
}
