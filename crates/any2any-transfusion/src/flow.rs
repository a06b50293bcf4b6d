//! Sampling one modality by flow matching, as `Transfusion.sample_one` does it: the latent
//! starts as standard-normal noise `[n, dim_latent]` (time 0) and is integrated to time 1 over
//! `steps` equal intervals with the checkpoint's `odeint_kwargs.method` (torchdiffeq's fixed-grid
//! `midpoint` by default, or `euler`), the model's output at each evaluation being the flow of
//! the latent tokens (bidirectional among themselves, all at one rotary position, conditioned on
//! the time) after the cached prefix. With guidance (`cfg ≠ 1`) a second row runs the same
//! history with every text id replaced by `[null]`, and the flows mix as `u + w·(c − u)`.
//!
//! The library recomputes the whole sequence at every evaluation (`cache_kv = False`, its
//! default); the prefix never attends to the latent, so here it is computed once and the cache is
//! cut back to it after every evaluation — the same numbers.

use crate::config::OdeMethod;
use crate::model::Chunk;
use crate::sequence::{nulled, Part, Rows};
use crate::TransfusionModel;
use any2any_core::backbone::MaskKind;
use any2any_core::decode::{
    initial_latent, Denoiser, FlowEuler, FlowMidpoint, LatentLoop, Scheduler,
};
use any2any_core::sampling::{Guidance, GuidanceSpace};
use any2any_core::{Error, Hooks, NoiseSource, Result};
use candle_core::Tensor;

/// How a modality is sampled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowOptions {
    /// ODE steps (intervals of the time grid; the library's `modality_steps` is `steps + 1`).
    pub steps: usize,
    /// Guidance weight `w` (1: no unconditioned row).
    pub cfg: f32,
    /// The solver.
    pub method: OdeMethod,
}

/// ODE steps a request may ask for.
pub const MAX_STEPS: usize = 10_000;

impl FlowOptions {
    /// The solver over `steps` equal steps of `t ∈ [0, 1]` (the model sees `t` itself); 0 or
    /// more than [`MAX_STEPS`] steps are refused, naming `steps`.
    pub fn scheduler(&self) -> Result<Box<dyn Scheduler>> {
        if self.steps > MAX_STEPS {
            return Err(Error::invalid(
                "steps",
                format!("{} (at most {MAX_STEPS})", self.steps),
            ));
        }
        Ok(match self.method {
            OdeMethod::Euler => Box::new(FlowEuler::new(self.steps, 1.0)?),
            OdeMethod::Midpoint => Box::new(FlowMidpoint::new(self.steps, 1.0)?),
        })
    }
}

/// The flow of the latent tokens after a cached prefix.
pub struct FlowDenoiser<'r, 'm> {
    rows: &'r mut Rows<'m>,
    prefix: usize,
}

impl<'r, 'm> FlowDenoiser<'r, 'm> {
    /// Predicts after what `rows` holds now (their prefix).
    pub fn new(rows: &'r mut Rows<'m>) -> Self {
        let prefix = rows.cache.len();
        Self { rows, prefix }
    }
}

impl Denoiser for FlowDenoiser<'_, '_> {
    fn predict(&mut self, x: &Tensor, t: f64, _step: usize) -> Result<Tensor> {
        let model = self.rows.model;
        let (rows, n, _) = x.dims3()?;
        if rows != self.rows.cache.rows() {
            return Err(Error::invalid(
                "latent",
                format!(
                    "{rows} latent rows for {} cached rows",
                    self.rows.cache.rows()
                ),
            ));
        }
        let tokens = model.latent_to_model(x)?;
        let positions = vec![self.rows.position; n];
        let chunk = Chunk {
            x: &tokens,
            positions: &positions,
            modality: &vec![true; n],
            times: &vec![t as f32; n],
        };
        let mask = MaskKind::BlockCausal(vec![(self.prefix, self.prefix + n)]);
        let h = model.forward(&chunk, &mask, &mut self.rows.cache);
        self.rows.cache.truncate(self.prefix);
        let out = model.model_to_latent(&h?)?;
        if model.config.model_output_clean {
            // get_model_output_to_flow_fn: (out − x) / max(1 − t, eps)
            let denom = (1.0 - t).max(model.config.eps);
            return Ok(((out - x)? / denom)?);
        }
        Ok(out)
    }
}

/// Samples an `n`-token latent after `history` (whose last text part ends with the modality's
/// `[som]`); the latent `[n, dim_latent]` f32, and the conditioned row with `history` cached
/// and room for `room` more tokens. Draws `n · dim_latent` normals from `noise`.
pub fn sample_latent<'m>(
    model: &'m TransfusionModel,
    history: &[Part],
    n: usize,
    room: usize,
    opts: &FlowOptions,
    noise: &mut dyn NoiseSource,
    hooks: &mut Hooks,
) -> Result<(Tensor, Rows<'m>)> {
    let mut scheduler = opts.scheduler()?;
    let guided = opts.cfg != 1.0;
    let mut streams = vec![history.to_vec()];
    if guided {
        streams.push(nulled(history, model.vocab.null));
    }
    let (mut rows, _) = Rows::prefill(model, &streams, n.max(room))?;
    let x0 = initial_latent((1, n, model.modality.dim_latent), noise, model.device())?;
    let guidance = guided.then(|| Guidance::two_stream(opts.cfg, GuidanceSpace::Logits));
    let lp = LatentLoop {
        guidance: guidance.as_ref(),
        stage: "image",
    };
    let z = lp.run(
        x0,
        &mut FlowDenoiser::new(&mut rows),
        scheduler.as_mut(),
        noise,
        hooks,
    )?;
    if guided {
        use any2any_core::decode::TextRows;
        rows.keep_rows(&[0])?;
    }
    Ok((z.squeeze(0)?, rows))
}
