//! **any2any** runs open any-to-any multimodal models — text and images in, text and images out —
//! behind one `generate` call, on CPU, CUDA and Metal.
//!
//! ```no_run
//! use any2any::{LoadOptions, Modality, Pipeline, Request};
//! let pipe = Pipeline::load("deepseek-community/Janus-Pro-1B", LoadOptions::default())?;
//! let out = pipe.generate(Request::new().text("a red fox in snow").want(Modality::Image))?;
//! out.images()[0].save("fox.png").ok();
//! # Ok::<(), any2any::Error>(())
//! ```
//!
//! `use any2any::prelude::*;` brings the everyday types into scope. The modules of
//! `any2any-core` are re-exported as they are ([`request`], [`sampling`], [`decode`], …) for
//! lower-level use, and so are the libraries in its public API ([`candle_core`], [`candle_nn`],
//! [`image`], [`tokenizers`]). Each family's own API is in its crate (`any2any_janus`,
//! `any2any_chameleon`, `any2any_emu3`, `any2any_showo`, `any2any_janusflow`, `any2any_emu2`, `any2any_transfusion`, `any2any_lwm`).

pub use any2any_core::{
    backbone, backend, codec, decode, edit, error, imageops, kv_cache, limits, loading, nn, noise,
    npy, progress, quant, request, sampling, stream, text_stream,
};
pub use any2any_core::{candle_core, candle_nn, image, tokenizers};
pub use any2any_core::{
    Backend, CancelToken, DecodeStats, Direction, EditKind, Error, ExtendDirection, Family,
    Generated, GenerationParams, Hooks, ImageEdit, ImageInput, LoadOptions, Modality, ModelFiles,
    ModelInfo, NoiseSource, Output, Preview, Progress, ReplayNoise, Request, Result, SeededNoise,
    Segment, Speculative, TextDelta, TextStream, Timings,
};

/// The everyday types: `use any2any::prelude::*;`.
///
/// ```no_run
/// use any2any::prelude::*;
/// let pipe = Pipeline::load("path/to/show-o", LoadOptions::default())?;
/// let req = Request::new()
///     .text("a lighthouse at dusk")
///     .want(Modality::Image)
///     .params(GenerationParams { steps: Some(18), ..Default::default() });
/// let out = pipe.generate_with(req, &mut Hooks::new().on_progress(|p| eprintln!("{}", p.step)))?;
/// for seg in &out.segments {
///     if let Generated::Image { image, .. } = seg {
///         image.save("lighthouse.png").ok();
///     }
/// }
/// # Ok::<(), Error>(())
/// ```
pub mod prelude {
    pub use crate::Pipeline;
    pub use any2any_core::{
        CancelToken, Error, ExtendDirection, Generated, GenerationParams, Hooks, ImageInput,
        LoadOptions, Modality, Output, Request, Result,
    };
}

use any2any_core::backend::config_kind;
use any2any_core::quant::{QuantReport, QuantScope};
use candle_core::Tensor;

/// Every family this build can load. Adding a family is one line here plus its crate.
pub fn families() -> &'static [Family] {
    static FAMILIES: &[Family] = &[
        #[cfg(feature = "janus")]
        Family {
            name: "janus",
            matches: any2any_janus::matches,
            load: any2any_janus::load,
            resolve_dir: None,
            hub_files: &[],
            components: &[],
        },
        #[cfg(feature = "chameleon")]
        Family {
            name: "chameleon",
            matches: any2any_chameleon::matches,
            load: any2any_chameleon::load,
            // Meta's original Chameleon / Anole release: models/7b/consolidated.pth + tokenizer/
            resolve_dir: Some(any2any_chameleon::original::resolve_dir),
            hub_files: any2any_chameleon::original::HUB_FILES,
            components: any2any_chameleon::COMPONENTS,
        },
        #[cfg(feature = "chameleon")]
        Family {
            // Lumina-mGPT: architectures ChameleonXLLMXForConditionalGeneration
            name: "lumina",
            matches: any2any_chameleon::lumina::matches,
            load: any2any_chameleon::lumina::load,
            resolve_dir: None,
            hub_files: &[],
            components: any2any_chameleon::COMPONENTS,
        },
        #[cfg(feature = "emu3")]
        Family {
            name: "emu3",
            matches: any2any_emu3::matches,
            load: any2any_emu3::load,
            resolve_dir: None,
            hub_files: &[],
            components: &[],
        },
        #[cfg(feature = "showo")]
        Family {
            name: "showo",
            matches: any2any_showo::matches,
            load: any2any_showo::load,
            resolve_dir: None,
            hub_files: &[],
            components: any2any_showo::COMPONENTS,
        },
        #[cfg(feature = "janusflow")]
        Family {
            // deepseek-ai/JanusFlow-1.3B: model_type multi_modality with a ShallowUViT encoder
            name: "janusflow",
            matches: any2any_janusflow::matches,
            load: any2any_janusflow::load,
            resolve_dir: None,
            hub_files: &[],
            components: any2any_janusflow::COMPONENTS,
        },
        #[cfg(feature = "emu2")]
        Family {
            // BAAI/Emu2-Gen (model_index.json, EmuVisualGenerationPipeline) and Emu2 / Emu2-Chat
            // (config.json, EmuForCausalLM)
            name: "emu2",
            matches: any2any_emu2::matches,
            load: any2any_emu2::load,
            resolve_dir: None,
            hub_files: &[],
            components: &[],
        },
        #[cfg(feature = "transfusion")]
        Family {
            name: "transfusion",
            matches: any2any_transfusion::matches,
            load: any2any_transfusion::load,
            resolve_dir: None,
            hub_files: &[],
            components: any2any_transfusion::COMPONENTS,
        },
        #[cfg(feature = "lwm")]
        Family {
            // LargeWorldModel/LWM-Chat-*-Jax as released (params + vqgan + tokenizer.model),
            // or `any2any convert`'s output (config.json with model_type "lwm")
            name: "lwm",
            matches: any2any_lwm::matches,
            load: any2any_lwm::load,
            resolve_dir: Some(any2any_lwm::resolve_dir),
            hub_files: any2any_lwm::HUB_FILES,
            components: &[],
        },
    ];
    FAMILIES
}

fn supported_families_hint(cfg: &serde_json::Value) -> String {
    let names = families()
        .iter()
        .map(|f| f.name)
        .collect::<Vec<_>>()
        .join(", ");
    if config_kind(cfg) == "multi_modality" {
        // deepseek-ai's original Janus layout: a timm-style vision tower with fused qkv.
        format!("{names}; for Janus-Pro use the HF-format conversion deepseek-community/Janus-Pro-1B or -7B")
    } else {
        names
    }
}

/// A loaded model of any family.
pub struct Pipeline {
    backend: Box<dyn Backend>,
    family: &'static str,
    files: ModelFiles,
}

impl Pipeline {
    /// Loads from a local directory or a hub id; the family is recognised from config.json, or
    /// for a local directory without one, from a family's own layout (e.g. Meta's original
    /// Chameleon / Anole release). [`LoadOptions::components`] replace or add components, and
    /// the family's own ([`Family::components`]) are listed in [`ModelFiles::components`].
    pub fn load(model: &str, opts: LoadOptions) -> Result<Self> {
        let dir = std::path::Path::new(model);
        if dir.is_dir() && !dir.join("config.json").is_file() {
            for fam in families() {
                let Some(resolve) = fam.resolve_dir else {
                    continue;
                };
                if let Some(mut files) = resolve(dir)? {
                    files.apply_components(&opts)?;
                    return Self::load_family(fam, files, &opts);
                }
            }
        }
        let files = match ModelFiles::resolve(model, &opts) {
            // A hub repository without config.json may hold a family's own layout.
            Err(Error::MissingFile { what, .. }) if what == "config.json" && !dir.exists() => {
                for fam in families() {
                    let (Some(resolve), false) = (fam.resolve_dir, fam.hub_files.is_empty()) else {
                        continue;
                    };
                    if let Some(root) = ModelFiles::fetch_hub_tree(model, &opts, fam.hub_files)? {
                        if let Some(mut files) = resolve(&root)? {
                            files.name = model.to_string();
                            files.apply_components(&opts)?;
                            return Self::load_family(fam, files, &opts);
                        }
                    }
                }
                return Err(Error::MissingFile {
                    dir: format!("hub:{model}"),
                    what: "config.json".into(),
                    looked_for: "config.json".into(),
                });
            }
            other => other?,
        };
        let cfg = files.config_json()?;
        any2any_core::backend::check_architectures(&cfg, &files.config)?;
        let fam = families()
            .iter()
            .find(|f| (f.matches)(&cfg))
            .ok_or_else(|| Error::UnknownFamily {
                found: config_kind(&cfg),
                path: files.config.clone(),
                supported: supported_families_hint(&cfg),
            })?;
        Self::load_family(fam, files, &opts)
    }

    /// Lists the family's own components in `files`, then loads it.
    fn load_family(
        fam: &'static Family,
        mut files: ModelFiles,
        opts: &LoadOptions,
    ) -> Result<Self> {
        files.add_layout_components(fam.components)?;
        any2any_core::quant::check_files(&files.weights, fam.name, opts.quant)?;
        let _scope = any2any_core::quant::join_or_enter(opts.quant);
        let backend = (fam.load)(&files, opts)?;
        Ok(Self {
            backend,
            family: fam.name,
            files,
        })
    }

    /// The short name of the family that loaded the model ("janus", "emu3", …).
    pub fn family(&self) -> &'static str {
        self.family
    }
    /// The files the model was loaded from.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }
    /// The family backend, for its capabilities and lower-level entry points.
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }
    /// The family backend, owned (e.g. to hand it to `any2any-server`'s engine thread).
    pub fn into_backend(self) -> Box<dyn Backend> {
        self.backend
    }
    /// What the loaded model is (sizes, directions, dtype, device).
    pub fn info(&self) -> ModelInfo {
        self.backend.info()
    }

    /// One request; all its outputs (`num_outputs`) in one `Output`.
    pub fn generate(&self, req: Request) -> Result<Output> {
        self.generate_with(req, &mut Hooks::new())
    }

    /// One request with progress, cancellation or replayed noise.
    pub fn generate_with(&self, req: Request, hooks: &mut Hooks) -> Result<Output> {
        let outs = self.generate_batch(std::slice::from_ref(&req), hooks)?;
        let mut merged = Output::default();
        for o in outs {
            merged.timings = o.timings;
            merged.segments.extend(o.segments);
        }
        Ok(merged)
    }

    /// Several (different) prompts batched; `num_outputs` outputs per request, request-major.
    /// Every request is checked against the family's capabilities first (direction, image
    /// edits, parameters), so nothing runs for a batch holding one it cannot serve.
    pub fn generate_batch(&self, reqs: &[Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        self.backend.generate_batch(reqs, hooks)
    }

    /// The last position's logits `[vocab]` for raw ids (and images filling their placeholders).
    pub fn last_logits(&self, ids: &[u32], images: &[ImageInput]) -> Result<Tensor> {
        self.backend.last_logits(ids, images)
    }

    /// Converts a checkpoint in a family's own release format to safetensors in `out` (faster
    /// to load later, the same outputs). Only LWM's JAX release converts so far.
    pub fn convert(model: &str, out: &std::path::Path) -> Result<()> {
        #[cfg(feature = "lwm")]
        if any2any_lwm::resolve_dir(std::path::Path::new(model))?.is_some() {
            return any2any_lwm::convert(std::path::Path::new(model), out);
        }
        let _ = out;
        Err(Error::Unsupported {
            family: "convert".into(),
            direction: format!("converting {model}"),
            supported: "a local LWM JAX release directory (params, vqgan, tokenizer.model)".into(),
        })
    }

    /// Decodes image codes to pixels.
    pub fn decode_codes(
        &self,
        codes: &[u32],
        height: usize,
        width: usize,
    ) -> Result<image::RgbImage> {
        self.backend.decode_codes(codes, height, width)
    }
}

/// `any2any quantize`: loads `model` with `opts.quant` (required) and writes a quantized
/// checkpoint to the new or empty directory `out`: `model.gguf` holding the quantized backbone
/// linears under their HF names, every other root tensor dense in its stored dtype, and
/// `any2any.*` metadata ([`quant::keys`]: family, quant type, recipe, source, version); beside
/// it copies of every other file and folder of the checkpoint (config, tokenizer, components).
/// The directory loads like any checkpoint (memory-mapped, no `--quant` needed).
///
/// The quantized linears and the dense tensors are held in memory while the file is written.
pub fn quantize(model: &str, opts: LoadOptions, out: &std::path::Path) -> Result<QuantReport> {
    let quant = opts
        .quant
        .ok_or_else(|| Error::invalid("quant", "quantize needs --quant q8_0, q6k or q4k"))?;
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    if out.exists() && std::fs::read_dir(out).map_err(io(out))?.next().is_some() {
        return Err(Error::invalid(
            "out",
            format!("{} exists and is not empty", out.display()),
        ));
    }
    let scope = QuantScope::enter(Some(quant)).recording();
    let pipe = Pipeline::load(model, opts)?;
    let recorded = scope.take_recorded();
    let report = scope.report();
    let files = pipe.files().clone();
    let family = pipe.family();
    drop(pipe);
    if files
        .weights
        .iter()
        .any(|w| w.extension().is_some_and(|e| e == "gguf"))
    {
        return Err(Error::invalid(
            "model",
            format!("{} is already a quantized checkpoint", files.dir.display()),
        ));
    }
    let store = loading::WeightStore::open(&files.weights)?;
    let mut names: Vec<String> = store.names().map(str::to_string).collect();
    names.sort();
    let dense = names
        .into_iter()
        .filter(|n| !recorded.contains_key(n))
        .map(|n| store.tensor(&n).map(|t| (n, t)))
        .collect::<Result<Vec<_>>>()?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let skip: Vec<&std::path::Path> = files.weights.iter().map(|p| p.as_path()).collect();
    copy_checkpoint_files(&files.dir, out, &skip)?;
    let recipe = format!(
        "{quant}: the language backbone's attention and MLP projections ({} weights; {} kept denser where the input dim is not a multiple of the block size); embeddings, heads, norms, codecs and vision towers dense as stored",
        report.quantized,
        report.fallbacks.len()
    );
    quant::write_gguf(
        &out.join(quant::GGUF_FILE),
        &[
            ("general.architecture", "any2any".to_string()),
            (quant::keys::FAMILY, family.to_string()),
            (quant::keys::QUANT, quant.name().to_string()),
            (quant::keys::RECIPE, recipe),
            (quant::keys::SOURCE, model.to_string()),
            (quant::keys::VERSION, env!("CARGO_PKG_VERSION").to_string()),
        ],
        &recorded,
        dense,
    )?;
    Ok(report)
}

/// Copies `from`'s files and folders into `to`, except the files in `skip` and weight indexes.
fn copy_checkpoint_files(
    from: &std::path::Path,
    to: &std::path::Path,
    skip: &[&std::path::Path],
) -> Result<()> {
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    for e in std::fs::read_dir(from).map_err(io(from))? {
        let p = e.map_err(io(from))?.path();
        let name = p.file_name().unwrap_or_default();
        let is_index = name.to_string_lossy().ends_with(".index.json");
        if skip.contains(&p.as_path()) || is_index || name.to_string_lossy().starts_with('.') {
            continue;
        }
        let dst = to.join(name);
        if p.is_dir() {
            std::fs::create_dir_all(&dst).map_err(io(&dst))?;
            copy_checkpoint_files(&p, &dst, &[])?;
        } else {
            std::fs::copy(&p, &dst).map_err(io(&p))?;
        }
    }
    Ok(())
}
