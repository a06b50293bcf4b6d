//! Show-o MaskGIT on the CPU: one step and a whole 18-step 256-code image (CFG, s = 1.75), with
//! the text prefix's KV cached once versus recomputed every step as the reference does. A small
//! random Phi (4 × 256, MLP 1024) with the real sequence layout (129 text slots + soi + 256 codes
//! + eoi = 387 tokens) and the real merged vocabulary shape (text 1000 + 10 + 8192 codes + mask).
//!
//!     cargo bench --bench showo

use any2any::candle_core::{DType, Device};
use any2any::candle_nn::{VarBuilder, VarMap};
use any2any::SeededNoise;
use any2any_showo::config::ShowoConfig;
use any2any_showo::maskgit::{t2i_generate, T2iOptions};
use any2any_showo::model::ShowoModel;
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

const TEXT: usize = 129; // [t2i] + max_seq_length 128 text slots (pads, bos, text, eos)
const N: usize = 256;

fn small() -> ShowoModel {
    let dir = tempfile::tempdir().expect("tempdir");
    let llm = 1000;
    let vocab = llm + 10 + 8192 + 1;
    let cfg = serde_json::json!({
        "_class_name": "Showo", "w_clip_vit": false, "vocab_size": vocab, "llm_vocab_size": llm,
        "codebook_size": 8192, "num_vq_tokens": N, "mask_token_id": vocab - 1,
        "llm_model_path": "phi_config.json", "load_from_showo": true
    });
    let phi = serde_json::json!({
        "model_type": "phi", "vocab_size": vocab, "hidden_size": 256, "intermediate_size": 1024,
        "num_hidden_layers": 4, "num_attention_heads": 8, "partial_rotary_factor": 0.5,
        "max_position_embeddings": 2048, "layer_norm_eps": 1e-5, "hidden_act": "gelu_new"
    });
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).expect("write config");
    std::fs::write(dir.path().join("phi_config.json"), phi.to_string()).expect("write phi");
    let (cfg, bb) = ShowoConfig::load(&dir.path().join("config.json")).expect("config");
    let vm = VarMap::new();
    ShowoModel::load(
        VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu),
        cfg,
        &bb,
    )
    .expect("model")
}

fn ids(m: &ShowoModel, text: usize) -> Vec<u32> {
    let v = m.config.vocab();
    let pads = TEXT - 1 - (text + 2);
    let mut ids = vec![v.pad; pads];
    ids.push(v.t2i);
    ids.push(50); // bos stand-in
    ids.extend((0..text as u32).map(|i| 100 + i));
    ids.push(50);
    ids.push(v.soi);
    ids.extend(std::iter::repeat_n(v.mask, N));
    ids.push(v.eoi);
    ids
}

fn bench(c: &mut Criterion) {
    let m = small();
    let cond = ids(&m, 12);
    let uncond = ids(&m, 0);
    let mut g = c.benchmark_group("showo_small_256_codes");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (steps, label) in [(1, "one_step"), (18, "image_18_steps")] {
        for cache_prefix in [false, true] {
            let opts = T2iOptions {
                steps,
                guidance_scale: 1.75,
                temperature: 1.0,
                cache_prefix,
            };
            let name = format!(
                "{label}_{}",
                if cache_prefix {
                    "cached_prefix"
                } else {
                    "uncached"
                }
            );
            g.bench_function(name, |b| {
                b.iter(|| {
                    let mut noise = SeededNoise::new(0);
                    t2i_generate(&m, &cond, Some(&uncond), TEXT, &opts, &mut noise).expect("t2i")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
