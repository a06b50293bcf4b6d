//! The `any2any` CLI contract, end to end on the tiny random Janus checkpoint
//! (tests/fixtures/janus-tiny): the binary is run as a user would run it and its outputs (JSON,
//! PNG, .npy) are checked against the HF reference values in parity.json.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Runs the binary with `--model <fixture>` after the subcommand, in `cwd`.
fn any2any(cwd: &Path, sub: &str, args: &[&str]) -> Output {
    run_cli(cwd, &janus_dir(), sub, args)
}

fn only_segment<'a>(j: &'a Value, kind: &str) -> &'a Value {
    let segs = segments(j);
    assert_eq!(segs.len(), 1, "expected exactly one segment: {j}");
    assert_eq!(segs[0]["kind"], kind, "segment kind: {j}");
    &segs[0]
}

fn png(p: &Path) -> image::RgbImage {
    let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        p.display()
    );
    image::load_from_memory_with_format(&bytes, image::ImageFormat::Png)
        .unwrap_or_else(|e| panic!("decode {}: {e}", p.display()))
        .to_rgb8()
}

/// Every channel of `img` within 1 of the HWC row-major reference pixels.
#[track_caller]
fn assert_pixels_close(img: &image::RgbImage, want: &[f32]) {
    assert_eq!(img.dimensions(), (16, 16));
    let got: Vec<f32> = img.as_raw().iter().map(|&v| v as f32).collect();
    let d = max_abs_diff(&got, want);
    assert!(d <= 1.0, "pixels differ by up to {d} levels");
}

fn image_raw_ids() -> String {
    csv(&u32s(&parity("janus-tiny")["image_greedy"]["input_ids"]))
}

/// `generate --to image` from the raw image prompt with sampling; returns (PNG bytes, codes).
fn sampled_image(dir: &Path, seed: u64, tag: &str) -> (Vec<u8>, Vec<u32>) {
    let out = dir.join(format!("{tag}.png"));
    let json = dir.join(format!("{tag}.json"));
    let seed = seed.to_string();
    let o = any2any(
        dir,
        "generate",
        &[
            "--raw-ids",
            &image_raw_ids(),
            "--to",
            "image",
            "--temperature",
            "1",
            "--cfg",
            "1",
            "--seed",
            &seed,
            "--quiet",
            "--out",
            out.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let j = read_json(&json);
    let codes = u32s(&only_segment(&j, "image")["codes"]);
    assert_eq!(codes.len(), 16);
    assert!(
        codes.iter().all(|&c| c < 16),
        "codes outside the codebook: {codes:?}"
    );
    (std::fs::read(&out).unwrap(), codes)
}

#[test]
fn text_from_raw_ids_greedy_matches_hf() {
    let p = parity("janus-tiny");
    let c = &p["text_greedy"];
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("t.json");
    let o = any2any(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            &csv(&u32s(&c["input_ids"])),
            "--to",
            "text",
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let j = read_json(&json);
    let seg = only_segment(&j, "text");
    assert_eq!(u32s(&seg["ids"]), u32s(&c["new_ids"]));
    let text = seg["text"]
        .as_str()
        .expect("the checkpoint has a tokenizer, so text is set");
    // Without --out the text goes to stdout.
    assert_eq!(stdout(&o).trim_end_matches('\n'), text);
    assert!(j["timings"].is_object(), "timings missing: {j}");
    assert_eq!(j["timings"]["steps"], 12);
    assert_eq!(names(dir.path()), ["t.json"]);
}

#[test]
fn text_out_writes_the_text_file() {
    let p = parity("janus-tiny");
    let c = &p["text_greedy"];
    let dir = tempfile::tempdir().unwrap();
    let (out, json) = (dir.path().join("t.txt"), dir.path().join("t.json"));
    let o = any2any(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            &csv(&u32s(&c["input_ids"])),
            "--to",
            "text",
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let j = read_json(&json);
    let seg = only_segment(&j, "text");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        seg["text"].as_str().unwrap()
    );
    assert_eq!(names(dir.path()), ["t.json", "t.txt"]);
}

#[test]
fn image_from_raw_ids_greedy_cfg_matches_hf() {
    let p = parity("janus-tiny");
    let c = &p["image_greedy"];
    let ids = u32s(&c["input_ids"]);
    assert_eq!(ids.last(), Some(&4), "raw ids for --to image end with boi");
    let dir = tempfile::tempdir().unwrap();
    let (out, json) = (dir.path().join("img.png"), dir.path().join("img.json"));
    let o = any2any(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            &csv(&ids),
            "--to",
            "image",
            "--temperature",
            "0",
            "--cfg",
            "5",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let j = read_json(&json);
    let seg = only_segment(&j, "image");
    assert_eq!(u32s(&seg["codes"]), u32s(&c["codes"]));
    assert_eq!(seg["height"], 4);
    assert_eq!(seg["width"], 4);
    assert_eq!(seg["path"].as_str().map(PathBuf::from), Some(out.clone()));
    let img = png(&out);
    assert_eq!(img.dimensions(), (16, 16));
    // The greedy codes are the ones parity.json decodes, so the pixels are the reference's too.
    assert_eq!(u32s(&p["decode"]["codes"]), u32s(&c["codes"]));
    assert_pixels_close(&img, &f32s(&p["decode"]["pixels"]));
    assert_eq!(names(dir.path()), ["img.json", "img.png"]);
}

#[test]
fn image_from_prompt_uses_the_tokenizer_and_writes_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let (out, json) = (dir.path().join("fox.png"), dir.path().join("fox.json"));
    let o = any2any(
        dir.path(),
        "generate",
        &[
            "--prompt",
            "a red fox",
            "--to",
            "image",
            "--seed",
            "3",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    assert_eq!(png(&out).dimensions(), (16, 16));
    let j = read_json(&json);
    let seg = only_segment(&j, "image");
    assert_eq!(u32s(&seg["codes"]).len(), 16);
    assert_eq!(
        (seg["height"].as_u64(), seg["width"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(names(dir.path()), ["fox.json", "fox.png"]);
}

#[test]
fn same_seed_gives_identical_png_and_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (png_a, codes_a) = sampled_image(dir.path(), 42, "a");
    let (png_b, codes_b) = sampled_image(dir.path(), 42, "b");
    assert_eq!(codes_a, codes_b);
    assert!(png_a == png_b, "same seed, different PNG bytes");
}

#[test]
fn different_seeds_give_different_codes() {
    let dir = tempfile::tempdir().unwrap();
    // Temperature 1 without guidance over 16 codes × 16 positions: identical draws for three
    // seeds would mean the seed is ignored.
    let runs: Vec<Vec<u32>> = [1u64, 2, 3]
        .iter()
        .map(|&s| sampled_image(dir.path(), s, &format!("s{s}")).1)
        .collect();
    assert!(
        runs[0] != runs[1] || runs[1] != runs[2],
        "three seeds gave the same codes {:?}",
        runs[0]
    );
}

#[test]
fn image_to_text_with_raw_ids_and_image_matches_hf() {
    let p = parity("janus-tiny");
    let c = &p["image_text_greedy"];
    let ids = u32s(&c["input_ids"]);
    assert_eq!(
        ids.iter().filter(|&&i| i == 6).count(),
        16,
        "one run of 16 placeholders"
    );
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("it.json");
    let img = janus_dir().join(c["image"].as_str().unwrap());
    let o = any2any(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            &csv(&ids),
            "--image",
            img.to_str().unwrap(),
            "--to",
            "text",
            "--temperature",
            "0",
            "--max-new-tokens",
            "12",
            "--quiet",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let j = read_json(&json);
    // The reference stops at eos (2) and keeps it.
    assert_eq!(u32s(&only_segment(&j, "text")["ids"]), u32s(&c["new_ids"]));
}

#[test]
fn several_prompts_give_one_numbered_image_each() {
    let dir = tempfile::tempdir().unwrap();
    let (out, json) = (dir.path().join("p.png"), dir.path().join("p.json"));
    let o = any2any(
        dir.path(),
        "generate",
        &[
            "--prompt",
            "a red fox",
            "--prompt",
            "a blue cat",
            "--to",
            "image",
            "--quiet",
            "--out",
            out.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    assert_eq!(names(dir.path()), ["p-0.png", "p-1.png", "p.json"]);
    let j = read_json(&json);
    let segs = segments(&j);
    assert_eq!(segs.len(), 2, "one output per prompt: {j}");
    for (i, s) in segs.iter().enumerate() {
        assert_eq!(s["kind"], "image");
        let path = dir.path().join(format!("p-{i}.png"));
        assert_eq!(s["path"].as_str().map(PathBuf::from), Some(path.clone()));
        assert_eq!(png(&path).dimensions(), (16, 16));
        assert_eq!(u32s(&s["codes"]).len(), 16);
    }
}

#[test]
fn prompt_and_raw_ids_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let o = any2any(
        dir.path(),
        "generate",
        &["--prompt", "x", "--raw-ids", "1,2", "--to", "text"],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--raw-ids"), "{}", stderr(&o));
    assert!(names(dir.path()).is_empty());
}

#[test]
fn logits_of_text_prompt_match_hf() {
    let p = parity("janus-tiny");
    let c = &p["text_logits"];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("l.npy");
    let o = any2any(
        dir.path(),
        "logits",
        &[
            "--raw-ids",
            &csv(&u32s(&c["input_ids"])),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let (shape, vals) = read_npy_f32(&out);
    assert_eq!(shape, [64]);
    let d = max_abs_diff(&vals, &f32s(&c["logits"]));
    assert!(d <= 1e-4, "max abs diff {d}");
    assert_eq!(names(dir.path()), ["l.npy"]);
}

#[test]
fn logits_of_image_prompt_match_hf() {
    let p = parity("janus-tiny");
    let c = &p["image_logits"];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("li.npy");
    let img = janus_dir().join(c["image"].as_str().unwrap());
    let o = any2any(
        dir.path(),
        "logits",
        &[
            "--raw-ids",
            &csv(&u32s(&c["input_ids"])),
            "--image",
            img.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let (shape, vals) = read_npy_f32(&out);
    assert_eq!(shape, [64]);
    let d = max_abs_diff(&vals, &f32s(&c["logits"]));
    assert!(d <= 1e-4, "max abs diff {d}");
}

#[test]
fn decode_codes_matches_hf_pixels() {
    let p = parity("janus-tiny");
    let c = &p["decode"];
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("d.png");
    let h = c["height"].to_string();
    let w = c["width"].to_string();
    let o = any2any(
        dir.path(),
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
    assert_ok(&o);
    assert_pixels_close(&png(&out), &f32s(&c["pixels"]));
    assert_eq!(names(dir.path()), ["d.png"]);
}

#[test]
fn inspect_prints_family_and_directions() {
    let dir = tempfile::tempdir().unwrap();
    let o = any2any(dir.path(), "inspect", &[]);
    assert_ok(&o);
    let s = stdout(&o);
    let line = |key: &str| {
        s.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no `{key}` line in:\n{s}"))
            .to_string()
    };
    assert!(line("family").ends_with("janus"), "{s}");
    let dirs = line("directions");
    for d in ["text→text", "image→text", "text→image"] {
        assert!(dirs.contains(d), "{d} missing from {dirs}");
    }
    assert!(!dirs.contains("image→image"), "{dirs}");
    assert!(line("vocab").ends_with("64"), "{s}");
    assert!(line("context").ends_with("512"), "{s}");
}

#[test]
fn inspect_json_parses() {
    let dir = tempfile::tempdir().unwrap();
    let o = any2any(dir.path(), "inspect", &["--json"]);
    assert_ok(&o);
    let j: Value = serde_json::from_str(&stdout(&o)).expect("inspect --json prints JSON");
    assert_eq!(j["family"], "janus");
    let dirs: Vec<&str> = j["directions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert_eq!(dirs, ["text→text", "image→text", "text→image"]);
    assert_eq!(j["vocab_size"], 64);
    assert_eq!(j["context"], 512);
    assert_eq!(j["image_tokens"], serde_json::json!([4, 4]));
    assert_eq!(j["image_size"], serde_json::json!([16, 16]));
}
