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

/// A hub repository in Meta's original Chameleon / Anole layout (GAIR/Anole-7b-v0.1: no
/// config.json, `models/7b/` + `tokenizer/`), from the offline cache.
fn fake_original_cache(home: &std::path::Path, skip: Option<&str>) {
    let repo = home.join("hub/models--acme--anole-tiny");
    let rev = "89abcdef0123456789abcdef0123456789abcdef";
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    let src = fixture_dir("chameleon-raw-tiny");
    for f in any2any_chameleon::original::HUB_FILES {
        if Some(*f) == skip {
            continue;
        }
        let to = snap.join(f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(f), to).unwrap();
    }
}

fn run_original(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_any2any"))
        .args(args)
        .env("HF_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn hub_id_in_the_original_chameleon_layout_loads() {
    let home = tempfile::tempdir().unwrap();
    fake_original_cache(home.path(), None);
    let o = run_original(
        home.path(),
        &["inspect", "--model", "acme/anole-tiny", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["family"], "chameleon");
    let v = j["variant"].as_str().unwrap();
    assert!(
        v.contains("acme/anole-tiny") && v.contains("original"),
        "{v}"
    );
    // and it computes the HF layout's logits
    let p = parity("chameleon-tiny");
    let c = &p["text_logits"];
    let out = home.path().join("l.npy");
    let o = run_original(
        home.path(),
        &[
            "logits",
            "--model",
            "acme/anole-tiny",
            "--raw-ids",
            &csv(&u32s(&c["input_ids"])),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (_, vals) = read_npy_f32(&out);
    check_masked_logits(&vals, &f32s(&c["logits"]));
}

#[test]
fn hub_original_layout_missing_a_file_names_it() {
    let home = tempfile::tempdir().unwrap();
    fake_original_cache(home.path(), Some("tokenizer/vqgan.ckpt"));
    let o = run_original(home.path(), &["inspect", "--model", "acme/anole-tiny"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("acme/anole-tiny") && err.contains("tokenizer/vqgan.ckpt"),
        "{err}"
    );
}
