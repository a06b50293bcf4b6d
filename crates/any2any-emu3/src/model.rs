//! The Emu3 model: a Llama decoder over one vocabulary that holds text and VQ codes, and the
//! MoVQGAN tokenizer that maps images to and from those codes.

use crate::config::{Emu3Config, Emu3Vocab};
use crate::vq::{Emu3VqDecoder, Emu3VqEncoder};
use any2any_core::backbone::{BackboneConfig, Decoder};
use any2any_core::candle_core::{Device, Tensor};
use any2any_core::candle_nn::VarBuilder;
use any2any_core::decode::{
    CodeLoop, Head, LmHead, RowBatch, RowGrid, RowInput, TextLoop, TokenAction,
};
use any2any_core::nn::Linear;
use any2any_core::noise::{NoiseSource, SeededNoise, StackedNoise};
use any2any_core::sampling::{LogitsPipeline, SamplingParams};
use any2any_core::{Error, Hooks, Result, Speculative};

/// Every weight of an Emu3 checkpoint.
pub struct Emu3Model {
    /// The checkpoint's configuration.
    pub cfg: Emu3Config,
    /// The special ids, parsed from `cfg.vocabulary_map`.
    pub vocab: Emu3Vocab,
    /// The language model's shape, from `cfg.text_config`.
    pub backbone_cfg: BackboneConfig,
    /// The Llama decoder (`text_model.model`).
    pub decoder: Decoder,
    /// Logits over text and visual tokens (`text_model.lm_head`).
    pub lm_head: Linear,
    /// Pixels to VQ codes (`vqmodel.encoder`, `quant_conv`, the codebook).
    pub vq_encoder: Emu3VqEncoder,
    /// VQ codes to pixels (`vqmodel.decoder`, `post_quant_conv`, the codebook).
    pub vq_decoder: Emu3VqDecoder,
}

/// The result of one constrained image generation.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTokens {
    /// Every new id, markers included (`h·(w+1)` grid ids, then EOF, EOI, EOS).
    pub new_ids: Vec<u32>,
    /// VQ codes, row-major `h·w`.
    pub codes: Vec<u32>,
}

/// What the layout grammar allows at step `i` of an `h × w` image: a visual token inside a row,
/// EOL at each row end, then EOF, EOI and EOS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Slot {
    /// Any visual token (one VQ code).
    Visual,
    /// Exactly this id (a marker: EOL, EOF, EOI, EOS).
    Fixed(u32),
}

impl Emu3Vocab {
    /// The row-layout grammar of a generated `h × w` grid: visual tokens, EOL after each row,
    /// then EOF, EOI and EOS.
    pub fn image_grid(&self, h: usize, w: usize, vocab: usize, device: &Device) -> Result<RowGrid> {
        RowGrid::new(
            (h, w),
            &self.visual,
            self.eol,
            &[self.eof, self.eoi, self.eos],
            vocab,
            device,
        )
    }

    /// The layout of a generated `h × w` grid, one entry per new token (the grammar of
    /// [`Self::image_grid`], spelled out).
    pub fn image_schedule(&self, h: usize, w: usize) -> Result<Vec<Slot>> {
        let grid = self.image_grid(h, w, self.max_id() as usize + 1, &Device::Cpu)?;
        Ok((0..grid.len())
            .map(|t| grid.fixed_at(t).map_or(Slot::Visual, Slot::Fixed))
            .collect())
    }

    fn max_id(&self) -> u32 {
        let fixed = [self.eol, self.eof, self.eoi, self.eos];
        self.visual.iter().chain(&fixed).copied().max().unwrap_or(0)
    }
}

impl Emu3Model {
    /// `vb` at the checkpoint root. `save_pretrained` writes the legacy layout
    /// `text_model.model.*`, `text_model.lm_head.weight`, `vqmodel.*`.
    pub fn load(vb: VarBuilder, cfg: &Emu3Config) -> Result<Self> {
        let bb = cfg.text_config.to_backbone("config.json: text_config")?;
        cfg.vq_config.validate("config.json: vq_config")?;
        let decoder = Decoder::load(vb.pp("text_model.model"), &bb)?;
        let lm_head = Linear::new(any2any_core::backbone::lm_head(
            vb.pp("text_model.lm_head"),
            &bb,
        )?)?;
        Ok(Self {
            vocab: Emu3Vocab::from_config(cfg)?,
            vq_encoder: Emu3VqEncoder::load(vb.pp("vqmodel"), &cfg.vq_config)?,
            vq_decoder: Emu3VqDecoder::load(vb.pp("vqmodel"), &cfg.vq_config)?,
            cfg: cfg.clone(),
            backbone_cfg: bb,
            decoder,
            lm_head,
        })
    }

    /// The LM head over the shared decoder: the ends of every decode step.
    pub fn head(&self) -> LmHead<'_> {
        LmHead {
            decoder: &self.decoder,
            head: &self.lm_head,
        }
    }

    /// Last-position logits `[vocab]` of one prompt.
    pub fn last_logits(&self, ids: &[u32]) -> Result<Tensor> {
        let (_, hidden) = RowBatch::prefill(&self.decoder, &[RowInput::Ids(ids)], 0)?;
        Ok(self.head().logits(&hidden)?.squeeze(0)?)
    }

    /// Codes of normalised pixels `[1, 3, H, W]`, as BPE ids with EOL after each row.
    pub fn image_ids(&self, pixels: &Tensor) -> Result<Vec<u32>> {
        let codes = self
            .vq_encoder
            .encode(&pixels.to_dtype(self.decoder.dtype())?)?;
        let (_, h, w) = codes.dims3()?;
        let codes = codes.flatten_all()?.to_vec1::<u32>()?;
        let mut out = Vec::with_capacity(h * (w + 1));
        for row in codes.chunks(w) {
            for &c in row {
                out.push(self.vocab.code_to_id(c).ok_or_else(|| {
                    Error::invalid("vq", format!("code {c} outside the codebook"))
                })?);
            }
            out.push(self.vocab.eol);
        }
        Ok(out)
    }

    /// Replaces the `<image>` placeholders of `ids`, in order, by the ids of `images` (each from
    /// [`Self::image_ids`]); the placeholder count must equal their total length.
    pub fn substitute_images(&self, ids: &[u32], images: &[Vec<u32>]) -> Result<Vec<u32>> {
        let ph = self.vocab.image_placeholder;
        let n = ids.iter().filter(|&&i| i == ph).count();
        let total: usize = images.iter().map(Vec::len).sum();
        if n != total {
            return Err(Error::invalid(
                "image",
                format!("{n} image placeholders in the prompt, {total} image tokens"),
            ));
        }
        let mut it = images.iter().flatten();
        Ok(ids
            .iter()
            .map(|&i| if i == ph { *it.next().unwrap_or(&i) } else { i })
            .collect())
    }

    /// Greedy continuation of one prompt, at most `n` new ids, stopping after `stop`.
    pub fn greedy_text(&self, prompt: &[u32], n: usize, stop: Option<u32>) -> Result<Vec<u32>> {
        let (mut batch, hidden) = RowBatch::prefill(&self.decoder, &[RowInput::Ids(prompt)], n)?;
        let pipe = LogitsPipeline::new(None, SamplingParams::greedy());
        let stop: Vec<u32> = stop.into_iter().collect();
        let mut noise = StackedNoise::new(vec![(Box::new(SeededNoise::new(0)), 1)]);
        let mut rows = TextLoop::new(&pipe, n, &stop).run(
            &mut batch,
            &self.head(),
            hidden,
            &mut noise,
            &mut Hooks::new(),
            &mut |_, _| TokenAction::Continue,
        )?;
        Ok(rows.pop().map(|r| r.ids).unwrap_or_default())
    }

    /// Constrained generation of one `h × w` (`grid`) image after `prompt` (which ends with
    /// `<|image start|>h*w<|image token|>`). With guidance in the pipeline, `negative` is the
    /// unconditioned stream (its own prompt, fed the same new ids), stacked as rows
    /// `[cond; neg]`. One uniform is drawn per step, forced steps included; `hooks` sees each
    /// step (progress, cancellation, previews).
    pub fn generate_image(
        &self,
        prompt: &[u32],
        negative: Option<&[u32]>,
        grid: (usize, usize),
        pipe: &LogitsPipeline,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<ImageTokens> {
        self.generate_images(&[(prompt, negative)], grid, pipe, None, noise, hooks)?
            .pop()
            .ok_or_else(|| Error::invalid("prompt", "no image was generated"))
    }

    /// [`Self::generate_image`] for several (prompt, negative prompt) pairs in one batch: the
    /// rows are stacked stream-major (`[cond…; negative…]`, left-padded, each with its own
    /// positions), the row-layout grammar is the same for all, each step draws one uniform per
    /// image in order, and the drawn ids stay on the device until the end.
    pub fn generate_images(
        &self,
        pairs: &[(&[u32], Option<&[u32]>)],
        (h, w): (usize, usize),
        pipe: &LogitsPipeline,
        speculative: Option<Speculative>,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Vec<ImageTokens>> {
        let streams = pipe.streams();
        if streams > 2 {
            return Err(Error::invalid(
                "cfg",
                format!("Emu3 uses two guidance streams, not {streams}"),
            ));
        }
        if pairs.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows: Vec<RowInput> = pairs.iter().map(|p| RowInput::Ids(p.0)).collect();
        if streams == 2 {
            rows.extend(
                pairs
                    .iter()
                    .map(|p| RowInput::Ids(p.1.unwrap_or(&p.0[..0]))),
            );
        }
        let mut layout =
            self.vocab
                .image_grid(h, w, self.backbone_cfg.vocab_size, self.decoder.device())?;
        let steps = layout.len();
        let (mut batch, hidden) = RowBatch::prefill(&self.decoder, &rows, steps)?;
        let code_of = |id: u32| self.vocab.id_to_code(id);
        let mut lp = CodeLoop::new(pipe, steps);
        lp.preview = Some(((h, w), &code_of));
        lp.speculative = speculative;
        let ids = lp.run(&mut batch, &self.head(), hidden, &mut layout, noise, hooks)?;
        ids.to_vec2::<u32>()?
            .into_iter()
            .map(|new_ids| {
                let codes = new_ids
                    .iter()
                    .enumerate()
                    .filter(|(t, _)| layout.is_code(*t))
                    .map(|(_, &id)| {
                        self.vocab.id_to_code(id).ok_or_else(|| {
                            Error::invalid("vq", format!("id {id} is not a visual token"))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(ImageTokens { new_ids, codes })
            })
            .collect()
    }

    /// Codes `[h·w]` → pixels `[1, 3, h·f, w·f]` in about `[-1, 1]`.
    pub fn decode_codes(&self, codes: &[u32], h: usize, w: usize) -> Result<Tensor> {
        let t = Tensor::new(codes, self.decoder.device())?.unsqueeze(0)?;
        Ok(self.vq_decoder.decode(&t, h, w)?)
    }
}
