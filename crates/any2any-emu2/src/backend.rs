//! Emu2 behind the [`Backend`] trait.
//!
//! - text→image and (text + image)→image (`EmuVisualGeneration.forward`): the prompt
//!   `<s>{text}[IMG]` (an input image inlined as `[IMG]<image>×n[/IMG]`, its slots filled with
//!   `project_up(avgpool(EVA(image)))`) regresses `n_query` embeddings ([`crate::regress`]);
//!   with guidance (`--cfg` > 1, default 3) the negative is the regressed empty prompt, batch
//!   order `[cond, uncond]`; the UNet (conditioned on them, their mean as SDXL's pooled
//!   embedding and time ids `[1024, 1024, 0, 0, h, w]`) denoises under the checkpoint's
//!   scheduler (EulerDiscrete, 50 steps by default); the VAE decodes `z / scaling_factor`;
//! - image alone → image (the reference's "autoencoding" mode): the UNet is conditioned on the
//!   image's pooled EVA features directly, the negative on those of an all-zero normalised
//!   image; no LLM call;
//! - image→text and text→text: `<s>{text}` with images inlined the same way (the README's
//!   `[<IMG_PLH>]Describe the image in details:`), greedy by default, through the core
//!   [`TextLoop`](any2any_core::decode::TextLoop) (via [`EmbedsText`]).

use crate::config::Emu2Config;
use crate::model::Emu2Model;
use any2any_core::backend::{Backend, Capabilities, ModelInfo, Param};
use any2any_core::candle_core::{Device, Tensor};
use any2any_core::decode::{last_logits_of_embeds, EmbedsText, LmHead};
use any2any_core::loading::Component;
use any2any_core::sampling::SamplingParams;
use any2any_core::{edit, imageops, tokenizers};
use any2any_core::{
    Direction, Error, Hooks, ImageInput, LoadOptions, Modality, ModelFiles, Output, Request,
    Result, Segment, Timings,
};
use any2any_diffusion::scheduler::SchedulerConfig;
use any2any_diffusion::unet::UNet2DConditionModel;
use any2any_diffusion::vae::KlVae;
use std::time::Instant;

/// `EmuVisualGeneration.forward`'s default guidance scale.
pub const DEFAULT_CFG: f32 = 3.0;
/// Its default step count.
pub const DEFAULT_STEPS: usize = 50;
/// Its default image side when the UNet's config gives no `sample_size` (Emu2-Gen's is 128
/// latents × the VAE's 8).
pub const DEFAULT_SIDE: usize = 1024;
/// `original_size` of its SDXL time ids.
pub const ORIGINAL_SIZE: (usize, usize) = (1024, 1024);
/// The README's `max_new_tokens` for understanding.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 64;
/// The reference's `length_penalty` for beam search (`EmuModel.generate` and the README's
/// calls: −1, favouring shorter answers; `--num-beams` sets the beams, 1 by default as in the
/// README's HF calls, 5 in `EmuModel.generate`).
pub const DEFAULT_LENGTH_PENALTY: f64 = -1.0;
/// The EVA normalisation (OpenAI CLIP mean and std).
pub const EVA_MEAN: [f64; 3] = [0.48145466, 0.4578275, 0.40821073];
/// See [`EVA_MEAN`].
pub const EVA_STD: [f64; 3] = [0.26862954, 0.26130258, 0.27577711];
const IMG: &str = "[IMG]";
const IMG_END: &str = "[/IMG]";
const IMAGE: &str = "<image>";

/// The diffusers components of Emu2-Gen (`model_index.json`): the encoder and the decoder parts.
pub const GEN_COMPONENTS: [&str; 4] = ["multimodal_encoder", "unet", "vae", "scheduler"];

/// Special token ids, from the tokenizer.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SpecialIds {
    /// `<s>`.
    pub bos: u32,
    /// `</s>`: stops text.
    pub eos: u32,
    /// `[IMG]`: opens an image, and ends a prompt to regress.
    pub img: u32,
    /// `[/IMG]`.
    pub img_end: u32,
    /// `<image>`: one per visual token.
    pub image: u32,
}

impl SpecialIds {
    fn of(tok: &tokenizers::Tokenizer) -> Result<Self> {
        let id = |t: &str| any2any_core::loading::special_token(tok, t);
        Ok(Self {
            bos: id("<s>")?,
            eos: id("</s>")?,
            img: id(IMG)?,
            img_end: id(IMG_END)?,
            image: id(IMAGE)?,
        })
    }
}

/// The image decoder of Emu2-Gen.
pub struct Decoders {
    /// `unet/`.
    pub unet: UNet2DConditionModel,
    /// `vae/`.
    pub vae: KlVae,
    /// `scheduler/`.
    pub scheduler: SchedulerConfig,
}

/// A loaded Emu2 checkpoint.
pub struct Emu2Backend {
    model: Emu2Model,
    ids: SpecialIds,
    tokenizer: tokenizers::Tokenizer,
    gen: Option<Decoders>,
    name: String,
}

/// Emu2-Gen's `model_index.json` (`EmuVisualGenerationPipeline`), or an `EmuForCausalLM`
/// `config.json` (Emu2, Emu2-Chat).
pub fn matches(cfg: &serde_json::Value) -> bool {
    let class = cfg.get("_class_name").and_then(|v| v.as_str());
    let arch = cfg
        .get("architectures")
        .and_then(|v| v.as_array())
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some("EmuForCausalLM")));
    class == Some("EmuVisualGenerationPipeline") || arch
}

/// Registry entry point.
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(Emu2Backend::load(files, opts)?))
}

fn require<'f>(files: &'f ModelFiles, name: &str, what: &str) -> Result<&'f Component> {
    files.component(name).ok_or_else(|| {
        let have: Vec<&str> = files.components.keys().map(String::as_str).collect();
        Error::MissingFile {
            dir: files.name.clone(),
            what: format!("component `{name}` ({what})"),
            looked_for: format!(
                "{name}/ with its config (model_index.json lists it; this checkpoint has: {}), or --component {name}=DIR_OR_HUB_ID",
                if have.is_empty() { "none".into() } else { have.join(", ") }
            ),
        }
    })
}

/// The error for a checkpoint without `tokenizer.json`: when it has the SentencePiece
/// `tokenizer.model` only (as a slow `LlamaTokenizer` saves it), how to write the
/// `tokenizer.json` (with the 272 added tokens) from it.
fn missing_tokenizer(files: &ModelFiles) -> Error {
    let tok_dir = files.component("tokenizer").map(|c| c.dir.clone());
    let dirs: Vec<std::path::PathBuf> = tok_dir
        .into_iter()
        .chain(files.config.parent().map(std::path::Path::to_path_buf))
        .collect();
    let sp = dirs.iter().find(|d| d.join("tokenizer.model").is_file());
    let looked_for = match sp {
        Some(d) => format!(
            "tokenizer/tokenizer.json or tokenizer.json; {} has the SentencePiece tokenizer.model only, which is not read: write tokenizer.json beside it with `python -c \"from transformers import AutoTokenizer as T; T.from_pretrained('{d}').save_pretrained('{d}')\"` (transformers converts it and keeps the added tokens)",
            d.display(),
            d = d.display()
        ),
        None => "tokenizer/tokenizer.json or tokenizer.json".into(),
    };
    Error::MissingFile {
        dir: files.name.clone(),
        what: "Emu2's tokenizer".into(),
        looked_for,
    }
}

impl Emu2Backend {
    /// Loads Emu2-Gen (a `model_index.json` directory: `multimodal_encoder/`, `unet/`, `vae/`,
    /// `scheduler/`, `tokenizer/`) or Emu2-Chat (`config.json`, weights and tokenizer at the
    /// root; understanding only).
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let dtype = opts.dtype();
        let dev = &opts.device;
        let is_gen = files
            .config
            .file_name()
            .is_some_and(|n| n == any2any_core::loading::MODEL_INDEX);
        let (model, tok_path, gen) = if is_gen {
            let enc = require(files, "multimodal_encoder", "the EVA + LLaMA encoder")?;
            let cfg = Emu2Config::load(enc.require_config()?)?;
            let model = Emu2Model::load(enc.var_builder(dtype, dev)?, &cfg)?;
            let unet = require(files, "unet", "the SDXL-shaped UNet")?;
            let vae = require(files, "vae", "the SDXL VAE")?;
            let sched = require(files, "scheduler", "the EulerDiscrete scheduler")?;
            let gen = Decoders {
                unet: UNet2DConditionModel::load(unet, dtype, dev)?,
                vae: KlVae::from_component(vae, dtype, dev)?,
                scheduler: SchedulerConfig::from_dir(&sched.dir)?,
            };
            let tok = files
                .component("tokenizer")
                .map(|c| c.dir.join("tokenizer.json"))
                .filter(|p| p.is_file())
                .or_else(|| files.tokenizer.clone());
            (model, tok, Some(gen))
        } else {
            let cfg = Emu2Config::load(&files.config)?;
            let model = Emu2Model::load(files.var_builder(dtype, dev)?, &cfg)?;
            (model, files.tokenizer.clone(), None)
        };
        let tok_path = tok_path.ok_or_else(|| missing_tokenizer(files))?;
        let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", tok_path.display())))?;
        let ids = SpecialIds::of(&tokenizer)?;
        Ok(Self {
            model,
            ids,
            tokenizer,
            gen,
            name: files.name.clone(),
        })
    }

    /// The encoder.
    pub fn model(&self) -> &Emu2Model {
        &self.model
    }

    /// The special ids.
    pub fn special_ids(&self) -> SpecialIds {
        self.ids
    }

    /// The UNet, VAE and scheduler (Emu2-Gen only); an error naming them otherwise.
    pub fn decoders(&self) -> Result<&Decoders> {
        self.gen.as_ref().ok_or_else(|| Error::MissingFile {
            dir: self.name.clone(),
            what: "Emu2-Gen's image decoder (this is an understanding checkpoint)".into(),
            looked_for: "model_index.json with unet/, vae/ and scheduler/ (BAAI/Emu2-Gen)".into(),
        })
    }

    /// The default image size (width, height), as diffusers picks it: the UNet's `sample_size`
    /// × the VAE's downsampling factor ([`DEFAULT_SIDE`] when the config gives none).
    pub fn default_size(&self) -> (usize, usize) {
        self.gen
            .as_ref()
            .and_then(|g| {
                let f = g.vae.config().downsample_factor();
                g.unet.config().sample_hw().map(|(h, w)| (w * f, h * f))
            })
            .unwrap_or((DEFAULT_SIDE, DEFAULT_SIDE))
    }

    fn device(&self) -> &Device {
        self.model.decoder.device()
    }

    /// The text of a request (each image inlined as `[IMG]<image>×n[/IMG]`) and its images.
    fn content<'r>(&self, req: &'r Request) -> Result<(String, Vec<&'r ImageInput>)> {
        let mut text = String::new();
        let mut images = Vec::new();
        let slot = format!("{IMG}{}{IMG_END}", IMAGE.repeat(self.model.n_query()));
        for s in &req.segments {
            match s {
                Segment::Text(t) => text.push_str(t),
                Segment::Image(img) => {
                    text.push_str(&slot);
                    images.push(img);
                }
                other => {
                    return Err(Error::invalid(
                        "prompt",
                        format!("Emu2 does not take {} segments", other.kind()),
                    ))
                }
            }
        }
        Ok((text, images))
    }

    /// `<s>` and the tokens of `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = vec![self.ids.bos];
        ids.extend(any2any_core::loading::tokenize(
            Some(&self.tokenizer),
            text,
        )?);
        Ok(ids)
    }

    /// A request's ids and images: `<s>{text}` (with `[IMG]` appended when it asks for an
    /// image); raw requests are taken as given.
    pub fn render<'r>(&self, req: &'r Request) -> Result<(Vec<u32>, Vec<&'r ImageInput>)> {
        if req.raw {
            let mut ids = Vec::new();
            for s in &req.segments {
                match s {
                    Segment::TextIds(v) => ids.extend_from_slice(v),
                    Segment::Image(_) => {}
                    other => {
                        return Err(Error::invalid(
                            "prompt",
                            format!("Emu2 does not take {} segments", other.kind()),
                        ))
                    }
                }
            }
            return Ok((ids, req.images()));
        }
        let (mut text, images) = self.content(req)?;
        if req.want == Modality::Image {
            text.push_str(IMG);
        }
        Ok((self.encode(&text)?, images))
    }

    /// Normalised pixels `[1, 3, S, S]`: PIL-bicubic resize to the tower's side, then the
    /// OpenAI CLIP mean and std (the reference's torchvision transform).
    pub fn pixels(&self, img: &ImageInput) -> Result<Tensor> {
        let s = self.model.cfg.vision_config.image_size as u32;
        let resized = edit::pil_resize_bicubic(&img.pixels, s, s)?;
        Ok(
            imageops::normalize(&resized, 1.0 / 255.0, EVA_MEAN, EVA_STD, self.device())?
                .unsqueeze(0)?,
        )
    }

    fn pixel_batch(&self, images: &[&ImageInput]) -> Result<Tensor> {
        let px = images
            .iter()
            .map(|i| self.pixels(i))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&px, 0)?)
    }

    /// Input embeddings `[L, hidden]` of `ids`: every `<image>` slot, in order, takes
    /// `project_up` of the pooled EVA features of the images in order.
    pub fn embed(&self, ids: &[u32], images: &[&ImageInput]) -> Result<Tensor> {
        let vocab = self.model.backbone_cfg.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            return Err(Error::invalid(
                "ids",
                format!("token id {bad} is outside the vocabulary ({vocab})"),
            ));
        }
        let dev = self.device();
        let emb = self.model.decoder.embed(&Tensor::new(ids, dev)?)?;
        let slots: Vec<usize> = (0..ids.len())
            .filter(|&p| ids[p] == self.ids.image)
            .collect();
        let n = self.model.n_query();
        if slots.len() != images.len() * n {
            return Err(Error::invalid(
                "image",
                format!(
                    "the prompt has {} `<image>` slots (id {}) but {} image(s) × {n} embeddings were given",
                    slots.len(),
                    self.ids.image,
                    images.len()
                ),
            ));
        }
        if images.is_empty() {
            return Ok(emb);
        }
        let feats = self
            .model
            .image_embeds(&self.pixel_batch(images)?)?
            .to_dtype(emb.dtype())?;
        let l = ids.len();
        let mut index: Vec<u32> = (0..l as u32).collect();
        for (k, &p) in slots.iter().enumerate() {
            index[p] = (l + k) as u32;
        }
        Ok(Tensor::cat(&[&emb, &feats], 0)?.index_select(&Tensor::new(index, dev)?, 0)?)
    }
}

impl Emu2Backend {
    fn head(&self) -> LmHead<'_> {
        LmHead {
            decoder: &self.model.decoder,
            head: &self.model.lm_head,
        }
    }

    fn generate_text(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let mut rows = Vec::new();
        for r in reqs {
            let (ids, images) = self.render(r)?;
            let e = self.embed(&ids, &images)?;
            rows.extend(std::iter::repeat_n(e, r.num_outputs));
        }
        let job = EmbedsText {
            head: self.head(),
            tokenizer: Some(&self.tokenizer),
            defaults: SamplingParams::greedy(),
            default_max_new: DEFAULT_MAX_NEW_TOKENS,
            stop: &[self.ids.eos],
            length_penalty: DEFAULT_LENGTH_PENALTY,
        };
        job.run(&rows, reqs, t0, hooks)
    }

    /// The final latents `[B, 4, h, w]` of a group of image requests (every output of every
    /// request, request-major).
    pub fn generate_latents(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Tensor> {
        let first = reqs
            .first()
            .ok_or_else(|| Error::invalid("prompt", "no image request given"))?;
        let s = self.image_settings(first)?;
        let ehs = self.condition(reqs, s.cfg > 1.0, hooks)?;
        Ok(self.denoise(reqs, &ehs, s, hooks, false)?.0)
    }

    fn generate_images(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let vae = &self.decoders()?.vae;
        let first = reqs
            .first()
            .ok_or_else(|| Error::invalid("prompt", "no image request given"))?;
        let z = self.generate_latents(reqs, hooks)?;
        let decode_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let px = hooks.each_row("vae decode", &z, |z| vae.decode_scaled(z))?;
        let images = imageops::to_images(&px)?;
        let timings = Timings {
            prefill_s: 0.0,
            decode_s,
            steps: self.image_settings(first)?.steps,
            image_decode_s: t1.elapsed().as_secs_f64(),
            total_s: t0.elapsed().as_secs_f64(),
        };
        Ok(Output::per_image(images, &timings))
    }
}

impl Backend for Emu2Backend {
    fn info(&self) -> ModelInfo {
        let f = self
            .gen
            .as_ref()
            .map_or(8, |g| g.vae.config().downsample_factor());
        let g = self.default_size().0 / f;
        ModelInfo::of_decoder(
            "emu2",
            format!(
                "{} (BAAI Emu2{} layout)",
                self.name,
                if self.gen.is_some() { "-Gen" } else { "" }
            ),
            &self.directions(),
            &self.model.decoder,
            (g, g),
            f,
        )
    }

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        let text = vec![Temperature, TopK, TopP, MaxNewTokens, NumBeams];
        let mut directions = vec![
            (Direction::TextToText, text.clone()),
            (Direction::ImageToText, text),
        ];
        if self.gen.is_some() {
            directions.push((Direction::TextToImage, vec![Cfg, Steps, Size]));
            directions.push((Direction::ImageToImage, vec![Cfg, Steps, Size]));
        }
        Capabilities {
            family: "emu2",
            directions,
            edits: Vec::new(),
        }
    }

    fn check(&self, req: &Request) -> Result<()> {
        self.capabilities().check(req)?;
        if req.want == Modality::Image {
            self.image_settings(req)?;
        }
        Ok(())
    }

    fn generate_group(&self, group: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        match group.first().map(|r| r.want) {
            Some(Modality::Image) => self.generate_images(group, hooks),
            Some(_) => self.generate_text(group, hooks),
            None => Ok(Vec::new()),
        }
    }

    fn last_logits(&self, ids: &[u32], images: &[ImageInput]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::invalid("raw-ids", "no token ids given"));
        }
        let imgs: Vec<&ImageInput> = images.iter().collect();
        last_logits_of_embeds(&self.head(), &self.embed(ids, &imgs)?)
    }

    fn tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        Some(&self.tokenizer)
    }
}
