//! Speculative decoding against plain decoding on a tiny random decoder: greedy gives the same
//! ids (with guidance, a row grid, a batch), sampling follows the exact distribution (a
//! chi-square test that an always-accept rule fails), and the same seed gives the same ids.

use super::super::tests::{model, VOCAB};
use super::super::*;
use crate::noise::SeededNoise;
use crate::request::Speculative;
use crate::sampling::{Guidance, GuidanceSpace, LogitsPipeline, SamplingParams};
use crate::Hooks;
use candle_core::Device;
use std::cell::Cell;

thread_local! {
    /// Test-only mutation: every draft accepted (a broken rule the distribution test must fail).
    pub(super) static ACCEPT_ALL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `steps` steps from `prompts` (one row per image, times the streams of `pipe`), plain
/// or speculative; the ids and the loop's counters.
fn run(
    pipe: &LogitsPipeline,
    prompts: &[&[u32]],
    steps: usize,
    constraint: &mut dyn Constraint,
    spec: Option<Speculative>,
    seed: u64,
) -> (Vec<Vec<u32>>, crate::DecodeStats) {
    let (dec, head) = model();
    let lm = LmHead {
        decoder: &dec,
        head: &head,
    };
    let rows: Vec<RowInput> = (0..pipe.streams())
        .flat_map(|s| {
            prompts
                .iter()
                .map(move |p| RowInput::Ids(if s == 0 { p } else { &p[..1] }))
        })
        .collect();
    let (mut b, h) = RowBatch::prefill(&dec, &rows, steps).unwrap();
    let mut hooks = Hooks::new();
    let lp = CodeLoop {
        speculative: spec,
        row_len: Some(4),
        ..CodeLoop::new(pipe, steps)
    };
    let ids = lp
        .run(
            &mut b,
            &lm,
            h,
            constraint,
            &mut SeededNoise::new(seed),
            &mut hooks,
        )
        .unwrap();
    (ids.to_vec2::<u32>().unwrap(), hooks.stats)
}

fn jacobi(window: usize, reuse: bool) -> Option<Speculative> {
    Some(Speculative { window, reuse })
}

#[test]
fn greedy_speculation_gives_the_plain_ids() {
    let greedy = LogitsPipeline::new(None, SamplingParams::greedy());
    let guided = LogitsPipeline::new(
        Some(Guidance::two_stream(3.0, GuidanceSpace::Logits)),
        SamplingParams::greedy(),
    );
    let prompts: [&[u32]; 2] = [&[1, 2, 3], &[4, 5]];
    let grid = || {
        RowGrid::new(
            (3, 4),
            &(0..20).collect::<Vec<_>>(),
            30,
            &[31],
            VOCAB,
            &Device::Cpu,
        )
    };
    for pipe in [&greedy, &guided] {
        let (plain, ps) = run(pipe, &prompts, 24, &mut NoConstraint, None, 0);
        assert_eq!(ps.forwards, 23);
        for w in [2, 4, 7] {
            for reuse in [false, true] {
                let (spec, ss) = run(pipe, &prompts, 24, &mut NoConstraint, jacobi(w, reuse), 0);
                assert_eq!(spec, plain, "window {w}");
                assert_eq!(ss.tokens, ps.tokens);
                assert!(ss.forwards <= ps.forwards, "{ss:?}");
            }
        }
        // a row layout: row ends and the trailer forced, the grid ends the loop early
        let (plain, _) = run(pipe, &prompts, 40, &mut grid().unwrap(), None, 0);
        assert_eq!(plain[0].len(), 16);
        let (spec, ss) = run(pipe, &prompts, 40, &mut grid().unwrap(), jacobi(5, true), 0);
        assert_eq!(spec, plain);
        assert!(ss.accepted >= 3, "the forced row ends are accepted: {ss:?}");
    }
}

/// `Σ (o − e)² / e` over cells of expected count ≥ 5 (the rest pooled); and its degrees of
/// freedom.
fn chi_square(counts: &[usize], probs: &[f64], n: usize) -> (f64, usize) {
    let (mut stat, mut df) = (0.0, 0usize);
    let (mut po, mut pe) = (0.0, 0.0);
    for (&o, &p) in counts.iter().zip(probs) {
        let e = p * n as f64;
        if e >= 5.0 {
            stat += (o as f64 - e).powi(2) / e;
            df += 1;
        } else {
            po += o as f64;
            pe += e;
        }
    }
    if pe > 0.0 {
        stat += (po - pe).powi(2) / pe.max(1e-9);
        df += 1;
    }
    (stat, df.saturating_sub(1))
}

/// The exact joint of the first three ids under `pipe` and `only` (4 ids), by enumerating the
/// prefixes with plain forward passes.
fn exact_joint(pipe: &LogitsPipeline, prompt: &[u32], only: &OnlyRange, ids: &[u32]) -> Vec<f64> {
    let (dec, head) = model();
    let lm = LmHead {
        decoder: &dec,
        head: &head,
    };
    let probs = |prefix: &[u32]| -> Vec<f64> {
        let seq: Vec<u32> = prompt.iter().chain(prefix).copied().collect();
        let (_, h) = RowBatch::prefill(&dec, &[RowInput::Ids(&seq)], 1).unwrap();
        let l = pipe
            .process(&lm.logits(&h).unwrap(), Some(&only.0))
            .unwrap();
        let p = candle_nn::ops::softmax_last_dim(&pipe.warp(&l).unwrap()).unwrap();
        let p = p.squeeze(0).unwrap().to_vec1::<f32>().unwrap();
        ids.iter().map(|&i| p[i as usize] as f64).collect()
    };
    let k = ids.len();
    let mut joint = vec![0.0; k * k * k];
    let p0 = probs(&[]);
    for a in 0..k {
        let p1 = probs(&[ids[a]]);
        for b in 0..k {
            let p2 = probs(&[ids[a], ids[b]]);
            for c in 0..k {
                joint[(a * k + b) * k + c] = p0[a] * p1[b] * p2[c];
            }
        }
    }
    joint
}

#[test]
fn sampled_speculation_draws_the_exact_distribution() {
    let ids = [3u32, 8, 13, 21];
    let only = OnlyRange::ids(ids, VOCAB, &Device::Cpu).unwrap();
    let pipe = LogitsPipeline::new(
        None,
        SamplingParams {
            temperature: 0.25,
            top_k: None,
            top_p: None,
            min_p: None,
        },
    );
    let prompt: &[u32] = &[5, 6, 7];
    let joint = exact_joint(&pipe, prompt, &only, &ids);
    let cell = |r: &[u32]| -> usize {
        r.iter().fold(0, |acc, x| {
            acc * 4 + ids.iter().position(|i| i == x).expect("an allowed id")
        })
    };
    // 64 images per batch, 60 batches: 3,840 draws of three ids
    let (images, batches) = (64, 60);
    let prompts = vec![prompt; images];
    let tally = |spec: Option<Speculative>| -> (f64, usize, crate::DecodeStats) {
        let mut counts = vec![0usize; 64];
        let mut stats = crate::DecodeStats::default();
        for seed in 0..batches {
            let (out, s) = run(
                &pipe,
                &prompts,
                3,
                &mut OnlyRange(only.0.clone()),
                spec,
                seed,
            );
            for r in &out {
                counts[cell(r)] += 1;
            }
            stats.accepted += s.accepted;
            stats.drafted += s.drafted;
            stats.forwards += s.forwards;
        }
        let (stat, df) = chi_square(&counts, &joint, images * batches as usize);
        (stat, df, stats)
    };
    // p = 0.001 critical value of chi-square, Wilson–Hilferty
    let critical = |df: usize| {
        let k = df as f64;
        k * (1.0 - 2.0 / (9.0 * k) + 3.09 * (2.0 / (9.0 * k)).sqrt()).powi(3)
    };
    for spec in [None, jacobi(3, false), jacobi(3, true)] {
        let (stat, df, s) = tally(spec);
        assert!(stat < critical(df), "{spec:?}: χ² {stat:.1} over {df} df");
        if spec.is_some() {
            assert!(
                s.drafted > 0 && s.accepted > 0 && s.accepted < s.drafted,
                "{s:?}"
            );
        }
    }
    // the broken rule (every draft accepted) is caught
    ACCEPT_ALL.set(true);
    let (stat, df, _) = tally(jacobi(3, true));
    ACCEPT_ALL.set(false);
    assert!(
        stat > critical(df),
        "always-accept: χ² {stat:.1} over {df} df"
    );
}

#[test]
fn the_same_seed_gives_the_same_ids() {
    let pipe = LogitsPipeline::new(
        Some(Guidance::two_stream(2.0, GuidanceSpace::Logits)),
        SamplingParams {
            temperature: 1.0,
            top_k: Some(8),
            top_p: Some(0.9),
            min_p: None,
        },
    );
    let prompts: [&[u32]; 2] = [&[1, 2, 3], &[4, 5]];
    let a = run(&pipe, &prompts, 20, &mut NoConstraint, jacobi(6, true), 7);
    let b = run(&pipe, &prompts, 20, &mut NoConstraint, jacobi(6, true), 7);
    let c = run(&pipe, &prompts, 20, &mut NoConstraint, jacobi(6, true), 8);
    assert_eq!(a, b);
    assert_ne!(a.0, c.0);
    assert_eq!(a.0[0].len(), 20);
}
