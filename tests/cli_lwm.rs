//! The CLI contract (`inspect`, `logits`, `generate --to text|image`, `--noise-uniform`, `convert`)
//! on the tiny LWM (tests/fixtures/lwm-tiny, made by the official LWM JAX code) in its JAX release
//! layout and after `any2any convert`: numbers against its parity.json.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// The reference's replayable uniforms (scripts/fixtures/make_lwm.py).
fn uniforms(n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|k| {
            let mut z = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 41) * 2 + 1) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

fn convert(cwd: &Path, out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_any2any"))
        .current_dir(cwd)
        .arg("convert")
        .arg(fixture_dir("lwm-tiny"))
        .arg("-o")
        .arg(out)
        .output()
        .expect("run any2any")
}

/// The contract on one model directory.
fn contract(model: &Path, layout: &str) {
    let p = parity("lwm-tiny");
    let d = tempfile::tempdir().unwrap();
    // inspect
    let o = run_cli(d.path(), model, "inspect", &["--json"]);
    assert_ok(&o);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = v.to_string();
    assert!(s.contains("\"lwm\"") && s.contains(layout), "{s}");
    assert!(s.contains("text→image") && s.contains("image→text"), "{s}");
    assert_eq!(v["image_size"], serde_json::json!([128, 128]), "{s}");

    // logits of the text prompt = the reference's lm_head logits
    let ids = csv(&u32s(&p["text_prompt"]));
    let o = run_cli(
        d.path(),
        model,
        "logits",
        &["--raw-ids", &ids, "--out", "l.npy"],
    );
    assert_ok(&o);
    let (shape, got) = read_npy_f32(&d.path().join("l.npy"));
    let (_, want) = read_npy_f32(&fixture_dir("lwm-tiny").join("lm_logits.npy"));
    assert_eq!(shape, [320]);
    let diff = max_abs_diff(&got, &want[..320]);
    assert!(diff <= 1e-4, "{layout}: logits differ by {diff}");

    // greedy text and image chat
    for (args, want) in [
        (vec!["--prompt", "Describe the sea"], &p["greedy"]["text"]),
        (
            vec![
                "--prompt",
                p["chat"]["question"].as_str().unwrap(),
                "--image",
                fixture_dir("lwm-tiny").join("image.png").to_str().unwrap(),
            ],
            &p["greedy"]["chat"],
        ),
    ] {
        let mut a = args.clone();
        a.extend([
            "--to",
            "text",
            "--temperature",
            "0",
            "--max-new-tokens",
            "8",
            "--quiet",
            "--json",
            "t.json",
        ]);
        let o = run_cli(d.path(), model, "generate", &a);
        assert_ok(&o);
        let j = read_json(&d.path().join("t.json"));
        assert_eq!(
            u32s(&segments(&j)[0]["ids"]),
            u32s(want),
            "{layout} {args:?}"
        );
    }

    // text→image under the reference's replayed Gumbel noise
    let c = &p["t2i"]["single"];
    let n = c["uniforms_drawn"].as_u64().unwrap() as usize;
    write_npy_f32(&d.path().join("u.npy"), &uniforms(n));
    let o = run_cli(
        d.path(),
        model,
        "generate",
        &[
            "--prompt",
            "a red cube",
            "--to",
            "image",
            "--noise-uniform",
            "u.npy",
            "--quiet",
            "--out",
            "x.png",
            "--json",
            "x.json",
        ],
    );
    assert_ok(&o);
    let j = read_json(&d.path().join("x.json"));
    let want = u32s(&c["tokens"][0]);
    assert_eq!(u32s(&segments(&j)[0]["codes"]), &want[..256], "{layout}");
    let got = image::open(d.path().join("x.png")).unwrap().to_rgb8();
    let want = image::open(fixture_dir("lwm-tiny").join("t2i.png"))
        .unwrap()
        .to_rgb8();
    let worst = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(&a, &b)| a.abs_diff(b))
        .max()
        .unwrap();
    assert!(worst <= 1, "{layout}: image differs by {worst} levels");
}

#[test]
fn cli_contract_on_the_jax_release() {
    contract(&fixture_dir("lwm-tiny"), "JAX release");
}

#[test]
fn cli_contract_after_convert() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("converted");
    let o = convert(d.path(), &out);
    assert_ok(&o);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    contract(&out, "converted");
}

#[test]
fn a_truncated_params_file_is_a_named_error() {
    let d = tempfile::tempdir().unwrap();
    copy_fixture_files("lwm-tiny", d.path());
    let p = d.path().join("params");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    let o = run_cli(d.path(), d.path(), "inspect", &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("params") && err.contains("record 13") && err.contains("vision_head/kernel"),
        "{err}"
    );
    // convert refuses it the same way, and a directory that is not a release
    let o = Command::new(env!("CARGO_BIN_EXE_any2any"))
        .args(["convert", d.path().to_str().unwrap(), "-o", "out"])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(!o.status.success() && stderr(&o).contains("record 13"));
    let o = Command::new(env!("CARGO_BIN_EXE_any2any"))
        .args([
            "convert",
            fixture_dir("emu3-tiny").to_str().unwrap(),
            "-o",
            "out",
        ])
        .current_dir(d.path())
        .output()
        .unwrap();
    assert!(
        !o.status.success() && stderr(&o).contains("LWM"),
        "{}",
        stderr(&o)
    );
}
