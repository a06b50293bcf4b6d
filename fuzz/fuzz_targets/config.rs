//! Config parsing and validation of every family: any JSON gives a config or a typed error.
#![no_main]
use any2any_core::backbone::{LlamaTextConfig, PhiConfig};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let p = Path::new("config.json");
    if let Ok(c) = serde_json::from_value::<LlamaTextConfig>(v.clone()) {
        let _ = c.to_backbone("config.json");
    }
    if let Ok(c) = serde_json::from_value::<PhiConfig>(v.clone()) {
        let _ = c.to_backbone("phi_config.json");
    }
    let _ = any2any_chameleon::ChameleonConfig::from_json(&v, p);
    if let Ok(c) = serde_json::from_value::<any2any_emu3::Emu3Config>(v.clone()) {
        let _ = c.vq_config.validate("config.json: vq_config");
        let _ = c.text_config.to_backbone("config.json: text_config");
        let _ = any2any_emu3::Emu3Vocab::from_config(&c);
    }
    if let Ok(c) = serde_json::from_value::<any2any_emu3::Emu3ImageProcessorConfig>(v.clone()) {
        if c.validate(p).is_ok() {
            let _ = c.smart_resize(480, 640, 8);
        }
    }
    if let Ok(c) = serde_json::from_value::<any2any_janus::JanusConfig>(v.clone()) {
        let _ = c.text_config.to_backbone("config.json: text_config");
        let _ = c.vision_config.validate();
        let _ = c.vq_config.validate();
    }
    // Show-o reads its config.json and the Phi config next to it from files.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.json"), data).expect("write");
    std::fs::write(dir.path().join("phi_config.json"), data).expect("write");
    let _ = any2any_showo::ShowoConfig::load(&dir.path().join("config.json"));
});
