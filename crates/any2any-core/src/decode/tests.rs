//! The loops against themselves on a tiny random decoder: a batch gives each row what it gives
//! alone, rows leave without disturbing the others, guidance over identical streams is a no-op,
//! a constraint ends an image, and text deltas never split a character.

use super::*;
use crate::backbone::{Decoder, LlamaTextConfig};
use crate::nn::Linear;
use crate::noise::{NoiseSource, SeededNoise, StackedNoise};
use crate::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use crate::{Hooks, Result};
use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::VarBuilder;

/// Deterministic pseudo-random weights in [-0.5, 0.5) from each tensor's name.
struct Hashed;

impl candle_nn::var_builder::SimpleBackend for Hashed {
    fn get(
        &self,
        s: Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        let mut h: u64 = name.bytes().fold(0xcbf29ce484222325, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        let v: Vec<f32> = (0..s.elem_count())
            .map(|_| {
                h ^= h << 13;
                h ^= h >> 7;
                h ^= h << 17;
                (h >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect();
        Tensor::from_vec(v, s, dev)?.to_dtype(dtype)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        candle_core::bail!("no shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

pub(super) const VOCAB: usize = 32;

pub(super) fn model() -> (Decoder, Linear) {
    let cfg: LlamaTextConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": VOCAB, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "max_position_embeddings": 64
    }))
    .unwrap();
    let bb = cfg.to_backbone("test").unwrap();
    let vb = VarBuilder::from_backend(Box::new(Hashed), DType::F32, Device::Cpu);
    let dec = Decoder::load(vb.pp("model"), &bb).unwrap();
    let head = Linear::load(16, VOCAB, false, vb.pp("head")).unwrap();
    (dec, head)
}

fn sampled(t: f32) -> LogitsPipeline {
    LogitsPipeline::new(
        None,
        SamplingParams {
            temperature: t,
            top_k: None,
            top_p: None,
            min_p: None,
        },
    )
}

fn noise(seeds: &[u64]) -> StackedNoise<'static> {
    StackedNoise::new(
        seeds
            .iter()
            .map(|&s| (Box::new(SeededNoise::new(s)) as Box<dyn NoiseSource>, 1))
            .collect(),
    )
}

fn text(
    dec: &Decoder,
    head: &Linear,
    prompts: &[&[u32]],
    seeds: &[u64],
    stop: &[u32],
    on_token: &mut dyn FnMut(usize, u32) -> TokenAction,
) -> Result<Vec<TextRow>> {
    let rows: Vec<RowInput> = prompts.iter().map(|p| RowInput::Ids(p)).collect();
    let (mut b, h) = RowBatch::prefill(dec, &rows, 12)?;
    let pipe = sampled(1.0);
    let lm = LmHead { decoder: dec, head };
    TextLoop::new(&pipe, 12, stop).run(
        &mut b,
        &lm,
        h,
        &mut noise(seeds),
        &mut Hooks::new(),
        on_token,
    )
}

#[test]
fn batched_rows_equal_lone_runs_and_finished_rows_leave() {
    let (dec, head) = model();
    let prompts: [&[u32]; 3] = [&[1, 2, 3, 4, 5], &[7], &[9, 8, 7]];
    let seeds = [11, 12, 13];
    // stop on a few ids so that rows end at different steps
    let stop = [3, 17, 21];
    let batched = text(&dec, &head, &prompts, &seeds, &stop, &mut |_, _| {
        TokenAction::Continue
    })
    .unwrap();
    let mut ends = std::collections::HashSet::new();
    for (i, (p, s)) in prompts.iter().zip(seeds).enumerate() {
        let alone = text(&dec, &head, &[p], &[s], &stop, &mut |_, _| {
            TokenAction::Continue
        })
        .unwrap();
        assert_eq!(batched[i], alone[0], "row {i}");
        ends.insert(batched[i].ids.len());
    }
    assert!(
        ends.len() > 1,
        "rows should end at different steps for the test to mean anything"
    );
}

#[test]
fn a_handed_off_row_keeps_its_last_id_and_the_rest_go_on() {
    let (dec, head) = model();
    let prompts: [&[u32]; 2] = [&[1, 2], &[3, 4]];
    let free = text(&dec, &head, &prompts, &[5, 6], &[], &mut |_, _| {
        TokenAction::Continue
    })
    .unwrap();
    let cut = free[0].ids[2];
    let out = text(&dec, &head, &prompts, &[5, 6], &[], &mut |row, id| {
        if row == 0 && id == cut {
            TokenAction::Handoff
        } else {
            TokenAction::Continue
        }
    })
    .unwrap();
    let at = free[0].ids.iter().position(|&i| i == cut).unwrap();
    assert_eq!(out[0].ids, free[0].ids[..=at]);
    assert_eq!(out[0].end, TextEnd::Handoff);
    assert_eq!(out[1], free[1]);
    assert_eq!(out[1].end, TextEnd::Budget);
}

#[test]
fn guidance_over_identical_streams_is_plain_decoding_and_a_constraint_ends_early() {
    let (dec, head) = model();
    let lm = LmHead {
        decoder: &dec,
        head: &head,
    };
    let p: &[u32] = &[4, 5, 6];
    let greedy = SamplingParams::greedy();
    let run = |streams: usize, constraint: &mut dyn Constraint| -> Tensor {
        let pipe = LogitsPipeline::new(
            (streams == 2).then(|| Guidance::two_stream(3.0, GuidanceSpace::Logits)),
            greedy,
        );
        let rows = vec![RowInput::Ids(p); streams];
        let (mut b, h) = RowBatch::prefill(&dec, &rows, 8).unwrap();
        CodeLoop::new(&pipe, 8)
            .run(
                &mut b,
                &lm,
                h,
                constraint,
                &mut SeededNoise::new(0),
                &mut Hooks::new(),
            )
            .unwrap()
    };
    let plain = run(1, &mut NoConstraint).to_vec2::<u32>().unwrap();
    let guided = run(2, &mut NoConstraint).to_vec2::<u32>().unwrap();
    assert_eq!(plain, guided);
    struct Upto(usize, OnlyRange);
    impl Constraint for Upto {
        fn allowed(&mut self, step: usize) -> Result<Allowed> {
            if step == self.0 {
                return Ok(Allowed::Done);
            }
            self.1.allowed(step)
        }
    }
    let only = OnlyRange::ids([7, 9], VOCAB, &Device::Cpu).unwrap();
    let ids = run(2, &mut Upto(5, only)).to_vec2::<u32>().unwrap();
    assert_eq!(ids[0].len(), 5);
    assert!(ids[0].iter().all(|&i| i == 7 || i == 9), "{ids:?}");
}

#[test]
fn text_deltas_never_split_a_character() {
    // byte-level BPE without merges: "é" is two byte tokens, "Ã" (0xC3) and "©" (0xA9)
    let json = serde_json::json!({
        "version": "1.0",
        "model": {"type": "BPE", "vocab": {"a": 0, "Ã": 1, "©": 2, "Ġb": 3}, "merges": []},
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
                    "use_regex": false},
        "added_tokens": [], "normalizer": null, "pre_tokenizer": null,
        "post_processor": null, "truncation": null, "padding": null
    });
    let tok: tokenizers::Tokenizer = json.to_string().parse().unwrap();
    let mut s = crate::TextStream::new();
    let mut deltas = Vec::new();
    for id in [0, 1, 2, 3, 1] {
        deltas.push(s.push(&tok, id).unwrap());
    }
    let tail = s.finish(&tok).unwrap();
    assert_eq!(
        deltas,
        vec![
            Some("a".into()),
            None,
            Some("é".into()),
            Some(" b".into()),
            None
        ]
    );
    assert_eq!(tail.as_deref(), Some("\u{FFFD}"));
}
