//! Image decoding (every format the build reads) and the `.npy` reader: any bytes give an
//! image / array or a typed error, within the decoder's memory limits.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = any2any_core::npy::parse_f32(data);
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("x.png");
    std::fs::write(&p, data).expect("write");
    if let Ok(img) = any2any_core::imageops::load_image(&p) {
        let _ = img.validate();
    }
});
