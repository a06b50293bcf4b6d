//! Bad input gives a clear, typed error that names what is at fault: no panic, and no output file
//! (nor a `.partial` temporary) left behind. Library API where that is natural, the CLI where the
//! contract is about the CLI. Corruptions are made on a copy of tests/fixtures/janus-tiny.

mod common;
use any2any::{
    CancelToken, Error, GenerationParams, Hooks, ImageInput, LoadOptions, Modality, Pipeline,
    Request,
};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tempfile::TempDir;

fn image_path() -> PathBuf {
    janus_dir().join("image.png")
}

/// A writable copy of the fixture checkpoint.
fn fixture_copy() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(janus_dir()).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn load(dir: &Path) -> any2any::Result<Pipeline> {
    Pipeline::load(dir.to_str().unwrap(), LoadOptions::default())
}

#[track_caller]
fn load_err(dir: &Path) -> Error {
    match load(dir) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

fn pipe() -> Pipeline {
    load(&janus_dir()).expect("load the tiny Janus fixture")
}

fn greedy_text(n: usize) -> GenerationParams {
    GenerationParams {
        temperature: Some(0.0),
        max_new_tokens: Some(n),
        ..Default::default()
    }
}

/// `[1, 7, 36, 4, 6 ×16, 5, 37, 8]`: one image's placeholder run (the parity image prompt).
fn image_prompt_ids() -> Vec<u32> {
    let mut ids = vec![1, 7, 36, 4];
    ids.extend([6; 16]);
    ids.extend([5, 37, 8]);
    ids
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_any2any"))
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("run any2any")
}

/// Runs a subcommand against the fixture model.
fn run_model(cwd: &Path, sub: &str, args: &[&str]) -> Output {
    let model = janus_dir();
    let mut full = vec![sub, "--model", model.to_str().unwrap()];
    full.extend_from_slice(args);
    run(cwd, &full)
}

/// Exit status 1 (an error, not a panic's 101 nor a usage error's 2), an `error:` line containing
/// every one of `needles`, and `dir` holding nothing but `keep` (no output, no `.partial`).
#[track_caller]
fn assert_cli_error(o: &Output, needles: &[&str], dir: &Path, keep: &[&str]) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "exit status {:?}; stderr:\n{err}",
        o.status
    );
    assert!(!err.contains("panicked"), "panic:\n{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line in stderr:\n{err}"));
    for n in needles {
        assert!(line.contains(n), "`{n}` missing from: {line}");
    }
    assert_eq!(names(dir), keep, "files left behind in {}", dir.display());
}

#[track_caller]
fn assert_invalid(e: &Error, arg: &str, needles: &[&str]) {
    match e {
        Error::InvalidArgument { name, msg } => {
            assert_eq!(name, arg, "{e}");
            for n in needles {
                assert!(msg.contains(n), "`{n}` missing from: {e}");
            }
        }
        other => panic!("expected InvalidArgument `{arg}`, got {other:?}"),
    }
}

/// Rewrites a safetensors file without one tensor (header re-laid out, data copied).
fn drop_tensor(file: &Path, name: &str) {
    let b = std::fs::read(file).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let data = &b[8 + n..];
    assert!(header.contains_key(name), "no tensor {name} to drop");
    let mut entries: Vec<(String, Value)> = header
        .into_iter()
        .filter(|(k, _)| k != name && k != "__metadata__")
        .collect();
    entries.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap());
    let mut out_header = serde_json::Map::new();
    let mut out_data = Vec::new();
    for (k, mut v) in entries {
        let (s, e) = (
            v["data_offsets"][0].as_u64().unwrap() as usize,
            v["data_offsets"][1].as_u64().unwrap() as usize,
        );
        let start = out_data.len();
        out_data.extend_from_slice(&data[s..e]);
        v["data_offsets"] = serde_json::json!([start, out_data.len()]);
        out_header.insert(k, v);
    }
    let mut h = serde_json::to_vec(&Value::Object(out_header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(out_data);
    std::fs::write(file, out).unwrap();
}

// ---------------------------------------------------------------- loading

#[test]
fn missing_model_dir_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-model");
    let e = load_err(&missing);
    assert_invalid(&e, "model", &["no-such-model", "no such directory"]);
    let o = run(
        tmp.path(),
        &["inspect", "--model", missing.to_str().unwrap()],
    );
    assert_cli_error(&o, &["no-such-model"], tmp.path(), &[]);
}

#[test]
fn dir_without_config_json() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    match load_err(dir.path()) {
        Error::MissingFile {
            dir: d, looked_for, ..
        } => {
            assert_eq!(d, dir.path().display().to_string());
            assert_eq!(looked_for, "config.json");
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
}

#[test]
fn malformed_config_names_the_file() {
    let dir = fixture_copy();
    std::fs::write(
        dir.path().join("config.json"),
        b"{\"model_type\": \"janus\",",
    )
    .unwrap();
    let e = load_err(dir.path());
    match &e {
        Error::Json { path, .. } => assert_eq!(path, &dir.path().join("config.json")),
        other => panic!("expected Json, got {other:?}"),
    }
    assert!(e.to_string().contains("config.json"), "{e}");
}

#[test]
fn unknown_family_names_the_model_type() {
    let dir = fixture_copy();
    edit_config(dir.path(), |v| v["model_type"] = "foo".into());
    let e = load_err(dir.path());
    match &e {
        Error::UnknownFamily {
            found,
            path,
            supported,
        } => {
            assert_eq!(found, "foo");
            assert_eq!(path, &dir.path().join("config.json"));
            assert!(supported.contains("janus"), "{e}");
        }
        other => panic!("expected UnknownFamily, got {other:?}"),
    }
    let out = tempfile::tempdir().unwrap();
    let o = run(
        out.path(),
        &["inspect", "--model", dir.path().to_str().unwrap()],
    );
    assert_cli_error(&o, &["`foo`", "janus"], out.path(), &[]);
}

#[test]
fn missing_weights_file() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    match load_err(dir.path()) {
        Error::MissingFile {
            what, looked_for, ..
        } => {
            assert_eq!(what, "weights");
            assert!(looked_for.contains("model.safetensors"), "{looked_for}");
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
}

#[track_caller]
fn assert_weight_file_error(dir: &Path) {
    let e = load_err(dir);
    match &e {
        Error::WeightFile { path, .. } => assert_eq!(path, &dir.join("model.safetensors")),
        other => panic!("expected WeightFile, got {other:?}"),
    }
    assert!(e.to_string().contains("model.safetensors"), "{e}");
}

#[test]
fn corrupt_safetensors_names_the_file() {
    let dir = fixture_copy();
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(dir.path().join("model.safetensors"), garbage).unwrap();
    assert_weight_file_error(dir.path());
}

#[test]
fn truncated_safetensors_names_the_file() {
    let dir = fixture_copy();
    let p = dir.path().join("model.safetensors");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    assert_weight_file_error(dir.path());
    // Cut inside the header too.
    std::fs::write(&p, &b[..100]).unwrap();
    assert_weight_file_error(dir.path());
}

#[test]
fn missing_tensor_is_named() {
    let dir = fixture_copy();
    let name = "model.language_model.layers.1.mlp.up_proj.weight";
    drop_tensor(&dir.path().join("model.safetensors"), name);
    let e = load_err(dir.path());
    match &e {
        Error::MissingTensor { name: n, files } => {
            assert_eq!(n, name);
            assert!(files.contains("model.safetensors"), "{e}");
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
}

#[test]
fn shape_mismatch_names_tensor_and_both_shapes() {
    let dir = fixture_copy();
    edit_config(dir.path(), |v| {
        v["text_config"]["intermediate_size"] = 48.into()
    });
    let e = load_err(dir.path());
    match &e {
        Error::ShapeMismatch {
            name,
            file,
            expected,
            found,
        } => {
            assert!(
                name.starts_with("model.language_model.layers.0.mlp."),
                "{e}"
            );
            assert!(file.ends_with("model.safetensors"), "{e}");
            assert!(expected.contains(&48) && !expected.contains(&64), "{e}");
            assert!(found.contains(&64) && !found.contains(&48), "{e}");
            let (mut a, mut b) = (expected.clone(), found.clone());
            a.sort();
            b.sort();
            assert_eq!((a, b), (vec![32, 48], vec![32, 64]), "{e}");
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("mlp") && msg.contains("48") && msg.contains("64"),
        "{msg}"
    );
    let out = tempfile::tempdir().unwrap();
    let o = run(
        out.path(),
        &["inspect", "--model", dir.path().to_str().unwrap()],
    );
    assert_cli_error(&o, &["mlp", "48", "64"], out.path(), &[]);
}

// ---------------------------------------------------------------- inputs

#[test]
fn not_an_image_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("notes.png");
    std::fs::write(&bad, b"these are not pixels").unwrap();
    match any2any::imageops::load_image(&bad) {
        Err(Error::Image { path, .. }) => assert_eq!(path, bad),
        Err(other) => panic!("expected Image, got {other:?}"),
        Ok(_) => panic!("a text file decoded as an image"),
    }
    let (out, json) = (dir.path().join("o.txt"), dir.path().join("o.json"));
    let o = run_model(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            &csv(&image_prompt_ids()),
            "--image",
            bad.to_str().unwrap(),
            "--to",
            "text",
            "--max-new-tokens",
            "2",
            "--out",
            out.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_cli_error(
        &o,
        &["notes.png", "not a readable image"],
        dir.path(),
        &["notes.png"],
    );
}

#[test]
fn missing_image_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_model(
        dir.path(),
        "logits",
        &[
            "--raw-ids",
            &csv(&image_prompt_ids()),
            "--image",
            "nowhere.png",
            "--out",
            "l.npy",
        ],
    );
    assert_cli_error(&o, &["nowhere.png"], dir.path(), &[]);
}

#[test]
fn prompt_longer_than_context() {
    let p = pipe();
    let ids = vec![7u32; 600];
    for (want, reserved) in [(Modality::Text, 4), (Modality::Image, 16)] {
        // Janus image loops take no token budget: the grid fixes it
        let params = match want {
            Modality::Image => GenerationParams {
                temperature: Some(0.0),
                ..Default::default()
            },
            _ => greedy_text(4),
        };
        let req = Request::new()
            .raw_ids(ids.clone())
            .want(want)
            .params(params);
        match p.generate(req) {
            Err(Error::ContextOverflow {
                len,
                max,
                reserved: r,
            }) => {
                assert_eq!((len, max, r), (600, 512, reserved), "{want}")
            }
            Err(other) => panic!("{want}: expected ContextOverflow, got {other:?}"),
            Ok(_) => panic!("{want}: 600 tokens fit a 512-token context"),
        }
    }
    // A prompt that fits but leaves no room for the tokens to generate.
    let req = Request::new()
        .raw_ids(vec![7; 505])
        .want(Modality::Text)
        .params(greedy_text(12));
    assert!(matches!(
        p.generate(req),
        Err(Error::ContextOverflow {
            len: 505,
            max: 512,
            ..
        })
    ));
    assert!(matches!(
        p.last_logits(&ids, &[]),
        Err(Error::ContextOverflow { len: 600, .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let o = run_model(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            &csv(&ids),
            "--to",
            "image",
            "--quiet",
            "--out",
            "o.png",
            "--json",
            "o.json",
        ],
    );
    assert_cli_error(&o, &["600 tokens", "512"], dir.path(), &[]);
}

#[test]
fn huge_max_new_tokens_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let o = run_model(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            "1,7,36",
            "--to",
            "text",
            "--max-new-tokens",
            &usize::MAX.to_string(),
            "--out",
            "o.txt",
        ],
    );
    assert_cli_error(&o, &["`max-new-tokens`"], dir.path(), &[]);
    // within the cap but beyond the context: the context names the budget
    let o = run_model(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            "1,7,36",
            "--to",
            "text",
            "--max-new-tokens",
            "100000",
            "--out",
            "o.txt",
        ],
    );
    assert_cli_error(&o, &["prompt is 3 tokens"], dir.path(), &[]);
}

#[test]
fn image_output_for_an_image_prompt_is_unsupported() {
    let p = pipe();
    let img = any2any::imageops::load_image(&image_path()).unwrap();
    let req = Request::new()
        .text("make it red")
        .image(img)
        .want(Modality::Image);
    let e = match p.generate(req) {
        Err(e) => e,
        Ok(_) => panic!("Janus generated an image from an image"),
    };
    match &e {
        Error::Unsupported {
            family,
            direction,
            supported,
        } => {
            assert_eq!(family, "janus");
            assert_eq!(direction, "image→image");
            assert!(supported.contains("text→image"), "{e}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(e.to_string().contains("image→image"), "{e}");
}

#[test]
fn invalid_sampling_values_name_the_argument() {
    let cases: [(&[&str], &str); 7] = [
        (&["--temperature", "-1"], "`temperature`"),
        (&["--temperature", "inf"], "`temperature`"),
        (&["--top-p", "0"], "`top-p`"),
        (&["--top-p", "1.5"], "`top-p`"),
        (&["--cfg", "NaN"], "`cfg`"),
        (&["--top-k", "0"], "`top-k`"),
        (&["--max-new-tokens", "0"], "`max-new-tokens`"),
    ];
    for (to, ids) in [("text", "1,7,36"), ("image", "1,7,36,4")] {
        for (flag, needle) in cases {
            let dir = tempfile::tempdir().unwrap();
            let mut args = vec![
                "--raw-ids",
                ids,
                "--to",
                to,
                "--quiet",
                "--out",
                "o.out",
                "--json",
                "o.json",
            ];
            args.extend_from_slice(flag);
            let o = run_model(dir.path(), "generate", &args);
            assert_cli_error(&o, &[needle, flag[1]], dir.path(), &[]);
        }
    }
    // The library refuses them too, naming the same argument.
    let p = pipe();
    let bad = GenerationParams {
        top_p: Some(1.5),
        ..Default::default()
    };
    let e = match p.generate(Request::new().raw_ids(vec![1, 7, 36]).params(bad)) {
        Err(e) => e,
        Ok(_) => panic!("top-p 1.5 accepted"),
    };
    assert_invalid(&e, "top-p", &["1.5"]);
}

#[test]
fn out_in_a_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone");
    let out = gone.join("o.png");
    let out = out.to_str().unwrap();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "generate",
            vec![
                "--raw-ids",
                "1,7,36,4",
                "--to",
                "image",
                "--quiet",
                "--out",
                out,
            ],
            "`out`",
        ),
        (
            "generate",
            vec![
                "--raw-ids",
                "1,7,36",
                "--to",
                "text",
                "--max-new-tokens",
                "2",
                "--json",
                out,
            ],
            "`json`",
        ),
        ("logits", vec!["--raw-ids", "1,7,36", "--out", out], "`out`"),
        (
            "decode",
            vec![
                "--codes", "1,2,3,4", "--height", "2", "--width", "2", "--out", out,
            ],
            "`out`",
        ),
    ];
    for (sub, args, arg) in cases {
        let o = run_model(dir.path(), sub, &args);
        assert_cli_error(&o, &[arg, "gone"], dir.path(), &[]);
    }
}

#[test]
fn raw_ids_outside_the_vocab() {
    let p = pipe();
    let req = Request::new()
        .raw_ids(vec![1, 999, 7])
        .params(greedy_text(2));
    match p.generate(req) {
        Err(e) => assert_invalid(&e, "ids", &["999", "64"]),
        Ok(_) => panic!("id 999 accepted"),
    }
    match p.last_logits(&[1, 64], &[]) {
        Err(e) => assert_invalid(&e, "ids", &["64"]),
        Ok(_) => panic!("id 64 accepted"),
    }
    let dir = tempfile::tempdir().unwrap();
    let o = run_model(
        dir.path(),
        "logits",
        &["--raw-ids", "1,999", "--out", "l.npy"],
    );
    assert_cli_error(&o, &["999"], dir.path(), &[]);
    let o = run_model(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            "1,999,4",
            "--to",
            "image",
            "--quiet",
            "--out",
            "o.png",
            "--json",
            "o.json",
        ],
    );
    assert_cli_error(&o, &["999"], dir.path(), &[]);
}

#[test]
fn placeholder_count_must_match_the_images() {
    let p = pipe();
    let img = any2any::imageops::load_image(&image_path()).unwrap();
    let mut short = image_prompt_ids();
    short.remove(5); // 15 placeholders
    let cases: [(Vec<u32>, Vec<ImageInput>, &str); 3] = [
        (short, vec![img.clone()], "15"),
        (
            image_prompt_ids(),
            vec![img.clone(), img.clone()],
            "2 image(s)",
        ),
        (image_prompt_ids(), vec![], "0 image(s)"),
    ];
    for (ids, images, needle) in cases {
        match p.last_logits(&ids, &images) {
            Err(e) => assert_invalid(&e, "image", &[needle, "placeholder"]),
            Ok(_) => panic!(
                "{} placeholders with {} images accepted",
                ids.len(),
                images.len()
            ),
        }
        let mut req = Request::new().raw_ids(ids.clone()).params(greedy_text(2));
        for i in &images {
            req = req.image(i.clone());
        }
        match p.generate(req) {
            Err(e) => assert_invalid(&e, "image", &[needle, "placeholder"]),
            Ok(_) => panic!("generate accepted a placeholder mismatch"),
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let img = image_path();
    let o = run_model(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            "1,6,6,7",
            "--image",
            img.to_str().unwrap(),
            "--to",
            "text",
            "--max-new-tokens",
            "2",
            "--out",
            "o.txt",
            "--json",
            "o.json",
        ],
    );
    assert_cli_error(
        &o,
        &["`image`", "2 image placeholder", "1 image(s)"],
        dir.path(),
        &[],
    );
}

#[test]
fn raw_image_of_the_wrong_size() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.png");
    image::RgbImage::from_pixel(20, 20, image::Rgb([200, 10, 10]))
        .save(&small)
        .unwrap();
    let p = pipe();
    let img = any2any::imageops::load_image(&small).unwrap();
    match p.last_logits(&image_prompt_ids(), &[img]) {
        Err(e) => assert_invalid(&e, "image", &["20×20", "32×32"]),
        Ok(_) => panic!("a 20×20 image passed as a raw 32×32 input"),
    }
    let o = run_model(
        dir.path(),
        "generate",
        &[
            "--raw-ids",
            &csv(&image_prompt_ids()),
            "--image",
            small.to_str().unwrap(),
            "--to",
            "text",
            "--max-new-tokens",
            "2",
            "--out",
            "o.txt",
            "--json",
            "o.json",
        ],
    );
    assert_cli_error(&o, &["`image`", "20×20"], dir.path(), &["small.png"]);
}

#[test]
fn decode_rejects_bad_codes_and_grids() {
    let p = pipe();
    let mut codes: Vec<u32> = vec![2, 5, 8, 5, 5, 5, 8, 5, 8, 5, 5, 5, 5, 8, 5, 10];
    assert!(p.decode_codes(&codes, 4, 4).is_ok());
    codes[15] = 16;
    match p.decode_codes(&codes, 4, 4) {
        Err(e) => assert_invalid(&e, "codes", &["16", "codebook"]),
        Ok(_) => panic!("code 16 accepted with a 16-entry codebook"),
    }
    match p.decode_codes(&codes[..15], 4, 4) {
        Err(e) => assert_invalid(&e, "codes", &["15", "4×4"]),
        Ok(_) => panic!("15 codes accepted for a 4×4 grid"),
    }
    let big = (u64::MAX / 2 + 2).to_string(); // × 2 wraps to 2 in usize arithmetic
    let cases: [(&str, &str, &str, &[&str]); 4] = [
        (
            "2,5,8,5,5,5,8,5,8,5,5,5,5,8,5,16",
            "4",
            "4",
            &["`codes`", "16"],
        ),
        ("2,5,8", "4", "4", &["`codes`", "3 codes", "4×4"]),
        ("1,2", "1", "1", &["`codes`", "2 codes"]),
        ("1,2", &big, "2", &["`codes`", "2 codes"]),
    ];
    for (codes, h, w, needles) in cases {
        let dir = tempfile::tempdir().unwrap();
        let o = run_model(
            dir.path(),
            "decode",
            &[
                "--codes", codes, "--height", h, "--width", w, "--out", "d.png",
            ],
        );
        assert_cli_error(&o, needles, dir.path(), &[]);
    }
}

#[test]
fn cancel_before_generate() {
    let p = pipe();
    let reqs = [
        Request::new()
            .raw_ids(vec![1, 7, 36])
            .want(Modality::Text)
            .params(greedy_text(4)),
        Request::new()
            .raw_ids(vec![1, 7, 36, 4])
            .want(Modality::Image),
    ];
    for req in reqs {
        let t = CancelToken::new();
        t.cancel();
        let mut steps = 0;
        let mut hooks = Hooks::new().cancel_token(t).on_progress(|_| steps += 1);
        match p.generate_with(req, &mut hooks) {
            Err(Error::Cancelled { step, .. }) => assert_eq!(step, 0),
            Err(other) => panic!("expected Cancelled, got {other:?}"),
            Ok(_) => panic!("generated despite a cancelled token"),
        }
        drop(hooks);
        assert_eq!(steps, 0, "progress reported after cancellation");
    }
}

#[test]
fn failed_json_write_removes_the_images_already_written() {
    let dir = tempfile::tempdir().unwrap();
    // --json names an existing directory: refused before the run (a directory is never
    // replaced), so no image is written and the directory stays as it was.
    std::fs::create_dir(dir.path().join("taken")).unwrap();
    let o = run_model(
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
            "p.png",
            "--json",
            "taken",
        ],
    );
    assert_cli_error(&o, &["taken"], dir.path(), &["taken"]);
    assert!(names(&dir.path().join("taken")).is_empty());
}
