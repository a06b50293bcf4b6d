//! One guided UNet step on the tiny SDXL-shaped UNet of `tests/fixtures/unet-tiny/sdxl`
//! (text_time, per-block transformer depth; 16/24/32 channels): the UNet on a `[cond; uncond]`
//! batch of two latents, at 8×8 (the fixture's size) and 32×32, then the Euler update, on the CPU.
//!
//!     cargo bench -p any2any-diffusion --bench unet

use any2any_core::candle_core::{DType, Device, Tensor};
use any2any_core::SeededNoise;
use any2any_diffusion::scheduler::SchedulerConfig;
use any2any_diffusion::unet::{TextTime, UNet2DConditionModel, UNetCondition};
use criterion::{criterion_group, criterion_main, Criterion};
use std::path::PathBuf;
use std::time::Duration;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/unet-tiny/sdxl")
}

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let unet = UNet2DConditionModel::from_dir(&fixture().join("unet"), DType::F32, &dev)
        .expect("tiny SDXL UNet");
    let cfg = SchedulerConfig::from_dir(&fixture().join("scheduler")).expect("scheduler");
    let mut sched = cfg.build(50).expect("50 steps");
    let ehs = Tensor::randn(0f32, 1.0, (2, 64, 24), &dev).expect("ehs");
    let pooled = ehs.mean(1).expect("mean");
    let tt = TextTime::sdxl(pooled, (1024, 1024), (0, 0), (1024, 1024)).expect("time ids");
    let cond = UNetCondition::new(ehs).with_text_time(tt);
    let mut noise = SeededNoise::new(0);
    let mut g = c.benchmark_group("unet-tiny-sdxl");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    for side in [8usize, 32] {
        let x = Tensor::randn(0f32, 1.0, (1, 4, side, side), &dev).expect("latent");
        g.bench_function(format!("guided step {side}x{side}"), |b| {
            b.iter(|| {
                let inp = sched.scale_input(&x, 0).expect("scale");
                let inp = Tensor::cat(&[&inp, &inp], 0).expect("cat");
                let out = unet.forward(&inp, sched.timestep(0), &cond).expect("unet");
                let (cp, up) = (
                    out.narrow(0, 0, 1).expect("c"),
                    out.narrow(0, 1, 1).expect("u"),
                );
                let pred = (&up + ((cp - &up).expect("d") * 3.0).expect("w")).expect("mix");
                sched.step(&x, &pred, 0, &mut noise).expect("step")
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
