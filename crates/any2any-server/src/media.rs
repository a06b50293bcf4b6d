//! Images in and out: `data:` URLs and allowed local files, decoding under byte and pixel
//! limits (the header's dimensions are checked before any pixel is decoded, so a decompression
//! bomb is refused early), OpenAI's alpha masks, and encoding answers.

use crate::error::{ApiError, ApiResult};
use crate::Limits;
use base64::Engine as _;
use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// The base64 engine of the API (standard alphabet, padding).
pub fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// Decodes an image of at most `limits.max_image_bytes` bytes and `limits.max_image_pixels`
/// pixels; errors name `field`.
pub fn decode_image(bytes: &[u8], limits: &Limits, field: &str) -> ApiResult<DynamicImage> {
    if bytes.len() > limits.max_image_bytes {
        return Err(ApiError::invalid(
            field,
            format!(
                "`{field}` is {} bytes; the server takes images of at most {} bytes",
                bytes.len(),
                limits.max_image_bytes
            ),
        )
        .with_code("image_too_large"));
    }
    let bad = |e: &dyn std::fmt::Display| {
        ApiError::invalid(field, format!("`{field}` is not a readable image: {e}"))
            .with_code("invalid_image")
    };
    let reader = || {
        image::ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| bad(&e))
    };
    let (w, h) = reader()?.into_dimensions().map_err(|e| bad(&e))?;
    let px = w as u64 * h as u64;
    if px > limits.max_image_pixels as u64 || w == 0 || h == 0 {
        return Err(ApiError::invalid(
            field,
            format!(
                "`{field}` is {w}x{h} = {px} pixels; the server takes 1 to {} pixels",
                limits.max_image_pixels
            ),
        )
        .with_code("image_too_large"));
    }
    let mut r = reader()?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(w);
    l.max_image_height = Some(h);
    // RGBA at 16 bits per channel, plus the decoder's own buffers
    l.max_alloc = Some(px.saturating_mul(16).saturating_add(1 << 20));
    r.limits(l);
    r.decode().map_err(|e| bad(&e))
}

/// The bytes of an image URL: a base64 `data:` URL, or a `file://` URL under `allowed`
/// (the `--allowed-local-media-path` directory); remote URLs are not fetched.
pub fn image_url_bytes(
    url: &str,
    limits: &Limits,
    allowed: Option<&Path>,
    field: &str,
) -> ApiResult<Vec<u8>> {
    if let Some(rest) = url.strip_prefix("data:") {
        let Some((meta, data)) = rest.split_once(',') else {
            return Err(ApiError::invalid(
                field,
                format!("`{field}`: a data: URL needs a comma before its data"),
            ));
        };
        if !meta.ends_with(";base64") {
            return Err(ApiError::invalid(
                field,
                format!("`{field}`: only base64 data: URLs are taken (data:image/png;base64,…)"),
            ));
        }
        if !meta.starts_with("image/") {
            return Err(ApiError::invalid(
                field,
                format!("`{field}`: the data: URL's type `{meta}` is not image/*"),
            ));
        }
        // 4 characters of base64 per 3 bytes: refuse before decoding
        if data.len() / 4 * 3 > limits.max_image_bytes + 3 {
            return Err(ApiError::invalid(
                field,
                format!(
                    "`{field}` holds more than the server's {} image bytes",
                    limits.max_image_bytes
                ),
            )
            .with_code("image_too_large"));
        }
        return b64().decode(data.trim()).map_err(|e| {
            ApiError::invalid(
                field,
                format!("`{field}`: bad base64 in the data: URL: {e}"),
            )
        });
    }
    if let Some(path) = url.strip_prefix("file://") {
        return local_file(Path::new(path), limits, allowed, field);
    }
    Err(ApiError::invalid(
        field,
        format!(
            "`{field}`: the server does not fetch `{}` URLs; send the image inline as a base64 data: URL",
            url.split(':').next().unwrap_or("")
        ),
    )
    .with_code("unsupported_url"))
}

fn local_file(
    path: &Path,
    limits: &Limits,
    allowed: Option<&Path>,
    field: &str,
) -> ApiResult<Vec<u8>> {
    let Some(dir) = allowed else {
        return Err(ApiError::invalid(
            field,
            format!("`{field}`: file:// URLs are refused (start the server with --allowed-local-media-path DIR)"),
        ));
    };
    let refuse = |why: String| ApiError::invalid(field, format!("`{field}`: {why}"));
    let real = path
        .canonicalize()
        .map_err(|e| refuse(format!("{}: {e}", path.display())))?;
    let root = dir
        .canonicalize()
        .map_err(|e| ApiError::internal(format!("{}: {e}", dir.display())))?;
    if !real.starts_with(&root) {
        return Err(refuse(format!(
            "{} is outside the allowed media directory",
            path.display()
        )));
    }
    let len = std::fs::metadata(&real)
        .map_err(|e| refuse(format!("{}: {e}", path.display())))?
        .len();
    if len > limits.max_image_bytes as u64 {
        return Err(refuse(format!(
            "{} is {len} bytes, over the server's {} image bytes",
            path.display(),
            limits.max_image_bytes
        )));
    }
    std::fs::read(&real).map_err(|e| refuse(format!("{}: {e}", path.display())))
}

/// The mask of an edit, white = regenerate (any2any's convention). A mask with an alpha channel
/// that is not fully opaque follows OpenAI's convention (alpha 0 = edit here); any other mask is
/// read as grey (white = edit), as the CLI's `--mask`.
pub fn edit_mask(img: DynamicImage) -> GrayImage {
    if img.color().has_alpha() {
        let rgba = img.to_rgba8();
        if rgba.pixels().any(|p| p[3] < 255) {
            let (w, h) = rgba.dimensions();
            return GrayImage::from_fn(w, h, |x, y| {
                image::Luma([if rgba.get_pixel(x, y)[3] == 0 { 255 } else { 0 }])
            });
        }
    }
    any2any_core::edit::mask_from_image(img)
}

/// An answer's image format (`output_format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// PNG (the default).
    Png,
    /// Baseline JPEG.
    Jpeg,
    /// Lossless WebP.
    Webp,
}

impl OutputFormat {
    /// Parses `png`, `jpeg` (or `jpg`) or `webp`; errors name `output_format`.
    pub fn parse(s: &str) -> ApiResult<Self> {
        match s {
            "png" => Ok(Self::Png),
            "jpeg" | "jpg" => Ok(Self::Jpeg),
            "webp" => Ok(Self::Webp),
            other => Err(ApiError::invalid(
                "output_format",
                format!("`{other}` is not an output format (png, jpeg or webp)"),
            )),
        }
    }

    /// The format's name in answers.
    pub fn name(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpeg",
            Self::Webp => "webp",
        }
    }

    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Webp => "image/webp",
        }
    }

    /// Encodes an image.
    pub fn encode(self, img: &RgbImage) -> ApiResult<Vec<u8>> {
        let mut out = Cursor::new(Vec::new());
        let fmt = match self {
            Self::Png => ImageFormat::Png,
            Self::Jpeg => ImageFormat::Jpeg,
            Self::Webp => ImageFormat::WebP,
        };
        img.write_to(&mut out, fmt).map_err(|e| {
            ApiError::internal(format!("encoding the image as {}: {e}", self.name()))
        })?;
        Ok(out.into_inner())
    }

    /// The image as a `data:` URL.
    pub fn data_url(self, img: &RgbImage) -> ApiResult<String> {
        Ok(format!(
            "data:{};base64,{}",
            self.mime(),
            b64().encode(self.encode(img)?)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    /// PNG's CRC-32 (IEEE, reflected).
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }

    #[test]
    fn a_decompression_bomb_is_refused_from_its_header() {
        // a 20000×20000 PNG: its header says 400 MP, over the default 16 MP
        let mut png = Vec::new();
        let enc = image::codecs::png::PngEncoder::new(&mut png);
        let row = vec![0u8; 20000];
        let mut all = Vec::with_capacity(20000 * 200);
        for _ in 0..200 {
            all.extend_from_slice(&row);
        }
        image::ImageEncoder::write_image(enc, &all, 20000, 200, image::ExtendedColorType::L8)
            .unwrap();
        // patch the IHDR height to 20000 (a lying header: the decoder never gets that far)
        png[20..24].copy_from_slice(&20000u32.to_be_bytes());
        let crc = crc32(&png[12..29]);
        png[29..33].copy_from_slice(&crc.to_be_bytes());
        let e = decode_image(&png, &limits(), "image").unwrap_err();
        assert_eq!(e.param.as_deref(), Some("image"));
        assert!(e.message.contains("pixels"), "{}", e.message);
    }

    #[test]
    fn alpha_zero_means_edit_and_grey_white_means_edit() {
        let mut rgba = image::RgbaImage::from_pixel(2, 1, image::Rgba([0, 0, 0, 255]));
        rgba.put_pixel(1, 0, image::Rgba([0, 0, 0, 0]));
        let m = edit_mask(DynamicImage::ImageRgba8(rgba));
        assert_eq!(m.as_raw(), &vec![0, 255]);
        let mut grey = GrayImage::new(2, 1);
        grey.put_pixel(0, 0, image::Luma([255]));
        let m = edit_mask(DynamicImage::ImageLuma8(grey));
        assert_eq!(m.as_raw(), &vec![255, 0]);
    }

    #[test]
    fn remote_and_local_urls_are_refused_by_default() {
        let l = limits();
        let e = image_url_bytes(
            "https://example.com/a.png",
            &l,
            None,
            "messages[0].content[1].image_url.url",
        )
        .unwrap_err();
        assert_eq!(e.code, Some("unsupported_url"));
        assert!(image_url_bytes("file:///etc/passwd", &l, None, "u").is_err());
        let e = image_url_bytes("data:text/plain;base64,aGk=", &l, None, "u").unwrap_err();
        assert!(e.message.contains("image/"), "{}", e.message);
        assert_eq!(
            image_url_bytes("data:image/png;base64,aGk=", &l, None, "u").unwrap(),
            b"hi"
        );
    }
}
