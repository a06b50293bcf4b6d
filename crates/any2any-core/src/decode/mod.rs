//! The shared decode engine every family runs on.
//!
//! - [`RowBatch`]: rows decoded together on the shared [`Decoder`](crate::backbone::Decoder):
//!   a left-padded prefill (token ids or embeddings), one step at a time after it, a KV cache,
//!   each row with its own positions, and rows leaving the batch when they are done.
//! - [`TextLoop`]: autoregressive text over a batch (budget, stop ids, a per-token callback that
//!   can stop a row or hand it to another mode, streamed UTF-8-safe deltas).
//! - [`CodeLoop`]: autoregressive image codes with `N` guidance streams and a per-step
//!   [`Constraint`] (none, one vocabulary range, a row-layout grammar, a layout machine);
//!   optionally speculative ([`jacobi`]: a window of drafts verified per forward pass).
//! - [`LatentLoop`]: a step loop over a continuous latent that asks a [`Denoiser`] for a
//!   velocity or noise prediction per step, with guidance rows, under a [`Scheduler`].
//! - [`BeamSearch`]: beam search for text over the same batch (HF `num_beams`), the KV-cache
//!   rows reordered with the beams.
//! - [`EmbedsText`]: text for prompts given as input embeddings (prefill, [`TextLoop`], the
//!   outputs and timings), and [`last_logits_of_embeds`].
//!
//! Every loop reports progress (`step i of n`) and honours cancellation through
//! [`Hooks`](crate::Hooks); every random draw comes from a [`NoiseSource`](crate::NoiseSource).

mod beam;
mod code;
mod embeds;
pub mod jacobi;
mod latent;
mod rows;
#[cfg(test)]
mod tests;
mod text;

pub use beam::{BeamSearch, BeamText};
pub use code::{Ahead, Allowed, CodeLoop, CodeOf, Constraint, NoConstraint, OnlyRange, RowGrid};
pub use embeds::{beam_outputs, last_logits_of_embeds, EmbedsText};
pub use latent::{initial_latent, Denoiser, FlowEuler, FlowMidpoint, LatentLoop, Scheduler};
pub use rows::{last_logits, scatter_rows, Head, LmHead, RowBatch, RowInput, TextRows};
pub use text::{text_budget, text_segment, TextEnd, TextLoop, TextRow, TextRun, TokenAction};

/// The noise parts of a group of requests for [`Hooks::batch_noise`](crate::Hooks::batch_noise):
/// each request's seed with its `num_outputs` rows, in order.
pub fn noise_parts(reqs: &[&crate::Request]) -> Vec<(u64, usize)> {
    reqs.iter()
        .map(|r| (r.params.seed, r.num_outputs))
        .collect()
}
