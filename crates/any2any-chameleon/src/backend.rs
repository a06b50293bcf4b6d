//! Chameleon / Anole behind the `Backend` trait: text→text, image→text, text→image (Anole's
//! 3-stream CFG loop) and interleaved text+image output.

use crate::config::{ChameleonConfig, VqConfig};
use crate::vq::{VqDecoder, VqEncoder};
use any2any_core::backbone::{Decoder, ForwardArgs, MaskKind, RowLayout};
use any2any_core::backend::{check_direction, Backend, ModelInfo};
use any2any_core::candle_core::{DType, Device, Module, Tensor};
use any2any_core::candle_nn::VarBuilder;
use any2any_core::kv_cache::KvCache;
use any2any_core::loading::{GenerationConfigJson, LoadOptions, ModelFiles, WeightStore};
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
    pub encoder: VqEncoder,
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
}

fn piece_ids(tok: Option<&any2any_core::tokenizers::Tokenizer>, text: &str) -> Result<Vec<u32>> {
    let tok = tok.ok_or_else(|| {
        Error::invalid(
            "prompt",
            "this checkpoint has no tokenizer.json: pass token ids (--raw-ids) instead of text",
        )
    })?;
    let enc = tok
        .encode(text, false)
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(enc.get_ids().to_vec())
}

/// The taming decoder's config: `vqgan_config.json` (`model.params.{ddconfig, embed_dim,
/// n_embed}`) when present, else config.json's `vq_config`.
fn decoder_config(dir: &std::path::Path, fallback: &VqConfig) -> Result<VqConfig> {
    let p = dir.join("vqgan_config.json");
    if !p.is_file() {
        return Ok(fallback.clone());
    }
    let v: serde_json::Value = any2any_core::loading::read_json(&p)?;
    let params = v.pointer("/model/params").cloned().unwrap_or(v);
    let mut merged = params
        .get("ddconfig")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    if let (Some(m), Some(o)) = (merged.as_object_mut(), params.as_object()) {
        for k in ["embed_dim", "n_embed"] {
            if let Some(x) = o.get(k) {
                m.insert(k.into(), x.clone());
            }
        }
    }
    VqConfig::from_json(&merged).map_err(|e| Error::Config {
        path: p.clone(),
        msg: e.to_string(),
    })
}

/// One row's decoding state: its own KV cache.
struct Stream {
    cache: KvCache,
}

impl ChameleonBackend {
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let raw = files.config_json()?;
        let cfg = ChameleonConfig::from_json(&raw, &files.config)?;
        let gen: GenerationConfigJson = ModelFiles::optional_json(&files.generation_config)?;
        let tokenizer = files.load_tokenizer()?;
        let dtype = opts.dtype();
        let dev = &opts.device;
        let vb = files.var_builder(dtype, dev)?;
        let decoder = Decoder::load(vb.pp("model"), &cfg.backbone)?;
        let lm_head = Linear::new(any2any_core::backbone::lm_head(
            vb.pp("lm_head"),
            &cfg.backbone,
        )?)?;
        let encoder = VqEncoder::load(vb.pp("model.vqmodel"), &cfg.vq)?;
        let vq_decoder = match DECODER_FILES
            .iter()
            .map(|f| files.dir.join(f))
            .find(|p| p.is_file())
        {
            Some(p) => {
                let dcfg = decoder_config(&files.dir, &cfg.vq)?;
                let store = WeightStore::open(std::slice::from_ref(&p))?;
                let dvb = VarBuilder::from_backend(Box::new(store), dtype, dev.clone());
                Some(VqDecoder::load(dvb, &dcfg).map_err(|e| Error::WeightFile {
                    path: p.clone(),
                    msg: e.to_string(),
                })?)
            }
            None => None,
        };
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
        let (codes, h, w) = self.encoder.encode(&self.pixels(img, raw)?)?;
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
        let w_text = params.cfg.unwrap_or(DEFAULT_CFG_TEXT);
        let guidance = (w_text != 1.0).then(|| Self::guidance(w_text));
        let sampling = SamplingParams {
            temperature: params.temperature.unwrap_or(DEFAULT_IMAGE_TEMPERATURE),
            top_k: params.top_k,
            top_p: params.top_p.or(Some(DEFAULT_IMAGE_TOP_P)),
        };
        let pipe = LogitsPipeline::new(guidance, sampling);
        let rows: Vec<Vec<u32>> = if pipe.streams() == 3 {
            self.cfg_streams(prompt).into()
        } else {
            vec![prompt.to_vec()]
        };
        // The streams run as one left-padded batch; each row has its own positions from 0 and
        // never attends to its padding (as the reference's packed variable-length batch).
        let k = rows.len();
        let lens: Vec<usize> = rows.iter().map(Vec::len).collect();
        let max = lens.iter().copied().max().unwrap_or(0);
        let ctx = self.cfg.backbone.max_position_embeddings;
        if max + n > ctx {
            return Err(Error::ContextOverflow {
                len: max,
                max: ctx,
                reserved: n,
            });
        }
        let layout = RowLayout::left_padded(&lens);
        let pad = self.cfg.vocab.ids.bos;
        let mut flat = Vec::with_capacity(k * max);
        for r in &rows {
            flat.extend(std::iter::repeat_n(pad, max - r.len()));
            flat.extend_from_slice(r);
        }
        let args = ForwardArgs {
            layout: &layout,
            mask: &MaskKind::Causal,
        };
        let mut cache = self.decoder.new_cache(k, max + n)?;
        let x = self
            .decoder
            .embed(&Tensor::from_vec(flat, (k, max), self.device())?)?;
        let h = self.decoder.forward(&x, args, &mut cache)?;
        let mut logits = self
            .lm_head
            .forward(&h.narrow(1, max - 1, 1)?.squeeze(1)?)?;
        let mut out = Vec::with_capacity(n);
        for step in 0..n {
            hooks.step("image tokens", step, n)?;
            let next = pipe.sample(&logits, Some(&self.image_only), noise)?;
            let id = next.to_vec1::<u32>()?[0];
            out.push(id);
            if step + 1 == n {
                break;
            }
            let x = self
                .decoder
                .embed(&Tensor::from_vec(vec![id; k], (k, 1), self.device())?)?;
            let h = self.decoder.forward(&x, args, &mut cache)?;
            logits = self.lm_head.forward(&h.squeeze(1)?)?;
        }
        hooks.step("image tokens", n, n)?;
        Ok(out)
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

    /// One output of one request.
    fn generate_one(
        &self,
        req: &Request,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Output> {
        let t0 = Instant::now();
        let (ids, images) = self.render(req)?;
        let prompt = self.effective_ids(&ids, &images, req.raw)?;
        let p = &req.params;
        let s = self.cfg.vocab.ids;
        if req.want == Modality::Image {
            if self.vq_decoder.is_none() {
                return Err(self.no_decoder());
            }
            let grid = self.grid_for(p.max_new_tokens)?;
            let mut prompt = prompt;
            if prompt.last() != Some(&s.boi) {
                prompt.push(s.boi);
            }
            let t1 = Instant::now();
            let out = self.generate_image_ids(&prompt, grid.0 * grid.1, p, noise, hooks)?;
            let decode_s = t1.elapsed().as_secs_f64();
            let t2 = Instant::now();
            let img = self.image_output(&out, grid)?;
            return Ok(Output {
                segments: vec![img],
                timings: Timings {
                    prefill_s: 0.0,
                    decode_s,
                    steps: out.len(),
                    image_decode_s: t2.elapsed().as_secs_f64(),
                    total_s: t0.elapsed().as_secs_f64(),
                },
            });
        }
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
        let mut logits = self.mask_image_logits(&self.feed(&mut st, &prompt)?)?;
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
                logits = self.mask_image_logits(&self.feed(&mut st, &seq)?)?;
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
            logits = self.mask_image_logits(&self.feed(&mut st, &[id])?)?;
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
                "image output needs the taming VQGAN decoder, which HF Chameleon checkpoints do not ship: put one of {} (keys decoder.*, post_quant_conv.*, quantize.embedding.weight; config in vqgan_config.json) next to {}",
                DECODER_FILES.join(" / "),
                self.name
            ),
        )
    }
}

impl Backend for ChameleonBackend {
    fn info(&self) -> ModelInfo {
        let g = self.default_grid();
        let f = self.cfg.vq.downsample_factor();
        ModelInfo::of_decoder(
            "chameleon",
            format!(
                "{} (HF transformers Chameleon layout{})",
                self.name,
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

    fn directions(&self) -> Vec<Direction> {
        let mut d = vec![Direction::TextToText, Direction::ImageToText];
        if self.vq_decoder.is_some() {
            d.push(Direction::TextToImage);
            d.push(Direction::ImageToImage);
        }
        d
    }

    fn generate_batch(&self, requests: &[Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        for r in requests {
            r.validate()?;
            if r.want == Modality::Image && self.vq_decoder.is_none() {
                return Err(self.no_decoder());
            }
            check_direction(self, "chameleon", r)?;
        }
        let mut out = Vec::new();
        for r in requests {
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
        let imgs: Vec<&ImageInput> = images.iter().collect();
        let ids = self.effective_ids(ids, &imgs, true)?;
        let mut st = self.new_stream(ids.len())?;
        let l = self.mask_image_logits(&self.feed(&mut st, &ids)?)?;
        Ok(l.squeeze(0)?.to_device(&Device::Cpu)?)
    }

    fn decode_codes(&self, codes: &[u32], height: usize, width: usize) -> Result<image::RgbImage> {
        let dec = self.vq_decoder.as_ref().ok_or_else(|| self.no_decoder())?;
        let k = self.cfg.vocab.num_codes() as u32;
        if height.checked_mul(width) != Some(codes.len()) {
            return Err(Error::invalid(
                "codes",
                format!("{} codes for a {height}×{width} grid", codes.len()),
            ));
        }
        if let Some(bad) = codes.iter().find(|&&c| c >= k) {
            return Err(Error::invalid(
                "codes",
                format!("code {bad} is outside the codebook (size {k})"),
            ));
        }
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
