//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn fixture_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn janus_dir() -> PathBuf {
    fixture_dir("janus-tiny")
}

pub fn parity(name: &str) -> serde_json::Value {
    let p = fixture_dir(name).join("parity.json");
    serde_json::from_slice(&std::fs::read(&p).expect("read parity.json"))
        .expect("parse parity.json")
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as u32)
        .collect()
}

pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn load_janus() -> any2any::Pipeline {
    any2any::Pipeline::load(
        janus_dir().to_str().unwrap(),
        any2any::LoadOptions::default(),
    )
    .expect("load tiny janus")
}

pub fn chameleon_dir() -> PathBuf {
    fixture_dir("chameleon-tiny")
}

pub fn load_chameleon() -> any2any::Pipeline {
    any2any::Pipeline::load(
        chameleon_dir().to_str().unwrap(),
        any2any::LoadOptions::default(),
    )
    .expect("load tiny chameleon")
}

/// Chameleon text-mode logits: entries HF set to `finfo(f32).min` (image tokens) must be exactly
/// `f32::MIN`; the rest within 1e-4 abs.
pub fn check_masked_logits(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    let mut d = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if *w <= -1e38 {
            assert_eq!(*g, f32::MIN, "entry {i}: HF has finfo.min, got {g}");
        } else {
            d = d.max((g - w).abs());
        }
    }
    assert!(d <= 1e-4, "max abs diff {d}");
}

/// Comma-separated ids, as `--raw-ids` takes them.
pub fn csv(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The names in a directory, sorted.
pub fn names(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Parses a little-endian float32 .npy file (format versions 1–3): returns (shape, values).
pub fn read_npy_f32(p: &std::path::Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "bad .npy magic");
    let (header_len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => panic!("unknown .npy version {v}"),
    };
    assert!(
        (start + header_len).is_multiple_of(16),
        ".npy data must start 16-byte aligned"
    );
    let header = std::str::from_utf8(&b[start..start + header_len]).expect("ascii header");
    assert!(
        header.ends_with('\n'),
        "header must end with a newline: {header:?}"
    );
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(
        compact.contains("'descr':'<f4'"),
        "not little-endian float32: {header}"
    );
    assert!(
        compact.contains("'fortran_order':False"),
        "fortran order: {header}"
    );
    let shape_at = compact.find("'shape':(").expect("shape key") + "'shape':(".len();
    let shape_str = &compact[shape_at..shape_at + compact[shape_at..].find(')').unwrap()];
    let shape: Vec<usize> = shape_str
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("shape dim"))
        .collect();
    let data = &b[start + header_len..];
    let n: usize = shape.iter().product();
    assert_eq!(
        data.len(),
        4 * n,
        "data length does not match shape {shape:?}"
    );
    let vals = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, vals)
}
