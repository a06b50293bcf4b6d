//! Finding and reading a checkpoint: a local directory or a hub id (hf-hub, honouring `HF_HOME`
//! and `HF_HUB_OFFLINE`); config JSON into serde structs; single or sharded safetensors (mmapped,
//! validated up front so a truncated file is named) or PyTorch `.bin`/`.pth`; per-tensor dtype
//! casts; errors that name the file, the tensor and both shapes.

use crate::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

mod components;
pub use components::{parse_component, Component, ComponentLayout, LayoutFile};
use components::{read_component, COMPONENT_CONFIGS};

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Device the weights are loaded onto (default CPU).
    pub device: Device,
    /// `None`: bf16 on CUDA, f32 elsewhere.
    pub dtype: Option<DType>,
    /// Never touch the network (also on when `HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Hub revision (branch, tag or commit); `None`: the default branch.
    pub revision: Option<String>,
    /// Components taken from elsewhere, `(name, local directory or hub id)`, each replacing or
    /// adding the component of that name (`--component vae=stabilityai/sdxl-vae`); applied by
    /// [`ModelFiles::resolve`] (see [`ModelFiles::apply_components`]).
    pub components: Vec<(String, String)>,
    /// Quantize the backbone's linears at load (`--quant`, see [`crate::quant`]); `None`: as
    /// stored (dense, or the blocks of a quantized `model.gguf`).
    pub quant: Option<crate::quant::QuantType>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: None,
            offline: false,
            revision: None,
            components: Vec::new(),
            quant: None,
        }
    }
}

impl LoadOptions {
    /// The dtype to load in: `dtype`, or bf16 on CUDA and f32 elsewhere.
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
    /// The directory of the main config (for a hub id, its snapshot in the HF cache).
    pub dir: PathBuf,
    /// `config.json`, a family's own config (`params.json`), or `model_index.json` for a
    /// diffusers layout without a root config.
    pub config: PathBuf,
    /// The root weight files; empty for a diffusers layout whose weights are all in components.
    pub weights: Vec<PathBuf>,
    /// `tokenizer.json`, when present.
    pub tokenizer: Option<PathBuf>,
    /// `generation_config.json`, when present.
    pub generation_config: Option<PathBuf>,
    /// `preprocessor_config.json`, when present.
    pub preprocessor_config: Option<PathBuf>,
    /// The named parts with their own folder, config, weights and dtype, by name: the
    /// sub-folders of a diffusers `model_index.json`, a family's own parts (Show-o's `magvit`,
    /// Chameleon's `vqgan`, see [`ComponentLayout`]) and the user's
    /// [`LoadOptions::components`].
    pub components: BTreeMap<String, Component>,
}

/// The diffusers pipeline index at a checkpoint's root (`{"unet": ["diffusers", "UNet2DConditionModel"], …}`).
pub const MODEL_INDEX: &str = "model_index.json";

const WEIGHT_INDEXES: [&str; 2] = [
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
];
const WEIGHT_SINGLES: [&str; 4] = [
    "model.safetensors",
    crate::quant::GGUF_FILE,
    "pytorch_model.bin",
    "model.pth",
];

#[derive(serde::Deserialize)]
struct WeightIndex {
    weight_map: HashMap<String, String>,
}

fn opt(dir: &Path, name: &str) -> Option<PathBuf> {
    let p = dir.join(name);
    p.is_file().then_some(p)
}

/// `owner/name` (not a path that starts with `.` or `/`).
fn is_hub_id(s: &str) -> bool {
    !(s.starts_with('.') || s.starts_with('/') || s.split('/').count() != 2)
}

/// The folder holding `p`.
fn parent_dir(p: &Path) -> PathBuf {
    p.parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether a file or folder name from an index (a weight shard, a diffusers sub-folder) is a
/// plain name inside its folder: not empty, not `.` or `..`, no separator (`/`, `\\`), no NUL,
/// so it can neither climb out nor be absolute (checked before anything is opened or fetched).
fn is_plain_name(name: &str) -> bool {
    !(name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']))
}

/// Where the files of a checkpoint, or of one of its components, are looked up: a local folder,
/// or a hub repository whose files are fetched into the HF cache.
struct Lookup<'a> {
    fetch: &'a Fetch<'a>,
    /// The folder inside the fetcher's root, with a trailing `/` (`""`: the root).
    prefix: String,
    /// The folder for messages (`DIR`, `hub:owner/name`, `hub:owner/name/vae`).
    place: String,
    /// `" (offline cache)"` for an offline hub lookup.
    note: &'static str,
    /// The component looked up, for messages.
    component: Option<String>,
    /// The local folder (its files may be listed); `None` on the hub.
    local: Option<PathBuf>,
}

impl<'a> Lookup<'a> {
    fn local(fetch: &'a Fetch<'a>, dir: &Path, component: Option<&str>) -> Self {
        Self {
            fetch,
            prefix: String::new(),
            place: dir.display().to_string(),
            note: "",
            component: component.map(str::to_string),
            local: Some(dir.to_path_buf()),
        }
    }

    fn hub(fetch: &'a Fetch<'a>, id: &str, offline: bool, component: Option<&str>) -> Self {
        Self {
            fetch,
            prefix: String::new(),
            place: format!("hub:{id}"),
            note: if offline { " (offline cache)" } else { "" },
            component: component.map(str::to_string),
            local: None,
        }
    }

    /// The sub-folder `name` of this folder, looked up as component `name`.
    fn sub(&self, name: &str) -> Lookup<'a> {
        Lookup {
            fetch: self.fetch,
            prefix: format!("{}{name}/", self.prefix),
            place: match &self.local {
                Some(d) => d.join(name).display().to_string(),
                None => format!("{}/{name}", self.place),
            },
            note: self.note,
            component: Some(name.to_string()),
            local: self.local.as_ref().map(|d| d.join(name)),
        }
    }

    fn get(&self, file: &str) -> Result<Option<PathBuf>> {
        (self.fetch)(&format!("{}{file}", self.prefix))
    }

    /// The first of `names` present.
    fn first_of(&self, names: &[&str]) -> Result<Option<PathBuf>> {
        names
            .iter()
            .map(|n| self.get(n))
            .find_map(|r| r.transpose())
            .transpose()
    }

    /// The folder (and component) for messages.
    fn here(&self) -> String {
        match &self.component {
            Some(c) => format!("component `{c}` ({}{})", self.place, self.note),
            None => format!("{}{}", self.place, self.note),
        }
    }
}

/// A file getter over a local folder.
fn local_fetch(dir: &Path) -> impl Fn(&str) -> Result<Option<PathBuf>> {
    let dir = dir.to_path_buf();
    move |f: &str| Ok(opt(&dir, f))
}

/// Weights found in a folder.
struct FoundWeights {
    /// The index or weights file they were found by.
    anchor: PathBuf,
    files: Vec<PathBuf>,
}

/// The weights of a folder: the first of `indexes` (every shard it lists), else the first of
/// `singles`, else, in a local folder, its files with the extensions of the first group of
/// `globs` that has any. `Ok(None)` when there are none.
fn find_weights(
    l: &Lookup,
    indexes: &[&str],
    singles: &[&str],
    globs: &[&[&str]],
) -> Result<Option<FoundWeights>> {
    for idx in indexes {
        if let Some(p) = l.get(idx)? {
            let files = shards_of(l, idx, &p)?;
            return Ok(Some(FoundWeights { anchor: p, files }));
        }
    }
    if let Some(p) = l.first_of(singles)? {
        return Ok(Some(FoundWeights {
            anchor: p.clone(),
            files: vec![p],
        }));
    }
    let Some(dir) = &l.local else {
        return Ok(None);
    };
    for exts in globs {
        let found = files_with_ext(dir, exts)?;
        if let Some(first) = found.first() {
            return Ok(Some(FoundWeights {
                anchor: first.clone(),
                files: found,
            }));
        }
    }
    Ok(None)
}

/// The shards a weight index lists, each inside the folder and present (else an error naming
/// the index or the shard).
fn shards_of(l: &Lookup, idx: &str, index_path: &Path) -> Result<Vec<PathBuf>> {
    let index: WeightIndex = read_json(index_path)?;
    let mut files: Vec<String> = index.weight_map.into_values().collect();
    files.sort();
    files.dedup();
    files
        .into_iter()
        .map(|f| {
            if !is_plain_name(&f) {
                return Err(Error::Config {
                    path: index_path.to_path_buf(),
                    msg: format!(
                        "{}: weight shard `{f}` is not a plain file name in that folder (no `..`, `/` or `\\`)",
                        l.here()
                    ),
                });
            }
            l.get(&f)?.ok_or_else(|| Error::MissingFile {
                dir: l.here(),
                what: format!("weight shard listed in {idx}"),
                looked_for: f,
            })
        })
        .collect()
}

/// The files of `dir` with one of `exts`, sorted.
fn files_with_ext(dir: &Path, exts: &[&str]) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| exts.contains(&e))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// The root weights of a checkpoint; none is an error unless it is a diffusers layout
/// (`diffusers`), whose weights live in its components.
fn root_weights(root: &Lookup, diffusers: bool) -> Result<Vec<PathBuf>> {
    match find_weights(root, &WEIGHT_INDEXES, &WEIGHT_SINGLES, &[&["safetensors"]])? {
        Some(w) => Ok(w.files),
        None if diffusers => Ok(Vec::new()),
        None => {
            let listed = if root.local.is_some() {
                format!(
                    "{}, {} or *.safetensors",
                    WEIGHT_INDEXES.join(", "),
                    WEIGHT_SINGLES.join(", ")
                )
            } else {
                format!(
                    "{} or {}",
                    WEIGHT_INDEXES.join(", "),
                    WEIGHT_SINGLES.join(", ")
                )
            };
            Err(Error::MissingFile {
                dir: root.here(),
                what: "weights".into(),
                looked_for: listed,
            })
        }
    }
}

impl ModelFiles {
    /// A local directory, or else a hub id; then the user's components
    /// ([`LoadOptions::components`], see [`ModelFiles::apply_components`]).
    pub fn resolve(name: &str, opts: &LoadOptions) -> Result<Self> {
        let p = Path::new(name);
        let mut files = if p.is_dir() {
            Self::from_dir(p)?
        } else if p.exists() {
            return Err(Error::invalid(
                "model",
                format!("{name} is a file, not a model directory"),
            ));
        } else if !is_hub_id(name) {
            return Err(Error::invalid(
                "model",
                format!("{name}: no such directory, and not a hub id of the form owner/name"),
            ));
        } else {
            Self::from_hub(name, opts)?
        };
        files.apply_components(opts)?;
        Ok(files)
    }

    /// A local checkpoint directory: `config.json` and its weights, or a diffusers layout
    /// (`model_index.json`, its sub-folders as [`ModelFiles::components`], root weights
    /// optional).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let fetch = local_fetch(dir);
        Self::from_lookup(dir.display().to_string(), &Lookup::local(&fetch, dir, None))
    }

    /// The files of a checkpoint's root folder, local or on the hub: `config.json` (else a
    /// diffusers `model_index.json`), the root weights, the components the index lists, and
    /// the optional tokenizer, generation and preprocessor configs.
    fn from_lookup(name: String, root: &Lookup) -> Result<Self> {
        let config = root.get("config.json")?;
        let index = root.get(MODEL_INDEX)?;
        let config = config
            .or_else(|| index.clone())
            .ok_or_else(|| Error::MissingFile {
                dir: root.here(),
                what: "config.json".into(),
                looked_for: "config.json".into(),
            })?;
        let weights = root_weights(root, index.is_some())?;
        let components = match &index {
            Some(p) => read_model_index(root, p)?,
            None => BTreeMap::new(),
        };
        Ok(Self {
            name,
            dir: root.local.clone().unwrap_or_else(|| parent_dir(&config)),
            config,
            weights,
            tokenizer: root.get("tokenizer.json")?,
            generation_config: root.get("generation_config.json")?,
            preprocessor_config: root.get("preprocessor_config.json")?,
            components,
        })
    }

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
            root = parent_dir(&root);
        }
        Ok(Some(root))
    }

    /// Downloads (or finds in the HF cache) the files of a hub repository: config.json and its
    /// weights, or a diffusers layout (`model_index.json` and its sub-folders' files).
    pub fn from_hub(id: &str, opts: &LoadOptions) -> Result<Self> {
        let (fetch, offline) = hub_fetcher(id, opts)?;
        Self::from_lookup(id.to_string(), &Lookup::hub(&*fetch, id, offline, None))
    }

    /// The raw config.json.
    pub fn config_json(&self) -> Result<serde_json::Value> {
        read_json(&self.config)
    }

    /// Reads an optional config file (a JSON object, see [`read_config`]) into `T`, or
    /// `T::default()` when absent.
    pub fn optional_json<T: DeserializeOwned + Default>(path: &Option<PathBuf>) -> Result<T> {
        match path {
            Some(p) => read_config(p),
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

/// The components of a diffusers `model_index.json`: every `"name": [library, class]` entry
/// whose sub-folder exists (locally; on the hub: whose sub-folder has a config or weights),
/// which must hold a config. `[null, null]` entries (absent optional parts), `_` keys and other
/// values are skipped.
fn read_model_index(root: &Lookup, index: &Path) -> Result<BTreeMap<String, Component>> {
    let v: serde_json::Value = read_json(index)?;
    let bad = |msg: String| Error::Config {
        path: index.to_path_buf(),
        msg,
    };
    let obj = v
        .as_object()
        .ok_or_else(|| bad("expected a JSON object".into()))?;
    let mut out = BTreeMap::new();
    for (key, val) in obj {
        let Some([lib, class]) = val
            .as_array()
            .and_then(|a| <&[_; 2]>::try_from(&a[..]).ok())
        else {
            continue;
        };
        if key.starts_with('_') || (lib.is_null() && class.is_null()) {
            continue;
        }
        let (Some(lib), Some(class)) = (lib.as_str(), class.as_str()) else {
            return Err(bad(format!(
                "`{key}`: expected [library, class] or [null, null], found {val}"
            )));
        };
        if !is_plain_name(key) {
            return Err(bad(format!("`{key}`: not a sub-folder name")));
        }
        let sub = root.sub(key);
        if sub.local.as_ref().is_some_and(|d| !d.is_dir()) {
            continue;
        }
        let mut c = match read_component(key, &sub)? {
            Some(c) if c.config.is_some() => c,
            // On the hub a sub-folder with none of the files looked for is taken as absent.
            None if sub.local.is_none() => continue,
            _ => {
                return Err(Error::MissingFile {
                    dir: sub.here(),
                    what: format!("config of component `{key}` ({lib} {class})"),
                    looked_for: COMPONENT_CONFIGS.join(", "),
                })
            }
        };
        c.class = Some((lib.to_string(), class.to_string()));
        out.insert(key.clone(), c);
    }
    Ok(out)
}

/// A file getter for a hub repository: the HF cache only when offline (`--offline` or
/// `HF_HUB_OFFLINE`), else hf-hub downloads into it; `Ok(None)` for a file the repo lacks.
#[cfg(not(feature = "hub"))]
fn hub_fetcher(id: &str, _opts: &LoadOptions) -> Result<(Box<Fetch<'static>>, bool)> {
    Err(Error::Hub(format!(
        "{id}: this build has no hub support (enable the `hub` feature of any2any-core, on by \
         default in any2any), so only local directories load"
    )))
}

/// A file getter for a hub repository (see above).
#[cfg(feature = "hub")]
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

/// Reads a config file that must be a JSON object (`[]` or `3` is refused, never read as
/// "every field at its default"); errors name the file and, for a bad value, the field.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let v: serde_json::Value = read_json(path)?;
    config_from_value(v, path)
}

/// [`read_config`] on an already parsed value (e.g. a section of a file); `path` names it.
pub fn config_from_value<T: DeserializeOwned>(v: serde_json::Value, path: &Path) -> Result<T> {
    let bad = |msg: String| Error::Config {
        path: path.to_path_buf(),
        msg,
    };
    if !v.is_object() {
        let kind = match &v {
            serde_json::Value::Array(_) => "an array",
            serde_json::Value::String(_) => "a string",
            serde_json::Value::Number(_) => "a number",
            serde_json::Value::Bool(_) => "a boolean",
            _ => "null",
        };
        return Err(bad(format!("expected a JSON object, found {kind}")));
    }
    serde_json::from_value(v).map_err(|e| bad(e.to_string()))
}

enum Source {
    Safetensors(candle_core::safetensors::MmapedSafetensors),
    Pth(candle_core::pickle::PthTensors),
    /// A quantized checkpoint (`any2any quantize`); also registered with the active
    /// [`crate::quant::QuantScope`] so quantizable linears take its blocks as stored.
    Gguf(std::sync::Arc<crate::quant::GgufWeights>),
}

/// All weight files of a checkpoint behind one name → tensor lookup.
pub struct WeightStore {
    files: Vec<(PathBuf, Source)>,
    index: HashMap<String, usize>,
}

impl WeightStore {
    /// Opens the weight files (`.safetensors`, or PyTorch pickles read from their top level) and
    /// indexes their tensor names; a name in several files resolves to the last.
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
            let is_gguf = p.extension().is_some_and(|e| e == "gguf");
            let names: Vec<String>;
            let src = if is_gguf {
                let g = std::sync::Arc::new(crate::quant::GgufWeights::open(p)?);
                names = g.names().map(str::to_string).collect();
                crate::quant::register_file(g.clone());
                Source::Gguf(g)
            } else if is_st {
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

    /// `name` on the CPU in its stored dtype (a quantized GGUF tensor dequantized).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        Ok(self.load(name, &Device::Cpu)?.0)
    }

    /// Every tensor name in the store, in no particular order.
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
            Source::Gguf(g) => g.dense(name, dev)?.ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
                files: path.display().to_string(),
            })?,
        };
        Ok((t, path))
    }
}

impl WeightStore {
    /// [`WeightStore::load`], refusing a tensor stored as integers (`I64`, `U8`, …) where a
    /// floating-point weight is asked for: a cast would turn it into silent garbage.
    fn load_as(&self, name: &str, dtype: DType, dev: &Device) -> Result<(Tensor, &Path)> {
        let (t, path) = self.load(name, dev)?;
        if dtype.is_float() && !t.dtype().is_float() {
            return Err(Error::WeightFile {
                path: path.to_path_buf(),
                msg: format!(
                    "tensor `{name}` is stored as {:?}; weights must be floating point (F32, F16, BF16)",
                    t.dtype()
                ),
            });
        }
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
        let (t, path) = self.load_as(name, dtype, dev)?;
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
        self.load_as(name, dtype, dev)?.0.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// A token id or a list of them (`eos_token_id` is either in HF configs).
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(untagged)]
pub enum TokenIds {
    /// A single id.
    One(u32),
    /// Several ids (e.g. more than one end-of-sequence id).
    Many(Vec<u32>),
}

impl TokenIds {
    /// All the ids, in order.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
    /// The first id (`None` for an empty list).
    pub fn first(&self) -> Option<u32> {
        self.to_vec().first().copied()
    }
}

/// `generation_config.json` as HF writes it (the keys the families use; others ignored).
#[derive(Debug, Clone, serde::Deserialize, Default, PartialEq)]
pub struct GenerationConfigJson {
    /// Beginning-of-sequence id(s).
    pub bos_token_id: Option<TokenIds>,
    /// End-of-sequence id(s).
    pub eos_token_id: Option<TokenIds>,
    /// Padding id(s).
    pub pad_token_id: Option<TokenIds>,
    /// Classifier-free guidance weight.
    pub guidance_scale: Option<f32>,
    /// Whether to sample (`false`: greedy).
    pub do_sample: Option<bool>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Top-k cut-off, in tokens.
    pub top_k: Option<usize>,
    /// Nucleus (top-p) cut-off, a probability mass in (0, 1].
    pub top_p: Option<f32>,
    /// Default budget of new tokens.
    pub max_new_tokens: Option<usize>,
    /// Family-specific extras (e.g. Janus's `boi_token_id`), kept as raw JSON.
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

/// The id of a special token the family needs, or a tokenizer error naming the token.
pub fn special_token(tok: &tokenizers::Tokenizer, token: &str) -> Result<u32> {
    tok.token_to_id(token)
        .ok_or_else(|| Error::Tokenizer(format!("tokenizer.json has no `{token}` token")))
}
