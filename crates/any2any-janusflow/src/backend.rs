//! JanusFlow behind the [`Backend`] trait: text→text and image→text (the `deepseek` template,
//! greedy by default, sampled with a temperature), and text→image (rectified flow with CFG,
//! decoded by the SDXL VAE component `vae`).

use crate::config::{ImageProcessorConfig, JanusFlowConfig};
use crate::flow::{FlowDenoiser, FlowPrompts};
use crate::model::JanusFlowModel;
use any2any_core::backend::{Backend, Capabilities, ModelInfo, Param};
use any2any_core::candle_core::{Device, Tensor};
use any2any_core::decode::{
    initial_latent, last_logits, scatter_rows, FlowEuler, LatentLoop, TextRun,
};
use any2any_core::loading::{read_json, Component, ComponentLayout};
use any2any_core::sampling::{Guidance, GuidanceSpace, SamplingParams};
use any2any_core::{edit, imageops, tokenizers};
use any2any_core::{
    Direction, Error, Generated, Hooks, ImageInput, LoadOptions, Modality, ModelFiles, Output,
    Request, Result, Segment, Timings,
};
use any2any_diffusion::vae::KlVae;
use std::sync::OnceLock;
use std::time::Instant;

/// The processor's default system prompt (understanding and text chat).
pub const SYSTEM_PROMPT: &str = "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.";
/// The generation tag the README appends to a text→image prompt (dropped with the last token).
pub const IMAGE_GEN_TAG: &str = "<｜begin▁of▁generation｜>";
/// The VAE JanusFlow decodes with, when the checkpoint directory has none.
pub const DEFAULT_VAE: &str = "stabilityai/sdxl-vae";
/// The README's guidance weight (`cfg_weight=2.0`).
pub const DEFAULT_CFG: f32 = 2.0;
/// The README's step count.
pub const DEFAULT_STEPS: usize = 30;
/// Timestep scale: the model sees `t · 1000`.
pub const TIME_SCALE: f64 = 1000.0;
const DEFAULT_MAX_NEW_TOKENS: usize = 512;
const IMAGE_TAG: &str = "<image_placeholder>";

/// Where JanusFlow keeps its VAE: a diffusers `vae/` folder next to the checkpoint (the repo has
/// none, so `stabilityai/sdxl-vae` is fetched on first use); `--component vae=DIR_OR_HUB_ID`
/// points elsewhere.
pub const VAE_LAYOUT: ComponentLayout = any2any_diffusion::vae::VAE_LAYOUT;

/// JanusFlow's own components (for [`any2any_core::Family::components`]).
pub const COMPONENTS: &[ComponentLayout] = &[VAE_LAYOUT];

/// Special token ids, from the tokenizer.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SpecialIds {
    /// `<｜begin▁of▁sentence｜>`, first of every prompt.
    pub bos: u32,
    /// `<｜end▁of▁sentence｜>`: stops text.
    pub eos: u32,
    /// `<｜▁pad▁｜>`: the unconditioned prompt.
    pub pad: u32,
    /// `<begin_of_image>`: its embedding is replaced by `beg_of_und_embed`.
    pub boi: u32,
    /// `<end_of_image>`.
    pub eoi: u32,
    /// `<image_placeholder>`: one per image patch.
    pub image: u32,
}

impl SpecialIds {
    fn of(tok: &tokenizers::Tokenizer) -> Result<Self> {
        let id = |t: &str| any2any_core::loading::special_token(tok, t);
        Ok(Self {
            bos: id("<｜begin▁of▁sentence｜>")?,
            eos: id("<｜end▁of▁sentence｜>")?,
            pad: id("<｜▁pad▁｜>")?,
            boi: id("<begin_of_image>")?,
            eoi: id("<end_of_image>")?,
            image: id(IMAGE_TAG)?,
        })
    }
}

/// The VAE: loaded with the model, or fetched on first use.
enum VaeSlot {
    Loaded(Box<KlVae>),
    Lazy(Box<LazyVae>),
}

/// The default VAE, fetched (or its failure kept) on first use.
struct LazyVae {
    opts: LoadOptions,
    cell: OnceLock<std::result::Result<KlVae, String>>,
}

/// A loaded JanusFlow checkpoint.
pub struct JanusFlowBackend {
    model: JanusFlowModel,
    pre: ImageProcessorConfig,
    ids: SpecialIds,
    tokenizer: tokenizers::Tokenizer,
    vae: VaeSlot,
    name: String,
}

/// `model_type: "multi_modality"` with a ShallowUViT generation encoder (Janus-Pro's original
/// layout has the same model_type but a VQ `gen_vision_config`).
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("model_type").and_then(|v| v.as_str()) == Some("multi_modality")
        && cfg.get("vision_gen_enc_config").is_some()
}

/// Registry entry point.
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(JanusFlowBackend::load(files, opts)?))
}

impl JanusFlowBackend {
    /// Loads a checkpoint directory (config.json, model.safetensors, tokenizer.json,
    /// preprocessor_config.json) and its `vae` component when present.
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let cfg: JanusFlowConfig = read_json(&files.config)?;
        let dtype = opts.dtype();
        let model = JanusFlowModel::load(files.var_builder(dtype, &opts.device)?, &cfg)?;
        let pre: ImageProcessorConfig = ModelFiles::optional_json(&files.preprocessor_config)?;
        if let Some(path) = &files.preprocessor_config {
            imageops::check_normalization(path, pre.rescale_factor, pre.image_mean, pre.image_std)?;
        }
        let tokenizer = files.load_tokenizer()?.ok_or_else(|| Error::MissingFile {
            dir: files.name.clone(),
            what: "JanusFlow's tokenizer".into(),
            looked_for: "tokenizer.json".into(),
        })?;
        let ids = SpecialIds::of(&tokenizer)?;
        let vae = match files.layout_component(&VAE_LAYOUT, &[])? {
            Some(c) => VaeSlot::Loaded(Box::new(KlVae::from_component(&c, dtype, &opts.device)?)),
            None => VaeSlot::Lazy(Box::new(LazyVae {
                opts: opts.clone(),
                cell: OnceLock::new(),
            })),
        };
        Ok(Self {
            model,
            pre,
            ids,
            tokenizer,
            vae,
            name: files.name.clone(),
        })
    }

    /// The model.
    pub fn model(&self) -> &JanusFlowModel {
        &self.model
    }

    /// The special ids.
    pub fn special_ids(&self) -> SpecialIds {
        self.ids
    }

    /// The VAE, loading the default one on first use; a missing VAE is an error naming the
    /// component and how to give it.
    pub fn vae(&self) -> Result<&KlVae> {
        let (opts, cell) = match &self.vae {
            VaeSlot::Loaded(v) => return Ok(v),
            VaeSlot::Lazy(l) => (&l.opts, &l.cell),
        };
        let got = cell.get_or_init(|| {
            Component::from_hub("vae", DEFAULT_VAE, opts)
                .and_then(|c| KlVae::from_component(&c, opts.dtype(), &opts.device))
                .map_err(|e| e.to_string())
        });
        got.as_ref().map_err(|e| Error::MissingFile {
            dir: self.name.clone(),
            what: format!("the `vae` component (SDXL VAE) that decodes JanusFlow's latents ({e})"),
            looked_for: format!(
                "vae/diffusion_pytorch_model.safetensors, the hub's {DEFAULT_VAE}, or \
                 --component vae=DIR_OR_HUB_ID"
            ),
        })
    }

    fn device(&self) -> &Device {
        self.model.decoder.device()
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = vec![self.ids.bos];
        ids.extend(any2any_core::loading::tokenize(
            Some(&self.tokenizer),
            text,
        )?);
        Ok(ids)
    }

    /// The `deepseek` template of one user turn: `{system}\n\nUser: {content}\n\nAssistant:`
    /// (no system part when it is empty), stripped as the reference does.
    pub fn template(system: &str, content: &str) -> String {
        let head = if system.is_empty() {
            String::new()
        } else {
            format!("{system}\n\n")
        };
        format!("{head}User: {}\n\nAssistant:", content.trim())
            .trim()
            .to_string()
    }

    /// The user content of a request (an image becomes `<image_placeholder>\n`) and its images.
    fn content<'r>(&self, req: &'r Request) -> Result<(String, Vec<&'r ImageInput>)> {
        let mut text = String::new();
        let mut images = Vec::new();
        for s in &req.segments {
            match s {
                Segment::Text(t) => text.push_str(t),
                Segment::Image(img) => {
                    text.push_str(IMAGE_TAG);
                    text.push('\n');
                    images.push(img);
                }
                other => return Err(unsupported_segment(other)),
            }
        }
        Ok((text, images))
    }

    /// A request's ids (BOS first, each image placeholder expanded to BOI, one placeholder per
    /// patch, EOI) and images; raw requests are taken as given.
    pub fn render<'r>(&self, req: &'r Request) -> Result<(Vec<u32>, Vec<&'r ImageInput>)> {
        if req.raw {
            let mut ids = Vec::new();
            for s in &req.segments {
                match s {
                    Segment::TextIds(v) => ids.extend_from_slice(v),
                    Segment::Image(_) => {}
                    other => return Err(unsupported_segment(other)),
                }
            }
            return Ok((ids, req.images()));
        }
        let (content, images) = self.content(req)?;
        if req.want == Modality::Image {
            if !images.is_empty() {
                return Err(Error::invalid(
                    "image",
                    "JanusFlow generates images from text only",
                ));
            }
            let p = Self::template("", &content) + IMAGE_GEN_TAG;
            return Ok((self.encode(&p)?, images));
        }
        let ids = self.encode(&Self::template(SYSTEM_PROMPT, &content))?;
        let n = self.model.und_tokens();
        let mut out = Vec::with_capacity(ids.len() + images.len() * (n + 1));
        for i in ids {
            if i == self.ids.image {
                out.push(self.ids.boi);
                out.extend(std::iter::repeat_n(self.ids.image, n));
                out.push(self.ids.eoi);
            } else {
                out.push(i);
            }
        }
        Ok((out, images))
    }

    /// Normalised pixels `[1, 3, S, S]`: the reference's resize (longer side to S, the other
    /// `int(side / longer · S)`, at least `min_size`, PIL bicubic) and centred pad with
    /// `int(mean · 255)`.
    pub fn pixels(&self, img: &ImageInput) -> Result<Tensor> {
        let s = self.model.und_image_size() as u32;
        let (w, h) = (img.width(), img.height());
        let long = w.max(h).max(1) as f64;
        let side = |x: u32| ((x as f64 / long * s as f64) as u32).max(self.pre.min_size);
        let (nw, nh) = (side(w), side(h));
        let resized = edit::pil_resize_bicubic(&img.pixels, nw, nh)?;
        let big = nw.max(nh);
        let mut sq = image::RgbImage::from_pixel(big, big, image::Rgb(self.pre.background()));
        image::imageops::replace(
            &mut sq,
            &resized,
            ((big - nw) / 2) as i64,
            ((big - nh) / 2) as i64,
        );
        if big != s {
            return Err(Error::invalid(
                "image",
                format!("{w}×{h} resizes to {big}×{big}, not the tower's {s}×{s}"),
            ));
        }
        let (mean, std) = self.pre.mean_std();
        Ok(
            imageops::normalize(&sq, self.pre.rescale_factor, mean, std, self.device())?
                .unsqueeze(0)?,
        )
    }

    /// Input embeddings `[L, hidden]` of `ids`: every BOI and placeholder slot, in order, takes
    /// `[beg_of_und_embed, aligned features]` of the images in order.
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
            .filter(|&p| ids[p] == self.ids.image || ids[p] == self.ids.boi)
            .collect();
        let per = self.model.und_tokens() + 1;
        if slots.len() != images.len() * per {
            return Err(Error::invalid(
                "image",
                format!(
                    "the prompt has {} BOI/placeholder slots (ids {}, {}) but {} image(s) × {per} embeddings were given",
                    slots.len(),
                    self.ids.boi,
                    self.ids.image,
                    images.len()
                ),
            ));
        }
        if images.is_empty() {
            return Ok(emb);
        }
        let px = images
            .iter()
            .map(|i| self.pixels(i))
            .collect::<Result<Vec<_>>>()?;
        let feats = self.model.image_embeds(&Tensor::cat(&px, 0)?)?;
        let feats = feats.reshape((slots.len(), ()))?;
        scatter_rows(&emb, &slots, &feats)
    }

    fn generate_text(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let mut rows = Vec::new();
        for r in reqs {
            let (ids, images) = self.render(r)?;
            let e = self.embed(&ids, &images)?;
            rows.extend(std::iter::repeat_n(e, r.num_outputs));
        }
        let Some(first) = reqs.first() else {
            return Ok(Vec::new());
        };
        TextRun {
            decoder: &self.model.decoder,
            lm_head: &self.model.lm_head,
            sampling: SamplingParams::from_params(&first.params, SamplingParams::greedy()),
            default_max_new: DEFAULT_MAX_NEW_TOKENS,
            stop: &[self.ids.eos],
            tokenizer: Some(&self.tokenizer),
            length_penalty: 1.0,
        }
        .run(&rows, reqs, hooks, t0)
    }

    /// The pixel side of a generated image: `--size` (square, a multiple of the VAE's factor
    /// times the encoder's stride) or the understanding size (384).
    pub fn image_side(&self, req: &Request) -> Result<usize> {
        let unit = self.pixels_per_token();
        let side = match req.params.size {
            None => self.model.und_image_size(),
            Some((w, h)) if w == h => w,
            Some((w, h)) => {
                return Err(Error::invalid(
                    "size",
                    format!("{w}×{h}: JanusFlow generates square images"),
                ))
            }
        };
        if side == 0 || !side.is_multiple_of(unit) || side > 4096 {
            return Err(Error::invalid(
                "size",
                format!("{side}: must be a positive multiple of {unit} (VAE factor × patch), at most 4096"),
            ));
        }
        Ok(side)
    }

    /// Pixels per image token along a side (the VAE's 8 × the encoder's stride 2).
    pub fn pixels_per_token(&self) -> usize {
        let f = match &self.vae {
            VaeSlot::Loaded(v) => v.config().downsample_factor(),
            VaeSlot::Lazy(_) => 8,
        };
        f * self.model.cfg.vision_gen_enc_config.params.stride
    }

    /// The final latents `[B, 4, h, w]` of a group of text→image requests (one batch: every
    /// output of every request, each request's latents drawn from its own noise).
    pub fn generate_latents(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Tensor> {
        let first = reqs
            .first()
            .ok_or_else(|| Error::invalid("prompt", "no text→image request given"))?;
        let p = &first.params;
        let side = self.image_side(first)?;
        let lat = side / self.vae_factor();
        let cfg = p.cfg.unwrap_or(DEFAULT_CFG);
        let guidance = (cfg != 1.0).then(|| Guidance::two_stream(cfg, GuidanceSpace::Logits));
        let mut prompts = Vec::new();
        for r in reqs {
            let (ids, _) = self.render(r)?;
            prompts.extend(std::iter::repeat_n(ids, r.num_outputs));
        }
        let mut sched = FlowEuler::new(p.steps.unwrap_or(DEFAULT_STEPS), TIME_SCALE)?;
        let mut noise = hooks.batch_noise(&any2any_core::decode::noise_parts(reqs));
        let ch = self.model.cfg.vision_gen_enc_config.params.input_channels;
        let mut parts = Vec::new();
        let mut row = 0;
        for r in reqs {
            let src = noise
                .part_of_row(row)
                .ok_or_else(|| Error::invalid("noise", format!("no noise source for row {row}")))?;
            parts.push(initial_latent(
                (r.num_outputs, ch, lat, lat),
                src,
                self.device(),
            )?);
            row += r.num_outputs;
        }
        let z0 = Tensor::cat(&parts, 0)?;
        let rows = FlowPrompts::new(&self.model, &prompts, self.ids.pad, guidance.is_some())?;
        let span = 1 + (lat / self.model.cfg.vision_gen_enc_config.params.stride).pow(2);
        let mut den = FlowDenoiser::cached(&self.model, rows, span)?;
        let lp = LatentLoop {
            guidance: guidance.as_ref(),
            stage: "flow steps",
        };
        lp.run(z0, &mut den, &mut sched, &mut noise, hooks)
    }

    fn vae_factor(&self) -> usize {
        self.pixels_per_token() / self.model.cfg.vision_gen_enc_config.params.stride
    }

    fn generate_images(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let vae = self.vae()?;
        let z = self.generate_latents(reqs, hooks)?;
        let decode_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let px = hooks.each_row("vae decode", &z, |z| vae.decode_scaled(z))?;
        let images = imageops::to_images(&px)?;
        let steps = reqs.first().and_then(|r| r.params.steps);
        let timings = Timings {
            prefill_s: 0.0,
            decode_s,
            steps: steps.unwrap_or(DEFAULT_STEPS),
            image_decode_s: t1.elapsed().as_secs_f64(),
            total_s: t0.elapsed().as_secs_f64(),
        };
        Ok(images
            .into_iter()
            .map(|image| Output {
                segments: vec![Generated::Image {
                    image,
                    codes: None,
                    grid: None,
                }],
                timings: timings.clone(),
            })
            .collect())
    }
}

fn unsupported_segment(s: &Segment) -> Error {
    Error::invalid(
        "prompt",
        format!("JanusFlow does not take {} segments", s.kind()),
    )
}

impl Backend for JanusFlowBackend {
    fn info(&self) -> ModelInfo {
        let side = self.model.und_image_size();
        let g = side / self.pixels_per_token().max(1);
        ModelInfo::of_decoder(
            "janusflow",
            format!("{} (deepseek-ai JanusFlow layout)", self.name),
            &self.directions(),
            &self.model.decoder,
            (g, g),
            self.pixels_per_token(),
        )
    }

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        let text = vec![Temperature, TopK, TopP, MaxNewTokens, NumBeams];
        Capabilities {
            family: "janusflow",
            directions: vec![
                (Direction::TextToText, text.clone()),
                (Direction::ImageToText, text),
                (Direction::TextToImage, vec![Cfg, Steps, Size]),
            ],
            edits: Vec::new(),
        }
    }

    fn check(&self, req: &Request) -> Result<()> {
        self.capabilities().check(req)?;
        if req.want == Modality::Image {
            self.image_side(req)?;
            self.vae()?;
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
        let x = self.embed(ids, &imgs)?.unsqueeze(0)?;
        last_logits(&self.model.decoder, &self.model.lm_head, &x)
    }

    fn tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        Some(&self.tokenizer)
    }
}
