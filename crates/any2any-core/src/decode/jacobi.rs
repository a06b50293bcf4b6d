//! Speculative Jacobi decoding of a [`CodeLoop`] (SJD, arXiv 2410.01699; SJD++, arXiv
//! 2512.07503): each forward pass feeds a window of up to `W` tokens, the first one drawn
//! exactly, the others drafts that the pass verifies. The images follow the model's own
//! distribution; greedy decoding gives the ids of plain decoding.
//!
//! One iteration, for the `B` images of the batch (every guidance stream fed the same ids):
//!
//! 1. The token at the next step `n` is drawn exactly from the last hidden state (as plain
//!    decoding does), or was already decided by the previous verification.
//! 2. Drafts fill the steps `n+1 ..= n+D` (`D ≤ W − 1`) whose rule the constraint knows ahead
//!    ([`Constraint::ahead`]); a forced step (a row end, a trailer token) drafts its id.
//! 3. One forward pass over `[token n, drafts]`; for each draft step `j`, `p_j` is the
//!    distribution plain decoding would draw from there (guided streams mixed, the constraint's
//!    mask, temperature, top-k, top-p).
//! 4. Per image, drafts are verified in order: draft `x` drawn from `q` is accepted with
//!    probability `min(1, p(x) / q(x))`; the first rejected one is replaced by a draw from
//!    `norm(max(0, p − q))` and ends the run. Greedy: accepted iff `x` is the argmax of `p`,
//!    replaced by that argmax. Every committed token is thereby an exact draw of `p` given the
//!    tokens before it.
//! 5. The batch commits the `m + 1` steps every image has decided (`m`: the fewest accepted
//!    drafts of its images; an image that accepted more keeps its accepted draft at `n+m+1`
//!    and redraws after it), and the KV cache is rolled back past the rest
//!    ([`RowBatch::truncate`]).
//! 6. New drafts for the next window: at steps the pass scored, a Jacobi update (a draw from
//!    that step's `p`, which becomes its `q`); with SJD++'s token reuse the old draft is kept
//!    when `p(old) ≥` [`Speculative::REUSE_CONFIDENCE`] and it was never verified, its `q` then
//!    the exact keep-or-redraw mixture `keep·q_old + (1 − Σ keep·q_old)·p` (`keep` the tokens
//!    at or above the threshold). Steps past the pass get the spatial prior: a copy of the
//!    token to the left in the image row, of the token above at a row's first column, else
//!    of the previous token (SJD's "horizontal repeat", with the vertical neighbour at row
//!    starts; a deterministic draft has `q` one-hot, and `p − q` clipped at 0 is `p` without
//!    that token, which keeps the rule exact).
//!
//! Why it stays exact: a draft at step `j` was chosen from tokens before `j` and its own
//! noise, and nothing that decides the steps before `j` reads it (causal attention; a draft
//! that was verified and accepted but not committed is never reused). Given the prefix, the
//! draft is then a draw of its recorded `q`, and the accept-or-resample rule returns `p`.
//!
//! Noise, per iteration and per image (so [`StackedNoise`](crate::StackedNoise) batches draw
//! what each request draws, given the window; the window depends on the batch, so a request
//! gives the same bytes for the same seed in the same batch): the exact draw of step 1
//! (`B` uniforms, as plain decoding; none when decided already), then `B × D` acceptance
//! uniforms (image-major), then `B` for the replacement of a rejected draft (when one is
//! rejected), then `B × J` for the `J` Jacobi redraws (image-major). Greedy steps draw nothing.

use super::code::{Ahead, Allowed, CodeLoop, Constraint};
use super::rows::{Head, RowBatch};
use crate::noise::NoiseSource;
use crate::progress::Hooks;
use crate::request::Speculative;
use crate::sampling::{draw_inverse_cdf, LogitsPipeline};
use crate::{Error, Result};
use candle_core::{DType, Device, IndexOp, Tensor, D};

/// A draft of one step: an id per image and the distribution `[B, V]` it was drawn from
/// (`None`: chosen deterministically, `q` one-hot at the id).
struct Draft {
    ids: Vec<u32>,
    q: Option<Tensor>,
}

/// What the verifying pass says about one step of the window.
struct Scored {
    /// Processed and warped logits `[B, V]` (sampled steps), for Jacobi redraws.
    warped: Option<Tensor>,
    /// Their softmax `[B, V]` (sampled steps).
    probs: Option<Tensor>,
    /// The argmax per image (greedy steps).
    argmax: Option<Vec<u32>>,
}

/// The ids of a batch so far: committed per image, then the drafts of the window.
struct Tokens<'d> {
    committed: &'d [Vec<u32>],
    drafts: &'d [Draft],
}

impl Tokens<'_> {
    fn at(&self, image: usize, step: usize) -> u32 {
        let done = self.committed[image].len();
        if step < done {
            self.committed[image][step]
        } else {
            self.drafts[step - done].ids[image]
        }
    }
}

/// `[B, V]` 1 at `ids`, 0 elsewhere.
fn one_hot(ids: &[u32], v: usize, device: &Device) -> Result<Tensor> {
    let idx = Tensor::new(ids, device)?.unsqueeze(1)?;
    let range = Tensor::arange(0u32, v as u32, device)?.unsqueeze(0)?;
    Ok(range.broadcast_eq(&idx)?.to_dtype(DType::F32)?)
}

/// `t[b, ids[b]]` for each image, on the host.
fn gather(t: &Tensor, ids: &[u32]) -> Result<Vec<f32>> {
    let idx = Tensor::new(ids, t.device())?.unsqueeze(1)?;
    Ok(t.gather(&idx, 1)?.squeeze(1)?.to_vec1::<f32>()?)
}

impl CodeLoop<'_> {
    /// [`CodeLoop::run`] under speculative Jacobi decoding (see the [module](self) notes).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_jacobi(
        &self,
        spec: Speculative,
        batch: &mut RowBatch,
        head: &dyn Head,
        hidden: Tensor,
        constraint: &mut dyn Constraint,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        spec.validate()?;
        let streams = self.pipe.streams();
        let b = batch.rows() / streams;
        let device = batch.decoder().device().clone();
        let mut drawn: Vec<Tensor> = Vec::with_capacity(self.steps);
        let mut committed: Vec<Vec<u32>> = vec![Vec::new(); b];
        let mut hidden = hidden;
        let mut pending: Option<Vec<u32>> = None;
        let mut drafts: Vec<Draft> = Vec::new();
        let mut next = 0usize;
        'outer: while next < self.steps {
            hooks.step(self.stage, next, self.steps)?;
            // 1. the exact token of step `next`
            let y = match pending.take() {
                Some(y) => y,
                None => {
                    let mask = match constraint.allowed(next)? {
                        Allowed::Done => break,
                        Allowed::Any => None,
                        Allowed::Mask(m) => Some(m),
                    };
                    let logits = head.logits(&hidden)?;
                    crate::limits::check_finite(&logits, self.stage)?;
                    let pipe = constraint.pipeline(next).unwrap_or(self.pipe);
                    self.check_streams(pipe, next)?;
                    pipe.sample(&logits, mask.as_ref(), noise)?
                        .to_vec1::<u32>()?
                }
            };
            let done = self.commit(
                next,
                &y,
                (&mut committed, &mut drawn),
                &device,
                constraint,
                hooks,
            )?;
            next += 1;
            if done || next == self.steps {
                break;
            }
            // 2. the window's drafts
            let plan = self.plan(spec, next, &*constraint);
            drafts.truncate(plan.len());
            for (k, a) in plan.iter().enumerate() {
                let step = next + k;
                if let Some(f) = a.forced {
                    let d = Draft {
                        ids: vec![f; b],
                        q: None,
                    };
                    if k < drafts.len() {
                        drafts[k] = d;
                    } else {
                        drafts.push(d);
                    }
                } else if k >= drafts.len() {
                    let tokens = Tokens {
                        committed: &committed,
                        drafts: &drafts,
                    };
                    let ids = (0..b)
                        .map(|i| tokens.at(i, self.prior_step(step, a)))
                        .collect();
                    drafts.push(Draft { ids, q: None });
                }
            }
            let d = plan.len();
            let fed_ids: Vec<u32> = (0..b)
                .flat_map(|i| std::iter::once(y[i]).chain(drafts.iter().map(move |x| x.ids[i])))
                .collect();
            let e = head.embed(&Tensor::new(fed_ids.as_slice(), &device)?)?;
            let e = e.reshape((b, d + 1, e.dim(D::Minus1)?))?;
            let fed = if streams == 1 {
                e
            } else {
                Tensor::cat(&vec![&e; streams], 0)?
            };
            let len0 = batch.len();
            let hs = batch.step_span(&fed)?;
            hooks.stats.forwards += 1;
            if d == 0 {
                hidden = hs.i((.., 0, ..))?.contiguous()?;
                continue;
            }
            // 3. the distributions of the draft steps
            let scored = self.score(head, &hs, &plan, next, &*constraint)?;
            // 4. verification, per image
            let sampled = scored.iter().any(|s| s.probs.is_some());
            let u = if sampled {
                noise.uniform(b * d)?
            } else {
                Vec::new()
            };
            let mut p_of = vec![vec![0f32; d]; b];
            let mut q_of = vec![vec![1f32; d]; b];
            for (j, (s, dr)) in scored.iter().zip(&drafts).enumerate() {
                if let Some(p) = &s.probs {
                    for (i, v) in gather(p, &dr.ids)?.into_iter().enumerate() {
                        p_of[i][j] = v;
                    }
                    if let Some(q) = &dr.q {
                        for (i, v) in gather(q, &dr.ids)?.into_iter().enumerate() {
                            q_of[i][j] = v;
                        }
                    }
                }
            }
            let accepted: Vec<usize> = (0..b)
                .map(|i| {
                    (0..d)
                        .take_while(|&j| {
                            #[cfg(test)]
                            if tests::ACCEPT_ALL.get() {
                                return true;
                            }
                            match &scored[j].argmax {
                                Some(am) => drafts[j].ids[i] == am[i],
                                None => u[i * d + j] * q_of[i][j] < p_of[i][j],
                            }
                        })
                        .count()
                })
                .collect();
            for &k in &accepted {
                hooks.stats.drafted += (k + 1).min(d);
                hooks.stats.accepted += k;
            }
            let m = accepted.iter().copied().min().unwrap_or(0);
            // 5. commit what every image decided
            for draft in &drafts[..m] {
                let out = (&mut committed[..], &mut drawn);
                if self.commit(next, &draft.ids, out, &device, constraint, hooks)? {
                    break 'outer;
                }
                next += 1;
                if next == self.steps {
                    break 'outer;
                }
            }
            if m == d {
                hidden = hs.i((.., d, ..))?.contiguous()?;
                drafts.clear();
                continue;
            }
            batch.truncate(len0 + 1 + m)?;
            let z = self.replace(&scored[m], &drafts[m], &accepted, m, noise)?;
            pending = Some(z);
            // 6. Jacobi updates of the steps after it
            drafts = self.redraw(spec, &scored, drafts, &p_of, &accepted, m, noise)?;
        }
        hooks.step(self.stage, self.steps, self.steps)?;
        if drawn.is_empty() {
            return Ok(Tensor::zeros((b, 0), DType::U32, &device)?);
        }
        Ok(Tensor::stack(&drawn, 1)?)
    }

    /// Observes the ids of `step`, keeps them; whether the constraint is complete.
    fn commit(
        &self,
        step: usize,
        ids: &[u32],
        (committed, drawn): (&mut [Vec<u32>], &mut Vec<Tensor>),
        device: &Device,
        constraint: &mut dyn Constraint,
        hooks: &mut Hooks,
    ) -> Result<bool> {
        let t = Tensor::new(ids, device)?;
        constraint.observe(step, &t)?;
        for (c, &id) in committed.iter_mut().zip(ids) {
            c.push(id);
        }
        hooks.stats.tokens += ids.len();
        drawn.push(t);
        self.maybe_preview(drawn, hooks)?;
        Ok(constraint.is_done())
    }

    /// The steps from `next` on that get a draft: at most `window − 1`, inside the loop, known
    /// ahead and not past the end.
    fn plan(&self, spec: Speculative, next: usize, constraint: &dyn Constraint) -> Vec<Ahead> {
        let mut plan = Vec::new();
        for step in next..self.steps.min(next + spec.window - 1) {
            match constraint.ahead(next, step) {
                Some(a) if !matches!(a.allowed, Allowed::Done) => plan.push(a),
                _ => break,
            }
        }
        plan
    }

    /// The step a new draft at `step` copies: left in its row, above at a row's first column,
    /// else the step before.
    fn prior_step(&self, step: usize, a: &Ahead) -> usize {
        let place = a
            .column
            .or_else(|| self.row_len.filter(|&l| l > 0).map(|l| (step % l, l)));
        match place {
            Some((0, per_row)) if step >= per_row => step - per_row,
            _ => step - 1,
        }
    }

    /// Processed distributions of the draft steps: `hs[:, j]` scores step `next + j`.
    fn score(
        &self,
        head: &dyn Head,
        hs: &Tensor,
        plan: &[Ahead],
        next: usize,
        constraint: &dyn Constraint,
    ) -> Result<Vec<Scored>> {
        let (rows, _, hidden) = hs.dims3()?;
        let d = plan.len();
        let flat = hs.narrow(1, 0, d)?.reshape((rows * d, hidden))?;
        let logits = head.logits(&flat)?;
        crate::limits::check_finite(&logits, self.stage)?;
        let pipes = (0..d)
            .map(|j| {
                let pipe = constraint.pipeline(next + j).unwrap_or(self.pipe);
                self.check_streams(pipe, next + j).map(|_| pipe)
            })
            .collect::<Result<Vec<&LogitsPipeline>>>()?;
        if pipes.iter().all(|p| std::ptr::eq(*p, pipes[0])) {
            return self.score_together(pipes[0], &logits, plan);
        }
        let logits = logits.reshape((rows, d, logits.dim(D::Minus1)?))?;
        let mut out = Vec::with_capacity(d);
        for ((j, a), pipe) in plan.iter().enumerate().zip(pipes) {
            let mask = match &a.allowed {
                Allowed::Mask(m) => Some(m),
                _ => None,
            };
            let l = pipe.process(&logits.i((.., j, ..))?.contiguous()?, mask)?;
            out.push(if pipe.sampling.is_greedy() {
                Scored {
                    warped: None,
                    probs: None,
                    argmax: Some(l.argmax(D::Minus1)?.to_vec1::<u32>()?),
                }
            } else {
                let w = pipe.warp(&l)?;
                let p = candle_nn::ops::softmax_last_dim(&w)?;
                Scored {
                    warped: Some(w),
                    probs: Some(p),
                    argmax: None,
                }
            });
        }
        Ok(out)
    }

    /// [`Self::score`] when every step of the window samples with `pipe`: one pass over the
    /// logits `[rows·d, V]` (rows `(stream, image, step)`, stream-major as the mix expects).
    fn score_together(
        &self,
        pipe: &LogitsPipeline,
        logits: &Tensor,
        plan: &[Ahead],
    ) -> Result<Vec<Scored>> {
        let d = plan.len();
        let (n, v) = logits.dims2()?;
        let b = n / d / self.pipe.streams();
        let device = logits.device();
        let mask = if plan.iter().all(|a| matches!(a.allowed, Allowed::Any)) {
            None
        } else {
            let zeros = Tensor::zeros((1, v), DType::F32, device)?;
            let per_step = plan
                .iter()
                .map(|a| match &a.allowed {
                    Allowed::Mask(m) => m.to_dtype(DType::F32)?.broadcast_as((b, v)),
                    _ => zeros.broadcast_as((b, v)),
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Some(Tensor::stack(&per_step, 1)?.reshape((b * d, v))?)
        };
        let l = pipe.process(logits, mask.as_ref())?;
        if pipe.sampling.is_greedy() {
            let am = l.argmax(D::Minus1)?.to_vec1::<u32>()?;
            return Ok((0..d)
                .map(|j| Scored {
                    warped: None,
                    probs: None,
                    argmax: Some((0..b).map(|i| am[i * d + j]).collect()),
                })
                .collect());
        }
        let w = pipe.warp(&l)?;
        let p = candle_nn::ops::softmax_last_dim(&w)?;
        let (w, p) = (w.reshape((b, d, v))?, p.reshape((b, d, v))?);
        (0..d)
            .map(|j| {
                Ok(Scored {
                    warped: Some(w.i((.., j, ..))?.contiguous()?),
                    probs: Some(p.i((.., j, ..))?.contiguous()?),
                    argmax: None,
                })
            })
            .collect()
    }

    /// The decided ids of step `m` of the window: an image that rejected its draft there draws
    /// from `norm(max(0, p − q))` (greedy: the argmax), one that accepted it keeps it.
    fn replace(
        &self,
        s: &Scored,
        draft: &Draft,
        accepted: &[usize],
        m: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Vec<u32>> {
        let fresh = match (&s.argmax, &s.probs) {
            (Some(am), _) => am.clone(),
            (None, Some(p)) => {
                let v = p.dim(D::Minus1)?;
                let q = match &draft.q {
                    Some(q) => q.clone(),
                    None => one_hot(&draft.ids, v, p.device())?,
                };
                let r = (p - q)?.relu()?;
                // p == q leaves nothing: then (never rejected in exact arithmetic) p itself
                let empty = r.sum_keepdim(D::Minus1)?.le(0f64)?.to_dtype(DType::F32)?;
                let r = (r + p.broadcast_mul(&empty)?)?;
                let u = noise.uniform(accepted.len())?;
                draw_inverse_cdf(&r.log()?, &u)?.to_vec1::<u32>()?
            }
            (None, None) => return Err(Error::invalid("speculative", "a step without scores")),
        };
        Ok(accepted
            .iter()
            .enumerate()
            .map(|(i, &k)| if k > m { draft.ids[i] } else { fresh[i] })
            .collect())
    }

    /// The drafts after the replaced step `m`: a Jacobi update from each scored step, keeping
    /// (SJD++) an old draft never verified whose probability reaches the reuse threshold.
    #[allow(clippy::too_many_arguments)]
    fn redraw(
        &self,
        spec: Speculative,
        scored: &[Scored],
        old: Vec<Draft>,
        p_of: &[Vec<f32>],
        accepted: &[usize],
        m: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Vec<Draft>> {
        let b = accepted.len();
        let later = m + 1..scored.len();
        let n = later.len();
        let sampled = scored[later.clone()].iter().any(|s| s.probs.is_some());
        let u = if sampled && n > 0 {
            noise.uniform(b * n)?
        } else {
            Vec::new()
        };
        let mut out = Vec::with_capacity(n);
        for (k, (j, old)) in later.zip(old.into_iter().skip(m + 1)).enumerate() {
            let s = &scored[j];
            let (Some(w), Some(p)) = (&s.warped, &s.probs) else {
                let ids = s.argmax.clone().unwrap_or_default();
                out.push(Draft { ids, q: None });
                continue;
            };
            let uj: Vec<f32> = (0..b).map(|i| u[i * n + k]).collect();
            let fresh = draw_inverse_cdf(w, &uj)?.to_vec1::<u32>()?;
            if !spec.reuse {
                out.push(Draft {
                    ids: fresh,
                    q: Some(p.clone()),
                });
                continue;
            }
            // never verified: step j lies past the image's first rejection
            let eligible: Vec<f32> = accepted
                .iter()
                .map(|&a| if j > a { 1.0 } else { 0.0 })
                .collect();
            let th = Speculative::REUSE_CONFIDENCE;
            let ids = (0..b)
                .map(|i| {
                    if eligible[i] > 0.0 && p_of[i][j] >= th {
                        old.ids[i]
                    } else {
                        fresh[i]
                    }
                })
                .collect();
            let q_old = match old.q {
                Some(q) => q,
                None => one_hot(&old.ids, p.dim(D::Minus1)?, p.device())?,
            };
            let keep = p
                .ge(th as f64)?
                .to_dtype(DType::F32)?
                .broadcast_mul(&Tensor::from_vec(eligible, (b, 1), p.device())?)?;
            let kept = (keep * q_old)?;
            let mass = kept.sum_keepdim(D::Minus1)?;
            let q = (&kept + p.broadcast_mul(&(1.0 - mass)?)?)?;
            out.push(Draft { ids, q: Some(q) });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
