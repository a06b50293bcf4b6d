//! The CLI contract (`inspect`, `logits`, `generate --to text|image|text,image`,
//! `--noise-normal`) on the tiny Transfusion checkpoint (tests/fixtures/transfusion-tiny, made by
//! transfusion-pytorch): numbers against its parity.json.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn tf(cwd: &Path, sub: &str, args: &[&str]) -> Output {
    run_cli(cwd, &fixture_dir("transfusion-tiny"), sub, args)
}

#[test]
fn inspect_names_the_family_and_sizes() {
    let d = tempfile::tempdir().unwrap();
    let o = tf(d.path(), "inspect", &["--json"]);
    assert_ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = v.to_string();
    assert!(s.contains("\"transfusion\""), "{s}");
    assert!(
        s.contains("106652"),
        "parameter count of the reference module: {s}"
    );
    assert!(s.contains("text→image"), "{s}");
}

#[test]
fn logits_match_the_reference() {
    let p = parity("transfusion-tiny");
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("l.npy");
    let ids = csv(&u32s(&p["text"]["input_ids"]));
    let o = tf(
        d.path(),
        "logits",
        &["--raw-ids", &ids, "--out", out.to_str().unwrap()],
    );
    assert_ok(&o);
    let (shape, got) = read_npy_f32(&out);
    let want = f32s(&p["text"]["logits"]);
    assert_eq!(shape, [want.len()]);
    let diff = max_abs_diff(&got, &want);
    assert!(diff <= 1e-4, "logits differ by {diff}");
}

#[test]
fn generate_text_is_the_greedy_reference() {
    let p = parity("transfusion-tiny");
    let all = u32s(&p["greedy"]["parts"][0]);
    let drawn = &all[3..];
    let d = tempfile::tempdir().unwrap();
    let n = drawn.len().to_string();
    let o = tf(
        d.path(),
        "generate",
        &[
            "--prompt",
            "hi",
            "--to",
            "text",
            "--max-new-tokens",
            &n,
            "--quiet",
            "--json",
            "o.json",
        ],
    );
    assert_ok(&o);
    let j = read_json(&d.path().join("o.json"));
    let seg = &segments(&j)[0];
    assert_eq!(seg["kind"], "text");
    assert_eq!(u32s(&seg["ids"]), drawn);
}

#[test]
fn generate_image_replays_noise_and_refuses_a_short_file() {
    let p = parity("transfusion-tiny");
    let c = &p["image_cfg"];
    let d = tempfile::tempdir().unwrap();
    // the reference noise [16 tokens, 3 channels], token-major as the replay draws it
    let tok = f32s(&c["noise"]);
    write_npy_f32(&d.path().join("n.npy"), &tok);
    write_npy_f32(&d.path().join("short.npy"), &tok[..40]);
    let steps = (c["modality_steps"].as_u64().unwrap() - 1).to_string();
    let args = |noise: &'static str| {
        vec![
            "--prompt".to_string(),
            "hi".into(),
            "--to".into(),
            "image".into(),
            "--steps".into(),
            steps.clone(),
            "--cfg".into(),
            "3".into(),
            "--noise-normal".into(),
            noise.into(),
            "--quiet".into(),
            "--out".into(),
            "x.png".into(),
        ]
    };
    let a = args("n.npy");
    let o = tf(
        d.path(),
        "generate",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert_ok(&o);
    let img = image::open(d.path().join("x.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (4, 4));
    let fin = f32s(&c["final"]);
    for (i, px) in img.pixels().enumerate() {
        for ch in 0..3 {
            let want = (fin[ch * 16 + i].clamp(0.0, 1.0) * 255.0).round();
            assert!(
                (px[ch] as f32 - want).abs() <= 1.0,
                "pixel {i} channel {ch}"
            );
        }
    }
    let a = args("short.npy");
    let o = tf(
        d.path(),
        "generate",
        &a.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("noise-normal") && err.contains("short.npy"),
        "{err}"
    );
    // steps 0
    let o = tf(
        d.path(),
        "generate",
        &["--prompt", "hi", "--to", "image", "--steps", "0", "--quiet"],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("steps"));
}

#[test]
fn generate_interleaved_runs() {
    let d = tempfile::tempdir().unwrap();
    let o = tf(
        d.path(),
        "generate",
        &[
            "--prompt",
            "hi",
            "--to",
            "text,image",
            "--max-new-tokens",
            "4",
            "--steps",
            "2",
            "--quiet",
            "--json",
            "o.json",
        ],
    );
    assert_ok(&o);
    assert!(d.path().join("o.json").is_file());
}

#[test]
fn generate_text_about_an_image() {
    let p = parity("transfusion-tiny");
    let c = &p["image_prompt"];
    let d = tempfile::tempdir().unwrap();
    let px: Vec<u8> = u32s(&c["pixels"]).iter().map(|&v| v as u8).collect();
    image::RgbImage::from_raw(4, 4, px)
        .unwrap()
        .save(d.path().join("in.png"))
        .unwrap();
    let o = tf(
        d.path(),
        "generate",
        &[
            "--image",
            "in.png",
            "--prompt",
            "?",
            "--to",
            "text",
            "--max-new-tokens",
            "3",
            "--quiet",
            "--json",
            "o.json",
        ],
    );
    assert_ok(&o);
    let j = read_json(&d.path().join("o.json"));
    let drawn = u32s(&c["drawn"]);
    let upto = drawn
        .iter()
        .position(|&i| i == 257)
        .map_or(drawn.len(), |e| e + 1);
    assert_eq!(u32s(&segments(&j)[0]["ids"]), &drawn[..upto]);
}

/// A latent-space checkpoint (tests/fixtures/transfusion-vae-tiny): its `vae/` component is
/// listed, `generate --to image --noise-normal` gives the reference's decoded 8×8 pixels, and
/// with the folder moved away the image needs `--component vae=DIR` (named when missing).
#[test]
fn latent_space_checkpoint_decodes_through_its_vae_component() {
    let p = parity("transfusion-vae-tiny");
    let c = &p["image"];
    let d = tempfile::tempdir().unwrap();
    let fx = fixture_dir("transfusion-vae-tiny");
    let o = run_cli(d.path(), &fx, "inspect", &["--json"]);
    assert_ok(&o);
    assert!(String::from_utf8_lossy(&o.stdout).contains("vae"));
    write_npy_f32(&d.path().join("n.npy"), &f32s(&c["noise"]));
    let steps = (c["modality_steps"].as_u64().unwrap() - 1).to_string();
    let args = [
        "--prompt",
        "hi",
        "--to",
        "image",
        "--steps",
        &steps,
        "--cfg",
        "2",
        "--noise-normal",
        "n.npy",
        "--quiet",
        "--out",
        "x.png",
    ];
    let o = run_cli(d.path(), &fx, "generate", &args);
    assert_ok(&o);
    let img = image::open(d.path().join("x.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (8, 8));
    let want = u32s(&c["pixels"]);
    for (i, px) in img.pixels().enumerate() {
        for ch in 0..3 {
            let w = want[ch * 64 + i] as f32;
            assert!((px[ch] as f32 - w).abs() <= 1.0, "pixel {i} channel {ch}");
        }
    }
    // the model without its vae/ folder: no image decoder, named; --component brings it back
    let m = d.path().join("m");
    copy_fixture_files("transfusion-vae-tiny", &m);
    let o = run_cli(d.path(), &m, "generate", &args);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("decoder") || err.contains("vae"), "{err}");
    let vae = format!("vae={}", fx.join("vae").display());
    let o = run_cli(
        d.path(),
        &m,
        "generate",
        &[&args[..], &["--component", vae.as_str()]].concat(),
    );
    assert_ok(&o);
}
