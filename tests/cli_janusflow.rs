//! The CLI contract on the tiny JanusFlow checkpoint (`tests/fixtures/janusflow-tiny`, VAE
//! inside as `vae/`), run as a user runs the binary: `inspect`, `logits --image`,
//! `generate --to image|text`, `--noise-normal` replay, and the named errors.

mod common;
use common::*;
use std::path::PathBuf;

fn dir() -> PathBuf {
    fixture_dir("janusflow-tiny")
}

#[test]
fn inspect_names_the_family_and_the_vae_component() {
    let t = tempfile::tempdir().unwrap();
    let o = run_cli(t.path(), &dir(), "inspect", &["--json"]);
    assert_ok(&o);
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["family"], "janusflow", "{j}");
    assert!(j.to_string().contains("vae"), "{j}");
}

#[test]
fn logits_with_an_image_match_the_reference() {
    let p = parity("janusflow-tiny");
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("l.npy");
    let img = dir().join("image.png");
    let o = run_cli(
        t.path(),
        &dir(),
        "logits",
        &[
            "--raw-ids",
            &csv(&u32s(&p["mmu_ids"])),
            "--image",
            img.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let (_, got) = read_npy_f32(&out);
    let err = max_abs_diff(&got, &f32s(&p["mmu_last_logits"]));
    assert!(err <= 1e-4, "logits differ by {err}");
}

#[test]
fn generate_image_with_replayed_noise_matches_the_reference_pixels() {
    let p = parity("janusflow-tiny");
    let t = tempfile::tempdir().unwrap();
    let z = t.path().join("z.npy");
    write_npy_f32(&z, &f32s(&p["t2i_initial_latent"]));
    let out = t.path().join("fox.png");
    let o = run_cli(
        t.path(),
        &dir(),
        "generate",
        &[
            "--prompt",
            "a red fox",
            "--to",
            "image",
            "--num",
            "2",
            "--steps",
            "4",
            "--cfg",
            "2",
            "--noise-normal",
            z.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    let want = u32s(&p["t2i_pixels"]);
    let mut got = Vec::new();
    for i in 0..2 {
        let img = image::open(t.path().join(format!("fox-{i}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(img.dimensions(), (64, 64));
        got.extend(img.into_raw().into_iter().map(u32::from));
    }
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    assert!(worst <= 1, "pixels differ by {worst} levels");
}

#[test]
fn generate_text_from_an_image_is_the_reference_greedy_answer() {
    let p = parity("janusflow-tiny");
    let t = tempfile::tempdir().unwrap();
    let img = dir().join("image.png");
    let out = t.path().join("a.txt");
    let o = run_cli(
        t.path(),
        &dir(),
        "generate",
        &[
            "--prompt",
            "What is in the image?",
            "--image",
            img.to_str().unwrap(),
            "--to",
            "text",
            "--max-new-tokens",
            "8",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&o);
    // the reference's greedy ids up to EOS, decoded by the fixture's tokenizer
    let tok = any2any::tokenizers::Tokenizer::from_file(dir().join("tokenizer.json")).unwrap();
    let ids = u32s(&p["mmu_greedy_ids"]);
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
            &["--noise-normal", short.to_str().unwrap()],
            &["noise-normal", "short.npy"],
        ),
        (&["--steps", "0"], &["steps"]),
        (&["--size", "40x40"], &["size", "16"]),
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
fn a_missing_vae_is_named_when_an_image_is_asked_for() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("jf");
    std::fs::create_dir(&m).unwrap();
    for f in std::fs::read_dir(dir()).unwrap() {
        let f = f.unwrap();
        if f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), m.join(f.file_name())).unwrap();
        }
    }
    let o = run_cli(
        t.path(),
        &m,
        "generate",
        &[
            "--offline",
            "--prompt",
            "hi",
            "--to",
            "text",
            "--max-new-tokens",
            "2",
        ],
    );
    assert_ok(&o);
    let o = run_cli(
        t.path(),
        &m,
        "generate",
        &["--offline", "--prompt", "a red fox", "--to", "image"],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("vae") && e.contains("--component vae="), "{e}");
    // --component vae=DIR brings it back
    let vae = dir().join("vae");
    let arg = format!("vae={}", vae.display());
    let o = run_cli(
        t.path(),
        &m,
        "generate",
        &[
            "--offline",
            "--component",
            &arg,
            "--prompt",
            "a red fox",
            "--to",
            "image",
            "--steps",
            "1",
        ],
    );
    assert_ok(&o);
}
