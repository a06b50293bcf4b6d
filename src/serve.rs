//! `any2any serve` (the OpenAI-compatible server of `any2any-server`) and `any2any chat` (an
//! interactive terminal session).

use crate::{LoadArgs, ModelArgs};
use any2any::imageops::{load_image, save_image};
use any2any::{Error, Generated, Hooks, Modality, Request, Result, Segment};
use any2any_server::{Limits, ServedModel, ServerConfig};
use clap::Args;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Options of `any2any serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// A model to serve (local directory or hub id), repeatable; clients name it as given.
    #[arg(long, required = true)]
    model: Vec<String>,
    #[command(flatten)]
    load: LoadArgs,
    /// Address to listen on (loopback by default; 0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0: any free port; the address is printed).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Require `Authorization: Bearer KEY` on every route but /health (and the page at /).
    #[arg(long)]
    api_key: Option<String>,
    /// Most requests coalesced into one batch.
    #[arg(long, default_value_t = 8)]
    max_batch: usize,
    /// Most requests waiting per model; more are answered 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Milliseconds an engine waits for more requests after the first of a batch.
    #[arg(long, default_value_t = 5)]
    batch_window_ms: u64,
    /// Per-request timeout in seconds (queueing included).
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// Seconds requests in flight get to finish after SIGINT/SIGTERM (a second signal: none).
    #[arg(long, default_value_t = 30)]
    shutdown_grace: u64,
    /// Most bytes of a request body.
    #[arg(long, default_value_t = 32 << 20)]
    max_body_bytes: usize,
    /// Most bytes of one input image.
    #[arg(long, default_value_t = 20 << 20)]
    max_image_bytes: usize,
    /// Most pixels of one input image (checked from its header, before decoding).
    #[arg(long, default_value_t = 16 << 20)]
    max_image_pixels: usize,
    /// Most `n` (choices or images per request).
    #[arg(long, default_value_t = 10)]
    max_n: usize,
    /// Most `max_tokens`.
    #[arg(long, default_value_t = 4096)]
    max_tokens: usize,
    /// Most characters of a prompt.
    #[arg(long, default_value_t = 32_000)]
    max_prompt_chars: usize,
    /// A directory whose files chat requests may name as file:// image URLs (none otherwise).
    #[arg(long)]
    allowed_local_media_path: Option<PathBuf>,
}

/// Loads the models and serves them until Ctrl-C.
pub fn serve(a: ServeArgs) -> Result<()> {
    let mut models = Vec::new();
    for m in &a.model {
        if models.iter().any(|s: &ServedModel| &s.id == m) {
            return Err(Error::invalid("model", format!("`{m}` is given twice")));
        }
        eprintln!("any2any: loading {m}");
        let pipe = a.load.load_pipeline(m)?;
        models.push(ServedModel {
            id: m.clone(),
            backend: pipe.into_backend(),
        });
    }
    if a.max_batch == 0 || a.max_queue == 0 {
        return Err(Error::invalid(
            "max-batch",
            "--max-batch and --max-queue must be ≥ 1",
        ));
    }
    let cfg = ServerConfig {
        host: a.host,
        port: a.port,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        max_batch: a.max_batch,
        max_queue: a.max_queue,
        batch_window: Duration::from_millis(a.batch_window_ms),
        timeout: Duration::from_secs(a.timeout.max(1)),
        shutdown_grace: Duration::from_secs(a.shutdown_grace),
        limits: Limits {
            max_body_bytes: a.max_body_bytes,
            max_image_bytes: a.max_image_bytes,
            max_image_pixels: a.max_image_pixels,
            max_n: a.max_n,
            max_tokens: a.max_tokens,
            max_prompt_chars: a.max_prompt_chars,
            ..Limits::default()
        },
        allowed_local_media: a.allowed_local_media_path,
    };
    any2any_server::serve(cfg, models).map_err(|source| Error::Io {
        path: PathBuf::from("<listener>"),
        source,
    })
}

/// Options of `any2any chat`.
#[derive(Args)]
pub struct ChatArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// What the model answers with: text, or text,image for families that interleave images.
    #[arg(long, default_value = "text", value_parser = crate::parse_modality)]
    to: Modality,
    /// Seed of the first answer (each next answer uses the next seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Most tokens per answer (default: the family's).
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// 0 = greedy (default: the family's).
    #[arg(long)]
    temperature: Option<f32>,
    /// Where images the model makes are saved (chat-<turn>-<i>.png).
    #[arg(long, default_value = ".")]
    out_dir: PathBuf,
}

const CHAT_HELP: &str = "commands: /image PATH (attach an image to the next message), /clear (forget the conversation), /help, /exit";

/// An interactive session: each line is a user message; answers are streamed.
pub fn chat(a: ChatArgs) -> Result<()> {
    let pipe = a.model.load()?;
    eprintln!(
        "any2any chat with {} ({}); {CHAT_HELP}",
        a.model.model,
        pipe.family()
    );
    let mut turns: Vec<(String, Vec<Segment>)> = Vec::new();
    let mut attached: Vec<Segment> = Vec::new();
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for (turn, line) in stdin.lock().lines().enumerate() {
        let line = line.map_err(|source| Error::Io {
            path: "<stdin>".into(),
            source,
        })?;
        let line = line.trim();
        match line
            .split_once(' ')
            .map_or((line, ""), |(c, r)| (c, r.trim()))
        {
            ("/exit" | "/quit", _) => break,
            ("/help", _) => eprintln!("{CHAT_HELP}"),
            ("/clear", _) => {
                turns.clear();
                attached.clear();
                eprintln!("(conversation cleared)");
            }
            ("/image", path) => match load_image(std::path::Path::new(path)) {
                Ok(img) => {
                    attached.push(Segment::Image(img));
                    eprintln!("(attached {path})");
                }
                Err(e) => eprintln!("error: {e}"),
            },
            _ if line.is_empty() => {}
            _ => {
                let mut parts = std::mem::take(&mut attached);
                parts.push(Segment::Text(line.to_string()));
                turns.push(("user".into(), parts));
                match answer(&pipe, &a, &turns, turn, &mut out) {
                    Ok(text) => turns.push(("assistant".into(), vec![Segment::Text(text)])),
                    Err(e) => {
                        turns.pop();
                        eprintln!("error: {e}");
                    }
                }
            }
        }
    }
    Ok(())
}

/// Generates one answer, streaming its text; saves its images and prints their paths.
fn answer(
    pipe: &any2any::Pipeline,
    a: &ChatArgs,
    turns: &[(String, Vec<Segment>)],
    turn: usize,
    out: &mut std::io::Stdout,
) -> Result<String> {
    let mut req = Request::new()
        .want(a.to)
        .params(any2any::GenerationParams {
            max_new_tokens: a.max_new_tokens,
            temperature: a.temperature,
            ..Default::default()
        })
        .seed(a.seed.wrapping_add(turn as u64));
    req.segments = any2any_server::chat::conversation_segments(turns.to_vec());
    let streamed = std::cell::RefCell::new(String::new());
    let output = {
        let mut hooks = Hooks::new().on_text(|d| {
            streamed.borrow_mut().push_str(d.text);
            let mut o = std::io::stdout();
            let _ = o.write_all(d.text.as_bytes());
            let _ = o.flush();
        });
        pipe.generate_with(req, &mut hooks)?
    };
    let text = output.text();
    // text a family did not stream
    if let Some(rest) = text.strip_prefix(streamed.borrow().as_str()) {
        let _ = out.write_all(rest.as_bytes());
    }
    let _ = writeln!(out);
    let mut n = 0;
    for s in &output.segments {
        if let Generated::Image { image, .. } = s {
            let p = a.out_dir.join(format!("chat-{turn}-{n}.png"));
            save_image(image, &p)?;
            let _ = writeln!(out, "[image saved to {}]", p.display());
            n += 1;
        }
    }
    Ok(text)
}
