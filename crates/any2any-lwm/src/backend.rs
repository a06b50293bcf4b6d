//! LWM behind the `Backend` trait, with the official scripts' prompts and sampling:
//!
//! * **text→image** (`lwm/vision_generation.py`): cond `"<s>You are a helpful assistant. USER:
//!   Generate an image of {prompt} ASSISTANT: <vision>"` and uncond `"<s><vision>"`, each cut to
//!   its last 128 tokens; `[cond, uncond]` rows; 257 vision tokens: CFG `u + w·(c − u)` on raw
//!   `vision_head` logits (w 5, `run_sample_image.sh`), temperature 1, top-k 8192 over the 8448
//!   vision ids, a Gumbel-max draw (`jax.random.categorical`), the drawn id fed to both rows
//!   through `vte`; the 257th token is forced to end-of-frame 8192; the first 256 are the 16×16
//!   codes (ids past the codebook decode as its last code, as JAX's gather clamps them).
//! * **image→text** (`lwm/vision_chat.py`): `"<s>You are a helpful assistant. USER:
//!   {question}\n"`, `"<vision>"`, the image's 256 codes + end-of-vision 8193, `"</vision>"`,
//!   `" ASSISTANT:"`, each piece tokenized on its own (LWM's training-time tokenizer: no automatic
//!   BOS; `<s>` is the BOS token); the codes and 8193 embed through `vte`. The image: PIL-bicubic
//!   resize of the short side to 16·f (256 px), centre crop (Pillow's rounding), `x/127.5 − 1`.
//! * **text→text**: `"<s>You are a helpful assistant. USER: {prompt} ASSISTANT:"` in one piece.
//! * Text sampling: HF Flax `generate` as the chat script calls it, temperature 0.2 and the
//!   implicit top-k 50, Gumbel-max draws; stop at `</s>`; 128 new tokens by default.
//!   `--temperature 0` is greedy.
//!
//! Several prompts run as one batch (rows left-padded). Video frames (several images in a
//! prompt, or `n_frames > 1` out) are refused.

use crate::config::{ConvertedConfig, LwmConfig};
use crate::convert::{is_release, read_release};
use crate::model::{rows, to_u8_hwc, LwmModel, Vqgan, EOF, EOV};
use any2any_core::backend::{Backend, Capabilities, ModelInfo, Param};
use any2any_core::candle_core::{Device, Tensor};
use any2any_core::candle_nn::VarBuilder;
use any2any_core::decode::{
    noise_parts, text_budget, text_segment, Allowed, CodeLoop, Constraint, RowBatch, RowInput,
    TextLoop, TokenAction,
};
use any2any_core::edit::pil_resize_bicubic;
use any2any_core::loading::{read_json, LoadOptions, ModelFiles};
use any2any_core::sampling::{DrawRule, Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any_core::tokenizers::Tokenizer;
use any2any_core::{
    Direction, Error, Generated, Hooks, ImageInput, Modality, Output, Request, Result, Segment,
    Timings,
};
use std::time::Instant;

/// Vision tokens of one frame: 256 codes and the end-of-frame token.
pub const TOKENS_PER_FRAME: usize = 257;
/// Side of a frame's code grid.
pub const GRID: usize = 16;
/// The image script's guidance scale.
pub const DEFAULT_CFG: f32 = 5.0;
/// The image script's top-k (over the 8448 vision ids: the spare ids stay drawable).
pub const DEFAULT_IMAGE_TOP_K: usize = 8192;
/// The chat script's temperature.
pub const DEFAULT_TEXT_TEMPERATURE: f32 = 0.2;
/// The top-k HF `GenerationConfig` applies when none is given.
pub const DEFAULT_TEXT_TOP_K: usize = 50;
/// New text tokens by default (the chat script's block size).
pub const DEFAULT_MAX_NEW_TOKENS: usize = 128;
/// Image prompts are cut to their last this many tokens (`max_length=128`, left truncation).
pub const IMAGE_PROMPT_MAX: usize = 128;

const SYSTEM: &str = "<s>You are a helpful assistant. USER: ";

/// A loaded LWM checkpoint.
pub struct LwmBackend {
    model: LwmModel,
    vqgan: Vqgan,
    tokenizer: Option<Tokenizer>,
    name: String,
    layout: &'static str,
}

/// A converted directory: `config.json` with `model_type: "lwm"`.
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("model_type").and_then(|v| v.as_str()) == Some("lwm")
}

/// Registry entry point (either layout).
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(LwmBackend::load(files, opts)?))
}

fn unsupported_segment(s: &Segment) -> Error {
    Error::invalid("input", format!("LWM does not take {} segments", s.kind()))
}

fn video_refused(n: usize) -> Error {
    Error::Unsupported {
        family: "lwm".into(),
        direction: format!(
            "{n} images in one prompt (video frames in are a follow-up: one image per prompt)"
        ),
        supported: "text→text, image→text (one image), text→image (one frame)".into(),
    }
}

/// Keeps the last `max` ids (left truncation).
fn last_n(mut ids: Vec<u32>, max: usize) -> Vec<u32> {
    if ids.len() > max {
        ids.drain(..ids.len() - max);
    }
    ids
}

/// Python's `round` (half to even) of a multiple of 0.5 given as twice its value.
fn round_half_even(twice: i64) -> i64 {
    if twice % 2 == 0 {
        twice / 2
    } else {
        let lo = (twice - 1).div_euclid(2);
        if lo % 2 == 0 {
            lo
        } else {
            lo + 1
        }
    }
}

impl LwmBackend {
    /// Loads the release layout ([`crate::resolve_dir`]) or a converted directory with `opts`'
    /// dtype and device.
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let dtype = opts.dtype();
        let dev = &opts.device;
        let (cfg, vq_cfg, vb, layout): (LwmConfig, _, VarBuilder, _) = if is_release(files) {
            let rel = read_release(&files.dir, dtype, dtype)?;
            let vb = VarBuilder::from_tensors(rel.tensors, dtype, dev);
            (
                rel.cfg,
                rel.vqgan,
                vb,
                "JAX release: params + vqgan + tokenizer.model",
            )
        } else {
            let c: ConvertedConfig = read_json(&files.config)?;
            let vb = files.var_builder(dtype, dev)?;
            (
                c.llm,
                c.vqgan,
                vb,
                "converted: config.json + model.safetensors",
            )
        };
        let what = files.config.display().to_string();
        let model = LwmModel::load(vb.clone(), &cfg, &what)?;
        let vqgan = Vqgan::load(vb.pp("vqgan"), &vq_cfg)?;
        let tokenizer = match &files.tokenizer {
            Some(_) => files.load_tokenizer()?,
            None => crate::tokenizer::load(&files.dir)?,
        };
        for (name, id) in [
            ("bos_token_id", cfg.bos_token_id),
            ("eos_token_id", cfg.eos_token_id),
        ] {
            if id as usize >= cfg.vocab_size {
                return Err(Error::Config {
                    path: files.config.clone(),
                    msg: format!("{name} {id} is outside the vocabulary ({})", cfg.vocab_size),
                });
            }
        }
        Ok(Self {
            model,
            vqgan,
            tokenizer,
            name: files.name.clone(),
            layout,
        })
    }

    /// The LLM.
    pub fn model(&self) -> &LwmModel {
        &self.model
    }
    /// The VQGAN.
    pub fn vqgan(&self) -> &Vqgan {
        &self.vqgan
    }

    fn device(&self) -> &Device {
        self.model.decoder.device()
    }

    /// Token ids of `text` (no automatic BOS; `<s>` in the text is BOS).
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        any2any_core::loading::tokenize(self.tokenizer.as_ref(), text)
    }

    /// Side of the model's input/output images: 16 codes × the VQGAN's factor.
    pub fn image_side(&self) -> usize {
        GRID * self.vqgan.factor()
    }

    /// `vision_chat._process_frame`: short side resized (PIL bicubic) to the image side, centre
    /// crop, `x / 127.5 − 1`; `[1, 3, S, S]` f32.
    pub fn pixels(&self, img: &ImageInput) -> Result<Tensor> {
        let s = self.image_side() as u64;
        let (w, h) = (img.pixels.width() as u64, img.pixels.height() as u64);
        if w == 0 || h == 0 {
            return Err(Error::invalid("image", "an empty image"));
        }
        let (nw, nh) = if w < h {
            (s, s * h / w)
        } else {
            (s * w / h, s)
        };
        let resized = if (nw, nh) == (w, h) {
            img.pixels.clone()
        } else {
            pil_resize_bicubic(&img.pixels, nw as u32, nh as u32)?
        };
        // Pillow's crop rounds the float box with Python's round
        let left = round_half_even(nw as i64 - s as i64) as u32;
        let top = round_half_even(nh as i64 - s as i64) as u32;
        let crop = image::imageops::crop_imm(&resized, left, top, s as u32, s as u32).to_image();
        let data: Vec<f32> = crop
            .as_raw()
            .iter()
            .map(|&b| b as f32 / 127.5 - 1.0)
            .collect();
        let t = Tensor::from_vec(data, (s as usize, s as usize, 3), self.device())?;
        Ok(t.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
    }

    /// The 256 codes of an image.
    pub fn image_codes(&self, img: &ImageInput) -> Result<Vec<u32>> {
        let px = self.pixels(img)?;
        let codes = self.vqgan.encode(&px)?;
        Ok(rows(&codes)?.pop().unwrap_or_default())
    }

    /// The ids and vision mask of a text-out request (see the module docs).
    pub fn chat_prompt(&self, req: &Request) -> Result<(Vec<u32>, Vec<bool>)> {
        let mut text = String::new();
        let mut given_ids = Vec::new();
        let mut images: Vec<Vec<u32>> = Vec::new();
        for s in &req.segments {
            match s {
                Segment::Text(t) => text.push_str(t),
                Segment::TextIds(v) => given_ids.extend_from_slice(v),
                Segment::Image(img) => images.push(self.image_codes(img)?),
                Segment::ImageCodes {
                    codes,
                    height,
                    width,
                } => {
                    if (*height, *width) != (GRID, GRID) {
                        return Err(Error::invalid(
                            "codes",
                            format!("a {height}×{width} code grid (LWM frames are {GRID}×{GRID})"),
                        ));
                    }
                    images.push(codes.clone());
                }
                other => return Err(unsupported_segment(other)),
            }
        }
        if images.len() > 1 {
            return Err(video_refused(images.len()));
        }
        if req.raw {
            if !images.is_empty() {
                return Err(Error::invalid(
                    "raw-ids",
                    "raw LWM ids are text ids; an image goes through the chat template",
                ));
            }
            let n = given_ids.len();
            return Ok((given_ids, vec![false; n]));
        }
        if !given_ids.is_empty() {
            return Err(Error::invalid(
                "raw-ids",
                "token ids without --raw-ids: give text, or raw ids alone",
            ));
        }
        let Some(codes) = images.pop() else {
            let ids = self.tokens(&format!("{SYSTEM}{text} ASSISTANT:"))?;
            let n = ids.len();
            return Ok((ids, vec![false; n]));
        };
        let mut ids = self.tokens(&format!("{SYSTEM}{text}\n"))?;
        ids.extend(self.tokens("<vision>")?);
        let start = ids.len();
        ids.extend(codes);
        ids.push(EOV);
        let end = ids.len();
        ids.extend(self.tokens("</vision>")?);
        ids.extend(self.tokens(" ASSISTANT:")?);
        let mask = (0..ids.len()).map(|i| (start..end).contains(&i)).collect();
        Ok((ids, mask))
    }

    /// The conditioned and unconditioned ids of a text→image request.
    pub fn image_prompts(&self, req: &Request) -> Result<(Vec<u32>, Vec<u32>)> {
        let mut text = String::new();
        let mut ids = Vec::new();
        for s in &req.segments {
            match s {
                Segment::Text(t) => text.push_str(t),
                Segment::TextIds(v) => ids.extend_from_slice(v),
                Segment::Image(_) | Segment::ImageCodes { .. } => {
                    return Err(Error::Unsupported {
                        family: "lwm".into(),
                        direction: "image→image (a video continuation is a follow-up)".into(),
                        supported: "text→text, image→text, text→image".into(),
                    })
                }
                other => return Err(unsupported_segment(other)),
            }
        }
        let uncond = self.tokens("<s><vision>")?;
        if req.raw {
            return Ok((ids, uncond));
        }
        let cond = self.tokens(&format!(
            "{SYSTEM}Generate an image of {text} ASSISTANT: <vision>"
        ))?;
        Ok((
            last_n(cond, IMAGE_PROMPT_MAX),
            last_n(uncond, IMAGE_PROMPT_MAX),
        ))
    }

    fn check_ids(&self, ids: &[u32], mask: &[bool]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::invalid("prompt", "an empty prompt"));
        }
        for (&id, &v) in ids.iter().zip(mask) {
            let vocab = if v {
                self.model.cfg.vision_vocab_size
            } else {
                self.model.cfg.vocab_size
            };
            if id as usize >= vocab {
                return Err(Error::invalid(
                    "ids",
                    format!("token id {id} is outside the vocabulary ({vocab})"),
                ));
            }
        }
        Ok(())
    }

    fn text_pipe(&self, p: &any2any_core::GenerationParams) -> LogitsPipeline {
        let s = SamplingParams::from_params(
            p,
            SamplingParams {
                temperature: DEFAULT_TEXT_TEMPERATURE,
                top_k: Some(DEFAULT_TEXT_TOP_K),
                top_p: None,
                min_p: None,
            },
        );
        LogitsPipeline::new(None, s).with_draw_rule(DrawRule::GumbelMax)
    }

    /// Text for a group of requests: every output of every request is a row of one batch.
    fn generate_text(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let prompts = reqs
            .iter()
            .map(|r| self.chat_prompt(r))
            .collect::<Result<Vec<_>>>()?;
        let mut embeds = Vec::new();
        for ((ids, mask), r) in prompts.iter().zip(reqs) {
            self.check_ids(ids, mask)?;
            let e = self.model.embed_prompt(ids, mask)?;
            embeds.extend(std::iter::repeat_n(e, r.num_outputs));
        }
        let rows_in: Vec<RowInput> = embeds.iter().map(RowInput::Embeds).collect();
        let p = &reqs[0].params;
        let longest = prompts.iter().map(|p| p.0.len()).max().unwrap_or(0);
        let max_new = text_budget(
            p.max_new_tokens,
            DEFAULT_MAX_NEW_TOKENS,
            longest,
            self.model.backbone_cfg.max_position_embeddings,
        )?;
        let (mut batch, hidden) = RowBatch::prefill(&self.model.decoder, &rows_in, max_new)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let pipe = self.text_pipe(p);
        let mut noise = hooks.batch_noise(&noise_parts(reqs));
        let stop = [self.model.cfg.eos_token_id];
        let out = TextLoop::new(&pipe, max_new, &stop)
            .tokenizer(self.tokenizer.as_ref())
            .run(
                &mut batch,
                &self.model.text_head(),
                hidden,
                &mut noise,
                hooks,
                &mut |_, _| TokenAction::Continue,
            )?;
        let total = t0.elapsed().as_secs_f64();
        out.into_iter()
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

    /// The vision-token pipeline of an image request.
    fn image_pipe(&self, p: &any2any_core::GenerationParams) -> LogitsPipeline {
        let w = p.cfg.unwrap_or(DEFAULT_CFG);
        let guidance = (w != 1.0).then(|| Guidance::two_stream(w, GuidanceSpace::Logits));
        let s = SamplingParams::from_params(
            p,
            SamplingParams {
                temperature: 1.0,
                top_k: Some(DEFAULT_IMAGE_TOP_K),
                top_p: None,
                min_p: None,
            },
        );
        LogitsPipeline::new(guidance, s).with_draw_rule(DrawRule::GumbelMax)
    }

    /// The vision ids (257 per image, the last the forced end-of-frame) of a batch of image
    /// prompts `(cond, uncond)`, each its own output row; one loop for all.
    pub fn generate_vision(
        &self,
        prompts: &[(Vec<u32>, Vec<u32>)],
        pipe: &LogitsPipeline,
        noise: &mut dyn any2any_core::NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Vec<Vec<u32>>> {
        let guided = pipe.streams() == 2;
        let mut rows_in: Vec<RowInput> = prompts.iter().map(|p| RowInput::Ids(&p.0)).collect();
        if guided {
            rows_in.extend(prompts.iter().map(|p| RowInput::Ids(&p.1)));
        }
        for (c, u) in prompts {
            self.check_ids(c, &vec![false; c.len()])?;
            self.check_ids(u, &vec![false; u.len()])?;
        }
        let (mut batch, hidden) =
            RowBatch::prefill(&self.model.decoder, &rows_in, TOKENS_PER_FRAME)?;
        let mut forced = ForcedEof::new(self.model.cfg.vision_vocab_size, self.device())?;
        let mut lp = CodeLoop::new(pipe, TOKENS_PER_FRAME);
        lp.first_output = hooks.output_base();
        let ids = lp.run(
            &mut batch,
            &self.model.vision_head(),
            hidden,
            &mut forced,
            noise,
            hooks,
        )?;
        rows(&ids)
    }

    /// The images of a group of requests: every output of every request is a row of one loop.
    fn generate_images(&self, reqs: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let p = &reqs[0].params;
        let pipe = self.image_pipe(p);
        let mut prompts = Vec::new();
        for r in reqs {
            let pr = self.image_prompts(r)?;
            prompts.extend(std::iter::repeat_n(pr, r.num_outputs));
        }
        let mut noise = hooks.batch_noise(&noise_parts(reqs));
        let toks = self.generate_vision(&prompts, &pipe, &mut noise, hooks)?;
        let decode_s = t0.elapsed().as_secs_f64();
        toks.into_iter()
            .map(|t| {
                let t1 = Instant::now();
                let codes: Vec<u32> = t[..GRID * GRID].to_vec();
                let image = self.decode_codes(&codes, GRID, GRID)?;
                Ok(Output {
                    timings: Timings {
                        prefill_s: 0.0,
                        decode_s,
                        steps: t.len(),
                        image_decode_s: t1.elapsed().as_secs_f64(),
                        total_s: t0.elapsed().as_secs_f64(),
                    },
                    segments: vec![Generated::Image {
                        image,
                        codes: Some(codes),
                        grid: Some((GRID, GRID)),
                    }],
                })
            })
            .collect()
    }

    /// Both heads' last-position logits of ids with their vision mask (`[vocab]`,
    /// `[vision_vocab]`, f32 on the CPU).
    pub fn both_logits(&self, ids: &[u32], mask: &[bool]) -> Result<(Tensor, Tensor)> {
        self.check_ids(ids, mask)?;
        let (t, v) = self.model.last_logits(ids, mask)?;
        Ok((t.to_device(&Device::Cpu)?, v.to_device(&Device::Cpu)?))
    }
}

/// The image loop's rule: any vision id for the 256 codes, then only end-of-frame (the draw of
/// that step still takes its noise, as the reference draws before overwriting it).
struct ForcedEof {
    eof_only: Tensor,
}

impl ForcedEof {
    fn new(vocab: usize, dev: &Device) -> Result<Self> {
        let mut m = vec![f32::NEG_INFINITY; vocab];
        m[EOF as usize] = 0.0;
        Ok(Self {
            eof_only: Tensor::from_vec(m, (1, vocab), dev)?,
        })
    }
}

impl Constraint for ForcedEof {
    fn allowed(&mut self, step: usize) -> Result<Allowed> {
        Ok(if step + 1 == TOKENS_PER_FRAME {
            Allowed::Mask(self.eof_only.clone())
        } else if step >= TOKENS_PER_FRAME {
            Allowed::Done
        } else {
            Allowed::Any
        })
    }
}

impl Backend for LwmBackend {
    fn info(&self) -> ModelInfo {
        ModelInfo::of_decoder(
            "lwm",
            format!("{} ({})", self.name, self.layout),
            &self.directions(),
            &self.model.decoder,
            (GRID, GRID),
            self.vqgan.factor(),
        )
    }

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        let text = vec![Temperature, TopK, TopP, MaxNewTokens];
        Capabilities {
            family: "lwm",
            directions: vec![
                (Direction::TextToText, text.clone()),
                (Direction::ImageToText, text),
                (Direction::TextToImage, vec![Temperature, TopK, TopP, Cfg]),
            ],
            edits: Vec::new(),
        }
    }

    fn generate_group(&self, group: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        if group.first().map(|r| r.want) == Some(Modality::Image) {
            self.generate_images(group, hooks)
        } else {
            self.generate_text(group, hooks)
        }
    }

    fn last_logits(&self, ids: &[u32], images: &[ImageInput]) -> Result<Tensor> {
        if !images.is_empty() {
            return Err(Error::invalid(
                "image",
                "LWM raw-id logits take text ids only (an image prompt goes through the chat template)",
            ));
        }
        let mask = vec![false; ids.len()];
        Ok(self.both_logits(ids, &mask)?.0)
    }

    fn decode_codes(&self, codes: &[u32], height: usize, width: usize) -> Result<image::RgbImage> {
        if height == 0 || width == 0 || codes.len() != height * width {
            return Err(Error::invalid(
                "codes",
                format!("{} codes for a {height}×{width} grid", codes.len()),
            ));
        }
        if let Some(&bad) = codes
            .iter()
            .find(|&&c| c as usize >= self.model.cfg.vision_vocab_size)
        {
            return Err(Error::invalid(
                "codes",
                format!(
                    "code {bad} is outside the vision vocabulary ({})",
                    self.model.cfg.vision_vocab_size
                ),
            ));
        }
        let t = Tensor::from_slice(codes, (1, codes.len()), self.device())?;
        let px = self.vqgan.decode(&t, height, width)?;
        let (_, _, h, w) = px.dims4()?;
        let data = to_u8_hwc(&px)?.pop().unwrap_or_default();
        image::RgbImage::from_raw(w as u32, h as u32, data)
            .ok_or_else(|| Error::invalid("codes", "the decoder returned no image"))
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }
}
