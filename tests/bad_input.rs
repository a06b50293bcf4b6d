//! The permanent bad-input suite (issue 10): over every family fixture in `tests/fixtures/`,
//! corrupt inputs built here (weights, torch pickles, configs, tokenizers, images, masks,
//! arguments, output targets) must give a typed error naming the culprit: no panic, no abort,
//! no silent garbage (NaN/Inf are errors), no file left behind or replaced. The fast subset
//! runs in CI; `scripts/bad_input_corpus.sh` runs a bigger corpus through the CLI and prints
//! a table.

mod common;
use any2any::candle_core::{safetensors, DType, Device, Tensor};
use any2any::{Error, GenerationParams, LoadOptions, Modality, Pipeline, Request};
use common::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Every fixture checkpoint, with whether it needs an image for a text answer (Show-o's
/// understanding) and whether its weights are safetensors (not Meta's raw `.pth`).
const FIXTURES: &[(&str, bool, bool)] = &[
    ("janus-tiny", false, true),
    ("chameleon-tiny", false, true),
    ("chameleon-swin-tiny", false, true),
    ("chameleon-raw-tiny", false, false),
    ("emu3-tiny", false, true),
    ("lumina-tiny", false, true),
    ("showo-tiny", true, true),
    ("janusflow-tiny", false, true),
    ("transfusion-tiny", false, true),
    ("transfusion-vae-tiny", false, true),
    ("emu2-tiny", false, true),
];

/// A scratch copy of a fixture that a case may break.
fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let dst = t.path().join(name);
    copy_dir(&fixture_dir(name), &dst);
    (t, dst)
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let to = dst.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &to);
        } else {
            std::fs::copy(&p, &to).unwrap();
        }
    }
}

/// Runs `f`, failing the test on a panic (with the case named).
fn no_panic<T>(case: &str, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| panic!("{case}: panicked"))
}

fn load(dir: &Path) -> any2any::Result<Pipeline> {
    Pipeline::load(dir.to_str().unwrap(), LoadOptions::default())
}

/// A short greedy text request the fixture serves.
fn text_request(name: &str, needs_image: bool) -> Request {
    let mut r = Request::new().raw_ids(vec![1, 2, 3]);
    if needs_image {
        r = r.image(fixture_image(name, "image.png"));
    }
    r.want(Modality::Text).params(GenerationParams {
        temperature: Some(0.0),
        max_new_tokens: Some(2),
        ..Default::default()
    })
}

/// Asserts `r` is an error whose message contains every needle; returns it.
#[track_caller]
fn expect_err<T>(case: &str, r: any2any::Result<T>, needles: &[&str]) -> Error {
    let e = match r {
        Ok(_) => panic!("{case}: expected an error, got success"),
        Err(e) => e,
    };
    let s = e.to_string();
    for n in needles {
        assert!(s.contains(n), "{case}: error does not name `{n}`: {s}");
    }
    assert!(!matches!(e, Error::Candle(_)), "{case}: untyped error: {s}");
    e
}

/// Every `*.json` config of a checkpoint (root and component folders).
fn config_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(config_files(&p));
        } else if p.extension().is_some_and(|x| x == "json")
            && !p.to_string_lossy().contains("tokenizer")
            && !p.ends_with("parity.json")
            && !p.ends_with("edit_parity.json")
        {
            out.push(p);
        }
    }
    out
}

/// Sets `key` to `value` wherever it occurs in the checkpoint's configs (nested sections
/// included); returns how many places were changed.
fn set_everywhere(dir: &Path, key: &str, value: &serde_json::Value) -> usize {
    fn walk(v: &mut serde_json::Value, key: &str, value: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Object(m) => {
                let mut n = 0;
                if let Some(slot) = m.get_mut(key) {
                    *slot = value.clone();
                    n += 1;
                }
                n + m.values_mut().map(|c| walk(c, key, value)).sum::<usize>()
            }
            _ => 0,
        }
    }
    let mut n = 0;
    for p in config_files(dir) {
        let mut v: serde_json::Value = read_json(&p);
        let k = walk(&mut v, key, value);
        if k > 0 {
            std::fs::write(&p, serde_json::to_vec(&v).unwrap()).unwrap();
            n += k;
        }
    }
    n
}

/// Rewrites the tensor of `file` whose name ends with `suffix` through `f`; false when the
/// file has none.
fn edit_tensor(file: &Path, suffix: &str, f: impl Fn(&Tensor) -> Tensor) -> bool {
    let mut map: HashMap<String, Tensor> = safetensors::load(file, &Device::Cpu).unwrap();
    let Some(name) = map.keys().find(|k| k.ends_with(suffix)).cloned() else {
        return false;
    };
    let t = f(&map[&name]);
    map.insert(name, t);
    safetensors::save(&map, file).unwrap();
    true
}

fn safetensor_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(safetensor_files(&p));
        } else if p.extension().is_some_and(|x| x == "safetensors") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The fixture's (first) weight file, where a corruption is planted.
fn weights_file(name: &str, dir: &Path) -> PathBuf {
    match name {
        "chameleon-raw-tiny" => dir.join("models/7b/consolidated.pth"),
        // Emu2-Gen: the LM and vision tower are the sharded `multimodal_encoder` component
        "emu2-tiny" => dir.join("multimodal_encoder/model.bf16-00001-of-00002.safetensors"),
        _ => dir.join("model.safetensors"),
    }
}

/// The name of the fixture's text head (the tensor that makes the text logits).
fn head_tensor(name: &str) -> &'static str {
    match name {
        "janusflow-tiny" => "language_model.lm_head.weight",
        "emu2-tiny" => "model.decoder.lm.lm_head.weight",
        "transfusion-tiny" | "transfusion-vae-tiny" => "to_text_logits.weight",
        _ => "lm_head.weight",
    }
}

/// Whether the family decodes a continuous latent with a VAE (no code decoder to call).
fn latent_family(name: &str) -> bool {
    matches!(
        name,
        "janusflow-tiny" | "emu2-tiny" | "transfusion-vae-tiny"
    )
}

fn nan_like(t: &Tensor) -> Tensor {
    (t.ones_like().unwrap() * f64::NAN).unwrap()
}

#[test]
fn corrupt_weights_are_typed_errors_naming_the_file() {
    for &(name, _, st) in FIXTURES {
        let (_t, dir) = scratch(name);
        let _ = st;
        let weights = weights_file(name, &dir);
        let len = std::fs::metadata(&weights).unwrap().len();
        // truncated to half, then to a few bytes, then garbage of the same size
        for (how, bytes) in [
            (
                "truncated",
                std::fs::read(&weights).unwrap()[..len as usize / 2].to_vec(),
            ),
            ("stub", b"\x00\x01".to_vec()),
            ("garbage", vec![0x5a; len as usize]),
        ] {
            std::fs::write(&weights, &bytes).unwrap();
            let case = format!("{name}: {how} weights");
            let e = no_panic(&case, || load(&dir));
            let file = weights.file_name().unwrap().to_str().unwrap();
            let e = expect_err(&case, e, &[file]);
            assert!(matches!(e, Error::WeightFile { .. }), "{case}: {e:?}");
        }
    }
}

#[test]
fn integer_weights_are_refused_by_name() {
    for &(name, _, st) in FIXTURES.iter().filter(|f| f.2) {
        let _ = st;
        let (_t, dir) = scratch(name);
        let file = weights_file(name, &dir);
        let head = head_tensor(name);
        assert!(edit_tensor(&file, head, |t| t
            .to_dtype(DType::I64)
            .unwrap()));
        let case = format!("{name}: I64 {head}");
        let e = no_panic(&case, || load(&dir));
        let fname = file.file_name().unwrap().to_str().unwrap();
        let e = expect_err(&case, e, &[head, "I64", fname]);
        assert!(matches!(e, Error::WeightFile { .. }), "{case}: {e:?}");
    }
}

#[test]
fn nan_weights_are_errors_naming_the_stage_not_garbage() {
    for &(name, needs_image, _) in FIXTURES.iter().filter(|f| f.2) {
        // in the language model head: the text logits
        let (_t, dir) = scratch(name);
        assert!(edit_tensor(
            &weights_file(name, &dir),
            head_tensor(name),
            nan_like
        ));
        let pipe = load(&dir).unwrap();
        let case = format!("{name}: NaN lm_head");
        let r = no_panic(&case, || pipe.generate(text_request(name, needs_image)));
        let e = expect_err(&case, r, &["NaN", "text tokens"]);
        assert!(matches!(e, Error::NonFinite { .. }), "{case}: {e:?}");
        // in the image decoder: the decoded pixels
        let (_t, dir) = scratch(name);
        let edited = safetensor_files(&dir)
            .iter()
            .any(|f| edit_tensor(f, "decoder.conv_out.bias", nan_like));
        if !edited {
            continue; // no image decoder (swin-norm Chameleon)
        }
        let pipe = load(&dir).unwrap();
        let case = format!("{name}: NaN decoder");
        let r = if latent_family(name) {
            // the VAE's output: one image through the whole flow / UNet loop
            let req = Request::new()
                .text("a")
                .want(Modality::Image)
                .params(GenerationParams {
                    steps: Some(1),
                    ..Default::default()
                });
            no_panic(&case, || pipe.generate(req)).map(|_| ())
        } else {
            let (gh, gw) = pipe.info().image_tokens.unwrap();
            no_panic(&case, || pipe.decode_codes(&vec![0; gh * gw], gh, gw)).map(|_| ())
        };
        let e = expect_err(&case, r, &["decoded pixels"]);
        assert!(matches!(e, Error::NonFinite { .. }), "{case}: {e:?}");
    }
}

#[test]
fn bad_config_values_name_the_file_and_field() {
    use serde_json::json;
    let cases: &[(&str, serde_json::Value, &str)] = &[
        (
            "max_position_embeddings",
            json!(1_000_000_000_000u64),
            "max_position_embeddings",
        ),
        (
            "max_position_embeddings",
            json!(0),
            "max_position_embeddings",
        ),
        ("rms_norm_eps", json!(-1.0), "eps"),
        ("layer_norm_eps", json!(-1.0), "eps"),
        ("rope_theta", json!(0.0), "rope_theta"),
        ("vocab_size", json!(0), "vocab_size"),
    ];
    for &(name, _, _) in FIXTURES {
        for (key, value, needle) in cases {
            let (_t, dir) = scratch(name);
            if set_everywhere(&dir, key, value) == 0 {
                continue; // the family does not spell this field
            }
            let case = format!("{name}: {key} = {value}");
            let e = no_panic(&case, || load(&dir));
            let e = expect_err(&case, e, &[needle]);
            assert!(
                matches!(e, Error::Config { .. } | Error::ShapeMismatch { .. }),
                "{case}: {e:?}"
            );
        }
    }
}

#[test]
fn family_specific_bad_values_name_the_field() {
    use serde_json::json;
    let cases: &[(&str, &str, serde_json::Value, &str)] = &[
        (
            "emu3-tiny",
            "channel_multiplier",
            json!([]),
            "channel_multiplier",
        ),
        ("showo-tiny", "num_vq_tokens", json!(0), "num_vq_tokens"),
        ("chameleon-tiny", "resolution", json!(0), "resolution"),
        ("lumina-tiny", "architectures", json!([]), "architectures"),
        (
            "lumina-tiny",
            "mask_image_logits",
            json!("yes"),
            "mask_image_logits",
        ),
        ("janus-tiny", "image_std", json!([0, 0, 0]), "image_std"),
        ("chameleon-tiny", "image_std", json!([0, 0, 0]), "image_std"),
        ("janus-tiny", "architectures", json!([]), "architectures"),
        ("emu3-tiny", "architectures", json!([]), "architectures"),
        ("showo-tiny", "architectures", json!([]), "architectures"),
        ("chameleon-swin-tiny", "swin_norm", json!(1), "swin_norm"),
        ("emu3-tiny", "image_std", json!([0, 0, 0]), "image_std"),
        (
            "emu3-tiny",
            "min_pixels",
            json!(1_000_000_000u64),
            "min_pixels",
        ),
    ];
    for (name, key, value, needle) in cases {
        let (_t, dir) = scratch(name);
        assert!(set_everywhere(&dir, key, value) > 0, "{name} has no {key}");
        let case = format!("{name}: {key} = {value}");
        let e = no_panic(&case, || load(&dir));
        expect_err(&case, e, &[needle]);
    }
}

#[test]
fn non_object_configs_are_refused_naming_the_file() {
    for &(name, _, _) in FIXTURES {
        for file in [
            "preprocessor_config.json",
            "processor_config.json",
            "generation_config.json",
        ] {
            let (_t, dir) = scratch(name);
            if !dir.join(file).is_file() {
                continue;
            }
            std::fs::write(dir.join(file), "[]").unwrap();
            let case = format!("{name}: {file} = []");
            let e = no_panic(&case, || load(&dir));
            let e = expect_err(&case, e, &[file, "JSON object"]);
            assert!(matches!(e, Error::Config { .. }), "{case}: {e:?}");
        }
        // config.json itself: not JSON, then not an object
        let (_t, dir) = scratch(name);
        let Some(cfg) = [dir.join("config.json"), dir.join("models/7b/params.json")]
            .into_iter()
            .find(|p| p.is_file())
        else {
            continue;
        };
        for bad in ["{not json", "[]"] {
            std::fs::write(&cfg, bad).unwrap();
            let case = format!("{name}: config = {bad}");
            let e = no_panic(&case, || load(&dir));
            expect_err(&case, e, &[cfg.file_name().unwrap().to_str().unwrap()]);
        }
    }
}

#[test]
fn corrupt_tokenizers_are_typed_errors() {
    for &(name, _, _) in FIXTURES {
        let (_t, dir) = scratch(name);
        let Some(tok) = [
            dir.join("tokenizer.json"),
            dir.join("tokenizer/text_tokenizer.json"),
        ]
        .into_iter()
        .find(|p| p.is_file()) else {
            continue;
        };
        std::fs::write(&tok, "{\"model\": 3}").unwrap();
        let case = format!("{name}: corrupt tokenizer");
        let e = no_panic(&case, || load(&dir));
        let e = expect_err(&case, e, &["tokenizer"]);
        // tokenizers' own error, or (Meta's raw layout, read for its vocabulary) a config error
        // naming the file
        assert!(
            matches!(e, Error::Tokenizer(_) | Error::Config { .. }),
            "{case}: {e:?}"
        );
    }
}

#[test]
fn shard_names_that_escape_the_folder_are_refused() {
    // (Emu2-Gen's shards sit in its `multimodal_encoder` component, read by the same lookup.)
    for &(name, _, _) in FIXTURES.iter().filter(|f| f.2 && f.0 != "emu2-tiny") {
        for shard in [
            "../../etc/passwd",
            "/etc/passwd",
            "sub/model.safetensors",
            "..",
        ] {
            let (t, dir) = scratch(name);
            std::fs::rename(
                dir.join("model.safetensors"),
                t.path().join("model.safetensors"),
            )
            .unwrap();
            let index = serde_json::json!({"weight_map": {"a": shard}});
            std::fs::write(
                dir.join("model.safetensors.index.json"),
                serde_json::to_vec(&index).unwrap(),
            )
            .unwrap();
            let case = format!("{name}: shard {shard}");
            let e = no_panic(&case, || load(&dir));
            let e = expect_err(&case, e, &[shard, "model.safetensors.index.json"]);
            assert!(matches!(e, Error::Config { .. }), "{case}: {e:?}");
        }
    }
}

#[test]
fn oversized_arguments_are_refused_before_anything_runs() {
    let big = |p: GenerationParams| Request::new().raw_ids(vec![1, 2]).params(p);
    for &(name, needs_image, _) in FIXTURES {
        let pipe = load(&fixture_dir(name)).unwrap();
        let cases: Vec<(&str, Request)> = vec![
            (
                "num",
                text_request(name, needs_image).num_outputs(1_000_000),
            ),
            ("num", text_request(name, needs_image).num_outputs(0)),
            (
                "max-new-tokens",
                big(GenerationParams {
                    max_new_tokens: Some(1_000_000_000_000),
                    ..Default::default()
                })
                .want(Modality::Text),
            ),
            (
                "steps",
                big(GenerationParams {
                    steps: Some(1_000_000_000),
                    ..Default::default()
                })
                .want(Modality::Image),
            ),
            (
                "size",
                big(GenerationParams {
                    size: Some((1 << 20, 1 << 20)),
                    ..Default::default()
                })
                .want(Modality::Image),
            ),
        ];
        for (arg, req) in cases {
            let case = format!("{name}: oversized {arg}");
            let r = no_panic(&case, || pipe.generate(req));
            let e = expect_err(&case, r, &[&format!("`{arg}`")]);
            assert!(matches!(e, Error::InvalidArgument { .. }), "{case}: {e:?}");
        }
    }
}

#[test]
fn flags_a_family_does_not_use_are_refused_by_name() {
    for &(name, needs_image, _) in FIXTURES {
        let pipe = load(&fixture_dir(name)).unwrap();
        let caps = pipe.backend().capabilities();
        let req = text_request(name, needs_image);
        let dir = any2any::backend::direction_of(&req);
        let used = &caps.directions.iter().find(|d| d.0 == dir).unwrap().1;
        for p in [
            any2any::backend::Param::Steps,
            any2any::backend::Param::Cfg,
            any2any::backend::Param::Size,
            any2any::backend::Param::ImageTopK,
            any2any::backend::Param::NegativePrompt,
        ] {
            if used.contains(&p) {
                continue;
            }
            let mut params = req.params.clone();
            match p {
                any2any::backend::Param::Steps => params.steps = Some(3),
                any2any::backend::Param::Cfg => params.cfg = Some(2.0),
                any2any::backend::Param::Size => params.size = Some((16, 16)),
                any2any::backend::Param::ImageTopK => params.image_top_k = Some(3),
                _ => params.negative_prompt = Some("x".into()),
            }
            let case = format!("{name}: unused --{}", p.name());
            let r = no_panic(&case, || pipe.generate(req.clone().params(params)));
            expect_err(&case, r, &[&format!("`{}`", p.name()), "does not use it"]);
        }
    }
}

/// Runs the CLI with `args` after `generate --model <fixture>`.
fn cli(name: &str, cwd: &Path, args: &[&str]) -> std::process::Output {
    run_cli(cwd, &fixture_dir(name), "generate", args)
}

#[test]
fn cli_bad_images_masks_and_numbers_name_the_culprit() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("empty.png"), b"").unwrap();
    std::fs::write(d.join("text.png"), b"hello, not an image").unwrap();
    let png = std::fs::read(fixture_dir("janus-tiny").join("image.png")).unwrap();
    std::fs::write(d.join("cut.png"), &png[..png.len() / 3]).unwrap();
    // a decompression bomb: a valid PNG header claiming 20000 × 20000 pixels
    let bomb = image::RgbImage::new(1, 1);
    let mut bytes = Vec::new();
    bomb.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    bytes[16..20].copy_from_slice(&20000u32.to_be_bytes());
    bytes[20..24].copy_from_slice(&20000u32.to_be_bytes());
    std::fs::write(d.join("bomb.png"), &bytes).unwrap();
    image::RgbImage::new(3, 5).save(d.join("mask.png")).unwrap();
    for &(name, _, _) in FIXTURES {
        let base = ["--raw-ids", "1,2,3", "--quiet", "--out", "o.png"];
        let mut cases: Vec<(Vec<&str>, &str)> = vec![
            (vec!["--to", "text", "--image", "empty.png"], "empty.png"),
            (vec!["--to", "text", "--image", "text.png"], "text.png"),
            (vec!["--to", "text", "--image", "cut.png"], "cut.png"),
            (vec!["--to", "text", "--image", "bomb.png"], "bomb.png"),
            (
                vec!["--to", "text", "--image", "missing.png"],
                "missing.png",
            ),
            (vec!["--to", "text", "--top-k", "-1"], "--top-k"),
            (vec!["--to", "text", "--num", "-3"], "--num"),
            (vec!["--to", "text", "--num", "0"], "`num`"),
            (
                vec!["--to", "text", "--max-new-tokens", "-1"],
                "--max-new-tokens",
            ),
            (vec!["--to", "text", "--temperature", "-1"], "`temperature`"),
        ];
        cases.push((
            vec![
                "--to", "image", "--image", "mask.png", "--mask", "mask.png", "--extend", "left",
            ],
            "`mask`",
        ));
        for (args, needle) in cases {
            let all: Vec<&str> = base.iter().copied().chain(args.iter().copied()).collect();
            let o = cli(name, d, &all);
            let err = stderr(&o);
            let case = format!("{name}: {args:?}");
            assert_eq!(
                o.status.code(),
                Some(if needle.starts_with("--") { 2 } else { 1 }),
                "{case}: {err}"
            );
            assert!(
                err.contains(needle),
                "{case}: does not name {needle}: {err}"
            );
            assert!(!err.contains("panicked"), "{case}: {err}");
            assert!(!d.join("o.png").exists(), "{case}: left an output");
        }
    }
}

#[cfg(unix)]
#[test]
fn cli_output_targets_are_never_replaced() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    std::fs::write(d.join("victim.txt"), b"keep").unwrap();
    std::os::unix::fs::symlink(d.join("victim.txt"), d.join("link.png")).unwrap();
    std::fs::create_dir(d.join("dir.png")).unwrap();
    let fifo = d.join("fifo.png");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let before = names(d);
    for &(name, needs_image, _) in FIXTURES {
        let image = fixture_dir(name).join("image.png");
        let image = image.to_str().unwrap();
        for (flag, target, kind) in [
            ("--out", "link.png", "symbolic link"),
            ("--out", "dir.png", "directory"),
            ("--out", "fifo.png", "FIFO"),
            ("--json", "link.png", "symbolic link"),
            ("--json", "/dev/null", "device"),
            ("--out", "nodir/x.txt", "does not exist"),
        ] {
            let mut args = vec![
                "--raw-ids",
                "1,2,3",
                "--to",
                "text",
                "--quiet",
                flag,
                target,
            ];
            if needs_image {
                args.extend(["--image", image]);
            }
            let o = cli(name, d, &args);
            let err = stderr(&o);
            let case = format!("{name}: {flag} {target}");
            assert_eq!(o.status.code(), Some(1), "{case}: {err}");
            assert!(
                err.contains(kind) && err.contains(&flag[2..]),
                "{case}: {err}"
            );
        }
    }
    assert_eq!(names(d), before, "a file was left or removed");
    assert_eq!(std::fs::read(d.join("victim.txt")).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(d.join("link.png"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn a_failed_run_leaves_no_file_and_keeps_the_old_one() {
    // an existing regular output is kept when the run fails (here: NaN logits)
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    let (_m, model) = scratch("janus-tiny");
    assert!(edit_tensor(
        &model.join("model.safetensors"),
        "lm_head.weight",
        nan_like
    ));
    std::fs::write(d.join("old.txt"), b"old").unwrap();
    let o = run_cli(
        d,
        &model,
        "generate",
        &[
            "--raw-ids",
            "1,2",
            "--to",
            "text",
            "--quiet",
            "--out",
            "old.txt",
            "--json",
            "j.json",
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("NaN"), "{err}");
    assert_eq!(std::fs::read(d.join("old.txt")).unwrap(), b"old");
    assert_eq!(names(d), vec!["old.txt".to_string()]);
}

/// A UNet image too large for memory is refused before its attention scores are allocated
/// (before this guard, Emu2's tiny UNet asked the allocator for 128 GiB at 1024² and aborted).
#[test]
fn unet_attention_beyond_memory_is_refused_not_aborted() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("big.png");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_any2any"))
        .current_dir(t.path())
        .env("ANY2ANY_MEMORY_LIMIT", "1G")
        .args(["generate", "--model"])
        .arg(fixture_dir("emu2-tiny"))
        .args([
            "--prompt",
            "a",
            "--to",
            "image",
            "--size",
            "1024x1024",
            "--steps",
            "1",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(!o.status.success(), "exit 0 on an oversized UNet image");
    assert!(
        err.contains("UNet self-attention") && err.contains("size"),
        "error does not name the stage and `size`: {err}"
    );
    assert!(!out.exists(), "a refused run left {}", out.display());
}
