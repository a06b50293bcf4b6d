use super::rows::{Head, RowBatch, TextRows};
use crate::noise::StackedNoise;
use crate::progress::Hooks;
use crate::sampling::LogitsPipeline;
use crate::text_stream::TextStream;
use crate::{Error, Result};
use candle_core::Tensor;
use tokenizers::Tokenizer;

/// What the per-token callback of a [`TextLoop`] decides for a row after a drawn id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAction {
    /// Keep decoding the row.
    Continue,
    /// The row is finished (its last id is kept).
    Stop,
    /// The row leaves the loop to go on in another mode (e.g. Chameleon's BOI opens an image);
    /// its last id is kept.
    Handoff,
}

/// Why a row left the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEnd {
    /// It drew a stop id (kept as its last id) or the callback stopped it.
    Stop,
    /// Its budget ran out.
    Budget,
    /// The callback handed it to another mode.
    Handoff,
}

/// One row's text: the ids drawn (the stop id included) and why it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRow {
    /// The ids drawn for the row, in order (the stop id, if any, last).
    pub ids: Vec<u32>,
    /// Why the row ended.
    pub end: TextEnd,
}

/// The budget of new tokens after a prompt of `prompt_len` in a context of `ctx`: an explicit
/// `requested` budget must fit (else [`Error::ContextOverflow`]); the `default` one is cut to
/// what the context leaves.
pub fn text_budget(
    requested: Option<usize>,
    default: usize,
    prompt_len: usize,
    ctx: usize,
) -> Result<usize> {
    let room = ctx.saturating_sub(prompt_len);
    let n = requested.unwrap_or(default.min(room));
    if n == 0 || n > room {
        return Err(Error::ContextOverflow {
            len: prompt_len,
            max: ctx,
            reserved: n.max(1),
        });
    }
    Ok(n)
}

/// Autoregressive text over a [`RowBatch`](super::RowBatch) (or any [`TextRows`]): each step
/// draws one id per live row through the pipeline, then feeds the drawn ids. A row ends at a stop id, at its budget, or when the
/// callback stops it or hands it off; it then leaves the batch and draws nothing more.
pub struct TextLoop<'a> {
    /// Sampling (no guidance: one logit row per batch row).
    pub pipe: &'a LogitsPipeline,
    /// New tokens per row at most.
    pub max_new: usize,
    /// Ids that end a row.
    pub stop: &'a [u32],
    /// For streamed deltas ([`Hooks::on_text`]).
    pub tokenizer: Option<&'a Tokenizer>,
    /// Output index of each batch row, for streamed deltas (`None`: row `r` is output `r`).
    pub outputs: Option<&'a [usize]>,
    /// Progress stage name.
    pub stage: &'a str,
}

impl<'a> TextLoop<'a> {
    /// A loop with the default stage name ("text tokens"), no streaming tokenizer, and rows
    /// numbered as outputs.
    pub fn new(pipe: &'a LogitsPipeline, max_new: usize, stop: &'a [u32]) -> Self {
        Self {
            pipe,
            max_new,
            stop,
            tokenizer: None,
            outputs: None,
            stage: "text tokens",
        }
    }

    /// Streams deltas decoded with `tok`.
    pub fn tokenizer(mut self, tok: Option<&'a Tokenizer>) -> Self {
        self.tokenizer = tok;
        self
    }

    /// Runs the loop from the last hidden states `hidden` (`[rows, hidden]`) of a prefilled
    /// `batch` (a [`RowBatch`](super::RowBatch) or another [`TextRows`]); `noise` holds one part per request over the same rows. `on_token(row, id)` sees
    /// every drawn id of a live row.
    pub fn run(
        &self,
        batch: &mut dyn TextRows,
        head: &dyn Head,
        hidden: Tensor,
        noise: &mut StackedNoise,
        hooks: &mut Hooks,
        on_token: &mut dyn FnMut(usize, u32) -> TokenAction,
    ) -> Result<Vec<TextRow>> {
        if self.pipe.streams() != 1 {
            return Err(Error::invalid("cfg", "text decoding takes no guidance"));
        }
        let rows = batch.rows();
        let stream_tok = self.tokenizer.filter(|_| hooks.wants_text());
        let mut log = RowLog::new(rows, stream_tok, self.outputs);
        // Batch position → original row.
        let mut live: Vec<usize> = (0..rows).collect();
        let mut hidden = hidden;
        for step in 0..self.max_new {
            hooks.step(self.stage, step, self.max_new)?;
            let logits = head.logits(&hidden)?;
            crate::limits::check_finite(&logits, self.stage)?;
            let next = self.pipe.sample(&logits, None, noise)?;
            let host = next.to_vec1::<u32>()?;
            let mut keep = Vec::with_capacity(live.len());
            for (pos, (&row, &id)) in live.iter().zip(&host).enumerate() {
                log.push(row, id, hooks)?;
                let action = if self.stop.contains(&id) {
                    TokenAction::Stop
                } else {
                    on_token(row, id)
                };
                match action {
                    TokenAction::Continue => keep.push(pos),
                    TokenAction::Stop => log.out[row].end = TextEnd::Stop,
                    TokenAction::Handoff => log.out[row].end = TextEnd::Handoff,
                }
            }
            if keep.len() < live.len() {
                RowLog::retire(&mut live, &keep, noise);
                if live.is_empty() {
                    break;
                }
                batch.keep_rows(&keep)?;
            }
            if step + 1 == self.max_new {
                break;
            }
            let fed = if keep.len() == host.len() {
                next
            } else {
                let idx: Vec<u32> = keep.iter().map(|&p| p as u32).collect();
                next.index_select(&Tensor::new(idx, next.device())?, 0)?
            };
            hidden = batch.step_ids(head, &fed)?;
        }
        hooks.step(self.stage, self.max_new, self.max_new)?;
        log.finish(hooks)
    }
}

/// The per-row bookkeeping of one [`TextLoop::run`]: each original row's ids and end, and its
/// streamed deltas (`streams` is empty when nothing is streamed).
struct RowLog<'t> {
    out: Vec<TextRow>,
    streams: Vec<TextStream>,
    tok: Option<&'t Tokenizer>,
    outputs: Option<&'t [usize]>,
}

impl<'t> RowLog<'t> {
    /// `rows` rows, none ended yet (so [`TextEnd::Budget`] unless told otherwise).
    fn new(rows: usize, tok: Option<&'t Tokenizer>, outputs: Option<&'t [usize]>) -> Self {
        Self {
            out: (0..rows)
                .map(|_| TextRow {
                    ids: Vec::new(),
                    end: TextEnd::Budget,
                })
                .collect(),
            streams: vec![TextStream::new(); if tok.is_some() { rows } else { 0 }],
            tok,
            outputs,
        }
    }

    /// Records id `id` drawn for original row `row` and streams the delta it completes.
    fn push(&mut self, row: usize, id: u32, hooks: &mut Hooks) -> Result<()> {
        self.out[row].ids.push(id);
        if let (Some(tok), Some(s)) = (self.tok, self.streams.get_mut(row)) {
            if let Some(d) = s.push(tok, id)? {
                hooks.emit_text(output_of(self.outputs, row), &d);
            }
        }
        Ok(())
    }

    /// Keeps the batch positions `keep` of `live` (batch position → original row), retiring
    /// the noise of every row that leaves.
    fn retire(live: &mut Vec<usize>, keep: &[usize], noise: &mut StackedNoise) {
        for (pos, &row) in live.iter().enumerate() {
            if !keep.contains(&pos) {
                noise.retire(row);
            }
        }
        *live = keep.iter().map(|&p| live[p]).collect();
    }

    /// Streams what each row still holds back; the rows.
    fn finish(mut self, hooks: &mut Hooks) -> Result<Vec<TextRow>> {
        if let Some(tok) = self.tok {
            for (row, s) in self.streams.iter_mut().enumerate() {
                if let Some(d) = s.finish(tok)? {
                    hooks.emit_text(output_of(self.outputs, row), &d);
                }
            }
        }
        Ok(self.out)
    }
}

/// Output index of batch row `row` (`None`: row `r` is output `r`).
fn output_of(outputs: Option<&[usize]>, row: usize) -> usize {
    outputs.and_then(|o| o.get(row).copied()).unwrap_or(row)
}

/// The text segment of generated ids: the ids, and their decoded text (special tokens
/// skipped) when there is a tokenizer.
pub fn text_segment(tok: Option<&Tokenizer>, ids: Vec<u32>) -> Result<crate::Generated> {
    let text = match tok {
        Some(t) => Some(
            t.decode(&ids, true)
                .map_err(|e| Error::Tokenizer(e.to_string()))?,
        ),
        None => None,
    };
    Ok(crate::Generated::Text { ids, text })
}

/// Plain text for a group of requests from ready prompt rows: the rows (`[len, hidden]` input
/// embeddings, request-major, `num_outputs` rows per request) prefilled into one [`RowBatch`],
/// then a [`TextLoop`] through the decoder's LM head until a stop id or the budget; one text
/// [`Output`](crate::Output) per row, with timings from `t0`.
pub struct TextRun<'a> {
    /// The backbone.
    pub decoder: &'a crate::backbone::Decoder,
    /// Its LM head.
    pub lm_head: &'a crate::nn::Linear,
    /// Sampling (the requests' parameters over the family's defaults).
    pub sampling: crate::sampling::SamplingParams,
    /// The budget when the requests give none (cut to what the context leaves).
    pub default_max_new: usize,
    /// Ids that end a row.
    pub stop: &'a [u32],
    /// Decodes the ids (and streams deltas).
    pub tokenizer: Option<&'a Tokenizer>,
    /// The length penalty of a beam search (`num_beams` > 1; HF's default is 1).
    pub length_penalty: f64,
}

impl TextRun<'_> {
    /// Runs `rows` for `reqs` (whose first request's parameters hold for the group).
    pub fn run(
        &self,
        rows: &[Tensor],
        reqs: &[&crate::Request],
        hooks: &mut Hooks,
        t0: std::time::Instant,
    ) -> Result<Vec<crate::Output>> {
        let Some(first) = reqs.first() else {
            return Ok(Vec::new());
        };
        let longest = rows.iter().map(|r| r.dims()[0]).max().unwrap_or(0);
        let ctx = self.decoder.config().max_position_embeddings;
        let requested = first.params.max_new_tokens;
        let max_new = text_budget(requested, self.default_max_new, longest, ctx)?;
        let head = super::LmHead {
            decoder: self.decoder,
            head: self.lm_head,
        };
        if let Some(nb) = first.params.num_beams.filter(|&n| n > 1) {
            let search = super::BeamSearch {
                num_beams: nb,
                max_new,
                length_penalty: self.length_penalty,
                stop: self.stop,
                stage: "text beams",
            };
            return super::embeds::beam_outputs(&head, rows, &search, self.tokenizer, t0, hooks);
        }
        let inputs: Vec<super::RowInput> = rows.iter().map(super::RowInput::Embeds).collect();
        let (mut batch, hidden) = RowBatch::prefill(self.decoder, &inputs, max_new)?;
        let prefill_s = t0.elapsed().as_secs_f64();
        let pipe = LogitsPipeline::new(None, self.sampling);
        let mut noise = hooks.batch_noise(&super::noise_parts(reqs));
        let t1 = std::time::Instant::now();
        let out = TextLoop::new(&pipe, max_new, self.stop)
            .tokenizer(self.tokenizer)
            .run(&mut batch, &head, hidden, &mut noise, hooks, &mut |_, _| {
                TokenAction::Continue
            })?;
        let timings = crate::Timings {
            prefill_s,
            decode_s: t1.elapsed().as_secs_f64(),
            steps: out.iter().map(|r| r.ids.len()).max().unwrap_or(0),
            image_decode_s: 0.0,
            total_s: t0.elapsed().as_secs_f64(),
        };
        out.into_iter()
            .map(|row| {
                Ok(crate::Output {
                    segments: vec![text_segment(self.tokenizer, row.ids)?],
                    timings: timings.clone(),
                })
            })
            .collect()
    }
}
