//! Parity with the official LWM JAX code (scripts/fixtures/make_lwm.py → tests/fixtures/lwm-tiny):
//! the release files read directly, logits, greedy text, replayed text→image and the VQGAN; the
//! same after `convert`; truncated and corrupt files refused with named errors.

use any2any_core::noise::ReplayNoise;
use any2any_core::{Backend, Error, Generated, GenerationParams, Hooks, LoadOptions, Modality};
use any2any_core::{ImageInput, ModelFiles, Request};
use any2any_lwm::LwmBackend;
use any2any_test_util::{fixture_dir, max_abs_diff, parity, read_npy_f32, u32s};
use std::path::Path;

const NAME: &str = "lwm-tiny";

fn release_files(dir: &Path) -> ModelFiles {
    any2any_lwm::resolve_dir(dir)
        .expect("resolve")
        .expect("a release directory")
}

fn load(dir: &Path) -> LwmBackend {
    LwmBackend::load(&release_files(dir), &LoadOptions::default()).expect("load the release")
}

/// The reference's replayable uniforms (make_lwm.py `uniforms`): the k-th is
/// `(2·(splitmix64(k) >> 41) + 1) / 2^24`.
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

#[test]
fn tokenizer_is_the_training_time_one() {
    let b = load(&fixture_dir(NAME));
    for case in parity(NAME)["tokenizer"].as_array().expect("cases") {
        let text = case["text"].as_str().expect("text");
        assert_eq!(
            b.tokens(text).expect("tokenize"),
            u32s(&case["ids"]),
            "{text:?}"
        );
    }
}

#[test]
fn logits_of_both_heads_match() {
    let b = load(&fixture_dir(NAME));
    let p = parity(NAME);
    let (_, lm) = read_npy_f32(&fixture_dir(NAME).join("lm_logits.npy"));
    let (_, vis) = read_npy_f32(&fixture_dir(NAME).join("vision_logits.npy"));
    let text = u32s(&p["text_prompt"]);
    let chat = u32s(&p["chat"]["ids"]);
    let (s, e) = (
        p["chat"]["vision_start"].as_u64().unwrap() as usize,
        p["chat"]["vision_end"].as_u64().unwrap() as usize,
    );
    let chat_mask: Vec<bool> = (0..chat.len()).map(|i| (s..e).contains(&i)).collect();
    let (nv, nvis) = (320, 8448);
    for (i, (ids, mask)) in [(text.clone(), vec![false; text.len()]), (chat, chat_mask)]
        .into_iter()
        .enumerate()
    {
        let (t, v) = b.both_logits(&ids, &mask).expect("logits");
        let t: Vec<f32> = t.to_vec1().unwrap();
        let v: Vec<f32> = v.to_vec1().unwrap();
        let dt = max_abs_diff(&t, &lm[i * nv..(i + 1) * nv]);
        let dv = max_abs_diff(&v, &vis[i * nvis..(i + 1) * nvis]);
        assert!(
            dt <= 1e-4 && dv <= 1e-4,
            "prompt {i}: text {dt}, vision {dv}"
        );
    }
}

#[test]
fn greedy_text_and_chat_prompt_match() {
    let b = load(&fixture_dir(NAME));
    let p = parity(NAME);
    let greedy = |req: Request| -> Vec<u32> {
        let req = req.want(Modality::Text).params(GenerationParams {
            temperature: Some(0.0),
            max_new_tokens: Some(8),
            ..Default::default()
        });
        let out = b
            .generate_batch(&[req], &mut Hooks::new())
            .expect("generate");
        let Generated::Text { ids, .. } = &out[0].segments[0] else {
            panic!("text expected")
        };
        ids.clone()
    };
    // text prompt: the template renders the reference's ids
    let (ids, _) = b
        .chat_prompt(&Request::new().text("Describe the sea"))
        .expect("prompt");
    assert_eq!(ids, u32s(&p["text_prompt"]));
    let want = u32s(&p["greedy"]["text"]);
    assert_eq!(greedy(Request::new().text("Describe the sea")), want);

    // image chat: our preprocessing + VQGAN codes + template = the reference's ids
    let img = any2any_test_util::fixture_image(NAME, "image.png");
    let q = p["chat"]["question"].as_str().unwrap();
    let (ids, _) = b
        .chat_prompt(&Request::new().text(q).image(img.clone()))
        .expect("prompt");
    assert_eq!(ids, u32s(&p["chat"]["ids"]));
    assert_eq!(
        greedy(Request::new().text(q).image(img)),
        u32s(&p["greedy"]["chat"])
    );
}

#[test]
fn vqgan_pixels_codes_and_decode_match() {
    let b = load(&fixture_dir(NAME));
    let p = parity(NAME);
    let img = any2any_test_util::fixture_image(NAME, "image.png");
    let px = b.pixels(&img).expect("pixels");
    let (_, want_px) = read_npy_f32(&fixture_dir(NAME).join("pixels.npy"));
    // ours [1, 3, S, S], the reference's [S, S, 3]
    let got: Vec<f32> = px
        .squeeze(0)
        .unwrap()
        .permute((1, 2, 0))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(max_abs_diff(&got, &want_px) <= 1e-6, "pixels");
    let codes = b.image_codes(&img).expect("encode");
    assert_eq!(codes, u32s(&p["vq_codes"]));

    for (codes, png) in [
        (u32s(&p["vq_codes"]), "decoded.png"),
        (
            u32s(&p["t2i"]["single"]["tokens"][0])[..256].to_vec(),
            "t2i.png",
        ),
    ] {
        let got = b.decode_codes(&codes, 16, 16).expect("decode");
        let want = image::open(fixture_dir(NAME).join(png)).unwrap().to_rgb8();
        let worst = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(&a, &b)| a.abs_diff(b))
            .max()
            .unwrap();
        assert!(worst <= 1, "{png}: {worst} levels");
    }
}

/// The reference's text→image runs, replayed: one prompt, and two prompts in one batch.
#[test]
fn text_to_image_codes_match_under_replayed_gumbel_noise() {
    let b = load(&fixture_dir(NAME));
    let p = parity(NAME);
    for case in ["single", "batch"] {
        let c = &p["t2i"][case];
        let prompts: Vec<&str> = c["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        let drawn = c["uniforms_drawn"].as_u64().unwrap() as usize;
        let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(uniforms(drawn)));
        let reqs: Vec<Request> = prompts
            .iter()
            .map(|t| Request::new().text(*t).want(Modality::Image))
            .collect();
        // the prompts' ids are the reference's
        for (r, want) in reqs.iter().zip(c["prompt_ids"].as_array().unwrap()) {
            assert_eq!(b.image_prompts(r).unwrap().0, u32s(want), "{case}");
        }
        if case == "single" {
            let out = b.generate_batch(&reqs, &mut hooks).expect("generate");
            let Generated::Image { codes, .. } = &out[0].segments[0] else {
                panic!("image expected")
            };
            let want = u32s(&c["tokens"][0]);
            assert_eq!(codes.as_deref().unwrap(), &want[..256], "{case}");
        } else {
            // one loop for both prompts, as the reference's batch
            let prompts: Vec<_> = reqs.iter().map(|r| b.image_prompts(r).unwrap()).collect();
            let pipe = any2any_core::sampling::LogitsPipeline::new(
                Some(any2any_core::sampling::Guidance::two_stream(
                    5.0,
                    any2any_core::sampling::GuidanceSpace::Logits,
                )),
                any2any_core::sampling::SamplingParams {
                    temperature: 1.0,
                    top_k: Some(8192),
                    top_p: None,
                    min_p: None,
                },
            )
            .with_draw_rule(any2any_core::sampling::DrawRule::GumbelMax);
            let mut noise = ReplayNoise::uniforms(uniforms(drawn));
            let got = b
                .generate_vision(&prompts, &pipe, &mut noise, &mut Hooks::new())
                .expect("generate");
            for (i, row) in got.iter().enumerate() {
                assert_eq!(row, &u32s(&c["tokens"][i]), "{case} row {i}");
            }
            assert_eq!(noise.remaining(), (0, 0));
        }
    }
}

#[test]
fn converted_checkpoint_gives_the_same_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lwm-converted");
    any2any_lwm::convert(&fixture_dir(NAME), &out).expect("convert");
    let files = ModelFiles::from_dir(&out).expect("files");
    let cfg = files.config_json().unwrap();
    assert!(any2any_lwm::matches(&cfg));
    let conv = LwmBackend::load(&files, &LoadOptions::default()).expect("load converted");
    let rel = load(&fixture_dir(NAME));
    let p = parity(NAME);
    let chat = u32s(&p["chat"]["ids"]);
    let mask = vec![false; chat.len()];
    let ids = &chat[..20];
    let (a, _) = rel.both_logits(ids, &mask[..20]).unwrap();
    let (b, _) = conv.both_logits(ids, &mask[..20]).unwrap();
    let (a, b): (Vec<f32>, Vec<f32>) = (a.to_vec1().unwrap(), b.to_vec1().unwrap());
    assert_eq!(a, b, "logits after convert");
    for case in p["tokenizer"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(conv.tokens(text).unwrap(), u32s(&case["ids"]), "{text:?}");
    }
    let img = ImageInput::new(image::RgbImage::from_pixel(
        40,
        30,
        image::Rgb([10, 200, 30]),
    ));
    assert_eq!(
        rel.image_codes(&img).unwrap(),
        conv.image_codes(&img).unwrap()
    );
}

fn corrupted(edit: impl Fn(&mut Vec<u8>)) -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    any2any_test_util::copy_fixture_files(NAME, tmp.path());
    let p = tmp.path().join("params");
    let mut bytes = std::fs::read(&p).unwrap();
    edit(&mut bytes);
    std::fs::write(&p, bytes).unwrap();
    let err = match LwmBackend::load(&release_files(tmp.path()), &LoadOptions::default()) {
        Err(e) => e,
        Ok(_) => panic!("a damaged params file loaded"),
    };
    assert!(matches!(err, Error::WeightFile { .. }), "{err}");
    (tmp, err.to_string())
}

#[test]
fn truncated_or_corrupt_params_are_named_errors() {
    // cut in the middle of the last record (vision_head, chunked)
    let (_t, msg) = corrupted(|b| {
        let n = b.len();
        b.truncate(n - 1000)
    });
    assert!(
        msg.contains("params")
            && msg.contains("record 13")
            && msg.contains("vision_head/kernel")
            && msg.contains("exceeds"),
        "{msg}"
    );
    // cut inside the last record's key
    let (_t, msg) = corrupted(|b| {
        let i = b
            .windows(11)
            .rposition(|w| w == b"vision_head")
            .expect("key");
        b.truncate(i + 3)
    });
    assert!(
        msg.contains("record 13") && msg.contains("truncated"),
        "{msg}"
    );
    // the first record's value cut short: its length runs past the end
    let (_t, msg) = corrupted(|b| b.truncate(2000));
    assert!(msg.contains("record 0") && msg.contains("exceeds"), "{msg}");
    // the first record's value length (bin16 after `lm_head/kernel`) damaged
    let (_t, msg) = corrupted(|b| {
        let i = b.iter().position(|&x| x == 0xc5).expect("a bin16");
        b[i + 1] = 0xff;
    });
    assert!(
        msg.contains("record 0") && msg.contains("lm_head/kernel"),
        "{msg}"
    );
    // not msgpack at all
    let (_t, msg) = corrupted(|b| b[0] = 0xc1);
    assert!(msg.contains("record 0"), "{msg}");
    // a wrong dtype name
    let (_t, msg) = corrupted(|b| {
        let i = b
            .windows(8)
            .position(|w| w == b"bfloat16")
            .expect("dtype name");
        b[i..i + 8].copy_from_slice(b"bfloat99");
    });
    assert!(msg.contains("bfloat99"), "{msg}");
}

#[test]
fn truncated_vqgan_pickle_is_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    any2any_test_util::copy_fixture_files(NAME, tmp.path());
    let p = tmp.path().join("vqgan");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = match LwmBackend::load(&release_files(tmp.path()), &LoadOptions::default()) {
        Err(e) => e,
        Ok(_) => panic!("a truncated vqgan loaded"),
    };
    let msg = err.to_string();
    assert!(msg.contains("vqgan") && msg.contains("truncated"), "{msg}");
}

#[test]
fn video_frames_are_refused() {
    let b = load(&fixture_dir(NAME));
    let img = any2any_test_util::fixture_image(NAME, "image.png");
    let req = Request::new()
        .image(img.clone())
        .image(img)
        .text("what happens?")
        .want(Modality::Text);
    let err = b.generate_batch(&[req], &mut Hooks::new()).unwrap_err();
    assert!(err.to_string().contains("video"), "{err}");
}

/// The VQGAN file's possible encodings (make_lwm.py `vqgan-formats/`): pickles of numpy leaves
/// (protocols 2, 4, 5), of jax arrays, and flax's msgpack state dict, all read to the same arrays.
#[test]
fn vqgan_file_formats_read_alike() {
    use any2any_lwm::msgpack::{self, Mapped};
    use any2any_lwm::pickle;
    let p = parity(NAME);
    let want = p["vqgan_formats"].as_object().expect("formats");
    let dir = fixture_dir(NAME).join("vqgan-formats");
    for f in [
        "numpy-p2.pkl",
        "numpy-p4.pkl",
        "numpy-p5.pkl",
        "jax.pkl",
        "flax.msgpack",
    ] {
        let m = Mapped::open(&dir.join(f)).unwrap();
        let arrays = if pickle::looks_like_pickle(m.bytes()) {
            pickle::param_dict(&m)
        } else {
            msgpack::state_dict(&m)
        }
        .unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(arrays.len(), want.len(), "{f}");
        for (name, a) in &arrays {
            let bytes: Vec<u8> = a.parts.concat();
            let got: Vec<f32> = bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let w: Vec<f32> = want[name.as_str()]
                .as_array()
                .unwrap_or_else(|| panic!("{f}: unexpected `{name}`"))
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(got, w, "{f}: {name}");
        }
    }
    // a pickle cut short, and one with an opcode no dict of arrays has, are named errors
    let bytes = std::fs::read(dir.join("numpy-p4.pkl")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (name, b) in [
        ("cut.pkl", bytes[..bytes.len() - 30].to_vec()),
        ("bad.pkl", {
            let mut b = bytes.clone();
            b[2] = b'i'; // INST
            b
        }),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, b).unwrap();
        let m = Mapped::open(&path).unwrap();
        let err = pickle::param_dict(&m).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn batched_prompts_equal_lone_runs_and_loops_report_and_cancel() {
    let b = load(&fixture_dir(NAME));
    let greedy = GenerationParams {
        temperature: Some(0.0),
        max_new_tokens: Some(6),
        ..Default::default()
    };
    let img = any2any_test_util::fixture_image(NAME, "image.png");
    let reqs = [
        Request::new()
            .text("Describe the sea")
            .want(Modality::Text)
            .params(greedy.clone()),
        Request::new()
            .text("What is in this picture?")
            .image(img)
            .want(Modality::Text)
            .params(greedy.clone()),
    ];
    let ids = |o: &any2any_core::Output| match &o.segments[0] {
        Generated::Text { ids, .. } => ids.clone(),
        _ => panic!("text expected"),
    };
    let together = b.generate_batch(&reqs, &mut Hooks::new()).unwrap();
    for (r, t) in reqs.iter().zip(&together) {
        let alone = b
            .generate_batch(std::slice::from_ref(r), &mut Hooks::new())
            .unwrap();
        assert_eq!(ids(&alone[0]), ids(t));
    }

    // two seeded images batched = each alone; progress counts the 257 steps
    let image = |t: &str, seed: u64| {
        Request::new()
            .text(t)
            .want(Modality::Image)
            .params(GenerationParams {
                seed,
                ..Default::default()
            })
    };
    let codes = |o: &any2any_core::Output| match &o.segments[0] {
        Generated::Image { codes, .. } => codes.clone().unwrap(),
        _ => panic!("image expected"),
    };
    let pair = [image("a red cube", 1), image("the sun", 2)];
    let mut steps = 0usize;
    let together = b
        .generate_batch(
            &pair,
            &mut Hooks::new().on_progress(|p| {
                if p.stage == "image tokens" {
                    steps = steps.max(p.step)
                }
            }),
        )
        .unwrap();
    assert_eq!(steps, 257);
    for (r, t) in pair.iter().zip(&together) {
        let alone = b
            .generate_batch(std::slice::from_ref(r), &mut Hooks::new())
            .unwrap();
        assert_eq!(codes(&alone[0]), codes(t));
    }

    // cancelled after 10 steps
    let cancel = any2any_core::CancelToken::new();
    let c2 = cancel.clone();
    let err = b
        .generate_batch(
            &[image("a red cube", 1)],
            &mut Hooks::new().cancel_token(cancel).on_progress(move |p| {
                if p.step == 10 {
                    c2.cancel()
                }
            }),
        )
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled { .. }), "{err}");
}
