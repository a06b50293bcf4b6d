//! The `any2any` command.

mod bench;
mod serve;

use any2any::edit::load_mask;
use any2any::imageops::{check_output_target, load_image, save_image, write_atomic};
use any2any::loading::{parse_component, parse_device, parse_dtype};
use any2any::quant::{QuantScope, QuantType};
use any2any::{
    npy, CancelToken, Error, ExtendDirection, Generated, GenerationParams, Hooks, ImageInput,
    LoadOptions, Modality, Output, Pipeline, ReplayNoise, Request, Result, Speculative, TextDelta,
};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

#[derive(Parser)]
#[command(
    name = "any2any",
    version,
    about = "Run any-to-any multimodal models: text and images in, text and images out"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate text or images from a prompt (and images).
    Generate(Box<GenerateArgs>),
    /// Write the last position's logits of a raw prompt as float32 .npy, shape [vocab].
    Logits(LogitsArgs),
    /// Decode image codes to a PNG.
    Decode(DecodeArgs),
    /// Show a model's family, sizes and supported directions.
    Inspect(InspectArgs),
    /// Time image-token decoding of a named real model size (constant weights in memory, nothing downloaded).
    Bench(BenchArgs),
    /// Serve models over an OpenAI-compatible HTTP API (chat, images, edits) with a playground at /.
    Serve(Box<serve::ServeArgs>),
    /// An interactive chat with a model in the terminal (/image PATH attaches an image).
    Chat(Box<serve::ChatArgs>),
    /// Convert a family's own release (LWM's JAX `params` + `vqgan` + `tokenizer.model`) to
    /// safetensors with HF-style names, config.json and tokenizer.json.
    Convert(ConvertArgs),
    /// Write a quantized checkpoint (model.gguf + the config, tokenizer and other files) that
    /// loads like any other.
    Quantize(QuantizeArgs),
}

#[derive(Args)]
struct ConvertArgs {
    /// The local release directory.
    model: String,
    /// The output directory (created; files of the same names are replaced).
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
}

#[derive(Args)]
struct QuantizeArgs {
    /// A local model directory or a hub id (owner/name).
    model: String,
    /// The output directory (new or empty).
    #[arg(short, long)]
    out: PathBuf,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
pub(crate) struct ModelArgs {
    /// A local model directory or a hub id (owner/name).
    #[arg(long)]
    model: String,
    #[command(flatten)]
    load: LoadArgs,
}

/// How a model is loaded: device, dtype, network, components.
#[derive(Args)]
pub(crate) struct LoadArgs {
    /// cpu, cuda, cuda:N or metal.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16 (default: bf16 on CUDA, f32 elsewhere).
    #[arg(long)]
    dtype: Option<String>,
    /// Never use the network (the HF cache only).
    #[arg(long)]
    offline: bool,
    /// Take a component from elsewhere: NAME=DIR_OR_HUB_ID, repeatable (e.g. vae=stabilityai/sdxl-vae,
    /// magvit=./magvit); replaces or adds the checkpoint's component of that name.
    #[arg(long = "component", value_name = "NAME=DIR_OR_HUB_ID")]
    components: Vec<String>,
    /// Quantize the language backbone's linears at load: q8_0, q6k or q4k (embeddings, heads,
    /// norms, codecs and vision towers stay dense). A quantized checkpoint (`any2any quantize`)
    /// needs none.
    #[arg(long)]
    quant: Option<String>,
}

impl LoadArgs {
    pub(crate) fn options(&self) -> Result<LoadOptions> {
        Ok(LoadOptions {
            device: parse_device(&self.device)?,
            dtype: self.dtype.as_deref().map(parse_dtype).transpose()?,
            offline: self.offline,
            revision: None,
            components: self
                .components
                .iter()
                .map(|c| parse_component(c))
                .collect::<Result<_>>()?,
            quant: self.quant.as_deref().map(QuantType::parse).transpose()?,
        })
    }

    /// Loads `model` with these options: quantizing with a progress bar on stderr and a summary
    /// of what was quantized (and what was kept denser) after.
    pub(crate) fn load_pipeline(&self, model: &str) -> Result<Pipeline> {
        let opts = self.options()?;
        let bar = if opts.quant.is_some() {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} quantizing {pos} weights ({msg}) {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b
        } else {
            ProgressBar::hidden()
        };
        let b = bar.clone();
        let scope = QuantScope::enter(opts.quant).on_progress(move |p| {
            b.set_position(p.count as u64);
            b.set_message(format!("{} MiB", p.quant_bytes >> 20));
        });
        let pipe = Pipeline::load(model, opts)?;
        bar.finish_and_clear();
        let r = scope.report();
        if r.quantized > 0 {
            eprintln!(
                "any2any: {} weights quantized, {:.1} MiB → {:.1} MiB",
                r.quantized,
                r.dense_bytes as f64 / 1048576.0,
                r.quant_bytes as f64 / 1048576.0
            );
        }
        for f in &r.fallbacks {
            eprintln!(
                "any2any: {} {:?} kept as {} (input dim not a multiple of the block size)",
                f.tensor, f.shape, f.used
            );
        }
        Ok(pipe)
    }
}

impl ModelArgs {
    pub(crate) fn load(&self) -> Result<Pipeline> {
        self.load.load_pipeline(&self.model)
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Prompt text; repeat for several prompts in one batch.
    #[arg(long, conflicts_with = "raw_ids")]
    prompt: Vec<String>,
    /// Token ids fed verbatim (no template, no BOS), comma-separated.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    raw_ids: Option<Vec<u32>>,
    /// Input image(s), in order.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Inpainting: a mask image the size of the (single) --image; white = regenerate.
    #[arg(long)]
    mask: Option<PathBuf>,
    /// Extrapolation: grow the (single) --image in these directions, in order
    /// (comma-separated: left, right, up, down).
    #[arg(long)]
    extend: Option<String>,
    /// Extrapolation seam offset (default 0; Show-o: 0 ≤ N < code grid / 2).
    #[arg(long, allow_negative_numbers = true)]
    extend_offset: Option<usize>,
    /// What to produce: text, image, or text,image (also image,text or interleaved) for an
    /// answer that mixes text and images (Chameleon/Anole, Lumina-mGPT). Text is printed on
    /// stdout, as it is decoded when the run has exactly one output.
    #[arg(long, value_parser = parse_modality)]
    to: Modality,
    /// Output file. --to image: the image (default out.png; several get -0, -1, … before the
    /// extension). --to text: a UTF-8 text file, besides stdout. --to text,image: an image name
    /// (a.png; default out.png) numbers the answer's images a-0.png, a-1.png, … in order; any
    /// other name (a.txt, a.md) receives the text, and the images go to a-0.png, … next to it.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed of the random draws (unused with --noise-uniform / --noise-normal).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    seed: u64,
    /// Replay these uniform draws (a 1-D float32 or float64 .npy of values in [0, 1]) instead
    /// of the seed's, in the family's draw order (README: "Noise replay"); one prompt per run.
    #[arg(long, value_name = "FILE.npy")]
    noise_uniform: Option<PathBuf>,
    /// Replay these standard-normal draws (a 1-D float32 or float64 .npy), as --noise-uniform.
    #[arg(long, value_name = "FILE.npy")]
    noise_normal: Option<PathBuf>,
    /// Classifier-free guidance weight (1 disables).
    #[arg(long, allow_negative_numbers = true)]
    cfg: Option<f32>,
    /// 0 = greedy.
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    #[arg(long, allow_negative_numbers = true)]
    top_k: Option<usize>,
    /// Top-k for image tokens where text and image tokens are sampled in one loop (Lumina-mGPT).
    #[arg(long, allow_negative_numbers = true)]
    image_top_k: Option<usize>,
    /// Generated image size in pixels, WIDTHxHEIGHT (families that take any size: Lumina-mGPT, Emu3).
    #[arg(long, value_parser = parse_size)]
    size: Option<(usize, usize)>,
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    #[arg(long, allow_negative_numbers = true)]
    max_new_tokens: Option<usize>,
    /// Denoising / unmasking steps (iterative families).
    #[arg(long, allow_negative_numbers = true)]
    steps: Option<usize>,
    /// The unconditioned prompt of classifier-free guidance (families that condition it on
    /// text: Emu3; default: the family's own).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Beam search for text with this many beams (greedy beams; families that declare it:
    /// Emu2, Janus, JanusFlow).
    #[arg(long, allow_negative_numbers = true)]
    num_beams: Option<usize>,
    /// Speculative Jacobi decoding of an AR image loop (Janus, Chameleon/Anole, Lumina-mGPT,
    /// Emu3): `jacobi[:WINDOW]` (SJD++, unverified drafts of high confidence reused) or
    /// `sjd[:WINDOW]` (SJD); WINDOW tokens per forward pass (default 8), same distribution.
    #[arg(long, value_parser = parse_speculative)]
    speculative: Option<Speculative>,
    /// Outputs per prompt.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    num: usize,
    /// Write the generated segments and timings as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `text`, `image`, `text,image`, `image,text`, `interleaved`.
fn parse_modality(s: &str) -> std::result::Result<Modality, String> {
    s.parse::<Modality>().map_err(|e| match e {
        Error::InvalidArgument { msg, .. } => msg,
        other => other.to_string(),
    })
}

/// `jacobi:8` → SJD++ with a window of 8.
fn parse_speculative(s: &str) -> std::result::Result<Speculative, String> {
    s.parse::<Speculative>().map_err(|e| match e {
        Error::InvalidArgument { msg, .. } => msg,
        other => other.to_string(),
    })
}

/// `768x512` → (768, 512).
fn parse_size(s: &str) -> std::result::Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT (e.g. 768x768)"))?;
    let n = |v: &str| {
        v.trim()
            .parse::<usize>()
            .map_err(|_| format!("`{s}` is not WIDTHxHEIGHT (e.g. 768x768)"))
    };
    Ok((n(w)?, n(h)?))
}

#[derive(Args)]
struct LogitsArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        allow_negative_numbers = true
    )]
    raw_ids: Vec<u32>,
    #[arg(long)]
    image: Vec<PathBuf>,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct DecodeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        allow_negative_numbers = true
    )]
    codes: Vec<u32>,
    #[arg(long, allow_negative_numbers = true)]
    height: usize,
    #[arg(long, allow_negative_numbers = true)]
    width: usize,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct BenchArgs {
    /// tiny, small, janus-pro-1b, janus-pro-7b, chameleon-7b, emu3-8b, lwm-7b, janusflow-1.3b,
    /// janusflow-tiny (flow steps: CFG doubles the rows, --steps counts flow steps), emu2-gen or
    /// emu2-tiny (the 64-step regression, then --steps UNet steps and a VAE decode).
    #[arg(long, default_value = "tiny")]
    size: String,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16 (default: bf16 on CUDA, f32 elsewhere).
    #[arg(long)]
    dtype: Option<String>,
    /// Batch sizes (prompts), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1",
        allow_negative_numbers = true
    )]
    batch: Vec<usize>,
    /// CFG on, off, or both (`on,off`).
    #[arg(long, value_delimiter = ',', default_value = "on,off")]
    cfg: Vec<String>,
    /// Decode steps measured (after the warm-up).
    #[arg(long, default_value_t = 16, allow_negative_numbers = true)]
    steps: usize,
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    warmup: usize,
    /// Context the measured steps start at (default: the prompt length).
    #[arg(long)]
    context: Option<usize>,
    /// Also write the rows as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Speculative decodings measured next to plain decoding, comma-separated
    /// (`jacobi:8,sjd:8`): per forward-pass cost with the synthetic sizes; with `--model`,
    /// whole images of a real (e.g. tiny fixture) model.
    #[arg(long, value_delimiter = ',', value_parser = parse_speculative)]
    speculative: Vec<Speculative>,
    /// Measure a model's own text-to-image generation (a local directory) instead of a named
    /// size: plain vs each `--speculative`, interleaved `--rounds` times.
    #[arg(long)]
    model: Option<String>,
    /// Sampling temperatures measured with `--model` (0 = greedy), comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "0,1",
        allow_negative_numbers = true
    )]
    temperature: Vec<f32>,
    /// Quantize the backbone's linears: q8_0, q6k or q4k; comma-separated to compare types in
    /// one run, interleaved (`f32` in the list: the dense weights).
    #[arg(long, value_delimiter = ',')]
    quant: Vec<String>,
    /// Rounds over the compared variants (--quant builds, --speculative decodings; with
    /// --model, whole images), interleaved so that a drifting load hits them alike.
    #[arg(
        long,
        alias = "repeats",
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    rounds: usize,
}

#[derive(Args)]
struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Generate(a) => generate(*a),
        Cmd::Logits(a) => logits(a),
        Cmd::Decode(a) => decode(a),
        Cmd::Inspect(a) => inspect(a),
        Cmd::Bench(a) => run_bench(a),
        Cmd::Serve(a) => serve::serve(*a),
        Cmd::Chat(a) => serve::chat(*a),
        Cmd::Convert(a) => convert(a),
        Cmd::Quantize(a) => quantize(a),
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(match e {
            // 128 + the signal: 130 after Ctrl-C (SIGINT), 143 after SIGTERM.
            Error::Cancelled { .. } => 128 + cancelling_signal(),
            _ => 1,
        });
    }
}

/// Refuses an output path before the model runs, naming the argument (`out`, `json`): a
/// missing directory, or a symlink, FIFO, device or directory at the path.
fn check_out_dir(arg: &str, p: &Path) -> Result<()> {
    check_output_target(arg, p)
}

/// `a.png` → `a-3.png`.
fn numbered(path: &Path, i: usize) -> PathBuf {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!("{stem}-{i}{ext}"))
}

/// Where `generate` writes: the text file and the image name (see `--out`).
#[derive(Debug, Clone, PartialEq)]
struct OutPlan {
    text: Option<PathBuf>,
    images: Option<PathBuf>,
    /// Number the images even when there is one (interleaved answers).
    always_number: bool,
}

impl OutPlan {
    fn new(want: Modality, out: Option<&Path>) -> Self {
        let default_image = || PathBuf::from("out.png");
        let is_image = |p: &Path| image::ImageFormat::from_path(p).is_ok();
        let (text, images) = match (want.has_text(), want.has_image(), out) {
            (true, false, out) => (out.map(Path::to_path_buf), None),
            (false, _, out) => (
                None,
                Some(out.map_or_else(default_image, Path::to_path_buf)),
            ),
            (true, true, Some(p)) if !is_image(p) => {
                (Some(p.to_path_buf()), Some(p.with_extension("png")))
            }
            (true, true, out) => (
                None,
                Some(out.map_or_else(default_image, Path::to_path_buf)),
            ),
        };
        Self {
            text,
            images,
            always_number: want.has_text() && want.has_image(),
        }
    }

    fn check_dirs(&self) -> Result<()> {
        for p in self.text.iter().chain(&self.images) {
            check_out_dir("out", p)?;
        }
        Ok(())
    }

    /// The file of image `i` of `n`.
    fn image_path(&self, i: usize, n: usize) -> Option<PathBuf> {
        let p = self.images.as_deref()?;
        Some(if n == 1 && !self.always_number {
            p.to_path_buf()
        } else {
            numbered(p, i)
        })
    }
}

fn params_of(a: &GenerateArgs) -> GenerationParams {
    GenerationParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        cfg: a.cfg,
        max_new_tokens: a.max_new_tokens,
        steps: a.steps,
        image_top_k: a.image_top_k,
        size: a.size,
        negative_prompt: a.negative_prompt.clone(),
        num_beams: a.num_beams,
        speculative: a.speculative,
        seed: a.seed,
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    // From here SIGINT/SIGTERM cancel (during loading too: the run then stops at its first step).
    signal_token();
    let params = params_of(&a);
    params.validate()?;
    let plan = OutPlan::new(a.to, a.out.as_deref());
    plan.check_dirs()?;
    if let Some(p) = &a.json {
        check_out_dir("json", p)?;
    }
    let reqs = requests(&a, &params)?;
    let mut replay = load_noise(&a, reqs.len())?;
    let pipe = a.model.load()?;
    // Text streams when there is one output to stream; several are printed at the end.
    let stream = a.to.has_text() && reqs.len() * a.num == 1;
    let (outs, streamed, stats) = run_batch(&pipe, &reqs, stream, a.quiet, replay.as_mut())?;
    if let (Some(s), false) = (a.speculative, a.quiet) {
        eprintln!(
            "speculative {s}: {} forward passes for {} image tokens ({:.2} per pass), {} of {} drafts accepted",
            stats.forwards,
            stats.tokens,
            stats.tokens as f64 / stats.forwards.max(1) as f64,
            stats.accepted,
            stats.drafted
        );
    }
    if let Some(r) = &replay {
        note_unused_noise(r, &a);
    }
    write_outputs(&outs, &plan, streamed.as_deref(), a.json.as_deref())
}

/// The requests of `--prompt` (one each) or `--raw-ids`, with the `--image`s and their edit.
fn requests(a: &GenerateArgs, params: &GenerationParams) -> Result<Vec<Request>> {
    let mut images = a
        .image
        .iter()
        .map(|p| load_image(p))
        .collect::<Result<Vec<ImageInput>>>()?;
    apply_edit(a, &mut images)?;
    let with_images = |mut r: Request| {
        for i in &images {
            r = r.image(i.clone());
        }
        r
    };
    let reqs = match (&a.raw_ids, a.prompt.is_empty()) {
        (Some(ids), _) => vec![with_images(Request::new().raw_ids(ids.clone()))],
        (None, false) => a
            .prompt
            .iter()
            .map(|p| with_images(Request::new()).text(p.clone()))
            .collect(),
        (None, true) => {
            return Err(Error::invalid(
                "prompt",
                "give --prompt TEXT or --raw-ids 1,2,3",
            ))
        }
    };
    Ok(reqs
        .into_iter()
        .map(|r| r.want(a.to).params(params.clone()).num_outputs(a.num))
        .collect())
}

/// `--noise-uniform` / `--noise-normal` as one replay source (None: draw from `--seed`).
fn load_noise(a: &GenerateArgs, n_requests: usize) -> Result<Option<ReplayNoise>> {
    let (u, n) = (a.noise_uniform.as_deref(), a.noise_normal.as_deref());
    if u.is_none() && n.is_none() {
        return Ok(None);
    }
    if n_requests > 1 {
        return Err(Error::invalid(
            if u.is_some() {
                "noise-uniform"
            } else {
                "noise-normal"
            },
            format!(
                "replays the draws of one request, not {n_requests}: give one --prompt \
                 (--num N for several outputs of it)"
            ),
        ));
    }
    let name = |p: Option<&Path>| p.map(|p| p.display().to_string());
    Ok(Some(
        ReplayNoise::new(
            read_noise("noise-uniform", u, true)?,
            read_noise("noise-normal", n, false)?,
        )
        .uniforms_from("noise-uniform", name(u))
        .normals_from("noise-normal", name(n)),
    ))
}

/// The values of one noise file (none when not given): uniforms must lie in [0, 1], normals be
/// finite. Errors name `flag` and the file.
fn read_noise(flag: &str, path: Option<&Path>, uniform: bool) -> Result<Vec<f32>> {
    let Some(p) = path else {
        return Ok(Vec::new());
    };
    let v = npy::read_f32_1d(p).map_err(|e| Error::invalid(flag, e.to_string()))?;
    let ok = |x: &f32| {
        if uniform {
            (0.0..=1.0).contains(x)
        } else {
            x.is_finite()
        }
    };
    if let Some(i) = v.iter().position(|x| !ok(x)) {
        let want = if uniform { "in [0, 1]" } else { "finite" };
        return Err(Error::invalid(
            flag,
            format!("{}: value {i} is {} (must be {want})", p.display(), v[i]),
        ));
    }
    Ok(v)
}

/// A note (not an error) for replayed values the run did not use.
fn note_unused_noise(r: &ReplayNoise, a: &GenerateArgs) {
    let (left, used) = (r.remaining(), r.consumed());
    let files = [
        ("noise-uniform", &a.noise_uniform, left.0, used.0),
        ("noise-normal", &a.noise_normal, left.1, used.1),
    ];
    for (flag, path, left, used) in files {
        if let (Some(p), true) = (path, left > 0) {
            eprintln!(
                "note: --{flag} {}: {left} of {} values were not used (the run drew {used})",
                p.display(),
                left + used
            );
        }
    }
}

fn progress_bar(hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(0);
    b.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b
}

/// Runs the batch with a progress bar on stderr, Ctrl-C cancellation and the replayed noise;
/// with `stream`, output 0's text goes to stdout as it is decoded (the bar is then off when
/// stdout is a terminal, so the two never share a line). Returns the outputs and, with
/// `stream`, the text printed.
fn run_batch(
    pipe: &Pipeline,
    reqs: &[Request],
    stream: bool,
    quiet: bool,
    noise: Option<&mut ReplayNoise>,
) -> Result<(Vec<Output>, Option<String>, any2any::DecodeStats)> {
    let cancel = signal_token();
    let bar = progress_bar(quiet || (stream && std::io::stdout().is_terminal()));
    let mut streamer = Streamer::new(std::io::stdout());
    let outs = {
        let bar2 = bar.clone();
        let mut hooks = Hooks::new()
            .cancel_token(cancel.clone())
            .on_progress(move |p| {
                if bar2.length() != Some(p.total as u64) {
                    bar2.set_length(p.total as u64);
                    bar2.set_message(p.stage.to_string());
                }
                bar2.set_position(p.step as u64);
            });
        if let Some(n) = noise {
            hooks = hooks.noise(n);
        }
        if stream {
            hooks = hooks.on_text(|d| streamer.delta(d));
        }
        let outs = pipe.generate_batch(reqs, &mut hooks);
        (outs, hooks.stats)
    };
    let (outs, stats) = outs;
    bar.finish_and_clear();
    let streamed = streamer.finish()?;
    let outs = outs?;
    Ok((outs, stream.then_some(streamed), stats))
}

/// `Err(Cancelled)` once SIGINT or SIGTERM arrived (see [`signal_token`]).
fn check_signal(stage: &str, step: usize, total: usize) -> Result<()> {
    if signal_token().is_cancelled() {
        return Err(Error::Cancelled {
            stage: stage.into(),
            step,
            total,
        });
    }
    Ok(())
}

/// The signal that cancelled the run (SIGINT = 2 when none was recorded).
static SIGNAL: AtomicI32 = AtomicI32::new(2);

/// The signal number behind a cancellation: 2 (SIGINT, Ctrl-C) or 15 (SIGTERM).
fn cancelling_signal() -> i32 {
    SIGNAL.load(Ordering::SeqCst)
}

/// The token SIGINT (Ctrl-C) and SIGTERM cancel: the running loop stops at its next step (or
/// between two images of a batch decode) and the command exits with 128 + the signal, writing
/// nothing. A second signal while cancelling exits at once with the same code.
fn signal_token() -> CancelToken {
    static TOKEN: OnceLock<CancelToken> = OnceLock::new();
    TOKEN
        .get_or_init(|| {
            let token = CancelToken::new();
            watch_signals(token.clone());
            token
        })
        .clone()
}

#[cfg(unix)]
fn watch_signals(token: CancelToken) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("any2any-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if token.is_cancelled() {
                    std::process::exit(128 + sig);
                }
                SIGNAL.store(sig, Ordering::SeqCst);
                token.cancel();
            }
        });
}

#[cfg(not(unix))]
fn watch_signals(token: CancelToken) {
    // A second Ctrl-C while cancelling falls through to the default handler's exit.
    let _ = ctrlc::set_handler(move || token.cancel());
}

/// Prints output 0's text deltas as they come, flushed; keeps what it printed and the first
/// write error (reported after the run).
struct Streamer<W: Write> {
    out: W,
    text: String,
    err: Option<std::io::Error>,
}

impl<W: Write> Streamer<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            text: String::new(),
            err: None,
        }
    }

    fn delta(&mut self, d: TextDelta<'_>) {
        if d.output != 0 || self.err.is_some() {
            return;
        }
        match self
            .out
            .write_all(d.text.as_bytes())
            .and_then(|()| self.out.flush())
        {
            Ok(()) => self.text.push_str(d.text),
            Err(e) => self.err = Some(e),
        }
    }

    /// The text printed, or the write error.
    fn finish(self) -> Result<String> {
        match self.err {
            Some(source) => Err(stdout_error(source)),
            None => Ok(self.text),
        }
    }
}

fn stdout_error(source: std::io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<stdout>"),
        source,
    }
}

/// Attaches `--mask` / `--extend` to the single `--image` (typed errors naming the flag).
fn apply_edit(a: &GenerateArgs, images: &mut [ImageInput]) -> Result<()> {
    if a.extend_offset.is_some() && a.extend.is_none() {
        return Err(Error::invalid(
            "extend-offset",
            "only applies with --extend",
        ));
    }
    let flag = match (&a.mask, &a.extend) {
        (None, None) => return Ok(()),
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "mask",
                "--mask (inpainting) and --extend (extrapolation) are separate edits; give one",
            ))
        }
        (Some(_), None) => "mask",
        (None, Some(_)) => "extend",
    };
    let [img] = images else {
        return Err(Error::invalid(
            flag,
            format!("needs exactly one --image to edit, got {}", images.len()),
        ));
    };
    let edited = match (&a.mask, &a.extend) {
        (Some(m), _) => img.clone().with_mask(load_mask(m)?)?,
        (None, Some(dirs)) => img.clone().extend(
            &ExtendDirection::parse_list(dirs)?,
            a.extend_offset.unwrap_or(0),
        )?,
        (None, None) => return Ok(()),
    };
    *img = edited;
    Ok(())
}

/// Writes every output; on an error, removes the files this call already wrote, so a failed run
/// leaves no partial set of outputs behind.
fn write_outputs(
    outs: &[Output],
    plan: &OutPlan,
    streamed: Option<&str>,
    json: Option<&Path>,
) -> Result<()> {
    let mut written = Vec::new();
    let res = write_outputs_into(outs, plan, streamed, json, &mut written);
    if res.is_err() {
        for p in &written {
            let _ = std::fs::remove_file(p);
        }
    }
    res
}

/// Prints the text on stdout (what was streamed is not printed again), then writes the images,
/// the text file and the JSON.
fn write_outputs_into(
    outs: &[Output],
    plan: &OutPlan,
    streamed: Option<&str>,
    json: Option<&Path>,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let texts: Vec<Option<String>> = outs.iter().map(output_text).collect();
    if outs
        .iter()
        .flat_map(|o| &o.segments)
        .any(is_text_without_tokenizer)
    {
        eprintln!("note: the model has no tokenizer: its text is given as token ids");
    }
    print_text(&mut std::io::stdout().lock(), &texts, streamed).map_err(stdout_error)?;
    let n_images: usize = outs.iter().map(|o| o.images().len()).sum();
    let mut paths: Vec<Option<PathBuf>> = Vec::with_capacity(n_images);
    for image in outs.iter().flat_map(|o| o.images()) {
        // A signal while writing: the files already written are removed (see write_outputs).
        check_signal("write", paths.len(), n_images)?;
        let path = plan.image_path(paths.len(), n_images);
        if let Some(p) = &path {
            save_image(image, p)?;
            written.push(p.clone());
            eprintln!("wrote {}", p.display());
        }
        paths.push(path);
    }
    if let Some(p) = &plan.text {
        let joined = texts
            .iter()
            .flatten()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        write_atomic("out", p, |f| {
            f.write_all(joined.as_bytes()).map_err(|source| Error::Io {
                path: p.to_path_buf(),
                source,
            })
        })?;
        written.push(p.clone());
        eprintln!("wrote {}", p.display());
    }
    if let Some(j) = json {
        check_signal("write", n_images, n_images)?;
        write_json(j, &outputs_json(outs, &texts, &paths))?;
    }
    Ok(())
}

fn is_text_without_tokenizer(s: &Generated) -> bool {
    matches!(s, Generated::Text { text: None, .. })
}

/// An output's text segments in order (a segment without a tokenizer: its ids, comma-separated);
/// None when it has none.
fn output_text(o: &Output) -> Option<String> {
    let parts: Vec<String> = o
        .segments
        .iter()
        .filter_map(|s| match s {
            Generated::Text { text: Some(t), .. } => Some(t.clone()),
            Generated::Text { ids, text: None } => {
                Some(ids.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
            }
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.concat())
}

/// Prints the outputs' text, one output per line; `streamed` (output 0's text already printed
/// as it was decoded) is not printed again, only the rest of it and the newline.
fn print_text(
    w: &mut impl Write,
    texts: &[Option<String>],
    streamed: Option<&str>,
) -> std::io::Result<()> {
    let shown: Vec<&str> = texts.iter().flatten().map(String::as_str).collect();
    let streamed = streamed.unwrap_or("");
    if shown.is_empty() {
        if !streamed.is_empty() {
            writeln!(w)?;
        }
        return w.flush();
    }
    let all = shown.join("\n");
    match all.strip_prefix(streamed) {
        Some(rest) => writeln!(w, "{rest}")?,
        None => {
            writeln!(w)?;
            eprintln!(
                "note: the text streamed differs from the final text (the tokenizer's decoding \
                 is not prefix-stable); --out and --json hold the final text"
            );
        }
    }
    w.flush()
}

/// The `--json` document: every segment in answer order (with its output index, image path,
/// codes and grid), the first output's timings, and per output its text, images and timings.
fn outputs_json(
    outs: &[Output],
    texts: &[Option<String>],
    paths: &[Option<PathBuf>],
) -> serde_json::Value {
    let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let mut img_i = 0;
    let mut segs = Vec::new();
    let mut per_output = Vec::new();
    for (oi, o) in outs.iter().enumerate() {
        let mut images = Vec::new();
        for s in &o.segments {
            segs.push(match s {
                Generated::Text { ids, text } => {
                    serde_json::json!({"kind": "text", "output": oi, "ids": ids, "text": text})
                }
                Generated::Image { codes, grid, .. } => {
                    let path = paths.get(img_i).and_then(shown);
                    img_i += 1;
                    images.push(path.clone());
                    serde_json::json!({
                        "kind": "image",
                        "output": oi,
                        "codes": codes,
                        "height": grid.map(|g| g.0),
                        "width": grid.map(|g| g.1),
                        "path": path,
                    })
                }
                _ => continue,
            });
        }
        per_output.push(serde_json::json!({
            "text": texts.get(oi).cloned().flatten(),
            "images": images,
            "timings": o.timings,
        }));
    }
    let timings = outs.first().map(|o| o.timings.clone()).unwrap_or_default();
    serde_json::json!({"segments": segs, "timings": timings, "outputs": per_output})
}

/// Writes `v` as pretty JSON, atomically.
fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::invalid("json", e.to_string()))?;
    write_atomic("json", path, |f| {
        f.write_all(s.as_bytes()).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

fn logits(a: LogitsArgs) -> Result<()> {
    check_out_dir("out", &a.out)?;
    let images = a
        .image
        .iter()
        .map(|p| load_image(p))
        .collect::<Result<Vec<_>>>()?;
    let pipe = a.model.load()?;
    let l = pipe.last_logits(&a.raw_ids, &images)?;
    let values = l
        .to_dtype(any2any::candle_core::DType::F32)?
        .to_vec1::<f32>()?;
    write_atomic("out", &a.out, |f| {
        npy::write_f32(&mut std::io::BufWriter::new(f), &[values.len()], &values).map_err(
            |source| Error::Io {
                path: a.out.clone(),
                source,
            },
        )
    })?;
    eprintln!("wrote {} ({} logits)", a.out.display(), l.dim(0)?);
    Ok(())
}

fn decode(a: DecodeArgs) -> Result<()> {
    check_out_dir("out", &a.out)?;
    // Checked here too: a grid whose size overflows must not wrap onto the number of codes.
    if a.height.checked_mul(a.width) != Some(a.codes.len()) {
        return Err(Error::invalid(
            "codes",
            format!(
                "{} codes for a {}×{} grid (needs height × width)",
                a.codes.len(),
                a.height,
                a.width
            ),
        ));
    }
    let pipe = a.model.load()?;
    let img = pipe.decode_codes(&a.codes, a.height, a.width)?;
    save_image(&img, &a.out)?;
    eprintln!(
        "wrote {} ({}×{})",
        a.out.display(),
        img.width(),
        img.height()
    );
    Ok(())
}

fn convert(a: ConvertArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    Pipeline::convert(&a.model, &a.out)?;
    eprintln!(
        "converted {} → {} in {:.1} s",
        a.model,
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    let opts = a.load.options()?;
    let r = any2any::quantize(&a.model, opts, &a.out)?;
    eprintln!(
        "wrote {}: {} weights quantized, {:.1} MiB → {:.1} MiB; {} kept denser; peak RSS {:.0} MiB",
        a.out.join(any2any::quant::GGUF_FILE).display(),
        r.quantized,
        r.dense_bytes as f64 / 1048576.0,
        r.quant_bytes as f64 / 1048576.0,
        r.fallbacks.len(),
        bench::peak_rss_mib()
    );
    Ok(())
}

fn inspect(a: InspectArgs) -> Result<()> {
    let pipe = a.model.load()?;
    let peak = bench::peak_rss_mib();
    let info = pipe.info();
    if a.json {
        let mut j =
            serde_json::to_value(&info).map_err(|e| Error::invalid("json", e.to_string()))?;
        if let Some(o) = j.as_object_mut() {
            o.insert("components".into(), pipe.files().components_json());
            o.insert("peak_rss_mib".into(), serde_json::json!(peak));
            o.insert("quant".into(), serde_json::json!(a.model.load.quant));
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&j).map_err(|e| Error::invalid("json", e.to_string()))?
        );
        return Ok(());
    }
    println!("model       {}", pipe.files().name);
    println!("family      {}", info.family);
    println!("variant     {}", info.variant);
    println!("parameters  {} (language model)", info.parameters);
    println!("vocab       {}", info.vocab_size);
    println!("hidden      {}", info.hidden_size);
    println!("layers      {}", info.layers);
    println!("context     {}", info.context);
    if let (Some((gh, gw)), Some((h, w))) = (info.image_tokens, info.image_size) {
        println!("image       {gh}×{gw} codes → {h}×{w} px");
    }
    println!("dtype       {}", info.dtype);
    println!("device      {}", info.device);
    println!("directions  {}", info.directions.join(", "));
    for c in pipe.files().components.values() {
        println!("component   {c}");
    }
    if let Some(q) = &a.model.load.quant {
        println!("quant       {q} (backbone linears, quantized at load)");
    }
    for w in &pipe.files().weights {
        if w.extension().is_some_and(|e| e == "gguf") {
            let g = any2any::quant::GgufWeights::open(w)?;
            let q = g.meta_str(any2any::quant::keys::QUANT).unwrap_or("unknown");
            println!("quant       {q} (stored in {})", w.display());
        }
    }
    println!("peak RSS    {peak:.0} MiB (after loading)");
    Ok(())
}

/// The bench's dtype (`--dtype`, else the device's default) and its CFG settings.
fn bench_settings(
    a: &BenchArgs,
    device: &any2any::candle_core::Device,
) -> Result<(any2any::candle_core::DType, Vec<bool>)> {
    let dtype = match a.dtype.as_deref() {
        Some(d) => parse_dtype(d)?,
        None => LoadOptions {
            device: device.clone(),
            ..Default::default()
        }
        .dtype(),
    };
    let cfgs = a
        .cfg
        .iter()
        .map(|c| match c.as_str() {
            "on" => Ok(true),
            "off" => Ok(false),
            other => Err(Error::invalid(
                "cfg",
                format!("`{other}` (expected on, off or on,off)"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    if a.steps == 0 || a.steps > any2any::limits::MAX_STEPS {
        return Err(Error::invalid(
            "steps",
            format!(
                "{} (must be in 1..={})",
                a.steps,
                any2any::limits::MAX_STEPS
            ),
        ));
    }
    let max = any2any::limits::MAX_BATCH;
    if let Some(b) = a.batch.iter().find(|&&b| b == 0 || b > max) {
        return Err(Error::invalid(
            "batch",
            format!("{b} (each batch size must be in 1..={max})"),
        ));
    }
    if let Some(j) = &a.json {
        check_out_dir("json", j)?;
    }
    Ok((dtype, cfgs))
}

fn run_bench(a: BenchArgs) -> Result<()> {
    #[cfg(feature = "janusflow")]
    if a.size.starts_with("janusflow") {
        return run_flow_bench(a);
    }
    #[cfg(feature = "emu2")]
    if a.size.starts_with("emu2") {
        return run_emu2_bench(a);
    }
    let w = bench::workload(&a.size)?;
    let device = parse_device(&a.device)?;
    let (dtype, cfgs) = bench_settings(&a, &device)?;
    if let Some(model) = &a.model {
        return run_model_bench(&a, model, &device);
    }
    let specs: Vec<Option<Speculative>> = std::iter::once(None)
        .chain(a.speculative.iter().copied().map(Some))
        .collect();
    let quants = a
        .quant
        .iter()
        .map(|q| match q.as_str() {
            "f32" | "f16" | "bf16" | "none" => Ok(None),
            q => QuantType::parse(q).map(Some),
        })
        .collect::<Result<Vec<_>>>()?;
    let rows = bench::run(
        &w,
        &device,
        dtype,
        &bench::Plan {
            batches: &a.batch,
            cfgs: &cfgs,
            quants: if quants.is_empty() { &[None] } else { &quants },
            specs: &specs,
            rounds: a.rounds,
            steps: a.steps,
            warmup: a.warmup,
            context: a.context,
        },
    )?;
    print!("{}", bench::table(&rows, w.image_tokens));
    if let Some(j) = &a.json {
        write_json(j, &rows)?;
    }
    Ok(())
}

/// `bench --model DIR --speculative …`: whole images of the model, plain vs speculative.
fn run_model_bench(
    a: &BenchArgs,
    model: &str,
    device: &any2any::candle_core::Device,
) -> Result<()> {
    if a.rounds == 0 || a.rounds > 1000 {
        return Err(Error::invalid(
            "rounds",
            format!("{} (must be in 1..=1000)", a.rounds),
        ));
    }
    let opts = LoadOptions {
        device: device.clone(),
        dtype: a.dtype.as_deref().map(parse_dtype).transpose()?,
        ..Default::default()
    };
    let pipe = Pipeline::load(model, opts)?;
    let setup = bench::ModelBench {
        batch: a.batch.first().copied().unwrap_or(1),
        temperatures: a.temperature.clone(),
        specs: a.speculative.clone(),
        repeats: a.rounds,
    };
    let rows = bench::run_model(&pipe, model, &setup)?;
    print!("{}", bench::model_table(&rows));
    if let Some(j) = &a.json {
        write_json(j, &rows)?;
    }
    Ok(())
}

/// `bench --size janusflow-…`: one row per (batch, CFG), flow steps instead of tokens.
#[cfg(feature = "janusflow")]
fn run_flow_bench(a: BenchArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let (dtype, cfgs) = bench_settings(&a, &device)?;
    let mut rows = Vec::new();
    for &b in &a.batch {
        for &on in &cfgs {
            rows.push(bench::flow::run(
                &a.size, &device, dtype, b, on, a.steps, a.warmup,
            )?);
        }
    }
    print!("{}", bench::flow::table(&rows));
    if let Some(j) = &a.json {
        write_json(j, &rows)?;
    }
    Ok(())
}

/// `bench --size emu2-…`: one row per (batch, CFG): the regression, UNet steps and a VAE decode.
#[cfg(feature = "emu2")]
fn run_emu2_bench(a: BenchArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let (dtype, cfgs) = bench_settings(&a, &device)?;
    let mut rows = Vec::new();
    for &b in &a.batch {
        for &on in &cfgs {
            rows.push(bench::emu2::run(
                &a.size, &device, dtype, b, on, a.steps, a.warmup,
            )?);
        }
    }
    print!("{}", bench::emu2::table(&rows));
    if let Some(j) = &a.json {
        write_json(j, &rows)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(want: &str, out: Option<&str>) -> OutPlan {
        OutPlan::new(want.parse().unwrap(), out.map(Path::new))
    }

    #[test]
    fn out_plans() {
        let p = |s: &str| Some(PathBuf::from(s));
        let t = plan("text", Some("a.png"));
        assert_eq!((t.text, t.images), (p("a.png"), None));
        assert_eq!(plan("text", None).text, None);
        let i = plan("image", None);
        assert_eq!((i.text.clone(), i.image_path(0, 1)), (None, p("out.png")));
        assert_eq!(i.image_path(1, 2), p("out-1.png"));
        // interleaved: always numbered; a non-image --out takes the text
        let m = plan("image,text", Some("dir/story.md"));
        assert_eq!(m.text, p("dir/story.md"));
        assert_eq!(m.image_path(0, 1), p("dir/story-0.png"));
        let m = plan("interleaved", Some("story"));
        assert_eq!(
            (m.text.clone(), m.image_path(2, 3)),
            (p("story"), p("story-2.png"))
        );
        let m = plan("text,image", Some("pic.jpg"));
        assert_eq!((m.text.clone(), m.image_path(0, 1)), (None, p("pic-0.jpg")));
        assert_eq!(plan("text,image", None).image_path(0, 1), p("out-0.png"));
    }

    /// Runs `deltas` (output, text) through a Hooks text callback into a Streamer, then prints
    /// the final `texts`: returns all bytes written to "stdout".
    fn streamed_then_printed(deltas: &[(usize, &str)], texts: &[Option<&str>]) -> String {
        let mut streamer = Streamer::new(Vec::new());
        {
            let mut hooks = Hooks::new().on_text(|d| streamer.delta(d));
            for (o, t) in deltas {
                hooks.emit_text(*o, t);
            }
        }
        let printed = streamer.text.clone();
        let mut out = streamer.out.clone();
        assert_eq!(streamer.finish().unwrap(), printed);
        let texts: Vec<Option<String>> = texts.iter().map(|t| t.map(str::to_string)).collect();
        print_text(&mut out, &texts, Some(&printed)).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn streamed_text_is_not_printed_twice() {
        // all of it streamed: only the newline follows
        let all = streamed_then_printed(&[(0, "Hel"), (0, "lo"), (1, "x")], &[Some("Hello")]);
        assert_eq!(all, "Hello\n");
        // the end was not streamed (e.g. a flush the loop did not emit): it is printed once
        assert_eq!(
            streamed_then_printed(&[(0, "He")], &[Some("Hello")]),
            "Hello\n"
        );
        // nothing streamed (a family that does not stream): the text is printed at the end
        assert_eq!(
            streamed_then_printed(&[], &[Some("Hi"), Some("Yo")]),
            "Hi\nYo\n"
        );
        // a final text that does not continue the streamed one is not printed again
        assert_eq!(streamed_then_printed(&[(0, "Ab")], &[Some("Xy")]), "Ab\n");
        // no text at all prints nothing
        assert_eq!(streamed_then_printed(&[], &[None]), "");
    }

    #[test]
    fn a_failed_stdout_write_is_an_error_after_the_run() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut s = Streamer::new(Broken);
        s.delta(TextDelta {
            output: 0,
            text: "a",
        });
        s.delta(TextDelta {
            output: 0,
            text: "b",
        });
        let e = s.finish().unwrap_err().to_string();
        assert!(e.contains("<stdout>"), "{e}");
    }

    /// The TextStream deltas of a real tokenizer (the tiny Chameleon's byte-level BPE), fed
    /// through the CLI's streamer, print exactly the decoded text once.
    #[test]
    fn text_stream_deltas_through_the_cli_print_the_decoded_text() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/chameleon-tiny/tokenizer.json");
        let tok = any2any::tokenizers::Tokenizer::from_file(&path).unwrap();
        let ids = tok
            .encode("héllo wörld, ünïcode ✓ text", false)
            .unwrap()
            .get_ids()
            .to_vec();
        let want = tok.decode(&ids, true).unwrap();
        let mut ts = any2any::TextStream::new();
        let mut deltas = Vec::new();
        for &id in &ids {
            deltas.extend(ts.push(&tok, id).unwrap());
        }
        deltas.extend(ts.finish(&tok).unwrap());
        assert!(deltas.len() > 1, "{deltas:?}");
        assert_eq!(deltas.concat(), want);
        let d: Vec<(usize, &str)> = deltas.iter().map(|d| (0, d.as_str())).collect();
        assert_eq!(
            streamed_then_printed(&d, &[Some(&want)]),
            format!("{want}\n")
        );
    }
}
