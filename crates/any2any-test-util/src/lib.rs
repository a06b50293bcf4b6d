//! Test helpers shared by the any2any crates (dev-only, never published).
//!
//! The tiny fixture checkpoints live in the workspace's `tests/fixtures/`; every crate's tests
//! find them through [`fixture_dir`], whichever crate they run from. The parity files
//! (`parity.json`, written by `scripts/fixtures/*.py` from the reference implementations) are
//! read with [`parity`] / [`fixture_json`] and their arrays with [`u32s`] / [`f32s`].
//!
//! [`load_fixture`], [`generate`] and [`generate_with`] run a family backend the way the
//! facade's `Pipeline` does, so a family crate tests its backend without the facade.

use any2any_core::{
    Backend, Error, Family, Hooks, ImageInput, LoadOptions, ModelFiles, Output, Request, Result,
};
use std::path::{Path, PathBuf};

pub mod shapes;

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

/// Reads a float32 .npy file as the CLI writes it (through `any2any_core::npy`, which also
/// reads what `--noise-uniform` takes), checking the writer's layout too: a newline-terminated
/// header and 16-byte aligned data. Returns (shape, values).
pub fn read_npy_f32(p: &Path) -> (Vec<usize>, Vec<f32>) {
    let a = any2any_core::npy::read_f32(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
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
    any2any_core::candle_core::Tensor::new(values, &any2any_core::candle_core::Device::Cpu)
        .and_then(|t| t.write_npy(p))
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Writes `values` as a 1-D float64 .npy file.
pub fn write_npy_f64(p: &Path, values: &[f64]) {
    any2any_core::candle_core::Tensor::new(values, &any2any_core::candle_core::Device::Cpu)
        .and_then(|t| t.write_npy(p))
        .unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
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

/// The largest difference, in levels, between 8-bit pixels and a reference's values (asserts the
/// lengths agree).
pub fn worst_level_diff(got: &[u8], want: &[u32]) -> u32 {
    assert_eq!(got.len(), want.len(), "pixel counts differ");
    got.iter()
        .zip(want)
        .map(|(&a, &b)| u32::from(a).abs_diff(b))
        .max()
        .unwrap_or(0)
}

/// Copies the files of fixture `name` (not its sub-folders, e.g. its components) into `to`.
pub fn copy_fixture_files(name: &str, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("create {}: {e}", to.display()));
    for f in std::fs::read_dir(fixture_dir(name)).expect("fixture dir") {
        let f = f.expect("dir entry");
        if f.file_type().expect("file type").is_file() {
            std::fs::copy(f.path(), to.join(f.file_name()))
                .unwrap_or_else(|e| panic!("copy {}: {e}", f.path().display()));
        }
    }
}

/// A checkpoint loaded the way the facade's `Pipeline` loads a local directory, over a given
/// list of families (a family crate tests its own without the facade): a family's own layout
/// when the directory has no config.json, else the family whose `matches` recognises it, with
/// its own components listed.
pub struct Loaded {
    /// The family that loaded it.
    pub family: &'static Family,
    /// The files it was loaded from.
    pub files: ModelFiles,
    /// The loaded backend.
    pub backend: Box<dyn Backend>,
}

impl Loaded {
    /// Loads `dir` with the first of `families` that takes it (default options).
    pub fn load(dir: &Path, families: &'static [Family]) -> Result<Self> {
        let opts = LoadOptions::default();
        if !dir.join("config.json").is_file() {
            for fam in families {
                if let Some(resolve) = fam.resolve_dir {
                    if let Some(files) = resolve(dir)? {
                        return Self::with(fam, files, &opts);
                    }
                }
            }
        }
        let files = ModelFiles::from_dir(dir)?;
        let cfg = files.config_json()?;
        any2any_core::backend::check_architectures(&cfg, &files.config)?;
        let fam =
            families
                .iter()
                .find(|f| (f.matches)(&cfg))
                .ok_or_else(|| Error::UnknownFamily {
                    found: any2any_core::backend::config_kind(&cfg),
                    path: files.config.clone(),
                    supported: families
                        .iter()
                        .map(|f| f.name)
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        Self::with(fam, files, &opts)
    }

    fn with(fam: &'static Family, mut files: ModelFiles, opts: &LoadOptions) -> Result<Self> {
        files.add_layout_components(fam.components)?;
        let backend = (fam.load)(&files, opts)?;
        Ok(Self {
            family: fam,
            files,
            backend,
        })
    }

    /// The short name of the family that loaded it.
    pub fn family(&self) -> &'static str {
        self.family.name
    }
    /// The files it was loaded from.
    pub fn files(&self) -> &ModelFiles {
        &self.files
    }
    /// What the loaded model is.
    pub fn info(&self) -> any2any_core::ModelInfo {
        self.backend.info()
    }
    /// One request, all its outputs in one [`Output`] (see [`generate`]).
    pub fn generate(&self, req: Request) -> Result<Output> {
        generate(self.backend.as_ref(), req)
    }
    /// One request with hooks (see [`generate_with`]).
    pub fn generate_with(&self, req: Request, hooks: &mut Hooks) -> Result<Output> {
        generate_with(self.backend.as_ref(), req, hooks)
    }
    /// Several requests batched.
    pub fn generate_batch(&self, reqs: &[Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        self.backend.generate_batch(reqs, hooks)
    }
    /// The last position's logits of raw ids.
    pub fn last_logits(
        &self,
        ids: &[u32],
        images: &[ImageInput],
    ) -> Result<any2any_core::candle_core::Tensor> {
        self.backend.last_logits(ids, images)
    }
    /// Decodes image codes to pixels.
    pub fn decode_codes(
        &self,
        codes: &[u32],
        height: usize,
        width: usize,
    ) -> Result<any2any_core::image::RgbImage> {
        self.backend.decode_codes(codes, height, width)
    }
}
