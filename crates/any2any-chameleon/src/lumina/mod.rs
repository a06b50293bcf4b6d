//! Lumina-mGPT (Alpha-VLLM, `ChameleonXLLMXForConditionalGeneration`) on the Chameleon model.
//!
//! The image layout is self-describing (see [`layout`]). One free-running loop writes text and
//! images ([`machine::Machine`] on the engine's `CodeLoop`): a BOI opens an image, the size
//! tokens fix its grid, the newline is forced at each row end and EOI after the last row, and
//! the sequence stops at `<reserved08706>`. Guidance is single-stream on raw logits,
//! `u + w·(c − u)`, where the unconditional context starts at the image's BOI and runs from the
//! moment both size tokens exist (Lumina's
//! `LLMImageStartTriggeredUnbatchedClassifierFreeGuidanceLogitsProcessor`). Image tokens use
//! their own top-k (default 2000), text tokens another (default 10); temperature 1. Text output
//! masks the image start: the model writes text only.

pub mod layout;
pub mod machine;
mod prompt;

pub use layout::{crop_sizes, image_instruction, LuminaLayout};

use crate::model::{capabilities, one_row_noise, ChameleonModel};
use any2any_core::backend::{Backend, Capabilities, ModelInfo, Param};
use any2any_core::candle_core::Tensor;
use any2any_core::decode::{text_budget, CodeLoop, RowBatch, RowInput, TextLoop, TokenAction};
use any2any_core::loading::{LoadOptions, ModelFiles};
use any2any_core::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any_core::{
    Error, Generated, Hooks, ImageInput, Modality, NoiseSource, Output, Request, Result, Segment,
    Timings,
};
use layout::{DEFAULT_CFG, DEFAULT_IMAGE_TOP_K, DEFAULT_TEMPERATURE, DEFAULT_TEXT_TOP_K};
use machine::{Machine, Pipes, Vocab};
use std::time::Instant;

/// The loop settings of one output: the samplings, the guided pipeline of image rows, and
/// speculative decoding of the image rows.
struct Loops<'a> {
    pipes: &'a Pipes,
    guided: Option<&'a LogitsPipeline>,
    speculative: Option<any2any_core::Speculative>,
}

/// The architecture Lumina-mGPT's config.json names.
pub const ARCHITECTURE: &str = "ChameleonXLLMXForConditionalGeneration";

/// `architectures` names [`ARCHITECTURE`].
pub fn matches(cfg: &serde_json::Value) -> bool {
    cfg.get("architectures")
        .and_then(|a| a.as_array())
        .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(ARCHITECTURE)))
}

/// Registry entry point.
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(LuminaBackend::load(files, opts)?))
}

/// A loaded Lumina-mGPT checkpoint.
pub struct LuminaBackend {
    /// The shared Chameleon model.
    pub model: ChameleonModel,
    /// Lumina-mGPT's size and newline tokens.
    pub lumina: LuminaLayout,
}

impl LuminaBackend {
    /// Loads the HF layout of a Lumina-mGPT checkpoint (config.json naming [`ARCHITECTURE`]).
    pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Self> {
        let model = ChameleonModel::load(files, opts)?;
        let cfg_err = |msg: String| Error::Config {
            path: files.config.clone(),
            msg,
        };
        if !model.cfg.architectures.iter().any(|a| a == ARCHITECTURE) {
            return Err(cfg_err(format!(
                "not a Lumina-mGPT config: `architectures` is {:?}, not [\"{ARCHITECTURE}\"]",
                model.cfg.architectures
            )));
        }
        let lumina =
            LuminaLayout::new(&model.cfg, &files.name).map_err(|e| cfg_err(e.to_string()))?;
        Ok(Self { model, lumina })
    }

    /// The samplings of a request: text (text top-k) and image tokens (image top-k), and the
    /// guided one of image rows (`None` for cfg 1).
    fn pipes(&self, req: &Request) -> (Pipes, Option<LogitsPipeline>) {
        let p = &req.params;
        let temperature = p.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        let sampling = |top_k| SamplingParams {
            temperature,
            top_k: Some(top_k),
            top_p: p.top_p,
            min_p: None,
        };
        let image = sampling(p.image_top_k.unwrap_or(DEFAULT_IMAGE_TOP_K));
        let w = p.cfg.unwrap_or(DEFAULT_CFG);
        let guided = (w != 1.0).then(|| {
            LogitsPipeline::new(Some(Guidance::two_stream(w, GuidanceSpace::Logits)), image)
        });
        let pipes = Pipes {
            text: LogitsPipeline::new(None, sampling(p.top_k.unwrap_or(DEFAULT_TEXT_TOP_K))),
            image: LogitsPipeline::new(None, image),
        };
        (pipes, guided)
    }

    /// One output of a request.
    fn generate_one(
        &self,
        req: &Request,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Output> {
        let t0 = Instant::now();
        let prompt = self.prompt(req)?;
        let (pipes, guided) = self.pipes(req);
        let v = &self.model.cfg.vocab;
        let vocab = Vocab {
            ids: v.ids,
            layout: &self.lumina,
            codes: &v.image_ids,
            size: self.model.cfg.backbone.vocab_size,
            device: self.model.device(),
        };
        let mut mc = Machine::new(
            prompt,
            vocab,
            &pipes,
            guided.is_some(),
            req.want == Modality::Image,
        )?;
        if req.want == Modality::Text {
            if let Some(boi) = mc.open() {
                return Err(Error::invalid(
                    "to",
                    format!("the prompt leaves an image open (its start at position {boi}), and text output writes none: ask for image or text,image output"),
                ));
            }
            let ids = self.text_only(&mc.seq, req, &pipes.text, noise, hooks)?;
            let steps = ids.len();
            return self.output(vec![self.model.text_output(ids)?], steps, t0);
        }
        let max_new = self.budget(req, &mc)?;
        let loops = Loops {
            pipes: &pipes,
            guided: guided.as_ref(),
            speculative: req.params.speculative,
        };
        self.run(&mut mc, max_new, &loops, noise, hooks)?;
        let td = Instant::now();
        let segments = self.segments(&mc, req.want, max_new)?;
        let mut out = self.output(segments, mc.generated(), t0)?;
        out.timings.image_decode_s = td.elapsed().as_secs_f64();
        Ok(out)
    }

    /// The budget of a free-running output: `max_new_tokens`, or for image output with the
    /// header written exactly the rows and EOI (which must fit), else the rest of the context.
    fn budget(&self, req: &Request, mc: &Machine) -> Result<usize> {
        let exact = match (mc.open_grid(), req.want) {
            (Some((h, w)), Modality::Image) => Some(h * (w + 1) + 1),
            _ => None,
        };
        let requested = req.params.max_new_tokens.or(exact);
        text_budget(requested, usize::MAX, mc.seq.len(), self.model.context())
    }

    /// The free-running loop: single-row `CodeLoop`s over the machine, and for guided image
    /// rows a two-row batch (the sequence; the image from its BOI) until EOI; the single row
    /// starts again from the whole sequence after a guided image.
    fn run(
        &self,
        mc: &mut Machine,
        max_new: usize,
        loops: &Loops,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<()> {
        let (pipes, guided) = (loops.pipes, loops.guided);
        let m = &self.model;
        let head = m.text_head(false);
        while !mc.finished() && mc.generated() < max_new {
            let left = max_new - mc.generated();
            // The machine picks the sampling of each single-row step (text or image tokens).
            let (pair, pipe) = match (mc.pair_start(), guided) {
                (Some(boi), Some(g)) => (Some(boi), g),
                _ => (None, &pipes.text),
            };
            let (mut batch, hidden) = {
                let mut rows = vec![RowInput::Ids(&mc.seq)];
                rows.extend(pair.map(|boi| RowInput::Ids(&mc.seq[boi..])));
                RowBatch::prefill(&m.decoder, &rows, left)?
            };
            mc.set_paired(pair.is_some());
            let code_loop = CodeLoop {
                stage: "tokens",
                speculative: loops.speculative,
                ..CodeLoop::new(pipe, left)
            };
            code_loop.run(&mut batch, &head, hidden, mc, noise, hooks)?;
            mc.set_paired(false);
        }
        Ok(())
    }

    /// Text only: the image start masked out, until `<reserved08706>` (not kept) or the budget.
    fn text_only(
        &self,
        prompt: &[u32],
        req: &Request,
        pipe: &LogitsPipeline,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Vec<u32>> {
        let m = &self.model;
        let sep = m.cfg.vocab.ids.sep;
        let max_new = text_budget(
            req.params.max_new_tokens,
            usize::MAX,
            prompt.len(),
            m.context(),
        )?;
        let (mut batch, hidden) = RowBatch::prefill(&m.decoder, &[RowInput::Ids(prompt)], max_new)?;
        let stop = [sep];
        let text_loop = TextLoop::new(pipe, max_new, &stop).tokenizer(m.tokenizer());
        let mut stacked = one_row_noise(noise);
        let mut rows = text_loop.run(
            &mut batch,
            &m.text_head(true),
            hidden,
            &mut stacked,
            hooks,
            &mut |_, _| TokenAction::Continue,
        )?;
        let mut ids = rows.pop().map(|r| r.ids).unwrap_or_default();
        if ids.last() == Some(&sep) {
            ids.pop();
        }
        Ok(ids)
    }

    /// The output segments of a finished loop: text runs (the closing `<reserved08706>` left
    /// out) and the closed images; a budget that ended inside an image whose grid is known (or
    /// any image of image output) is an error naming `max-new-tokens`.
    fn segments(&self, mc: &Machine, want: Modality, max_new: usize) -> Result<Vec<Generated>> {
        if let Some(boi) = mc.open() {
            if want == Modality::Image || mc.open_grid().is_some() {
                return Err(Error::invalid(
                    "max-new-tokens",
                    format!("the budget of {max_new} tokens ended inside an image (started at position {boi})"),
                ));
            }
        }
        let sep = self.model.cfg.vocab.ids.sep;
        let mut out = Vec::new();
        let mut pos = mc.prompt_len;
        for img in &mc.images {
            let text = &mc.seq[pos..img.boi.max(pos)];
            if !text.is_empty() {
                out.push(self.model.text_output(text.to_vec())?);
            }
            out.push(self.image(&mc.seq[img.boi + 3..img.eoi], img.grid)?);
            pos = img.eoi + 1;
        }
        let end = mc.open().map_or(mc.seq.len(), |boi| boi.max(pos));
        let mut text = mc.seq[pos..end].to_vec();
        if mc.finished() && text.last() == Some(&sep) {
            text.pop();
        }
        if !text.is_empty() || out.is_empty() {
            out.push(self.model.text_output(text)?);
        }
        if want == Modality::Image && mc.images.is_empty() {
            return Err(Error::invalid("model", "the model produced no image"));
        }
        Ok(out)
    }

    /// The image of a closed block: `body` is everything between the size tokens and EOI.
    fn image(&self, body: &[u32], (h, w): (usize, usize)) -> Result<Generated> {
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
            if row[w] != self.lumina.newline {
                return Err(Error::invalid(
                    "ids",
                    "a Lumina image row does not end in the newline token",
                ));
            }
            for &id in &row[..w] {
                codes.push(self.model.cfg.vocab.code_of(id).ok_or_else(|| {
                    Error::invalid(
                        "ids",
                        format!("token {id} inside an image is not an image token"),
                    )
                })?);
            }
        }
        self.model.image_output(codes, (h, w))
    }

    fn output(&self, segments: Vec<Generated>, steps: usize, t0: Instant) -> Result<Output> {
        let total = t0.elapsed().as_secs_f64();
        Ok(Output {
            segments,
            timings: Timings {
                prefill_s: 0.0,
                decode_s: total,
                steps,
                image_decode_s: 0.0,
                total_s: total,
            },
        })
    }
}

impl Backend for LuminaBackend {
    fn info(&self) -> ModelInfo {
        let g = self.lumina.target_size / self.model.cfg.vq.downsample_factor();
        self.model.info(
            "lumina",
            "Lumina-mGPT layout (HF transformers Chameleon weights)",
            &self.directions(),
            (g, g),
        )
    }

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        capabilities(
            "lumina",
            &[Temperature, TopK, TopP, Cfg, MaxNewTokens, ImageTopK, Size],
        )
    }

    fn check(&self, req: &Request) -> Result<()> {
        self.model.check(&self.capabilities(), req)
    }

    /// One output at a time, each request drawing from its own seed's source.
    fn generate_group(&self, group: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for r in group {
            let mut noise = hooks.take_noise(r.params.seed);
            for _ in 0..r.num_outputs {
                out.push(self.generate_one(r, noise.as_mut(), hooks)?);
            }
        }
        Ok(out)
    }

    /// Each `<image>` token of `ids` stands for the next image's whole Lumina block.
    fn last_logits(&self, ids: &[u32], images: &[ImageInput]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::invalid("raw-ids", "no token ids given"));
        }
        let mut req = Request::new().raw_ids(ids.to_vec());
        req.segments
            .extend(images.iter().cloned().map(Segment::Image));
        self.model.text_last_logits(&self.prompt(&req)?)
    }

    fn decode_codes(&self, codes: &[u32], h: usize, w: usize) -> Result<image::RgbImage> {
        self.model.decode_codes(codes, h, w)
    }

    fn tokenizer(&self) -> Option<&any2any_core::tokenizers::Tokenizer> {
        self.model.tokenizer()
    }
}
