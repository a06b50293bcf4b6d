//! `any2any bench`: time the image-token decoding loop of a model of a *named real size*, built
//! in memory with constant weights (the same FLOPs and bytes as the trained model; nothing is
//! downloaded). Reports per-step time, tokens/s, time per image and peak memory for each batch
//! size with CFG on and off, as a table and as JSON.

use any2any::backbone::{BackboneConfig, BlockOrder, Decoder, MlpKind, NormKind, QkNorm};
use any2any::candle_core::{DType, Device, Module, Tensor};
use any2any::candle_nn::{self, VarBuilder};
use any2any::decode::{CodeLoop, Head, NoConstraint, RowBatch, RowInput};
use any2any::nn::Linear;
use any2any::quant::{QuantScope, QuantType};
use any2any::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any::{DecodeStats, Error, Hooks, Result, SeededNoise, Speculative};
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
        "lwm-7b" => Workload {
            // LWM-Chat-*-Jax: LLaMA-2-7B, θ 5e7, interleaved RoPE; image tokens are drawn from the
            // separate 8448-row vision head (256 codes + the end-of-frame token)
            name: "lwm-7b",
            backbone: BackboneConfig {
                rope_layout: any2any::backbone::RopeLayout::Interleaved,
                ..llama(32000, 4096, 11008, 32, 32, 32, 5e7, 32768, false)
            },
            head_vocab: 8448,
            head_proj: false,
            image_tokens: 257,
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
                format!("`{other}` (expected tiny, small, janus-pro-1b, janus-pro-7b, chameleon-7b, emu3-8b, lwm-7b)"),
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
    /// Backbone linears: `none` (dense at `dtype`), `q8_0`, `q6k` or `q4k`.
    pub quant: String,
    /// Round of the interleaved comparison.
    pub round: usize,
    /// Seconds to build (and quantize) the weights.
    pub build_s: f64,
    pub batch: usize,
    pub cfg: bool,
    /// `off`, or the speculative decoding measured (`jacobi:8`).
    pub speculative: String,
    /// Image tokens committed per forward pass (1 without speculation). With the bench's
    /// constant weights every conditional is the same uniform distribution, so redrawn drafts
    /// are always accepted: this figure says nothing about a trained model.
    pub tokens_per_forward: f64,
    /// Drafts accepted over drafts verified (meaningless here, as `tokens_per_forward`).
    pub acceptance: f64,
    /// This forward pass's mean time over plain decoding's step (same batch and CFG): the
    /// tokens per forward a trained model must accept for speculation to pay.
    pub break_even: f64,
    /// Context length the measured steps attend over (prompt + image tokens so far).
    pub context_start: usize,
    pub steps_measured: usize,
    pub prefill_ms: f64,
    /// Per forward pass (a step, or a speculative window).
    pub step_ms_mean: f64,
    pub step_ms_p50: f64,
    pub step_ms_min: f64,
    /// Output tokens per second (batch / step time).
    pub tokens_per_s: f64,
    /// Prefill plus `image_tokens / tokens_per_forward` forward passes at the mean time.
    pub s_per_image_batch: f64,
    /// Resident memory right after the weights were built, MiB.
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
}

/// Peak resident memory of this process (Linux `VmHWM`), MiB.
pub fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// Resident memory of this process now (Linux `VmRSS`), MiB.
pub fn rss_mib() -> f64 {
    status_mib("VmRSS:")
}

fn status_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(key)).and_then(|l| {
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

/// What to measure: every (quant, batch, CFG) configuration, `rounds` times over.
pub struct Plan<'a> {
    pub batches: &'a [usize],
    pub cfgs: &'a [bool],
    /// Weight variants compared (`None`: dense at the bench dtype).
    pub quants: &'a [Option<QuantType>],
    /// Speculative decodings compared (`None`: plain decoding), measured on each build.
    pub specs: &'a [Option<Speculative>],
    /// Rounds over all variants (interleaved: a shared machine's load drifts over time).
    pub rounds: usize,
    pub steps: usize,
    pub warmup: usize,
    pub context: Option<usize>,
}

/// Bytes of the model's weights in `dtype`, the backbone's linears in `quant` when given.
fn weight_bytes(w: &Workload, dtype: DType, quant: Option<QuantType>) -> u64 {
    let bb = &w.backbone;
    let dense =
        (bb.num_params() + w.head_vocab * bb.hidden_size) as u64 * dtype.size_in_bytes() as u64;
    let Some(q) = quant else {
        return dense;
    };
    let h = bb.hidden_size as u64;
    let linears = bb.num_layers as u64
        * (h * (bb.num_heads + 2 * bb.num_kv_heads) as u64 * bb.head_dim as u64
            + (bb.num_heads * bb.head_dim) as u64 * h
            + 3 * h * bb.intermediate_size as u64);
    let per = q.ggml().type_size() as f64 / q.block_size() as f64;
    dense - linears * dtype.size_in_bytes() as u64 + (linears as f64 * per) as u64
}

/// Builds the workload's model with constant weights, its backbone linears quantized to
/// `quant` tensor by tensor (one quantization per distinct shape, copied for the others: with
/// constant weights they are identical), so the dense model is never whole.
fn build(
    w: &Workload,
    device: &Device,
    dtype: DType,
    quant: Option<QuantType>,
) -> Result<(Decoder, BenchHead)> {
    let bb = &w.backbone;
    let vb = VarBuilder::from_backend(Box::new(Filled), dtype, device.clone());
    let scope = QuantScope::enter(quant).reuse_per_shape();
    let decoder = Decoder::load(vb.pp("model"), bb)?;
    drop(scope);
    let proj = if w.head_proj {
        Some(Linear::load(
            bb.hidden_size,
            bb.hidden_size,
            true,
            vb.pp("proj"),
        )?)
    } else {
        None
    };
    let head = Linear::load(bb.hidden_size, w.head_vocab, false, vb.pp("head"))?;
    Ok((decoder, BenchHead { proj, head }))
}

/// Runs the workload: per round, per weight variant (built, measured, dropped), per (batch,
/// cfg): a prefill and then `steps` decode steps (after `warmup`), each one the full image-token
/// step (head → CFG → sample → embed → backbone).
pub fn run(w: &Workload, device: &Device, dtype: DType, plan: &Plan) -> Result<Vec<BenchRow>> {
    if device.is_cpu() {
        if let Some(avail) = available_bytes() {
            for &q in plan.quants {
                let bytes = weight_bytes(w, dtype, q);
                if bytes > avail {
                    return Err(Error::invalid(
                        "size",
                        format!(
                            "{} needs ~{:.1} GiB of weights in {dtype:?}{} but only {:.1} GiB of memory is available",
                            w.name,
                            bytes as f64 / (1u64 << 30) as f64,
                            q.map_or(String::new(), |q| format!(" + {q}")),
                            avail as f64 / (1u64 << 30) as f64
                        ),
                    ));
                }
            }
        }
    }
    let start = plan.context.unwrap_or(w.prompt).max(1);
    let mut rows_out = Vec::new();
    for round in 0..plan.rounds.max(1) {
        for &quant in plan.quants {
            let t = Instant::now();
            let (decoder, head) = build(w, device, dtype, quant)?;
            let build_s = t.elapsed().as_secs_f64();
            let rss = rss_mib();
            for &batch in plan.batches {
                for &cfg in plan.cfgs {
                    for &spec in plan.specs {
                        let setup = Setup {
                            batch,
                            cfg,
                            start,
                            spec,
                        };
                        let m = measure(&decoder, &head, device, &setup, plan.steps, plan.warmup)?;
                        let quant_name = quant.map_or("none".to_string(), |q| q.name().into());
                        let per_forward = if spec.is_some() {
                            m.stats.tokens as f64 / (m.stats.forwards.max(1) * batch) as f64
                        } else {
                            1.0
                        };
                        let plain_ms = rows_out
                            .iter()
                            .rev()
                            .find(|r: &&BenchRow| {
                                r.round == round
                                    && r.quant == quant_name
                                    && r.batch == batch
                                    && r.cfg == cfg
                                    && r.speculative == "off"
                            })
                            .map_or(m.mean(), |r| r.step_ms_mean);
                        rows_out.push(BenchRow {
                            size: w.name.to_string(),
                            device: format!("{device:?}"),
                            dtype: format!("{dtype:?}"),
                            quant: quant_name,
                            round,
                            build_s,
                            batch,
                            cfg,
                            speculative: spec.map_or("off".into(), |s| s.to_string()),
                            tokens_per_forward: per_forward,
                            acceptance: m.stats.acceptance(),
                            break_even: m.mean() / plain_ms,
                            context_start: start,
                            steps_measured: m.times.len(),
                            prefill_ms: m.prefill_ms,
                            step_ms_mean: m.mean(),
                            step_ms_p50: m.quantile(0.5),
                            step_ms_min: m.quantile(0.0),
                            tokens_per_s: per_forward * batch as f64 * 1e3 / m.mean(),
                            s_per_image_batch: (m.prefill_ms
                                + m.mean() * w.image_tokens as f64 / per_forward)
                                / 1e3,
                            rss_mib: rss,
                            peak_rss_mib: peak_rss_mib(),
                        });
                    }
                }
            }
        }
    }
    Ok(rows_out)
}

/// The image head of the named sizes as the families build it: an optional `hidden × hidden`
/// projection with GELU (Janus's generation head) before the vocabulary head, both the
/// production [`Linear`]; the decoder's token embedding in.
struct BenchHead {
    proj: Option<Linear>,
    head: Linear,
}

/// The head with the decoder whose token embedding feeds the next step.
struct WithDecoder<'a>(&'a BenchHead, &'a Decoder);

impl Head for WithDecoder<'_> {
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let x = match &self.0.proj {
            Some(p) => p.forward(hidden)?.gelu_erf()?,
            None => hidden.clone(),
        };
        Ok(self.0.head.forward(&x)?.to_dtype(DType::F32)?)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.1.embed(&ids.unsqueeze(1)?)
    }
}

/// Prefill time and per-step times of one (batch, CFG) configuration, and the loop's counters.
struct Measured {
    prefill_ms: f64,
    times: Vec<f64>,
    stats: DecodeStats,
}

/// One measured configuration: images, CFG, prompt length, speculative decoding.
struct Setup {
    batch: usize,
    cfg: bool,
    start: usize,
    spec: Option<Speculative>,
}

impl Measured {
    fn mean(&self) -> f64 {
        self.times.iter().sum::<f64>() / self.times.len().max(1) as f64
    }
    fn quantile(&self, q: f64) -> f64 {
        let mut sorted = self.times.clone();
        sorted.sort_by(f64::total_cmp);
        let i = ((sorted.len().saturating_sub(1)) as f64 * q).round() as usize;
        sorted.get(i).copied().unwrap_or(0.0)
    }
}

/// Times the production image loop ([`RowBatch`] + [`CodeLoop`], the step every AR image
/// family runs: head → CFG → sample → embed → backbone): each step is the interval between two
/// progress reports of the loop, the device synchronised at each (under speculative decoding
/// a report per window: one forward pass of up to `window` tokens and its verification).
fn measure(
    decoder: &Decoder,
    head: &BenchHead,
    device: &Device,
    setup: &Setup,
    steps: usize,
    warmup: usize,
) -> Result<Measured> {
    let &Setup {
        batch,
        cfg,
        start,
        spec,
    } = setup;
    let streams = if cfg { 2 } else { 1 };
    let prompt = vec![0u32; start];
    let rows = vec![RowInput::Ids(&prompt); batch * streams];
    // one more loop step than measured: the loop's last step draws without a forward; under
    // speculation a forward may commit up to a window of tokens
    let loop_steps = (warmup + steps + 1) * spec.map_or(1, |s| s.window);
    let t = Instant::now();
    let (mut rb, hidden) = RowBatch::prefill(decoder, &rows, loop_steps)?;
    device.synchronize()?;
    let prefill_ms = t.elapsed().as_secs_f64() * 1e3;
    let pipe = LogitsPipeline::new(
        cfg.then(|| Guidance::two_stream(5.0, GuidanceSpace::Logits)),
        SamplingParams {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
        },
    );
    let stamps = std::cell::RefCell::new(Vec::with_capacity(loop_steps));
    let mut hooks = Hooks::new().on_progress(|_| {
        // a failed sync shows up as the loop's own error on the next op
        let _ = device.synchronize();
        stamps.borrow_mut().push(Instant::now());
    });
    let lp = CodeLoop {
        speculative: spec,
        ..CodeLoop::new(&pipe, loop_steps)
    };
    lp.run(
        &mut rb,
        &WithDecoder(head, decoder),
        hidden,
        &mut NoConstraint,
        &mut SeededNoise::new(0),
        &mut hooks,
    )?;
    let stats = hooks.stats;
    drop(hooks);
    let stamps = stamps.into_inner();
    let times = stamps
        .windows(2)
        .skip(warmup)
        .take(steps)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    Ok(Measured {
        prefill_ms,
        times,
        stats,
    })
}

/// Markdown table of the rows.
pub fn table(rows: &[BenchRow], image_tokens: usize) -> String {
    let mut s = format!(
        "| size | device | dtype | quant | round | batch | CFG | speculative | tokens / forward (synthetic) | forward cost vs plain step | ctx | prefill ms | forward ms (mean / p50 / min) | tok/s | s per image ({image_tokens} tokens) | RSS / peak MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2}× | {} | {:.1} | {:.2} / {:.2} / {:.2} | {:.1} | {:.2} | {:.0} / {:.0} |\n",
            r.size,
            r.device,
            r.dtype,
            r.quant,
            r.round,
            r.batch,
            if r.cfg { "on" } else { "off" },
            r.speculative,
            r.tokens_per_forward,
            r.break_even,
            r.context_start,
            r.prefill_ms,
            r.step_ms_mean,
            r.step_ms_p50,
            r.step_ms_min,
            r.tokens_per_s,
            r.s_per_image_batch,
            r.rss_mib,
            r.peak_rss_mib
        ));
    }
    s
}

/// `--size janusflow-1.3b` / `janusflow-tiny`: the rectified-flow loop of JanusFlow (encoder →
/// LLM over `[t_emb, latent tokens]` after the cached prompt → decoder), timed per step, and one
/// SDXL-VAE decode.
#[cfg(feature = "janusflow")]
pub mod flow {
    use super::{available_bytes, peak_rss_mib, Filled};
    use any2any::candle_core::{DType, Device, Tensor};
    use any2any::candle_nn::VarBuilder;
    use any2any::decode::{FlowEuler, LatentLoop};
    use any2any::sampling::{Guidance, GuidanceSpace};
    use any2any::{Error, Hooks, Result, SeededNoise};
    use any2any_diffusion::vae::{KlVae, VaeConfig};
    use any2any_janusflow::flow::{FlowDenoiser, FlowPrompts};
    use any2any_janusflow::{JanusFlowConfig, JanusFlowModel};
    use std::time::Instant;

    /// Prompt tokens of the README's template around a short prompt (its last one dropped).
    const PROMPT: usize = 24;
    /// Steps of one image (the README's).
    const IMAGE_STEPS: usize = 30;

    /// The sizes: the real checkpoint's shapes, or the test fixture's.
    pub fn config(size: &str) -> Result<(JanusFlowConfig, usize)> {
        let (lm, width, und, enc, latent) = match size {
            "janusflow-1.3b" => (
                r#"{"vocab_size":102400,"hidden_size":2048,"intermediate_size":5632,"num_hidden_layers":24,"num_attention_heads":16,"max_position_embeddings":16384}"#,
                2048,
                r#"{"model_name":"siglip_large_patch16_384","image_size":384,"select_layer":-1}"#,
                768,
                48,
            ),
            "janusflow-tiny" => (
                r#"{"vocab_size":112,"hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"max_position_embeddings":512}"#,
                64,
                r#"{"model_name":"t","image_size":64,"select_layer":-1,"width":32,"layers":2,"heads":2,"patch_size":16}"#,
                32,
                8,
            ),
            other => {
                return Err(Error::invalid(
                    "size",
                    format!("`{other}` (janusflow-1.3b or janusflow-tiny)"),
                ))
            }
        };
        let json = format!(
            r#"{{"language_config":{lm},
            "vision_und_enc_config":{{"cls":"CLIPVisionTower","params":{und}}},
            "vision_gen_enc_config":{{"cls":"ShallowUViTEncoder","params":{{"input_channels":4,"stride":2,"kernel_size":2,"padding":0,"block_out_channels":[{enc}],"layers_in_middle":2,"hidden_size":{width}}}}},
            "vision_gen_dec_config":{{"cls":"ShallowUViTDecoder","params":{{"in_channels":{enc},"out_channels":4,"block_out_channels":[{enc}],"upsamples":1,"layers_in_middle":2,"hidden_size":{width}}}}}}}"#
        );
        let cfg = serde_json::from_str(&json).map_err(|e| Error::invalid("size", e.to_string()))?;
        Ok((cfg, latent))
    }

    /// One measured configuration of the flow loop.
    #[derive(Debug, Clone, serde::Serialize)]
    pub struct FlowRow {
        pub size: String,
        pub device: String,
        pub dtype: String,
        /// Images (prompts) per batch; with CFG the LLM runs twice as many rows.
        pub batch: usize,
        pub cfg: bool,
        pub prompt_tokens: usize,
        /// Latent tokens per image (plus one timestep token per step).
        pub latent_tokens: usize,
        pub prefix_ms: f64,
        pub steps_measured: usize,
        pub step_ms_mean: f64,
        pub step_ms_min: f64,
        /// One SDXL-VAE decode of the batch.
        pub vae_decode_ms: f64,
        /// Prefix + 30 steps at the mean step time + the VAE decode.
        pub s_per_image_batch: f64,
        pub peak_rss_mib: f64,
    }

    /// Times the production loop ([`LatentLoop`] over [`FlowDenoiser`] with the cached prefix):
    /// each step is the interval between two progress reports, the device synchronised at each.
    pub fn run(
        size: &str,
        device: &Device,
        dtype: DType,
        batch: usize,
        cfg_on: bool,
        steps: usize,
        warmup: usize,
    ) -> Result<FlowRow> {
        let (cfg, latent) = config(size)?;
        if device.is_cpu() {
            let need = 2_100_000_000u64 * dtype.size_in_bytes() as u64;
            if let Some(avail) = available_bytes().filter(|&a| size == "janusflow-1.3b" && need > a)
            {
                return Err(Error::invalid(
                    "size",
                    format!(
                        "{size} needs ~{:.1} GiB, {:.1} GiB available",
                        need as f64 / 1073741824.0,
                        avail as f64 / 1073741824.0
                    ),
                ));
            }
        }
        let vb = VarBuilder::from_backend(Box::new(Filled), dtype, device.clone());
        let model = JanusFlowModel::load(vb, &cfg)?;
        let prompts = vec![vec![0u32; PROMPT + 1]; batch];
        let t = Instant::now();
        let rows = FlowPrompts::new(&model, &prompts, 0, cfg_on)?;
        let span = 1 + (latent / 2) * (latent / 2);
        let mut den = FlowDenoiser::cached(&model, rows, span)?;
        device.synchronize()?;
        let prefix_ms = t.elapsed().as_secs_f64() * 1e3;
        let g = Guidance::two_stream(2.0, GuidanceSpace::Logits);
        let lp = LatentLoop {
            guidance: cfg_on.then_some(&g),
            stage: "flow",
        };
        let x = Tensor::randn(0f32, 1.0, (batch, 4, latent, latent), device)?;
        let stamps = std::cell::RefCell::new(Vec::new());
        let mut hooks = Hooks::new().on_progress(|_| {
            let _ = device.synchronize();
            stamps.borrow_mut().push(Instant::now());
        });
        let mut sched = FlowEuler::new(warmup + steps, 1000.0)?;
        let z = lp.run(
            x,
            &mut den,
            &mut sched,
            &mut SeededNoise::new(0),
            &mut hooks,
        )?;
        drop(hooks);
        let times: Vec<f64> = stamps
            .into_inner()
            .windows(2)
            .skip(warmup)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect();
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        let vae_cfg = if size == "janusflow-1.3b" {
            VaeConfig::sdxl()
        } else {
            tiny_vae()
        };
        let vae = KlVae::new(
            VarBuilder::from_backend(Box::new(Filled), dtype, device.clone()),
            vae_cfg,
            "bench",
        )?;
        let t = Instant::now();
        vae.decode_scaled(&z)?;
        device.synchronize()?;
        let vae_decode_ms = t.elapsed().as_secs_f64() * 1e3;
        Ok(FlowRow {
            size: size.into(),
            device: format!("{device:?}"),
            dtype: format!("{dtype:?}"),
            batch,
            cfg: cfg_on,
            prompt_tokens: PROMPT,
            latent_tokens: span - 1,
            prefix_ms,
            steps_measured: times.len(),
            step_ms_mean: mean,
            step_ms_min: times.iter().copied().fold(f64::INFINITY, f64::min),
            vae_decode_ms,
            s_per_image_batch: (prefix_ms + mean * IMAGE_STEPS as f64 + vae_decode_ms) / 1e3,
            peak_rss_mib: peak_rss_mib(),
        })
    }

    fn tiny_vae() -> VaeConfig {
        serde_json::from_str(r#"{"block_out_channels":[8,16,16,16],"norm_num_groups":8,"scaling_factor":0.13025,"down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D","DownEncoderBlock2D"],"up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D","UpDecoderBlock2D"]}"#).unwrap_or_default()
    }

    /// Markdown table of the rows.
    pub fn table(rows: &[FlowRow]) -> String {
        let mut s = String::from("| size | device | dtype | images | CFG | prompt | latent tokens | prefix ms | step ms (mean / min) | VAE decode ms | s per image batch (30 steps) | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} / {:.1} | {:.1} | {:.2} | {:.0} |\n",
                r.size, r.device, r.dtype, r.batch, if r.cfg { "on" } else { "off" }, r.prompt_tokens, r.latent_tokens,
                r.prefix_ms, r.step_ms_mean, r.step_ms_min, r.vae_decode_ms, r.s_per_image_batch, r.peak_rss_mib
            ));
        }
        s
    }
}

/// `--size emu2-gen` / `emu2-tiny`: Emu2-Gen's two loops at the real shapes (or the test
/// fixture's): the regression of the 64 visual embeddings by the LLaMA-33B-shaped LLM (KV-cached,
/// the CFG negative as one more row), then the SDXL-shaped UNet's guided Euler steps at 1024²
/// (128×128 latents) and one SDXL-VAE decode. Constant weights; the EVA tower is counted but not
/// built (text→image never runs it). The weights' memory is computed from the parameter counts
/// first, and a size that does not fit is refused with what it needs.
#[cfg(feature = "emu2")]
pub mod emu2 {
    use super::{available_bytes, peak_rss_mib, Filled};
    use any2any::backbone::{BackboneConfig, Decoder};
    use any2any::candle_core::{DType, Device, Shape, Tensor};
    use any2any::candle_nn::{self, VarBuilder};
    use any2any::decode::{initial_latent, LatentLoop};
    use any2any::limits::{human_bytes, memory_budget};
    use any2any::nn::Linear;
    use any2any::sampling::{Guidance, GuidanceSpace};
    use any2any::{Error, Hooks, Result, SeededNoise};
    use any2any_diffusion::scheduler::SchedulerConfig;
    use any2any_diffusion::unet::{UNet2DConditionModel, UNetConfig, UNetDenoiser};
    use any2any_diffusion::vae::{KlVae, VaeConfig};
    use any2any_emu2::eva::EvaTower;
    use any2any_emu2::regress::Regression;
    use any2any_emu2::Emu2Config;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    /// Prompt tokens before `[IMG]` (`<s>` and a short prompt).
    const PROMPT: usize = 16;
    /// Steps of one image (the reference's default).
    const IMAGE_STEPS: usize = 50;
    /// The memory of an "80 GB" GPU (H100/A100 80GB: 80 GiB of HBM).
    const GPU_80GB: u64 = 80 << 30;

    /// Emu2-Gen's `unet/config.json` (`Emu2/emu/conf/diffusion_config/unet`): SDXL's UNet with
    /// `cross_attention_dim` 1792 and a 3328-wide `text_time` embedding.
    const UNET_GEN: &str = r#"{"sample_size":128,"block_out_channels":[320,640,1280],"layers_per_block":2,
        "down_block_types":["DownBlock2D","CrossAttnDownBlock2D","CrossAttnDownBlock2D"],
        "up_block_types":["CrossAttnUpBlock2D","CrossAttnUpBlock2D","UpBlock2D"],
        "transformer_layers_per_block":[1,2,10],"attention_head_dim":[5,10,20],"cross_attention_dim":1792,
        "use_linear_projection":true,"addition_embed_type":"text_time","addition_time_embed_dim":256,
        "projection_class_embeddings_input_dim":3328,"norm_num_groups":32}"#;
    /// The fixture's (`tests/fixtures/emu2-tiny/unet`).
    const UNET_TINY: &str = r#"{"sample_size":8,"block_out_channels":[16,32],"layers_per_block":1,
        "down_block_types":["DownBlock2D","CrossAttnDownBlock2D"],"up_block_types":["CrossAttnUpBlock2D","UpBlock2D"],
        "transformer_layers_per_block":[1,2],"attention_head_dim":[2,4],"cross_attention_dim":32,
        "use_linear_projection":true,"addition_embed_type":"text_time","addition_time_embed_dim":8,
        "projection_class_embeddings_input_dim":80,"norm_num_groups":8}"#;
    /// Emu2-Gen's scheduler (EulerDiscrete, leading spacing, steps_offset 1).
    const SCHEDULER: &str = r#"{"_class_name":"EulerDiscreteScheduler","beta_start":0.00085,"beta_end":0.012,
        "beta_schedule":"scaled_linear","num_train_timesteps":1000,"prediction_type":"epsilon",
        "steps_offset":1,"timestep_spacing":"leading"}"#;

    /// The shapes of one size.
    pub struct Shapes {
        /// The multimodal encoder (LLM + EVA tower).
        pub encoder: Emu2Config,
        /// The LLM as the core backbone builds it.
        pub llm: BackboneConfig,
        /// The UNet.
        pub unet: UNetConfig,
        /// The VAE.
        pub vae: VaeConfig,
    }

    /// `emu2-gen` (BAAI/Emu2-Gen: LLaMA-33B shape, vocabulary 32000 + 272 added tokens,
    /// EVA-CLIP-E, SDXL-shaped UNet and VAE) or `emu2-tiny` (the test fixture's).
    pub fn shapes(size: &str) -> Result<Shapes> {
        let (enc, unet, vae) = match size {
            "emu2-gen" => (
                r#"{"hidden_size":6656,"intermediate_size":17920,"num_hidden_layers":60,"num_attention_heads":52,
                   "max_position_embeddings":2048,"rms_norm_eps":1e-6,"vocab_size":32272,"vision_config":{}}"#,
                UNET_GEN,
                VaeConfig::sdxl(),
            ),
            "emu2-tiny" => (
                r#"{"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,
                   "max_position_embeddings":256,"rms_norm_eps":1e-6,"vocab_size":299,
                   "vision_config":{"image_size":56,"patch_size":14,"width":32,"layers":2,"head_width":16,"mlp_ratio":2.5,"n_query":4}}"#,
                UNET_TINY,
                serde_json::from_str(r#"{"block_out_channels":[16,16],"down_block_types":["DownEncoderBlock2D","DownEncoderBlock2D"],
                    "up_block_types":["UpDecoderBlock2D","UpDecoderBlock2D"],"layers_per_block":1,"norm_num_groups":8,"scaling_factor":0.13025}"#)
                    .map_err(|e| Error::invalid("size", e.to_string()))?,
            ),
            other => {
                return Err(Error::invalid(
                    "size",
                    format!("`{other}` (emu2-gen or emu2-tiny)"),
                ))
            }
        };
        let bad = |e: serde_json::Error| Error::invalid("size", e.to_string());
        let encoder: Emu2Config = serde_json::from_str(enc).map_err(bad)?;
        let unet: UNetConfig = serde_json::from_str(unet).map_err(bad)?;
        Ok(Shapes {
            llm: encoder.text.to_backbone(size)?,
            encoder,
            unet,
            vae,
        })
    }

    /// Parameter counts of the parts.
    #[derive(Debug, Clone, Copy, serde::Serialize)]
    pub struct Counts {
        /// The LLM (embedding and LM head included).
        pub llm: usize,
        /// `project_up` + `project_down`.
        pub projections: usize,
        /// The EVA tower.
        pub eva: usize,
        /// The UNet.
        pub unet: usize,
        /// The VAE (encoder and decoder).
        pub vae: usize,
    }

    impl Counts {
        /// Every part.
        pub fn total(&self) -> usize {
            self.llm + self.projections + self.eva + self.unet + self.vae
        }
        /// What text→image runs (all but the EVA tower).
        pub fn text_to_image(&self) -> usize {
            self.total() - self.eva
        }
    }

    /// A weight store that only counts (each name once, however often it is read): each weight
    /// is a lazily mapped zero buffer (never touched; 2-D weights are handed over transposed, so
    /// the transposition a CPU [`Linear`] makes is contiguous and copies nothing).
    struct Counting(Arc<Mutex<HashMap<String, usize>>>);

    impl candle_nn::var_builder::SimpleBackend for Counting {
        fn get(
            &self,
            s: Shape,
            name: &str,
            _: candle_nn::Init,
            _: DType,
            dev: &Device,
        ) -> any2any::candle_core::Result<Tensor> {
            if let Ok(mut m) = self.0.lock() {
                m.insert(name.to_string(), s.elem_count());
            }
            match *s.dims() {
                [a, b] => Tensor::zeros((b, a), DType::F32, dev)?.t(),
                _ => Tensor::zeros(s, DType::F32, dev),
            }
        }
        fn get_unchecked(
            &self,
            name: &str,
            _: DType,
            _: &Device,
        ) -> any2any::candle_core::Result<Tensor> {
            any2any::candle_core::bail!("counting needs a shape for `{name}`")
        }
        fn contains_tensor(&self, _: &str) -> bool {
            false
        }
    }

    /// The parameters `build` reads from a counting store.
    fn count_of(build: impl FnOnce(VarBuilder<'static>) -> Result<()>) -> Result<usize> {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let vb =
            VarBuilder::from_backend(Box::new(Counting(seen.clone())), DType::F32, Device::Cpu);
        build(vb)?;
        let n = seen.lock().map(|m| m.values().sum());
        n.map_err(|_| Error::invalid("size", "the parameter count was interrupted"))
    }

    /// Counts the parameters of every part, the EVA tower, UNet and VAE by building them from a
    /// store that allocates nothing, the LLM from its shape.
    pub fn count(s: &Shapes) -> Result<Counts> {
        let w = s.encoder.vision_config.width;
        Ok(Counts {
            llm: s.llm.num_params(),
            projections: 2 * w * s.llm.hidden_size,
            eva: count_of(|vb| EvaTower::load(&s.encoder.vision_config, vb).map(drop))?,
            unet: count_of(|vb| UNet2DConditionModel::new(s.unet.clone(), vb).map(drop))?,
            vae: count_of(|vb| KlVae::new(vb, s.vae.clone(), "count").map(drop))?,
        })
    }

    /// One measured configuration.
    #[derive(Debug, Clone, serde::Serialize)]
    pub struct Emu2Row {
        pub size: String,
        pub device: String,
        pub dtype: String,
        /// Images (prompts) per batch.
        pub batch: usize,
        pub cfg: bool,
        pub params: Counts,
        /// Bytes of every weight in `dtype` (the whole checkpoint, EVA tower included).
        pub weight_bytes: u64,
        /// Rows regressed (the prompts, plus the empty prompt with CFG).
        pub regress_rows: usize,
        /// The prefill and the 64 (`n_query`) regression steps.
        pub regress_ms: f64,
        /// Mean of one regression step after the prefill.
        pub regress_step_ms: f64,
        pub latent: usize,
        pub unet_steps_measured: usize,
        pub unet_step_ms_mean: f64,
        pub unet_step_ms_min: f64,
        pub vae_decode_ms: f64,
        /// The regression + 50 UNet steps at the mean + the VAE decode.
        pub s_per_image_batch: f64,
        pub peak_rss_mib: f64,
    }

    fn gib(b: u64) -> String {
        human_bytes(b as u128)
    }

    /// Refuses, before anything is built, a size whose weights (what the bench builds: all but
    /// the EVA tower) do not fit the memory (on the CPU: what is available, at most
    /// `ANY2ANY_MEMORY_LIMIT`), naming what it needs.
    fn check_fits(size: &str, c: &Counts, dtype: DType, device: &Device) -> Result<()> {
        if !device.is_cpu() {
            return Ok(());
        }
        let b = dtype.size_in_bytes() as u64;
        let need = c.text_to_image() as u64 * b;
        let avail = available_bytes().unwrap_or(u64::MAX).min(memory_budget());
        if need <= avail {
            return Ok(());
        }
        let bil = |n: usize| n as f64 / 1e9;
        let bf16 = c.total() as u64 * 2;
        let gpu = if bf16 < GPU_80GB {
            "fits one 80 GB GPU (--device cuda --dtype bf16)"
        } else {
            "does not fit one 80 GB GPU"
        };
        Err(Error::invalid(
            "size",
            format!(
                "{size} needs {} of weights in {dtype:?} to generate (LLM {:.2} B + projections {:.3} B + UNet {:.2} B + VAE {:.3} B parameters) but {} is available; with the EVA-CLIP tower ({:.2} B) the whole checkpoint is {:.2} B parameters, {} in BF16, which {gpu}",
                gib(need),
                bil(c.llm),
                bil(c.projections),
                bil(c.unet),
                bil(c.vae),
                gib(avail),
                bil(c.eva),
                bil(c.total()),
                gib(bf16),
            ),
        ))
    }

    /// Interval times (ms) between the progress reports `stamps`, after `skip`.
    fn intervals(stamps: &[Instant], skip: usize) -> Vec<f64> {
        stamps
            .windows(2)
            .skip(skip)
            .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
            .collect()
    }

    /// Times the production loops ([`Regression::run`]; [`LatentLoop`] over [`UNetDenoiser`]
    /// with `warmup + steps` Euler steps; [`KlVae::decode_scaled`]), the device synchronised at
    /// each progress report.
    pub fn run(
        size: &str,
        device: &Device,
        dtype: DType,
        batch: usize,
        cfg_on: bool,
        steps: usize,
        warmup: usize,
    ) -> Result<Emu2Row> {
        let s = shapes(size)?;
        let counts = count(&s)?;
        check_fits(size, &counts, dtype, device)?;
        let vb = VarBuilder::from_backend(Box::new(Filled), dtype, device.clone());
        let llm = Decoder::load(vb.pp("model"), &s.llm)?;
        let (w, h) = (s.encoder.vision_config.width, s.llm.hidden_size);
        let up = Linear::load(w, h, false, vb.pp("project_up"))?;
        let down = Linear::load(h, w, false, vb.pp("project_down"))?;
        let reg = Regression {
            decoder: &llm,
            project_up: &up,
            project_down: &down,
            n_query: s.encoder.vision_config.n_query,
        };
        let rows = batch + usize::from(cfg_on);
        let prompts = (0..rows)
            .map(|_| llm.embed(&Tensor::zeros(PROMPT, DType::U32, device)?))
            .collect::<Result<Vec<_>>>()?;
        let stamps = std::cell::RefCell::new(Vec::new());
        let stamp = |_: any2any::Progress<'_>| {
            let _ = device.synchronize();
            stamps.borrow_mut().push(Instant::now());
        };
        let t = Instant::now();
        let ehs = reg.run(&prompts, &mut Hooks::new().on_progress(stamp))?;
        device.synchronize()?;
        let regress_ms = t.elapsed().as_secs_f64() * 1e3;
        let reg_steps = intervals(&stamps.take(), 1);
        let regress_step_ms = reg_steps.iter().sum::<f64>() / reg_steps.len().max(1) as f64;
        drop(llm);

        let unet = UNet2DConditionModel::new(s.unet.clone(), vb.pp("unet"))?;
        let f = s.vae.downsample_factor();
        let latent = s.unet.sample_hw().map_or(128, |(h, _)| h);
        let side = latent * f;
        // [cond; uncond] rows: each prompt's embeddings, then the negative's for every image
        let cond = ehs.narrow(0, 0, batch)?;
        let ehs = if cfg_on {
            let neg = ehs.narrow(0, batch, 1)?.repeat((batch, 1, 1))?;
            Tensor::cat(&[&cond, &neg], 0)?
        } else {
            cond
        };
        let ehs = ehs.to_dtype(dtype)?;
        let sched_cfg: SchedulerConfig =
            serde_json::from_str(SCHEDULER).map_err(|e| Error::invalid("size", e.to_string()))?;
        let mut sched = sched_cfg.build(warmup + steps)?;
        let mut noise = SeededNoise::new(0);
        let z0 = initial_latent((batch, 4, latent, latent), &mut noise, device)?;
        let z0 = (z0 * sched.init_noise_sigma())?;
        let mut den = UNetDenoiser {
            unet: &unet,
            cond: any2any_emu2::generate::unet_condition(&ehs, (side, side))?,
        };
        let g = Guidance::two_stream(3.0, GuidanceSpace::Logits);
        let lp = LatentLoop {
            guidance: cfg_on.then_some(&g),
            stage: "denoise",
        };
        let z = lp.run(
            z0,
            &mut den,
            sched.as_mut(),
            &mut noise,
            &mut Hooks::new().on_progress(stamp),
        )?;
        let times = intervals(&stamps.take(), warmup);
        drop(unet);
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        let vae = KlVae::new(vb.pp("vae"), s.vae.clone(), "bench")?;
        let t = Instant::now();
        vae.decode_scaled(&z)?;
        device.synchronize()?;
        let vae_decode_ms = t.elapsed().as_secs_f64() * 1e3;
        Ok(Emu2Row {
            size: size.into(),
            device: format!("{device:?}"),
            dtype: format!("{dtype:?}"),
            batch,
            cfg: cfg_on,
            params: counts,
            weight_bytes: counts.total() as u64 * dtype.size_in_bytes() as u64,
            regress_rows: rows,
            regress_ms,
            regress_step_ms,
            latent,
            unet_steps_measured: times.len(),
            unet_step_ms_mean: mean,
            unet_step_ms_min: times.iter().copied().fold(f64::INFINITY, f64::min),
            vae_decode_ms,
            s_per_image_batch: (regress_ms + mean * IMAGE_STEPS as f64 + vae_decode_ms) / 1e3,
            peak_rss_mib: peak_rss_mib(),
        })
    }

    /// Markdown table of the rows.
    pub fn table(rows: &[Emu2Row]) -> String {
        let mut s = String::from("| size | device | dtype | images | CFG | params (B) | weights (all parts) | regress ms (all) / step | latent | UNet step ms (mean / min) | VAE decode ms | s per image batch (50 steps) | peak RSS MiB |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
        for r in rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} | {:.3} | {} | {:.1} / {:.2} | {}² | {:.1} / {:.1} | {:.1} | {:.2} | {:.0} |\n",
                r.size, r.device, r.dtype, r.batch, if r.cfg { "on" } else { "off" },
                r.params.total() as f64 / 1e9, gib(r.weight_bytes), r.regress_ms, r.regress_step_ms,
                r.latent, r.unet_step_ms_mean, r.unet_step_ms_min, r.vae_decode_ms, r.s_per_image_batch, r.peak_rss_mib
            ));
        }
        s
    }
}

#[cfg(all(test, feature = "emu2"))]
mod tests {
    use any2any::candle_core::{safetensors, Device};
    use std::path::Path;

    /// Elements of the tensors of the `.safetensors` files under `dir` whose names pass `keep`.
    fn elems(dir: &Path, keep: impl Fn(&str) -> bool) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                for (name, t) in safetensors::load(&p, &Device::Cpu).unwrap() {
                    if keep(&name) {
                        n += t.elem_count();
                    }
                }
            }
        }
        n
    }

    /// The counts the bench computes (and refuses a size by) equal the tensors of the fixture
    /// checkpoint of the same shapes, part by part.
    #[test]
    fn emu2_counts_match_the_tiny_checkpoint() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/emu2-tiny");
        let c = super::emu2::count(&super::emu2::shapes("emu2-tiny").unwrap()).unwrap();
        let enc = root.join("multimodal_encoder");
        assert_eq!(c.llm, elems(&enc, |n| n.starts_with("model.decoder.")));
        assert_eq!(c.eva, elems(&enc, |n| n.starts_with("model.visual.")));
        assert_eq!(c.projections, elems(&enc, |n| n.starts_with("project_")));
        assert_eq!(c.unet, elems(&root.join("unet"), |_| true));
        assert_eq!(c.vae, elems(&root.join("vae"), |_| true));
    }
}

/// `bench --model`: whole images of a loaded model, plain vs speculative decoding.
pub struct ModelBench {
    /// Images per request.
    pub batch: usize,
    /// Temperatures measured (0 = greedy).
    pub temperatures: Vec<f32>,
    /// Speculative decodings measured next to plain decoding.
    pub specs: Vec<Speculative>,
    /// Interleaved rounds.
    pub repeats: usize,
}

/// One (temperature, decoding) of a model, over its rounds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelRow {
    pub model: String,
    pub temperature: f32,
    pub speculative: String,
    pub images: usize,
    /// Image tokens per image (layout tokens included).
    pub tokens_per_image: f64,
    /// Decode forward passes per image batch (the prefill not counted).
    pub forwards: f64,
    pub tokens_per_forward: f64,
    pub acceptance: f64,
    /// Whole `generate` call per image batch, median over the rounds.
    pub ms_median: f64,
    pub ms_min: f64,
    /// Plain decoding's median over this one's (same temperature).
    pub speedup: f64,
}

/// Generates `setup.batch` images of one prompt per (temperature, decoding), the decodings
/// interleaved in each of `setup.repeats` rounds (one warm-up call first).
pub fn run_model(
    pipe: &any2any::Pipeline,
    model: &str,
    setup: &ModelBench,
) -> Result<Vec<ModelRow>> {
    use any2any::{GenerationParams, Modality, Request};
    let variants: Vec<Option<Speculative>> = std::iter::once(None)
        .chain(setup.specs.iter().copied().map(Some))
        .collect();
    let mut rows = Vec::new();
    for &t in &setup.temperatures {
        let call = |spec: Option<Speculative>| -> Result<(f64, DecodeStats)> {
            let req = Request::new()
                .text("a red cube on a blue floor")
                .want(Modality::Image)
                .params(GenerationParams {
                    temperature: Some(t),
                    speculative: spec,
                    seed: 1,
                    ..Default::default()
                })
                .num_outputs(setup.batch);
            let mut hooks = Hooks::new();
            let t0 = Instant::now();
            pipe.generate_batch(&[req], &mut hooks)?;
            Ok((t0.elapsed().as_secs_f64() * 1e3, hooks.stats))
        };
        call(None)?;
        let mut times = vec![Vec::new(); variants.len()];
        let mut stats = vec![DecodeStats::default(); variants.len()];
        for _ in 0..setup.repeats {
            for (i, &v) in variants.iter().enumerate() {
                let (ms, s) = call(v)?;
                times[i].push(ms);
                stats[i] = s;
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let plain = median(&mut times[0].clone());
        for (i, v) in variants.iter().enumerate() {
            let s = stats[i];
            let m = median(&mut times[i]);
            rows.push(ModelRow {
                model: model.to_string(),
                temperature: t,
                speculative: v.map_or("off".into(), |s| s.to_string()),
                images: setup.batch,
                tokens_per_image: s.tokens as f64 / setup.batch as f64,
                forwards: s.forwards as f64,
                tokens_per_forward: s.tokens as f64 / (s.forwards.max(1) * setup.batch) as f64,
                acceptance: s.acceptance(),
                ms_median: m,
                ms_min: times[i][0],
                speedup: plain / m,
            });
        }
    }
    Ok(rows)
}

/// Markdown table of [`run_model`]'s rows.
pub fn model_table(rows: &[ModelRow]) -> String {
    let mut s = String::from("| model | temperature | speculative | images | tokens / image | forwards | tokens / forward | acceptance | ms (median / min) | speed-up |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.1} / {:.1} | {:.2}× |\n",
            r.model,
            r.temperature,
            r.speculative,
            r.images,
            r.tokens_per_image,
            r.forwards,
            r.tokens_per_forward,
            r.acceptance,
            r.ms_median,
            r.ms_min,
            r.speedup
        ));
    }
    s
}
