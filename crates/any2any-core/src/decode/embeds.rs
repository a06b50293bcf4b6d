//! Text from prompts given as input embeddings (image features scattered in): the prefill, the
//! [`TextLoop`] with an LM head, and the outputs with their timings — what every family with
//! an embedding-level prompt runs for text, once.

use super::beam::BeamSearch;
use super::rows::{LmHead, RowBatch, RowInput};
use super::text::{text_budget, text_segment, TextLoop, TokenAction};
use crate::backbone::{ForwardArgs, MaskKind, RowLayout};
use crate::progress::Hooks;
use crate::request::{Output, Request, Timings};
use crate::sampling::{LogitsPipeline, SamplingParams};
use crate::{Error, Result};
use candle_core::{DType, Device, Module, Tensor};
use std::time::Instant;
use tokenizers::Tokenizer;

/// How a family generates text from embedded prompt rows.
pub struct EmbedsText<'a> {
    /// The decoder and its LM head.
    pub head: LmHead<'a>,
    /// The tokenizer (streamed deltas, decoded text); `None`: ids only.
    pub tokenizer: Option<&'a Tokenizer>,
    /// Sampling when the request sets none (usually greedy).
    pub defaults: SamplingParams,
    /// `max_new_tokens` when the request sets none.
    pub default_max_new: usize,
    /// Ids that end a row.
    pub stop: &'a [u32],
    /// The length penalty of a beam search (`--num-beams` > 1; HF's default is 1).
    pub length_penalty: f64,
}

impl EmbedsText<'_> {
    /// Generates for `rows` (input embeddings `[len, hidden]`, one per output of `reqs`,
    /// request-major; the first request's parameters apply); one [`Output`] per row. `started`:
    /// when the work began (the prefill time counts from it).
    pub fn run(
        &self,
        rows: &[Tensor],
        reqs: &[&Request],
        started: Instant,
        hooks: &mut Hooks,
    ) -> Result<Vec<Output>> {
        let Some(first) = reqs.first() else {
            return Ok(Vec::new());
        };
        let p = &first.params;
        let dec = self.head.decoder;
        let longest = rows.iter().map(|r| r.dims()[0]).max().unwrap_or(0);
        let ctx = dec.config().max_position_embeddings;
        let max_new = text_budget(p.max_new_tokens, self.default_max_new, longest, ctx)?;
        if let Some(nb) = p.num_beams.filter(|&n| n > 1) {
            let search = BeamSearch {
                num_beams: nb,
                max_new,
                length_penalty: self.length_penalty,
                stop: self.stop,
                stage: "text beams",
            };
            return beam_outputs(&self.head, rows, &search, self.tokenizer, started, hooks);
        }
        let inputs: Vec<RowInput> = rows.iter().map(RowInput::Embeds).collect();
        let (mut batch, hidden) = RowBatch::prefill(dec, &inputs, max_new)?;
        let prefill_s = started.elapsed().as_secs_f64();
        let pipe = LogitsPipeline::new(None, SamplingParams::from_params(p, self.defaults));
        let mut noise = hooks.batch_noise(&super::noise_parts(reqs));
        let t1 = Instant::now();
        let out = TextLoop::new(&pipe, max_new, self.stop)
            .tokenizer(self.tokenizer)
            .run(
                &mut batch,
                &self.head,
                hidden,
                &mut noise,
                hooks,
                &mut |_, _| TokenAction::Continue,
            )?;
        let timings = Timings {
            prefill_s,
            decode_s: t1.elapsed().as_secs_f64(),
            steps: out.iter().map(|r| r.ids.len()).max().unwrap_or(0),
            image_decode_s: 0.0,
            total_s: started.elapsed().as_secs_f64(),
        };
        out.into_iter()
            .map(|row| {
                Ok(Output {
                    segments: vec![text_segment(self.tokenizer, row.ids)?],
                    timings: timings.clone(),
                })
            })
            .collect()
    }
}

/// Text by beam search for `rows` (input embeddings `[len, hidden]`, one per output): each
/// row prefilled `num_beams` times, then [`BeamSearch`]; one [`Output`] per row, its text
/// streamed whole when it is done (beams are not final before).
pub fn beam_outputs(
    head: &LmHead<'_>,
    rows: &[Tensor],
    search: &BeamSearch<'_>,
    tokenizer: Option<&Tokenizer>,
    started: Instant,
    hooks: &mut Hooks,
) -> Result<Vec<Output>> {
    let nb = search.num_beams;
    let inputs: Vec<RowInput> = (rows.iter())
        .flat_map(|r| std::iter::repeat_n(RowInput::Embeds(r), nb))
        .collect();
    let (mut batch, hidden) = RowBatch::prefill(head.decoder, &inputs, search.max_new)?;
    let prefill_s = started.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let out = search.run(&mut batch, head, hidden, hooks)?;
    let timings = Timings {
        prefill_s,
        decode_s: t1.elapsed().as_secs_f64(),
        steps: out.iter().map(|r| r.ids.len()).max().unwrap_or(0),
        image_decode_s: 0.0,
        total_s: started.elapsed().as_secs_f64(),
    };
    (out.into_iter().enumerate())
        .map(|(i, row)| {
            let seg = text_segment(tokenizer, row.ids)?;
            if let crate::Generated::Text { text: Some(t), .. } = &seg {
                if hooks.wants_text() {
                    hooks.emit_text(i, t);
                }
            }
            Ok(Output {
                segments: vec![seg],
                timings: timings.clone(),
            })
        })
        .collect()
}

/// The last position's logits `[vocab]` (f32, on the CPU) of one prompt given as input
/// embeddings `[len, hidden]`, causal attention.
pub fn last_logits_of_embeds(head: &LmHead<'_>, embeds: &Tensor) -> Result<Tensor> {
    let len = embeds.dim(0)?;
    if len == 0 {
        return Err(Error::invalid("raw-ids", "no token ids given"));
    }
    let dec = head.decoder;
    let mut cache = dec.new_cache(1, len)?;
    let layout = RowLayout::dense(1);
    let args = ForwardArgs {
        layout: &layout,
        mask: &MaskKind::Causal,
    };
    let h = dec.forward(
        &embeds.unsqueeze(0)?.to_dtype(dec.dtype())?,
        args,
        &mut cache,
    )?;
    let l = head.head.forward(&h.narrow(1, len - 1, 1)?.squeeze(1)?)?;
    Ok(l.squeeze(0)?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?)
}
