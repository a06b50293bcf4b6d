//! `model.safetensors.index.json` and `model_index.json`: any bytes give files inside the
//! folder or a typed error, never a path outside it.
#![no_main]
use any2any_core::ModelFiles;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(d.join("config.json"), b"{}").expect("write");
    std::fs::write(d.join("a.safetensors"), b"").expect("write");
    for index in ["model.safetensors.index.json", "model_index.json"] {
        std::fs::write(d.join(index), data).expect("write");
        if let Ok(files) = ModelFiles::from_dir(d) {
            for w in files.weights.iter().chain(files.components.values().flat_map(|c| &c.weights)) {
                assert!(w.starts_with(d), "{} escapes {}", w.display(), d.display());
            }
        }
        std::fs::remove_file(d.join(index)).expect("remove");
    }
});
