//! Lumina-mGPT (Alpha-VLLM, `ChameleonXLLMXForConditionalGeneration`) on the Chameleon backbone.
//!
//! The image layout is self-describing: `BOI`, a height and a width token `<reserved{8800+n}>`
//! (n in units of two codes), then every row of codes followed by the newline token
//! `<reserved08799>`, then `EOI`. One free-running loop writes text and images: a BOI opens an
//! image, the size tokens fix its grid, a constraint forces the newline at each row end and EOI
//! after the last row, and the sequence stops at `<reserved08706>`. Guidance is single-stream on
//! raw logits, `u + w·(c − u)`, where the unconditional context starts at the image's BOI and
//! runs from the moment both size tokens exist (Lumina's
//! `LLMImageStartTriggeredUnbatchedClassifierFreeGuidanceLogitsProcessor`). Image tokens use
//! their own top-k (default 2000), text tokens another (default 10); temperature 1.

use super::{piece_ids, ChameleonBackend, Rows};
use any2any_core::backend::Backend;
use any2any_core::candle_core::Tensor;
use any2any_core::noise::NoiseSource;
use any2any_core::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any_core::{
    Error, Generated, Hooks, ImageInput, Modality, Output, Request, Result, Segment, Timings,
};
use std::collections::HashMap;
use std::time::Instant;

/// Codes per size unit along each side (`h_latent = 2·h_grids` in the reference; one unit is
/// 32 px with the 16-px VQGAN).
pub const CODES_PER_UNIT: usize = 2;
/// `create_logits_processor` defaults of `inference_solver.py` (cfg 3.0, image top-k 2000, text
/// top-k 10) and the temperature of its examples (1.0).
pub const DEFAULT_CFG: f32 = 3.0;
pub const DEFAULT_IMAGE_TOP_K: usize = 2000;
pub const DEFAULT_TEXT_TOP_K: usize = 10;
pub const DEFAULT_TEMPERATURE: f32 = 1.0;
/// The instruction Lumina-mGPT was trained with for text→image (`{W}x{H}`).
pub fn image_instruction(width: usize, height: usize) -> String {
    format!("Generate an image of {width}x{height} according to the following prompt:\n")
}

/// The Lumina layout tokens, read from the vocabulary by name.
#[derive(Debug, Clone, PartialEq)]
pub struct LuminaLayout {
    /// `<reserved08799>`: ends every row of codes.
    pub newline: u32,
    /// `size_ids[n]` is the id of `<reserved{8800+n}>`.
    size_ids: Vec<u32>,
    size_of: HashMap<u32, usize>,
    /// The square side the checkpoint was trained at (`target_size` of the reference's item
    /// processor: 512, 768 or 1024): the default output size and the crop list of image inputs.
    pub target_size: usize,
}

impl LuminaLayout {
    /// `Some` for a Lumina-mGPT config (`architectures` names the XLLMX class), `None` otherwise.
    /// The target size is config.json's `target_size` when present, else the `-512`/`-768`/
    /// `-1024` suffix of the checkpoint's name (`Lumina-mGPT-7B-768`), else `default_size`.
    pub fn detect(
        config: &serde_json::Value,
        name: &str,
        default_size: usize,
    ) -> Result<Option<Self>> {
        let lumina = config
            .get("architectures")
            .and_then(|a| a.as_array())
            .is_some_and(|a| {
                a.iter()
                    .filter_map(|x| x.as_str())
                    .any(|s| s.contains("XLLMX"))
            });
        if !lumina {
            return Ok(None);
        }
        let map = config
            .get("vocabulary_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::invalid("vocabulary_map", "missing or not an object"))?;
        let id = |name: &str| map.get(name).and_then(|v| v.as_u64()).map(|v| v as u32);
        let newline = id("<reserved08799>").ok_or_else(|| {
            Error::invalid(
                "vocabulary_map",
                "Lumina-mGPT needs the row-end token `<reserved08799>`",
            )
        })?;
        let mut size_ids = Vec::new();
        while let Some(i) = id(&format!("<reserved{:05}>", 8800 + size_ids.len())) {
            size_ids.push(i);
            if 8800 + size_ids.len() > 99_999 {
                break;
            }
        }
        if size_ids.len() < 2 {
            return Err(Error::invalid(
                "vocabulary_map",
                "Lumina-mGPT needs the size tokens `<reserved08800>`, `<reserved08801>`, …",
            ));
        }
        let size_of = size_ids.iter().enumerate().map(|(n, &i)| (i, n)).collect();
        let target_size = match config.get("target_size").and_then(|v| v.as_u64()) {
            Some(t) => t as usize,
            None => target_from_name(name).unwrap_or(default_size),
        };
        Ok(Some(Self {
            newline,
            size_ids,
            size_of,
            target_size,
        }))
    }

    /// The largest size (in units) the vocabulary can express.
    pub fn max_units(&self) -> usize {
        self.size_ids.len() - 1
    }

    pub fn size_token(&self, units: usize) -> Result<u32> {
        self.size_ids
            .get(units)
            .copied()
            .filter(|_| units > 0)
            .ok_or_else(|| {
                Error::invalid(
                    "size",
                    format!(
                        "{units} size units: Lumina-mGPT expresses 1..={} units per side",
                        self.max_units()
                    ),
                )
            })
    }

    /// The number of units of a size token.
    pub fn units_of(&self, id: u32) -> Option<usize> {
        self.size_of.get(&id).copied().filter(|&n| n > 0)
    }
}

/// `…-768` (or `-768-Omni`, `_768/`) → 768 for the sizes Lumina-mGPT was released at.
fn target_from_name(name: &str) -> Option<usize> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|part| part.parse::<usize>().ok())
        .rfind(|n| [512, 768, 1024].contains(n))
}

/// Where the loop stands inside an open image.
struct OpenImage {
    /// Index of the image's BOI in the sequence.
    boi: usize,
    /// Code grid (rows, cols) once both size tokens exist.
    grid: Option<(usize, usize)>,
    /// Conditional and unconditional streams as one two-row batch, from the moment the grid is
    /// known (guided images only).
    pair: Option<GuidedPair>,
}

/// The two streams of a guided image in one batch: row 0 the whole sequence, row 1 the
/// unconditional context from the image's BOI, left-padded with its own positions from 0, so
/// each image step is one forward of two rows.
struct GuidedPair {
    rows: Rows,
    /// `[2, V]` f32 logits of the last position (conditional; unconditional).
    logits: Tensor,
}

/// `generate_crop_size_list`: every `(w, h)` patch grid with `w·h ≤ n` patches and an aspect
/// ratio of at most 4, largest width first, in pixels.
pub fn crop_sizes(num_patches: usize, patch: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut wp, mut hp) = (num_patches, 1usize);
    while wp > 0 {
        if wp.max(hp) as f64 / wp.min(hp) as f64 <= 4.0 {
            out.push((wp * patch, hp * patch));
        }
        if (hp + 1) * wp <= num_patches {
            hp += 1;
        } else {
            wp -= 1;
        }
    }
    out
}

impl ChameleonBackend {
    fn lumina(&self) -> Result<&LuminaLayout> {
        self.lumina
            .as_ref()
            .ok_or_else(|| Error::invalid("model", "not a Lumina-mGPT checkpoint"))
    }

    /// Pixels per size unit.
    fn unit_px(&self) -> usize {
        CODES_PER_UNIT * self.cfg.vq.downsample_factor()
    }

    /// The size units `(h, w)` of a requested pixel size (default: the VQ resolution, square).
    pub fn lumina_units(&self, size: Option<(usize, usize)>) -> Result<(usize, usize)> {
        let u = self.unit_px();
        let t = self.lumina()?.target_size;
        let (w, h) = size.unwrap_or((t, t));
        if !w.is_multiple_of(u) || !h.is_multiple_of(u) || w == 0 || h == 0 {
            return Err(Error::invalid(
                "size",
                format!("{w}x{h}: Lumina-mGPT sizes are positive multiples of {u} px"),
            ));
        }
        let lt = self.lumina()?;
        lt.size_token(h / u)?;
        lt.size_token(w / u)?;
        Ok((h / u, w / u))
    }

    /// `FlexARItemProcessor.process_image`: the crop size of the best aspect fit among
    /// `crop_sizes` for the VQ resolution, resize + centre crop, `x/255·2 − 1`, VQ encode, then
    /// `[BOI, size(h), size(w), rows + newline, EOI]`.
    pub fn lumina_image_block(&self, img: &ImageInput) -> Result<Vec<u32>> {
        let lt = self.lumina()?;
        let u = self.unit_px();
        let target = lt.target_size;
        let n = (target / u).pow(2).max(1);
        let (w0, h0) = (img.width() as f64, img.height() as f64);
        let fit = |&(cw, ch): &(usize, usize)| {
            let (a, b) = (cw as f64 / w0, ch as f64 / h0);
            a.min(b) / a.max(b)
        };
        // `var_center_crop`: the best aspect fit; ties go to the larger (w, h) as the reference's
        // descending sort of (fit, size) pairs does.
        let (cw, ch) = crop_sizes(n, u)
            .into_iter()
            .max_by(|a, b| fit(a).total_cmp(&fit(b)).then(a.cmp(b)))
            .ok_or_else(|| Error::invalid("image", "no Lumina crop size"))?;
        let px = &img.pixels;
        let px = if px.width() as usize == cw && px.height() as usize == ch {
            px.clone()
        } else {
            let k = (cw as f64 / w0).max(ch as f64 / h0);
            let (nw, nh) = (
                ((w0 * k).round() as u32).max(cw as u32),
                ((h0 * k).round() as u32).max(ch as u32),
            );
            let r = image::imageops::resize(px, nw, nh, image::imageops::FilterType::CatmullRom);
            image::imageops::crop_imm(
                &r,
                (nw - cw as u32) / 2,
                (nh - ch as u32) / 2,
                cw as u32,
                ch as u32,
            )
            .to_image()
        };
        let data: Vec<f32> = px
            .as_raw()
            .iter()
            .map(|&v| (v as f64 / 255.0 * 2.0 - 1.0) as f32)
            .collect();
        let t = Tensor::from_vec(data, (1, ch, cw, 3), self.device())?.permute((0, 3, 1, 2))?;
        let (codes, hl, wl) = self.vq_encoder()?.encode(&t)?;
        let codes = codes.squeeze(0)?.to_vec1::<u32>()?;
        let s = &self.cfg.vocab;
        let mut block = vec![
            s.ids.boi,
            lt.size_token(hl / CODES_PER_UNIT)?,
            lt.size_token(wl / CODES_PER_UNIT)?,
        ];
        for row in codes.chunks(wl) {
            block.extend(row.iter().map(|&c| s.code_to_id[c as usize]));
            block.push(lt.newline);
        }
        block.push(s.ids.eoi);
        Ok(block)
    }

    /// The prompt ids of a Lumina request: `<s>` + turns + `<reserved08706>`; images become
    /// blocks where they stand (raw mode: at each `<image>` token). For image output the
    /// instruction with the size is prepended to the text and the header `BOI, h, w` is written.
    pub(super) fn lumina_prompt(&self, req: &Request) -> Result<Vec<u32>> {
        let s = self.cfg.vocab.ids;
        let lt = self.lumina()?;
        let tok = self.tokenizer.as_ref();
        let mut ids = Vec::new();
        if req.raw {
            let mut images = req.images().into_iter();
            for seg in &req.segments {
                match seg {
                    Segment::TextIds(v) => {
                        for &i in v {
                            if i == s.image {
                                let img = images.next().ok_or_else(|| {
                                    Error::invalid(
                                        "image",
                                        format!(
                                            "more `<image>` tokens (id {}) than images",
                                            s.image
                                        ),
                                    )
                                })?;
                                ids.extend(self.lumina_image_block(img)?);
                            } else {
                                ids.push(i);
                            }
                        }
                    }
                    Segment::Image(_) => {}
                    other => {
                        return Err(Error::invalid(
                            "input",
                            format!("Lumina-mGPT does not take {} segments", other.kind()),
                        ))
                    }
                }
            }
            if images.next().is_some() {
                return Err(Error::invalid(
                    "image",
                    format!(
                        "more images than `<image>` tokens (id {}) in the ids",
                        s.image
                    ),
                ));
            }
        } else {
            ids.push(s.bos);
            let units = (req.want == Modality::Image)
                .then(|| self.lumina_units(req.params.size))
                .transpose()?;
            let mut instructed = units.is_none();
            for seg in &req.segments {
                match seg {
                    Segment::Text(t) => {
                        let mut text = String::new();
                        if let (false, Some((h, w))) = (instructed, units) {
                            let u = self.unit_px();
                            text.push_str(&image_instruction(w * u, h * u));
                            instructed = true;
                        }
                        text.push_str(t);
                        ids.extend(piece_ids(tok, &text)?);
                    }
                    Segment::TextIds(v) => ids.extend_from_slice(v),
                    Segment::Image(img) => ids.extend(self.lumina_image_block(img)?),
                    other => {
                        return Err(Error::invalid(
                            "input",
                            format!("Lumina-mGPT does not take {} segments", other.kind()),
                        ))
                    }
                }
            }
            ids.push(s.sep);
            if let Some((h, w)) = units {
                ids.extend([s.boi, lt.size_token(h)?, lt.size_token(w)?]);
            }
        }
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
        Ok(ids)
    }

    /// A one-hot additive mask: 0 at `id`, −∞ elsewhere.
    fn only(&self, id: u32) -> Result<Tensor> {
        let v = self.cfg.backbone.vocab_size;
        let mut m = vec![f32::NEG_INFINITY; v];
        m[id as usize] = 0.0;
        Ok(Tensor::from_vec(m, (1, v), self.device())?)
    }

    /// The code grid of an open image from its two size tokens.
    fn lumina_grid(&self, h_id: u32, w_id: u32) -> Result<(usize, usize)> {
        let lt = self.lumina()?;
        let units = |id: u32| {
            lt.units_of(id).ok_or_else(|| {
                Error::invalid(
                    "ids",
                    format!("token {id} stands where a Lumina image size token (<reserved08801>…) is expected"),
                )
            })
        };
        Ok((units(h_id)? * CODES_PER_UNIT, units(w_id)? * CODES_PER_UNIT))
    }

    /// The image of a closed block: `body` is everything between the size tokens and EOI.
    fn lumina_image(&self, body: &[u32], grid: (usize, usize)) -> Result<Generated> {
        let lt = self.lumina()?;
        let (h, w) = grid;
        if body.len() != h * (w + 1) {
            return Err(Error::invalid(
                "ids",
                format!(
                    "a Lumina image of {h}×{w} codes needs {} tokens, got {}",
                    h * (w + 1),
                    body.len()
                ),
            ));
        }
        let mut codes = Vec::with_capacity(h * w);
        for row in body.chunks(w + 1) {
            if row[w] != lt.newline {
                return Err(Error::invalid(
                    "ids",
                    "a Lumina image row does not end in the newline token",
                ));
            }
            for &id in &row[..w] {
                codes.push(self.cfg.vocab.code_of(id).ok_or_else(|| {
                    Error::invalid(
                        "ids",
                        format!("token {id} inside an image is not an image token"),
                    )
                })?);
            }
        }
        let image = self.decode_codes(&codes, h, w)?;
        Ok(Generated::Image {
            image,
            codes: Some(codes),
            grid: Some((h, w)),
        })
    }

    /// Prefills the two streams of a guided image; `room` tokens may follow.
    fn pair_prefill(&self, cond: &[u32], uncond: &[u32], room: usize) -> Result<GuidedPair> {
        let (rows, logits) = self.prefill_rows(&[cond, uncond], room)?;
        Ok(GuidedPair {
            rows,
            logits: self.text_logits(&logits)?,
        })
    }

    /// Feeds `id` to both streams of a guided image.
    fn pair_step(&self, p: &mut GuidedPair, id: u32) -> Result<()> {
        let ids = Tensor::from_vec(vec![id; 2], 2, self.device())?;
        p.logits = self.text_logits(&self.step_rows(&mut p.rows, &ids)?)?;
        Ok(())
    }

    /// One output of a Lumina request: the free-running loop over text and images.
    pub(super) fn generate_lumina(
        &self,
        req: &Request,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Output> {
        let t0 = Instant::now();
        let s = self.cfg.vocab.ids;
        let lt = self.lumina()?;
        let p = &req.params;
        let prompt = self.lumina_prompt(req)?;
        let ctx = self.cfg.backbone.max_position_embeddings;
        // The state of the prompt: an image may be open (the header written for image output).
        let mut open: Option<OpenImage> = None;
        let (mut n_boi, mut n_eoi) = (0usize, 0usize);
        for (i, &id) in prompt.iter().enumerate() {
            if id == s.boi {
                n_boi += 1;
                if n_boi == n_eoi + 1 {
                    open = Some(OpenImage {
                        boi: i,
                        grid: None,
                        pair: None,
                    });
                }
            } else if id == s.eoi {
                n_eoi += 1;
                open = None;
            }
        }
        if n_boi != n_eoi && n_boi != n_eoi + 1 {
            return Err(Error::invalid(
                "ids",
                format!("the prompt has {n_boi} image starts and {n_eoi} image ends"),
            ));
        }
        let max_new = match p.max_new_tokens {
            Some(n) => n,
            None => match (&open, req.want) {
                // The header is written: exactly the rows and EOI.
                (Some(o), Modality::Image) if prompt.len() >= o.boi + 3 => {
                    let (h, w) = self.lumina_grid(prompt[o.boi + 1], prompt[o.boi + 2])?;
                    h * (w + 1) + 1
                }
                _ => ctx.saturating_sub(prompt.len()),
            },
        };
        if max_new == 0 || prompt.len() + max_new > ctx {
            return Err(Error::ContextOverflow {
                len: prompt.len(),
                max: ctx,
                reserved: max_new.max(1),
            });
        }
        let w = p.cfg.unwrap_or(DEFAULT_CFG);
        let temperature = p.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        let text_pipe = LogitsPipeline::new(
            None,
            SamplingParams {
                temperature,
                top_k: Some(p.top_k.unwrap_or(DEFAULT_TEXT_TOP_K)),
                top_p: p.top_p,
            },
        );
        let image_sampling = SamplingParams {
            temperature,
            top_k: Some(p.image_top_k.unwrap_or(DEFAULT_IMAGE_TOP_K)),
            top_p: p.top_p,
        };
        let header_pipe = LogitsPipeline::new(None, image_sampling);
        let guided_pipe = LogitsPipeline::new(
            (w != 1.0).then(|| Guidance::two_stream(w, GuidanceSpace::Logits)),
            image_sampling,
        );
        let newline_only = self.only(lt.newline)?;
        let eoi_only = self.only(s.eoi)?;

        let mut st = self.new_stream(prompt.len() + max_new)?;
        let mut logits = self.text_logits(&self.feed(&mut st, &prompt)?)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut seq = prompt.clone();
        let mut segments = Vec::new();
        let mut text: Vec<u32> = Vec::new();
        let mut image_decode_s = 0.0;
        let mut steps = 0;
        while steps < max_new {
            hooks.step("tokens", steps, max_new)?;
            let id = match open.as_mut() {
                None => text_pipe.sample(&logits, None, noise)?,
                Some(o) if seq.len() < o.boi + 3 => header_pipe.sample(&logits, None, noise)?,
                Some(o) => {
                    let grid = match o.grid {
                        Some(g) => g,
                        None => {
                            let g = self.lumina_grid(seq[o.boi + 1], seq[o.boi + 2])?;
                            o.grid = Some(g);
                            g
                        }
                    };
                    let t = seq.len() - (o.boi + 3);
                    let (h, w_codes) = grid;
                    let allowed = if (t + 1) % (w_codes + 1) == 0 {
                        &newline_only
                    } else if t + 1 == (w_codes + 1) * h + 1 {
                        &eoi_only
                    } else {
                        &self.image_only
                    };
                    if guided_pipe.guidance.is_some() {
                        let pair = match o.pair.take() {
                            Some(p) => p,
                            None => self.pair_prefill(&seq, &seq[o.boi..], max_new - steps)?,
                        };
                        let next = guided_pipe.sample(&pair.logits, Some(allowed), noise)?;
                        o.pair = Some(pair);
                        next
                    } else {
                        guided_pipe.sample(&logits, Some(allowed), noise)?
                    }
                }
            }
            .to_vec1::<u32>()?[0];
            steps += 1;
            seq.push(id);
            if id == s.sep {
                break;
            }
            match open.take() {
                None if id == s.boi => {
                    if !text.is_empty() {
                        segments.push(self.text_output(std::mem::take(&mut text))?);
                    }
                    open = Some(OpenImage {
                        boi: seq.len() - 1,
                        grid: None,
                        pair: None,
                    });
                }
                None => text.push(id),
                Some(o) if id == s.eoi => {
                    let grid = o.grid.ok_or_else(|| {
                        Error::invalid("ids", "an image ended before its size tokens")
                    })?;
                    let td = Instant::now();
                    let body = &seq[o.boi + 3..seq.len() - 1];
                    segments.push(self.lumina_image(body, grid)?);
                    image_decode_s += td.elapsed().as_secs_f64();
                    if req.want == Modality::Image {
                        break;
                    }
                    if o.pair.is_some() && steps < max_new {
                        // The single stream stopped at the image's size tokens: prefill it
                        // again with everything so far and go on with text.
                        st = self.new_stream(seq.len() + max_new - steps)?;
                        logits = self.text_logits(&self.feed(&mut st, &seq)?)?;
                        continue;
                    }
                }
                Some(mut o) => {
                    let paired = match o.pair.as_mut() {
                        Some(p) if steps < max_new => {
                            self.pair_step(p, id)?;
                            true
                        }
                        Some(_) => true,
                        None => false,
                    };
                    open = Some(o);
                    if paired {
                        continue;
                    }
                }
            }
            if steps < max_new {
                logits = self.text_logits(&self.feed(&mut st, &[id])?)?;
            }
        }
        hooks.step("tokens", steps, max_new)?;
        if let Some(o) = open {
            if req.want == Modality::Image || o.grid.is_some() {
                return Err(Error::invalid(
                    "max-new-tokens",
                    format!(
                        "the budget of {max_new} tokens ended inside an image (started at position {})",
                        o.boi
                    ),
                ));
            }
        }
        if !text.is_empty() || segments.is_empty() {
            segments.push(self.text_output(text)?);
        }
        if req.want == Modality::Image
            && !segments
                .iter()
                .any(|g| matches!(g, Generated::Image { .. }))
        {
            return Err(Error::invalid("model", "the model produced no image"));
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_size_from_the_checkpoint_name() {
        assert_eq!(target_from_name("Alpha-VLLM/Lumina-mGPT-7B-768"), Some(768));
        assert_eq!(target_from_name("/models/Lumina-mGPT-7B-1024"), Some(1024));
        assert_eq!(target_from_name("Lumina-mGPT-7B-768-Omni"), Some(768));
        assert_eq!(target_from_name("tests/fixtures/lumina-tiny"), None);
    }

    #[test]
    fn crop_sizes_match_the_reference_list() {
        // generate_crop_size_list((512 // 32) ** 2, 32): first and last entries, ratio ≤ 4.
        let l = crop_sizes(256, 32);
        assert_eq!(l.first(), Some(&(1024, 256)));
        assert_eq!(l.last(), Some(&(256, 1024)));
        assert!(l.contains(&(512, 512)));
        assert!(l.iter().all(|&(w, h)| w * h <= 512 * 512));
        assert!(l
            .iter()
            .all(|&(w, h)| w.max(h) as f64 / w.min(h) as f64 <= 4.0));
    }
}
