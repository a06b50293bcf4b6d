//! Beam search for text, as HF transformers' `generate(num_beams=N)` (greedy beams,
//! `early_stopping=False`, one returned sequence per prompt): each prompt keeps `N` beams; at
//! each step the `2N` (`max(2, 1 + stop ids)·N`) best continuations over all its beams'
//! log-softmaxed next-token scores plus their running sums are ranked; a stop id among the first
//! `N` ranks closes a hypothesis scored `sum / len^length_penalty` (`len` counting the stop id),
//! the others become the next beams (KV-cache rows reordered). A prompt is done once it holds `N`
//! hypotheses and the best running sum, penalised at the current length, cannot beat the worst
//! of them; at the budget the open beams are scored as hypotheses too, and the best wins.

use super::rows::{Head, TextRows};
use super::text::TextEnd;
use crate::progress::Hooks;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

/// Beam-search settings.
#[derive(Debug, Clone, Copy)]
pub struct BeamSearch<'a> {
    /// Beams per prompt (≥ 2; 1 is greedy decoding, [`TextLoop`](super::TextLoop)).
    pub num_beams: usize,
    /// New tokens per prompt at most.
    pub max_new: usize,
    /// The exponent of the length a hypothesis's summed log-probability is divided by
    /// (HF's `length_penalty`: > 0 favours longer answers, < 0 shorter).
    pub length_penalty: f64,
    /// Ids that close a hypothesis.
    pub stop: &'a [u32],
    /// Progress stage name.
    pub stage: &'a str,
}

/// The answer of one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct BeamText {
    /// Its ids (the stop id last when it closed on one).
    pub ids: Vec<u32>,
    /// `sum of log-probabilities / len^length_penalty` (HF's `sequences_scores`).
    pub score: f64,
    /// Why it ended ([`TextEnd::Stop`] or [`TextEnd::Budget`]).
    pub end: TextEnd,
}

/// The finished hypotheses of one prompt (HF's `BeamHypotheses`).
struct Hypotheses {
    /// (score, ids, closed by a stop id), in the order added.
    beams: Vec<(f64, Vec<u32>, bool)>,
    worst: f64,
    keep: usize,
    length_penalty: f64,
}

impl Hypotheses {
    fn new(keep: usize, length_penalty: f64) -> Self {
        Self {
            beams: Vec::new(),
            worst: 1e9,
            keep,
            length_penalty,
        }
    }

    fn add(&mut self, ids: Vec<u32>, sum_logprobs: f64, len: usize, stopped: bool) {
        let score = sum_logprobs / (len as f64).powf(self.length_penalty);
        if self.beams.len() < self.keep || score > self.worst {
            self.beams.push((score, ids, stopped));
            if self.beams.len() > self.keep {
                let mut order: Vec<(f64, usize)> = (self.beams.iter().enumerate())
                    .map(|(i, b)| (b.0, i))
                    .collect();
                order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                self.beams.remove(order[0].1);
                self.worst = order[1].0;
            } else {
                self.worst = self.worst.min(score);
            }
        }
    }

    fn is_done(&self, best_sum: f64, len: usize) -> bool {
        self.beams.len() >= self.keep
            && self.worst >= best_sum / (len as f64).powf(self.length_penalty)
    }

    /// The best (on equal scores, the last added, as Python's stable sort then `pop`).
    fn best(self) -> Option<(f64, Vec<u32>, bool)> {
        let mut best: Option<(f64, Vec<u32>, bool)> = None;
        for b in self.beams {
            if best.as_ref().is_none_or(|x| b.0 >= x.0) {
                best = Some(b);
            }
        }
        best
    }
}

/// One prompt's search: its open beams and finished hypotheses.
struct Prompt {
    beams: Vec<Vec<u32>>,
    sums: Vec<f32>,
    hyps: Hypotheses,
    done: bool,
}

impl BeamSearch<'_> {
    /// Runs from the last hidden states `hidden` (`[rows, hidden]`) of a prefilled `batch`
    /// holding each prompt `num_beams` times in a row (prompt-major); one answer per prompt.
    pub fn run(
        &self,
        batch: &mut dyn TextRows,
        head: &dyn Head,
        hidden: Tensor,
        hooks: &mut Hooks,
    ) -> Result<Vec<BeamText>> {
        let nb = self.num_beams;
        let rows = batch.rows();
        if nb < 2 || !rows.is_multiple_of(nb) {
            return Err(Error::invalid(
                "num-beams",
                format!("{nb} beams over a batch of {rows} rows (need ≥ 2, dividing the rows)"),
            ));
        }
        let mut prompts: Vec<Prompt> = (0..rows / nb)
            .map(|_| Prompt {
                beams: vec![Vec::new(); nb],
                // only the first beam of each prompt competes at the first step
                sums: (0..nb).map(|j| if j == 0 { 0.0 } else { -1e9 }).collect(),
                hyps: Hypotheses::new(nb, self.length_penalty),
                done: false,
            })
            .collect();
        // Batch rows hold, nb each, the prompts of `live` in order.
        let mut live: Vec<usize> = (0..prompts.len()).collect();
        let keep_n = 2usize.max(1 + self.stop.len()) * nb;
        let mut hidden = hidden;
        for step in 0..self.max_new {
            hooks.step(self.stage, step, self.max_new)?;
            let logits = head.logits(&hidden)?;
            crate::limits::check_finite(&logits, self.stage)?;
            let logp =
                candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32)?, 1)?.to_vec2::<f32>()?;
            let len = step + 1;
            let mut rows_next = Vec::new();
            let mut fed = Vec::new();
            for (pos, &p) in live.iter().enumerate() {
                let pr = &mut prompts[p];
                let cands = top_candidates(&logp[pos * nb..(pos + 1) * nb], &pr.sums, keep_n);
                let mut next: Vec<(usize, u32, f32)> = Vec::with_capacity(nb);
                for (rank, &(score, beam, tok)) in cands.iter().enumerate() {
                    if self.stop.contains(&tok) {
                        if rank < nb {
                            let mut ids = pr.beams[beam].clone();
                            ids.push(tok);
                            pr.hyps.add(ids, f64::from(score), len, true);
                        }
                    } else {
                        next.push((beam, tok, score));
                    }
                    if next.len() == nb {
                        break;
                    }
                }
                if next.len() < nb {
                    return Err(Error::invalid(
                        "num-beams",
                        format!("{nb} beams over a vocabulary too small to continue them"),
                    ));
                }
                let best = cands.first().map_or(f64::NEG_INFINITY, |c| f64::from(c.0));
                pr.done = pr.hyps.is_done(best, len);
                pr.beams = (next.iter())
                    .map(|&(b, t, _)| {
                        let mut ids = pr.beams[b].clone();
                        ids.push(t);
                        ids
                    })
                    .collect();
                pr.sums = next.iter().map(|n| n.2).collect();
                if !pr.done {
                    rows_next.extend(next.iter().map(|n| pos * nb + n.0));
                    fed.extend(next.iter().map(|n| n.1));
                }
            }
            live.retain(|&p| !prompts[p].done);
            if live.is_empty() || step + 1 == self.max_new {
                break;
            }
            batch.keep_rows(&rows_next)?;
            let ids = Tensor::new(fed, hidden.device())?;
            hidden = batch.step_ids(head, &ids)?;
        }
        hooks.step(self.stage, self.max_new, self.max_new)?;
        prompts
            .into_iter()
            .map(|mut pr| {
                if !pr.done {
                    for (ids, &sum) in pr.beams.iter().zip(&pr.sums) {
                        pr.hyps.add(ids.clone(), f64::from(sum), ids.len(), false);
                    }
                }
                let (score, ids, stopped) = pr
                    .hyps
                    .best()
                    .ok_or_else(|| Error::invalid("max-new-tokens", "no token to search"))?;
                Ok(BeamText {
                    ids,
                    score,
                    end: if stopped {
                        TextEnd::Stop
                    } else {
                        TextEnd::Budget
                    },
                })
            })
            .collect()
    }
}

/// The `k` best (score, beam, token) over `beams` rows of log-probabilities plus each beam's
/// running sum, best first (equal scores: lower beam, then lower token, first).
fn top_candidates(logp: &[Vec<f32>], sums: &[f32], k: usize) -> Vec<(f32, usize, u32)> {
    let mut all: Vec<(f32, usize, u32)> =
        Vec::with_capacity(logp.len() * logp.first().map_or(0, Vec::len));
    for (b, (row, &s)) in logp.iter().zip(sums).enumerate() {
        all.extend(row.iter().enumerate().map(|(t, &l)| (l + s, b, t as u32)));
    }
    let cmp = |x: &(f32, usize, u32), y: &(f32, usize, u32)| {
        y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2))
    };
    let k = k.min(all.len());
    if k < all.len() {
        all.select_nth_unstable_by(k, cmp);
        all.truncate(k);
    }
    all.sort_by(cmp);
    all
}
