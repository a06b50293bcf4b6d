//! The CLI contract of the foundation issue (`inspect`, `logits`, `decode`, `generate`) on every
//! next-token family's tiny checkpoint, run as a user runs the binary: logits and pixels are
//! checked against each fixture's reference values (parity.json), images against their size.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn run(cwd: &Path, model: &str, sub: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_any2any"))
        .current_dir(cwd)
        .arg(sub)
        .arg("--model")
        .arg(fixture_dir(model))
        .args(args)
        .output()
        .expect("run any2any")
}

#[track_caller]
fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn inspect(model: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let o = run(dir.path(), model, "inspect", &["--json"]);
    ok(&o);
    serde_json::from_slice(&o.stdout).expect("inspect --json is JSON")
}

/// `logits --raw-ids` equals the fixture's last-position logits (HF's `finfo.min` entries
/// exactly `f32::MIN`, the rest within 1e-4).
fn logits_match(model: &str, parity_of: &str, case: &str) {
    let p = parity(parity_of);
    let c = &p[case];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.npy");
    let o = run(
        dir.path(),
        model,
        "logits",
        &[
            "--raw-ids",
            &csv(&u32s(&c["input_ids"])),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ok(&o);
    let (shape, vals) = read_npy_f32(&out);
    let want = f32s(&c["logits"]);
    assert_eq!(shape, [want.len()]);
    check_masked_logits(&vals, &want);
}

/// `logits --raw-ids … --image`: the image fills the family's image span.
fn image_logits_match(model: &str, ids: &[u32], image: &Path, want: &[f32]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.npy");
    let o = run(
        dir.path(),
        model,
        "logits",
        &[
            "--raw-ids",
            &csv(ids),
            "--image",
            image.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ok(&o);
    let (_, vals) = read_npy_f32(&out);
    check_masked_logits(&vals, want);
}

/// `decode --codes` writes the reference's pixels (±1).
fn decode_matches(model: &str, parity_of: &str, case: &str) {
    let p = parity(parity_of);
    let c = &p[case];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.png");
    let (h, w) = (c["height"].to_string(), c["width"].to_string());
    let o = run(
        dir.path(),
        model,
        "decode",
        &[
            "--codes",
            &csv(&u32s(&c["codes"])),
            "--height",
            &h,
            "--width",
            &w,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    ok(&o);
    let img = image::open(&out).unwrap().to_rgb8();
    let want = u32s(&c["pixels"]);
    assert_eq!(img.as_raw().len(), want.len());
    let worst = img
        .as_raw()
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as u32).abs_diff(b))
        .max();
    assert!(worst <= Some(1), "{model}: pixels differ by {worst:?}");
}

/// `generate --to image` writes one PNG of `size` and a JSON with the code grid.
fn generate_image(model: &str, args: &[&str], size: (u32, u32)) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.png");
    let json = dir.path().join("g.json");
    let mut a = vec![
        "--to",
        "image",
        "--seed",
        "3",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ];
    a.extend_from_slice(args);
    let o = run(dir.path(), model, "generate", &a);
    ok(&o);
    let img = image::open(&out).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), size, "{model}");
    let j: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(j.to_string().contains("codes"), "{j}");
}

#[test]
fn chameleon_hf_layout() {
    let i = inspect("chameleon-tiny");
    assert_eq!(i["family"], "chameleon");
    logits_match("chameleon-tiny", "chameleon-tiny", "text_logits");
    // `<image>` placeholders (image_seq_length of them) filled with the image's codes.
    let p = parity("chameleon-tiny");
    let c = &p["image_logits"];
    image_logits_match(
        "chameleon-tiny",
        &u32s(&c["input_ids"]),
        &fixture_dir("chameleon-tiny").join("image.png"),
        &f32s(&c["logits"]),
    );
    decode_matches("chameleon-tiny", "chameleon-tiny", "decode_nonsquare");
    generate_image(
        "chameleon-tiny",
        &["--prompt", "a red cat.", "--max-new-tokens", "16"],
        (8, 8),
    );
}

#[test]
fn chameleon_original_layout() {
    let i = inspect("chameleon-raw-tiny");
    assert_eq!(i["family"], "chameleon");
    assert!(i["variant"].as_str().unwrap().contains("original"), "{i}");
    logits_match("chameleon-raw-tiny", "chameleon-tiny", "text_logits");
    decode_matches("chameleon-raw-tiny", "chameleon-tiny", "decode");
}

#[test]
fn lumina_layout() {
    let i = inspect("lumina-tiny");
    assert!(
        i["variant"].as_str().unwrap().contains("Lumina-mGPT"),
        "{i}"
    );
    logits_match("lumina-tiny", "lumina-tiny", "text_logits");
    // One `<image>` token (8711) stands for the whole block: BOI, h, w, rows + newline, EOI.
    let p = parity("lumina-tiny");
    let c = &p["image_logits"];
    let ids = u32s(&c["input_ids"]);
    let block = 3 + 4 * (4 + 1) + 1;
    let mut raw = vec![ids[0], 8711];
    raw.extend_from_slice(&ids[1 + block..]);
    image_logits_match(
        "lumina-tiny",
        &raw,
        &fixture_dir("lumina-tiny").join("image.png"),
        &f32s(&c["logits"]),
    );
    decode_matches("lumina-tiny", "lumina-tiny", "decode_t2i_cfg");
    generate_image(
        "lumina-tiny",
        &["--prompt", "a red cat.", "--size", "16x8"],
        (16, 8),
    );
}

#[test]
fn emu3_layout() {
    let i = inspect("emu3-tiny");
    assert_eq!(i["family"], "emu3");
    logits_match("emu3-tiny", "emu3-tiny", "text_logits");
    decode_matches("emu3-tiny", "emu3-tiny", "decode_generated");
    generate_image(
        "emu3-tiny",
        &["--prompt", "a red cat.", "--size", "6x4"],
        (6, 4),
    );
}
