//! `any2any bench`: time the image-token decoding loop of a model of a *named real size*, built
//! in memory with constant weights (the same FLOPs and bytes as the trained model; nothing is
//! downloaded). Reports per-step time, tokens/s, time per image and peak memory for each batch
//! size with CFG on and off, as a table and as JSON.

use any2any::backbone::{
    BackboneConfig, BlockOrder, Decoder, ForwardArgs, MaskKind, MlpKind, NormKind, QkNorm,
    RowLayout,
};
use any2any::candle_core::{DType, Device, Module, Tensor};
use any2any::candle_nn::{self, VarBuilder};
use any2any::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any::{Error, Result, SeededNoise};
use std::time::Instant;

/// The decoding workload of one model size.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub backbone: BackboneConfig,
    /// Rows of the head that scores image tokens (its own head or the LM head).
    pub head_vocab: usize,
    /// An extra `hidden × hidden` projection before the head (Janus's generation head).
    pub head_proj: bool,
    /// Image tokens per image.
    pub image_tokens: usize,
    /// Prompt tokens before the image.
    pub prompt: usize,
}

#[allow(clippy::too_many_arguments)]
fn llama(
    vocab: usize,
    hidden: usize,
    inter: usize,
    layers: usize,
    heads: usize,
    kv: usize,
    theta: f64,
    max_pos: usize,
    qk_norm: bool,
) -> BackboneConfig {
    BackboneConfig {
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: inter,
        num_layers: layers,
        num_heads: heads,
        num_kv_heads: kv,
        head_dim: hidden / heads,
        norm_eps: 1e-6,
        norm: NormKind::Rms,
        mlp: MlpKind::Gated,
        hidden_act: candle_nn::Activation::Silu,
        block: BlockOrder::PreNorm,
        qk_norm: if qk_norm {
            QkNorm::PerHead
        } else {
            QkNorm::None
        },
        rope_theta: theta,
        rope_layout: Default::default(),
        partial_rotary_factor: 1.0,
        max_position_embeddings: max_pos,
        attention_bias: false,
        mlp_bias: false,
        naming: Default::default(),
    }
}

/// A weight store that materialises every tensor filled with a small constant: unlike zeros
/// (lazily mapped zero pages on the CPU) every byte is really allocated and read, as with trained
/// weights.
struct Filled;

impl candle_nn::var_builder::SimpleBackend for Filled {
    fn get(
        &self,
        s: any2any::candle_core::Shape,
        _: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> any2any::candle_core::Result<Tensor> {
        Tensor::full(1e-3f32, s, dev)?.to_dtype(dtype)
    }
    fn get_unchecked(
        &self,
        name: &str,
        _: DType,
        _: &Device,
    ) -> any2any::candle_core::Result<Tensor> {
        any2any::candle_core::bail!("bench weights need a shape for `{name}`")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        false
    }
}

/// Named sizes (the real checkpoints' backbone shapes).
pub fn workload(name: &str) -> Result<Workload> {
    let w = match name {
        "tiny" => Workload {
            name: "tiny",
            backbone: llama(64, 32, 64, 2, 4, 2, 1e4, 128, false),
            head_vocab: 16,
            head_proj: true,
            image_tokens: 16,
            prompt: 18,
        },
        "small" => Workload {
            name: "small",
            backbone: llama(4096, 512, 1408, 8, 8, 8, 1e4, 2048, false),
            head_vocab: 4096,
            head_proj: true,
            image_tokens: 576,
            prompt: 32,
        },
        "janus-pro-1b" => Workload {
            name: "janus-pro-1b",
            backbone: llama(102400, 2048, 5632, 24, 16, 16, 1e4, 16384, false),
            head_vocab: 16384,
            head_proj: true,
            image_tokens: 576,
            prompt: 32,
        },
        "janus-pro-7b" => Workload {
            name: "janus-pro-7b",
            backbone: llama(102400, 4096, 11008, 30, 32, 32, 1e4, 16384, false),
            head_vocab: 16384,
            head_proj: true,
            image_tokens: 576,
            prompt: 32,
        },
        "chameleon-7b" => Workload {
            name: "chameleon-7b",
            backbone: llama(65536, 4096, 11008, 32, 32, 32, 1e4, 4096, true),
            head_vocab: 65536,
            head_proj: false,
            image_tokens: 1024,
            prompt: 32,
        },
        "emu3-8b" => Workload {
            name: "emu3-8b",
            backbone: llama(184622, 4096, 14336, 32, 32, 8, 1e6, 9216, false),
            head_vocab: 184622,
            head_proj: false,
            image_tokens: 8193,
            prompt: 40,
        },
        "show-o" => {
            return Err(Error::invalid(
                "size",
                "show-o decodes by MaskGIT (every image token each step), not one token per step: use `cargo bench --bench showo`",
            ))
        }
        other => {
            return Err(Error::invalid(
                "size",
                format!("`{other}` (expected tiny, small, janus-pro-1b, janus-pro-7b, chameleon-7b, emu3-8b)"),
            ))
        }
    };
    Ok(w)
}

/// One measured configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchRow {
    pub size: String,
    pub device: String,
    pub dtype: String,
    pub batch: usize,
    pub cfg: bool,
    /// Context length the measured steps attend over (prompt + image tokens so far).
    pub context_start: usize,
    pub steps_measured: usize,
    pub prefill_ms: f64,
    pub step_ms_mean: f64,
    pub step_ms_p50: f64,
    pub step_ms_min: f64,
    /// Output tokens per second (batch / step time).
    pub tokens_per_s: f64,
    /// Prefill plus `image_tokens` steps at the mean step time.
    pub s_per_image_batch: f64,
    pub peak_rss_mib: f64,
}

/// Peak resident memory of this process (Linux `VmHWM`), MiB.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|k| k.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn available_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Runs the workload: per (batch, cfg), a prefill and then `steps` decode steps (after `warmup`),
/// each one the full image-token step (head → CFG → sample → embed → backbone).
#[allow(clippy::too_many_arguments)]
pub fn run(
    w: &Workload,
    device: &Device,
    dtype: DType,
    batches: &[usize],
    cfgs: &[bool],
    steps: usize,
    warmup: usize,
    context: Option<usize>,
) -> Result<Vec<BenchRow>> {
    let bb = &w.backbone;
    let bytes =
        (bb.num_params() + w.head_vocab * bb.hidden_size) as u64 * dtype.size_in_bytes() as u64;
    if device.is_cpu() {
        if let Some(avail) = available_bytes() {
            if bytes > avail {
                return Err(Error::invalid(
                    "size",
                    format!(
                        "{} needs ~{:.1} GiB of weights in {dtype:?} but only {:.1} GiB of memory is available",
                        w.name,
                        bytes as f64 / (1u64 << 30) as f64,
                        avail as f64 / (1u64 << 30) as f64
                    ),
                ));
            }
        }
    }
    let vb = VarBuilder::from_backend(Box::new(Filled), dtype, device.clone());
    let decoder = Decoder::load(vb.pp("model"), bb)?;
    let proj = if w.head_proj {
        Some(candle_nn::linear(
            bb.hidden_size,
            bb.hidden_size,
            vb.pp("proj"),
        )?)
    } else {
        None
    };
    let head = candle_nn::linear_no_bias(bb.hidden_size, w.head_vocab, vb.pp("head"))?;
    let start = context.unwrap_or(w.prompt).max(1);
    let mut rows_out = Vec::new();
    for &batch in batches {
        for &cfg in cfgs {
            let streams = if cfg { 2 } else { 1 };
            let rows = batch * streams;
            let cap = start + warmup + steps + 1;
            if cap > bb.max_position_embeddings {
                return Err(Error::ContextOverflow {
                    len: cap,
                    max: bb.max_position_embeddings,
                    reserved: 0,
                });
            }
            let mut cache = decoder.new_cache(rows, cap)?;
            let layout = RowLayout::dense(rows);
            let args = ForwardArgs {
                layout: &layout,
                mask: &MaskKind::Causal,
            };
            let ids = Tensor::zeros((rows, start), DType::U32, device)?;
            let t = Instant::now();
            let h = decoder.forward(&decoder.embed(&ids)?, args, &mut cache)?;
            let mut hidden = h.narrow(1, start - 1, 1)?.squeeze(1)?;
            hidden.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?; // sync
            let prefill_ms = t.elapsed().as_secs_f64() * 1e3;
            let pipe = LogitsPipeline::new(
                cfg.then(|| Guidance::two_stream(5.0, GuidanceSpace::Logits)),
                SamplingParams {
                    temperature: 1.0,
                    top_k: None,
                    top_p: None,
                },
            );
            let mut noise = SeededNoise::new(0);
            let mut times = Vec::with_capacity(steps);
            for i in 0..warmup + steps {
                let t = Instant::now();
                let x = match &proj {
                    Some(p) => p.forward(&hidden)?.gelu_erf()?,
                    None => hidden.clone(),
                };
                let logits = head.forward(&x)?;
                let next = pipe.sample(&logits, None, &mut noise)?;
                let next = if cfg {
                    Tensor::cat(&[&next, &next], 0)?
                } else {
                    next
                };
                let e = decoder.embed(&next.unsqueeze(1)?)?;
                hidden = decoder.forward(&e, args, &mut cache)?.squeeze(1)?;
                // One tiny host read per step: what a real loop pays to know it is done.
                hidden
                    .narrow(0, 0, 1)?
                    .narrow(1, 0, 1)?
                    .to_dtype(DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                if i >= warmup {
                    times.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
            let mut sorted = times.clone();
            sorted.sort_by(f64::total_cmp);
            let p50 = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
            let min = sorted.first().copied().unwrap_or(0.0);
            rows_out.push(BenchRow {
                size: w.name.to_string(),
                device: format!("{device:?}"),
                dtype: format!("{dtype:?}"),
                batch,
                cfg,
                context_start: start,
                steps_measured: times.len(),
                prefill_ms,
                step_ms_mean: mean,
                step_ms_p50: p50,
                step_ms_min: min,
                tokens_per_s: batch as f64 * 1e3 / mean,
                s_per_image_batch: (prefill_ms + mean * w.image_tokens as f64) / 1e3,
                peak_rss_mib: peak_rss_mib(),
            });
        }
    }
    Ok(rows_out)
}

/// Markdown table of the rows.
pub fn table(rows: &[BenchRow], image_tokens: usize) -> String {
    let mut s = format!(
        "| size | device | dtype | batch | CFG | ctx | prefill ms | step ms (mean / p50 / min) | tok/s | s per image ({image_tokens} tokens) | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {:.2} / {:.2} / {:.2} | {:.1} | {:.2} | {:.0} |\n",
            r.size,
            r.device,
            r.dtype,
            r.batch,
            if r.cfg { "on" } else { "off" },
            r.context_start,
            r.prefill_ms,
            r.step_ms_mean,
            r.step_ms_p50,
            r.step_ms_min,
            r.tokens_per_s,
            r.s_per_image_batch,
            r.peak_rss_mib
        ));
    }
    s
}
