//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Reads a float32 .npy file as the CLI writes it (through `any2any::npy`, which also reads what
/// `--noise-uniform` takes), checking the writer's layout too: a newline-terminated header and
/// 16-byte aligned data. Returns (shape, values).
pub fn read_npy_f32(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = any2any::npy::read_f32(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    assert_eq!(a.dtype, "float32", "{}", p.display());
    assert!(
        a.header.ends_with('\n'),
        "header must end with a newline: {:?}",
        a.header
    );
    assert!(
        a.data_offset.is_multiple_of(16),
        ".npy data must start 16-byte aligned"
    );
    (a.shape, a.values)
}

/// Writes `values` as a 1-D float32 .npy file (candle's writer).
pub fn write_npy_f32(p: &Path, values: &[f32]) {
    any2any::candle_core::Tensor::new(values, &any2any::candle_core::Device::Cpu)
        .and_then(|t| t.write_npy(p))
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Writes `values` as a 1-D float64 .npy file.
pub fn write_npy_f64(p: &Path, values: &[f64]) {
    any2any::candle_core::Tensor::new(values, &any2any::candle_core::Device::Cpu)
        .and_then(|t| t.write_npy(p))
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Runs the binary: `any2any <sub> --model <model> <args…>` in `cwd`.
pub fn run_cli(cwd: &Path, model: &Path, sub: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_any2any"))
        .current_dir(cwd)
        .arg(sub)
        .arg("--model")
        .arg(model)
        .args(args)
        .output()
        .expect("run any2any")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
pub fn assert_ok(o: &Output) {
    assert!(
        o.status.success(),
        "any2any failed ({:?})\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

pub fn read_json(p: &Path) -> serde_json::Value {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

pub fn segments(j: &serde_json::Value) -> &Vec<serde_json::Value> {
    j["segments"]
        .as_array()
        .unwrap_or_else(|| panic!("no segments array in {j}"))
}
