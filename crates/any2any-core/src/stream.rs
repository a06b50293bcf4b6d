//! The token stream: one ordered list of segments over every modality the families use.

use candle_core::Tensor;

/// What a caller wants back, or what a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    Text,
    Image,
}

impl std::fmt::Display for Modality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Modality::Text => "text",
            Modality::Image => "image",
        })
    }
}

impl std::str::FromStr for Modality {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "text" => Ok(Modality::Text),
            "image" => Ok(Modality::Image),
            other => Err(crate::Error::invalid(
                "to",
                format!("`{other}` is not a modality (text|image)"),
            )),
        }
    }
}

/// A generation direction: what the prompt holds and what is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    TextToText,
    ImageToText,
    TextToImage,
    /// Text and images out of one `generate` (Anole-style).
    Interleaved,
    /// An image in, an image out (inpainting, extrapolation, editing).
    ImageToImage,
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Direction::TextToText => "text→text",
            Direction::ImageToText => "image→text",
            Direction::TextToImage => "text→image",
            Direction::Interleaved => "interleaved text+image",
            Direction::ImageToImage => "image→image",
        })
    }
}

/// An image given as pixels (RGB, 8 bit).
#[derive(Debug, Clone)]
pub struct ImageInput {
    pub pixels: image::RgbImage,
}

impl ImageInput {
    pub fn new(pixels: image::RgbImage) -> Self {
        Self { pixels }
    }
    pub fn width(&self) -> u32 {
        self.pixels.width()
    }
    pub fn height(&self) -> u32 {
        self.pixels.height()
    }
}

/// One segment of the token stream.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Text, tokenized and templated by the family.
    Text(String),
    /// Token ids given verbatim (the caller brings its own tokenizer or template).
    TextIds(Vec<u32>),
    /// An image as pixels; the family encodes it (vision tower or VQ encoder).
    Image(ImageInput),
    /// An image as discrete codes on an `height × width` grid, row-major codebook indices.
    ImageCodes {
        codes: Vec<u32>,
        height: usize,
        width: usize,
    },
    /// Continuous embeddings, `n × d` (visual features, regressed visual embeddings).
    Embeddings(Tensor),
    /// A continuous latent (a VAE latent being denoised), `c × h × w`.
    Latent(Tensor),
}

impl Segment {
    pub fn kind(&self) -> &'static str {
        match self {
            Segment::Text(_) => "text",
            Segment::TextIds(_) => "text ids",
            Segment::Image(_) => "image",
            Segment::ImageCodes { .. } => "image codes",
            Segment::Embeddings(_) => "embeddings",
            Segment::Latent(_) => "latent",
        }
    }
}
