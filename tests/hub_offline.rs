//! A hub id resolves from the local HF cache (`HF_HOME`) with `HF_HUB_OFFLINE=1`, with no network.

mod common;
use common::*;
use std::process::Command;

fn fake_cache(home: &std::path::Path, with_weights: bool) {
    let repo = home.join("hub/models--acme--janus-tiny");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        "preprocessor_config.json",
    ] {
        if f == "model.safetensors" && !with_weights {
            continue;
        }
        std::fs::copy(janus_dir().join(f), snap.join(f)).unwrap();
    }
}

fn inspect(home: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_any2any"))
        .args(["inspect", "--model", "acme/janus-tiny", "--json"])
        .env("HF_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn hub_id_loads_from_the_offline_cache() {
    let home = tempfile::tempdir().unwrap();
    fake_cache(home.path(), true);
    let o = inspect(home.path());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["family"], "janus");
    assert!(j["variant"].as_str().unwrap().contains("acme/janus-tiny"));
}

#[test]
fn offline_cache_without_weights_is_a_named_error() {
    let home = tempfile::tempdir().unwrap();
    fake_cache(home.path(), false);
    let o = inspect(home.path());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("hub:acme/janus-tiny") && err.contains("weights"),
        "{err}"
    );
}
