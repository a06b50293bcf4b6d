//! Speculative Jacobi decoding on every AR image family's tiny fixture: greedy gives the codes
//! of plain decoding (one image and a batch of two), the same seed gives the same bytes, the
//! families without an AR image loop refuse the flag by name.

mod common;
use any2any::{
    DecodeStats, Generated, GenerationParams, Hooks, LoadOptions, Modality, Pipeline, Request,
    Speculative,
};
use common::*;

const AR: [&str; 4] = ["janus-tiny", "chameleon-tiny", "lumina-tiny", "emu3-tiny"];

fn load(name: &str) -> Pipeline {
    Pipeline::load(fixture_dir(name).to_str().unwrap(), LoadOptions::default()).unwrap()
}

/// The image codes of `n` outputs of one prompt, and the loop's counters.
fn codes(
    pipe: &Pipeline,
    params: &GenerationParams,
    n: usize,
) -> (Vec<Vec<u32>>, Vec<any2any::image::RgbImage>, DecodeStats) {
    let req = Request::new()
        .text("a red cube on a blue floor")
        .want(Modality::Image)
        .params(params.clone())
        .num_outputs(n);
    let mut hooks = Hooks::new();
    let outs = pipe.generate_batch(&[req], &mut hooks).unwrap();
    let mut codes = Vec::new();
    let mut images = Vec::new();
    for o in &outs {
        for s in &o.segments {
            if let Generated::Image {
                codes: c, image, ..
            } = s
            {
                codes.push(c.clone().expect("codes"));
                images.push(image.clone());
            }
        }
    }
    assert_eq!(codes.len(), n);
    (codes, images, hooks.stats)
}

fn spec(s: &str) -> Option<Speculative> {
    Some(s.parse().unwrap())
}

#[test]
fn greedy_speculation_gives_the_plain_codes_on_every_ar_family() {
    for name in AR {
        let pipe = load(name);
        for n in [1, 2] {
            let greedy = GenerationParams {
                temperature: Some(0.0),
                ..Default::default()
            };
            let (plain, _, ps) = codes(&pipe, &greedy, n);
            assert_eq!(ps.drafted, 0);
            for s in ["jacobi:6", "sjd:3"] {
                let p = GenerationParams {
                    speculative: spec(s),
                    ..greedy.clone()
                };
                let (fast, _, ss) = codes(&pipe, &p, n);
                assert_eq!(fast, plain, "{name} {s} × {n}");
                assert!(ss.drafted > 0, "{name} {s}: {ss:?}");
                assert!(ss.forwards <= ps.forwards, "{name} {s}: {ss:?} vs {ps:?}");
            }
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_bytes() {
    for name in AR {
        let pipe = load(name);
        let p = |seed| GenerationParams {
            speculative: spec("jacobi:5"),
            seed,
            ..Default::default()
        };
        let (a, ia, sa) = codes(&pipe, &p(3), 1);
        let (b, ib, _) = codes(&pipe, &p(3), 1);
        assert_eq!((a, ia), (b, ib), "{name}");
        assert!(sa.drafted > 0, "{name}: {sa:?}");
    }
}

#[test]
fn families_without_an_ar_image_loop_refuse_the_flag_by_name() {
    let p = GenerationParams {
        speculative: spec("jacobi"),
        ..Default::default()
    };
    let req = |want| Request::new().text("a cube").want(want).params(p.clone());
    let err = load("showo-tiny")
        .generate(req(Modality::Image))
        .unwrap_err();
    assert!(err.to_string().contains("speculative"), "{err}");
    // the AR families take it for images only
    let err = load("chameleon-tiny")
        .generate(req(Modality::Text))
        .unwrap_err();
    assert!(err.to_string().contains("speculative"), "{err}");
    let bad = GenerationParams {
        speculative: Some(Speculative {
            window: 1,
            reuse: true,
        }),
        ..Default::default()
    };
    let err = load("janus-tiny")
        .generate(
            Request::new()
                .text("a cube")
                .want(Modality::Image)
                .params(bad),
        )
        .unwrap_err();
    assert!(err.to_string().contains("speculative"), "{err}");
}

#[test]
fn the_cli_flag_reports_its_passes_and_bad_values_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture_dir("emu3-tiny");
    let o = run_cli(
        dir.path(),
        &model,
        "generate",
        &[
            "--prompt",
            "a cube",
            "--to",
            "image",
            "--out",
            "a.png",
            "--speculative",
            "jacobi:4",
        ],
    );
    assert_ok(&o);
    assert!(dir.path().join("a.png").is_file());
    assert!(
        stderr(&o).contains("speculative jacobi:4:") && stderr(&o).contains("drafts accepted"),
        "{}",
        stderr(&o)
    );
    for bad in ["foo", "jacobi:1", "sjd:x"] {
        let o = run_cli(
            dir.path(),
            &model,
            "generate",
            &["--prompt", "a", "--to", "image", "--speculative", bad],
        );
        assert!(!o.status.success());
        assert!(stderr(&o).contains("speculative"), "{bad}: {}", stderr(&o));
    }
}
