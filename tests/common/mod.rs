//! Shared helpers of the facade's integration tests: everything of `any2any-test-util`, plus
//! loaders through the facade's `Pipeline`.
#![allow(dead_code, unused_imports)]

pub use any2any_test_util::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn janus_dir() -> PathBuf {
    fixture_dir("janus-tiny")
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
