//! What Chameleon / Anole and Lumina-mGPT share: the checkpoint (config, the q/k-norm backbone,
//! the LM head, the VQGAN encoder and decoder, the vocabulary mapping), the heads decoding runs
//! with, image input → codes, and the outputs (text, decoded images).

use crate::config::ChameleonConfig;
use crate::vq::{VqDecoder, VqEncoder};
use crate::{original, vq_files};
use any2any_core::backbone::{lm_head, Decoder};
use any2any_core::backend::{check_code_grid, Capabilities, ModelInfo, Param};
use any2any_core::candle_core::{DType, Device, Module, Tensor};
use any2any_core::candle_nn::VarBuilder;
use any2any_core::decode::{Head, RowBatch, RowInput};
use any2any_core::loading::{GenerationConfigJson, LoadOptions, ModelFiles};
use any2any_core::nn::Linear;
use any2any_core::tokenizers::Tokenizer;
use any2any_core::{
    imageops, Direction, Error, Generated, NoiseSource, Request, Result, StackedNoise,
};

/// Decoder files looked for next to the checkpoint (taming key names).
pub const DECODER_FILES: [&str; 2] = ["vqgan_decoder.safetensors", "vqgan.safetensors"];

/// A loaded Chameleon-architecture checkpoint.
pub struct ChameleonModel {
    /// The checkpoint's configuration.
    pub cfg: ChameleonConfig,
    /// The Llama-style backbone (`model.*`).
    pub decoder: Decoder,
    /// The LM head over the whole vocabulary.
    pub lm_head: Linear,
    /// The VQGAN encoder (image input), from `model.vqmodel.*` or the VQGAN files next to the
    /// checkpoint.
    pub encoder: Option<VqEncoder>,
    /// The taming image decoder, when a decoder file sits next to the checkpoint (or inside it).
    pub vq_decoder: Option<VqDecoder>,
    /// `generation_config.json`, or its defaults.
    pub gen: GenerationConfigJson,
    /// `<image>` placeholders per image in a prompt (`image_seq_length`).
    pub image_seq_length: usize,
    /// The checkpoint's name (directory or hub id).
    pub name: String,
    /// Loaded from Meta's original release layout ([`original`]).
    pub original: bool,
    tokenizer: Option<Tokenizer>,
    /// `[1, V]` f32: 0 at IMGIMG ids, −∞ elsewhere (the image loop's constraint).
    pub image_only: Tensor,
    /// `[V]` u8 masks of the text logits: HF's text mode (IMGIMG when the config masks them),
    /// and text only (those and the image start).
    hf_mask: Option<Tensor>,
    text_only_mask: Tensor,
}

/// The LM head with a mask: entries where `mask` is 1 become `f32::MIN` (HF's `finfo.min`).
pub struct MaskedHead<'m> {
    model: &'m ChameleonModel,
    mask: Option<&'m Tensor>,
}

impl Head for MaskedHead<'_> {
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let logits = self.model.lm_head.forward(hidden)?.to_dtype(DType::F32)?;
        let Some(mask) = self.mask else {
            return Ok(logits);
        };
        let min = Tensor::full(f32::MIN, logits.shape(), logits.device())?;
        Ok(mask
            .unsqueeze(0)?
            .broadcast_as(logits.shape())?
            .where_cond(&min, &logits)?)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.model.decoder.embed(&ids.unsqueeze(1)?)
    }
}

/// The checkpoint's parts before the common tail of loading.
struct Parts {
    cfg: ChameleonConfig,
    decoder: Decoder,
    head: any2any_core::candle_nn::Linear,
    encoder: Option<VqEncoder>,
    vq_decoder: Option<VqDecoder>,
}

impl ChameleonModel {
    /// Loads the HF layout (config.json) or Meta's original release (params.json, see
    /// [`original`]); the VQGAN comes from the files [`vq_files::find_vq`] finds, or from the
    /// checkpoint's `model.vqmodel.*`.
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let vb = files.var_builder(opts.dtype(), &opts.device)?;
        let is_original = original::is_original(files);
        let parts = if is_original {
            Self::load_original(files, vb, opts)?
        } else {
            Self::load_hf(files, vb, opts)?
        };
        let gen: GenerationConfigJson = ModelFiles::optional_json(&files.generation_config)?;
        let tokenizer = files.load_tokenizer()?;
        let image_seq_length = image_seq_length(files, &parts.cfg)?;
        let dev = &opts.device;
        let v = parts.cfg.backbone.vocab_size;
        let image_ids = &parts.cfg.vocab.image_ids;
        let boi = parts.cfg.vocab.ids.boi;
        let mut only = vec![f32::NEG_INFINITY; v];
        let mut hf = vec![0u8; v];
        for &id in image_ids {
            only[id as usize] = 0.0;
            hf[id as usize] = 1;
        }
        let mut text = if parts.cfg.mask_image_logits {
            hf.clone()
        } else {
            vec![0u8; v]
        };
        text[boi as usize] = 1;
        Ok(Self {
            image_only: Tensor::from_vec(only, (1, v), dev)?,
            hf_mask: if parts.cfg.mask_image_logits {
                Some(Tensor::from_vec(hf, v, dev)?)
            } else {
                None
            },
            text_only_mask: Tensor::from_vec(text, v, dev)?,
            cfg: parts.cfg,
            decoder: parts.decoder,
            lm_head: Linear::new(parts.head)?,
            encoder: parts.encoder,
            vq_decoder: parts.vq_decoder,
            gen,
            image_seq_length,
            name: files.name.clone(),
            original: is_original,
            tokenizer,
        })
    }

    /// Raw consolidated.pth: Meta names at the root, unpermuted q/k (interleaved RoPE).
    fn load_original(files: &ModelFiles, vb: VarBuilder, opts: &LoadOptions) -> Result<Parts> {
        let vq = original::load_vq(files, opts.dtype(), &opts.device)?;
        let cfg = original::config(files, &vq.config)?;
        Ok(Parts {
            decoder: Decoder::load(vb.clone(), &cfg.backbone)?,
            head: lm_head(vb.pp("output"), &cfg.backbone)?,
            cfg,
            encoder: vq.encoder,
            vq_decoder: vq.decoder,
        })
    }

    /// The HF layout: `model.*` + `lm_head`, the VQGAN from files next to it or from
    /// `model.vqmodel.*`.
    fn load_hf(files: &ModelFiles, vb: VarBuilder, opts: &LoadOptions) -> Result<Parts> {
        let cfg = ChameleonConfig::from_json(&files.config_json()?, &files.config)?;
        let decoder = Decoder::load(vb.pp("model"), &cfg.backbone)?;
        let head = lm_head(vb.pp("lm_head"), &cfg.backbone)?;
        let vq =
            vq_files::load_vq_component(files, &[], Some(&cfg.vq), opts.dtype(), &opts.device)?;
        let (encoder, vq_decoder) = vq.map_or((None, None), |v| (v.encoder, v.decoder));
        // The HF conversion keeps the VQ encoder under `model.vqmodel`; a checkpoint without it
        // (Lumina-mGPT may ship the LM alone) takes the encoder of the VQGAN next to it.
        let encoder = if vb.contains_tensor("model.vqmodel.encoder.conv_in.weight") {
            Some(VqEncoder::load(vb.pp("model.vqmodel"), &cfg.vq)?)
        } else {
            encoder
        };
        // Anole HF conversions that keep the image decoder store it in the checkpoint, in the
        // taming layout under `model.vqmodel.decoder.*` (a mismatched level order fails on the
        // first shape check, never silently).
        let vq_decoder = match vq_decoder {
            None if vb.contains_tensor("model.vqmodel.decoder.conv_in.weight") => Some(
                VqDecoder::load(vb.pp("model.vqmodel"), &cfg.vq).map_err(|e| {
                    Error::WeightFile {
                        path: files.dir.clone(),
                        msg: format!("model.vqmodel.decoder: {e}"),
                    }
                })?,
            ),
            d => d,
        };
        Ok(Parts {
            cfg,
            decoder,
            head,
            encoder,
            vq_decoder,
        })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.decoder.device()
    }

    /// The text tokenizer, when the checkpoint has one.
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    /// The context length.
    pub fn context(&self) -> usize {
        self.cfg.backbone.max_position_embeddings
    }

    /// The head of text decoding: HF's text mode (IMGIMG at `finfo.min` unless the config says
    /// `mask_image_logits: false`); `text_only` also masks the image start, so the model cannot
    /// open an image.
    pub fn text_head(&self, text_only: bool) -> MaskedHead<'_> {
        MaskedHead {
            model: self,
            mask: if text_only {
                Some(&self.text_only_mask)
            } else {
                self.hf_mask.as_ref()
            },
        }
    }

    /// The head of image decoding: raw logits.
    pub fn raw_head(&self) -> MaskedHead<'_> {
        MaskedHead {
            model: self,
            mask: None,
        }
    }

    /// The last position's logits `[V]` f32 (on the CPU) of `ids` under `head`.
    pub fn last_logits_with(&self, ids: &[u32], head: &dyn Head) -> Result<Tensor> {
        let (_, hidden) = RowBatch::prefill(&self.decoder, &[RowInput::Ids(ids)], 0)?;
        Ok(head.logits(&hidden)?.squeeze(0)?.to_device(&Device::Cpu)?)
    }

    /// The last position's logits `[V]` f32 of `ids` in HF's text mode (what `logits` reports).
    pub fn text_last_logits(&self, ids: &[u32]) -> Result<Tensor> {
        self.last_logits_with(ids, &self.text_head(false))
    }

    /// Refuses ids outside the vocabulary (naming `ids`) and an empty prompt.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let vocab = self.cfg.backbone.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            return Err(Error::invalid(
                "ids",
                format!("token id {bad} is outside the vocabulary ({vocab})"),
            ));
        }
        if ids.is_empty() {
            return Err(Error::invalid("prompt", "empty prompt"));
        }
        Ok(())
    }

    /// Token ids of `text` (an error naming `prompt` without a tokenizer).
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        any2any_core::loading::tokenize(self.tokenizer.as_ref(), text)
    }

    /// The VQGAN encoder, or an error naming where it is looked for.
    pub fn vq_encoder(&self) -> Result<&VqEncoder> {
        self.encoder.as_ref().ok_or_else(|| {
            Error::invalid(
                "image",
                format!(
                    "image input needs the VQGAN encoder: {} has no `model.vqmodel.encoder.*` and no vqgan.ckpt + vqgan.yaml (or vqgan.safetensors) next to it or in tokenizer/",
                    self.name
                ),
            )
        })
    }

    /// The codes `[h·w]` (row-major) and grid of an image resized and cropped to `size`
    /// (`(w, h)` px, see [`cover_crop`]) with `filter`, each channel byte mapped by `norm`.
    pub fn encode_pixels(
        &self,
        px: &image::RgbImage,
        size: (u32, u32),
        filter: image::imageops::FilterType,
        norm: fn(u8) -> f32,
    ) -> Result<(Vec<u32>, usize, usize)> {
        let px = cover_crop(px, size, filter);
        let data: Vec<f32> = px.as_raw().iter().map(|&u| norm(u)).collect();
        let (w, h) = (px.width() as usize, px.height() as usize);
        let t = Tensor::from_vec(data, (1, h, w, 3), self.device())?.permute((0, 3, 1, 2))?;
        let (codes, h, w) = self.vq_encoder()?.encode(&t)?;
        Ok((codes.squeeze(0)?.to_vec1::<u32>()?, h, w))
    }

    /// Default image grid: the VQ resolution over the downsample factor.
    pub fn default_grid(&self) -> (usize, usize) {
        let g = self.cfg.vq.resolution / self.cfg.vq.downsample_factor();
        (g, g)
    }

    /// Text ids as an output segment (decoded when there is a tokenizer).
    pub fn text_output(&self, ids: Vec<u32>) -> Result<Generated> {
        let text = match &self.tokenizer {
            Some(t) => Some(
                t.decode(&ids, true)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Generated::Text { ids, text })
    }

    /// Codes on a `grid` as an output segment, decoded to pixels.
    pub fn image_output(&self, codes: Vec<u32>, grid: (usize, usize)) -> Result<Generated> {
        let image = self.decode_codes(&codes, grid.0, grid.1)?;
        Ok(Generated::Image {
            image,
            codes: Some(codes),
            grid: Some(grid),
        })
    }

    /// Decodes codes on an `h × w` grid with the taming decoder.
    pub fn decode_codes(&self, codes: &[u32], h: usize, w: usize) -> Result<image::RgbImage> {
        let dec = self.vq_decoder.as_ref().ok_or_else(|| self.no_decoder())?;
        check_code_grid(codes, h, w, self.cfg.vocab.num_codes())?;
        let t = Tensor::new(codes, self.device())?.unsqueeze(0)?;
        let px = dec.decode(&t, h, w)?;
        imageops::to_images(&px)?
            .pop()
            .ok_or_else(|| Error::invalid("codes", "decoder returned no image"))
    }

    /// The error for image output without the taming decoder.
    pub fn no_decoder(&self) -> Error {
        Error::invalid(
            "model",
            format!(
                "image output needs the taming VQGAN decoder, which HF Chameleon checkpoints do not ship: put the original release's {} + {} or one of {} (keys decoder.*, post_quant_conv.*, quantize.embedding.weight; config in {}) next to {} or in its tokenizer/ subdirectory, or pass their folder with --component vqgan=DIR",
                vq_files::VQGAN_CKPT,
                vq_files::VQGAN_YAML,
                DECODER_FILES.join(" / "),
                vq_files::VQGAN_CONFIG_JSON,
                self.name
            ),
        )
    }

    /// The backend check: the capabilities, then the decoder for image output.
    pub fn check(&self, caps: &Capabilities, req: &Request) -> Result<()> {
        caps.check(req)?;
        if req.want.has_image() && self.vq_decoder.is_none() {
            return Err(self.no_decoder());
        }
        Ok(())
    }

    /// `info` of a backend on this model: `layout` names the on-disk layout; generated images
    /// are `grid` codes.
    pub fn info(
        &self,
        family: &str,
        layout: &str,
        directions: &[Direction],
        grid: (usize, usize),
    ) -> ModelInfo {
        let decoder = if self.vq_decoder.is_some() {
            ", with taming VQGAN decoder"
        } else {
            ", no image decoder"
        };
        ModelInfo::of_decoder(
            family,
            format!("{} ({layout}{decoder})", self.name),
            directions,
            &self.decoder,
            grid,
            self.cfg.vq.downsample_factor(),
        )
    }
}

/// Every direction the two families serve, each with the same parameters, and speculative
/// decoding where an image is written.
pub fn capabilities(family: &'static str, params: &[Param]) -> Capabilities {
    let directions = [
        Direction::TextToText,
        Direction::ImageToText,
        Direction::TextToImage,
        Direction::ImageToImage,
        Direction::Interleaved,
    ];
    Capabilities {
        family,
        directions: directions
            .iter()
            .map(|&d| {
                let mut p = params.to_vec();
                if !matches!(d, Direction::TextToText | Direction::ImageToText) {
                    p.push(Param::Speculative);
                }
                (d, p)
            })
            .collect(),
        edits: Vec::new(),
    }
}

/// `image_seq_length` of the processor config (preprocessor_config.json or
/// processor_config.json), else the VQ grid's size.
fn image_seq_length(files: &ModelFiles, cfg: &ChameleonConfig) -> Result<usize> {
    let path = match &files.preprocessor_config {
        Some(p) => p.clone(),
        None => files.dir.join("processor_config.json"),
    };
    let grid = cfg.vq.resolution / cfg.vq.downsample_factor();
    if !path.is_file() {
        return Ok(grid * grid);
    }
    let proc: serde_json::Value = any2any_core::loading::read_config(&path)?;
    check_image_std(proc.get("image_processor").unwrap_or(&proc), &path)?;
    match proc.get("image_seq_length") {
        None => Ok(grid * grid),
        Some(v) => v
            .as_u64()
            .filter(|&n| n > 0 && n <= (1 << 20))
            .map(|n| n as usize)
            .ok_or_else(|| Error::Config {
                path,
                msg: format!("image_seq_length {v} must be a positive integer ≤ 2^20"),
            }),
    }
}

/// The processor's normalisation is fixed (`x·0.0078 − 1`), but a file stating a zero or
/// negative `image_std` is broken, not merely unused: refused naming the file.
fn check_image_std(proc: &serde_json::Value, path: &std::path::Path) -> Result<()> {
    let Some(std) = proc.get("image_std") else {
        return Ok(());
    };
    let ok = std
        .as_array()
        .is_some_and(|a| a.iter().all(|s| s.as_f64().is_some_and(|s| s > 0.0)));
    if ok {
        return Ok(());
    }
    Err(Error::Config {
        path: path.to_path_buf(),
        msg: format!("image_std {std} must be a list of numbers > 0"),
    })
}

/// Resizes `px` to cover `(w, h)` (the smaller scale that covers both sides, rounded, never
/// below the target) and crops the centre; an image of that size already is kept as it is.
pub fn cover_crop(
    px: &image::RgbImage,
    (cw, ch): (u32, u32),
    filter: image::imageops::FilterType,
) -> image::RgbImage {
    if px.width() == cw && px.height() == ch {
        return px.clone();
    }
    let (w0, h0) = (px.width() as f64, px.height() as f64);
    let k = (cw as f64 / w0).max(ch as f64 / h0);
    let (nw, nh) = (
        ((w0 * k).round() as u32).max(cw),
        ((h0 * k).round() as u32).max(ch),
    );
    let r = image::imageops::resize(px, nw, nh, filter);
    image::imageops::crop_imm(&r, (nw - cw) / 2, (nh - ch) / 2, cw, ch).to_image()
}

/// A request's own source lent to one batch of a group: the group's requests keep their
/// sources across the batches their rows pass through.
struct Lent<'s, 'h>(&'s mut (dyn NoiseSource + 'h));

impl NoiseSource for Lent<'_, '_> {
    fn uniform(&mut self, n: usize) -> Result<Vec<f32>> {
        self.0.uniform(n)
    }
    fn normal(&mut self, n: usize) -> Result<Vec<f32>> {
        self.0.normal(n)
    }
}

/// The noise of a batch whose row `r` belongs to request `owners[r]` (ascending): every request
/// draws from its own source `sources[owners[r]]`, so it draws what it would alone.
pub fn rows_noise<'s, 'h: 's>(
    sources: &'s mut [Box<dyn NoiseSource + 'h>],
    owners: &[usize],
) -> StackedNoise<'s> {
    let mut parts: Vec<(Box<dyn NoiseSource + 's>, usize)> = Vec::new();
    for (i, src) in sources.iter_mut().enumerate() {
        let n = owners.iter().filter(|&&o| o == i).count();
        if n > 0 {
            parts.push((Box::new(Lent(src.as_mut())), n));
        }
    }
    StackedNoise::new(parts)
}

/// The noise of a one-row batch drawing from `noise`.
pub fn one_row_noise<'s, 'h: 's>(noise: &'s mut (dyn NoiseSource + 'h)) -> StackedNoise<'s> {
    StackedNoise::new(vec![(Box::new(Lent(noise)), 1)])
}
