//! Criterion benches: one CFG decoding step of a small Janus-shaped model, one VQ decode, and a
//! whole tiny text→image generation. Weights are random (same FLOPs as trained ones).
//!
//!     cargo bench --bench decode

use any2any::backbone::{ForwardArgs, MaskKind, RowLayout};
use any2any::candle_core::{DType, Device, Module, Tensor};
use any2any::candle_nn::{VarBuilder, VarMap};
use any2any::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any::{LoadOptions, Modality, Pipeline, Request, SeededNoise};
use any2any_janus::config::JanusConfig;
use any2any_janus::model::JanusModel;
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

/// A small Janus: 8 layers × 512 hidden, 4096-word vocab, 24×24 image grid, VQ base 32.
fn small_config() -> JanusConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": "janus",
        "image_token_id": 6,
        "text_config": {
            "vocab_size": 4096, "hidden_size": 512, "intermediate_size": 1408,
            "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 8,
            "max_position_embeddings": 1024, "rms_norm_eps": 1e-6
        },
        "vision_config": {
            "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
            "image_size": 384, "patch_size": 16, "num_image_tokens": 576,
            "projection_dim": 512, "mlp_ratio": 2
        },
        "vq_config": {
            "embed_dim": 8, "num_embeddings": 16384, "latent_channels": 64, "base_channels": 32,
            "channel_multiplier": [1, 1, 2, 2, 2], "num_res_blocks": 1,
            "projection_dim": 512, "image_token_embed_dim": 512
        }
    }))
    .expect("valid bench config")
}

fn small_model() -> JanusModel {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
    JanusModel::load(vb, &small_config()).expect("build small model")
}

fn bench_decode_step(c: &mut Criterion) {
    let m = small_model();
    let prompt = 32;
    let rows = 2; // CFG: cond + uncond
    let layout = RowLayout::dense(rows);
    let args = ForwardArgs {
        layout: &layout,
        mask: &MaskKind::Causal,
    };
    let mut cache = m.decoder.new_cache(rows, prompt + 600).unwrap();
    let ids = Tensor::zeros((rows, prompt), DType::U32, &Device::Cpu).unwrap();
    let x = m.decoder.embed(&ids).unwrap();
    let h = m.decoder.forward(&x, args, &mut cache).unwrap();
    let hidden = h.narrow(1, prompt - 1, 1).unwrap().squeeze(1).unwrap();
    // Fill the cache to mid-image (prompt + 288 tokens) so attention spans a realistic length.
    let tok = Tensor::zeros(1usize, DType::U32, &Device::Cpu).unwrap();
    let e1 = m.code_embeddings(&tok).unwrap();
    let e = Tensor::cat(&[&e1, &e1], 0).unwrap();
    for _ in 0..288 {
        m.decoder.forward(&e, args, &mut cache).unwrap();
    }
    let at = cache.len();
    let pipe = LogitsPipeline::new(
        Some(Guidance::two_stream(5.0, GuidanceSpace::Logits)),
        SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
        },
    );
    let mut noise = SeededNoise::new(0);
    let mut g = c.benchmark_group("janus_small");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("image_decode_step_cfg2_ctx320", |b| {
        b.iter(|| {
            cache.truncate(at);
            let logits = m.gen_head.forward(&hidden).unwrap();
            let next = pipe.sample(&logits, None, &mut noise).unwrap();
            let e = m.code_embeddings(&next).unwrap();
            let e = Tensor::cat(&[&e, &e], 0).unwrap();
            m.decoder.forward(&e, args, &mut cache).unwrap()
        })
    });
    let codes = Tensor::zeros((1, 24 * 24), DType::U32, &Device::Cpu).unwrap();
    g.sample_size(10);
    g.bench_function("vq_decode_24x24_to_384px", |b| {
        b.iter(|| m.vq.decode_codes(&codes, 24, 24).unwrap())
    });
    g.finish();
}

fn bench_tiny_end_to_end(c: &mut Criterion) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/janus-tiny");
    let pipe = Pipeline::load(dir, LoadOptions::default()).expect("tiny janus");
    let mut g = c.benchmark_group("janus_tiny");
    g.sample_size(20).measurement_time(Duration::from_secs(3));
    g.bench_function("text_to_image_16_codes", |b| {
        b.iter(|| {
            pipe.generate(Request::new().text("a red fox").want(Modality::Image))
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_decode_step, bench_tiny_end_to_end);
criterion_main!(benches);
