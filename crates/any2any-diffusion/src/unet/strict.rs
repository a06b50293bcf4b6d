//! Strict loading: a weight store that records which tensors the model read, so that tensors a
//! config leaves unused (a checkpoint with more layers than its config says) are an error
//! rather than silently ignored, as diffusers warns about them.

use any2any_core::candle_core::{DType, Device, Shape, Tensor};
use any2any_core::candle_nn::var_builder::SimpleBackend;
use any2any_core::candle_nn::{Init, VarBuilder};
use any2any_core::loading::{Component, WeightStore};
use any2any_core::{Error, Result};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

struct Tracking {
    store: WeightStore,
    used: Arc<Mutex<BTreeSet<String>>>,
}

impl Tracking {
    fn mark(&self, name: &str) {
        if let Ok(mut u) = self.used.lock() {
            u.insert(name.to_string());
        }
    }
}

impl SimpleBackend for Tracking {
    fn get(
        &self,
        s: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        dev: &Device,
    ) -> any2any_core::candle_core::Result<Tensor> {
        self.mark(name);
        self.store.get(s, name, init, dtype, dev)
    }
    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        dev: &Device,
    ) -> any2any_core::candle_core::Result<Tensor> {
        self.mark(name);
        self.store.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.store.contains_tensor(name)
    }
}

/// The tensors a model built from a [`var_builder`] has read.
pub(crate) struct Used {
    used: Arc<Mutex<BTreeSet<String>>>,
    all: BTreeSet<String>,
}

impl Used {
    /// An [`Error::WeightFile`] listing the tensors of `files` nothing read.
    pub fn check_all_used(&self, what: &str, files: &[PathBuf]) -> Result<()> {
        let used = self.used.lock().map(|u| u.clone()).unwrap_or_default();
        let unused: Vec<&String> = self.all.difference(&used).collect();
        if unused.is_empty() {
            return Ok(());
        }
        let shown: Vec<&str> = unused.iter().take(5).map(|s| s.as_str()).collect();
        Err(Error::WeightFile {
            path: files.first().cloned().unwrap_or_default(),
            msg: format!(
                "{} tensors are not used by the {what} config (the config and the weights disagree), e.g. {}",
                unused.len(),
                shown.join(", ")
            ),
        })
    }
}

/// A `VarBuilder` over the component's weights (its dtype, else `dtype`) that records reads.
pub(crate) fn var_builder(
    c: &Component,
    dtype: DType,
    device: &Device,
) -> Result<(VarBuilder<'static>, Used)> {
    if c.weights.is_empty() {
        // the component's own error names the files looked for
        c.var_builder(dtype, device)?;
    }
    let store = WeightStore::open(&c.weights)?;
    let all = store.names().map(str::to_string).collect();
    let used = Arc::new(Mutex::new(BTreeSet::new()));
    let backend = Tracking {
        store,
        used: used.clone(),
    };
    let vb = VarBuilder::from_backend(Box::new(backend), c.dtype_or(dtype), device.clone());
    Ok((vb, Used { used, all }))
}
