//! `generate` output and noise contract, run as a user runs the binary: `--to text,image`
//! (interleaved answers on the tiny Chameleon with its VQGAN decoder), where text and images go
//! (stdout, `--out`, numbered images, `--json`), `--out` for text of every family (Show-o
//! without a tokenizer), and `--noise-uniform` / `--noise-normal` replay.

mod common;
use any2any::NoiseSource;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Output;

fn chameleon(cwd: &Path, args: &[&str]) -> Output {
    run_cli(cwd, &chameleon_dir(), "generate", args)
}

fn janus(cwd: &Path, args: &[&str]) -> Output {
    run_cli(cwd, &janus_dir(), "generate", args)
}

/// The concatenated text of the JSON's text segments of output `i`, in order.
fn text_of(j: &Value, i: u64) -> String {
    segments(j)
        .iter()
        .filter(|s| s["kind"] == "text" && s["output"] == i)
        .map(|s| s["text"].as_str().expect("the fixture has a tokenizer"))
        .collect()
}

/// Exit status 1 with one `error:` line holding every needle; `dir` left holding only `keep`.
#[track_caller]
fn assert_error(o: &Output, needles: &[&str], dir: &Path, keep: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{err}"));
    for n in needles {
        assert!(line.contains(n), "`{n}` missing from: {line}");
    }
    assert_eq!(names(dir), keep);
}

/// Greedy from `[BOS, 63, 51]` the tiny Chameleon writes text, opens an image (BOI) and goes on
/// with text (tests/batching.rs pins the same prompt's three segments in the library).
const OPENS_AN_IMAGE: [&str; 8] = [
    "--raw-ids",
    "0,63,51",
    "--temperature",
    "0",
    "--max-new-tokens",
    "20",
    "--quiet",
    "--to",
];

fn interleaved(dir: &Path, to: &str, extra: &[&str]) -> Output {
    let mut args = OPENS_AN_IMAGE.to_vec();
    args.push(to);
    args.extend_from_slice(extra);
    chameleon(dir, &args)
}

#[test]
fn interleaved_answer_numbers_its_images_and_lists_segments_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let o = interleaved(
        dir.path(),
        "text,image",
        &["--out", "story.md", "--json", "s.json"],
    );
    assert_ok(&o);
    assert_eq!(names(dir.path()), ["s.json", "story-0.png", "story.md"]);
    let j = read_json(&dir.path().join("s.json"));
    let segs = segments(&j);
    let kinds: Vec<&str> = segs.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["text", "image", "text"], "{j}");
    let img = &segs[1];
    assert_eq!(img["path"], "story-0.png");
    // the default grid (16 × 16 codes, the VQGAN's 2× upsampling: 32 × 32 px)
    assert_eq!(
        (img["height"].as_u64(), img["width"].as_u64()),
        (Some(16), Some(16))
    );
    assert_eq!(u32s(&img["codes"]).len(), 256);
    let png = image::open(dir.path().join("story-0.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(png.dimensions(), (32, 32));
    let text = text_of(&j, 0);
    assert!(!segs[0]["text"].as_str().unwrap().is_empty(), "{j}");
    // the text: stdout (once), the --out file (a non-image name), the JSON's per-output text
    assert_eq!(stdout(&o), format!("{text}\n"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("story.md")).unwrap(),
        text
    );
    assert_eq!(j["outputs"][0]["text"], text.as_str());
    assert_eq!(
        j["outputs"][0]["images"],
        serde_json::json!(["story-0.png"])
    );
    assert!(
        j["outputs"][0]["timings"]["steps"].as_u64() > Some(0),
        "{j}"
    );
}

#[test]
fn interleaved_images_follow_an_image_out_or_the_default() {
    // `image,text` is the same request; an image --out names the images, no text file
    let dir = tempfile::tempdir().unwrap();
    let o = interleaved(dir.path(), "image,text", &["--out", "pic.png"]);
    assert_ok(&o);
    assert_eq!(names(dir.path()), ["pic-0.png"]);
    let text = stdout(&o);
    assert!(text.ends_with('\n') && text.len() > 1, "{text:?}");
    // no --out: out-0.png in the working directory; `interleaved` is one more spelling
    let dir = tempfile::tempdir().unwrap();
    let o = interleaved(dir.path(), "interleaved", &[]);
    assert_ok(&o);
    assert_eq!(names(dir.path()), ["out-0.png"]);
    assert_eq!(stdout(&o), text, "same greedy answer");
}

#[test]
fn bad_to_values_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["video", "text,audio", ""] {
        let o = chameleon(dir.path(), &["--raw-ids", "0,63", "--to", bad]);
        let err = stderr(&o);
        assert_eq!(
            o.status.code(),
            Some(2),
            "`{bad}`: usage error expected:\n{err}"
        );
        assert!(err.contains("--to"), "{err}");
        assert!(err.contains("modality"), "{err}");
    }
    assert!(names(dir.path()).is_empty());
    // a family without interleaved answers says so
    let o = janus(dir.path(), &["--raw-ids", "1,7,36", "--to", "text,image"]);
    assert_error(&o, &["janus", "interleaved"], dir.path(), &[]);
}

#[test]
fn text_goes_to_stdout_once_and_to_out() {
    // sampled text of one output (the case that streams) and of two (printed at the end)
    let p = parity("chameleon-tiny");
    let ids = csv(&u32s(&p["text_greedy"]["input_ids"]));
    for num in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let o = chameleon(
            dir.path(),
            &[
                "--raw-ids",
                &ids,
                "--to",
                "text",
                "--temperature",
                "0.9",
                "--top-k",
                "20",
                "--seed",
                "5",
                "--max-new-tokens",
                "12",
                "--num",
                num,
                "--out",
                "t.txt",
                "--json",
                "t.json",
            ],
        );
        assert_ok(&o);
        let j = read_json(&dir.path().join("t.json"));
        let texts: Vec<String> = (0..num.parse().unwrap()).map(|i| text_of(&j, i)).collect();
        assert!(texts.iter().all(|t| !t.is_empty()), "{j}");
        let all = texts.join("\n");
        assert_eq!(stdout(&o), format!("{all}\n"), "--num {num}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("t.txt")).unwrap(),
            all
        );
        assert_eq!(names(dir.path()), ["t.json", "t.txt"]);
    }
}

#[test]
fn showo_text_out_is_written_without_a_tokenizer() {
    // showo-tiny has no tokenizer: the text is its new ids, comma-separated, in --out and on
    // stdout (the reference's greedy MMU ids)
    let p = parity("showo-tiny");
    let question = csv(&u32s(
        &p["meta"]["text_ids"]["USER: \nwhat is this? ASSISTANT:"],
    ));
    let want = csv(&u32s(&p["mmu_greedy"]["new_ids"]));
    let dir = tempfile::tempdir().unwrap();
    let image = fixture_dir("showo-tiny").join("image.png");
    let o = run_cli(
        dir.path(),
        &fixture_dir("showo-tiny"),
        "generate",
        &[
            "--raw-ids",
            &question,
            "--image",
            image.to_str().unwrap(),
            "--to",
            "text",
            "--max-new-tokens",
            "8",
            "--out",
            "a.txt",
            "--json",
            "a.json",
        ],
    );
    assert_ok(&o);
    assert_eq!(names(dir.path()), ["a.json", "a.txt"]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.txt")).unwrap(),
        want
    );
    assert_eq!(stdout(&o), format!("{want}\n"));
    assert!(stderr(&o).contains("no tokenizer"), "{}", stderr(&o));
    let j = read_json(&dir.path().join("a.json"));
    assert_eq!(segments(&j)[0]["text"], Value::Null);
    assert_eq!(csv(&u32s(&segments(&j)[0]["ids"])), want);
}

/// `generate --to image` on the tiny Janus from "a red fox" at temperature 1 without guidance
/// (16 codes, one uniform each); returns (codes, PNG bytes, stderr).
fn janus_image(dir: &Path, tag: &str, noise: &[&str]) -> (Vec<u32>, Vec<u8>, String) {
    let (out, json) = (format!("{tag}.png"), format!("{tag}.json"));
    let mut args = vec![
        "--prompt",
        "a red fox",
        "--to",
        "image",
        "--temperature",
        "1",
        "--cfg",
        "1",
        "--quiet",
        "--out",
        &out,
        "--json",
        &json,
    ];
    args.extend_from_slice(noise);
    let o = janus(dir, &args);
    assert_ok(&o);
    let j = read_json(&dir.join(&json));
    let codes = u32s(&segments(&j)[0]["codes"]);
    (codes, std::fs::read(dir.join(&out)).unwrap(), stderr(&o))
}

#[test]
fn replaying_a_seeds_uniforms_gives_the_seeded_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let u = any2any::SeededNoise::new(7).uniform(16).unwrap();
    write_npy_f32(&d.join("u.npy"), &u);
    let seeded = janus_image(d, "seeded", &["--seed", "7"]);
    let replayed = janus_image(d, "replayed", &["--noise-uniform", "u.npy"]);
    assert_eq!(replayed.0, seeded.0);
    assert!(replayed.1 == seeded.1, "same draws, different PNG bytes");
    assert!(!replayed.2.contains("note:"), "all 16 used: {}", replayed.2);
    // float64 is converted; values left over are a note, not an error
    let mut longer: Vec<f64> = u.iter().map(|&x| x as f64).collect();
    longer.extend([0.5; 4]);
    write_npy_f64(&d.join("u64.npy"), &longer);
    let (codes, png, err) = janus_image(d, "f64", &["--noise-uniform", "u64.npy"]);
    assert_eq!((codes, png), (seeded.0.clone(), seeded.1.clone()));
    assert!(
        err.contains("note: --noise-uniform u64.npy: 4 of 20 values were not used"),
        "{err}"
    );
    // and another seed's draws give another image
    let other = any2any::SeededNoise::new(8).uniform(16).unwrap();
    write_npy_f32(&d.join("o.npy"), &other);
    assert_ne!(
        janus_image(d, "other", &["--noise-uniform", "o.npy"]).0,
        seeded.0
    );
}

#[test]
fn replayed_extremes_differ_and_replay_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_npy_f32(&d.join("lo.npy"), &[0.0; 16]);
    write_npy_f32(&d.join("hi.npy"), &[0.999; 16]);
    let lo = janus_image(d, "lo1", &["--noise-uniform", "lo.npy"]);
    let lo2 = janus_image(d, "lo2", &["--noise-uniform", "lo.npy"]);
    let hi = janus_image(d, "hi", &["--noise-uniform", "hi.npy"]);
    assert!(lo.0 == lo2.0 && lo.1 == lo2.1, "one file, two outputs");
    assert_ne!(lo.0, hi.0, "u = 0 and u = 0.999 drew the same codes");
    // inverse-CDF: u = 0 takes the first token of nonzero probability, u ≈ 1 one near the end
    assert!(
        lo.0.iter().sum::<u32>() < hi.0.iter().sum::<u32>(),
        "{:?} vs {:?}",
        lo.0,
        hi.0
    );
}

#[test]
fn bad_noise_files_are_errors_naming_flag_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_npy_f32(&d.join("short.npy"), &[0.5; 5]);
    write_npy_f32(&d.join("big.npy"), &[0.5, 1.5]);
    std::fs::write(d.join("junk.npy"), b"not an npy file").unwrap();
    any2any::candle_core::Tensor::new(&[[0.5f32; 2]; 2], &any2any::candle_core::Device::Cpu)
        .unwrap()
        .write_npy(d.join("m.npy"))
        .unwrap();
    any2any::candle_core::Tensor::new(&[1u32, 2], &any2any::candle_core::Device::Cpu)
        .unwrap()
        .write_npy(d.join("int.npy"))
        .unwrap();
    let inputs = ["big.npy", "int.npy", "junk.npy", "m.npy", "short.npy"];
    let base = [
        "--prompt",
        "a red fox",
        "--to",
        "image",
        "--temperature",
        "1",
        "--quiet",
        "--out",
        "x.png",
        "--json",
        "x.json",
    ];
    let cases: [(&[&str], &[&str]); 7] = [
        (
            &["--noise-uniform", "short.npy"],
            &["`noise-uniform`", "short.npy", "holds 5", "1 more"],
        ),
        (
            &["--noise-uniform", "big.npy"],
            &["`noise-uniform`", "big.npy", "1.5"],
        ),
        (
            &["--noise-uniform", "int.npy"],
            &["`noise-uniform`", "int.npy", "dtype"],
        ),
        (
            &["--noise-uniform", "junk.npy"],
            &["`noise-uniform`", "junk.npy", "magic"],
        ),
        (
            &["--noise-normal", "m.npy"],
            &["`noise-normal`", "m.npy", "(2, 2)"],
        ),
        (
            &["--noise-uniform", "gone.npy"],
            &["`noise-uniform`", "gone.npy"],
        ),
        // the family draws uniforms, and only normals were given
        (
            &["--noise-normal", "short.npy"],
            &["`noise-uniform`", "none were given"],
        ),
    ];
    for (flags, needles) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(flags);
        assert_error(&janus(d, &args), needles, d, &inputs);
    }
    // one request per replay
    let mut args = base.to_vec();
    args.extend(["--prompt", "a blue cat", "--noise-uniform", "short.npy"]);
    assert_error(
        &janus(d, &args),
        &["`noise-uniform`", "one --prompt"],
        d,
        &inputs,
    );
}
