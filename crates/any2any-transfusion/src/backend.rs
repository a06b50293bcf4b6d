//! The [`Backend`] of a Transfusion checkpoint: text→text, image→text, text→image and
//! interleaved text→image→text, following `Transfusion.sample_one`.
//!
//! - Prompt: `[sos]` + the text ids (`raw` ids are fed verbatim); an image in the prompt is
//!   `[meta] "H,W" [som]`, its latent at time 1 and `[eom]` (pixel space: resized to the default
//!   shape, `v / 255`).
//! - Text: causal next-token decoding over the whole vocabulary, stopping at `[eos]` (and, for a
//!   text answer, at a `[som]`); greedy unless a temperature is given (the library's default
//!   `min_p = 0.1` filter is not implemented).
//! - Image: `[meta]` + the shape string (`"H,W"`) + `[som]` are appended to the prompt
//!   (`force_modality_at_start = (0, shape)`), then the latent is sampled ([`crate::flow`]) and
//!   decoded to pixels ([`crate::decode`]).
//! - Interleaved: text until the model draws `[som]`; its shape is the `--size`, else the
//!   digits it wrote after `[meta]` (the library's rule: only an all-digit string counts), else
//!   `modality_default_shape`; after the image the sequence continues with the clean latent
//!   (time 1, as the library conditions previously decoded modalities) and `[eom]`.

use crate::config::OdeMethod;
use crate::decode::LatentDecoder;
use crate::flow::{sample_latent, FlowOptions};
use crate::sequence::{last, lay_out, Part, Rows};
use crate::{TransfusionModel, MAX_CONTEXT};
use any2any_core::backend::{Backend, Capabilities, ModelInfo, Param};
use any2any_core::decode::{text_budget, text_segment, TextEnd, TextLoop, TextRow, TokenAction};
use any2any_core::image;
use any2any_core::image::imageops::FilterType;
use any2any_core::noise::StackedNoise;
use any2any_core::sampling::{LogitsPipeline, SamplingParams};
use any2any_core::stream::{Direction, ImageInput, Modality, Segment};
use any2any_core::tokenizers::Tokenizer;
use any2any_core::{
    Error, Generated, GenerationParams, Hooks, NoiseSource, Output, Request, Result, Timings,
};
use candle_core::Tensor;
use std::time::Instant;

/// Solver steps when the request gives none (`sample_one`'s `modality_steps = 16` grid points).
pub const DEFAULT_STEPS: usize = 15;
/// Guidance weight when the request gives none (`sample_one`'s `cfg_scale = 3`).
pub const DEFAULT_CFG: f32 = 3.0;
/// New text tokens when the request gives no budget.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 64;
/// The library's `text_min_p` (its default 0.1): sampled text (`--temperature > 0`) keeps the
/// tokens of probability ≥ 0.1 × the most likely one; greedy text is unaffected.
pub const TEXT_MIN_P: f32 = 0.1;

/// A loaded Transfusion checkpoint.
pub struct TransfusionBackend {
    model: TransfusionModel,
    tokenizer: Option<Tokenizer>,
    decoder: Option<Box<dyn LatentDecoder>>,
    method: OdeMethod,
    name: String,
}

impl TransfusionBackend {
    /// A backend over `model`; `decoder` turns its latents into pixels (none: no image output).
    pub fn new(
        model: TransfusionModel,
        tokenizer: Option<Tokenizer>,
        decoder: Option<Box<dyn LatentDecoder>>,
        name: String,
    ) -> Result<Self> {
        let method = OdeMethod::parse(&model.config.odeint_kwargs.method, "config.json".as_ref())?;
        Ok(Self {
            model,
            tokenizer,
            decoder,
            method,
            name,
        })
    }

    /// The model.
    pub fn model(&self) -> &TransfusionModel {
        &self.model
    }

    /// Uses `method` instead of the checkpoint's `odeint_kwargs.method`.
    pub fn with_method(mut self, method: OdeMethod) -> Self {
        self.method = method;
        self
    }

    /// The prompt ids of a request: `[sos]` + its text, or its raw ids verbatim.
    pub fn prompt_ids(&self, req: &Request) -> Result<Vec<u32>> {
        let mut ids = if req.raw {
            vec![]
        } else {
            vec![self.model.vocab.sos]
        };
        for s in &req.segments {
            match s {
                Segment::Text(t) => {
                    ids.extend(any2any_core::loading::tokenize(self.tokenizer.as_ref(), t)?)
                }
                Segment::TextIds(t) => ids.extend(t),
                other => {
                    return Err(Error::invalid(
                        "image",
                        format!("transfusion takes text prompts, not {}", other.kind()),
                    ))
                }
            }
        }
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= self.model.vocab.size) {
            return Err(Error::invalid(
                "raw-ids",
                format!(
                    "token id {bad} is outside the vocabulary ({})",
                    self.model.vocab.size
                ),
            ));
        }
        Ok(ids)
    }

    /// The prompt as a sequence: `[sos]` (unless raw), the text ids, and each image as
    /// `[meta] "H,W" [som]`, its latent at time 1 (a clean, previously seen modality) and
    /// `[eom]` — the library's layout of a modality prompt (`prepare_prompt_sample`).
    pub fn prompt_parts(&self, req: &Request) -> Result<Vec<Part>> {
        let v = &self.model.vocab;
        let mut parts = vec![];
        let mut ids = if req.raw { vec![] } else { vec![v.sos] };
        for s in &req.segments {
            match s {
                Segment::Image(img) => {
                    let (grid, tokens) = self.encode_image(img)?;
                    ids.extend(self.image_opening(grid));
                    parts.push(Part::Text(std::mem::replace(&mut ids, vec![v.eom[0]])));
                    parts.push(Part::Latent { tokens, time: 1.0 });
                }
                other => {
                    let one = Request {
                        segments: vec![other.clone()],
                        raw: true,
                        ..Request::new()
                    };
                    ids.extend(self.prompt_ids(&one)?);
                }
            }
        }
        parts.push(Part::Text(ids));
        Ok(parts)
    }

    /// An input image as latent tokens `[n, C]` on its token grid: resized (bilinear) to the
    /// checkpoint's default shape (× the codec's factor) when it has one, else to a multiple
    /// of the factor, then encoded by the latent codec.
    fn encode_image(&self, img: &ImageInput) -> Result<((usize, usize), Tensor)> {
        let dec = self.decoder()?;
        let f = dec.factor() as u32;
        let (h, w) = match self.model.modality.default_shape.as_deref() {
            Some(&[h, w]) => (h as u32 * f, w as u32 * f),
            _ => ((img.height() / f).max(1) * f, (img.width() / f).max(1) * f),
        };
        let px = if (h, w) != (img.height(), img.width()) {
            image::imageops::resize(&img.pixels, w, h, FilterType::Triangle)
        } else {
            img.pixels.clone()
        };
        let grid = ((h / f) as usize, (w / f) as usize);
        if grid.0 * grid.1 > MAX_CONTEXT {
            return Err(Error::invalid(
                "image",
                format!(
                    "{}×{} px is {} tokens (at most {MAX_CONTEXT})",
                    grid.1,
                    grid.0,
                    grid.0 * grid.1
                ),
            ));
        }
        let chw = dec.encode(&px, self.model.modality.dim_latent, self.model.device())?;
        let c = chw.dim(0)?;
        let tokens = chw.permute((1, 2, 0))?.reshape((grid.0 * grid.1, c))?;
        Ok((grid, tokens))
    }

    /// The `(height, width)` token grid of an image: `--size`, else the all-digit shape string
    /// the model wrote (`meta`), else the checkpoint's default shape.
    pub fn image_shape(&self, p: &GenerationParams, meta: Option<&str>) -> Result<(usize, usize)> {
        let shape = if let Some((w, h)) = p.size {
            vec![h, w]
        } else if let Some(n) = meta
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|&n| n > 0)
        {
            vec![n]
        } else {
            self.model.modality.default_shape.clone().ok_or_else(|| {
                Error::invalid(
                    "size",
                    "the checkpoint has no modality_default_shape: give --size WxH",
                )
            })?
        };
        match shape[..] {
            [h, w] if h > 0 && w > 0 && h.saturating_mul(w) <= MAX_CONTEXT => Ok((h, w)),
            _ => Err(Error::invalid(
                "size",
                format!(
                    "an image needs a 2-D token grid of at most {MAX_CONTEXT} tokens, \
                     got shape {shape:?}"
                ),
            )),
        }
    }

    fn flow_options(&self, p: &GenerationParams) -> FlowOptions {
        FlowOptions {
            steps: p.steps.unwrap_or(DEFAULT_STEPS),
            cfg: p.cfg.unwrap_or(DEFAULT_CFG),
            method: self.method,
        }
    }

    /// `[n, C]` latent tokens of an `h × w` grid → `[C, h, w]`.
    pub fn channel_first(z: &Tensor, (h, w): (usize, usize)) -> Result<Tensor> {
        let c = z.dim(1)?;
        Ok(z.reshape((h, w, c))?.permute((2, 0, 1))?.contiguous()?)
    }

    /// Samples and decodes one image after `history`; the image, its latent `[n, C]` and the
    /// conditioned row (history cached, room for `room` more tokens).
    fn image<'m>(
        &'m self,
        history: &[Part],
        grid: (usize, usize),
        room: usize,
        p: &GenerationParams,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<(Generated, Tensor, Rows<'m>)> {
        let dec = self.decoder()?;
        let opts = self.flow_options(p);
        let (z, rows) = sample_latent(
            &self.model,
            history,
            grid.0 * grid.1,
            room,
            &opts,
            noise,
            hooks,
        )?;
        let image = dec.decode(&Self::channel_first(&z, grid)?)?;
        let g = Generated::Image {
            image,
            codes: None,
            grid: Some(grid),
        };
        Ok((g, z, rows))
    }

    fn decoder(&self) -> Result<&dyn LatentDecoder> {
        self.decoder.as_deref().ok_or_else(|| Error::Unsupported {
            family: "transfusion".into(),
            direction: format!(
                "images from a {}-channel latent without an image decoder (pixel space takes \
                 1 or 3 channels; a latent-space checkpoint needs its `vae` component: a `vae/` \
                 folder beside it or --component vae=DIR)",
                self.model.modality.dim_latent
            ),
            supported: "text→text".into(),
        })
    }

    /// The `[meta] "H,W" [som]` that opens an image of `grid`.
    fn image_opening(&self, grid: (usize, usize)) -> Vec<u32> {
        let v = &self.model.vocab;
        let mut ids = vec![v.meta];
        ids.extend(v.chars(&format!("{},{}", grid.0, grid.1)));
        ids.extend(&v.som);
        ids
    }

    /// One output of `req` from `prompt`.
    fn generate_one(
        &self,
        req: &Request,
        prompt: &[Part],
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Vec<Generated>> {
        if req.want == Modality::Image {
            let grid = self.image_shape(&req.params, None)?;
            let mut history = prompt.to_vec();
            match history.last_mut() {
                Some(Part::Text(ids)) => ids.extend(self.image_opening(grid)),
                _ => history.push(Part::Text(self.image_opening(grid))),
            }
            let (g, _, _) = self.image(&history, grid, 0, &req.params, noise, hooks)?;
            return Ok(vec![g]);
        }
        self.text_and_images(req, prompt.to_vec(), noise, hooks)
    }

    /// Text, with images where the model opens them (interleaved answers; a prompt ending with
    /// `[som]` opens one at once, as in `sample_one`).
    fn text_and_images(
        &self,
        req: &Request,
        history: Vec<Part>,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Vec<Generated>> {
        let prompt_len = lay_out(&self.model, std::slice::from_ref(&history), 0)?
            .positions
            .len();
        let tail = match history.last() {
            Some(Part::Text(ids)) => ids.clone(),
            _ => vec![],
        };
        let p = &req.params;
        let v = &self.model.vocab;
        let interleaved = req.want == Modality::Interleaved;
        let mut left = text_budget(
            p.max_new_tokens,
            DEFAULT_MAX_NEW_TOKENS,
            prompt_len,
            MAX_CONTEXT,
        )?;
        let pipe = LogitsPipeline::new(
            None,
            SamplingParams::from_params(
                p,
                SamplingParams {
                    min_p: Some(TEXT_MIN_P),
                    ..SamplingParams::greedy()
                },
            ),
        );
        let mut stop = vec![v.eos];
        if !interleaved {
            stop.extend(&v.som);
        }
        let mut open = interleaved && tail.last().is_some_and(|i| v.som.contains(i));
        let mut ans = Answer {
            history,
            shown: tail.len(),
            text: tail,
            segs: Vec::new(),
        };
        let (mut rows, h) = Rows::prefill(&self.model, std::slice::from_ref(&ans.history), left)?;
        let mut hidden = last(&h)?;
        loop {
            if open {
                let (r, h) = self.image_in_answer(&mut ans, left, p, noise, hooks)?;
                (rows, hidden) = (r, h);
            }
            if left == 0 {
                break;
            }
            let tl = TextLoop::new(&pipe, left, &stop).tokenizer(self.tokenizer.as_ref());
            let row = self.text_run(&tl, &mut rows, hidden.clone(), noise, hooks)?;
            left -= row.ids.len().min(left);
            ans.text.extend(&row.ids);
            ans.history.push(Part::Text(row.ids));
            open = row.end == TextEnd::Handoff;
            if !open {
                break;
            }
        }
        let text = ans.text.split_off(ans.shown);
        if !text.is_empty() || ans.segs.is_empty() {
            ans.segs.push(text_segment(self.tokenizer.as_ref(), text)?);
        }
        Ok(ans.segs)
    }

    /// One text loop over the answer's row, handing off at a `[som]`.
    fn text_run(
        &self,
        tl: &TextLoop,
        rows: &mut Rows,
        hidden: Tensor,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<TextRow> {
        let som = &self.model.vocab.som;
        let mut on_token = |_: usize, id: u32| match som.contains(&id) {
            true => TokenAction::Handoff,
            false => TokenAction::Continue,
        };
        let head = rows.head();
        // the loop retires a row's noise when it ends: lend it the request's source
        let mut text_noise = StackedNoise::new(vec![(Box::new(&mut *noise), 1)]);
        tl.run(rows, &head, hidden, &mut text_noise, hooks, &mut on_token)?
            .into_iter()
            .next()
            .ok_or_else(|| Error::invalid("prompt", "no row decoded"))
    }

    /// The image the answer's last `[som]` opens: the text so far becomes a segment, the image
    /// follows, and the sequence goes on with the clean latent (time 1) and `[eom]`; the row
    /// holding it all and the hidden state after `[eom]`.
    fn image_in_answer(
        &self,
        ans: &mut Answer,
        left: usize,
        p: &GenerationParams,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<(Rows<'_>, Tensor)> {
        let v = &self.model.vocab;
        let grid = self.image_shape(p, shape_string(&ans.text, v).as_deref())?;
        let text = ans.text.split_off(ans.shown);
        if !text.is_empty() {
            ans.segs.push(text_segment(self.tokenizer.as_ref(), text)?);
        }
        let n = grid.0 * grid.1;
        let (g, z, mut rows) = self.image(&ans.history, grid, n + 1 + left, p, noise, hooks)?;
        ans.segs.push(g);
        let after = vec![
            Part::Latent {
                tokens: z,
                time: 1.0,
            },
            Part::Text(vec![v.eom[0]]),
        ];
        ans.history.extend(after.iter().cloned());
        (ans.text, ans.shown) = (vec![v.eom[0]], 1);
        let hidden = last(&rows.feed(&[after])?)?;
        Ok((rows, hidden))
    }
}

/// An interleaved answer being built: the sequence so far, the ids since the last image (from
/// `shown` on: new text), and the finished segments.
struct Answer {
    history: Vec<Part>,
    text: Vec<u32>,
    segs: Vec<Generated>,
    shown: usize,
}

/// The shape string after the last `[meta]` of `ids`, without the final `[som]`
/// (`get_modality_shape_from_seq`); `None` without a `[meta]`.
fn shape_string(ids: &[u32], v: &crate::config::Vocab) -> Option<String> {
    let at = ids.iter().rposition(|&i| i == v.meta)?;
    let tail = &ids[at + 1..];
    Some(v.decode_chars(&tail[..tail.len().saturating_sub(1)]))
}

impl Backend for TransfusionBackend {
    fn info(&self) -> ModelInfo {
        let t = &self.model.config.transformer;
        let grid = self
            .model
            .modality
            .default_shape
            .as_ref()
            .and_then(|s| match s[..] {
                [h, w] => Some((h, w)),
                _ => None,
            });
        ModelInfo {
            family: "transfusion".into(),
            variant: format!(
                "{} (transfusion-pytorch; {}-channel latent, {}, {} solver)",
                self.name,
                self.model.modality.dim_latent,
                self.decoder
                    .as_ref()
                    .map_or("no image decoder", |d| d.name()),
                self.model.config.odeint_kwargs.method
            ),
            directions: self.directions().iter().map(ToString::to_string).collect(),
            parameters: self.model.num_params(),
            vocab_size: self.model.vocab.size,
            hidden_size: t.dim,
            layers: t.depth,
            context: MAX_CONTEXT,
            image_tokens: grid,
            image_size: self
                .decoder
                .as_ref()
                .and_then(|d| grid.map(|(h, w)| (h * d.factor(), w * d.factor()))),
            dtype: format!("{:?}", self.model.dtype()),
            device: format!("{:?}", self.model.device()),
        }
    }

    /// As the capabilities say, but an image asked of a model without its image decoder (a
    /// latent-space checkpoint whose `vae` component is missing) names the component.
    fn check(&self, req: &Request) -> Result<()> {
        let wants_image = req.want != Modality::Text || !req.images().is_empty();
        if wants_image && self.decoder.is_none() {
            self.decoder()?;
        }
        self.capabilities().check(req)
    }

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        let text = vec![Temperature, TopK, TopP, MaxNewTokens];
        let image = vec![Cfg, Steps, Size];
        let mut directions = vec![(Direction::TextToText, text.clone())];
        if self.decoder.is_some() {
            directions.push((Direction::TextToImage, image.clone()));
            directions.push((Direction::ImageToText, text.clone()));
            directions.push((Direction::Interleaved, [text, image].concat()));
        }
        Capabilities {
            family: "transfusion",
            directions,
            edits: vec![],
        }
    }

    fn generate_group(&self, group: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for req in group {
            let t0 = Instant::now();
            let prompt = self.prompt_parts(req)?;
            let mut noise = hooks.take_noise(req.params.seed);
            for _ in 0..req.num_outputs {
                let t1 = Instant::now();
                let segments = self.generate_one(req, &prompt, noise.as_mut(), hooks)?;
                out.push(Output {
                    segments,
                    timings: Timings {
                        decode_s: t1.elapsed().as_secs_f64(),
                        total_s: t0.elapsed().as_secs_f64(),
                        ..Default::default()
                    },
                });
            }
        }
        Ok(out)
    }

    fn last_logits(&self, ids: &[u32], images: &[ImageInput]) -> Result<Tensor> {
        if !images.is_empty() {
            return Err(Error::invalid(
                "image",
                "transfusion logits take token ids only",
            ));
        }
        if ids.is_empty() {
            return Err(Error::invalid("raw-ids", "no token ids given"));
        }
        let req = Request::new().raw_ids(ids.to_vec());
        let ids = self.prompt_ids(&req)?;
        let (_, h) = Rows::prefill(&self.model, &[vec![Part::Text(ids)]], 0)?;
        Ok(self.model.logits(&last(&h)?)?.squeeze(0)?)
    }

    fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }
}
