//! Safetensors and PyTorch pickle readers: any bytes open to a typed error or a store whose
//! every tensor loads (or errors) without a panic.
#![no_main]
use any2any_core::candle_core::{DType, Device};
use any2any_core::loading::WeightStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in ["w.safetensors", "w.pth"] {
        let p = dir.path().join(name);
        std::fs::write(&p, data).expect("write");
        if let Ok(store) = WeightStore::open(&[p]) {
            let names: Vec<String> = store.names().map(str::to_string).collect();
            let vb = any2any_core::candle_nn::VarBuilder::from_backend(
                Box::new(store),
                DType::F32,
                Device::Cpu,
            );
            for n in names.iter().take(8) {
                let _ = vb.get_unchecked(n);
            }
        }
    }
});
