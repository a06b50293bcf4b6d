//! The `any2any` command.

mod bench;

use any2any::edit::load_mask;
use any2any::imageops::{load_image, save_image, write_atomic};
use any2any::loading::{parse_component, parse_device, parse_dtype};
use any2any::{
    CancelToken, Error, ExtendDirection, Generated, GenerationParams, Hooks, ImageInput,
    LoadOptions, Modality, Output, Pipeline, Request, Result,
};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

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
}

#[derive(Args)]
struct ModelArgs {
    /// A local model directory or a hub id (owner/name).
    #[arg(long)]
    model: String,
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
}

impl ModelArgs {
    fn load(&self) -> Result<Pipeline> {
        let opts = LoadOptions {
            device: parse_device(&self.device)?,
            dtype: self.dtype.as_deref().map(parse_dtype).transpose()?,
            offline: self.offline,
            revision: None,
            components: self
                .components
                .iter()
                .map(|c| parse_component(c))
                .collect::<Result<_>>()?,
        };
        Pipeline::load(&self.model, opts)
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
    #[arg(long, value_delimiter = ',')]
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
    #[arg(long)]
    extend_offset: Option<usize>,
    /// What to produce.
    #[arg(long, value_parser = ["text", "image"])]
    to: String,
    /// Output file (image: PNG; several outputs get -0, -1, … suffixes; text: a UTF-8 file).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Classifier-free guidance weight (1 disables).
    #[arg(long, allow_negative_numbers = true)]
    cfg: Option<f32>,
    /// 0 = greedy.
    #[arg(long, allow_negative_numbers = true)]
    temperature: Option<f32>,
    #[arg(long)]
    top_k: Option<usize>,
    /// Top-k for image tokens where text and image tokens are sampled in one loop (Lumina-mGPT).
    #[arg(long)]
    image_top_k: Option<usize>,
    /// Generated image size in pixels, WIDTHxHEIGHT (families that take any size: Lumina-mGPT, Emu3).
    #[arg(long, value_parser = parse_size)]
    size: Option<(usize, usize)>,
    #[arg(long, allow_negative_numbers = true)]
    top_p: Option<f32>,
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// Denoising / unmasking steps (iterative families).
    #[arg(long)]
    steps: Option<usize>,
    /// The unconditioned prompt of classifier-free guidance (families that condition it on
    /// text: Emu3; default: the family's own).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Outputs per prompt.
    #[arg(long, default_value_t = 1)]
    num: usize,
    /// Write the generated segments and timings as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
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
    #[arg(long, value_delimiter = ',', required = true)]
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
    #[arg(long, value_delimiter = ',', required = true)]
    codes: Vec<u32>,
    #[arg(long)]
    height: usize,
    #[arg(long)]
    width: usize,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct BenchArgs {
    /// tiny, small, janus-pro-1b, janus-pro-7b, chameleon-7b or emu3-8b.
    #[arg(long, default_value = "tiny")]
    size: String,
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, bf16 or f16 (default: bf16 on CUDA, f32 elsewhere).
    #[arg(long)]
    dtype: Option<String>,
    /// Batch sizes (prompts), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    /// CFG on, off, or both (`on,off`).
    #[arg(long, value_delimiter = ',', default_value = "on,off")]
    cfg: Vec<String>,
    /// Decode steps measured (after the warm-up).
    #[arg(long, default_value_t = 16)]
    steps: usize,
    #[arg(long, default_value_t = 4)]
    warmup: usize,
    /// Context the measured steps start at (default: the prompt length).
    #[arg(long)]
    context: Option<usize>,
    /// Also write the rows as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
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
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(match e {
            Error::Cancelled { .. } => 130,
            _ => 1,
        });
    }
}

/// Refuses an output path whose directory does not exist, naming the argument (`out`, `json`).
fn check_out_dir(arg: &str, p: &Path) -> Result<()> {
    let dir = p
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(Error::invalid(
            arg,
            format!(
                "{}: directory {} does not exist",
                p.display(),
                dir.display()
            ),
        ));
    }
    Ok(())
}

fn numbered(path: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return path.to_path_buf();
    }
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

fn generate(a: GenerateArgs) -> Result<()> {
    let want: Modality = a.to.parse()?;
    let params = GenerationParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        cfg: a.cfg,
        max_new_tokens: a.max_new_tokens,
        steps: a.steps,
        image_top_k: a.image_top_k,
        size: a.size,
        negative_prompt: a.negative_prompt.clone(),
        seed: a.seed,
    };
    params.validate()?;
    let out_path = a
        .out
        .clone()
        .or_else(|| (want == Modality::Image).then(|| PathBuf::from("out.png")));
    if let Some(p) = &out_path {
        check_out_dir("out", p)?;
    }
    if let Some(p) = &a.json {
        check_out_dir("json", p)?;
    }
    let mut images = a
        .image
        .iter()
        .map(|p| load_image(p))
        .collect::<Result<Vec<ImageInput>>>()?;
    apply_edit(&a, &mut images)?;
    let mut reqs = Vec::new();
    match (&a.raw_ids, a.prompt.is_empty()) {
        (Some(ids), _) => {
            let mut r = Request::new().raw_ids(ids.clone());
            for i in &images {
                r = r.image(i.clone());
            }
            reqs.push(r);
        }
        (None, false) => {
            for p in &a.prompt {
                let mut r = Request::new();
                for i in &images {
                    r = r.image(i.clone());
                }
                reqs.push(r.text(p.clone()));
            }
        }
        (None, true) => {
            return Err(Error::invalid(
                "prompt",
                "give --prompt TEXT or --raw-ids 1,2,3",
            ))
        }
    }
    let reqs: Vec<Request> = reqs
        .into_iter()
        .map(|r| r.want(want).params(params.clone()).num_outputs(a.num))
        .collect();
    let pipe = a.model.load()?;
    let cancel = CancelToken::new();
    {
        let c = cancel.clone();
        // A second Ctrl-C while cancelling falls through to the default handler's exit.
        let _ = ctrlc::set_handler(move || c.cancel());
    }
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(
            ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    };
    let outs = {
        let bar2 = bar.clone();
        let mut hooks = Hooks::new().cancel_token(cancel).on_progress(move |p| {
            if bar2.length() != Some(p.total as u64) {
                bar2.set_length(p.total as u64);
                bar2.set_message(p.stage.to_string());
            }
            bar2.set_position(p.step as u64);
        });
        pipe.generate_batch(&reqs, &mut hooks)
    };
    bar.finish_and_clear();
    let outs = outs?;
    write_outputs(&outs, out_path.as_deref(), a.json.as_deref())
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
fn write_outputs(outs: &[Output], out: Option<&Path>, json: Option<&Path>) -> Result<()> {
    let mut written = Vec::new();
    let res = write_outputs_into(outs, out, json, &mut written);
    if res.is_err() {
        for p in &written {
            let _ = std::fs::remove_file(p);
        }
    }
    res
}

fn write_outputs_into(
    outs: &[Output],
    out: Option<&Path>,
    json: Option<&Path>,
    written: &mut Vec<PathBuf>,
) -> Result<()> {
    let n_images: usize = outs.iter().map(|o| o.images().len()).sum();
    let mut segs = Vec::new();
    let mut texts = Vec::new();
    let mut img_i = 0;
    for o in outs {
        for s in &o.segments {
            match s {
                Generated::Text { ids, text } => {
                    if let Some(t) = text {
                        texts.push(t.clone());
                    }
                    segs.push(serde_json::json!({"kind": "text", "ids": ids, "text": text}));
                }
                Generated::Image { image, codes, grid } => {
                    let path = out.map(|p| numbered(p, img_i, n_images));
                    if let Some(p) = &path {
                        save_image(image, p)?;
                        written.push(p.clone());
                        eprintln!("wrote {}", p.display());
                    }
                    img_i += 1;
                    segs.push(serde_json::json!({
                        "kind": "image",
                        "codes": codes,
                        "height": grid.map(|g| g.0),
                        "width": grid.map(|g| g.1),
                        "path": path.map(|p| p.display().to_string()),
                    }));
                }
            }
        }
    }
    if !texts.is_empty() {
        let joined = texts.join("\n");
        match out {
            Some(p) if n_images == 0 => write_atomic(p, |tmp| {
                std::fs::write(tmp, joined.as_bytes()).map_err(|source| Error::Io {
                    path: p.to_path_buf(),
                    source,
                })
            })
            .map(|()| written.push(p.to_path_buf()))?,
            _ => println!("{joined}"),
        }
    }
    if let Some(j) = json {
        let timings = outs.first().map(|o| o.timings.clone()).unwrap_or_default();
        let v = serde_json::json!({"segments": segs, "timings": timings});
        write_json(j, &v)?;
    }
    Ok(())
}

/// Writes `v` as pretty JSON, atomically.
fn write_json(path: &Path, v: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::invalid("json", e.to_string()))?;
    write_atomic(path, |tmp| {
        std::fs::write(tmp, s).map_err(|source| Error::Io {
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
    write_atomic(&a.out, |tmp| Ok(l.write_npy(tmp)?))?;
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

fn inspect(a: InspectArgs) -> Result<()> {
    let pipe = a.model.load()?;
    let info = pipe.info();
    if a.json {
        let mut j =
            serde_json::to_value(&info).map_err(|e| Error::invalid("json", e.to_string()))?;
        if let Some(o) = j.as_object_mut() {
            o.insert("components".into(), pipe.files().components_json());
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
    Ok(())
}

fn run_bench(a: BenchArgs) -> Result<()> {
    let w = bench::workload(&a.size)?;
    let device = parse_device(&a.device)?;
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
    if a.steps == 0 || a.batch.contains(&0) {
        return Err(Error::invalid("steps/batch", "must be ≥ 1"));
    }
    if let Some(j) = &a.json {
        check_out_dir("json", j)?;
    }
    let rows = bench::run(
        &w, &device, dtype, &a.batch, &cfgs, a.steps, a.warmup, a.context,
    )?;
    print!("{}", bench::table(&rows, w.image_tokens));
    if let Some(j) = &a.json {
        write_json(j, &rows)?;
    }
    Ok(())
}
