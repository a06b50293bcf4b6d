//! A small reader of NumPy `.npy` files (format versions 1–3, float32 or float64, converted to
//! f32), e.g. to replay a reference implementation's random draws.
//!
//! Not candle's `Tensor::read_npy`: that one allocates what the header claims before reading,
//! so a hostile file declaring a huge shape aborts the process; this reader checks the claim
//! against the file's size first and never reads past it.
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("u.npy");
//! use any2any_core::candle_core::{Device, Tensor};
//! Tensor::new(&[0.25f32, 0.5, 0.75], &Device::Cpu)?.write_npy(&path)?;
//! assert_eq!(any2any_core::npy::read_f32_1d(&path)?, [0.25, 0.5, 0.75]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The longest header accepted (NumPy itself refuses headers over 10 000 bytes by default).
pub const MAX_HEADER_LEN: usize = 65_536;

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// An array read from a `.npy` file, its values as f32 in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyF32 {
    /// The array's shape (empty for a scalar).
    pub shape: Vec<usize>,
    /// The `shape.iter().product()` values, in C order.
    pub values: Vec<f32>,
    /// The file's dtype: `"float32"` or `"float64"` (converted to f32).
    pub dtype: &'static str,
    /// The header dict as written (its trailing padding and newline included).
    pub header: String,
    /// Where the data starts in the file (NumPy aligns it to 64 bytes, older writers to 16).
    pub data_offset: usize,
}

/// Reads a float32 or float64 `.npy` file of any shape (C order; a Fortran-order file of more
/// than one dimension is refused). Errors name the file.
pub fn read_f32(path: &Path) -> Result<NpyF32> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    // Never read (or allocate) past the size the file had when opened.
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.by_ref().take(len).read_to_end(&mut bytes).map_err(io)?;
    parse_f32(&bytes).map_err(|msg| Error::Config {
        path: path.to_path_buf(),
        msg: format!("not a float32/float64 .npy file: {msg}"),
    })
}

/// Writes `values` of `shape` as a float32 `.npy` file (format 1.0, C order, the data aligned
/// to 64 bytes as NumPy writes it) into `w`.
pub fn write_f32(
    w: &mut impl std::io::Write,
    shape: &[usize],
    values: &[f32],
) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // magic (6) + version (2) + length (2) + header + '\n', padded to 64 bytes
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let len = u16::try_from(header.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "npy header too long")
    })?;
    w.write_all(MAGIC)?;
    w.write_all(&[1, 0])?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(header.as_bytes())?;
    let mut data = Vec::with_capacity(values.len() * 4);
    for v in values {
        data.extend_from_slice(&v.to_le_bytes());
    }
    w.write_all(&data)
}

/// Reads a one-dimensional float32 or float64 `.npy` file (shape `(N,)`).
pub fn read_f32_1d(path: &Path) -> Result<Vec<f32>> {
    let a = read_f32(path)?;
    match a.shape.as_slice() {
        [_] => Ok(a.values),
        other => Err(Error::Config {
            path: path.to_path_buf(),
            msg: format!(
                "shape {} (expected a one-dimensional array, shape (N,))",
                shape_str(other)
            ),
        }),
    }
}

/// `(2, 3)`, `(5,)`, `()` as NumPy prints them.
fn shape_str(shape: &[usize]) -> String {
    match shape {
        [n] => format!("({n},)"),
        s => format!(
            "({})",
            s.iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Parses the bytes of a `.npy` file; the error says what is wrong with it.
pub fn parse_f32(b: &[u8]) -> std::result::Result<NpyF32, String> {
    let (header, end) = read_header(b)?;
    let (descr, fortran, shape) = parse_header(&header)?;
    let (dtype, size, little) = parse_descr(&descr)?;
    if fortran && shape.len() > 1 {
        return Err(format!(
            "Fortran-order array of shape {} (save it in C order)",
            shape_str(&shape)
        ));
    }
    let data = &b[end..];
    let n = shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|n| n.checked_mul(size).is_some())
        .ok_or_else(|| format!("shape {} is too large", shape_str(&shape)))?;
    if data.len() != n * size {
        return Err(format!(
            "{} data bytes for shape {} of {dtype} ({} expected)",
            data.len(),
            shape_str(&shape),
            n * size
        ));
    }
    Ok(NpyF32 {
        shape,
        values: decode_values(data, size, little),
        dtype,
        header,
        data_offset: end,
    })
}

/// The magic, version and header length of a `.npy` file: (the header text, where the data
/// starts).
fn read_header(b: &[u8]) -> std::result::Result<(String, usize), String> {
    if b.len() < 10 || &b[..6] != MAGIC {
        return Err("no \\x93NUMPY magic at the start".into());
    }
    let (header_len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => match b.get(8..12) {
            Some(&[x0, x1, x2, x3]) => (u32::from_le_bytes([x0, x1, x2, x3]) as usize, 12),
            _ => return Err("the file ends inside its header length".into()),
        },
        v => return Err(format!("format version {v} (expected 1, 2 or 3)")),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(format!(
            "a {header_len}-byte header (at most {MAX_HEADER_LEN} accepted)"
        ));
    }
    let end = start + header_len;
    let header = b
        .get(start..end)
        .ok_or_else(|| format!("the file ends inside its {header_len}-byte header"))?;
    let header = std::str::from_utf8(header)
        .map_err(|_| "the header is not text".to_string())?
        .to_string();
    Ok((header, end))
}

/// A float descr → (dtype name, bytes per value, little-endian).
fn parse_descr(descr: &str) -> std::result::Result<(&'static str, usize, bool), String> {
    Ok(match descr {
        "<f4" => ("float32", 4, true),
        ">f4" => ("float32", 4, false),
        "<f8" => ("float64", 8, true),
        ">f8" => ("float64", 8, false),
        other => {
            return Err(format!(
                "dtype '{other}' (expected float32 '<f4' or float64 '<f8')"
            ))
        }
    })
}

/// The values of `data` (`size`-byte floats, little- or big-endian) as f32.
fn decode_values(data: &[u8], size: usize, little: bool) -> Vec<f32> {
    match (size, little) {
        (4, true) => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (4, false) => data
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        (_, le) => data
            .chunks_exact(8)
            .map(|c| {
                let a = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]];
                (if le {
                    f64::from_le_bytes(a)
                } else {
                    f64::from_be_bytes(a)
                }) as f32
            })
            .collect(),
    }
}

/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }` → (descr, fortran, shape).
fn parse_header(h: &str) -> std::result::Result<(String, bool, Vec<usize>), String> {
    let compact: String = h
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| if c == '"' { '\'' } else { c })
        .collect();
    if !(compact.starts_with('{') && compact.ends_with('}')) {
        return Err(format!("the header is not a dict: {:?}", h.trim_end()));
    }
    let value = |key: &str| {
        let k = format!("'{key}':");
        compact
            .find(&k)
            .map(|i| &compact[i + k.len()..])
            .ok_or_else(|| format!("the header has no '{key}': {:?}", h.trim_end()))
    };
    let descr = value("descr")?
        .strip_prefix('\'')
        .and_then(|s| s.split_once('\''))
        .map(|(d, _)| d.to_string())
        .ok_or_else(|| format!("malformed 'descr' in {:?}", h.trim_end()))?;
    let fortran = match value("fortran_order")? {
        s if s.starts_with("True") => true,
        s if s.starts_with("False") => false,
        _ => return Err(format!("malformed 'fortran_order' in {:?}", h.trim_end())),
    };
    let bad_shape = || format!("malformed 'shape' in {:?}", h.trim_end());
    let dims = value("shape")?
        .strip_prefix('(')
        .and_then(|s| s.split_once(')'))
        .map(|(d, _)| d)
        .ok_or_else(bad_shape)?;
    let shape = dims
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| bad_shape()))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((descr, fortran, shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// A version-1 file with `header` (padded with spaces and a newline to a 64-byte boundary)
    /// and `data`.
    fn npy_v1(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = MAGIC.to_vec();
        b.extend([1, 0]);
        b.extend((h.len() as u16).to_le_bytes());
        b.extend(h.as_bytes());
        b.extend(data);
        b
    }

    fn f64_bytes(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_what_it_writes() {
        for (shape, v) in [
            (vec![5], vec![0.0f32, 0.5, -1.25, 3.0e-8, 0.999]),
            (vec![2, 3], vec![1., 2., 3., 4., 5., 6.]),
            (vec![0], vec![]),
        ] {
            let mut b = Vec::new();
            write_f32(&mut b, &shape, &v).unwrap();
            let a = parse_f32(&b).unwrap();
            assert_eq!((a.shape, a.values), (shape, v));
            assert_eq!(a.data_offset % 64, 0);
            assert!(a.header.ends_with('\n'));
        }
    }

    #[test]
    fn reads_what_candle_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let v = [0.0f32, 0.5, -1.25, 3.0e-8, 0.999];
        Tensor::new(&v, &Device::Cpu)
            .unwrap()
            .write_npy(&p)
            .unwrap();
        assert_eq!(read_f32_1d(&p).unwrap(), v);
        let m = Tensor::new(&[[1f32, 2., 3.], [4., 5., 6.]], &Device::Cpu).unwrap();
        m.write_npy(&p).unwrap();
        let a = read_f32(&p).unwrap();
        assert_eq!(
            (a.shape.as_slice(), a.dtype),
            ([2, 3].as_slice(), "float32")
        );
        assert_eq!(a.values, [1., 2., 3., 4., 5., 6.]);
        let e = read_f32_1d(&p).unwrap_err().to_string();
        assert!(e.contains("a.npy") && e.contains("(2, 3)"), "{e}");
    }

    #[test]
    fn float64_and_big_endian_are_converted() {
        let b = npy_v1(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (2,), }",
            &f64_bytes(&[0.25, 0.75]),
        );
        let a = parse_f32(&b).unwrap();
        assert_eq!((a.values, a.dtype), (vec![0.25, 0.75], "float64"));
        let be: Vec<u8> = [0.5f32, 2.0].iter().flat_map(|x| x.to_be_bytes()).collect();
        let b = npy_v1(
            "{\"descr\": \">f4\", \"fortran_order\": True, \"shape\": (2,)}",
            &be,
        );
        assert_eq!(parse_f32(&b).unwrap().values, [0.5, 2.0]);
        // version 2: a 4-byte header length
        let mut v2 = npy_v1(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            &[],
        );
        let hl = u16::from_le_bytes([v2[8], v2[9]]) as u32;
        v2[6] = 2;
        v2.splice(8..10, hl.to_le_bytes());
        v2.extend(1.5f32.to_le_bytes());
        assert_eq!(parse_f32(&v2).unwrap().values, [1.5]);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let h = |d: &str, s: &str| {
            format!("{{'descr': '{d}', 'fortran_order': False, 'shape': {s}, }}")
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not numpy at all".to_vec(), "magic"),
            (npy_v1(&h("<i4", "(1,)"), &[0; 4]), "'<i4'"),
            (npy_v1(&h("<f2", "(1,)"), &[0; 2]), "'<f2'"),
            (npy_v1(&h("<f4", "(3,)"), &[0; 8]), "8 data bytes"),
            (npy_v1(&h("<f4", "(2,)"), &[0; 12]), "12 data bytes"),
            (
                npy_v1(&h("<f4", "(4294967296, 4294967296, 4294967296)"), &[]),
                "too large",
            ),
            (npy_v1(&h("<f4", "(a,)"), &[]), "'shape'"),
            (npy_v1("{'descr': '<f4'}", &[]), "'fortran_order'"),
            (npy_v1("[1, 2]", &[]), "not a dict"),
            (
                npy_v1(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
                    &[0; 16],
                ),
                "Fortran",
            ),
        ];
        for (b, needle) in cases {
            let e = parse_f32(&b).unwrap_err();
            assert!(e.contains(needle), "`{needle}` missing from: {e}");
        }
        // a header length past the end of the file, or absurdly long
        let mut b = npy_v1(&h("<f4", "(1,)"), &[0; 4]);
        b[8..10].copy_from_slice(&60000u16.to_le_bytes());
        assert!(parse_f32(&b).unwrap_err().contains("ends inside"));
        b[6] = 2;
        b.splice(8..10, u32::MAX.to_le_bytes());
        assert!(parse_f32(&b).unwrap_err().contains("header"));
        b[6] = 9;
        assert!(parse_f32(&b).unwrap_err().contains("version 9"));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone.npy");
        let e = read_f32(&missing).unwrap_err().to_string();
        assert!(e.contains("gone.npy"), "{e}");
    }
}
