//! `Request` in, `Output` out.

use crate::stream::{ImageInput, Modality, Segment};
use crate::{Error, Result};

/// Sampling and loop settings. `None` means "the family's default" (from the checkpoint's
/// generation_config.json where it has one).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationParams {
    /// Softmax temperature; 0 = greedy.
    pub temperature: Option<f32>,
    /// Keep only the `k` most likely tokens before drawing (≥ 1).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability mass reaches `p` (in `(0, 1]`).
    pub top_p: Option<f32>,
    /// Classifier-free guidance weight `w` in `u + w·(c − u)`; 1 disables guidance.
    pub cfg: Option<f32>,
    /// Most tokens to generate for a text answer (≥ 1).
    pub max_new_tokens: Option<usize>,
    /// Denoising / unmasking steps for the iterative families.
    pub steps: Option<usize>,
    /// Top-k for image tokens where one loop samples text and image tokens with different
    /// top-k (Lumina-mGPT); `top_k` then applies to text tokens.
    pub image_top_k: Option<usize>,
    /// Size of a generated image in pixels, `(width, height)`, for families that take any size
    /// (Lumina-mGPT, Emu3); `None` is the family's default.
    pub size: Option<(usize, usize)>,
    /// The unconditioned stream's prompt of classifier-free guidance, for families that
    /// condition it on text (Emu3); `None` is the family's default.
    pub negative_prompt: Option<String>,
    /// Beams of a beam search for text (HF `num_beams`; greedy beams, one answer per output),
    /// for families that declare it; `None` or 1: no beam search.
    pub num_beams: Option<usize>,
    /// Speculative decoding of the AR image loop (`None`: one forward pass per token), for
    /// families that declare [`Param::Speculative`](crate::Param::Speculative).
    pub speculative: Option<Speculative>,
    /// Seed of the request's noise stream: the same seed gives the same output, whatever else
    /// shares the batch.
    pub seed: u64,
}

impl GenerationParams {
    /// Rejects values no sampler can use, naming the argument.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = self.temperature {
            if !t.is_finite() || t < 0.0 {
                return Err(Error::invalid(
                    "temperature",
                    format!("{t} (must be a finite number ≥ 0; 0 means greedy)"),
                ));
            }
        }
        if let Some(k) = self.top_k {
            if k == 0 {
                return Err(Error::invalid("top-k", "0 (must be ≥ 1)"));
            }
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::invalid("top-p", format!("{p} (must be in (0, 1])")));
            }
        }
        if let Some(w) = self.cfg {
            if !w.is_finite() {
                return Err(Error::invalid(
                    "cfg",
                    format!("{w} (must be a finite number)"),
                ));
            }
        }
        use crate::limits::{MAX_BEAMS, MAX_NEW_TOKENS, MAX_PIXELS, MAX_STEPS};
        if let Some(n) = self.num_beams {
            if n == 0 || n > MAX_BEAMS {
                return Err(Error::invalid(
                    "num-beams",
                    format!("{n} (must be in 1..={MAX_BEAMS})"),
                ));
            }
            let sampled = self.temperature.is_some_and(|t| t > 0.0)
                || self.top_k.is_some()
                || self.top_p.is_some();
            if n > 1 && sampled {
                return Err(Error::invalid(
                    "num-beams",
                    format!(
                        "{n}: beam search is greedy; it takes no --temperature, --top-k or --top-p"
                    ),
                ));
            }
        }
        if let Some(n) = self.max_new_tokens {
            if n == 0 || n > MAX_NEW_TOKENS {
                return Err(Error::invalid(
                    "max-new-tokens",
                    format!("{n} (must be in 1..={MAX_NEW_TOKENS}, and fit the model's context)"),
                ));
            }
        }
        if let Some(n) = self.steps {
            if n == 0 || n > MAX_STEPS {
                return Err(Error::invalid(
                    "steps",
                    format!("{n} (must be in 1..={MAX_STEPS})"),
                ));
            }
        }
        if self.image_top_k == Some(0) {
            return Err(Error::invalid("image-top-k", "0 (must be ≥ 1)"));
        }
        if let Some((w, h)) = self.size {
            if w == 0 || h == 0 {
                return Err(Error::invalid(
                    "size",
                    format!("{w}x{h} (width and height must be ≥ 1)"),
                ));
            }
            if (w as u64).saturating_mul(h as u64) > MAX_PIXELS {
                return Err(Error::invalid(
                    "size",
                    format!("{w}x{h} is more than {MAX_PIXELS} pixels"),
                ));
            }
        }
        if let Some(s) = &self.speculative {
            s.validate()?;
        }
        Ok(())
    }
}

/// Speculative Jacobi decoding of an AR image loop (SJD, arXiv 2410.01699; SJD++, arXiv
/// 2512.07503): a window of `window` tokens per forward pass, the first one drawn exactly and
/// the others drafts verified by the speculative acceptance rule, so the images follow the
/// model's own distribution (greedy: the same codes as plain decoding). Written
/// `jacobi[:WINDOW]` (SJD++: draft tokens of high confidence reused) or `sjd[:WINDOW]` (SJD:
/// every unverified draft redrawn).
///
/// ```
/// use any2any_core::request::Speculative;
/// let s: Speculative = "jacobi:8".parse()?;
/// assert_eq!((s.window, s.reuse), (8, true));
/// assert_eq!(s.to_string(), "jacobi:8");
/// assert_eq!("sjd".parse::<Speculative>()?.window, Speculative::DEFAULT_WINDOW);
/// assert!("jacobi:1".parse::<Speculative>().is_err());
/// # Ok::<(), any2any_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Speculative {
    /// Tokens fed per forward pass: the exact one and `window − 1` drafts (2 ..= 64).
    pub window: usize,
    /// SJD++'s token reuse: a draft not yet verified is kept across iterations when the
    /// newest forward pass gives it a probability ≥ [`Speculative::REUSE_CONFIDENCE`].
    pub reuse: bool,
}

impl Speculative {
    /// The window when none is written.
    pub const DEFAULT_WINDOW: usize = 8;
    /// The largest window.
    pub const MAX_WINDOW: usize = 64;
    /// The probability under the newest forward pass above which SJD++ keeps an unverified
    /// draft (our choice; the draft's distribution is then the exact keep-or-redraw mixture).
    pub const REUSE_CONFIDENCE: f32 = 0.1;

    /// Rejects a window outside `2 ..= 64`, naming `speculative`.
    pub fn validate(&self) -> Result<()> {
        if !(2..=Self::MAX_WINDOW).contains(&self.window) {
            return Err(Error::invalid(
                "speculative",
                format!(
                    "a window of {} (must be in 2..={})",
                    self.window,
                    Self::MAX_WINDOW
                ),
            ));
        }
        Ok(())
    }
}

impl std::str::FromStr for Speculative {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (kind, window) = match s.split_once(':') {
            Some((k, w)) => (k, Some(w)),
            None => (s, None),
        };
        let reuse = match kind {
            "jacobi" => true,
            "sjd" => false,
            other => {
                return Err(Error::invalid(
                    "speculative",
                    format!("`{other}` (expected jacobi[:WINDOW] or sjd[:WINDOW])"),
                ))
            }
        };
        let window = match window {
            None => Self::DEFAULT_WINDOW,
            Some(w) => w.parse().map_err(|_| {
                Error::invalid("speculative", format!("window `{w}` is not a number"))
            })?,
        };
        let spec = Self { window, reuse };
        spec.validate()?;
        Ok(spec)
    }
}

impl std::fmt::Display for Speculative {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.reuse { "jacobi" } else { "sjd" };
        write!(f, "{kind}:{}", self.window)
    }
}

/// One prompt: the input token stream, what to produce, and how.
///
/// Built with its chained methods:
///
/// ```
/// use any2any_core::{GenerationParams, Modality, Request};
/// let req = Request::new()
///     .text("a red fox in snow")
///     .want(Modality::Image)
///     .params(GenerationParams { cfg: Some(5.0), ..Default::default() })
///     .seed(7)
///     .num_outputs(2);
/// assert_eq!(req.segments.len(), 1);
/// assert_eq!(req.params.seed, 7);
/// req.validate()?;
/// # Ok::<(), any2any_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Request {
    /// The input token stream, in order.
    pub segments: Vec<Segment>,
    /// What to produce.
    pub want: Modality,
    /// Sampling and loop settings.
    pub params: GenerationParams,
    /// Outputs per prompt (e.g. n images for one prompt).
    pub num_outputs: usize,
    /// Feed `TextIds` verbatim: no chat template, no BOS or markers added. Images must then be at
    /// the model's input resolution; only normalisation is applied.
    pub raw: bool,
}

impl Default for Request {
    fn default() -> Self {
        Self::new()
    }
}

impl Request {
    /// An empty request asking for text, with default parameters and one output.
    pub fn new() -> Self {
        Self {
            segments: Vec::new(),
            want: Modality::Text,
            params: GenerationParams::default(),
            num_outputs: 1,
            raw: false,
        }
    }
    /// Appends text, tokenized and templated by the family.
    pub fn text(mut self, t: impl Into<String>) -> Self {
        self.segments.push(Segment::Text(t.into()));
        self
    }
    /// Appends an image (optionally carrying an edit).
    pub fn image(mut self, img: ImageInput) -> Self {
        self.segments.push(Segment::Image(img));
        self
    }
    /// Appends any segment.
    pub fn segment(mut self, s: Segment) -> Self {
        self.segments.push(s);
        self
    }
    /// Token ids fed verbatim (sets `raw`).
    pub fn raw_ids(mut self, ids: Vec<u32>) -> Self {
        self.segments.push(Segment::TextIds(ids));
        self.raw = true;
        self
    }
    /// Sets what to produce.
    pub fn want(mut self, m: Modality) -> Self {
        self.want = m;
        self
    }
    /// Sets the generation parameters (replacing the seed too).
    pub fn params(mut self, p: GenerationParams) -> Self {
        self.params = p;
        self
    }
    /// Sets the seed of the request's noise.
    pub fn seed(mut self, seed: u64) -> Self {
        self.params.seed = seed;
        self
    }
    /// Sets how many outputs to generate for this prompt.
    pub fn num_outputs(mut self, n: usize) -> Self {
        self.num_outputs = n;
        self
    }
    /// The images of the stream, in order.
    pub fn images(&self) -> Vec<&ImageInput> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Image(i) => Some(i),
                _ => None,
            })
            .collect()
    }
    /// Refuses a request no family could serve: no segments, zero outputs, an invalid image
    /// edit (or one with a text answer), or invalid parameters; the error names the argument.
    pub fn validate(&self) -> Result<()> {
        if self.segments.is_empty() {
            return Err(Error::invalid(
                "prompt",
                "the request has no input segments",
            ));
        }
        let max = crate::limits::MAX_OUTPUTS;
        if self.num_outputs == 0 || self.num_outputs > max {
            return Err(Error::invalid(
                "num",
                format!("{} outputs (must be in 1..={max})", self.num_outputs),
            ));
        }
        for img in self.images() {
            img.validate()?;
            if let (Some(e), Modality::Text) = (&img.edit, self.want) {
                let arg = match e {
                    crate::edit::ImageEdit::Inpaint { .. } => "mask",
                    crate::edit::ImageEdit::Extend(_) => "extend",
                };
                return Err(Error::invalid(
                    arg,
                    "an image edit produces an image: ask for an image (--to image)",
                ));
            }
        }
        self.params.validate()
    }
}

/// One generated piece.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Generated {
    /// Generated text.
    Text {
        /// The new token ids (a stop token the reference keeps included).
        ids: Vec<u32>,
        /// The ids decoded, when the checkpoint has a tokenizer.
        text: Option<String>,
    },
    /// A generated image.
    Image {
        /// The decoded pixels.
        image: image::RgbImage,
        /// Row-major codebook indices, for the code-based families.
        codes: Option<Vec<u32>>,
        /// Code grid (height, width).
        grid: Option<(usize, usize)>,
    },
}

/// Wall-clock timings in seconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Timings {
    /// Encoding the prompt (images included) and filling the KV cache.
    pub prefill_s: f64,
    /// The token (or unmasking) loop.
    pub decode_s: f64,
    /// Steps of the loop.
    pub steps: usize,
    /// Decoding image codes or latents to pixels.
    pub image_decode_s: f64,
    /// The whole call.
    pub total_s: f64,
}

/// What one request produced (one per output when `num_outputs > 1`).
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// The generated pieces, in order.
    pub segments: Vec<Generated>,
    /// Where the time went.
    pub timings: Timings,
}

impl Output {
    /// One output per image (no codes, no grid: a latent decoder's pixels), each with
    /// `timings`.
    pub fn per_image(images: Vec<image::RgbImage>, timings: &Timings) -> Vec<Output> {
        images
            .into_iter()
            .map(|image| Output {
                segments: vec![Generated::Image {
                    image,
                    codes: None,
                    grid: None,
                }],
                timings: timings.clone(),
            })
            .collect()
    }

    /// The generated images, in order.
    pub fn images(&self) -> Vec<&image::RgbImage> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Generated::Image { image, .. } => Some(image),
                _ => None,
            })
            .collect()
    }
    /// The decoded text of every text segment, concatenated (empty when there is none).
    pub fn text(&self) -> String {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Generated::Text { text, .. } => text.clone(),
                _ => None,
            })
            .collect()
    }
}
