//! Image edits carried by an [`ImageInput`](crate::ImageInput): regenerate a masked region
//! (inpainting) or grow the image past its borders (extrapolation / outpainting), plus the exact
//! reference pre-processing these edits need:
//!
//! - [`pil_resize_bicubic`]: Pillow 13's `Image.resize(size, BICUBIC)` on 8-bit images
//!   (fixed-point coefficients, two passes, Pillow's pass order), bit-exact;
//! - [`resize_shortest_center_crop`]: torchvision `Resize(size, BICUBIC)` + `CenterCrop(size)` on
//!   a PIL image (the `image_transform` of Show-o and many others), bit-exact;
//! - [`interpolate_bicubic`]: torch `F.interpolate(mode="bicubic", align_corners=False)` on a
//!   float map (A = −0.75, borders clamped), used to bring a pixel mask to the code grid;
//! - [`luma_pil`] / [`load_mask`]: PIL's `convert("L")` (ITU-R 601-2 luma, fixed point).
//!
//! A family that carries out an edit lists it in [`Backend::image_edits`]; any other family
//! refuses a request holding one ([`check_edit_kinds`], run by [`Backend::generate_batch`])
//! instead of silently ignoring it.
//!
//! [`Backend::image_edits`]: crate::backend::Backend::image_edits
//! [`Backend::generate_batch`]: crate::backend::Backend::generate_batch

use crate::request::Request;
use crate::stream::Segment;
use crate::{Error, Result};
use image::{GrayImage, RgbImage};
use std::path::Path;

/// One side to grow an image on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExtendDirection {
    /// Grow past the left border.
    Left,
    /// Grow past the right border.
    Right,
    /// Grow past the top border.
    Up,
    /// Grow past the bottom border.
    Down,
}

impl ExtendDirection {
    /// `left` or `right`.
    pub fn is_horizontal(self) -> bool {
        matches!(self, ExtendDirection::Left | ExtendDirection::Right)
    }

    /// `"left,right"` → `[Left, Right]` (spaces around names allowed); an unknown or empty name
    /// is an [`Error::InvalidArgument`] naming `extend`.
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        let dirs = s
            .split(',')
            .map(|d| d.trim().parse())
            .collect::<Result<Vec<Self>>>()?;
        if dirs.is_empty() {
            return Err(Error::invalid("extend", "no direction given"));
        }
        Ok(dirs)
    }
}

impl std::str::FromStr for ExtendDirection {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "left" => Ok(Self::Left),
            "right" => Ok(Self::Right),
            "up" => Ok(Self::Up),
            "down" => Ok(Self::Down),
            other => Err(Error::invalid(
                "extend",
                format!("`{other}` is not a direction (left, right, up or down)"),
            )),
        }
    }
}

impl std::fmt::Display for ExtendDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Left => "left",
            Self::Right => "right",
            Self::Up => "up",
            Self::Down => "down",
        })
    }
}

/// Grow the image in `directions`, in order. Each step keeps part of the current image next to a
/// new band; `offset` moves the seam (a larger offset keeps less context and adds more). What one
/// step adds is family-specific (Show-o: `grid/2 + offset` code columns or rows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extend {
    /// The sides to grow on, one step each, in order (a side may repeat).
    pub directions: Vec<ExtendDirection>,
    /// Moves the seam of every step (family-specific range, e.g. Show-o: `< grid/2`).
    pub offset: usize,
}

/// An edit of an input image; the request then asks for the edited image.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ImageEdit {
    /// Regenerate the white part of `mask` (8-bit, the image's size; the family brings it to its
    /// code grid, e.g. Show-o: bicubic to the grid, then ≥ 0.5 regenerates) and keep the rest.
    Inpaint {
        /// White (255) marks what to regenerate, black what to keep.
        mask: GrayImage,
    },
    /// Extrapolate past the borders.
    Extend(Extend),
}

/// The kind of an [`ImageEdit`], for [`Backend::image_edits`](crate::backend::Backend::image_edits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EditKind {
    /// [`ImageEdit::Inpaint`].
    Inpaint,
    /// [`ImageEdit::Extend`].
    Extend,
}

impl std::fmt::Display for EditKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EditKind::Inpaint => "inpainting (image + mask)",
            EditKind::Extend => "extrapolation (image + extend)",
        })
    }
}

impl ImageEdit {
    /// What kind of edit this is.
    pub fn kind(&self) -> EditKind {
        match self {
            ImageEdit::Inpaint { .. } => EditKind::Inpaint,
            ImageEdit::Extend(_) => EditKind::Extend,
        }
    }

    /// Checks what can be checked without the model: the mask has the image's size and is not
    /// all black; the extension has at least one direction.
    pub fn validate(&self, width: u32, height: u32) -> Result<()> {
        match self {
            ImageEdit::Inpaint { mask } => {
                if mask.dimensions() != (width, height) {
                    return Err(Error::invalid(
                        "mask",
                        format!(
                            "the mask is {}×{} but the image is {width}×{height} (they must match)",
                            mask.width(),
                            mask.height()
                        ),
                    ));
                }
                if mask.as_raw().iter().all(|&v| v == 0) {
                    return Err(Error::invalid(
                        "mask",
                        "the mask is all black: nothing to regenerate (white marks the region)",
                    ));
                }
                Ok(())
            }
            ImageEdit::Extend(e) => {
                if e.directions.is_empty() {
                    return Err(Error::invalid("extend", "no direction given"));
                }
                Ok(())
            }
        }
    }
}

/// A `width × height` mask, white (255) inside the rectangle at `(x, y)` of size `w × h`, black
/// elsewhere. The rectangle must be non-empty and inside the image.
pub fn rect_mask(width: u32, height: u32, x: u32, y: u32, w: u32, h: u32) -> Result<GrayImage> {
    let inside = x.checked_add(w).is_some_and(|r| r <= width)
        && y.checked_add(h).is_some_and(|b| b <= height);
    if w == 0 || h == 0 || !inside {
        return Err(Error::invalid(
            "mask",
            format!(
                "rectangle {w}×{h} at ({x}, {y}) is empty or not inside the {width}×{height} image"
            ),
        ));
    }
    let mut m = GrayImage::new(width, height);
    for yy in y..y + h {
        for xx in x..x + w {
            m.put_pixel(xx, yy, image::Luma([255]));
        }
    }
    Ok(m)
}

/// PIL's `convert("L")` of an RGB image: `(R·19595 + G·38470 + B·7471 + 0x8000) >> 16`.
pub fn luma_pil(img: &RgbImage) -> GrayImage {
    let (w, h) = img.dimensions();
    let data = img
        .as_raw()
        .chunks_exact(3)
        .map(|p| {
            ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8
        })
        .collect();
    GrayImage::from_raw(w, h, data).unwrap_or_else(|| GrayImage::new(w, h))
}

/// Reads a mask file as PIL's `Image.open(p).convert("L")` does for 8-bit images: grey images
/// as they are (alpha dropped), colour images through [`luma_pil`] (alpha dropped); 16-bit
/// images are first brought to 8 bits.
pub fn load_mask(path: &Path) -> Result<GrayImage> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let img = image::ImageReader::open(path)
        .map_err(io)?
        .with_guessed_format()
        .map_err(io)?
        .decode()
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    Ok(mask_from_image(img))
}

/// A decoded mask image as 8-bit grey, as PIL's `convert("L")` makes it (grey images kept,
/// colour images by [`luma_pil`]); the alpha channel, if any, is dropped.
pub fn mask_from_image(img: image::DynamicImage) -> GrayImage {
    match img {
        image::DynamicImage::ImageLuma8(g) => g,
        image::DynamicImage::ImageLumaA8(_) | image::DynamicImage::ImageLuma16(_) => img.to_luma8(),
        other => luma_pil(&other.to_rgb8()),
    }
}

/// Refuses a request holding an image edit the family does not carry out (`edits`); the error
/// lists the edits it does carry out.
pub fn check_edit_kinds(edits: &[EditKind], family: &str, req: &Request) -> Result<()> {
    for s in &req.segments {
        if let Segment::Image(img) = s {
            if let Some(e) = &img.edit {
                if !edits.contains(&e.kind()) {
                    let can: Vec<String> = edits.iter().map(ToString::to_string).collect();
                    return Err(Error::Unsupported {
                        family: family.into(),
                        direction: e.kind().to_string(),
                        supported: if can.is_empty() {
                            "no image edits".into()
                        } else {
                            can.join(", ")
                        },
                    });
                }
            }
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ Pillow resampling

/// Pillow's fixed-point precision for 8-bit images (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

fn pil_bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// `precompute_coeffs` + `normalize_coeffs_8bpc` of Pillow's Resample.c for the whole source
/// range: per output index, the first source index, the tap count and the fixed-point taps.
fn pil_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let inv = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) truncates toward zero; both bounds are then clamped
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin);
            let mut k: Vec<f64> = (0..n)
                .map(|x| pil_bicubic((x as f64 + xmin as f64 - center + 0.5) * inv))
                .collect();
            let ww: f64 = k.iter().fold(0.0, |a, &b| a + b);
            if ww != 0.0 {
                for v in &mut k {
                    *v /= ww;
                }
            }
            let one = (1u64 << PRECISION_BITS) as f64;
            let fixed = k
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One pass along x (`horizontal`) or y of an interleaved `w × h × ch` u8 buffer.
fn pil_pass(
    src: &[u8],
    (w, h): (usize, usize),
    ch: usize,
    out_len: usize,
    horizontal: bool,
) -> Vec<u8> {
    let half = 1i64 << (PRECISION_BITS - 1);
    if horizontal {
        let co = pil_coeffs(w, out_len);
        let mut out = vec![0u8; out_len * h * ch];
        for y in 0..h {
            for (xx, (xmin, k)) in co.iter().enumerate() {
                for c in 0..ch {
                    let mut ss = half;
                    for (i, &kv) in k.iter().enumerate() {
                        ss += src[(y * w + xmin + i) * ch + c] as i64 * kv as i64;
                    }
                    out[(y * out_len + xx) * ch + c] = clip8(ss);
                }
            }
        }
        out
    } else {
        let co = pil_coeffs(h, out_len);
        let mut out = vec![0u8; w * out_len * ch];
        for (yy, (ymin, k)) in co.iter().enumerate() {
            for x in 0..w {
                for c in 0..ch {
                    let mut ss = half;
                    for (i, &kv) in k.iter().enumerate() {
                        ss += src[((ymin + i) * w + x) * ch + c] as i64 * kv as i64;
                    }
                    out[(yy * w + x) * ch + c] = clip8(ss);
                }
            }
        }
        out
    }
}

/// Pillow 13 `Image.resize((out_w, out_h), Image.BICUBIC)` of an interleaved 8-bit buffer
/// (`ch` = 1 for "L", 3 for "RGB"). Two separable passes with clipping to u8 in between;
/// Pillow runs the vertical pass first when the height shrinks by more than twice what the
/// width shrinks, the horizontal pass first otherwise. A same-size resize is a copy.
pub fn pil_resize_bicubic_raw(
    src: &[u8],
    (w, h): (usize, usize),
    ch: usize,
    (out_w, out_h): (usize, usize),
) -> Result<Vec<u8>> {
    if src.len() != w * h * ch || w == 0 || h == 0 || out_w == 0 || out_h == 0 {
        return Err(Error::invalid(
            "image",
            format!(
                "cannot resize a {w}×{h}×{ch} buffer of {} bytes to {out_w}×{out_h}",
                src.len()
            ),
        ));
    }
    let need_h = out_w != w;
    let need_v = out_h != h;
    let dh = h as i64 - out_h as i64;
    let dw = w as i64 - out_w as i64;
    let vertical_first = dh > 0 && dh > dw * 2;
    let mut buf = src.to_vec();
    let (mut cw, mut chh) = (w, h);
    let mut pass = |horizontal: bool| {
        if horizontal {
            buf = pil_pass(&buf, (cw, chh), ch, out_w, true);
            cw = out_w;
        } else {
            buf = pil_pass(&buf, (cw, chh), ch, out_h, false);
            chh = out_h;
        }
    };
    // Horizontal-first Pillow restricts the first pass to the rows the vertical taps reach;
    // every row is computed the same way, so running it over all rows gives the same output.
    if vertical_first {
        if need_v {
            pass(false);
        }
        if need_h {
            pass(true);
        }
    } else {
        if need_h {
            pass(true);
        }
        if need_v {
            pass(false);
        }
    }
    Ok(buf)
}

/// [`pil_resize_bicubic_raw`] of an RGB image.
pub fn pil_resize_bicubic(img: &RgbImage, out_w: u32, out_h: u32) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    let raw = pil_resize_bicubic_raw(
        img.as_raw(),
        (w as usize, h as usize),
        3,
        (out_w as usize, out_h as usize),
    )?;
    RgbImage::from_raw(out_w, out_h, raw).ok_or_else(|| Error::invalid("image", "resize"))
}

/// [`pil_resize_bicubic_raw`] of a grey image.
pub fn pil_resize_bicubic_gray(img: &GrayImage, out_w: u32, out_h: u32) -> Result<GrayImage> {
    let (w, h) = img.dimensions();
    let raw = pil_resize_bicubic_raw(
        img.as_raw(),
        (w as usize, h as usize),
        1,
        (out_w as usize, out_h as usize),
    )?;
    GrayImage::from_raw(out_w, out_h, raw).ok_or_else(|| Error::invalid("image", "resize"))
}

/// The output size of torchvision `Resize(size)` (an int: the shorter side becomes `size`, the
/// longer `int(size · long / short)`), as `(width, height)`.
pub fn shortest_side_size(w: u32, h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    let new_long = (size as f64 * long as f64 / short.max(1) as f64) as u32;
    if w <= h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

/// torchvision `CenterCrop` offsets: `int(round((in - out) / 2))` (Python rounds halves to even).
fn center_offset(inp: u32, out: u32) -> u32 {
    let d = (inp - out) as f64 / 2.0;
    let r = d.round();
    // round-half-even like Python's round()
    let r = if (d - d.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - 1.0
    } else {
        r
    };
    r as u32
}

/// torchvision `Resize(size, BICUBIC)` then `CenterCrop(size)` on a PIL image, as
/// interleaved 8-bit data (`ch` channels): the reference `image_transform` before `ToTensor`.
fn shortest_center_crop_raw(
    src: &[u8],
    (w, h): (u32, u32),
    ch: usize,
    size: u32,
) -> Result<Vec<u8>> {
    if size == 0 || w == 0 || h == 0 {
        return Err(Error::invalid(
            "image",
            format!("cannot bring a {w}×{h} image to {size}×{size}"),
        ));
    }
    let (nw, nh) = shortest_side_size(w, h, size);
    let resized = if (nw, nh) == (w, h) {
        src.to_vec()
    } else {
        pil_resize_bicubic_raw(
            src,
            (w as usize, h as usize),
            ch,
            (nw as usize, nh as usize),
        )?
    };
    let (top, left) = (center_offset(nh, size), center_offset(nw, size));
    let (s, nw) = (size as usize, nw as usize);
    let mut out = Vec::with_capacity(s * s * ch);
    for y in 0..s {
        let row = (top as usize + y) * nw;
        out.extend_from_slice(&resized[(row + left as usize) * ch..(row + left as usize + s) * ch]);
    }
    Ok(out)
}

/// `Resize(size, BICUBIC)` + `CenterCrop(size)` of an RGB image (torchvision on PIL, bit-exact).
pub fn resize_shortest_center_crop(img: &RgbImage, size: u32) -> Result<RgbImage> {
    let (w, h) = img.dimensions();
    let raw = shortest_center_crop_raw(img.as_raw(), (w, h), 3, size)?;
    RgbImage::from_raw(size, size, raw).ok_or_else(|| Error::invalid("image", "crop"))
}

/// `Resize(size, BICUBIC)` + `CenterCrop(size)` of a grey image.
pub fn resize_shortest_center_crop_gray(img: &GrayImage, size: u32) -> Result<GrayImage> {
    let (w, h) = img.dimensions();
    let raw = shortest_center_crop_raw(img.as_raw(), (w, h), 1, size)?;
    GrayImage::from_raw(size, size, raw).ok_or_else(|| Error::invalid("image", "crop"))
}

// ------------------------------------------------------------------ torch bicubic

/// torch's per-axis indices and weights of `upsample_bicubic2d` (align_corners = False, no
/// antialias): source `scale·(i + ½) − ½`, `floor` clamped to the last index, `λ` clamped to
/// [0, 1], cubic-convolution weights with A = −0.75, tap indices clamped to the border.
fn torch_cubic_taps(in_size: usize, out_size: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = in_size as f32 / out_size as f32;
    let a = -0.75f32;
    let c1 = |x: f32| ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    let c2 = |x: f32| ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a;
    (0..out_size)
        .map(|i| {
            let real = scale * (i as f32 + 0.5) - 0.5;
            let idx = (real.floor() as i64).min(in_size as i64 - 1);
            let lam = (real - idx as f32).clamp(0.0, 1.0);
            let w = [c2(lam + 1.0), c1(lam), c1(1.0 - lam), c2((1.0 - lam) + 1.0)];
            let ids =
                std::array::from_fn(|j| (idx - 1 + j as i64).clamp(0, in_size as i64 - 1) as usize);
            (ids, w)
        })
        .collect()
}

/// torch `F.interpolate(x, size=(out_h, out_w), mode="bicubic", align_corners=False)` of one
/// `h × w` channel (row-major f32), computed as torch's CPU kernel does: per output,
/// `Σ_j wy_j · (Σ_i wx_i · x[y_j, x_i])` accumulated in f32. torch's compiled kernel may fuse
/// some multiply-adds, so values can differ from it in the last bits (≤ ~1e-6 on [0, 1] data).
pub fn interpolate_bicubic(
    src: &[f32],
    (h, w): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Result<Vec<f32>> {
    if src.len() != h * w || h == 0 || w == 0 || out_h == 0 || out_w == 0 {
        return Err(Error::invalid(
            "mask",
            format!(
                "cannot interpolate {} values as {h}×{w} to {out_h}×{out_w}",
                src.len()
            ),
        ));
    }
    let ty = torch_cubic_taps(h, out_h);
    let tx = torch_cubic_taps(w, out_w);
    let mut out = Vec::with_capacity(out_h * out_w);
    for (yi, wy) in &ty {
        for (xi, wx) in &tx {
            let row = |y: usize| {
                let r = &src[y * w..(y + 1) * w];
                let mut t = r[xi[0]] * wx[0];
                for i in 1..4 {
                    t += r[xi[i]] * wx[i];
                }
                t
            };
            let mut acc = row(yi[0]) * wy[0];
            for j in 1..4 {
                acc += row(yi[j]) * wy[j];
            }
            out.push(acc);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_parse_and_refuse_unknown() {
        assert_eq!(
            ExtendDirection::parse_list("left, right,up,down").unwrap(),
            vec![
                ExtendDirection::Left,
                ExtendDirection::Right,
                ExtendDirection::Up,
                ExtendDirection::Down
            ]
        );
        match ExtendDirection::parse_list("left,sideways") {
            Err(Error::InvalidArgument { name, msg }) => {
                assert_eq!(name, "extend");
                assert!(msg.contains("sideways"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert!(ExtendDirection::parse_list("").is_err());
    }

    #[test]
    fn rect_mask_and_its_errors() {
        let m = rect_mask(8, 6, 2, 1, 3, 2).unwrap();
        assert_eq!(m.dimensions(), (8, 6));
        let white: Vec<(u32, u32)> = m
            .enumerate_pixels()
            .filter(|p| p.2 .0[0] == 255)
            .map(|p| (p.0, p.1))
            .collect();
        assert_eq!(white.len(), 6);
        assert!(white
            .iter()
            .all(|&(x, y)| (2..5).contains(&x) && (1..3).contains(&y)));
        for bad in [
            (0, 0, 0, 2),
            (7, 0, 2, 1),
            (0, 5, 1, 2),
            (u32::MAX, 0, 2, 1),
        ] {
            assert!(matches!(
                rect_mask(8, 6, bad.0, bad.1, bad.2, bad.3),
                Err(Error::InvalidArgument { ref name, .. }) if name == "mask"
            ));
        }
    }

    #[test]
    fn edit_validation_names_the_argument() {
        let black = ImageEdit::Inpaint {
            mask: GrayImage::new(4, 4),
        };
        let small = ImageEdit::Inpaint {
            mask: rect_mask(3, 4, 0, 0, 1, 1).unwrap(),
        };
        let none = ImageEdit::Extend(Extend {
            directions: vec![],
            offset: 0,
        });
        for (e, name) in [(black, "mask"), (small, "mask"), (none, "extend")] {
            match e.validate(4, 4) {
                Err(Error::InvalidArgument { name: n, .. }) => assert_eq!(n, name),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn pil_luma_and_center_offsets() {
        let img = RgbImage::from_raw(2, 1, vec![255, 0, 0, 10, 200, 30]).unwrap();
        let l = luma_pil(&img);
        // PIL (checked): convert("L") of these two pixels gives 76 and 124
        assert_eq!(l.as_raw(), &vec![76, 124]);
        assert_eq!(center_offset(71, 64), 4); // round(3.5) = 4
        assert_eq!(center_offset(69, 64), 2); // round(2.5) = 2 (half to even)
        assert_eq!(center_offset(64, 64), 0);
        assert_eq!(shortest_side_size(80, 72, 64), (71, 64));
        assert_eq!(shortest_side_size(70, 200, 64), (64, 182));
    }

    #[test]
    fn bicubic_identity_and_constant() {
        let x: Vec<f32> = (0..20).map(|i| i as f32 / 7.0).collect();
        // same size: λ = 0 and weights (0, 1, 0, 0) → identity
        assert_eq!(interpolate_bicubic(&x, (4, 5), (4, 5)).unwrap(), x);
        // a constant map stays (nearly) constant: the weights sum to one
        let c = vec![0.25f32; 64];
        for v in interpolate_bicubic(&c, (8, 8), (3, 5)).unwrap() {
            assert!((v - 0.25).abs() < 1e-6, "{v}");
        }
        assert!(interpolate_bicubic(&x, (4, 4), (2, 2)).is_err());
    }

    #[test]
    fn pil_resize_same_size_is_identity_and_sizes_check() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 80, 7]));
        assert_eq!(pil_resize_bicubic(&img, 5, 3).unwrap(), img);
        let c = RgbImage::from_pixel(9, 7, image::Rgb([13, 200, 77]));
        // a constant image stays constant through both passes (weights sum to 2^22)
        let r = pil_resize_bicubic(&c, 4, 11).unwrap();
        assert!(r.pixels().all(|p| p.0 == [13, 200, 77]));
        assert!(pil_resize_bicubic_raw(&[0u8; 5], (2, 2), 1, (1, 1)).is_err());
    }
}
