//! The CLI contract on the tiny Emu2-Gen checkpoint (`tests/fixtures/emu2-tiny`, the diffusers
//! layout of BAAI/Emu2-Gen), run as a user runs the binary: `inspect`, `logits --image`,
//! `generate --to image|text`, `--noise-normal` replay, and the named errors.

mod common;
use common::*;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    fixture_dir("emu2-tiny")
}

/// A copy of the fixture under `root`, `edit` applied to it.
fn copy_fixture(root: &Path, edit: impl FnOnce(&Path)) -> PathBuf {
    let m = root.join("emu2");
    for entry in walk(&dir()) {
        let rel = entry.strip_prefix(dir()).unwrap();
        let to = m.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    edit(&m);
    m
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn inspect_names_the_family_and_the_components() {
    let t = tempfile::tempdir().unwrap();
    let o = run_cli(t.path(), &dir(), "inspect", &["--json"]);
    assert_ok(&o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["family"], "emu2", "{j}");
    for c in ["multimodal_encoder", "unet", "vae", "scheduler"] {
        assert!(j.to_string().contains(c), "{c} not in {j}");
    }
}

#[test]
fn logits_with_an_image_match_the_reference() {
    let p = parity("emu2-tiny");
    let u = &p["understanding"]["image"];
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("l.npy");
    let img = dir().join("image.png");
    let o = run_cli(
        t.path(),
        &dir(),
        "logits",
        &[
            "--raw-ids",
            &csv(&u32s(&u["ids"])),
            "--image",
            img.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let (_, got) = read_npy_f32(&out);
    let err = max_abs_diff(&got, &f32s(&u["last_logits"]));
    assert!(err <= 1e-4, "logits differ by {err}");
}

#[test]
fn generate_image_with_replayed_noise_matches_the_reference_pixels() {
    let p = parity("emu2-tiny");
    let c = &p["t2i"];
    let t = tempfile::tempdir().unwrap();
    let z = t.path().join("z.npy");
    write_npy_f32(&z, &f32s(&c["initial_noise"]));
    let out = t.path().join("fox.png");
    let o = run_cli(
        t.path(),
        &dir(),
        "generate",
        &[
            "--prompt",
            c["prompt"].as_str().unwrap(),
            "--to",
            "image",
            "--steps",
            "3",
            "--cfg",
            "3",
            "--size",
            "16x16",
            "--noise-normal",
            z.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let got = image::open(&out).unwrap().to_rgb8();
    let want = image::open(dir().join("t2i.png")).unwrap().to_rgb8();
    assert_eq!(got.dimensions(), (16, 16));
    let worst = got
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "pixels differ by {worst} levels");
}

#[test]
fn generate_text_is_the_reference_greedy_answer() {
    let p = parity("emu2-tiny");
    let u = &p["understanding"]["text"];
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("a.txt");
    let o = run_cli(
        t.path(),
        &dir(),
        "generate",
        &[
            "--prompt",
            u["prompt"].as_str().unwrap(),
            "--to",
            "text",
            "--max-new-tokens",
            "6",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let tok =
        any2any::tokenizers::Tokenizer::from_file(dir().join("tokenizer/tokenizer.json")).unwrap();
    let ids = u32s(&u["greedy"]);
    let end = ids
        .iter()
        .position(|&i| i == 2)
        .map_or(ids.len(), |i| i + 1);
    let want = tok.decode(&ids[..end], true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().trim_end(),
        want.trim_end()
    );
}

#[test]
fn bad_inputs_are_named_errors() {
    let t = tempfile::tempdir().unwrap();
    let short = t.path().join("short.npy");
    write_npy_f32(&short, &[0.0; 10]);
    let base = ["--prompt", "a red fox", "--to", "image", "--steps", "1"];
    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--size", "16x16", "--noise-normal", short.to_str().unwrap()],
            &["noise-normal", "short.npy"],
        ),
        (&["--size", "16x16", "--steps", "0"], &["steps"]),
        (&["--size", "18x18"], &["size", "4"]),
    ];
    for (flags, needles) in cases {
        let mut args = base.to_vec();
        args.extend_from_slice(flags);
        let o = run_cli(t.path(), &dir(), "generate", &args);
        assert!(!o.status.success(), "{args:?} should fail");
        let e = stderr(&o);
        for n in needles {
            assert!(e.contains(n), "{args:?}: `{n}` not in {e}");
        }
    }
}

#[test]
fn a_missing_component_or_a_unet_config_off_its_weights_is_named() {
    let t = tempfile::tempdir().unwrap();
    let m = copy_fixture(t.path(), |m| {
        std::fs::remove_dir_all(m.join("unet")).unwrap()
    });
    let o = run_cli(t.path(), &m, "inspect", &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("component `unet`") && e.contains("--component unet="),
        "{e}"
    );

    let t = tempfile::tempdir().unwrap();
    let m = copy_fixture(t.path(), |m| {
        let p = m.join("unet/config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        c["cross_attention_dim"] = 48.into();
        std::fs::write(&p, c.to_string()).unwrap();
    });
    let o = run_cli(t.path(), &m, "inspect", &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("attn2") || e.contains("shape"), "{e}");
}

fn bench(args: &[&str], limit: Option<&str>) -> std::process::Output {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_any2any"));
    c.arg("bench").args(args);
    if let Some(l) = limit {
        c.env("ANY2ANY_MEMORY_LIMIT", l);
    }
    c.output().unwrap()
}

/// `bench --size emu2-tiny` runs the production loops (regression, UNet steps, VAE decode) and
/// reports them; the parameter counts are those of the fixture (checked part by part in
/// `src/bench.rs`).
#[test]
fn bench_runs_the_tiny_shapes() {
    let t = tempfile::tempdir().unwrap();
    let j = t.path().join("b.json");
    let js = j.to_str().unwrap();
    let o = bench(
        &[
            "--size",
            "emu2-tiny",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--json",
            js,
        ],
        None,
    );
    assert_ok(&o);
    let rows = read_json(&j);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in rows {
        assert_eq!(r["unet_steps_measured"], 2, "{r}");
        assert_eq!(r["latent"], 8, "{r}");
        assert_eq!(r["regress_rows"], if r["cfg"] == true { 2 } else { 1 });
        assert!(r["unet_step_ms_mean"].as_f64().unwrap() > 0.0, "{r}");
    }
}

/// The real size is refused before anything is allocated when its weights do not fit, naming
/// what it needs and whether one 80 GB GPU holds it in bf16.
#[test]
fn bench_refuses_the_real_size_naming_the_memory() {
    let o = bench(&["--size", "emu2-gen", "--dtype", "bf16"], Some("16G"));
    assert!(!o.status.success());
    let e = stderr(&o);
    for want in [
        "emu2-gen needs 65.5 GiB of weights in BF16",
        "LLM 32.53 B",
        "UNet 2.53 B",
        "EVA-CLIP tower (4.35 B)",
        "73.6 GiB in BF16, which fits one 80 GB GPU",
    ] {
        assert!(e.contains(want), "`{want}` not in {e}");
    }
}

/// `--num-beams 3` gives the answer of transformers' beam search (3 beams, length penalty −1).
#[test]
fn generate_text_with_beams_is_the_reference_beam_answer() {
    let p = parity("emu2-tiny");
    let b = &p["beams"]["text"];
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("a.txt");
    let nb = b["num_beams"].to_string();
    let max_new = b["max_new_tokens"].to_string();
    let o = run_cli(
        t.path(),
        &dir(),
        "generate",
        &[
            "--prompt",
            b["prompt"].as_str().unwrap(),
            "--to",
            "text",
            "--num-beams",
            &nb,
            "--max-new-tokens",
            &max_new,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let tok =
        any2any::tokenizers::Tokenizer::from_file(dir().join("tokenizer/tokenizer.json")).unwrap();
    let want = tok.decode(&u32s(&b["ids"]), true).unwrap();
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().trim_end(),
        want.trim_end()
    );
}

/// A `tokenizer/` with the SentencePiece `tokenizer.model` only (a slow `LlamaTokenizer`'s
/// save) is a named error saying how to write `tokenizer.json` from it.
#[test]
fn a_sentencepiece_only_tokenizer_says_how_to_convert_it() {
    let t = tempfile::tempdir().unwrap();
    let m = copy_fixture(t.path(), |m| {
        std::fs::remove_file(m.join("tokenizer/tokenizer.json")).unwrap();
        std::fs::write(m.join("tokenizer/tokenizer.model"), b"not read").unwrap();
    });
    let o = run_cli(t.path(), &m, "inspect", &[]);
    assert!(!o.status.success());
    let e = stderr(&o);
    for want in ["tokenizer.model", "save_pretrained", "tokenizer.json"] {
        assert!(e.contains(want), "`{want}` not in {e}");
    }
}
