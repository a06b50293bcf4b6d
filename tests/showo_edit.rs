//! The CLI's image-edit flags on the tiny Show-o fixture (`--mask`, `--extend`,
//! `--extend-offset`): the codes it keeps match the official modes' inputs, and bad flags or
//! families without edits are refused with the argument named. The edits themselves are tested
//! against the reference in `crates/any2any-showo/tests/edit.rs`.
mod common;

use common::{fixture_dir, fixture_json, u32s};
use serde_json::Value;

fn edit_parity() -> Value {
    fixture_json("showo-tiny", "edit_parity.json")
}

fn cli(cwd: &std::path::Path, model: &str, args: &[&str]) -> std::process::Output {
    let model = fixture_dir(model);
    std::process::Command::new(env!("CARGO_BIN_EXE_any2any"))
        .current_dir(cwd)
        .arg("generate")
        .arg("--model")
        .arg(&model)
        .args(args)
        .output()
        .expect("run any2any")
}

fn fixture_file(name: &str) -> String {
    fixture_dir("showo-tiny")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[track_caller]
fn cli_json(o: &std::process::Output, dir: &std::path::Path) -> Value {
    assert!(
        o.status.success(),
        "any2any failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&std::fs::read(dir.join("out.json")).unwrap()).unwrap()
}

#[test]
fn cli_inpaints_with_a_mask_and_extends() {
    let p = edit_parity();
    let dir = tempfile::tempdir().unwrap();
    let (img, mask) = (
        fixture_file("edit_image.png"),
        fixture_file("edit_mask.png"),
    );
    let common = [
        "--raw-ids",
        "17,42,8,63",
        "--image",
        &img,
        "--to",
        "image",
        "--steps",
        "3",
        "--out",
        "out.png",
        "--json",
        "out.json",
        "--quiet",
    ];
    let mut args = common.to_vec();
    args.extend(["--mask", &mask]);
    let j = cli_json(&cli(dir.path(), "showo-tiny", &args), dir.path());
    let seg = &j["segments"][0];
    assert_eq!(
        (seg["height"].as_u64(), seg["width"].as_u64()),
        (Some(4), Some(4))
    );
    let codes = u32s(&seg["codes"]);
    let known = u32s(&p["inpaint"]["image_codes"]);
    for (i, m) in u32s(&p["inpaint"]["mask_bool"]).iter().enumerate() {
        if *m == 0 {
            assert_eq!(codes[i], known[i], "kept code {i}");
        }
    }
    assert_eq!(image::open(dir.path().join("out.png")).unwrap().width(), 64);

    let mut args = common.to_vec();
    args.extend(["--extend", "right,right", "--extend-offset", "1"]);
    let j = cli_json(&cli(dir.path(), "showo-tiny", &args), dir.path());
    let seg = &j["segments"][0];
    assert_eq!(
        (seg["height"].as_u64(), seg["width"].as_u64()),
        (Some(4), Some(10))
    );
    assert_eq!(u32s(&seg["codes"]).len(), 40);
    // the left 4 - (2 - 1) = 3 columns of the image's codes are kept
    let codes = u32s(&seg["codes"]);
    for r in 0..4 {
        assert_eq!(
            &codes[r * 10..r * 10 + 3],
            &known[r * 4..r * 4 + 3],
            "row {r}"
        );
    }
    let png = image::open(dir.path().join("out.png")).unwrap();
    assert_eq!((png.width(), png.height()), (160, 64));
}

#[track_caller]
fn assert_cli_error(o: &std::process::Output, needles: &[&str], dir: &std::path::Path) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "stderr:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{err}"));
    for n in needles {
        assert!(line.contains(n), "`{n}` missing from: {line}");
    }
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "files left behind"
    );
}

#[test]
fn cli_refuses_bad_edit_flags_and_unsupported_families() {
    let dir = tempfile::tempdir().unwrap();
    let (img, mask) = (
        fixture_file("edit_image.png"),
        fixture_file("edit_mask.png"),
    );
    let other = fixture_file("image.png"); // 64×64: not the mask's size
    let base = [
        "--raw-ids",
        "17,42",
        "--to",
        "image",
        "--steps",
        "2",
        "--out",
        "o.png",
        "--quiet",
    ];
    let cases: Vec<(&str, Vec<&str>, Vec<&str>)> = vec![
        (
            "showo-tiny",
            vec!["--image", &img, "--extend", "left,sideways"],
            vec!["`extend`", "sideways"],
        ),
        (
            "showo-tiny",
            vec!["--image", &img, "--extend-offset", "1"],
            vec!["`extend-offset`"],
        ),
        (
            "showo-tiny",
            vec!["--image", &img, "--extend", "up", "--extend-offset", "5"],
            vec!["`extend-offset`"],
        ),
        (
            "showo-tiny",
            vec!["--image", &img, "--image", &img, "--mask", &mask],
            vec!["`mask`", "exactly one --image"],
        ),
        (
            "showo-tiny",
            vec!["--mask", &mask],
            vec!["`mask`", "exactly one --image"],
        ),
        (
            "showo-tiny",
            vec!["--image", &other, "--mask", &mask],
            vec!["`mask`", "80×72", "64×64"],
        ),
        (
            "showo-tiny",
            vec!["--image", &img, "--mask", &mask, "--extend", "up"],
            vec!["`mask`"],
        ),
        (
            "janus-tiny",
            vec!["--image", &img, "--mask", &mask],
            vec!["janus does not support inpainting"],
        ),
        (
            "janus-tiny",
            vec!["--image", &img, "--extend", "left"],
            vec!["janus does not support extrapolation"],
        ),
    ];
    for (model, extra, needles) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        assert_cli_error(&cli(dir.path(), model, &args), &needles, dir.path());
    }
}
