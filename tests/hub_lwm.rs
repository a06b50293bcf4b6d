//! A hub id in LWM's JAX release layout (LargeWorldModel/LWM-Chat-*-Jax: no config.json, `params`
//! + `vqgan` + `tokenizer.model`), loaded from the offline HF cache.

mod common;
use common::*;
use std::process::Command;

/// The tiny release in a fake HF cache; `skip` leaves one of the hub files out. The tiny model's
/// `lwm_config.json` (its head count cannot be read off the shapes) sits in the snapshot too.
fn fake_cache(home: &std::path::Path, skip: Option<&str>) {
    let repo = home.join("hub/models--acme--lwm-tiny-jax");
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    std::fs::create_dir_all(&snap).unwrap();
    let src = fixture_dir("lwm-tiny");
    for f in any2any_lwm::HUB_FILES.iter().chain(&["lwm_config.json"]) {
        if Some(*f) != skip {
            std::fs::copy(src.join(f), snap.join(f)).unwrap();
        }
    }
}

fn run(home: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_any2any"))
        .args(args)
        .env("HF_HOME", home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap()
}

#[test]
fn hub_id_in_the_jax_release_layout_loads() {
    let home = tempfile::tempdir().unwrap();
    fake_cache(home.path(), None);
    let o = run(
        home.path(),
        &["inspect", "--model", "acme/lwm-tiny-jax", "--json"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["family"], "lwm");
    let v = j["variant"].as_str().unwrap();
    assert!(
        v.contains("acme/lwm-tiny-jax") && v.contains("JAX release"),
        "{v}"
    );
}

#[test]
fn hub_release_missing_the_vqgan_names_it() {
    let home = tempfile::tempdir().unwrap();
    fake_cache(home.path(), Some("vqgan"));
    let o = run(home.path(), &["inspect", "--model", "acme/lwm-tiny-jax"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("acme/lwm-tiny-jax") && err.contains("vqgan"),
        "{err}"
    );
}
