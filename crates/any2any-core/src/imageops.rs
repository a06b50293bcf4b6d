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

/// Checks an image processor's normalisation (`rescale_factor`, `image_mean`, `image_std`):
/// finite, the scale and every std > 0 (a zero std divides by zero). The error names `path`
/// and the field.
pub fn check_normalization(path: &Path, rescale: f64, mean: [f64; 3], std: [f64; 3]) -> Result<()> {
    let bad = |msg: String| Error::Config {
        path: path.to_path_buf(),
        msg,
    };
    if !(rescale.is_finite() && rescale > 0.0) {
        return Err(bad(format!(
            "rescale_factor {rescale} must be a finite number > 0"
        )));
    }
    if mean.iter().any(|m| !m.is_finite()) {
        return Err(bad(format!("image_mean {mean:?} must be finite")));
    }
    if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(bad(format!(
            "image_std {std:?} must be finite and > 0 per channel"
        )));
    }
    Ok(())
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
    crate::limits::check_finite(x, "decoded pixels")?;
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

/// Refuses an output path before anything runs, naming the argument (`out`, `json`): its
/// folder must exist, and what is at the path, if anything, must be a regular file (a symlink,
/// FIFO, device, socket or directory is never replaced).
pub fn check_output_target(arg: &str, path: &Path) -> Result<()> {
    let dir = parent_or_dot(path);
    if path.file_name().is_none() {
        return Err(Error::invalid(
            arg,
            format!("{} is not a file path", path.display()),
        ));
    }
    if !dir.is_dir() {
        return Err(Error::invalid(
            arg,
            format!(
                "{}: directory {} does not exist",
                path.display(),
                dir.display()
            ),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() => Err(Error::invalid(
            arg,
            format!(
                "{} is {}, not a regular file: refusing to replace it (name a new or regular file)",
                path.display(),
                file_kind(&m.file_type())
            ),
        )),
        _ => Ok(()),
    }
}

fn parent_or_dot(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// A temporary file beside `path`, created exclusively (`O_EXCL`: never an existing file or a
/// link planted at its name) under a name no other process can predict.
fn create_temp(path: &Path) -> Result<(std::path::PathBuf, std::fs::File)> {
    use std::hash::{BuildHasher, Hasher};
    let dir = parent_or_dot(path);
    let fname = path.file_name().unwrap_or_default().to_string_lossy();
    let mut last = None;
    for attempt in 0..16u32 {
        // RandomState is keyed from the OS's randomness.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u32(attempt);
        let tmp = dir.join(format!(".{fname}.{:016x}.partial", h.finish()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
            Err(source) => {
                return Err(Error::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Err(Error::Io {
        path: path.to_path_buf(),
        source: last.unwrap_or_else(|| std::io::ErrorKind::AlreadyExists.into()),
    })
}

/// Writes a file atomically: `write` fills a temporary file created exclusively beside `path`,
/// which is then renamed into place, so an error never leaves a half-written output behind and
/// a symlink, FIFO or device at `path` is refused ([`check_output_target`], naming `arg`), never
/// replaced.
pub fn write_atomic(
    arg: &str,
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    check_output_target(arg, path)?;
    let (tmp, mut file) = create_temp(path)?;
    let res = write(&mut file)
        .and_then(|()| {
            drop(file);
            // Checked again: something may have appeared at the path while we wrote.
            check_output_target(arg, path)
        })
        .and_then(|()| {
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

/// Saves an image (format from the extension, PNG when none) atomically ([`write_atomic`],
/// as argument `out`).
pub fn save_image(img: &RgbImage, path: &Path) -> Result<()> {
    let format = image::ImageFormat::from_path(path).unwrap_or(image::ImageFormat::Png);
    write_atomic("out", path, |f| {
        let mut w = std::io::BufWriter::new(f);
        img.write_to(&mut w, format).map_err(|e| Error::Image {
            path: path.to_path_buf(),
            msg: format!("cannot encode as {format:?}: {e}"),
        })?;
        std::io::Write::flush(&mut w).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
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
        let r = write_atomic("out", &p, |f| {
            std::io::Write::write_all(f, b"half").unwrap();
            Err(Error::invalid("x", "boom"))
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // a regular file is replaced whole; the temp file never stays
        std::fs::write(&p, b"old").unwrap();
        write_atomic("out", &p, |f| {
            std::io::Write::write_all(f, b"new").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn non_regular_targets_are_refused_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.txt");
        std::fs::write(&target, b"keep").unwrap();
        let link = dir.path().join("link.png");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        for (p, kind) in [(&link, "symbolic link"), (&sub, "directory")] {
            let e = write_atomic("json", p, |_| Ok(())).unwrap_err();
            match &e {
                Error::InvalidArgument { name, msg } => {
                    assert_eq!(name, "json");
                    assert!(msg.contains(kind), "{msg}");
                }
                other => panic!("{other:?}"),
            }
        }
        let dev = Path::new("/dev/null");
        let e = check_output_target("out", dev).unwrap_err().to_string();
        assert!(e.contains("a device") && e.contains("`out`"), "{e}");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
