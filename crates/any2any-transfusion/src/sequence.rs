//! A Transfusion sequence — text ids and modality latents in order — laid out for the
//! transformer as the library lays it out: one rotary position per text token and one per
//! modality instance (all its tokens share it), causal attention with full attention inside
//! each modality span, each modality token conditioned on its flow time.
//!
//! The parts are literal: the `[meta] shape [som]` before a latent and the `[eom]` after it are
//! text parts the caller puts there (as the library's training layout has them).

use crate::model::{Chunk, TextHead, TransfusionModel};
use any2any_core::backbone::MaskKind;
use any2any_core::decode::{Head, TextRows};
use any2any_core::kv_cache::KvCache;
use any2any_core::{Error, Result};
use candle_core::Tensor;

/// One piece of a sequence.
#[derive(Debug, Clone)]
pub enum Part {
    /// Text ids (special ids included).
    Text(Vec<u32>),
    /// A modality instance: `[n, dim_latent]` latent tokens (row-major over its shape, channel
    /// last) at flow time `time` (1 = clean data).
    Latent {
        /// `[n, dim_latent]` f32.
        tokens: Tensor,
        /// Its flow time.
        time: f32,
    },
}

impl Part {
    fn len(&self) -> Result<usize> {
        Ok(match self {
            Part::Text(ids) => ids.len(),
            Part::Latent { tokens, .. } => tokens.dim(0)?,
        })
    }
}

/// Replaces every text id by `null` (the unconditioned stream of classifier-free guidance,
/// `null_text_tokens`); latents are kept.
pub fn nulled(parts: &[Part], null: u32) -> Vec<Part> {
    parts
        .iter()
        .map(|p| match p {
            Part::Text(ids) => Part::Text(vec![null; ids.len()]),
            other => other.clone(),
        })
        .collect()
}

/// Rows of one layout, ready for [`TransfusionModel::forward`].
#[derive(Debug, Clone)]
pub struct Laid {
    /// `[rows, n, dim]`.
    pub x: Tensor,
    /// Rotary position of each token.
    pub positions: Vec<u32>,
    /// Whether each token is a modality token.
    pub modality: Vec<bool>,
    /// Flow time of each token.
    pub times: Vec<f32>,
    /// Modality spans `[start, end)`, relative to the first token.
    pub spans: Vec<(usize, usize)>,
    /// The position after the last token.
    pub next_position: u32,
}

impl Laid {
    /// The chunk to feed.
    pub fn chunk(&self) -> Chunk<'_> {
        Chunk {
            x: &self.x,
            positions: &self.positions,
            modality: &self.modality,
            times: &self.times,
        }
    }
    /// The attention mask when the chunk starts at cache slot `offset`.
    pub fn mask(&self, offset: usize) -> MaskKind {
        if self.spans.is_empty() {
            MaskKind::Causal
        } else {
            MaskKind::BlockCausal(
                self.spans
                    .iter()
                    .map(|&(s, e)| (s + offset, e + offset))
                    .collect(),
            )
        }
    }
}

/// Lays out `rows` (each the same part lengths, e.g. a prompt and its nulled copy), the first
/// token at rotary position `first`.
pub fn lay_out(model: &TransfusionModel, rows: &[Vec<Part>], first: u32) -> Result<Laid> {
    let Some(row0) = rows.first() else {
        return Err(Error::invalid("prompt", "no rows"));
    };
    let lens = row0.iter().map(Part::len).collect::<Result<Vec<_>>>()?;
    let (mut positions, mut modality, mut times, mut spans) = (vec![], vec![], vec![], vec![]);
    let mut pos = first;
    for (p, &n) in row0.iter().zip(&lens) {
        match p {
            Part::Text(_) => {
                positions.extend((0..n as u32).map(|i| pos + i));
                modality.extend(std::iter::repeat_n(false, n));
                times.extend(std::iter::repeat_n(0f32, n));
                pos += n as u32;
            }
            Part::Latent { time, .. } => {
                spans.push((positions.len(), positions.len() + n));
                positions.extend(std::iter::repeat_n(pos, n));
                modality.extend(std::iter::repeat_n(true, n));
                times.extend(std::iter::repeat_n(*time, n));
                pos += 1;
            }
        }
    }
    if positions.is_empty() {
        return Err(Error::invalid("prompt", "an empty sequence"));
    }
    let mut xs = Vec::with_capacity(rows.len());
    for row in rows {
        let same =
            row.len() == lens.len() && row.iter().zip(&lens).all(|(p, &n)| p.len().ok() == Some(n));
        if !same {
            return Err(Error::invalid("prompt", "rows of different layouts"));
        }
        let parts = row
            .iter()
            .map(|p| match p {
                Part::Text(ids) => model.embed(&Tensor::new(ids.as_slice(), model.device())?),
                Part::Latent { tokens, .. } => check_latent(model, tokens)
                    .and_then(|_| model.latent_to_model(&tokens.to_device(model.device())?)),
            })
            .collect::<Result<Vec<_>>>()?;
        xs.push(Tensor::cat(&parts, 0)?.to_dtype(model.dtype())?);
    }
    Ok(Laid {
        x: Tensor::stack(&xs, 0)?,
        positions,
        modality,
        times,
        spans,
        next_position: pos,
    })
}

fn check_latent(model: &TransfusionModel, tokens: &Tensor) -> Result<()> {
    let dl = model.modality.dim_latent;
    match tokens.dims() {
        [_, d] if *d == dl => Ok(()),
        other => Err(Error::invalid(
            "latent",
            format!("{other:?} for latent tokens of {dl} channels ([n, {dl}])"),
        )),
    }
}

/// Rows decoding text after a cached sequence: one id per row per step.
pub struct Rows<'m> {
    pub(crate) model: &'m TransfusionModel,
    /// The cache of everything fed so far.
    pub cache: KvCache,
    /// The rotary position of the next token.
    pub position: u32,
}

impl<'m> Rows<'m> {
    /// Feeds `rows` (see [`lay_out`]) into a new cache with room for `room` more tokens; the
    /// rows and the final hidden states of every position `[rows, n, dim]`.
    pub fn prefill(
        model: &'m TransfusionModel,
        rows: &[Vec<Part>],
        room: usize,
    ) -> Result<(Self, Tensor)> {
        let laid = lay_out(model, rows, 0)?;
        let n = laid.positions.len();
        let cap = n.checked_add(room).filter(|&c| c <= crate::MAX_CONTEXT);
        let Some(cap) = cap else {
            return Err(Error::ContextOverflow {
                len: n,
                max: crate::MAX_CONTEXT,
                reserved: room,
            });
        };
        let mut cache = model.new_cache(rows.len(), cap)?;
        let h = model.forward(&laid.chunk(), &laid.mask(0), &mut cache)?;
        Ok((
            Self {
                model,
                cache,
                position: laid.next_position,
            },
            h,
        ))
    }

    /// Feeds more parts after what the rows hold; the final hidden states `[rows, n, dim]`.
    pub fn feed(&mut self, parts: &[Vec<Part>]) -> Result<Tensor> {
        let laid = lay_out(self.model, parts, self.position)?;
        let h = self
            .model
            .forward(&laid.chunk(), &laid.mask(self.cache.len()), &mut self.cache)?;
        self.position = laid.next_position;
        Ok(h)
    }

    /// The head of these rows.
    pub fn head(&self) -> TextHead<'m> {
        TextHead(self.model)
    }
}

impl TextRows for Rows<'_> {
    fn rows(&self) -> usize {
        self.cache.rows()
    }
    fn keep_rows(&mut self, rows: &[usize]) -> Result<()> {
        self.cache.select_rows(rows)
    }
    fn step_ids(&mut self, head: &dyn Head, ids: &Tensor) -> Result<Tensor> {
        let x = head.embed(ids)?;
        let chunk = Chunk {
            x: &x,
            positions: &[self.position],
            modality: &[false],
            times: &[0.0],
        };
        let h = self
            .model
            .forward(&chunk, &MaskKind::Causal, &mut self.cache)?;
        self.position += 1;
        Ok(h.squeeze(1)?)
    }
}

/// The last position's states `[rows, dim]` of `[rows, n, dim]`.
pub fn last(h: &Tensor) -> Result<Tensor> {
    let n = h.dim(1)?;
    Ok(h.narrow(1, n - 1, 1)?.squeeze(1)?)
}
