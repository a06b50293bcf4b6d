//! `any2any bench`: time the image-token decoding loop of a model of a *named real size*, built
//! in memory with constant weights (the same FLOPs and bytes as the trained model; nothing is
//! downloaded). Reports per-step time, tokens/s, time per image and peak memory for each batch
//! size with CFG on and off, as a table and as JSON.

use any2any::backbone::{BackboneConfig, BlockOrder, Decoder, MlpKind, NormKind, QkNorm};
use any2any::candle_core::{DType, Device, Module, Tensor};
use any2any::candle_nn::{self, VarBuilder};
use any2any::decode::{CodeLoop, Head, NoConstraint, RowBatch, RowInput};
use any2any::nn::Linear;
use any2any::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use any2any::{Error, Hooks, Result, SeededNoise};
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
        Some(Linear::load(
            bb.hidden_size,
            bb.hidden_size,
            true,
            vb.pp("proj"),
        )?)
    } else {
        None
    };
    let head = BenchHead {
        decoder: &decoder,
        proj,
        head: Linear::load(bb.hidden_size, w.head_vocab, false, vb.pp("head"))?,
    };
    let start = context.unwrap_or(w.prompt).max(1);
    let mut rows_out = Vec::new();
    for &batch in batches {
        for &cfg in cfgs {
            let m = measure(&decoder, &head, device, batch, cfg, start, steps, warmup)?;
            rows_out.push(BenchRow {
                size: w.name.to_string(),
                device: format!("{device:?}"),
                dtype: format!("{dtype:?}"),
                batch,
                cfg,
                context_start: start,
                steps_measured: m.times.len(),
                prefill_ms: m.prefill_ms,
                step_ms_mean: m.mean(),
                step_ms_p50: m.quantile(0.5),
                step_ms_min: m.quantile(0.0),
                tokens_per_s: batch as f64 * 1e3 / m.mean(),
                s_per_image_batch: (m.prefill_ms + m.mean() * w.image_tokens as f64) / 1e3,
                peak_rss_mib: peak_rss_mib(),
            });
        }
    }
    Ok(rows_out)
}

/// The image head of the named sizes as the families build it: an optional `hidden × hidden`
/// projection with GELU (Janus's generation head) before the vocabulary head, both the
/// production [`Linear`]; the decoder's token embedding in.
struct BenchHead<'a> {
    decoder: &'a Decoder,
    proj: Option<Linear>,
    head: Linear,
}

impl Head for BenchHead<'_> {
    fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let x = match &self.proj {
            Some(p) => p.forward(hidden)?.gelu_erf()?,
            None => hidden.clone(),
        };
        Ok(self.head.forward(&x)?.to_dtype(DType::F32)?)
    }
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        self.decoder.embed(&ids.unsqueeze(1)?)
    }
}

/// Prefill time and per-step times of one (batch, CFG) configuration.
struct Measured {
    prefill_ms: f64,
    times: Vec<f64>,
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
/// progress reports of the loop, the device synchronised at each.
#[allow(clippy::too_many_arguments)]
fn measure(
    decoder: &Decoder,
    head: &BenchHead,
    device: &Device,
    batch: usize,
    cfg: bool,
    start: usize,
    steps: usize,
    warmup: usize,
) -> Result<Measured> {
    let streams = if cfg { 2 } else { 1 };
    let prompt = vec![0u32; start];
    let rows = vec![RowInput::Ids(&prompt); batch * streams];
    // one more loop step than measured: the loop's last step draws without a forward
    let loop_steps = warmup + steps + 1;
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
    CodeLoop::new(&pipe, loop_steps).run(
        &mut rb,
        head,
        hidden,
        &mut NoConstraint,
        &mut SeededNoise::new(0),
        &mut hooks,
    )?;
    drop(hooks);
    let stamps = stamps.into_inner();
    let times = stamps
        .windows(2)
        .skip(warmup)
        .take(steps)
        .map(|w| (w[1] - w[0]).as_secs_f64() * 1e3)
        .collect();
    Ok(Measured { prefill_ms, times })
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
