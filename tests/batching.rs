//! Several different prompts in one batch (left-padded rows, per-row positions, CFG streams)
//! give what each prompt gives alone, and n outputs per prompt come out request-major.

mod common;
use any2any::{Generated, GenerationParams, Hooks, Modality, Request};
use common::*;

fn codes(o: &any2any::Output) -> Vec<u32> {
    all_codes(o).swap_remove(0)
}

fn ids(o: &any2any::Output) -> Vec<u32> {
    match &o.segments[0] {
        Generated::Text { ids, .. } => ids.clone(),
        other => panic!("expected text, got {other:?}"),
    }
}

fn raw(ids: &[u32], want: Modality, params: &GenerationParams) -> Request {
    Request::new()
        .raw_ids(ids.to_vec())
        .want(want)
        .params(params.clone())
}

fn all_codes(o: &any2any::Output) -> Vec<Vec<u32>> {
    o.segments
        .iter()
        .map(|s| match s {
            Generated::Image { codes: Some(c), .. } => c.clone(),
            other => panic!("expected image codes, got {other:?}"),
        })
        .collect()
}

#[test]
fn batched_prompts_of_different_lengths_match_single_runs() {
    let p = parity("janus-tiny");
    let pipe = load_janus();
    let long = u32s(&p["image_greedy"]["input_ids"]); // 18 ids ending in boi
    let short = vec![1, 7, 36, 35, 9, 8, 36, 4]; // 8 ids ending in boi
    let greedy = GenerationParams {
        temperature: Some(0.0),
        cfg: Some(5.0),
        ..Default::default()
    };
    let req = |ids: &Vec<u32>| raw(ids, Modality::Image, &greedy);
    let alone_long = codes(&pipe.generate(req(&long)).unwrap());
    let alone_short = codes(&pipe.generate(req(&short)).unwrap());
    assert_eq!(alone_long, u32s(&p["image_greedy"]["codes"]));
    assert_ne!(
        alone_long, alone_short,
        "the two prompts should differ for this test to mean anything"
    );
    let both = pipe
        .generate_batch(&[req(&short), req(&long)], &mut Hooks::new())
        .unwrap();
    assert_eq!(both.len(), 2);
    assert_eq!(codes(&both[0]), alone_short);
    assert_eq!(codes(&both[1]), alone_long);

    let text = GenerationParams {
        temperature: Some(0.0),
        max_new_tokens: Some(12),
        ..Default::default()
    };
    let treq = |ids: &Vec<u32>| raw(ids, Modality::Text, &text);
    let t_long = u32s(&p["text_greedy"]["input_ids"]);
    let t_short = vec![1, 7, 36, 35, 9, 8, 36];
    let a = ids(&pipe.generate(treq(&t_long)).unwrap());
    let b = ids(&pipe.generate(treq(&t_short)).unwrap());
    let both = pipe
        .generate_batch(&[treq(&t_long), treq(&t_short)], &mut Hooks::new())
        .unwrap();
    assert_eq!(ids(&both[0]), a);
    assert_eq!(ids(&both[1]), b);
}

#[test]
fn n_outputs_per_prompt_sample_independently_and_reproducibly() {
    let pipe = load_janus();
    let req = Request::new()
        .text("a red fox")
        .want(Modality::Image)
        .params(GenerationParams {
            seed: 3,
            cfg: Some(1.0),
            ..Default::default()
        })
        .num_outputs(3);
    let a = pipe.generate(req.clone()).unwrap();
    let b = pipe.generate(req).unwrap();
    assert_eq!(a.images().len(), 3);
    let ca = all_codes(&a);
    let cb = all_codes(&b);
    assert_eq!(ca, cb, "same seed, same outputs");
    assert!(
        ca[0] != ca[1] || ca[1] != ca[2],
        "three sampled rows should not all be identical"
    );
}

#[test]
fn progress_reports_every_step_in_order() {
    let pipe = load_janus();
    let mut seen = Vec::new();
    {
        let mut hooks =
            Hooks::new().on_progress(|p| seen.push((p.stage.to_string(), p.step, p.total)));
        pipe.generate_with(
            Request::new().text("a fox").want(Modality::Image),
            &mut hooks,
        )
        .unwrap();
    }
    let img: Vec<usize> = seen
        .iter()
        .filter(|s| s.0 == "image tokens")
        .map(|s| s.1)
        .collect();
    assert_eq!(img, (0..=16).collect::<Vec<_>>());
    assert!(seen.iter().all(|s| s.0 != "image tokens" || s.2 == 16));
}

#[test]
fn chameleon_image_prompts_share_one_batched_loop() {
    // Anole: 3 CFG streams × 2 prompts of different lengths (plain and edit, both from the
    // parity fixture) run as 6 left-padded rows; greedy codes equal each prompt run alone and
    // the reference's.
    let p = parity("chameleon-tiny");
    let pipe = load_chameleon();
    let plain = u32s(&p["image_gen_greedy"]["prompt_ids"]);
    let edit = u32s(&p["image_gen_greedy_edit"]["prompt_ids"]);
    let greedy = GenerationParams {
        temperature: Some(0.0),
        max_new_tokens: Some(16),
        ..Default::default()
    };
    let req = |ids: &Vec<u32>| raw(ids, Modality::Image, &greedy).num_outputs(2);
    let alone_plain = codes(&pipe.generate(req(&plain).num_outputs(1)).unwrap());
    assert_eq!(alone_plain, u32s(&p["image_gen_greedy"]["codes"]));
    let alone_edit = codes(&pipe.generate(req(&edit).num_outputs(1)).unwrap());
    assert_eq!(alone_edit, u32s(&p["image_gen_greedy_edit"]["codes"]));
    assert_ne!(alone_plain, alone_edit);
    let out = pipe
        .generate_batch(&[req(&plain), req(&edit)], &mut Hooks::new())
        .unwrap();
    let got: Vec<Vec<u32>> = out.iter().map(codes).collect();
    assert_eq!(
        got,
        vec![
            alone_plain.clone(),
            alone_plain,
            alone_edit.clone(),
            alone_edit
        ]
    );
}

#[test]
fn emu3_outputs_of_one_request_are_independent_rows_of_one_batch() {
    // Two guided images of one request run as one batch ([cond, cond, neg, neg] rows). Each step draws
    // one uniform per image in order, so image r of the batch must equal a lone run fed the
    // uniforms r, r+2, r+4, …: the rows never leak into each other.
    use any2any::ReplayNoise;
    let p = parity("emu3-tiny");
    let pipe = any2any::Pipeline::load(
        fixture_dir("emu3-tiny").to_str().unwrap(),
        any2any::LoadOptions::default(),
    )
    .unwrap();
    let c = &p["image_gen_sampled"];
    let params = GenerationParams {
        temperature: Some(1.0),
        top_k: Some(8),
        cfg: Some(3.0),
        ..Default::default()
    };
    let req = |n| raw(&u32s(&c["input_ids"]), Modality::Image, &params).num_outputs(n);
    // 2 rows × 11 steps (2 × (3 + 1) + 3) of uniforms.
    let u: Vec<f32> = (0..22)
        .map(|i| ((i as f32 * 0.618_034) + 0.1) % 1.0)
        .collect();
    let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(u.clone()));
    let both = pipe.generate_batch(&[req(2)], &mut hooks).unwrap();
    assert_eq!(both.len(), 2);
    for (r, img) in both.iter().enumerate() {
        let mine: Vec<f32> = u.iter().skip(r).step_by(2).copied().collect();
        let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(mine));
        let alone = pipe.generate_batch(&[req(1)], &mut hooks).unwrap();
        assert_eq!(codes(img), codes(&alone[0]), "image {r}");
    }
    assert_ne!(codes(&both[0]), codes(&both[1]));
}

#[test]
fn chameleon_sampled_images_of_a_batch_equal_lone_runs_with_their_own_uniforms() {
    use any2any::ReplayNoise;
    let p = parity("chameleon-tiny");
    let pipe = load_chameleon();
    let params = GenerationParams {
        temperature: Some(1.0),
        max_new_tokens: Some(4),
        ..Default::default()
    };
    let req = |n| {
        raw(
            &u32s(&p["image_gen_greedy_edit"]["prompt_ids"]),
            Modality::Image,
            &params,
        )
        .num_outputs(n)
    };
    let u: Vec<f32> = (0..8)
        .map(|i| ((i as f32 * 0.618_034) + 0.05) % 1.0)
        .collect();
    let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(u.clone()));
    let both = pipe.generate_batch(&[req(2)], &mut hooks).unwrap();
    for (r, img) in both.iter().enumerate() {
        let mine: Vec<f32> = u.iter().skip(r).step_by(2).copied().collect();
        let mut hooks = Hooks::new().noise(ReplayNoise::uniforms(mine));
        let alone = pipe.generate_batch(&[req(1)], &mut hooks).unwrap();
        assert_eq!(codes(img), codes(&alone[0]), "image {r}");
    }
    assert_ne!(codes(&both[0]), codes(&both[1]));
}

fn segment_ids(o: &any2any::Output) -> Vec<Vec<u32>> {
    o.segments
        .iter()
        .map(|s| match s {
            Generated::Text { ids, .. } => ids.clone(),
            Generated::Image { codes: Some(c), .. } => c.clone(),
            other => panic!("no ids in {other:?}"),
        })
        .collect()
}

#[test]
fn chameleon_text_requests_share_one_batch_and_match_lone_runs() {
    // Three prompts of different lengths, one of which opens an image (it leaves the batch at
    // BOI and goes on alone: text, image, text): greedy and sampled, each output equals the
    // request run alone (every request draws from its own source).
    let p = parity("chameleon-tiny");
    let pipe = load_chameleon();
    let prompts = [
        u32s(&p["text_greedy"]["input_ids"]),
        vec![0u32, 63, 51],
        vec![0u32, 30, 31, 32, 40],
    ];
    for params in [
        GenerationParams {
            temperature: Some(0.0),
            max_new_tokens: Some(20),
            ..Default::default()
        },
        GenerationParams {
            temperature: Some(0.9),
            top_k: Some(20),
            max_new_tokens: Some(20),
            seed: 5,
            ..Default::default()
        },
    ] {
        let reqs: Vec<Request> = prompts
            .iter()
            .map(|q| raw(q, Modality::Interleaved, &params))
            .collect();
        let batched = pipe.generate_batch(&reqs, &mut Hooks::new()).unwrap();
        assert_eq!(batched.len(), 3);
        for (r, req) in reqs.iter().enumerate() {
            let alone = pipe.generate(req.clone()).unwrap();
            assert_eq!(
                segment_ids(&batched[r]),
                segment_ids(&alone),
                "request {r}, {params:?}"
            );
        }
        if params.temperature == Some(0.0) {
            // the interleaved one really went through the image loop
            assert_eq!(batched[1].segments.len(), 3);
            assert_eq!(
                u32s(&p["text_greedy"]["new_ids"]),
                segment_ids(&batched[0])[0][..u32s(&p["text_greedy"]["new_ids"]).len()]
            );
        }
    }
}
