//! Emu3 behind the `Backend` trait: text→text, image→text and text→image (constrained layout,
//! log-prob CFG against a negative prompt). Requests run one prompt at a time.

use crate::config::{Emu3Config, Emu3ImageProcessorConfig};
use crate::model::Emu3Model;
use crate::vq::to_u8_hwc;
use any2any_core::backend::{Backend, Capabilities, ModelInfo, Param};
use any2any_core::candle_core::{Device, Tensor};
use any2any_core::decode::{
    noise_parts, text_budget, text_segment, RowBatch, RowInput, TextLoop, TokenAction,
};
use any2any_core::imageops;
use any2any_core::loading::{GenerationConfigJson, LoadOptions, ModelFiles};
use any2any_core::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any_core::{
    Direction, Error, Generated, Hooks, ImageInput, Modality, Output, Request, Result, Segment,
    Timings,
};
use std::time::Instant;

const DEFAULT_MAX_NEW_TOKENS: usize = 256;
/// The guidance scale of the HF Emu3 generation example.
const DEFAULT_CFG: f32 = 3.0;
/// The top-k of the HF Emu3 generation example.
const DEFAULT_IMAGE_TOP_K: usize = 2048;
/// The negative prompt of the HF Emu3 generation example.
pub const DEFAULT_NEGATIVE_PROMPT: &str = "lowres, bad anatomy, bad hands, text, error, missing fingers, extra digit, fewer digits, cropped, worst quality, low quality, normal quality, jpeg artifacts, signature, watermark, username, blurry.";
/// Side of the generated code grid of the HF example (720×720 pixels at f = 8).
const DEFAULT_GRID: usize = 90;

/// A loaded Emu3 checkpoint: the model, its image processor and generation settings, and the
/// tokenizer.
pub struct Emu3Backend {
    model: Emu3Model,
    pre: Emu3ImageProcessorConfig,
    gen: GenerationConfigJson,
    tokenizer: Option<any2any_core::tokenizers::Tokenizer>,
    name: String,
}

/// `model_type: "emu3"`.
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("model_type").and_then(|v| v.as_str()) == Some("emu3")
}

/// Registry entry point.
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(Emu3Backend::load(files, opts)?))
}

/// The conditioned prompt, the negative prompt and the code grid `(h, w)` of an image request.
type ImagePrompts = (Vec<u32>, Vec<u32>, (usize, usize));

fn unsupported_segment(s: &Segment) -> Error {
    Error::invalid("input", format!("Emu3 does not take {} segments", s.kind()))
}

impl Emu3Backend {
    /// Loads a checkpoint in the HF layout (config.json, safetensors, tokenizer.json,
    /// processor/preprocessor and generation configs where present) with `opts`' dtype and
    /// device; checks that every special and visual id lies inside the vocabulary.
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let cfg: Emu3Config = any2any_core::loading::read_json(&files.config)?;
        let pre = Emu3ImageProcessorConfig::find(&files.dir, files.preprocessor_config.as_deref())?;
        let gen: GenerationConfigJson = ModelFiles::optional_json(&files.generation_config)?;
        let tokenizer = files.load_tokenizer()?;
        let vb = files.var_builder(opts.dtype(), &opts.device)?;
        let model = Emu3Model::load(vb, &cfg)?;
        let vocab = model.backbone_cfg.vocab_size as u32;
        let v = &model.vocab;
        for (name, id) in [
            ("bos", v.bos),
            ("eos", v.eos),
            ("eol", v.eol),
            ("eof", v.eof),
            ("image start", v.boi),
            ("image end", v.eoi),
            ("image token", v.img_token),
            ("image_token_id", v.image_placeholder),
        ]
        .into_iter()
        .chain(v.visual.iter().map(|&i| ("visual token", i)))
        {
            if id >= vocab {
                return Err(Error::Config {
                    path: files.config.clone(),
                    msg: format!("{name} id {id} is outside the vocabulary ({vocab})"),
                });
            }
        }
        Ok(Self {
            model,
            pre,
            gen,
            tokenizer,
            name: files.name.clone(),
        })
    }

    /// The model's weights.
    pub fn model(&self) -> &Emu3Model {
        &self.model
    }

    /// The image processor settings.
    pub fn preprocessor(&self) -> &Emu3ImageProcessorConfig {
        &self.pre
    }

    /// The generation defaults (generation_config.json, or none).
    pub fn generation_config(&self) -> &GenerationConfigJson {
        &self.gen
    }

    fn device(&self) -> &Device {
        self.model.decoder.device()
    }

    fn factor(&self) -> usize {
        self.model.cfg.vq_config.spatial_factor()
    }

    fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        any2any_core::loading::tokenize(self.tokenizer.as_ref(), text)
    }

    /// Normalised pixels `[1, 3, H, W]`: raw images must already have sides divisible by the
    /// VQ factor; others are resized (bicubic) to the processor's `smart_resize` size.
    fn pixels(&self, img: &ImageInput, raw: bool) -> Result<Tensor> {
        let f = self.factor() as u32;
        let img = if raw {
            if !img.width().is_multiple_of(f) || !img.height().is_multiple_of(f) {
                return Err(Error::invalid(
                    "image",
                    format!(
                        "{}×{} image with raw ids: both sides must be multiples of {f}",
                        img.width(),
                        img.height()
                    ),
                ));
            }
            img.pixels.clone()
        } else {
            let (h, w) = self.pre.smart_resize(img.height(), img.width(), f)?;
            if (w, h) == img.pixels.dimensions() {
                img.pixels.clone()
            } else {
                image::imageops::resize(&img.pixels, w, h, image::imageops::FilterType::CatmullRom)
            }
        };
        let (mean, std) = self.pre.mean_std();
        Ok(
            imageops::normalize(&img, self.pre.rescale_factor, mean, std, self.device())?
                .unsqueeze(0)?,
        )
    }

    /// The processor's image block for an `h × w` code grid, with `<image>` placeholders.
    fn image_block(&self, h: usize, w: usize) -> Result<Vec<u32>> {
        let v = &self.model.vocab;
        let mut ids = vec![v.boi];
        ids.extend(self.tokens(&format!("{h}*{w}"))?);
        ids.push(v.img_token);
        ids.extend(std::iter::repeat_n(v.image_placeholder, h * (w + 1)));
        ids.extend([v.eof, v.eoi]);
        Ok(ids)
    }

    /// Ids of a text-out request, images substituted: `BOS USER: … ASSISTANT:` (raw: verbatim).
    /// Text between images is tokenized in one piece.
    fn render_text(&self, req: &Request) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let mut images = Vec::new();
        let mut text = String::new();
        let flush = |text: &mut String, ids: &mut Vec<u32>| -> Result<()> {
            if !text.is_empty() {
                ids.extend(self.tokens(text)?);
                text.clear();
            }
            Ok(())
        };
        if !req.raw {
            ids.push(self.model.vocab.bos);
            text.push_str("USER: ");
        }
        for s in &req.segments {
            match s {
                Segment::Text(t) => text.push_str(t),
                Segment::TextIds(v) => {
                    flush(&mut text, &mut ids)?;
                    ids.extend_from_slice(v);
                }
                Segment::Image(img) => {
                    flush(&mut text, &mut ids)?;
                    let px = self.pixels(img, req.raw)?;
                    let img_ids = self.model.image_ids(&px)?;
                    if !req.raw {
                        let (_, _, h, w) = px.dims4()?;
                        let f = self.factor();
                        ids.extend(self.image_block(h / f, w / f)?);
                    }
                    images.push(img_ids);
                }
                other => return Err(unsupported_segment(other)),
            }
        }
        if !req.raw {
            text.push_str(" ASSISTANT:");
        }
        flush(&mut text, &mut ids)?;
        self.model.substitute_images(&ids, &images)
    }

    fn sampling(&self, p: &any2any_core::GenerationParams, want: Modality) -> SamplingParams {
        let defaults = if want == Modality::Image {
            SamplingParams {
                temperature: 1.0,
                top_k: Some(DEFAULT_IMAGE_TOP_K),
                top_p: None,
                min_p: None,
            }
        } else {
            SamplingParams::greedy()
        };
        SamplingParams::from_params(p, defaults)
    }

    /// Text for a group of requests: every output of every request is a row of one batch.
    fn generate_text(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let prompts = reqs
            .iter()
            .map(|r| self.render_text(r))
            .collect::<Result<Vec<_>>>()?;
        let mut rows = Vec::new();
        for (r, ids) in reqs.iter().zip(&prompts) {
            rows.extend(std::iter::repeat_n(RowInput::Ids(ids), r.num_outputs));
        }
        let p = &reqs[0].params;
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let max_new = text_budget(
            p.max_new_tokens,
            self.gen.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            longest,
            self.model.backbone_cfg.max_position_embeddings,
        )?;
        let (mut batch, hidden) = RowBatch::prefill(&self.model.decoder, &rows, max_new)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let pipe = LogitsPipeline::new(None, self.sampling(p, Modality::Text));
        let mut noise = hooks.batch_noise(&noise_parts(reqs));
        let stop = [self.model.vocab.eos];
        let rows = TextLoop::new(&pipe, max_new, &stop)
            .tokenizer(self.tokenizer.as_ref())
            .run(
                &mut batch,
                &self.model.head(),
                hidden,
                &mut noise,
                hooks,
                &mut |_, _| TokenAction::Continue,
            )?;
        let total = t0.elapsed().as_secs_f64();
        rows.into_iter()
            .map(|row| {
                Ok(Output {
                    timings: Timings {
                        prefill_s,
                        decode_s: total - prefill_s,
                        steps: row.ids.len(),
                        image_decode_s: 0.0,
                        total_s: total,
                    },
                    segments: vec![text_segment(self.tokenizer.as_ref(), row.ids)?],
                })
            })
            .collect()
    }

    /// The code grid of a generated image: the HF default (90 × 90) or the largest square that
    /// fits the context after `prompt_len` tokens.
    fn image_grid(&self, prompt_len: usize) -> Result<usize> {
        let ctx = self.model.backbone_cfg.max_position_embeddings;
        let room = ctx.saturating_sub(prompt_len);
        let fits = |g: usize| g * (g + 1) + 3 <= room;
        let g = (1..=DEFAULT_GRID)
            .rev()
            .find(|&g| fits(g))
            .ok_or(Error::ContextOverflow {
                len: prompt_len,
                max: ctx,
                reserved: 5,
            })?;
        Ok(g)
    }

    /// The conditioned and negative prompts of an image request (each ending in
    /// `<|image start|>h*w<|image token|>`) and the code grid `(h, w)`.
    fn image_prompts(&self, req: &Request) -> Result<ImagePrompts> {
        let v = &self.model.vocab;
        let mut body = Vec::new();
        for s in &req.segments {
            match s {
                Segment::Text(t) => body.extend(self.tokens(t)?),
                Segment::TextIds(ids) => body.extend_from_slice(ids),
                other => return Err(unsupported_segment(other)),
            }
        }
        if req.raw {
            // The ids must already end with `<|image start|>h*w<|image token|>`. Without a
            // negative prompt HF's unbatched CFG conditions the second stream on the last
            // prompt token alone.
            let grid = self.grid_of_raw(&body)?;
            let last = body.last().copied().unwrap_or(v.img_token);
            return Ok((body, vec![last], grid));
        }
        let negative = req.params.negative_prompt.as_deref();
        let neg_body = self
            .tokens(negative.unwrap_or(DEFAULT_NEGATIVE_PROMPT))
            .unwrap_or_default();
        let (gh, gw) = match req.params.size {
            // Any aspect ratio: `--size W×H` in pixels, multiples of the VQ factor.
            Some((w, h)) => {
                let f = self.factor();
                if !w.is_multiple_of(f) || !h.is_multiple_of(f) {
                    return Err(Error::invalid(
                        "size",
                        format!("{w}x{h}: Emu3 image sizes are multiples of {f} px"),
                    ));
                }
                (h / f, w / f)
            }
            None => {
                let g = self.image_grid(body.len().max(neg_body.len()) + 1 + 8)?;
                (g, g)
            }
        };
        let head = |b: &[u32]| -> Result<Vec<u32>> {
            let mut ids = vec![v.bos];
            ids.extend_from_slice(b);
            ids.push(v.boi);
            ids.extend(self.tokens(&format!("{gh}*{gw}"))?);
            ids.push(v.img_token);
            Ok(ids)
        };
        Ok((head(&body)?, head(&neg_body)?, (gh, gw)))
    }

    /// The images of one request: its outputs are the images of one batched loop.
    fn generate_images(&self, req: &Request, hooks: &mut Hooks) -> Result<Vec<Output>> {
        let (cond, neg, (gh, gw)) = self.image_prompts(req)?;
        let p = &req.params;
        let w_cfg = p.cfg.or(self.gen.guidance_scale).unwrap_or(DEFAULT_CFG);
        let guidance = (w_cfg != 1.0).then(|| Guidance::two_stream(w_cfg, GuidanceSpace::LogProbs));
        let pipe = LogitsPipeline::new(guidance, self.sampling(p, Modality::Image));
        let mut noise = hooks.take_noise(p.seed);
        let t0 = Instant::now();
        let neg_stream = pipe.guidance.as_ref().map(|_| neg.as_slice());
        let pairs = vec![(cond.as_slice(), neg_stream); req.num_outputs];
        let toks = self.model.generate_images(
            &pairs,
            (gh, gw),
            &pipe,
            p.speculative,
            noise.as_mut(),
            hooks,
        )?;
        let decode_s = t0.elapsed().as_secs_f64();
        let mut toks = toks.into_iter();
        hooks.each("vq decode", req.num_outputs, |_| {
            let toks = toks
                .next()
                .ok_or_else(|| Error::invalid("image", "the image loop returned too few images"))?;
            let t1 = Instant::now();
            let image = self.decode_codes(&toks.codes, gh, gw)?;
            Ok(Output {
                timings: Timings {
                    prefill_s: 0.0,
                    decode_s,
                    steps: toks.new_ids.len(),
                    image_decode_s: t1.elapsed().as_secs_f64(),
                    total_s: t0.elapsed().as_secs_f64(),
                },
                segments: vec![Generated::Image {
                    image,
                    codes: Some(toks.codes),
                    grid: Some((gh, gw)),
                }],
            })
        })
    }

    /// `h*w` between the last `<|image start|>` and a final `<|image token|>` of raw ids.
    fn grid_of_raw(&self, ids: &[u32]) -> Result<(usize, usize)> {
        let v = &self.model.vocab;
        let bad = || {
            Error::invalid(
                "raw-ids",
                "raw ids for an image must end with <|image start|>H*W<|image token|>",
            )
        };
        if ids.last() != Some(&v.img_token) {
            return Err(bad());
        }
        let start = ids.iter().rposition(|&i| i == v.boi).ok_or_else(bad)?;
        let tok = self.tokenizer.as_ref().ok_or_else(bad)?;
        let s = tok
            .decode(&ids[start + 1..ids.len() - 1], false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let (h, w) = s.trim().split_once('*').ok_or_else(bad)?;
        let h: usize = h.trim().parse().map_err(|_| bad())?;
        let w: usize = w.trim().parse().map_err(|_| bad())?;
        if h == 0 || w == 0 {
            return Err(bad());
        }
        Ok((h, w))
    }
}

impl Backend for Emu3Backend {
    fn info(&self) -> ModelInfo {
        let f = self.factor();
        let g = self.image_grid(0).unwrap_or(0);
        ModelInfo::of_decoder(
            "emu3",
            format!("{} (HF transformers Emu3 layout)", self.name),
            &self.directions(),
            &self.model.decoder,
            (g, g),
            f,
        )
    }

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        let text = vec![Temperature, TopK, TopP, MaxNewTokens];
        Capabilities {
            family: "emu3",
            directions: vec![
                (Direction::TextToText, text.clone()),
                (Direction::ImageToText, text),
                (
                    Direction::TextToImage,
                    vec![
                        Temperature,
                        TopK,
                        TopP,
                        Cfg,
                        Size,
                        NegativePrompt,
                        Speculative,
                    ],
                ),
            ],
            edits: Vec::new(),
        }
    }

    fn generate_group(&self, group: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        if group.first().map(|r| r.want) != Some(Modality::Image) {
            return self.generate_text(group, hooks);
        }
        // one loop per request: number its outputs after those before it
        let base = hooks.output_base();
        let mut out = Vec::new();
        for r in group {
            hooks.set_output_base(base + out.len());
            let outs = self.generate_images(r, hooks);
            hooks.set_output_base(base);
            out.extend(outs?);
        }
        Ok(out)
    }

    fn last_logits(&self, ids: &[u32], images: &[ImageInput]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::invalid("raw-ids", "no token ids given"));
        }
        let vocab = self.model.backbone_cfg.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            return Err(Error::invalid(
                "ids",
                format!("token id {bad} is outside the vocabulary ({vocab})"),
            ));
        }
        let imgs = images
            .iter()
            .map(|i| self.model.image_ids(&self.pixels(i, true)?))
            .collect::<Result<Vec<_>>>()?;
        let ids = self.model.substitute_images(ids, &imgs)?;
        Ok(self.model.last_logits(&ids)?.to_device(&Device::Cpu)?)
    }

    fn decode_codes(&self, codes: &[u32], height: usize, width: usize) -> Result<image::RgbImage> {
        any2any_core::backend::check_code_grid(
            codes,
            height,
            width,
            self.model.cfg.vq_config.codebook_size,
        )?;
        let px = self.model.decode_codes(codes, height, width)?;
        let (_, _, h, w) = px.dims4()?;
        let data = to_u8_hwc(&px)?.pop().unwrap_or_default();
        image::RgbImage::from_raw(w as u32, h as u32, data)
            .ok_or_else(|| Error::invalid("codes", "decoder returned no image"))
    }

    fn tokenizer(&self) -> Option<&any2any_core::tokenizers::Tokenizer> {
        self.tokenizer.as_ref()
    }
}
