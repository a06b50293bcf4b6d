//! Test helpers shared by the any2any crates (dev-only, never published).
//!
//! The tiny fixture checkpoints live in the workspace's `tests/fixtures/`; every crate's tests
//! find them through [`fixture_dir`], whichever crate they run from. The parity files
//! (`parity.json`, written by `scripts/fixtures/*.py` from the reference implementations) are
//! read with [`parity`] / [`fixture_json`] and their arrays with [`u32s`] / [`f32s`].
//!
//! [`load_fixture`], [`generate`] and [`generate_with`] run a family backend the way the
//! facade's `Pipeline` does, so a family crate tests its backend without the facade.

use any2any_core::{Backend, Hooks, ImageInput, LoadOptions, ModelFiles, Output, Request, Result};
use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `crates/any2any-test-util`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/any2any-test-util sits two levels below the workspace root")
        .to_path_buf()
}

/// `tests/fixtures/<name>` of the workspace.
pub fn fixture_dir(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}

/// A JSON file of a fixture, parsed (panics with the path when it is missing or malformed).
pub fn fixture_json(name: &str, file: &str) -> serde_json::Value {
    let p = fixture_dir(name).join(file);
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

/// The `parity.json` of a fixture.
pub fn parity(name: &str) -> serde_json::Value {
    fixture_json(name, "parity.json")
}

/// A JSON array of non-negative integers as `u32`s.
pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("int") as u32)
        .collect()
}

/// A JSON array of numbers as `f32`s.
pub fn f32s(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// The largest absolute element-wise difference of two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Masked logits (e.g. Chameleon's text mode): entries the reference set to `finfo(f32).min`
/// (image tokens) must be exactly `f32::MIN`; the rest within 1e-4 abs.
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
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Parses a little-endian float32 .npy file (format versions 1–3): returns (shape, values).
pub fn read_npy_f32(p: &Path) -> (Vec<usize>, Vec<f32>) {
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

/// The files of a fixture checkpoint.
pub fn fixture_files(name: &str) -> ModelFiles {
    ModelFiles::from_dir(&fixture_dir(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

/// A family's registry loader (`any2any_janus::load`, …).
pub type LoadFn = fn(&ModelFiles, &LoadOptions) -> Result<Box<dyn Backend>>;

/// Loads a fixture checkpoint with a family's loader and the default options (f32, CPU).
pub fn load_fixture(name: &str, load: LoadFn) -> Box<dyn Backend> {
    load(&fixture_files(name), &LoadOptions::default())
        .unwrap_or_else(|e| panic!("load fixture {name}: {e}"))
}

/// An image file of a fixture.
pub fn fixture_image(name: &str, file: &str) -> ImageInput {
    any2any_core::imageops::load_image(&fixture_dir(name).join(file))
        .unwrap_or_else(|e| panic!("fixture image {name}/{file}: {e}"))
}

/// One request through a backend, as `Pipeline::generate` runs it: every output's segments in
/// one [`Output`].
pub fn generate(backend: &dyn Backend, req: Request) -> Result<Output> {
    generate_with(backend, req, &mut Hooks::new())
}

/// [`generate`] with hooks (progress, cancellation, replayed noise), as
/// `Pipeline::generate_with` runs it.
pub fn generate_with(backend: &dyn Backend, req: Request, hooks: &mut Hooks) -> Result<Output> {
    let outs = backend.generate_batch(std::slice::from_ref(&req), hooks)?;
    let mut merged = Output::default();
    for o in outs {
        merged.timings = o.timings;
        merged.segments.extend(o.segments);
    }
    Ok(merged)
}
