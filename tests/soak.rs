//! The soak of issue 10 (not in CI: `cargo test --release --test soak -- --ignored --nocapture`):
//! 1,000 generations in one process through the library API over every family fixture (mixed
//! families, directions, sizes, batch sizes and cancellations), with the resident set size
//! after the warm-up and at the end (asserted flat within 10 %); then one `Pipeline` per
//! family shared by 8 threads at once, every result equal to the sequential run's.

mod common;
use any2any::{
    CancelToken, Error, Generated, GenerationParams, Hooks, LoadOptions, Modality, Output,
    Pipeline, Request,
};
use common::*;
use std::sync::Arc;

/// The pipelines of every fixture with a request maker (`i` varies sizes and seeds).
type Maker = fn(usize) -> Vec<Request>;

fn greedy(n: usize, seed: u64) -> GenerationParams {
    GenerationParams {
        temperature: Some(if seed.is_multiple_of(2) { 0.0 } else { 1.0 }),
        max_new_tokens: Some(n),
        seed,
        ..Default::default()
    }
}

fn text_rows(i: usize) -> Vec<Request> {
    (0..1 + i % 3)
        .map(|r| {
            Request::new()
                .raw_ids(vec![1, 2, 3 + r as u32])
                .want(Modality::Text)
                .params(greedy(1 + i % 6, (i + r) as u64))
                .num_outputs(1 + i % 2)
        })
        .collect()
}

fn janus(i: usize) -> Vec<Request> {
    if i.is_multiple_of(2) {
        return text_rows(i);
    }
    vec![Request::new()
        .raw_ids(vec![1, 2])
        .want(Modality::Image)
        .params(GenerationParams {
            seed: i as u64,
            ..Default::default()
        })
        .num_outputs(1 + i % 3)]
}

fn chameleon(i: usize) -> Vec<Request> {
    if !i.is_multiple_of(3) {
        return text_rows(i);
    }
    vec![Request::new()
        .text("a red cat.")
        .want(Modality::Image)
        .params(GenerationParams {
            seed: i as u64,
            ..Default::default()
        })]
}

fn emu3(i: usize) -> Vec<Request> {
    if i.is_multiple_of(2) {
        return text_rows(i);
    }
    let (w, h) = [(6, 4), (4, 6), (6, 6)][i % 3];
    vec![Request::new()
        .text("a red cat.")
        .want(Modality::Image)
        .params(GenerationParams {
            size: Some((w, h)),
            seed: i as u64,
            ..Default::default()
        })]
}

fn showo(i: usize) -> Vec<Request> {
    let img = fixture_image("showo-tiny", "image.png");
    if i.is_multiple_of(2) {
        return vec![Request::new()
            .raw_ids(vec![1, 2, 3])
            .image(img)
            .want(Modality::Text)
            .params(greedy(1 + i % 4, i as u64))];
    }
    vec![Request::new()
        .raw_ids(vec![1, 2, 3])
        .want(Modality::Image)
        .params(GenerationParams {
            steps: Some(1 + i % 4),
            seed: i as u64,
            ..Default::default()
        })
        .num_outputs(1 + i % 2)]
}

fn families() -> Vec<(Arc<Pipeline>, Maker)> {
    let load = |n: &str| {
        Arc::new(Pipeline::load(fixture_dir(n).to_str().unwrap(), LoadOptions::default()).unwrap())
    };
    vec![
        (load("janus-tiny"), janus as Maker),
        (load("chameleon-tiny"), chameleon),
        (load("chameleon-swin-tiny"), text_rows),
        (load("chameleon-raw-tiny"), text_rows),
        (load("emu3-tiny"), emu3),
        (load("lumina-tiny"), text_rows),
        (load("showo-tiny"), showo),
    ]
}

/// What a run produced, comparable: per output, its text ids and image bytes.
fn fingerprint(outs: &[Output]) -> Vec<Vec<(Vec<u32>, Vec<u8>)>> {
    outs.iter()
        .map(|o| {
            o.segments
                .iter()
                .map(|s| match s {
                    Generated::Text { ids, .. } => (ids.clone(), Vec::new()),
                    Generated::Image { image, .. } => (Vec::new(), image.as_raw().clone()),
                    _ => (Vec::new(), Vec::new()),
                })
                .collect()
        })
        .collect()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Runs generation `i`: every 10th is cancelled at its first progress step.
fn run_one(fams: &[(Arc<Pipeline>, Maker)], i: usize) -> Result<Vec<Output>, Error> {
    let (pipe, make) = &fams[i % fams.len()];
    let reqs = make(i / fams.len());
    if i % 10 == 9 {
        let token = CancelToken::new();
        let t = token.clone();
        let mut hooks = Hooks::new()
            .cancel_token(token)
            .on_progress(move |_| t.cancel());
        return pipe.generate_batch(&reqs, &mut hooks);
    }
    pipe.generate_batch(&reqs, &mut Hooks::new())
}

#[test]
#[ignore = "soak: run with --ignored --nocapture"]
fn thousand_generations_keep_rss_flat() {
    let fams = families();
    let t0 = std::time::Instant::now();
    let (mut ok, mut cancelled, mut warm) = (0, 0, 0);
    for i in 0..1000 {
        match run_one(&fams, i) {
            Ok(_) => ok += 1,
            Err(Error::Cancelled { .. }) => cancelled += 1,
            Err(e) => panic!("generation {i}: {e}"),
        }
        if i == 99 {
            warm = rss_kib();
        }
    }
    let end = rss_kib();
    println!(
        "soak: 1000 generations ({ok} done, {cancelled} cancelled) in {:.1} s; RSS after 100: {} MiB, after 1000: {} MiB ({:+.1} %)",
        t0.elapsed().as_secs_f64(),
        warm / 1024,
        end / 1024,
        (end as f64 / warm as f64 - 1.0) * 100.0
    );
    assert!(
        end as f64 <= warm as f64 * 1.10,
        "RSS grew: {warm} → {end} KiB"
    );
}

#[test]
#[ignore = "soak: run with --ignored --nocapture"]
fn eight_threads_equal_sequential_runs() {
    let fams = Arc::new(families());
    let n = 56;
    let sequential: Vec<_> = (0..n)
        .map(|i| {
            run_one(&fams, i)
                .map(|o| fingerprint(&o))
                .map_err(|e| e.to_string())
        })
        .collect();
    let t0 = std::time::Instant::now();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let fams = fams.clone();
            std::thread::spawn(move || {
                (0..n)
                    .filter(|i| i % 8 == t)
                    .map(|i| {
                        let r = run_one(&fams, i)
                            .map(|o| fingerprint(&o))
                            .map_err(|e| e.to_string());
                        (i, r)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut seen = 0;
    for h in handles {
        for (i, r) in h.join().unwrap() {
            assert_eq!(r, sequential[i], "generation {i} differs across threads");
            seen += 1;
        }
    }
    assert_eq!(seen, n);
    println!(
        "threads: {n} generations on 8 threads in {:.1} s, all equal to the sequential runs",
        t0.elapsed().as_secs_f64()
    );
}
