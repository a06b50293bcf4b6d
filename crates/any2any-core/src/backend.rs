//! The backend contract: one model family behind `generate`, plus the lower-level entry points
//! the CLI exposes (`logits`, `decode`, `inspect`).

use crate::loading::{LoadOptions, ModelFiles};
use crate::progress::Hooks;
use crate::request::{Output, Request};
use crate::stream::{Direction, Modality, Segment};
use crate::{Error, Result};
use candle_core::Tensor;

/// What a loaded model is and can do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    pub family: String,
    /// e.g. "deepseek-community/Janus-Pro-1B layout (HF transformers)".
    pub variant: String,
    pub directions: Vec<String>,
    pub parameters: usize,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub context: usize,
    /// Image grid of generated images (codes), and their pixel size.
    pub image_tokens: Option<(usize, usize)>,
    pub image_size: Option<(usize, usize)>,
    pub dtype: String,
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

/// One model family.
pub trait Backend: Send + Sync {
    fn info(&self) -> ModelInfo;

    /// Directions this model supports.
    fn directions(&self) -> Vec<Direction>;

    /// Image edits (`ImageInput::edit`) this model carries out; requests holding another are
    /// refused by [`crate::edit::check_edits`]. None by default.
    fn image_edits(&self) -> Vec<crate::edit::EditKind> {
        Vec::new()
    }

    /// Generates for several prompts at once (rows batched in one forward where the family can).
    /// Returns `num_outputs` outputs per request, request-major.
    fn generate_batch(&self, requests: &[Request], hooks: &mut Hooks) -> Result<Vec<Output>>;

    /// The last position's logits of the reference forward for a raw prompt, `[vocab]` f32.
    fn last_logits(&self, ids: &[u32], images: &[crate::stream::ImageInput]) -> Result<Tensor>;

    /// Decodes image codes on a `height × width` grid to pixels.
    fn decode_codes(&self, codes: &[u32], height: usize, width: usize) -> Result<image::RgbImage>;

    /// The tokenizer, when the checkpoint has one.
    fn tokenizer(&self) -> Option<&tokenizers::Tokenizer>;
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

/// Refuses a direction the backend did not declare, listing those it did.
pub fn check_direction(backend: &dyn Backend, family: &str, req: &Request) -> Result<()> {
    let d = direction_of(req);
    let supported = backend.directions();
    if supported.contains(&d) {
        return Ok(());
    }
    Err(Error::Unsupported {
        family: family.into(),
        direction: d.to_string(),
        supported: supported
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Registration of one family: recognises its config.json and loads it.
pub struct Family {
    /// Short name shown to users ("janus").
    pub name: &'static str,
    /// `model_type` values (or other markers) of config.json this family loads.
    pub matches: fn(&serde_json::Value) -> bool,
    pub load: fn(&ModelFiles, &LoadOptions) -> Result<Box<dyn Backend>>,
    /// A family's own on-disk layout without config.json (e.g. Meta's original release):
    /// `Ok(None)` when a local directory does not look like it, `Ok(Some(files))` (`files.config`
    /// then names that layout's config file) when it does, and an error naming what is missing
    /// when it looks like it but is incomplete.
    pub resolve_dir: Option<ResolveDir>,
    /// For a hub repository in that layout (no config.json): the files to fetch, relative to the
    /// repository root, before `resolve_dir` runs on the local snapshot.
    pub hub_files: &'static [&'static str],
}

/// See [`Family::resolve_dir`].
pub type ResolveDir = fn(&std::path::Path) -> Result<Option<ModelFiles>>;

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
