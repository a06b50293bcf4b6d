//! Janus-Pro behind the `Backend` trait: text→text, image→text and text→image with CFG, several
//! different prompts per batch and n outputs per prompt.

use crate::config::{JanusConfig, JanusPreprocessorConfig};
use crate::model::JanusModel;
use any2any_core::backend::{Backend, Capabilities, ModelInfo, Param};
use any2any_core::candle_core::{DType, Device, Module, Tensor};
use any2any_core::decode::{
    last_logits, scatter_rows, CodeLoop, Head, NoConstraint, RowBatch, RowInput, TextRun,
};
use any2any_core::imageops;
use any2any_core::loading::{GenerationConfigJson, LoadOptions, ModelFiles};
use any2any_core::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any_core::{
    Direction, Error, Generated, Hooks, ImageInput, Modality, Output, Request, Result, Segment,
    Timings,
};
use std::time::Instant;

/// The system prompt the reference prepends for understanding.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.\n\n";
const DEFAULT_MAX_NEW_TOKENS: usize = 256;
const DEFAULT_CFG: f32 = 5.0;

/// Special token ids, from the tokenizer, generation_config.json and config.json.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct SpecialIds {
    /// Begin of sentence, first of every templated prompt.
    pub bos: u32,
    /// End of sentence: stops text generation.
    pub eos: u32,
    /// Pad: every token of the unconditioned stream but BOS and BOI.
    pub pad: u32,
    /// Begin of image: before an understood image's placeholders, last of an image prompt.
    pub boi: u32,
    /// End of image, after an understood image's placeholders (when the tokenizer has it).
    pub eoi: Option<u32>,
    /// The image placeholder (`image_token_id`) an image's features replace.
    pub image: u32,
}

/// A loaded Janus checkpoint: the model, its processor and generation settings, the special
/// ids and the tokenizer.
pub struct JanusBackend {
    model: JanusModel,
    pre: JanusPreprocessorConfig,
    gen: GenerationConfigJson,
    ids: SpecialIds,
    tokenizer: Option<any2any_core::tokenizers::Tokenizer>,
    name: String,
}

/// `model_type: "janus"` (HF layout).
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("model_type").and_then(|v| v.as_str()) == Some("janus")
}

/// Registry entry point.
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(JanusBackend::load(files, opts)?))
}

use any2any_core::loading::tokenize as piece_ids;

impl JanusBackend {
    /// Loads a checkpoint in the HF layout (config.json, safetensors, tokenizer.json,
    /// preprocessor_config.json and generation_config.json where present) with `opts`' dtype
    /// and device; checks that the special ids lie inside the vocabulary.
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let cfg: JanusConfig = any2any_core::loading::read_json(&files.config)?;
        let pre: JanusPreprocessorConfig = ModelFiles::optional_json(&files.preprocessor_config)?;
        if let Some(p) = &files.preprocessor_config {
            let (r, m, s) = (pre.rescale_factor, pre.image_mean, pre.image_std);
            any2any_core::imageops::check_normalization(p, r, m, s)?;
        }
        let gen: GenerationConfigJson = ModelFiles::optional_json(&files.generation_config)?;
        let tokenizer = files.load_tokenizer()?;
        // the shape-deciding values, checked up front so the error names the file
        let in_config = |e: any2any_core::candle_core::Error| Error::Config {
            path: files.config.clone(),
            msg: e.to_string(),
        };
        cfg.vq_config.validate().map_err(in_config)?;
        cfg.vision_config.validate().map_err(in_config)?;
        let vb = files.var_builder(opts.dtype(), &opts.device)?;
        let model = JanusModel::load(vb, &cfg)?;
        let tid = |s: &str| tokenizer.as_ref().and_then(|t| t.token_to_id(s));
        let gen_id =
            |v: &Option<any2any_core::loading::TokenIds>| v.as_ref().and_then(|t| t.first());
        let ids = SpecialIds {
            bos: gen_id(&gen.bos_token_id)
                .or_else(|| tid("<｜begin▁of▁sentence｜>"))
                .unwrap_or(100000),
            eos: gen_id(&gen.eos_token_id)
                .or_else(|| tid("<｜end▁of▁sentence｜>"))
                .unwrap_or(100001),
            pad: gen_id(&gen.pad_token_id)
                .or_else(|| tid("<｜▁pad▁｜>"))
                .unwrap_or(100002),
            boi: gen
                .generation_kwargs
                .get("boi_token_id")
                .and_then(|v| v.as_u64())
                .map(|v| v as u32)
                .or_else(|| tid("<begin_of_image>"))
                .unwrap_or(100016),
            eoi: tid("<end_of_image>"),
            image: cfg.image_token_id,
        };
        let vocab = model.backbone_cfg.vocab_size as u32;
        for (name, id) in [
            ("bos", ids.bos),
            ("eos", ids.eos),
            ("pad", ids.pad),
            ("boi", ids.boi),
            ("image_token_id", ids.image),
        ] {
            if id >= vocab {
                return Err(Error::Config {
                    path: files.config.clone(),
                    msg: format!("{name} token id {id} is outside the vocabulary ({vocab})"),
                });
            }
        }
        Ok(Self {
            model,
            pre,
            gen,
            ids,
            tokenizer,
            name: files.name.clone(),
        })
    }

    /// The model's weights.
    pub fn model(&self) -> &JanusModel {
        &self.model
    }

    /// The image processor settings (preprocessor_config.json, or the HF defaults).
    pub fn preprocessor(&self) -> &JanusPreprocessorConfig {
        &self.pre
    }

    /// The generation defaults (generation_config.json, or none).
    pub fn generation_config(&self) -> &GenerationConfigJson {
        &self.gen
    }

    /// The special token ids in use.
    pub fn special_ids(&self) -> SpecialIds {
        self.ids
    }

    fn device(&self) -> &Device {
        self.model.decoder.device()
    }

    fn vision_size(&self) -> u32 {
        self.model.cfg.vision_config.image_size as u32
    }

    /// Normalised pixels `[1, 3, S, S]` of one image. Raw mode requires the input resolution.
    fn pixels(&self, img: &ImageInput, raw: bool) -> Result<Tensor> {
        let s = self.vision_size();
        let img = if raw {
            if img.width() != s || img.height() != s {
                return Err(Error::invalid(
                    "image",
                    format!(
                        "{}×{} image with raw ids: the model's input resolution is {s}×{s}",
                        img.width(),
                        img.height()
                    ),
                ));
            }
            img.pixels.clone()
        } else {
            let size = self.pre.size.as_ref().map_or(s, |z| z.height.max(z.width));
            let out = imageops::resize_long_side_and_pad(
                &img.pixels,
                size,
                self.pre.min_size,
                self.pre.background(),
            );
            if out.width() != s {
                imageops::resize_long_side_and_pad(
                    &out,
                    s,
                    self.pre.min_size,
                    self.pre.background(),
                )
            } else {
                out
            }
        };
        let (mean, std) = self.pre.mean_std();
        Ok(
            imageops::normalize(&img, self.pre.rescale_factor, mean, std, self.device())?
                .unsqueeze(0)?,
        )
    }

    /// Renders a request into ids (and its images, in order).
    fn render<'r>(&self, req: &'r Request) -> Result<(Vec<u32>, Vec<&'r ImageInput>)> {
        let tok = self.tokenizer.as_ref();
        let images = req.images();
        if req.raw {
            let mut ids = Vec::new();
            for s in &req.segments {
                match s {
                    Segment::TextIds(v) => ids.extend_from_slice(v),
                    Segment::Text(t) => ids.extend(piece_ids(tok, t)?),
                    Segment::Image(_) => {}
                    other => return Err(unsupported_segment(other)),
                }
            }
            return Ok((ids, images));
        }
        let n = self.model.num_image_tokens();
        let mut text = String::new();
        let mut ids = vec![self.ids.bos];
        let flush = |text: &mut String, ids: &mut Vec<u32>| -> Result<()> {
            if !text.is_empty() {
                ids.extend(piece_ids(tok, text)?);
                text.clear();
            }
            Ok(())
        };
        if req.want != Modality::Image {
            text.push_str(DEFAULT_SYSTEM_PROMPT);
        }
        text.push_str("<|User|>: ");
        for s in &req.segments {
            match s {
                Segment::Text(t) => text.push_str(t),
                Segment::TextIds(v) => {
                    flush(&mut text, &mut ids)?;
                    ids.extend_from_slice(v);
                }
                Segment::Image(_) => {
                    flush(&mut text, &mut ids)?;
                    ids.push(self.ids.boi);
                    ids.extend(std::iter::repeat_n(self.ids.image, n));
                    if let Some(eoi) = self.ids.eoi {
                        ids.push(eoi);
                    }
                    text.push('\n');
                }
                other => return Err(unsupported_segment(other)),
            }
        }
        text.push_str("\n\n<|Assistant|>:");
        flush(&mut text, &mut ids)?;
        if req.want == Modality::Image {
            ids.push(self.ids.boi);
        }
        Ok((ids, images))
    }

    /// Input embeddings `[1, L, D]` of one prompt, image features scattered into its
    /// `image_token_id` positions in order.
    fn embed_prompt(&self, ids: &[u32], images: &[&ImageInput], raw: bool) -> Result<Tensor> {
        let vocab = self.model.backbone_cfg.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            return Err(Error::invalid(
                "ids",
                format!("token id {bad} is outside the vocabulary ({vocab})"),
            ));
        }
        let dev = self.device();
        let t = Tensor::new(ids, dev)?;
        let emb = self.model.decoder.embed(&t)?; // [L, D]
        let slots: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, &i)| i == self.ids.image)
            .map(|(p, _)| p)
            .collect();
        let n = self.model.num_image_tokens();
        if slots.len() != images.len() * n {
            return Err(Error::invalid(
                "image",
                format!(
                    "the prompt has {} image placeholder tokens (id {}) but {} image(s) × {n} features were given",
                    slots.len(),
                    self.ids.image,
                    images.len()
                ),
            ));
        }
        if images.is_empty() {
            return Ok(emb.unsqueeze(0)?);
        }
        let px = images
            .iter()
            .map(|i| self.pixels(i, raw))
            .collect::<Result<Vec<_>>>()?;
        let feats = self.model.image_features(&Tensor::cat(&px, 0)?)?; // [I, N, D]
        let d = emb.dim(1)?;
        let feats = feats.reshape((images.len() * n, d))?;
        Ok(scatter_rows(&emb, &slots, &feats)?.unsqueeze(0)?)
    }

    fn sampling(&self, p: &any2any_core::GenerationParams, want: Modality) -> SamplingParams {
        let temperature = if want == Modality::Image { 1.0 } else { 0.0 };
        SamplingParams::from_params(
            p,
            SamplingParams {
                temperature,
                ..SamplingParams::greedy()
            },
        )
    }

    fn generate_text(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let mut rows = Vec::new();
        for r in reqs {
            let (ids, images) = self.render(r)?;
            let e = self.embed_prompt(&ids, &images, r.raw)?.squeeze(0)?;
            rows.extend(std::iter::repeat_n(e, r.num_outputs));
        }
        let Some(first) = reqs.first() else {
            return Ok(Vec::new());
        };
        TextRun {
            decoder: &self.model.decoder,
            lm_head: &self.model.lm_head,
            sampling: self.sampling(&first.params, Modality::Text),
            default_max_new: self.gen.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
            stop: &[self.ids.eos],
            tokenizer: self.tokenizer.as_ref(),
            length_penalty: 1.0,
        }
        .run(&rows, reqs, hooks, t0)
    }

    /// The unconditional stream of the reference: every token but BOS and BOI becomes pad.
    pub fn uncond_ids(&self, ids: &[u32]) -> Vec<u32> {
        ids.iter()
            .map(|&i| {
                if i == self.ids.bos || i == self.ids.boi {
                    i
                } else {
                    self.ids.pad
                }
            })
            .collect()
    }

    /// Generates image codes `[rows, N]` (request-major, `num_outputs` rows per request).
    pub fn generate_codes(
        &self,
        reqs: &[&Request],
        hooks: &mut Hooks,
    ) -> Result<(Tensor, Timings)> {
        let t0 = Instant::now();
        let p = &reqs[0].params;
        let w = p.cfg.or(self.gen.guidance_scale).unwrap_or(DEFAULT_CFG);
        let guidance = (w != 1.0).then(|| Guidance::two_stream(w, GuidanceSpace::Logits));
        let pipe = LogitsPipeline::new(guidance, self.sampling(p, Modality::Image));
        let mut cond = Vec::new();
        let mut uncond = Vec::new();
        for r in reqs {
            let (ids, images) = self.render(r)?;
            if !images.is_empty() {
                return Err(Error::invalid(
                    "image",
                    "Janus cannot condition image generation on an image",
                ));
            }
            let c = self.embed_prompt(&ids, &[], r.raw)?.squeeze(0)?;
            let u = self
                .embed_prompt(&self.uncond_ids(&ids), &[], r.raw)?
                .squeeze(0)?;
            cond.extend(std::iter::repeat_n(c, r.num_outputs));
            uncond.extend(std::iter::repeat_n(u, r.num_outputs));
        }
        // Stream-major rows: [cond…; uncond…].
        let rows: Vec<RowInput> = if pipe.streams() == 2 {
            cond.iter().chain(&uncond).map(RowInput::Embeds).collect()
        } else {
            cond.iter().map(RowInput::Embeds).collect()
        };
        let n = self.model.num_image_tokens();
        let (mut batch, hidden) = RowBatch::prefill(&self.model.decoder, &rows, n)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let mut noise = hooks.batch_noise(&any2any_core::decode::noise_parts(reqs));
        let t1 = Instant::now();
        let g = self.model.image_grid();
        let code_of = |id: u32| Some(id);
        let mut lp = CodeLoop::new(&pipe, n);
        lp.preview = Some(((g, g), &code_of));
        lp.speculative = reqs.first().and_then(|r| r.params.speculative);
        lp.row_len = Some(g);
        let codes = lp.run(
            &mut batch,
            &ImageHead(&self.model),
            hidden,
            &mut NoConstraint,
            &mut noise,
            hooks,
        )?;
        Ok((
            codes,
            Timings {
                prefill_s,
                decode_s: t1.elapsed().as_secs_f64(),
                steps: n,
                image_decode_s: 0.0,
                total_s: 0.0,
            },
        ))
    }

    fn generate_images(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let (codes, mut timings) = self.generate_codes(reqs, hooks)?;
        let g = self.model.image_grid();
        let t1 = Instant::now();
        let pixels = hooks.each_row("vq decode", &codes, |c| {
            Ok(self.model.vq.decode_codes(c, g, g)?)
        })?;
        let images = imageops::to_images(&pixels)?;
        timings.image_decode_s = t1.elapsed().as_secs_f64();
        timings.total_s = t0.elapsed().as_secs_f64();
        let codes = codes.to_dtype(DType::U32)?.to_vec2::<u32>()?;
        Ok(images
            .into_iter()
            .zip(codes)
            .map(|(image, codes)| Output {
                segments: vec![Generated::Image {
                    image,
                    codes: Some(codes),
                    grid: Some((g, g)),
                }],
                timings: timings.clone(),
            })
            .collect())
    }
}

/// The image-generation ends of a step: the generation head's logits, the code embeddings
/// (embedding + aligner) in.
struct ImageHead<'a>(&'a JanusModel);

impl Head for ImageHead<'_> {
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.0.gen_head.forward(hidden)?.to_dtype(DType::F32)?)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.0.code_embeddings(ids)
    }
}

fn unsupported_segment(s: &Segment) -> Error {
    Error::invalid(
        "input",
        format!("Janus does not take {} segments", s.kind()),
    )
}

impl Backend for JanusBackend {
    fn info(&self) -> ModelInfo {
        let g = self.model.image_grid();
        let f = self.model.vq.downsample_factor();
        ModelInfo::of_decoder(
            "janus",
            format!("{} (HF transformers Janus layout)", self.name),
            &self.directions(),
            &self.model.decoder,
            (g, g),
            f,
        )
    }

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        let text = vec![Temperature, TopK, TopP, MaxNewTokens, NumBeams];
        Capabilities {
            family: "janus",
            directions: vec![
                (Direction::TextToText, text.clone()),
                (Direction::ImageToText, text),
                (
                    Direction::TextToImage,
                    vec![Temperature, TopK, TopP, Cfg, Speculative],
                ),
            ],
            edits: Vec::new(),
        }
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
        let x = self.embed_prompt(ids, &imgs, true)?;
        last_logits(&self.model.decoder, &self.model.lm_head, &x)
    }

    fn decode_codes(&self, codes: &[u32], height: usize, width: usize) -> Result<image::RgbImage> {
        any2any_core::backend::check_code_grid(
            codes,
            height,
            width,
            self.model.cfg.vq_config.num_embeddings,
        )?;
        let t = Tensor::new(codes, self.device())?.unsqueeze(0)?;
        let px = self.model.vq.decode_codes(&t, height, width)?;
        imageops::to_images(&px)?
            .pop()
            .ok_or_else(|| Error::invalid("codes", "decoder returned no image"))
    }

    fn tokenizer(&self) -> Option<&any2any_core::tokenizers::Tokenizer> {
        self.tokenizer.as_ref()
    }
}
