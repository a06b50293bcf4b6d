use crate::backbone::{Decoder, ForwardArgs, MaskKind, RowLayout};
use crate::kv_cache::KvCache;
use crate::nn::Linear;
use crate::{Error, Result};
use candle_core::{DType, Module, Tensor};

/// One row of a prefill: token ids (embedded by the decoder's token embedding) or ready input
/// embeddings `[len, hidden]` (image features scattered in, a family's own embedding).
#[derive(Debug, Clone, Copy)]
pub enum RowInput<'a> {
    /// Token ids, each inside the vocabulary.
    Ids(&'a [u32]),
    /// Input embeddings `[len, hidden]` (cast to the decoder's dtype).
    Embeds(&'a Tensor),
}

impl RowInput<'_> {
    fn len(&self) -> Result<usize> {
        Ok(match self {
            RowInput::Ids(ids) => ids.len(),
            RowInput::Embeds(e) => e.dim(0)?,
        })
    }
}

/// The two ends of a decode step of a family: logits from the backbone's last hidden states,
/// and input embeddings of the ids drawn.
pub trait Head {
    /// `[rows, hidden]` final-normed hidden states → `[rows, vocab]` f32 logits.
    fn logits(&self, hidden: &Tensor) -> Result<Tensor>;
    /// `[rows]` u32 drawn ids → `[rows, 1, hidden]` input embeddings.
    fn embed(&self, ids: &Tensor) -> Result<Tensor>;
}

/// The plain head: an LM head over the hidden states, the decoder's token embedding in.
pub struct LmHead<'a> {
    /// The decoder whose token embedding embeds the drawn ids.
    pub decoder: &'a Decoder,
    /// The LM head, `hidden_size` → vocabulary.
    pub head: &'a Linear,
}

impl Head for LmHead<'_> {
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(hidden)?.to_dtype(DType::F32)?)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.decoder.embed(&ids.unsqueeze(1)?)
    }
}

/// Rows decoded together: left-padded so their ends line up, each row with its own positions
/// from 0, never attending to its padding (as a packed variable-length batch).
pub struct RowBatch<'m> {
    decoder: &'m Decoder,
    cache: KvCache,
    layout: RowLayout,
    mask: MaskKind,
}

impl<'m> RowBatch<'m> {
    /// Prefills `rows` with room for `room` more tokens per row; the batch and the last
    /// position's hidden states `[rows, hidden]`. A prompt too long for the context is a
    /// [`Error::ContextOverflow`] naming the room asked for.
    pub fn prefill(decoder: &'m Decoder, rows: &[RowInput], room: usize) -> Result<(Self, Tensor)> {
        Self::prefill_with(decoder, rows, room, MaskKind::Causal)
    }

    /// [`RowBatch::prefill`] under another attention mask, kept for every later step (e.g. a
    /// bidirectional prefix over an image, Show-o's understanding prompt; its slots count from
    /// the start of the padded batch).
    pub fn prefill_with(
        decoder: &'m Decoder,
        rows: &[RowInput],
        room: usize,
        mask: MaskKind,
    ) -> Result<(Self, Tensor)> {
        let (batch, h) = Self::prefill_all(decoder, rows, room, mask)?;
        let max = h.dim(1)?;
        let last = h.narrow(1, max - 1, 1)?.squeeze(1)?;
        Ok((batch, last))
    }

    /// [`RowBatch::prefill_with`], returning the hidden states of every slot of the padded
    /// batch, `[rows, longest, hidden]` (rows end-aligned: a row's last positions are the
    /// batch's last).
    pub fn prefill_all(
        decoder: &'m Decoder,
        rows: &[RowInput],
        room: usize,
        mask: MaskKind,
    ) -> Result<(Self, Tensor)> {
        let lens = rows.iter().map(RowInput::len).collect::<Result<Vec<_>>>()?;
        let max = lens.iter().copied().max().unwrap_or(0);
        if max == 0 || lens.contains(&0) {
            return Err(Error::invalid("prompt", "an empty prompt row"));
        }
        let ctx = decoder.config().max_position_embeddings;
        if max.saturating_add(room) > ctx {
            return Err(Error::ContextOverflow {
                len: max,
                max: ctx,
                reserved: room,
            });
        }
        let layout = RowLayout::left_padded(&lens);
        let x = Self::stack(decoder, rows, &lens, max)?;
        let mut cache = decoder.new_cache(rows.len(), max + room)?;
        let h = decoder.forward(
            &x,
            ForwardArgs {
                layout: &layout,
                mask: &mask,
            },
            &mut cache,
        )?;
        Ok((
            Self {
                decoder,
                cache,
                layout,
                mask,
            },
            h,
        ))
    }

    /// `[rows, max, hidden]`: each row embedded, then left-padded with zero embeddings (pads
    /// are never attended, so what they hold does not matter).
    fn stack(decoder: &Decoder, rows: &[RowInput], lens: &[usize], max: usize) -> Result<Tensor> {
        let hidden = decoder.config().hidden_size;
        let vocab = decoder.config().vocab_size as u32;
        let mut parts = Vec::with_capacity(rows.len());
        for (r, &len) in rows.iter().zip(lens) {
            let e = match r {
                RowInput::Ids(ids) => {
                    if let Some(bad) = ids.iter().find(|&&i| i >= vocab) {
                        return Err(Error::invalid(
                            "ids",
                            format!("token id {bad} is outside the vocabulary ({vocab})"),
                        ));
                    }
                    decoder.embed(&Tensor::new(*ids, decoder.device())?)?
                }
                RowInput::Embeds(e) => {
                    if e.dims() != [len, hidden] {
                        return Err(Error::invalid(
                            "embeddings",
                            format!("{:?} for a row of {len} × {hidden}", e.dims()),
                        ));
                    }
                    e.to_dtype(decoder.dtype())?
                }
            };
            parts.push(e.pad_with_zeros(0, max - len, 0)?.unsqueeze(0)?);
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// Runs `x` (`[rows, n, hidden]`) after what the batch holds; the last position's hidden
    /// states `[rows, hidden]`.
    pub fn step(&mut self, x: &Tensor) -> Result<Tensor> {
        let n = x.dim(1)?;
        let h = self.decoder.forward(
            x,
            ForwardArgs {
                layout: &self.layout,
                mask: &self.mask,
            },
            &mut self.cache,
        )?;
        Ok(h.narrow(1, n - 1, 1)?.squeeze(1)?)
    }

    /// Runs a span `x` (`[rows, n, hidden]`) after what the batch holds; the final-normed hidden
    /// states of every position of the span, `[rows, n, hidden]` (a latent image's tokens).
    pub fn step_span(&mut self, x: &Tensor) -> Result<Tensor> {
        self.decoder.forward(
            x,
            ForwardArgs {
                layout: &self.layout,
                mask: &self.mask,
            },
            &mut self.cache,
        )
    }

    /// Forgets every slot from `len` on (`len` ≤ [`RowBatch::len`]): a prefix cached once is
    /// rewound to before each re-run of what follows it (a flow step re-runs its latent span).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.cache.len() {
            return Err(Error::invalid(
                "truncate",
                format!("to {len} slots, the batch holds {}", self.cache.len()),
            ));
        }
        self.cache.truncate(len);
        Ok(())
    }

    /// Feeds one id per row (`[rows]` u32, embedded by `head`).
    pub fn step_ids(&mut self, head: &dyn Head, ids: &Tensor) -> Result<Tensor> {
        let x = head.embed(ids)?;
        self.step(&x)
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.layout.rows()
    }

    /// Cache slots used (the longest prompt plus the steps so far).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    /// Slots still free per row.
    pub fn room(&self) -> usize {
        self.cache.capacity() - self.cache.len()
    }

    /// Keeps only the rows `rows` (in that order): finished rows leave the batch.
    pub fn keep_rows(&mut self, rows: &[usize]) -> Result<()> {
        self.cache.select_rows(rows)?;
        self.layout = RowLayout {
            pad_left: rows.iter().map(|&r| self.layout.pad_left[r]).collect(),
        };
        Ok(())
    }

    /// The decoder the batch runs on.
    pub fn decoder(&self) -> &'m Decoder {
        self.decoder
    }
}
