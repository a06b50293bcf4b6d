//! The backend contract: one model family behind `generate`, plus the lower-level entry points
//! the CLI exposes (`logits`, `decode`, `inspect`).

use crate::edit::EditKind;
use crate::loading::{LoadOptions, ModelFiles};
use crate::progress::Hooks;
use crate::request::{GenerationParams, Output, Request};
use crate::stream::{Direction, Modality, Segment};
use crate::{Error, Result};
use candle_core::Tensor;

/// What a loaded model is and can do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// The family's short name ("janus").
    pub family: String,
    /// e.g. "deepseek-community/Janus-Pro-1B layout (HF transformers)".
    pub variant: String,
    /// The directions served, as displayed ("text→image", …).
    pub directions: Vec<String>,
    /// Parameters of the backbone.
    pub parameters: usize,
    /// Entries of the backbone's vocabulary.
    pub vocab_size: usize,
    /// Width of the backbone's hidden states.
    pub hidden_size: usize,
    /// Decoder layers of the backbone.
    pub layers: usize,
    /// Positions the backbone attends over at most.
    pub context: usize,
    /// Image grid of generated images (codes), (height, width).
    pub image_tokens: Option<(usize, usize)>,
    /// Pixel size of generated images, (height, width).
    pub image_size: Option<(usize, usize)>,
    /// The weights' dtype, e.g. "F32".
    pub dtype: String,
    /// The device the model runs on, e.g. "Cpu".
    pub device: String,
}

impl ModelInfo {
    /// The info of a model built on the shared decoder; generated images are `grid` codes of
    /// `px_per_code` pixels each.
    pub fn of_decoder(
        family: &str,
        variant: String,
        directions: &[Direction],
        decoder: &crate::backbone::Decoder,
        grid: (usize, usize),
        px_per_code: usize,
    ) -> Self {
        let c = decoder.config();
        Self {
            family: family.into(),
            variant,
            directions: directions.iter().map(ToString::to_string).collect(),
            parameters: c.num_params(),
            vocab_size: c.vocab_size,
            hidden_size: c.hidden_size,
            layers: c.num_layers,
            context: c.max_position_embeddings,
            image_tokens: Some(grid),
            image_size: Some((grid.0 * px_per_code, grid.1 * px_per_code)),
            dtype: format!("{:?}", decoder.dtype()),
            device: format!("{:?}", decoder.device()),
        }
    }
}

/// A generation parameter a family may honour; a request that sets one its family does not
/// use for the asked direction is refused (never silently ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Param {
    /// [`GenerationParams::temperature`].
    Temperature,
    /// [`GenerationParams::top_k`].
    TopK,
    /// [`GenerationParams::top_p`].
    TopP,
    /// [`GenerationParams::cfg`].
    Cfg,
    /// [`GenerationParams::max_new_tokens`].
    MaxNewTokens,
    /// [`GenerationParams::steps`].
    Steps,
    /// [`GenerationParams::image_top_k`].
    ImageTopK,
    /// [`GenerationParams::size`].
    Size,
    /// [`GenerationParams::negative_prompt`].
    NegativePrompt,
    /// [`GenerationParams::num_beams`].
    NumBeams,
    /// [`GenerationParams::speculative`] (families with an AR image loop).
    Speculative,
}

impl Param {
    /// The CLI flag / argument name of the parameter.
    pub fn name(self) -> &'static str {
        match self {
            Param::Temperature => "temperature",
            Param::TopK => "top-k",
            Param::TopP => "top-p",
            Param::Cfg => "cfg",
            Param::MaxNewTokens => "max-new-tokens",
            Param::Steps => "steps",
            Param::ImageTopK => "image-top-k",
            Param::Size => "size",
            Param::NegativePrompt => "negative-prompt",
            Param::NumBeams => "num-beams",
            Param::Speculative => "speculative",
        }
    }

    /// The parameters a request sets (not `None`).
    pub fn set_in(p: &GenerationParams) -> Vec<Param> {
        let set = [
            (Param::Temperature, p.temperature.is_some()),
            (Param::TopK, p.top_k.is_some()),
            (Param::TopP, p.top_p.is_some()),
            (Param::Cfg, p.cfg.is_some()),
            (Param::MaxNewTokens, p.max_new_tokens.is_some()),
            (Param::Steps, p.steps.is_some()),
            (Param::ImageTopK, p.image_top_k.is_some()),
            (Param::Size, p.size.is_some()),
            (Param::NegativePrompt, p.negative_prompt.is_some()),
            (Param::NumBeams, p.num_beams.is_some()),
            (Param::Speculative, p.speculative.is_some()),
        ];
        set.into_iter().filter(|s| s.1).map(|s| s.0).collect()
    }
}

/// What a family does, as data: the directions it serves, the edits it carries out, and the
/// parameters it honours per direction. [`Backend::generate_batch`] checks a request against it
/// before anything runs.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// Short family name ("janus"), as in the `Family` registration.
    pub family: &'static str,
    /// Each direction served, with the parameters honoured for it.
    pub directions: Vec<(Direction, Vec<Param>)>,
    /// Image edits (`ImageInput::edit`) carried out.
    pub edits: Vec<EditKind>,
}

impl Capabilities {
    /// The directions served, in declaration order.
    pub fn direction_list(&self) -> Vec<Direction> {
        self.directions.iter().map(|d| d.0).collect()
    }

    /// Refuses a request this family cannot serve as asked: an undeclared direction
    /// ([`Error::Unsupported`]), an edit it does not carry out, or a parameter it does not use
    /// for that direction (naming the argument). Validates the request first.
    pub fn check(&self, req: &Request) -> Result<()> {
        req.validate()?;
        crate::edit::check_edit_kinds(&self.edits, self.family, req)?;
        let d = direction_of(req);
        let Some((_, params)) = self.directions.iter().find(|x| x.0 == d) else {
            return Err(Error::Unsupported {
                family: self.family.into(),
                direction: d.to_string(),
                supported: self
                    .direction_list()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if let Some(p) = Param::set_in(&req.params)
            .into_iter()
            .find(|p| !params.contains(p))
        {
            let used = params.iter().map(|p| p.name()).collect::<Vec<_>>();
            return Err(Error::invalid(
                p.name(),
                format!(
                    "{} does not use it for {d} (it uses: {})",
                    self.family,
                    if used.is_empty() {
                        "none".to_string()
                    } else {
                        used.join(", ")
                    }
                ),
            ));
        }
        Ok(())
    }
}

/// The key requests are grouped by into one batch: what they want and their parameters, the
/// seed left out (each request of a batch draws from its own seed's stream).
pub fn batch_key(req: &Request) -> (Modality, bool, GenerationParams) {
    let mut p = req.params.clone();
    p.seed = 0;
    (req.want, req.raw, p)
}

/// One model family.
pub trait Backend: Send + Sync {
    /// What the loaded model is (sizes, dtype, device).
    fn info(&self) -> ModelInfo;

    /// What the family does (see [`Capabilities`]).
    fn capabilities(&self) -> Capabilities;

    /// Directions this model supports.
    fn directions(&self) -> Vec<Direction> {
        self.capabilities().direction_list()
    }

    /// Image edits (`ImageInput::edit`) this model carries out.
    fn image_edits(&self) -> Vec<EditKind> {
        self.capabilities().edits
    }

    /// Refuses a request this model cannot serve, before anything runs: by default
    /// [`Capabilities::check`]; a family adds what depends on the loaded files (e.g. a missing
    /// image decoder).
    fn check(&self, req: &Request) -> Result<()> {
        self.capabilities().check(req)
    }

    /// Whether two requests can run in one group: by default when their [`batch_key`]s are
    /// equal; a family whose loop batches more widely says so.
    fn same_group(&self, a: &Request, b: &Request) -> bool {
        batch_key(a) == batch_key(b)
    }

    /// Generates one group of checked requests that share [`batch_key`] (rows batched in one
    /// forward where the family can); `num_outputs` outputs per request, request-major.
    fn generate_group(&self, requests: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>>;

    /// Generates for several prompts: checks every request against [`Backend::capabilities`]
    /// before anything runs, then runs consecutive requests with the same [`batch_key`] as one
    /// group ([`Backend::same_group`]). Returns `num_outputs` outputs per request, request-major.
    fn generate_batch(&self, requests: &[Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        for r in requests {
            self.check(r)?;
        }
        let mut out = Vec::new();
        let mut i = 0;
        while i < requests.len() {
            let mut j = i + 1;
            while j < requests.len() && self.same_group(&requests[i], &requests[j]) {
                j += 1;
            }
            let group: Vec<&Request> = requests[i..j].iter().collect();
            hooks.set_output_base(out.len());
            let outs = self.generate_group(&group, hooks);
            hooks.set_output_base(0);
            out.extend(outs?);
            i = j;
        }
        Ok(out)
    }

    /// The last position's logits of the reference forward for a raw prompt, `[vocab]` f32.
    fn last_logits(&self, ids: &[u32], images: &[crate::stream::ImageInput]) -> Result<Tensor> {
        let _ = (ids, images);
        Err(self.unsupported("last-position logits of raw ids"))
    }

    /// Decodes image codes on a `height × width` grid to pixels.
    fn decode_codes(&self, codes: &[u32], height: usize, width: usize) -> Result<image::RgbImage> {
        let _ = (codes, height, width);
        Err(self.unsupported("decoding image codes"))
    }

    /// The tokenizer, when the checkpoint has one.
    fn tokenizer(&self) -> Option<&tokenizers::Tokenizer>;

    /// The error for an entry point this family does not provide.
    fn unsupported(&self, what: &str) -> Error {
        let caps = self.capabilities();
        Error::Unsupported {
            family: caps.family.into(),
            direction: what.into(),
            supported: caps
                .direction_list()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// The direction a request asks for, from its inputs and `want`.
pub fn direction_of(req: &Request) -> Direction {
    let has_image = req
        .segments
        .iter()
        .any(|s| matches!(s, Segment::Image(_) | Segment::ImageCodes { .. }));
    match (req.want, has_image) {
        (Modality::Text, false) => Direction::TextToText,
        (Modality::Text, true) => Direction::ImageToText,
        (Modality::Image, false) => Direction::TextToImage,
        (Modality::Image, true) => Direction::ImageToImage,
        (Modality::Interleaved, _) => Direction::Interleaved,
    }
}

/// Checks codes for `decode_codes`: a non-empty `height × width` grid of them, each inside a
/// codebook of `codebook` entries; the error names the argument.
pub fn check_code_grid(codes: &[u32], height: usize, width: usize, codebook: usize) -> Result<()> {
    if height == 0 || width == 0 || height.checked_mul(width) != Some(codes.len()) {
        return Err(Error::invalid(
            "codes",
            format!("{} codes for a {height}×{width} grid", codes.len()),
        ));
    }
    if let Some(bad) = codes.iter().find(|&&c| c as usize >= codebook) {
        return Err(Error::invalid(
            "codes",
            format!("code {bad} is outside the codebook (size {codebook})"),
        ));
    }
    Ok(())
}

/// Registration of one family: recognises its config.json and loads it.
pub struct Family {
    /// Short name shown to users ("janus").
    pub name: &'static str,
    /// `model_type` values (or other markers) of config.json this family loads.
    pub matches: fn(&serde_json::Value) -> bool,
    /// Loads the checkpoint `matches` recognised.
    pub load: fn(&ModelFiles, &LoadOptions) -> Result<Box<dyn Backend>>,
    /// A family's own on-disk layout without config.json (e.g. Meta's original release):
    /// `Ok(None)` when a local directory does not look like it, `Ok(Some(files))` (`files.config`
    /// then names that layout's config file) when it does, and an error naming what is missing
    /// when it looks like it but is incomplete.
    pub resolve_dir: Option<ResolveDir>,
    /// For a hub repository in that layout (no config.json): the files to fetch, relative to the
    /// repository root, before `resolve_dir` runs on the local snapshot.
    pub hub_files: &'static [&'static str],
    /// The family's own components (Show-o's `magvit`, Chameleon's `vqgan`), found in its layout
    /// or given by the user (`--component NAME=…`), and listed with the checkpoint's.
    pub components: &'static [crate::loading::ComponentLayout],
}

/// See [`Family::resolve_dir`].
pub type ResolveDir = fn(&std::path::Path) -> Result<Option<ModelFiles>>;

/// Refuses a config whose `architectures`, when present, is not a non-empty list of class
/// names: the family is recognised from it (`[]` would silently load another family).
pub fn check_architectures(cfg: &serde_json::Value, path: &std::path::Path) -> Result<()> {
    let Some(a) = cfg.get("architectures") else {
        return Ok(());
    };
    match a.as_array() {
        Some(list) if !list.is_empty() && list.iter().all(|x| x.is_string()) => Ok(()),
        _ => Err(Error::Config {
            path: path.to_path_buf(),
            msg: format!("architectures {a} must be a non-empty list of model class names"),
        }),
    }
}

/// The `model_type` of a config, or `architectures[0]`, or `_class_name`, for messages.
pub fn config_kind(cfg: &serde_json::Value) -> String {
    cfg.get("model_type")
        .and_then(|v| v.as_str())
        .or_else(|| {
            cfg.get("architectures")
                .and_then(|a| a.get(0))
                .and_then(|v| v.as_str())
        })
        .or_else(|| cfg.get("_class_name").and_then(|v| v.as_str()))
        .unwrap_or("<none>")
        .to_string()
}
