//! Chameleon / Anole behind the `Backend` trait, on the shared decode engine: text (text only:
//! the image start is masked out of the logits), an image (Anole's 3-stream CFG loop) and
//! interleaved text + images (text until the model opens an image, the image, then text again
//! with the rest of the budget).

use crate::model::{capabilities, rows_noise, ChameleonModel};
use any2any_core::backend::{Backend, Capabilities, ModelInfo, Param};
use any2any_core::candle_core::Tensor;
use any2any_core::decode::{
    text_budget, CodeLoop, CodeOf, OnlyRange, RowBatch, RowInput, TextEnd, TextLoop, TextRow,
    TokenAction,
};
use any2any_core::loading::{LoadOptions, ModelFiles};
use any2any_core::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any_core::{
    Error, Generated, GenerationParams, Hooks, ImageInput, Modality, NoiseSource, Output, Request,
    Result, Segment, Timings,
};
use std::time::Instant;

const DEFAULT_MAX_NEW_TOKENS: usize = 256;
/// `chameleon/inference/chameleon.py` `Options.Image.CFG`: text weight 3.0, image weight 1.2.
pub const DEFAULT_CFG_TEXT: f32 = 3.0;
/// The image guidance weight of `Options.Image.CFG` (the text weight is [`DEFAULT_CFG_TEXT`]).
pub const DEFAULT_CFG_IMAGE: f32 = 1.2;
/// Reference image sampling: temperature 0.7, top-p 0.9.
pub const DEFAULT_IMAGE_TEMPERATURE: f32 = 0.7;
/// Reference image sampling top-p (with [`DEFAULT_IMAGE_TEMPERATURE`]).
pub const DEFAULT_IMAGE_TOP_P: f32 = 0.9;
/// HF `ChameleonImageProcessor`: `x * 0.0078 - 1`.
const RESCALE: f64 = 0.0078;

/// `model_type: "chameleon"`, except Lumina-mGPT's architecture (its own family).
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("model_type").and_then(|v| v.as_str()) == Some("chameleon")
        && !crate::lumina::matches(cfg)
}

/// Registry entry point.
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(ChameleonBackend::load(files, opts)?))
}

/// A loaded Chameleon / Anole checkpoint.
pub struct ChameleonBackend {
    /// The shared Chameleon model (config, backbone, head, VQGAN, vocabulary).
    pub model: ChameleonModel,
}

/// One output being written: its context so far, what is left of its text budget, and what it
/// has produced.
struct Row {
    /// The request of the group it belongs to.
    owner: usize,
    seq: Vec<u32>,
    left: usize,
    segments: Vec<Generated>,
    steps: usize,
    image_decode_s: f64,
    done: bool,
}

/// What a group's rows share while they are written.
struct Run<'r, 'h> {
    params: &'r GenerationParams,
    want: Modality,
    /// The grid of the images written.
    grid: (usize, usize),
    /// Each request's own noise source.
    sources: Vec<Box<dyn NoiseSource + 'h>>,
    /// The outputs, request-major.
    rows: Vec<Row>,
    t0: Instant,
    prefill_s: Option<f64>,
}

impl Run<'_, '_> {
    fn prefilled(&mut self) {
        self.prefill_s
            .get_or_insert(self.t0.elapsed().as_secs_f64());
    }
}

impl ChameleonBackend {
    /// Loads the HF layout or Meta's original release (see [`ChameleonModel::load`]).
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        Ok(Self {
            model: ChameleonModel::load(files, opts)?,
        })
    }

    /// The 3-stream guidance of the Anole loop for a text weight (`u + w_image·(img − u) +
    /// w_text·(full − img)` on raw logits).
    pub fn guidance(w_text: f32) -> Guidance {
        Guidance {
            weights: vec![w_text, DEFAULT_CFG_IMAGE],
            space: GuidanceSpace::Logits,
        }
    }

    /// The three CFG streams of the reference for a prompt ending in BOI: the full prompt; only
    /// its image tokens, BOS, BOI and EOI; `[BOS, BOI]`.
    pub fn cfg_streams(&self, prompt: &[u32]) -> [Vec<u32>; 3] {
        let v = &self.model.cfg.vocab;
        let s = &v.ids;
        let image: Vec<u32> = prompt
            .iter()
            .copied()
            .filter(|&i| i == s.bos || i == s.boi || i == s.eoi || v.is_image_token(i))
            .collect();
        [prompt.to_vec(), image, vec![s.bos, s.boi]]
    }

    /// The last position's raw logits `[V]` f32 (image mode: no IMGIMG mask) for effective ids.
    pub fn raw_last_logits(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = self.effective_ids(ids, &[], true)?;
        self.model.last_logits_with(&ids, &self.model.raw_head())
    }

    /// Image codes `[h*w]` of one image: HF `ChameleonImageProcessor` (shortest edge to the VQ
    /// resolution with Lanczos, centre crop, `x·0.0078 − 1`); raw mode requires that size.
    pub fn encode_image(&self, img: &ImageInput, raw: bool) -> Result<(Vec<u32>, usize, usize)> {
        let s = self.model.cfg.vq.resolution as u32;
        if raw && (img.width(), img.height()) != (s, s) {
            return Err(Error::invalid(
                "image",
                format!(
                    "raw mode needs a {s}×{s} image, got {}×{}",
                    img.width(),
                    img.height()
                ),
            ));
        }
        self.model.encode_pixels(
            &img.pixels,
            (s, s),
            image::imageops::FilterType::Lanczos3,
            |u| (u as f64 * RESCALE) as f32 - 1.0,
        )
    }

    /// Replaces the `<image>` placeholders by the token ids of the images' codes, in order.
    fn effective_ids(&self, ids: &[u32], images: &[&ImageInput], raw: bool) -> Result<Vec<u32>> {
        let v = &self.model.cfg.vocab;
        self.model.check_ids(ids)?;
        let ph = v.ids.image;
        let slots = ids.iter().filter(|&&i| i == ph).count();
        let n = self.model.image_seq_length;
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
            fill.extend(codes.iter().map(|&c| v.code_to_id[c as usize]));
        }
        let mut it = fill.into_iter();
        Ok(ids
            .iter()
            .map(|&i| if i == ph { it.next().unwrap_or(i) } else { i })
            .collect())
    }

    /// The prompt of a request in effective ids: the HF processor's `<s>` + segments (an image
    /// as BOI + placeholders + EOI) + sep, and BOI for image output; raw ids as given.
    fn prompt(&self, req: &Request) -> Result<Vec<u32>> {
        let s = &self.model.cfg.vocab.ids;
        let mut ids = Vec::new();
        if !req.raw {
            ids.push(s.bos);
        }
        for seg in &req.segments {
            match seg {
                Segment::TextIds(v) => ids.extend_from_slice(v),
                Segment::Text(t) => ids.extend(self.model.tokenize(t)?),
                Segment::Image(_) if req.raw => {}
                Segment::Image(_) => {
                    ids.push(s.boi);
                    ids.extend(std::iter::repeat_n(s.image, self.model.image_seq_length));
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
        self.effective_ids(&ids, &req.images(), req.raw)
    }

    /// The grid of an image request: the default, or the square `max_new_tokens` codes.
    fn grid_for(&self, n: Option<usize>) -> Result<(usize, usize)> {
        let Some(n) = n else {
            return Ok(self.model.default_grid());
        };
        let g = (n as f64).sqrt().round() as usize;
        if g == 0 || g * g != n {
            return Err(Error::invalid(
                "max-new-tokens",
                format!("for Chameleon image output this is the number of image codes and must be a square (e.g. 1024 = 32×32), got {n}"),
            ));
        }
        Ok((g, g))
    }

    /// The rows of a group, request-major: every output starts from its request's prompt, with
    /// its text budget (none for image output, whose prompt ends in BOI).
    fn rows(&self, group: &[&Request]) -> Result<Vec<Row>> {
        let s = self.model.cfg.vocab.ids;
        let mut rows = Vec::new();
        for (owner, r) in group.iter().enumerate() {
            let mut seq = self.prompt(r)?;
            let opens = seq.last() == Some(&s.boi);
            let left = match r.want {
                Modality::Image => {
                    if !opens {
                        seq.push(s.boi);
                    }
                    0
                }
                Modality::Text if opens => {
                    return Err(Error::invalid(
                        "to",
                        format!("the prompt ends in <racm3:break> (id {}), which opens an image, and text output writes none: ask for image or text,image output", s.boi),
                    ))
                }
                _ => text_budget(
                    r.params.max_new_tokens,
                    self.model.gen.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS),
                    seq.len(),
                    self.model.context(),
                )?,
            };
            for _ in 0..r.num_outputs {
                rows.push(Row {
                    owner,
                    seq: seq.clone(),
                    left,
                    segments: Vec::new(),
                    steps: 0,
                    image_decode_s: 0.0,
                    done: false,
                });
            }
        }
        Ok(rows)
    }

    /// A group of requests with the same batch key: each phase batches every row that is at the
    /// same point (writing text, or in an image the model opened), every request drawing from
    /// its own seed's source.
    fn generate_rows(&self, group: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let Some(first) = group.first() else {
            return Ok(Vec::new());
        };
        let boi = self.model.cfg.vocab.ids.boi;
        let mut run = Run {
            params: &first.params,
            want: first.want,
            grid: match first.want {
                Modality::Image => self.grid_for(first.params.max_new_tokens)?,
                _ => self.model.default_grid(),
            },
            rows: self.rows(group)?,
            sources: Vec::new(),
            t0: Instant::now(),
            prefill_s: None,
        };
        run.sources = group
            .iter()
            .map(|r| hooks.take_noise(r.params.seed))
            .collect();
        loop {
            let opening = pick(&run.rows, |r| r.seq.last() == Some(&boi));
            if !opening.is_empty() {
                self.image_phase(&mut run, &opening, hooks)?;
            }
            let writing = pick(&run.rows, |r| r.left > 0 && r.seq.last() != Some(&boi));
            if writing.is_empty() {
                break;
            }
            self.text_phase(&mut run, &writing, hooks)?;
        }
        let total = run.t0.elapsed().as_secs_f64();
        let prefill_s = run.prefill_s.unwrap_or(0.0);
        Ok(run
            .rows
            .into_iter()
            .map(|r| Output {
                timings: Timings {
                    prefill_s,
                    decode_s: (total - prefill_s - r.image_decode_s).max(0.0),
                    steps: r.steps,
                    image_decode_s: r.image_decode_s,
                    total_s: total,
                },
                segments: r.segments,
            })
            .collect())
    }

    /// The Anole loop for the rows `idx` (each ending in BOI): one image each, then EOI.
    fn image_phase(&self, run: &mut Run, idx: &[usize], hooks: &mut Hooks) -> Result<()> {
        let (grid, ctx) = (run.grid, self.model.context());
        let n = grid.0 * grid.1;
        // Text goes on after the image: room for its EOI too.
        let room = if run.want == Modality::Image {
            n
        } else {
            n + 1
        };
        if let Some(r) = idx
            .iter()
            .map(|&i| &run.rows[i])
            .find(|r| r.seq.len() + room > ctx)
        {
            return Err(Error::ContextOverflow {
                len: r.seq.len(),
                max: ctx,
                reserved: room,
            });
        }
        let owners: Vec<usize> = idx.iter().map(|&i| run.rows[i].owner).collect();
        let prompts: Vec<&[u32]> = idx.iter().map(|&i| run.rows[i].seq.as_slice()).collect();
        // Previews name outputs in order: only for rows that are consecutive outputs.
        let first = idx.first().copied().unwrap_or(0);
        let consecutive = idx.iter().enumerate().all(|(k, &i)| i == first + k);
        let preview_from = consecutive.then_some(first);
        let codes = {
            let mut noise = rows_noise(&mut run.sources, &owners);
            self.anole_codes(&prompts, grid, run.params, &mut noise, hooks, preview_from)?
        };
        run.prefilled();
        let eoi = self.model.cfg.vocab.ids.eoi;
        let mut codes = codes.into_iter();
        hooks.each("vq decode", idx.len(), |k| {
            let ids = codes
                .next()
                .ok_or_else(|| Error::invalid("image", "the image loop returned too few rows"))?;
            let i = idx[k];
            let t = Instant::now();
            let row = &mut run.rows[i];
            let image_codes = ids
                .iter()
                .map(|&id| self.model.cfg.vocab.code_of(id).unwrap_or(0))
                .collect();
            row.segments
                .push(self.model.image_output(image_codes, grid)?);
            row.image_decode_s += t.elapsed().as_secs_f64();
            row.steps += ids.len();
            row.seq.extend(ids);
            row.seq.push(eoi);
            row.done = row.left == 0;
            Ok(())
        })?;
        Ok(())
    }

    /// The Anole image loop after `prompts` (each ending in BOI) in one batch: `grid` image-token
    /// ids each. All `streams × prompts` rows run as one left-padded [`RowBatch`], stacked
    /// stream-major (`[full…; image…; uncond…]`) as the guidance mix expects; each step draws one
    /// uniform per prompt, in prompt order, allowing IMGIMG ids only. `preview_from`: the output
    /// index of the first prompt, for previews.
    pub fn anole_codes(
        &self,
        prompts: &[&[u32]],
        grid: (usize, usize),
        params: &GenerationParams,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
        preview_from: Option<usize>,
    ) -> Result<Vec<Vec<u32>>> {
        let m = &self.model;
        let w_text = params.cfg.unwrap_or(DEFAULT_CFG_TEXT);
        let sampling = SamplingParams::from_params(
            params,
            SamplingParams {
                temperature: DEFAULT_IMAGE_TEMPERATURE,
                top_k: None,
                top_p: Some(DEFAULT_IMAGE_TOP_P),
                min_p: None,
            },
        );
        let pipe = LogitsPipeline::new((w_text != 1.0).then(|| Self::guidance(w_text)), sampling);
        let per_prompt: Vec<[Vec<u32>; 3]> = prompts.iter().map(|p| self.cfg_streams(p)).collect();
        let rows: Vec<RowInput> = (0..pipe.streams())
            .flat_map(|s| per_prompt.iter().map(move |p| RowInput::Ids(&p[s])))
            .collect();
        let n = grid.0 * grid.1;
        let (mut batch, hidden) = RowBatch::prefill(&m.decoder, &rows, n)?;
        // Previews map ids to codes through a table of their own (the callback is `'static`).
        let mut code_of = Vec::new();
        if preview_from.is_some() && hooks.preview.is_some() {
            code_of = vec![None; m.cfg.backbone.vocab_size];
            for (c, &id) in m.cfg.vocab.code_to_id.iter().enumerate() {
                code_of[id as usize] = Some(c as u32);
            }
        }
        let to_code = move |id: u32| code_of.get(id as usize).copied().flatten();
        let to_code: &CodeOf = &to_code;
        let image_loop = CodeLoop {
            preview: preview_from.map(|_| (grid, to_code)),
            first_output: preview_from.unwrap_or(0),
            speculative: params.speculative,
            row_len: Some(grid.1),
            ..CodeLoop::new(&pipe, n)
        };
        let mut only = OnlyRange(m.image_only.clone());
        let ids = image_loop.run(&mut batch, &m.raw_head(), hidden, &mut only, noise, hooks)?;
        Ok(ids.to_vec2::<u32>()?)
    }

    /// Text for the rows `idx` in one left-padded batch (or one at a time when their padded
    /// rows do not fit the context together): each row until EOS or its budget; for interleaved
    /// output a row that writes BOI leaves there, for the image phase.
    fn text_phase(&self, run: &mut Run, idx: &[usize], hooks: &mut Hooks) -> Result<()> {
        let m = &self.model;
        let longest = idx
            .iter()
            .map(|&i| run.rows[i].seq.len())
            .max()
            .unwrap_or(0);
        let room = idx.iter().map(|&i| run.rows[i].left).max().unwrap_or(0);
        if idx.len() > 1 && longest + room > m.context() {
            for &i in idx {
                self.text_phase(run, &[i], hooks)?;
            }
            return Ok(());
        }
        let p = run.params;
        let pipe = LogitsPipeline::new(
            None,
            SamplingParams::from_params(p, SamplingParams::greedy()),
        );
        let (mut batch, hidden) = {
            let inputs: Vec<RowInput> = idx
                .iter()
                .map(|&i| RowInput::Ids(&run.rows[i].seq))
                .collect();
            RowBatch::prefill(&m.decoder, &inputs, room)?
        };
        run.prefilled();
        let s = m.cfg.vocab.ids;
        let lefts: Vec<usize> = idx.iter().map(|&i| run.rows[i].left).collect();
        let owners: Vec<usize> = idx.iter().map(|&i| run.rows[i].owner).collect();
        let interleaved = run.want.has_image();
        let mut counts = vec![0usize; idx.len()];
        let mut on_token = |r: usize, id: u32| {
            counts[r] += 1;
            if interleaved && id == s.boi {
                TokenAction::Handoff
            } else if counts[r] == lefts[r] {
                TokenAction::Stop
            } else {
                TokenAction::Continue
            }
        };
        let stop = [s.eos];
        let text_loop = TextLoop {
            outputs: Some(idx),
            ..TextLoop::new(&pipe, room, &stop).tokenizer(m.tokenizer())
        };
        let head = m.text_head(!interleaved);
        let mut noise = rows_noise(&mut run.sources, &owners);
        let out = text_loop.run(&mut batch, &head, hidden, &mut noise, hooks, &mut on_token)?;
        for (&i, text) in idx.iter().zip(out) {
            self.take_text(&mut run.rows[i], text)?;
        }
        Ok(())
    }

    /// Adds a row's text: handed off at BOI it goes on with an image; otherwise it is done.
    fn take_text(&self, row: &mut Row, text: TextRow) -> Result<()> {
        row.left = row.left.saturating_sub(text.ids.len());
        row.steps += text.ids.len();
        row.seq.extend_from_slice(&text.ids);
        let mut ids = text.ids;
        if text.end == TextEnd::Handoff {
            ids.pop();
        } else {
            row.done = true;
        }
        if !ids.is_empty() || (row.done && row.segments.is_empty()) {
            row.segments.push(self.model.text_output(ids)?);
        }
        Ok(())
    }
}

/// The rows still being written that `f` selects.
fn pick(rows: &[Row], f: impl Fn(&Row) -> bool) -> Vec<usize> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| !r.done && f(r))
        .map(|(i, _)| i)
        .collect()
}

impl Backend for ChameleonBackend {
    fn info(&self) -> ModelInfo {
        let layout = if self.model.original {
            "original Meta layout: consolidated.pth + tokenizer/"
        } else {
            "HF transformers Chameleon layout"
        };
        self.model.info(
            "chameleon",
            layout,
            &self.directions(),
            self.model.default_grid(),
        )
    }

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        capabilities("chameleon", &[Temperature, TopK, TopP, Cfg, MaxNewTokens])
    }

    fn check(&self, req: &Request) -> Result<()> {
        self.model.check(&self.capabilities(), req)
    }

    fn generate_group(&self, group: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        self.generate_rows(group, hooks)
    }

    fn last_logits(&self, ids: &[u32], images: &[ImageInput]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::invalid("raw-ids", "no token ids given"));
        }
        let imgs: Vec<&ImageInput> = images.iter().collect();
        self.model
            .text_last_logits(&self.effective_ids(ids, &imgs, true)?)
    }

    fn decode_codes(&self, codes: &[u32], h: usize, w: usize) -> Result<image::RgbImage> {
        self.model.decode_codes(codes, h, w)
    }

    fn tokenizer(&self) -> Option<&any2any_core::tokenizers::Tokenizer> {
        self.model.tokenizer()
    }
}
