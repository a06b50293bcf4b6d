//! JanusFlow on the CPU, the tiny fixture checkpoint (`tests/fixtures/janusflow-tiny`, VAE
//! inside): one flow step (CFG, two images) with the prompt prefix cached versus recomputed
//! every step as the reference does, and a whole 8-step 64×64 image through the backend
//! (prompt → flow loop → VAE decode).
//!
//!     cargo bench --bench janusflow

use any2any::candle_core::{Device, Tensor};
use any2any::decode::Denoiser;
use any2any::{Backend, GenerationParams, Hooks, LoadOptions, Modality, ModelFiles, Request};
use any2any_janusflow::flow::{FlowDenoiser, FlowPrompts};
use any2any_janusflow::JanusFlowBackend;
use criterion::{criterion_group, criterion_main, Criterion};
use std::path::Path;
use std::time::Duration;

fn bench(c: &mut Criterion) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/janusflow-tiny");
    let files = ModelFiles::from_dir(&dir).expect("fixture");
    let jf = JanusFlowBackend::load(&files, &LoadOptions::default()).expect("load");
    let req = Request::new()
        .text("a red fox in the snow")
        .want(Modality::Image);
    let (ids, _) = jf.render(&req).expect("prompt");
    let prompts = vec![ids; 2];
    let pad = jf.special_ids().pad;
    let x = Tensor::randn(0f32, 1.0, (4, 4, 8, 8), &Device::Cpu).expect("latent");
    let mk = || FlowPrompts::new(jf.model(), &prompts, pad, true).expect("rows");
    let mut cached = FlowDenoiser::cached(jf.model(), mk(), 17).expect("prefix");
    let mut full = FlowDenoiser::recompute(jf.model(), mk());
    let mut g = c.benchmark_group("janusflow-tiny");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("flow step, CFG, 2 images, prefix cached", |b| {
        b.iter(|| cached.predict(&x, 500.0, 1).expect("step"))
    });
    g.bench_function("flow step, CFG, 2 images, prefix recomputed", |b| {
        b.iter(|| full.predict(&x, 500.0, 1).expect("step"))
    });
    let image = req.clone().num_outputs(2).params(GenerationParams {
        steps: Some(8),
        ..Default::default()
    });
    g.bench_function(
        "8-step image ×2 end to end (prompt → flow → VAE)",
        |b| {
            b.iter(|| {
                jf.generate_batch(std::slice::from_ref(&image), &mut Hooks::new())
                    .expect("image")
            })
        },
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
