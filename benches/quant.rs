//! Criterion benches of the quantized step's core: one backbone projection (`Linear::forward`)
//! at the Janus-Pro-1B MLP shape (2048 → 5632) for a CFG pair of rows (m = 2) and a single row,
//! dense f32 against q8_0, q6k and q4k weights quantized through the production load path.
//!
//!     cargo bench --bench quant
//!
//! `any2any bench --size janus-pro-1b --quant f32,q8_0,q4k` times the whole image-token step.

use any2any::candle_core::{DType, Device, Module, Tensor};
use any2any::candle_nn::VarBuilder;
use any2any::nn::Linear;
use any2any::quant::{QuantScope, QuantType};
use criterion::{criterion_group, criterion_main, Criterion};
use std::collections::HashMap;
use std::time::Duration;

const IN: usize = 2048;
const OUT: usize = 5632;

fn projection(quant: Option<QuantType>) -> Linear {
    let w = Tensor::randn(0f32, 0.02, (OUT, IN), &Device::Cpu).expect("weight");
    let vb = VarBuilder::from_tensors(
        HashMap::from([("p.weight".to_string(), w)]),
        DType::F32,
        &Device::Cpu,
    );
    let _scope = QuantScope::enter(quant);
    Linear::load_quantizable(IN, OUT, false, vb.pp("p")).expect("projection")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("projection_2048x5632");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    let variants = [
        None,
        Some(QuantType::Q8_0),
        Some(QuantType::Q6K),
        Some(QuantType::Q4K),
    ];
    for q in variants {
        let l = projection(q);
        for m in [1usize, 2] {
            let x = Tensor::randn(0f32, 1., (m, 1, IN), &Device::Cpu).expect("input");
            let name = format!("{}/m{m}", q.map_or("f32", QuantType::name));
            g.bench_function(name, |b| b.iter(|| l.forward(&x).expect("forward")));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
