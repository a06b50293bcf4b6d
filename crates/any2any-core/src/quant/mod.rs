//! Quantized weights (candle's GGML block types behind [`QMatMul`]).
//!
//! **What quantizes.** Only the linears a family loads with
//! [`Linear::load_quantizable`](crate::nn::Linear::load_quantizable): the shared decoder
//! backbone's attention and MLP projections (`q/k/v/o_proj`, `gate/up/down_proj`, `fc1/fc2`) and
//! a family's own backbone projections. Embeddings, LM and image heads, norms, VQ/VAE codecs and
//! vision towers stay dense: they define the sampled distribution or are a small share of the bytes.
//!
//! **When.** While a [`QuantScope`] is active on the loading thread (`Pipeline::load` enters
//! one from [`LoadOptions::quant`](crate::LoadOptions::quant)), each quantizable weight is read
//! from the memory-mapped checkpoint as f32, quantized (rows split over the CPU cores), moved to
//! the device and dropped before the next is read, so the dense model is never resident whole.
//! A quantized checkpoint (`model.gguf`, written by [`write_gguf`]) opened inside a scope hands
//! its stored blocks to the same linears unchanged; opened outside any scope (a family's `load`
//! called directly) its tensors are dequantized and the model runs dense.
//!
//! **Bad combinations.** A weight whose input dimension is not a multiple of the type's block
//! size (32 for q8_0, 256 for the k-quants) falls back to the densest type that divides it
//! (k-quant → q8_0 → the dense dtype); every fallback is listed in the scope's
//! [`QuantReport`] (and printed by the CLI). Metal runs quantized matmuls with f32 activations
//! only: another dtype there is an [`Error::Quant`] at load. A quantized file loaded with a
//! different `--quant`, or by another family, is an [`Error::Quant`] naming the file.

use crate::{Error, Result};
use candle_core::quantized::{gguf_file, GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A weight type for `--quant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuantType {
    /// 8-bit, blocks of 32 (8.5 bits per weight).
    Q8_0,
    /// 6-bit k-quant, super-blocks of 256 (6.56 bits per weight).
    Q6K,
    /// 4-bit k-quant, super-blocks of 256 (4.5 bits per weight).
    Q4K,
}

impl QuantType {
    /// Every type, densest first.
    pub const ALL: [QuantType; 3] = [QuantType::Q8_0, QuantType::Q6K, QuantType::Q4K];

    /// Parses `q8_0`, `q6k` or `q4k` (also `q6_k`, `q4_k`, upper case).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "q8_0" | "q8" => Ok(Self::Q8_0),
            "q6k" | "q6_k" => Ok(Self::Q6K),
            "q4k" | "q4_k" => Ok(Self::Q4K),
            _ => Err(Error::invalid(
                "quant",
                format!("`{s}` (expected q8_0, q6k or q4k)"),
            )),
        }
    }

    /// The CLI name (`q8_0`, `q6k`, `q4k`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Q8_0 => "q8_0",
            Self::Q6K => "q6k",
            Self::Q4K => "q4k",
        }
    }

    /// candle's block type.
    pub fn ggml(self) -> GgmlDType {
        match self {
            Self::Q8_0 => GgmlDType::Q8_0,
            Self::Q6K => GgmlDType::Q6K,
            Self::Q4K => GgmlDType::Q4K,
        }
    }

    /// Weights per block: a quantized weight's input dimension must be a multiple of it.
    pub fn block_size(self) -> usize {
        self.ggml().block_size()
    }
}

impl std::fmt::Display for QuantType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of a GGML type as the CLI and reports spell it.
pub fn ggml_name(t: GgmlDType) -> String {
    match t {
        GgmlDType::Q8_0 => "q8_0".into(),
        GgmlDType::Q6K => "q6k".into(),
        GgmlDType::Q4K => "q4k".into(),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}

/// One weight kept denser than asked, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Fallback {
    /// The checkpoint name of the weight.
    pub tensor: String,
    /// Its shape `[out, in]`.
    pub shape: Vec<usize>,
    /// What it is stored as instead (`q8_0`, or the dense dtype such as `f32`).
    pub used: String,
}

/// What a [`QuantScope`] did while loading.
#[derive(Debug, Clone, Default)]
pub struct QuantReport {
    /// Weights quantized (or taken quantized from a GGUF file).
    pub quantized: usize,
    /// Their bytes before (as f32, or as stored for a GGUF) and after.
    pub dense_bytes: u64,
    /// Bytes of the quantized blocks.
    pub quant_bytes: u64,
    /// Weights kept denser than asked (input dimension not a multiple of the block size).
    pub fallbacks: Vec<Fallback>,
}

/// A quantization progress event: `count` weights done, the last one named.
#[derive(Debug, Clone)]
pub struct QuantProgress<'a> {
    /// The weight just done.
    pub tensor: &'a str,
    /// Weights done so far in this scope.
    pub count: usize,
    /// Quantized bytes so far.
    pub quant_bytes: u64,
}

type ProgressFn = Box<dyn FnMut(&QuantProgress<'_>)>;

struct Active {
    quant: Option<QuantType>,
    /// Quantized checkpoints opened in this scope, searched for stored blocks by name.
    files: Vec<Arc<GgufWeights>>,
    /// Keep every quantized weight by name (for [`write_gguf`]).
    record: Option<BTreeMap<String, Arc<QTensor>>>,
    report: QuantReport,
    progress: Option<ProgressFn>,
    /// Blocks by (shape, type) when every weight of a shape is known identical.
    memo: Option<std::collections::HashMap<(usize, usize, String), Vec<u8>>>,
}

thread_local! {
    static ACTIVE: RefCell<Vec<Active>> = const { RefCell::new(Vec::new()) };
}

/// While alive, the model loads on this thread quantize their quantizable linears to `quant`
/// (or take them from a quantized checkpoint). Scopes nest; dropping one restores the outer.
pub struct QuantScope {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl QuantScope {
    /// Enters a scope quantizing to `quant` (`None`: keep dense weights dense, but still use the
    /// blocks of a quantized checkpoint).
    pub fn enter(quant: Option<QuantType>) -> Self {
        ACTIVE.with(|a| {
            a.borrow_mut().push(Active {
                quant,
                files: Vec::new(),
                record: None,
                report: QuantReport::default(),
                progress: None,
                memo: None,
            })
        });
        Self {
            _not_send: std::marker::PhantomData,
        }
    }

    /// Calls `f` after each weight is quantized (e.g. to drive a progress bar).
    pub fn on_progress(self, f: impl FnMut(&QuantProgress<'_>) + 'static) -> Self {
        with_active(|a| a.progress = Some(Box::new(f)));
        self
    }

    /// Quantizes one weight per (shape, type) and copies its blocks for the others: only for
    /// weights known identical per shape (the benchmark's constant weights).
    pub fn reuse_per_shape(self) -> Self {
        with_active(|a| a.memo = Some(Default::default()));
        self
    }

    /// Keeps every quantized weight by name, for [`QuantScope::take_recorded`].
    pub fn recording(self) -> Self {
        with_active(|a| a.record = Some(BTreeMap::new()));
        self
    }

    /// The quantized weights so far, by checkpoint name (empty unless [`QuantScope::recording`]).
    pub fn take_recorded(&self) -> BTreeMap<String, Arc<QTensor>> {
        with_active(|a| a.record.take().unwrap_or_default()).unwrap_or_default()
    }

    /// What was done so far.
    pub fn report(&self) -> QuantReport {
        with_active(|a| a.report.clone()).unwrap_or_default()
    }
}

impl Drop for QuantScope {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.borrow_mut().pop());
    }
}

/// The `quant` of the scope active on this thread: `None` when no scope is active.
pub fn active() -> Option<Option<QuantType>> {
    with_active(|a| a.quant)
}

/// Enters a scope for `quant` unless one for the same type is already active on this thread
/// (a caller's, e.g. with a progress bar): what a loader entry point calls.
pub fn join_or_enter(quant: Option<QuantType>) -> Option<QuantScope> {
    match active() {
        Some(q) if q == quant => None,
        _ => Some(QuantScope::enter(quant)),
    }
}

/// Checks the quantized checkpoint among `weights` (if any) was written for `family` and,
/// when `quant` is given, for that type.
pub fn check_files(weights: &[PathBuf], family: &str, quant: Option<QuantType>) -> Result<()> {
    for p in weights {
        if p.extension().is_some_and(|e| e == "gguf") {
            GgufWeights::open(p)?.check_for(family, quant)?;
        }
    }
    Ok(())
}

fn with_active<T>(f: impl FnOnce(&mut Active) -> T) -> Option<T> {
    ACTIVE.with(|a| a.borrow_mut().last_mut().map(f))
}

/// Registers a quantized checkpoint opened on this thread with the active scope (if any).
pub(crate) fn register_file(f: Arc<GgufWeights>) {
    with_active(|a| a.files.push(f));
}

/// Loads the `weight` under `vb` (`[out_dim, in_dim]`) quantized when a scope asks for it or a
/// quantized checkpoint stores it so; `Ok(None)`: load it dense.
pub(crate) fn load_linear_weight(
    vb: &VarBuilder,
    in_dim: usize,
    out_dim: usize,
) -> Result<Option<QMatMul>> {
    let name = format!("{}.weight", vb.prefix());
    let Some((quant, stored)) = with_active(|a| {
        let stored = a.files.iter().find_map(|f| f.quantized(&name));
        (a.quant, stored)
    }) else {
        return Ok(None);
    };
    if quant.is_none() && stored.is_none() {
        return Ok(None);
    }
    let dev = vb.device();
    check_device(dev, vb.dtype(), &name, quant)?;
    let (q, dense_bytes) = match stored {
        Some(stored) => {
            let (q, bytes) = stored?;
            if q.shape().dims() != [out_dim, in_dim] {
                return Err(Error::ShapeMismatch {
                    name,
                    file: "model.gguf".into(),
                    expected: vec![out_dim, in_dim],
                    found: q.shape().dims().to_vec(),
                });
            }
            (to_device(q, dev)?, bytes)
        }
        None => {
            let Some(quant) = quant else {
                return Ok(None);
            };
            let Some(ty) = fitting_type(quant, in_dim) else {
                record_fallback(&name, [out_dim, in_dim], &format!("{:?}", vb.dtype()));
                return Ok(None);
            };
            if ty != quant.ggml() {
                record_fallback(&name, [out_dim, in_dim], &ggml_name(ty));
            }
            let key = (out_dim, in_dim, ggml_name(ty));
            let memo = with_active(|a| a.memo.as_ref().map(|m| m.get(&key).cloned())).flatten();
            let q = match memo {
                Some(Some(raw)) => candle_core::quantized::ggml_file::qtensor_from_ggml(
                    ty,
                    &raw,
                    vec![out_dim, in_dim],
                    dev,
                )?,
                memo => {
                    // Read on the CPU as f32: quantization runs on the host (candle's CUDA
                    // and Metal `quantize` copy to the host too); the dense tensor is dropped
                    // right after.
                    let w = vb.clone().set_device(Device::Cpu).get_with_hints_dtype(
                        (out_dim, in_dim),
                        "weight",
                        Default::default(),
                        DType::F32,
                    )?;
                    let q = quantize_rows(&w, ty, &name, dev)?;
                    if memo.is_some() {
                        let raw = q.data()?.into_owned();
                        with_active(|a| a.memo.as_mut().map(|m| m.insert(key, raw)));
                    }
                    q
                }
            };
            (q, (out_dim * in_dim * 4) as u64)
        }
    };
    let q = Arc::new(q);
    let qbytes = q.storage_size_in_bytes() as u64;
    with_active(|a| {
        a.report.quantized += 1;
        a.report.dense_bytes += dense_bytes;
        a.report.quant_bytes += qbytes;
        if let Some(r) = a.record.as_mut() {
            r.insert(name.clone(), q.clone());
        }
        let p = QuantProgress {
            tensor: &name,
            count: a.report.quantized,
            quant_bytes: a.report.quant_bytes,
        };
        if let Some(f) = a.progress.as_mut() {
            f(&p);
        }
    });
    Ok(Some(QMatMul::from_arc(q)?))
}

fn record_fallback(name: &str, shape: [usize; 2], used: &str) {
    with_active(|a| {
        a.report.fallbacks.push(Fallback {
            tensor: name.to_string(),
            shape: shape.to_vec(),
            used: used.to_string(),
        })
    });
}

/// `quant`, or the densest type below it whose block divides `in_dim` (k-quant → q8_0);
/// `None` when none does.
pub fn fitting_type(quant: QuantType, in_dim: usize) -> Option<GgmlDType> {
    [quant, QuantType::Q8_0]
        .into_iter()
        .find(|t| in_dim > 0 && in_dim.is_multiple_of(t.block_size()))
        .map(QuantType::ggml)
}

/// Refuses a device/activation pair candle has no quantized kernel for (Metal: f32 only).
pub fn check_device(
    dev: &Device,
    dtype: DType,
    tensor: &str,
    quant: Option<QuantType>,
) -> Result<()> {
    if dev.is_metal() && dtype != DType::F32 {
        return Err(Error::Quant {
            tensor: tensor.to_string(),
            shape: Vec::new(),
            quant: quant.map_or("quantized".into(), |q| q.name().into()),
            msg: format!(
                "candle's Metal quantized matmul takes f32 activations only, the model is loaded as {dtype:?} (use --dtype f32)"
            ),
        });
    }
    Ok(())
}

/// Quantizes a 2-D f32 CPU tensor to `ty` on `dev`, its rows split over the available cores
/// (candle's quantizer is single-threaded; rows are independent because every row is a whole
/// number of blocks). Errors name `name`.
pub fn quantize_rows(w: &Tensor, ty: GgmlDType, name: &str, dev: &Device) -> Result<QTensor> {
    let bad = |msg: String| Error::Quant {
        tensor: name.to_string(),
        shape: w.dims().to_vec(),
        quant: ggml_name(ty),
        msg,
    };
    let (rows, cols) = w.dims2().map_err(|e| bad(e.to_string()))?;
    if cols == 0 || !cols.is_multiple_of(ty.block_size()) {
        return Err(bad(format!(
            "the input dimension {cols} is not a multiple of the block size {}",
            ty.block_size()
        )));
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below ~1M weights a thread costs more than it saves.
    let chunks = threads.min(rows * cols / (1 << 20)).max(1);
    let per = rows.div_ceil(chunks);
    let parts: Vec<Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..rows)
            .step_by(per.max(1))
            .map(|start| {
                let len = per.min(rows - start);
                s.spawn(move || -> Result<Vec<u8>> {
                    let part = w.narrow(0, start, len)?;
                    Ok(QTensor::quantize(&part, ty)?.data()?.into_owned())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(bad("the quantizing thread panicked".into())))
            })
            .collect()
    });
    let mut raw = Vec::with_capacity(rows * cols / ty.block_size() * ty.type_size());
    for p in parts {
        raw.extend_from_slice(&p?);
    }
    candle_core::quantized::ggml_file::qtensor_from_ggml(ty, &raw, vec![rows, cols], dev)
        .map_err(|e| bad(e.to_string()))
}

fn to_device(q: QTensor, dev: &Device) -> Result<QTensor> {
    if dev.is_cpu() {
        return Ok(q);
    }
    let dims = q.shape().dims().to_vec();
    Ok(candle_core::quantized::ggml_file::qtensor_from_ggml(
        q.dtype(),
        &q.data()?,
        dims,
        dev,
    )?)
}

/// Metadata keys of an any2any GGUF.
pub mod keys {
    /// The family that wrote it (`janus`, `emu3`, …).
    pub const FAMILY: &str = "any2any.family";
    /// The `--quant` type (`q4k`, …).
    pub const QUANT: &str = "any2any.quant";
    /// What was quantized and what kept dense, in words.
    pub const RECIPE: &str = "any2any.recipe";
    /// The checkpoint it was made from (directory or hub id).
    pub const SOURCE: &str = "any2any.source";
    /// The any2any version that wrote it.
    pub const VERSION: &str = "any2any.version";
}

/// The file name of a quantized checkpoint's weights.
pub const GGUF_FILE: &str = "model.gguf";

/// A memory-mapped GGUF checkpoint: tensors under their HF names, quantized or dense.
pub struct GgufWeights {
    path: PathBuf,
    mmap: memmap2::Mmap,
    content: gguf_file::Content,
}

impl std::fmt::Debug for GgufWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GgufWeights({})", self.path.display())
    }
}

impl GgufWeights {
    /// Maps and indexes `path`; a file that is not GGUF, or whose tensors run past its end (a
    /// truncated copy), is an [`Error::WeightFile`] naming it.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |msg: String| Error::WeightFile {
            path: path.to_path_buf(),
            msg,
        };
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: mapped read-only; like every mmap-based loader we assume the file is not
        // truncated or rewritten while the model is alive.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let content = gguf_file::Content::read(&mut std::io::Cursor::new(&mmap[..]))
            .map_err(|e| bad(format!("not a readable GGUF file: {e}")))?;
        let len = mmap.len() as u64;
        for (name, info) in &content.tensor_infos {
            let t = info.ggml_dtype;
            let n = info.shape.elem_count();
            if !n.is_multiple_of(t.block_size()) {
                return Err(bad(format!(
                    "tensor `{name}` {:?} of type {t:?}: element count not a multiple of the block size {}",
                    info.shape.dims(),
                    t.block_size()
                )));
            }
            let end = content
                .tensor_data_offset
                .saturating_add(info.offset)
                .saturating_add((n / t.block_size() * t.type_size()) as u64);
            if end > len {
                return Err(bad(format!(
                    "tensor `{name}` ends at byte {end} but the file has {len} (truncated or corrupt)"
                )));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            mmap,
            content,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.content.tensor_infos.keys().map(String::as_str)
    }

    /// A string metadata value.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
    }

    /// The stored type of `name`.
    pub fn dtype_of(&self, name: &str) -> Option<GgmlDType> {
        self.content.tensor_infos.get(name).map(|i| i.ggml_dtype)
    }

    /// Reads `name`'s blocks onto the CPU.
    pub fn read(&self, name: &str) -> Result<Option<QTensor>> {
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Ok(None);
        };
        let mut cur = std::io::Cursor::new(&self.mmap[..]);
        info.read(&mut cur, self.content.tensor_data_offset, &Device::Cpu)
            .map(Some)
            .map_err(|e| Error::WeightFile {
                path: self.path.clone(),
                msg: format!("tensor `{name}`: {e}"),
            })
    }

    /// `name` when it is stored quantized (not F32/F16/BF16), with the bytes it would take in
    /// f32 (for the report).
    fn quantized(&self, name: &str) -> Option<Result<(QTensor, u64)>> {
        let t = self.dtype_of(name)?;
        if matches!(t, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16) {
            return None;
        }
        Some(self.read(name).and_then(|q| {
            let q = q.ok_or_else(|| Error::MissingTensor {
                name: name.to_string(),
                files: self.path.display().to_string(),
            })?;
            let bytes = q.shape().elem_count() as u64 * 4;
            Ok((q, bytes))
        }))
    }

    /// `name` as a dense tensor on `dev` (dequantized when stored quantized).
    pub fn dense(&self, name: &str, dev: &Device) -> Result<Option<Tensor>> {
        match self.read(name)? {
            Some(q) => {
                let t = match q.dtype() {
                    // keep a half-precision tensor's dtype (the VarBuilder casts as asked)
                    GgmlDType::F16 | GgmlDType::BF16 => {
                        let d = if q.dtype() == GgmlDType::F16 {
                            DType::F16
                        } else {
                            DType::BF16
                        };
                        q.dequantize(&Device::Cpu)?.to_dtype(d)?
                    }
                    _ => q.dequantize(&Device::Cpu)?,
                };
                Ok(Some(t.to_device(dev)?))
            }
            None => Ok(None),
        }
    }

    /// Checks the file was written for `family` and, when `quant` is given, for that type.
    pub fn check_for(&self, family: &str, quant: Option<QuantType>) -> Result<()> {
        let bad = |q: String, msg: String| Error::Quant {
            tensor: self.path.display().to_string(),
            shape: Vec::new(),
            quant: q,
            msg,
        };
        let stored = self.meta_str(keys::QUANT).unwrap_or("unknown").to_string();
        if let Some(f) = self.meta_str(keys::FAMILY) {
            if f != family {
                return Err(bad(
                    stored,
                    format!("the file was quantized from a `{f}` model, but config.json is a `{family}` model"),
                ));
            }
        }
        if let Some(q) = quant {
            if q.name() != stored {
                return Err(bad(
                    q.name().into(),
                    format!("the checkpoint is already quantized as {stored}; load it without --quant (or quantize the original model to {q})"),
                ));
            }
        }
        Ok(())
    }
}

/// Writes a quantized checkpoint's `model.gguf` at `out`: the tensors of `quantized` as they are,
/// every other tensor of `dense` (`(name, tensor)` in its stored dtype: f32, f16 or bf16) dense,
/// and the `metadata` string pairs (see [`keys`]).
pub fn write_gguf(
    out: &Path,
    metadata: &[(&str, String)],
    quantized: &BTreeMap<String, Arc<QTensor>>,
    dense: Vec<(String, Tensor)>,
) -> Result<()> {
    let io = |source| Error::Io {
        path: out.to_path_buf(),
        source,
    };
    let mut tensors: Vec<(String, Arc<QTensor>)> = quantized
        .iter()
        .map(|(n, q)| (n.clone(), q.clone()))
        .collect();
    for (name, t) in dense {
        if quantized.contains_key(&name) {
            continue;
        }
        let ty = match t.dtype() {
            DType::F16 => GgmlDType::F16,
            DType::BF16 => GgmlDType::BF16,
            _ => GgmlDType::F32,
        };
        // GGUF dense tensors are F32/F16/BF16; other dtypes (ints) are stored as f32.
        let t = if ty == GgmlDType::F32 {
            t.to_dtype(DType::F32)?
        } else {
            t
        };
        let t = if t.rank() == 0 { t.reshape(1)? } else { t };
        let q = QTensor::quantize(&t, ty).map_err(|e| Error::Quant {
            tensor: name.clone(),
            shape: t.dims().to_vec(),
            quant: ggml_name(ty),
            msg: e.to_string(),
        })?;
        tensors.push((name, Arc::new(q)));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let values: Vec<(&str, gguf_file::Value)> = metadata
        .iter()
        .map(|(k, v)| (*k, gguf_file::Value::String(v.clone())))
        .collect();
    let meta: Vec<(&str, &gguf_file::Value)> = values.iter().map(|(k, v)| (*k, v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors
        .iter()
        .map(|(n, q)| (n.as_str(), q.as_ref()))
        .collect();
    let tmp = out.with_extension("gguf.part");
    let file = std::fs::File::create(&tmp).map_err(io)?;
    let mut w = std::io::BufWriter::new(file);
    gguf_file::write(&mut w, &meta, &refs).map_err(|e| Error::WeightFile {
        path: out.to_path_buf(),
        msg: format!("writing GGUF: {e}"),
    })?;
    use std::io::Write;
    w.flush().map_err(io)?;
    drop(w);
    std::fs::rename(&tmp, out).map_err(io)
}

#[cfg(test)]
mod tests;
