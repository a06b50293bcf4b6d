//! Image I/O and the pre/post-processing steps the families share.

use crate::stream::ImageInput;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use std::path::Path;

/// Reads an image file (any format the `image` crate knows), composited to RGB.
pub fn load_image(path: &Path) -> Result<ImageInput> {
    let img = image::ImageReader::open(path)
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?
        .decode()
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            msg: e.to_string(),
        })?;
    Ok(ImageInput::new(img.to_rgb8()))
}

/// Rescale and normalise, as HF image processors do: `(x · rescale − mean) / std`, giving a
/// `[3, H, W]` f32 tensor.
pub fn normalize(
    img: &RgbImage,
    rescale: f64,
    mean: [f64; 3],
    std: [f64; 3],
    device: &Device,
) -> Result<Tensor> {
    let (w, h) = img.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut data = vec![0f32; 3 * h * w];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            let v = p.0[c] as f64 * rescale;
            data[c * h * w + y as usize * w + x as usize] = ((v - mean[c]) / std[c]) as f32;
        }
    }
    Ok(Tensor::from_vec(data, (3, h, w), device)?)
}

/// Resize so the longer side is `size` (the shorter at least `min_size`), bicubic, then pad to a
/// centred square filled with `background` (Janus-style letterboxing).
pub fn resize_long_side_and_pad(
    img: &RgbImage,
    size: u32,
    min_size: u32,
    background: [u8; 3],
) -> RgbImage {
    let (w, h) = img.dimensions();
    let scale = size as f64 / w.max(h) as f64;
    let nw = ((w as f64 * scale).round() as u32).max(min_size);
    let nh = ((h as f64 * scale).round() as u32).max(min_size);
    let resized = if (nw, nh) == (w, h) {
        img.clone()
    } else {
        image::imageops::resize(img, nw, nh, image::imageops::FilterType::CatmullRom)
    };
    if nw == nh {
        return resized;
    }
    let side = nw.max(nh);
    let mut out = RgbImage::from_pixel(side, side, image::Rgb(background));
    let (ox, oy) = ((side - nw) / 2, (side - nh) / 2);
    image::imageops::replace(&mut out, &resized, ox as i64, oy as i64);
    out
}

/// `[B, 3, H, W]` in `[-1, 1]` → images: clamp, `(x + 1) · 127.5`, truncating cast to u8.
pub fn to_images(x: &Tensor) -> Result<Vec<RgbImage>> {
    let x = x.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let (b, c, h, w) = x.dims4()?;
    if c != 3 {
        return Err(Error::invalid(
            "image",
            format!("expected 3 channels, got {c}"),
        ));
    }
    let px = ((x.clamp(-1f32, 1f32)? + 1.0)? * 127.5)?
        .permute((0, 2, 3, 1))?
        .flatten_all()?
        .to_vec1::<f32>()?;
    (0..b)
        .map(|i| {
            let data: Vec<u8> = px[i * h * w * 3..(i + 1) * h * w * 3]
                .iter()
                .map(|v| *v as u8)
                .collect();
            RgbImage::from_raw(w as u32, h as u32, data)
                .ok_or_else(|| Error::invalid("image", "pixel buffer size mismatch"))
        })
        .collect()
}

/// Writes a file atomically: a temporary file in the same directory, renamed into place, so an
/// error never leaves a half-written output behind.
pub fn write_atomic(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fname = path
        .file_name()
        .ok_or_else(|| Error::invalid("out", format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.partial-{}",
        fname.to_string_lossy(),
        std::process::id()
    ));
    let res = write(&tmp).and_then(|_| {
        std::fs::rename(&tmp, path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Saves an image (format from the extension, PNG when none) atomically.
pub fn save_image(img: &RgbImage, path: &Path) -> Result<()> {
    let format = image::ImageFormat::from_path(path).unwrap_or(image::ImageFormat::Png);
    write_atomic(path, |tmp| {
        img.save_with_format(tmp, format).map_err(|e| Error::Image {
            path: path.to_path_buf(),
            msg: format!("cannot write: {e}"),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_centres_and_postprocess_truncates() {
        let img = RgbImage::from_pixel(8, 4, image::Rgb([10, 20, 30]));
        let out = resize_long_side_and_pad(&img, 8, 2, [127, 127, 127]);
        assert_eq!(out.dimensions(), (8, 8));
        assert_eq!(out.get_pixel(0, 0).0, [127, 127, 127]);
        assert_eq!(out.get_pixel(4, 4).0, [10, 20, 30]);
        let t = Tensor::from_vec(vec![-2f32, 0.0, 0.999, 1.5], (1, 1, 2, 2), &Device::Cpu)
            .unwrap()
            .repeat((1, 3, 1, 1))
            .unwrap();
        let im = &to_images(&t).unwrap()[0];
        assert_eq!(im.get_pixel(0, 0).0[0], 0);
        assert_eq!(im.get_pixel(1, 0).0[0], 127);
        assert_eq!(im.get_pixel(0, 1).0[0], 254);
        assert_eq!(im.get_pixel(1, 1).0[0], 255);
    }

    #[test]
    fn atomic_write_leaves_nothing_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.png");
        let r = write_atomic(&p, |tmp| {
            std::fs::write(tmp, b"half").unwrap();
            Err(Error::invalid("x", "boom"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
