//! The token stream: one ordered list of segments over every modality the families use.

use candle_core::Tensor;

/// What a caller wants back: text, an image, or both in one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Modality {
    /// Text only: a family that could open an image is kept from doing so.
    Text,
    /// One image.
    Image,
    /// Text and images in one answer, in the order the model writes them (Chameleon/Anole,
    /// Lumina-mGPT).
    Interleaved,
}

impl Modality {
    /// Whether the answer may hold text.
    pub fn has_text(self) -> bool {
        matches!(self, Modality::Text | Modality::Interleaved)
    }
    /// Whether the answer may hold images.
    pub fn has_image(self) -> bool {
        matches!(self, Modality::Image | Modality::Interleaved)
    }
}

impl std::fmt::Display for Modality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Modality::Text => "text",
            Modality::Image => "image",
            Modality::Interleaved => "text,image",
        })
    }
}

impl std::str::FromStr for Modality {
    type Err = crate::Error;
    /// `text`, `image`, or both as a comma-separated list (`text,image`, `image,text`) or
    /// `interleaved`.
    fn from_str(s: &str) -> crate::Result<Self> {
        let mut text = false;
        let mut image = false;
        for part in s.split(',').map(str::trim) {
            match part {
                "text" => text = true,
                "image" => image = true,
                "interleaved" => (text, image) = (true, true),
                other => {
                    return Err(crate::Error::invalid(
                        "to",
                        format!("`{other}` is not a modality (text, image, or text,image)"),
                    ))
                }
            }
        }
        match (text, image) {
            (true, false) => Ok(Modality::Text),
            (false, true) => Ok(Modality::Image),
            (true, true) => Ok(Modality::Interleaved),
            (false, false) => Err(crate::Error::invalid("to", "no modality given")),
        }
    }
}

/// A generation direction: what the prompt holds and what is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Direction {
    /// A text prompt, a text answer.
    TextToText,
    /// A prompt holding images, a text answer (captioning, visual question answering).
    ImageToText,
    /// A text prompt, an image answer.
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

/// An image given as pixels (RGB, 8 bit), optionally with an edit to make to it (inpaint a
/// masked region, extend past its borders); the request then asks for the edited image.
///
/// ```
/// use any2any_core::{edit::ExtendDirection, ImageInput};
/// let px = image::RgbImage::new(64, 48);
/// // regenerate the 32×16 block at (8, 8); white = regenerate
/// let inpaint = ImageInput::new(px.clone()).with_mask_rect(8, 8, 32, 16)?;
/// // grow to the right, then again to the right
/// let wider = ImageInput::new(px).extend(&[ExtendDirection::Right; 2], 0)?;
/// # Ok::<(), any2any_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ImageInput {
    /// The image, RGB 8 bit, at its own size (the family resizes it as its reference does).
    pub pixels: image::RgbImage,
    /// What to change (None: use the image as it is).
    pub edit: Option<crate::edit::ImageEdit>,
}

impl ImageInput {
    /// An image used as it is (no edit).
    pub fn new(pixels: image::RgbImage) -> Self {
        Self { pixels, edit: None }
    }
    /// Inpainting: regenerate the white part of `mask` (same size as the image; 8-bit grey, e.g.
    /// from [`crate::edit::load_mask`]). Refuses a mask of another size or an all-black one.
    pub fn with_mask(mut self, mask: image::GrayImage) -> crate::Result<Self> {
        let e = crate::edit::ImageEdit::Inpaint { mask };
        e.validate(self.width(), self.height())?;
        self.edit = Some(e);
        Ok(self)
    }
    /// Inpainting of the pixel rectangle at `(x, y)` of size `w × h` (must lie inside the image).
    pub fn with_mask_rect(self, x: u32, y: u32, w: u32, h: u32) -> crate::Result<Self> {
        let m = crate::edit::rect_mask(self.width(), self.height(), x, y, w, h)?;
        self.with_mask(m)
    }
    /// Extrapolation: grow the image in `directions`, in order; `offset` moves the seam (its
    /// valid range is the family's, e.g. Show-o: `0 ≤ offset < grid/2`).
    pub fn extend(
        mut self,
        directions: &[crate::edit::ExtendDirection],
        offset: usize,
    ) -> crate::Result<Self> {
        let e = crate::edit::ImageEdit::Extend(crate::edit::Extend {
            directions: directions.to_vec(),
            offset,
        });
        e.validate(self.width(), self.height())?;
        self.edit = Some(e);
        Ok(self)
    }
    /// Checks the edit against the image (mask size, empty mask, no direction).
    pub fn validate(&self) -> crate::Result<()> {
        match &self.edit {
            Some(e) => e.validate(self.width(), self.height()),
            None => Ok(()),
        }
    }
    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.pixels.width()
    }
    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.pixels.height()
    }
}

/// One segment of the token stream.
///
/// `#[non_exhaustive]`: families refuse a segment kind they do not take with
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument), naming it by [`Segment::kind`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Segment {
    /// Text, tokenized and templated by the family.
    Text(String),
    /// Token ids given verbatim (the caller brings its own tokenizer or template).
    TextIds(Vec<u32>),
    /// An image as pixels; the family encodes it (vision tower or VQ encoder).
    Image(ImageInput),
    /// An image as discrete codes on an `height × width` grid, row-major codebook indices.
    ImageCodes {
        /// `height × width` codebook indices, row-major.
        codes: Vec<u32>,
        /// Rows of the code grid.
        height: usize,
        /// Columns of the code grid.
        width: usize,
    },
    /// Continuous embeddings, `n × d` (visual features, regressed visual embeddings).
    Embeddings(Tensor),
    /// A continuous latent (a VAE latent being denoised), `c × h × w`.
    Latent(Tensor),
}

impl Segment {
    /// A short name of the segment's kind ("text", "image codes", …), for messages.
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
