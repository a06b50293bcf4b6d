use crate::noise::NoiseSource;
use crate::progress::Hooks;
use crate::sampling::Guidance;
use crate::{Error, Result};
use candle_core::{DType, Device, Shape, Tensor};

/// The model side of a continuous step loop: a velocity (flow) or noise (diffusion) prediction
/// for a batch of latents at one timestep.
pub trait Denoiser {
    /// The prediction for `x` (`[streams·B, …]`, the guidance streams stacked stream-major, each
    /// stream holding the same latents) at model timestep `t` of step `step`; same shape as `x`.
    fn predict(&mut self, x: &Tensor, t: f64, step: usize) -> Result<Tensor>;
}

/// A sampler over a latent: its timesteps, the model-input scaling and the update from one
/// prediction. `step` takes `&mut self` because multistep samplers (PNDM/PLMS) keep the
/// predictions of earlier steps; a loop calls `step(…, 0, …)` first, which starts it afresh.
pub trait Scheduler {
    /// Steps in the loop.
    fn len(&self) -> usize;
    /// Whether the loop has no steps.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The timestep the model is given at step `i`.
    fn timestep(&self, i: usize) -> f64;
    /// Scales the latent before the model sees it at step `i` (identity by default; Euler
    /// divides by `sqrt(σᵢ² + 1)`).
    fn scale_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let _ = i;
        Ok(x.clone())
    }
    /// The factor a standard-normal initial latent is multiplied by before step 0 (1 by
    /// default; Euler: the largest σ, or `sqrt(σ_max² + 1)` with leading spacing). The caller
    /// applies it ([`initial_latent`] does not).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// The latent after step `i` from the (guided) prediction; `noise` serves ancestral
    /// samplers.
    fn step(
        &mut self,
        x: &Tensor,
        pred: &Tensor,
        i: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor>;
    /// The whole of step `i`: asks `predict(input, timestep)` for the (guided) prediction as
    /// often as the solver needs and returns the latent after the step. By default one
    /// prediction at [`Scheduler::timestep`] on [`Scheduler::scale_input`], then
    /// [`Scheduler::step`]; multi-stage ODE solvers ([`FlowMidpoint`]) override it.
    fn solve_step(
        &mut self,
        x: &Tensor,
        i: usize,
        predict: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let pred = predict(&self.scale_input(x, i)?, self.timestep(i))?;
        self.step(x, &pred, i, noise)
    }
}

/// Rectified-flow Euler: `t` runs from 0 (noise) to 1 (data) in `steps` equal steps,
/// `x ← x + (t_{i+1} − t_i)·v`; the model sees `t · scale` (JanusFlow: 1000).
#[derive(Debug, Clone, PartialEq)]
pub struct FlowEuler {
    /// The `steps + 1` times from 0 to 1.
    pub times: Vec<f64>,
    /// Factor from `t` to the model's timestep input.
    pub scale: f64,
}

impl FlowEuler {
    /// `steps` equal steps from 0 to 1.
    pub fn new(steps: usize, scale: f64) -> Result<Self> {
        if steps == 0 {
            return Err(Error::invalid("steps", "0 (must be ≥ 1)"));
        }
        Ok(Self {
            times: (0..=steps).map(|i| i as f64 / steps as f64).collect(),
            scale,
        })
    }
}

impl Scheduler for FlowEuler {
    fn len(&self) -> usize {
        self.times.len().saturating_sub(1)
    }
    fn timestep(&self, i: usize) -> f64 {
        self.times.get(i).copied().unwrap_or(1.0) * self.scale
    }
    fn step(
        &mut self,
        x: &Tensor,
        v: &Tensor,
        i: usize,
        _: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let dt = self.times.get(i + 1).copied().unwrap_or(1.0) - self.times[i.min(self.len())];
        Ok((x + (v.to_dtype(x.dtype())? * dt)?)?)
    }
}

/// The explicit midpoint rule over a time grid (torchdiffeq's fixed-grid `midpoint`, which
/// lucidrains' `transfusion-pytorch` samples with): per step `dt = t_{i+1} − t_i`,
/// `f_0 = v(x, t_i)`, `x_mid = x + f_0·dt/2`, `x ← x + dt·v(x_mid, t_i + dt/2)`; two model
/// evaluations per step, the model seeing `t · scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMidpoint {
    /// The time grid and timestep scale (its Euler update is the midpoint rule's last stage).
    pub grid: FlowEuler,
}

impl FlowMidpoint {
    /// `steps` equal steps from 0 to 1.
    pub fn new(steps: usize, scale: f64) -> Result<Self> {
        Ok(Self {
            grid: FlowEuler::new(steps, scale)?,
        })
    }
}

impl Scheduler for FlowMidpoint {
    fn len(&self) -> usize {
        self.grid.len()
    }
    fn timestep(&self, i: usize) -> f64 {
        self.grid.timestep(i)
    }
    /// The last stage's update `x + dt·v` (what [`Scheduler::solve_step`] applies to the
    /// midpoint prediction).
    fn step(
        &mut self,
        x: &Tensor,
        v: &Tensor,
        i: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        self.grid.step(x, v, i, noise)
    }
    fn solve_step(
        &mut self,
        x: &Tensor,
        i: usize,
        predict: &mut dyn FnMut(&Tensor, f64) -> Result<Tensor>,
        noise: &mut dyn NoiseSource,
    ) -> Result<Tensor> {
        let times = &self.grid.times;
        let t0 = times.get(i).copied().unwrap_or(1.0);
        let dt = times.get(i + 1).copied().unwrap_or(1.0) - t0;
        let f0 = predict(x, self.timestep(i))?;
        let mid = (x + (f0.to_dtype(x.dtype())? * (dt / 2.0))?)?;
        let t_mid = (t0 + dt / 2.0) * self.grid.scale;
        let f1 = predict(&mid, t_mid)?;
        self.step(x, &f1, i, noise)
    }
}

/// A latent of `shape` drawn from the standard normal (`noise.normal`, row-major), f32.
pub fn initial_latent(
    shape: impl Into<Shape>,
    noise: &mut dyn NoiseSource,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let v = noise.normal(shape.elem_count())?;
    Ok(Tensor::from_vec(v, shape, device)?)
}

/// The continuous step loop: at each step the latent (repeated once per guidance stream) goes
/// to the [`Denoiser`], the streams' predictions are mixed by the guidance (`u + w·(c − u)` on
/// the raw predictions), and the [`Scheduler`] moves the latent.
pub struct LatentLoop<'a> {
    /// Guidance over the prediction streams (its space is ignored: predictions mix raw).
    pub guidance: Option<&'a Guidance>,
    /// Progress stage name.
    pub stage: &'a str,
}

impl<'a> LatentLoop<'a> {
    /// Runs from `x` (`[B, …]`); the final latent.
    pub fn run(
        &self,
        x: Tensor,
        denoiser: &mut dyn Denoiser,
        scheduler: &mut dyn Scheduler,
        noise: &mut dyn NoiseSource,
        hooks: &mut Hooks,
    ) -> Result<Tensor> {
        let n = scheduler.len();
        let streams = self.guidance.map_or(1, Guidance::streams);
        let b = x.dim(0)?;
        let mut x = x;
        for i in 0..n {
            hooks.step(self.stage, i, n)?;
            let mut predict = |input: &Tensor, t: f64| -> Result<Tensor> {
                let input = if streams == 1 {
                    input.clone()
                } else {
                    Tensor::cat(&vec![input; streams], 0)?
                };
                let pred = denoiser.predict(&input, t, i)?;
                crate::limits::check_finite(&pred, self.stage)?;
                if pred.dims() != input.dims() {
                    return Err(Error::invalid(
                        "prediction",
                        format!("{:?} for a latent batch of {:?}", pred.dims(), input.dims()),
                    ));
                }
                match self.guidance {
                    Some(g) => mix_raw(g, &pred, b),
                    None => Ok(pred),
                }
            };
            x = scheduler.solve_step(&x, i, &mut predict, noise)?;
        }
        hooks.step(self.stage, n, n)?;
        Ok(x)
    }
}

fn mix_raw(g: &Guidance, pred: &Tensor, b: usize) -> Result<Tensor> {
    let s: Vec<Tensor> = (0..g.streams())
        .map(|i| pred.narrow(0, i * b, b))
        .collect::<candle_core::Result<_>>()?;
    let n = s.len();
    let mut out = s[n - 1].to_dtype(DType::F32)?;
    for (i, w) in g.weights.iter().enumerate() {
        let d = (s[i].to_dtype(DType::F32)? - s[i + 1].to_dtype(DType::F32)?)?;
        out = (out + (d * (*w as f64))?)?;
    }
    Ok(out.to_dtype(pred.dtype())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::SeededNoise;
    use crate::sampling::GuidanceSpace;

    /// v = target − x0 along the straight path: Euler reaches the target exactly.
    struct Straight {
        target: Tensor,
        start: Tensor,
        calls: usize,
    }
    impl Denoiser for Straight {
        fn predict(&mut self, x: &Tensor, _t: f64, _step: usize) -> Result<Tensor> {
            self.calls += 1;
            let reps = x.dim(0)? / self.start.dim(0)?;
            let v = (&self.target - &self.start)?;
            // cond stream: v, uncond stream: 0 → with w the mix is w·v
            let mut parts = vec![v.clone()];
            for _ in 1..reps {
                parts.push(v.zeros_like()?);
            }
            Ok(Tensor::cat(&parts, 0)?)
        }
    }

    #[test]
    fn flow_euler_reaches_the_target_and_guidance_scales_the_velocity() {
        let dev = Device::Cpu;
        let mut noise = SeededNoise::new(3);
        let x0 = initial_latent((2, 4), &mut noise, &dev).unwrap();
        let target = Tensor::ones((2, 4), DType::F32, &dev).unwrap();
        let mut sched = FlowEuler::new(5, 1000.0).unwrap();
        assert_eq!(sched.timestep(0), 0.0);
        assert!((sched.timestep(5) - 1000.0).abs() < 1e-9);
        let mut d = Straight {
            target: target.clone(),
            start: x0.clone(),
            calls: 0,
        };
        let l = LatentLoop {
            guidance: None,
            stage: "latent",
        };
        let out = l
            .run(
                x0.clone(),
                &mut d,
                &mut sched,
                &mut noise,
                &mut Hooks::new(),
            )
            .unwrap();
        assert_eq!(d.calls, 5);
        let err = (out - &target).unwrap().abs().unwrap().max_all().unwrap();
        assert!(err.to_scalar::<f32>().unwrap() < 1e-5);
        // two streams, w = 2: the mix is u + 2(c − u) = 2v → x0 + 2(target − x0)
        let g = Guidance::two_stream(2.0, GuidanceSpace::Logits);
        let l = LatentLoop {
            guidance: Some(&g),
            stage: "latent",
        };
        let mut d = Straight {
            target: target.clone(),
            start: x0.clone(),
            calls: 0,
        };
        let out = l
            .run(
                x0.clone(),
                &mut d,
                &mut sched,
                &mut noise,
                &mut Hooks::new(),
            )
            .unwrap();
        let want = ((&target * 2.0).unwrap() - &x0).unwrap();
        let err = (out - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(err.to_scalar::<f32>().unwrap() < 1e-5);
    }

    /// v(x, t) = t: midpoint integrates it exactly (x(1) = x(0) + 1/2), Euler does not.
    struct TimeField {
        calls: Vec<f64>,
    }
    impl Denoiser for TimeField {
        fn predict(&mut self, x: &Tensor, t: f64, _step: usize) -> Result<Tensor> {
            self.calls.push(t);
            Ok((x.ones_like()? * t)?)
        }
    }

    #[test]
    fn flow_midpoint_evaluates_twice_per_step_and_is_exact_for_a_linear_field() {
        let dev = Device::Cpu;
        let x0 = Tensor::zeros((1, 3), DType::F32, &dev).unwrap();
        let l = LatentLoop {
            guidance: None,
            stage: "latent",
        };
        let mut d = TimeField { calls: vec![] };
        let mut sched = FlowMidpoint::new(4, 1.0).unwrap();
        let out = l
            .run(
                x0,
                &mut d,
                &mut sched,
                &mut SeededNoise::new(0),
                &mut Hooks::new(),
            )
            .unwrap();
        assert_eq!(
            d.calls,
            vec![0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875]
        );
        let v = out.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| (x - 0.5).abs() < 1e-6), "{v:?}");
        assert!(FlowMidpoint::new(0, 1.0).is_err());
    }

    #[test]
    fn cancellation_stops_the_loop() {
        let dev = Device::Cpu;
        let x0 = Tensor::zeros((1, 2), DType::F32, &dev).unwrap();
        let mut d = Straight {
            target: x0.clone(),
            start: x0.clone(),
            calls: 0,
        };
        let token = crate::CancelToken::new();
        token.cancel();
        let mut hooks = Hooks::new().cancel_token(token);
        let l = LatentLoop {
            guidance: None,
            stage: "latent",
        };
        let r = l.run(
            x0,
            &mut d,
            &mut FlowEuler::new(3, 1.0).unwrap(),
            &mut SeededNoise::new(0),
            &mut hooks,
        );
        assert!(matches!(r, Err(Error::Cancelled { step: 0, .. })));
        assert_eq!(d.calls, 0);
    }
}
