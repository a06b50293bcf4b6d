//! Chameleon / Anole behind the `Backend` trait: text→text, image→text, text→image (Anole's
//! 3-stream CFG loop) and interleaved text+image output.

use crate::config::ChameleonConfig;
use crate::vq::{VqDecoder, VqEncoder};
use crate::{original, vq_files};
use any2any_core::backbone::{Decoder, ForwardArgs, MaskKind, RowLayout};
use any2any_core::backend::{Backend, Capabilities, ModelInfo, Param};
use any2any_core::candle_core::{DType, Device, Module, Tensor};
use any2any_core::kv_cache::KvCache;
use any2any_core::loading::{GenerationConfigJson, LoadOptions, ModelFiles};
use any2any_core::nn::Linear;
use any2any_core::noise::NoiseSource;
use any2any_core::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any_core::{
    imageops, Direction, Error, Generated, Hooks, ImageInput, Modality, Output, Request, Result,
    Segment, Timings,
};
use std::time::Instant;

const DEFAULT_MAX_NEW_TOKENS: usize = 256;
/// `chameleon/inference/chameleon.py` `Options.Image.CFG`: text weight 3.0, image weight 1.2.
pub const DEFAULT_CFG_TEXT: f32 = 3.0;
pub const DEFAULT_CFG_IMAGE: f32 = 1.2;
/// Reference image sampling: temperature 0.7, top-p 0.9.
pub const DEFAULT_IMAGE_TEMPERATURE: f32 = 0.7;
pub const DEFAULT_IMAGE_TOP_P: f32 = 0.9;
/// HF `ChameleonImageProcessor`: `x * 0.0078 - 1`.
const RESCALE: f64 = 0.0078;
/// Decoder files looked for next to the checkpoint (taming key names).
pub const DECODER_FILES: [&str; 2] = ["vqgan_decoder.safetensors", "vqgan.safetensors"];

/// `model_type: "chameleon"`.
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("model_type").and_then(|v| v.as_str()) == Some("chameleon")
}

/// Registry entry point.
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(ChameleonBackend::load(files, opts)?))
}

/// A loaded Chameleon checkpoint.
pub struct ChameleonBackend {
    pub cfg: ChameleonConfig,
    pub decoder: Decoder,
    pub lm_head: Linear,
    /// The VQGAN encoder (image input), from `model.vqmodel.*` or the VQGAN files next to the
    /// checkpoint.
    pub encoder: Option<VqEncoder>,
    /// The taming image decoder, when a decoder file sits next to the checkpoint.
    pub vq_decoder: Option<VqDecoder>,
    pub gen: GenerationConfigJson,
    /// `<image>` placeholders per image in a prompt (`image_seq_length`).
    pub image_seq_length: usize,
    /// `[V]` u8: 1 at IMGIMG ids (the text-mode mask of HF's forward).
    image_token_mask: Tensor,
    /// `[1, V]` f32: 0 at IMGIMG ids, −∞ elsewhere (image-mode constraint).
    image_only: Tensor,
    tokenizer: Option<any2any_core::tokenizers::Tokenizer>,
    name: String,
    /// Which on-disk layout it was loaded from (for `info`).
    layout: &'static str,
    /// Lumina-mGPT's image layout, when the checkpoint is one.
    pub lumina: Option<LuminaLayout>,
    /// HF's forward sets image-token logits to `finfo.min` in text mode unless the config says
    /// `mask_image_logits: false` (Lumina-mGPT).
    mask_image_logits: bool,
}

use any2any_core::loading::tokenize as piece_ids;

pub mod lumina;
pub use lumina::LuminaLayout;

/// One row's decoding state: its own KV cache.
struct Stream {
    cache: KvCache,
}

/// Rows decoded together: left-padded, each row with its own positions from 0, never attending
/// to its padding.
struct Rows {
    cache: KvCache,
    layout: RowLayout,
}

impl ChameleonBackend {
    /// Loads the HF layout (config.json) or Meta's original release (params.json, see
    /// [`original`]); the VQGAN decoder comes from the `vqgan` component
    /// ([`vq_files::VQGAN_LAYOUT`]).
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let dtype = opts.dtype();
        let dev = &opts.device;
        let vb = files.var_builder(dtype, dev)?;
        let is_original = original::is_original(files);
        // Lumina-mGPT (HF layout + its own image layout) and HF's `mask_image_logits` flag.
        let mut lumina = None;
        let mut mask_image_logits = true;
        let (cfg, decoder, lm_head, encoder, vq_decoder) = if is_original {
            // Raw consolidated.pth: Meta names at the root, unpermuted q/k (interleaved RoPE).
            let vq = original::load_vq(files, dtype, dev)?;
            let cfg = original::config(files, &vq.config)?;
            let decoder = Decoder::load(vb.clone(), &cfg.backbone)?;
            let head = any2any_core::backbone::lm_head(vb.pp("output"), &cfg.backbone)?;
            (cfg, decoder, head, vq.encoder, vq.decoder)
        } else {
            let raw = files.config_json()?;
            let cfg = ChameleonConfig::from_json(&raw, &files.config)?;
            lumina = LuminaLayout::detect(&raw, &files.name, cfg.vq.resolution).map_err(|e| {
                Error::Config {
                    path: files.config.clone(),
                    msg: e.to_string(),
                }
            })?;
            mask_image_logits = raw
                .get("mask_image_logits")
                .and_then(|x| x.as_bool())
                .unwrap_or(true);
            let decoder = Decoder::load(vb.pp("model"), &cfg.backbone)?;
            let head = any2any_core::backbone::lm_head(vb.pp("lm_head"), &cfg.backbone)?;
            let vq = vq_files::load_vq_component(files, &[], Some(&cfg.vq), dtype, dev)?;
            // The HF conversion keeps the VQ encoder under `model.vqmodel`; a checkpoint without
            // it (Lumina-mGPT may ship the LM alone) takes the encoder of the VQGAN next to it.
            let (encoder, vq_decoder) = match vq {
                Some(v) => (v.encoder, v.decoder),
                None => (None, None),
            };
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
            (cfg, decoder, head, encoder, vq_decoder)
        };
        let lm_head = Linear::new(lm_head)?;
        let gen: GenerationConfigJson = ModelFiles::optional_json(&files.generation_config)?;
        let tokenizer = files.load_tokenizer()?;
        let proc: serde_json::Value = match &files.preprocessor_config {
            Some(p) => any2any_core::loading::read_json(p)?,
            None => {
                let p = files.dir.join("processor_config.json");
                if p.is_file() {
                    any2any_core::loading::read_json(&p)?
                } else {
                    serde_json::json!({})
                }
            }
        };
        let grid = cfg.vq.resolution / cfg.vq.downsample_factor();
        let image_seq_length = proc
            .get("image_seq_length")
            .and_then(|v| v.as_u64())
            .map_or(grid * grid, |v| v as usize);
        let v = cfg.backbone.vocab_size;
        let mut m = vec![0u8; v];
        let mut a = vec![f32::NEG_INFINITY; v];
        for &id in &cfg.vocab.image_ids {
            m[id as usize] = 1;
            a[id as usize] = 0.0;
        }
        Ok(Self {
            image_token_mask: Tensor::from_vec(m, v, dev)?,
            image_only: Tensor::from_vec(a, (1, v), dev)?,
            cfg,
            decoder,
            lm_head,
            encoder,
            vq_decoder,
            gen,
            image_seq_length,
            tokenizer,
            name: files.name.clone(),
            layout: if is_original {
                "original Meta layout: consolidated.pth + tokenizer/"
            } else if lumina.is_some() {
                "Lumina-mGPT layout (HF transformers Chameleon weights)"
            } else {
                "HF transformers Chameleon layout"
            },
            lumina,
            mask_image_logits,
        })
    }

    /// The VQGAN encoder, or an error naming where it is looked for.
    fn vq_encoder(&self) -> Result<&VqEncoder> {
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

    fn device(&self) -> &Device {
        self.decoder.device()
    }

    /// Normalised pixels `[1, 3, S, S]`: shortest edge resized to the VQ resolution (Lanczos),
    /// centre crop, `x·0.0078 − 1`. Raw mode requires the input resolution.
    fn pixels(&self, img: &ImageInput, raw: bool) -> Result<Tensor> {
        let s = self.cfg.vq.resolution as u32;
        let px = &img.pixels;
        let px = if px.width() == s && px.height() == s {
            px.clone()
        } else if raw {
            return Err(Error::invalid(
                "image",
                format!(
                    "raw mode needs a {s}×{s} image, got {}×{}",
                    px.width(),
                    px.height()
                ),
            ));
        } else {
            let (w, h) = (px.width(), px.height());
            let k = s as f64 / w.min(h) as f64;
            let (nw, nh) = (
                ((w as f64 * k).round() as u32).max(s),
                ((h as f64 * k).round() as u32).max(s),
            );
            let r = image::imageops::resize(px, nw, nh, image::imageops::FilterType::Lanczos3);
            image::imageops::crop_imm(&r, (nw - s) / 2, (nh - s) / 2, s, s).to_image()
        };
        let data: Vec<f32> = px
            .as_raw()
            .iter()
            .map(|&u| (u as f64 * RESCALE) as f32 - 1.0)
            .collect();
        let (w, h) = (s as usize, s as usize);
        Ok(Tensor::from_vec(data, (1, h, w, 3), self.device())?.permute((0, 3, 1, 2))?)
    }

    /// Image codes `[h*w]` of one image.
    pub fn encode_image(&self, img: &ImageInput, raw: bool) -> Result<(Vec<u32>, usize, usize)> {
        let (codes, h, w) = self.vq_encoder()?.encode(&self.pixels(img, raw)?)?;
        Ok((codes.squeeze(0)?.to_vec1::<u32>()?, h, w))
    }

    /// Replaces the `<image>` placeholders by the token ids of the images' codes, in order.
    fn effective_ids(&self, ids: &[u32], images: &[&ImageInput], raw: bool) -> Result<Vec<u32>> {
        let vocab = self.cfg.backbone.vocab_size as u32;
        if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
            return Err(Error::invalid(
                "ids",
                format!("token id {bad} is outside the vocabulary ({vocab})"),
            ));
        }
        let ph = self.cfg.vocab.ids.image;
        let slots = ids.iter().filter(|&&i| i == ph).count();
        let n = self.image_seq_length;
        if slots != images.len() * n {
            return Err(Error::invalid(
                "image",
                format!(
                    "the prompt has {slots} image placeholder tokens (id {ph}) but {} image(s) × {n} codes were given",
                    images.len()
                ),
            ));
        }
        let mut fill = Vec::with_capacity(slots);
        for img in images {
            let (codes, _, _) = self.encode_image(img, raw)?;
            if codes.len() != n {
                return Err(Error::invalid(
                    "image",
                    format!("the image encodes to {} codes, not {n}", codes.len()),
                ));
            }
            fill.extend(codes.iter().map(|&c| self.cfg.vocab.code_to_id[c as usize]));
        }
        let mut it = fill.into_iter();
        Ok(ids
            .iter()
            .map(|&i| if i == ph { it.next().unwrap_or(i) } else { i })
            .collect())
    }

    /// Renders a request into ids (with `<image>` placeholders) and its images.
    fn render<'r>(&self, req: &'r Request) -> Result<(Vec<u32>, Vec<&'r ImageInput>)> {
        let tok = self.tokenizer.as_ref();
        let images = req.images();
        let s = &self.cfg.vocab.ids;
        let mut ids = Vec::new();
        if !req.raw {
            ids.push(s.bos);
        }
        for seg in &req.segments {
            match seg {
                Segment::TextIds(v) => ids.extend_from_slice(v),
                Segment::Text(t) => ids.extend(piece_ids(tok, t)?),
                Segment::Image(_) if req.raw => {}
                Segment::Image(_) => {
                    ids.push(s.boi);
                    ids.extend(std::iter::repeat_n(s.image, self.image_seq_length));
                    ids.push(s.eoi);
                }
                other => {
                    return Err(Error::invalid(
                        "input",
                        format!("Chameleon does not take {} segments", other.kind()),
                    ))
                }
            }
        }
        if !req.raw {
            // HF processor: sep appended; the reference image prompt then appends BOI.
            ids.push(s.sep);
            if req.want == Modality::Image {
                ids.push(s.boi);
            }
        }
        if ids.is_empty() {
            return Err(Error::invalid("prompt", "empty prompt"));
        }
        Ok((ids, images))
    }

    /// Feeds `ids` to a stream and returns the last position's raw logits `[1, V]` f32.
    fn feed(&self, st: &mut Stream, ids: &[u32]) -> Result<Tensor> {
        let x = self
            .decoder
            .embed(&Tensor::new(ids, self.device())?.unsqueeze(0)?)?;
        let layout = RowLayout::dense(1);
        let h = self.decoder.forward(
            &x,
            ForwardArgs {
                layout: &layout,
                mask: &MaskKind::Causal,
            },
            &mut st.cache,
        )?;
        let n = ids.len();
        Ok(self
            .lm_head
            .forward(&h.narrow(1, n - 1, 1)?.squeeze(1)?)?
            .to_dtype(DType::F32)?)
    }

    /// Prefills `rows` (left-padded with BOS) with room for `room` more tokens per row; the
    /// batch and the last position's raw logits `[R, V]` f32.
    fn prefill_rows(&self, rows: &[&[u32]], room: usize) -> Result<(Rows, Tensor)> {
        let lens: Vec<usize> = rows.iter().map(|r| r.len()).collect();
        let max = lens.iter().copied().max().unwrap_or(0);
        if max == 0 {
            return Err(Error::invalid("prompt", "empty prompt"));
        }
        let layout = RowLayout::left_padded(&lens);
        let pad = self.cfg.vocab.ids.bos;
        let mut flat = Vec::with_capacity(rows.len() * max);
        for r in rows {
            flat.extend(std::iter::repeat_n(pad, max - r.len()));
            flat.extend_from_slice(r);
        }
        let mut cache = self.decoder.new_cache(rows.len(), max + room)?;
        let x = self
            .decoder
            .embed(&Tensor::from_vec(flat, (rows.len(), max), self.device())?)?;
        let args = ForwardArgs {
            layout: &layout,
            mask: &MaskKind::Causal,
        };
        let h = self.decoder.forward(&x, args, &mut cache)?;
        let logits = self
            .lm_head
            .forward(&h.narrow(1, max - 1, 1)?.squeeze(1)?)?
            .to_dtype(DType::F32)?;
        Ok((Rows { cache, layout }, logits))
    }

    /// Feeds one id per row (`[R]` u32 on the device); the raw logits `[R, V]` f32.
    fn step_rows(&self, rows: &mut Rows, ids: &Tensor) -> Result<Tensor> {
        let x = self.decoder.embed(&ids.unsqueeze(1)?)?;
        let args = ForwardArgs {
            layout: &rows.layout,
            mask: &MaskKind::Causal,
        };
        let h = self.decoder.forward(&x, args, &mut rows.cache)?;
        Ok(self.lm_head.forward(&h.squeeze(1)?)?.to_dtype(DType::F32)?)
    }

    /// The last position's raw logits `[V]` f32 (image mode: no IMGIMG mask) for effective ids.
    pub fn raw_last_logits(&self, ids: &[u32]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::invalid("ids", "no token ids given"));
        }
        let ids = self.effective_ids(ids, &[], true)?;
        let mut st = self.new_stream(ids.len())?;
        Ok(self
            .feed(&mut st, &ids)?
            .squeeze(0)?
            .to_device(&Device::Cpu)?)
    }

    /// The 3-stream guidance of the Anole loop for a text weight (`u + w_image·(img − u) +
    /// w_text·(full − img)` on raw logits).
    pub fn guidance(w_text: f32) -> Guidance {
        Guidance {
            weights: vec![w_text, DEFAULT_CFG_IMAGE],
            space: GuidanceSpace::Logits,
        }
    }

    /// HF's text-mode logits: every IMGIMG entry set to `f32::MIN`.
    pub fn mask_image_logits(&self, logits: &Tensor) -> Result<Tensor> {
        let min = Tensor::full(f32::MIN, logits.shape(), logits.device())?;
        Ok(self
            .image_token_mask
            .unsqueeze(0)?
            .broadcast_as(logits.shape())?
            .where_cond(&min, logits)?)
    }

    /// Text-mode logits: HF's image-token mask unless the config turns it off.
    fn text_logits(&self, logits: &Tensor) -> Result<Tensor> {
        if self.mask_image_logits {
            self.mask_image_logits(logits)
        } else {
            Ok(logits.clone())
        }
    }

    fn new_stream(&self, capacity: usize) -> Result<Stream> {
        let cap = capacity.min(self.cfg.backbone.max_position_embeddings);
        Ok(Stream {
            cache: self.decoder.new_cache(1, cap)?,
        })
    }

    /// The three CFG streams of the reference for a prompt ending in BOI: the full prompt; only
    /// its image tokens, BOS, BOI and EOI; `[BOS, BOI]`.
    pub fn cfg_streams(&self, prompt: &[u32]) -> [Vec<u32>; 3] {
        let s = &self.cfg.vocab.ids;
        let image: Vec<u32> = prompt
            .iter()
            .copied()
            .filter(|&i| i == s.bos || i == s.boi || i == s.eoi || self.cfg.vocab.is_image_token(i))
            .collect();
        [prompt.to_vec(), image, vec![s.bos, s.boi]]
    }

    /// The Anole image loop after a prompt (effective ids) that ends in BOI: `n` image-token ids.
    pub fn generate_image_ids(
        &self,
        prompt: &[u32],
        n: usize,
        params: &any2any_core::GenerationParams,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Vec<u32>> {
        let mut out = self.generate_image_ids_batch(
            std::slice::from_ref(&prompt.to_vec()),
            n,
            params,
            noise,
            hooks,
        )?;
        out.pop()
            .ok_or_else(|| Error::invalid("prompt", "no image was generated"))
    }

    /// The Anole image loop for several prompts (each ending in BOI) in one batch: `n`
    /// image-token ids each. All `streams × prompts` rows run as one left-padded batch, stacked
    /// stream-major (`[full…; image…; uncond…]`) as the guidance mix expects; each row has its
    /// own positions from 0 and never attends to its padding (as the reference's packed
    /// variable-length batch). Each step draws one uniform per prompt, in prompt order; the ids
    /// stay on the device until the end.
    pub fn generate_image_ids_batch(
        &self,
        prompts: &[Vec<u32>],
        n: usize,
        params: &any2any_core::GenerationParams,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Vec<Vec<u32>>> {
        let w_text = params.cfg.unwrap_or(DEFAULT_CFG_TEXT);
        let guidance = (w_text != 1.0).then(|| Self::guidance(w_text));
        let sampling = SamplingParams {
            temperature: params.temperature.unwrap_or(DEFAULT_IMAGE_TEMPERATURE),
            top_k: params.top_k,
            top_p: params.top_p.or(Some(DEFAULT_IMAGE_TOP_P)),
        };
        let pipe = LogitsPipeline::new(guidance, sampling);
        let b = prompts.len();
        if b == 0 || n == 0 {
            return Ok(vec![Vec::new(); b]);
        }
        let streams = pipe.streams();
        let per_prompt: Vec<[Vec<u32>; 3]> = prompts.iter().map(|p| self.cfg_streams(p)).collect();
        let rows: Vec<&[u32]> = (0..streams)
            .flat_map(|s| per_prompt.iter().map(move |p| p[s].as_slice()))
            .collect();
        let max = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let ctx = self.cfg.backbone.max_position_embeddings;
        if max + n > ctx {
            return Err(Error::ContextOverflow {
                len: max,
                max: ctx,
                reserved: n,
            });
        }
        let (mut batch, mut logits) = self.prefill_rows(&rows, n)?;
        let mut drawn = Vec::with_capacity(n);
        for step in 0..n {
            hooks.step("image tokens", step, n)?;
            // [B] ids, fed to every stream of their prompt.
            let next = pipe.sample(&logits, Some(&self.image_only), noise)?;
            drawn.push(next.clone());
            if step + 1 == n {
                break;
            }
            let fed = Tensor::cat(&vec![&next; streams], 0)?;
            logits = self.step_rows(&mut batch, &fed)?;
        }
        hooks.step("image tokens", n, n)?;
        // [n, B] → per prompt.
        let ids = Tensor::stack(&drawn, 0)?.t()?.to_vec2::<u32>()?;
        Ok(ids)
    }

    /// Default image grid: the VQ resolution over the downsample factor.
    pub fn default_grid(&self) -> (usize, usize) {
        let g = self.cfg.vq.resolution / self.cfg.vq.downsample_factor();
        (g, g)
    }

    fn grid_for(&self, n: Option<usize>) -> Result<(usize, usize)> {
        match n {
            None => Ok(self.default_grid()),
            Some(n) => {
                let g = (n as f64).sqrt().round() as usize;
                if g == 0 || g * g != n {
                    return Err(Error::invalid(
                        "max-new-tokens",
                        format!("for Chameleon image output this is the number of image codes and must be a square (e.g. 1024 = 32×32), got {n}"),
                    ));
                }
                Ok((g, g))
            }
        }
    }

    fn image_output(&self, ids: &[u32], grid: (usize, usize)) -> Result<Generated> {
        let codes: Vec<u32> = ids
            .iter()
            .map(|&i| self.cfg.vocab.code_of(i).unwrap_or(0))
            .collect();
        let image = self.decode_codes(&codes, grid.0, grid.1)?;
        Ok(Generated::Image {
            image,
            codes: Some(codes),
            grid: Some(grid),
        })
    }

    fn text_output(&self, ids: Vec<u32>) -> Result<Generated> {
        let text = match &self.tokenizer {
            Some(t) => Some(
                t.decode(&ids, true)
                    .map_err(|e| Error::Tokenizer(e.to_string()))?,
            ),
            None => None,
        };
        Ok(Generated::Text { ids, text })
    }

    /// Text→image for requests that share their parameters: every output of every request is
    /// one prompt of one batched Anole loop (noise from the first request's seed).
    fn generate_images(&self, reqs: &[Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let Some(first) = reqs.first() else {
            return Ok(Vec::new());
        };
        let p = &first.params;
        let grid = self.grid_for(p.max_new_tokens)?;
        let boi = self.cfg.vocab.ids.boi;
        let mut prompts = Vec::new();
        for r in reqs {
            let (ids, images) = self.render(r)?;
            let mut prompt = self.effective_ids(&ids, &images, r.raw)?;
            if prompt.last() != Some(&boi) {
                prompt.push(boi);
            }
            prompts.extend(std::iter::repeat_n(prompt, r.num_outputs));
        }
        let parts: Vec<(u64, usize)> = reqs
            .iter()
            .map(|r| (r.params.seed, r.num_outputs))
            .collect();
        let mut noise = hooks.batch_noise(&parts);
        let n = grid.0 * grid.1;
        let ids = self.generate_image_ids_batch(&prompts, n, p, &mut noise, hooks)?;
        let decode_s = t0.elapsed().as_secs_f64();
        ids.iter()
            .map(|out| {
                let t2 = Instant::now();
                let img = self.image_output(out, grid)?;
                Ok(Output {
                    segments: vec![img],
                    timings: Timings {
                        prefill_s: 0.0,
                        decode_s,
                        steps: out.len(),
                        image_decode_s: t2.elapsed().as_secs_f64(),
                        total_s: t0.elapsed().as_secs_f64(),
                    },
                })
            })
            .collect()
    }

    /// Text for requests that share their parameters: every output is a row of one left-padded
    /// batch (each row its own positions, one uniform per row per step in row order). A row
    /// that opens an image (the model writes BOI) leaves the batch there and goes on alone
    /// through the interleaved loop (the image, then text) with the rest of its budget. Groups
    /// the batch cannot hold (a prompt ending in BOI, a context too short for the padded rows)
    /// run one output at a time.
    fn generate_texts(&self, reqs: &[Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let Some(first) = reqs.first() else {
            return Ok(Vec::new());
        };
        let p = &first.params;
        let s = self.cfg.vocab.ids;
        let ctx = self.cfg.backbone.max_position_embeddings;
        let parts: Vec<(u64, usize)> = reqs
            .iter()
            .map(|r| (r.params.seed, r.num_outputs))
            .collect();
        let mut noise = hooks.batch_noise(&parts);
        let mut prompts = Vec::new();
        for r in reqs {
            let (ids, images) = self.render(r)?;
            let prompt = self.effective_ids(&ids, &images, r.raw)?;
            prompts.extend(std::iter::repeat_n(prompt, r.num_outputs));
        }
        let budget = |len: usize| match p.max_new_tokens {
            Some(n) => n,
            None => self
                .gen
                .max_new_tokens
                .unwrap_or(DEFAULT_MAX_NEW_TOKENS)
                .min(ctx.saturating_sub(len)),
        };
        let budgets: Vec<usize> = prompts.iter().map(|q| budget(q.len())).collect();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let most = budgets.iter().copied().max().unwrap_or(0);
        let batchable = prompts.len() > 1
            && longest + most <= ctx
            && prompts.iter().all(|q| q.last() != Some(&s.boi))
            && budgets.iter().all(|&b| b > 0);
        if !batchable {
            let mut out = Vec::new();
            let mut row = 0;
            for r in reqs {
                for _ in 0..r.num_outputs {
                    let src = noise
                        .part_of_row(row)
                        .ok_or_else(|| Error::invalid("noise", "no source for a row"))?;
                    out.push(self.generate_one(r, src, hooks)?);
                    row += 1;
                }
            }
            return Ok(out);
        }
        let sampling = SamplingParams {
            temperature: p.temperature.unwrap_or(0.0),
            top_k: p.top_k,
            top_p: p.top_p,
        };
        let pipe = LogitsPipeline::new(None, sampling);
        let b = prompts.len();
        let rows: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let (mut batch, logits) = self.prefill_rows(&rows, most)?;
        let mut logits = self.text_logits(&logits)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let mut new: Vec<Vec<u32>> = vec![Vec::new(); b];
        // Why a row stopped: still running, done, or opened an image.
        let mut done = vec![false; b];
        let mut opened = vec![false; b];
        for step in 0..most {
            hooks.step("text tokens", step, most)?;
            // Only the rows still running draw (a finished row's source stays where a lone run
            // leaves it); finished rows are fed their last id and ignored.
            let live: Vec<u32> = (0..b as u32).filter(|&r| !done[r as usize]).collect();
            let live_logits = if live.len() == b {
                logits.clone()
            } else {
                logits.index_select(&Tensor::new(live.as_slice(), self.device())?, 0)?
            };
            let drawn = pipe
                .sample(&live_logits, None, &mut noise)?
                .to_vec1::<u32>()?;
            let mut ids: Vec<u32> = new
                .iter()
                .map(|n| n.last().copied().unwrap_or(s.bos))
                .collect();
            for (&r, &id) in live.iter().zip(&drawn) {
                let r = r as usize;
                ids[r] = id;
                new[r].push(id);
                if id == s.boi {
                    opened[r] = true;
                }
                if id == s.eos || id == s.boi || new[r].len() == budgets[r] {
                    done[r] = true;
                    noise.retire(r);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            let fed = Tensor::from_vec(ids, b, self.device())?;
            logits = self.text_logits(&self.step_rows(&mut batch, &fed)?)?;
        }
        hooks.step("text tokens", most, most)?;
        let decode_s = t0.elapsed().as_secs_f64() - prefill_s;
        let mut out = Vec::with_capacity(b);
        for (r, mut ids) in new.into_iter().enumerate() {
            let steps = ids.len();
            if !opened[r] {
                out.push(Output {
                    segments: vec![self.text_output(ids)?],
                    timings: Timings {
                        prefill_s,
                        decode_s,
                        steps,
                        image_decode_s: 0.0,
                        total_s: t0.elapsed().as_secs_f64(),
                    },
                });
                continue;
            }
            // The row wrote BOI: the image and whatever text follows, alone.
            let mut seq = prompts[r].clone();
            seq.extend_from_slice(&ids);
            ids.pop();
            let mut segments = Vec::new();
            if !ids.is_empty() {
                segments.push(self.text_output(ids)?);
            }
            let left = budgets[r] - steps;
            let src = noise
                .part_of_row(r)
                .ok_or_else(|| Error::invalid("noise", "no source for a row"))?;
            let rest = if left == 0 {
                let grid = self.default_grid();
                let img = self.generate_image_ids(&seq, grid.0 * grid.1, p, src, hooks)?;
                vec![self.image_output(&img, grid)?]
            } else {
                let cont = Request::new().raw_ids(seq).want(Modality::Text).params(
                    any2any_core::GenerationParams {
                        max_new_tokens: Some(left),
                        ..p.clone()
                    },
                );
                self.generate_one(&cont, src, hooks)?.segments
            };
            segments.extend(rest);
            out.push(Output {
                segments,
                timings: Timings {
                    prefill_s,
                    decode_s,
                    steps,
                    image_decode_s: 0.0,
                    total_s: t0.elapsed().as_secs_f64(),
                },
            });
        }
        Ok(out)
    }

    /// One output of one request.
    fn generate_one(
        &self,
        req: &Request,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Output> {
        if self.lumina.is_some() {
            return self.generate_lumina(req, noise, hooks);
        }
        let t0 = Instant::now();
        let (ids, images) = self.render(req)?;
        let prompt = self.effective_ids(&ids, &images, req.raw)?;
        let p = &req.params;
        let s = self.cfg.vocab.ids;
        // Text (possibly interleaved): text tokens until EOS or the budget; a BOI (emitted by the
        // model, or ending the prompt) starts an image of the default grid, closed by EOI.
        let ctx = self.cfg.backbone.max_position_embeddings;
        let max_new = match p.max_new_tokens {
            Some(n) => n,
            None => self
                .gen
                .max_new_tokens
                .unwrap_or(DEFAULT_MAX_NEW_TOKENS)
                .min(ctx.saturating_sub(prompt.len())),
        };
        if max_new == 0 || prompt.len() + max_new > ctx {
            return Err(Error::ContextOverflow {
                len: prompt.len(),
                max: ctx,
                reserved: max_new.max(1),
            });
        }
        let sampling = SamplingParams {
            temperature: p.temperature.unwrap_or(0.0),
            top_k: p.top_k,
            top_p: p.top_p,
        };
        let pipe = LogitsPipeline::new(None, sampling);
        let mut st = self.new_stream(prompt.len() + max_new)?;
        let mut seq = prompt.clone();
        let mut logits = self.text_logits(&self.feed(&mut st, &prompt)?)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut segments = Vec::new();
        let mut text: Vec<u32> = Vec::new();
        let mut steps = 0;
        let mut image_decode_s = 0.0;
        let mut pending_image = prompt.last() == Some(&s.boi);
        while steps < max_new || pending_image {
            if pending_image {
                pending_image = false;
                if self.vq_decoder.is_none() {
                    return Err(self.no_decoder());
                }
                if !text.is_empty() {
                    segments.push(self.text_output(std::mem::take(&mut text))?);
                }
                let grid = self.default_grid();
                let n = grid.0 * grid.1;
                if seq.len() + n + 1 > ctx {
                    return Err(Error::ContextOverflow {
                        len: seq.len(),
                        max: ctx,
                        reserved: n + 1,
                    });
                }
                let img = self.generate_image_ids(&seq, n, p, noise, hooks)?;
                let td = Instant::now();
                segments.push(self.image_output(&img, grid)?);
                image_decode_s += td.elapsed().as_secs_f64();
                seq.extend(img);
                seq.push(s.eoi);
                if steps == max_new {
                    break;
                }
                // The text stream restarts after the image with room for the remaining budget.
                if seq.len() + max_new - steps > ctx {
                    return Err(Error::ContextOverflow {
                        len: seq.len(),
                        max: ctx,
                        reserved: max_new - steps,
                    });
                }
                st = self.new_stream(seq.len() + max_new - steps)?;
                logits = self.text_logits(&self.feed(&mut st, &seq)?)?;
                continue;
            }
            hooks.step("text tokens", steps, max_new)?;
            let id = pipe.sample(&logits, None, noise)?.to_vec1::<u32>()?[0];
            steps += 1;
            seq.push(id);
            if id == s.boi {
                if !text.is_empty() {
                    segments.push(self.text_output(std::mem::take(&mut text))?);
                }
                // The image loop prefills its own streams from `seq` (BOI included).
                pending_image = true;
                continue;
            }
            text.push(id);
            if id == s.eos || steps == max_new {
                break;
            }
            logits = self.text_logits(&self.feed(&mut st, &[id])?)?;
        }
        if !text.is_empty() || segments.is_empty() {
            segments.push(self.text_output(text)?);
        }
        Ok(Output {
            segments,
            timings: Timings {
                prefill_s,
                decode_s: t1.elapsed().as_secs_f64(),
                steps,
                image_decode_s,
                total_s: t0.elapsed().as_secs_f64(),
            },
        })
    }

    fn no_decoder(&self) -> Error {
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
}

impl Backend for ChameleonBackend {
    fn info(&self) -> ModelInfo {
        let f = self.cfg.vq.downsample_factor();
        let g = match &self.lumina {
            Some(l) => (l.target_size / f, l.target_size / f),
            None => self.default_grid(),
        };
        ModelInfo::of_decoder(
            "chameleon",
            format!(
                "{} ({}{})",
                self.name,
                self.layout,
                if self.vq_decoder.is_some() {
                    ", with taming VQGAN decoder"
                } else {
                    ", no image decoder"
                }
            ),
            &self.directions(),
            &self.decoder,
            g,
            f,
        )
    }

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        let lumina = self.lumina.is_some();
        let text = if lumina {
            vec![Temperature, TopK, TopP, Cfg, MaxNewTokens, ImageTopK, Size]
        } else {
            vec![Temperature, TopK, TopP, Cfg, MaxNewTokens]
        };
        let mut directions = vec![
            (Direction::TextToText, text.clone()),
            (Direction::ImageToText, text.clone()),
        ];
        directions.push((Direction::TextToImage, text.clone()));
        directions.push((Direction::ImageToImage, text.clone()));
        directions.push((Direction::Interleaved, text));
        Capabilities {
            family: if lumina { "lumina" } else { "chameleon" },
            directions,
            edits: Vec::new(),
        }
    }

    fn check(&self, req: &Request) -> Result<()> {
        self.capabilities().check(req)?;
        if req.want.has_image() && self.vq_decoder.is_none() {
            return Err(self.no_decoder());
        }
        Ok(())
    }

    fn generate_group(&self, group: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let Some(first) = group.first() else {
            return Ok(Vec::new());
        };
        if self.lumina.is_none() {
            let reqs: Vec<Request> = group.iter().map(|r| (*r).clone()).collect();
            return match first.want {
                Modality::Image => self.generate_images(&reqs, hooks),
                _ => self.generate_texts(&reqs, hooks),
            };
        }
        let mut out = Vec::new();
        for r in group {
            let mut noise = hooks.take_noise(r.params.seed);
            for _ in 0..r.num_outputs {
                out.push(self.generate_one(r, noise.as_mut(), hooks)?);
            }
        }
        Ok(out)
    }

    fn last_logits(&self, ids: &[u32], images: &[ImageInput]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::invalid("raw-ids", "no token ids given"));
        }
        let ids = if self.lumina.is_some() {
            // Each `<image>` token stands for the image's whole Lumina block.
            let mut req = Request::new().raw_ids(ids.to_vec());
            req.segments
                .extend(images.iter().cloned().map(Segment::Image));
            self.lumina_prompt(&req)?
        } else {
            let imgs: Vec<&ImageInput> = images.iter().collect();
            self.effective_ids(ids, &imgs, true)?
        };
        let mut st = self.new_stream(ids.len())?;
        let l = self.text_logits(&self.feed(&mut st, &ids)?)?;
        Ok(l.squeeze(0)?.to_device(&Device::Cpu)?)
    }

    fn decode_codes(&self, codes: &[u32], height: usize, width: usize) -> Result<image::RgbImage> {
        let dec = self.vq_decoder.as_ref().ok_or_else(|| self.no_decoder())?;
        any2any_core::backend::check_code_grid(codes, height, width, self.cfg.vocab.num_codes())?;
        let t = Tensor::new(codes, self.device())?.unsqueeze(0)?;
        let px = dec.decode(&t, height, width)?;
        imageops::to_images(&px)?
            .pop()
            .ok_or_else(|| Error::invalid("codes", "decoder returned no image"))
    }

    fn tokenizer(&self) -> Option<&any2any_core::tokenizers::Tokenizer> {
        self.tokenizer.as_ref()
    }
}
