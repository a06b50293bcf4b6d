//! Streaming hooks on real families: each output's text deltas, concatenated, are its final
//! text; image previews arrive every k steps with the codes drawn so far.

mod common;
use any2any::{Generated, GenerationParams, Hooks, Modality, Pipeline, Request};
use common::*;
use std::cell::RefCell;

fn final_texts(outs: &[any2any::Output]) -> Vec<String> {
    outs.iter().map(|o| o.text()).collect()
}

fn streamed(pipe: &Pipeline, reqs: &[Request]) -> (Vec<String>, Vec<any2any::Output>) {
    let got = RefCell::new(Vec::<String>::new());
    let outs = {
        let mut hooks = Hooks::new().on_text(|d| {
            let mut g = got.borrow_mut();
            if g.len() <= d.output {
                g.resize(d.output + 1, String::new());
            }
            g[d.output].push_str(d.text);
        });
        pipe.generate_batch(reqs, &mut hooks).unwrap()
    };
    (got.into_inner(), outs)
}

fn sampled_text(max: usize, seed: u64) -> GenerationParams {
    GenerationParams {
        temperature: Some(1.0),
        max_new_tokens: Some(max),
        seed,
        ..Default::default()
    }
}

#[test]
fn text_deltas_add_up_to_the_final_text_janus_and_emu3() {
    for (pipe, name) in [
        (load_janus(), "janus"),
        (
            Pipeline::load(
                fixture_dir("emu3-tiny").to_str().unwrap(),
                Default::default(),
            )
            .unwrap(),
            "emu3",
        ),
    ] {
        let reqs: Vec<Request> = (0..3)
            .map(|i| {
                Request::new()
                    .text(format!("hello {i}"))
                    .want(Modality::Text)
                    .params(sampled_text(6 + 3 * i as usize, i))
                    .num_outputs(2)
            })
            .collect();
        let (deltas, outs) = streamed(&pipe, &reqs);
        let texts = final_texts(&outs);
        assert_eq!(outs.len(), 6, "{name}");
        assert!(
            texts.iter().any(|t| !t.is_empty()),
            "{name}: no text at all"
        );
        let mut got = deltas;
        got.resize(texts.len(), String::new());
        assert_eq!(got, texts, "{name}");
    }
}

#[test]
fn image_previews_come_every_k_steps_with_the_codes_so_far() {
    let pipe = load_janus();
    let seen = RefCell::new(Vec::<(usize, usize, Vec<u32>)>::new());
    let req = Request::new()
        .text("a cat")
        .want(Modality::Image)
        .params(GenerationParams {
            temperature: Some(1.0),
            seed: 3,
            ..Default::default()
        })
        .num_outputs(2);
    let out = {
        let mut hooks = Hooks::new().on_preview(5, |p| {
            assert_eq!(p.grid, (4, 4));
            seen.borrow_mut().push((p.output, p.step, p.codes.to_vec()));
        });
        pipe.generate_batch(&[req], &mut hooks).unwrap()
    };
    let seen = seen.into_inner();
    // 16 codes, every 5 steps and after the last: steps 5, 10, 15, 16, for both outputs
    let steps: Vec<(usize, usize)> = seen.iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(
        steps,
        vec![
            (0, 5),
            (1, 5),
            (0, 10),
            (1, 10),
            (0, 15),
            (1, 15),
            (0, 16),
            (1, 16)
        ]
    );
    for (o, step, codes) in &seen {
        let Generated::Image {
            codes: Some(all), ..
        } = &out[*o].segments[0]
        else {
            panic!("expected image codes");
        };
        assert_eq!(&all[..*step], &codes[..], "output {o} step {step}");
    }
}
