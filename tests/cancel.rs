//! Cancellation (issue 10, class 9): a batch decode (VQ or VAE) stops between two images, in
//! every family that decodes several images, and the CLI cancels on SIGINT and SIGTERM with no
//! output file and the exit code 128 + the signal.

mod common;
use any2any::{
    CancelToken, Error, GenerationParams, Hooks, LoadOptions, Modality, Pipeline, Request,
};
use common::*;

/// An image request of three outputs that the fixture `name` serves quickly.
fn three_images(name: &str) -> Request {
    let r = match name {
        "janus-tiny" => Request::new().raw_ids(vec![1, 2]),
        "showo-tiny" => Request::new().raw_ids(vec![1, 2, 3]),
        _ => Request::new().text("a red cat."),
    };
    let steps = matches!(name, "showo-tiny" | "janusflow-tiny" | "emu2-tiny").then_some(1);
    r.want(Modality::Image)
        .num_outputs(3)
        .params(GenerationParams {
            steps,
            seed: 1,
            ..Default::default()
        })
}

#[test]
fn a_batch_decode_stops_between_images() {
    for name in [
        "janus-tiny",
        "chameleon-tiny",
        "emu3-tiny",
        "showo-tiny",
        "janusflow-tiny",
        "emu2-tiny",
    ] {
        let pipe =
            Pipeline::load(fixture_dir(name).to_str().unwrap(), LoadOptions::default()).unwrap();
        let token = CancelToken::new();
        let t = token.clone();
        let mut decoded = Vec::new();
        let mut hooks = Hooks::new().cancel_token(token).on_progress(|p| {
            if p.stage.ends_with("decode") {
                decoded.push((p.stage.to_string(), p.step, p.total));
                if p.step == 1 {
                    t.cancel(); // after the first image of the batch
                }
            }
        });
        let r = pipe.generate_with(three_images(name), &mut hooks);
        drop(hooks);
        match r {
            Err(Error::Cancelled { stage, step, total }) => {
                assert!(stage.ends_with("decode"), "{name}: cancelled at {stage}");
                assert_eq!(
                    (step, total),
                    (2, 3),
                    "{name}: cancelled at {step} of {total}"
                );
            }
            other => panic!("{name}: expected a cancellation in the decode, got {other:?}"),
        }
        let steps: Vec<(usize, usize)> = decoded.iter().map(|d| (d.1, d.2)).collect();
        assert_eq!(
            steps,
            [(0, 3), (1, 3)],
            "{name}: decode progress {decoded:?}"
        );
    }
}

/// Starts a long batch (Janus, 1000 images: the VQ decode takes most of it), sends `signal`
/// after `after`, and returns the exit code, the seconds from the signal to the exit, and the
/// files left in the output folder.
#[cfg(unix)]
fn signal_during_decode(signal: &str) -> (Option<i32>, f64, Vec<String>) {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_any2any"))
        .current_dir(dir.path())
        .args(["generate", "--model"])
        .arg(janus_dir())
        .args([
            "--raw-ids",
            "1,2",
            "--to",
            "image",
            "--num",
            "1000",
            "--quiet",
        ])
        .args(["--out", "x.png", "--json", "x.json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before the signal"
    );
    let st = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{signal}: no exit 30 s after the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), t.elapsed().as_secs_f64(), names(dir.path()))
}

#[cfg(unix)]
#[test]
fn sigint_and_sigterm_cancel_a_long_decode_promptly_leaving_no_file() {
    for (signal, code) in [("-INT", 130), ("-TERM", 143)] {
        let (got, secs, left) = signal_during_decode(signal);
        assert_eq!(got, Some(code), "{signal}: exit code");
        // one image decodes in milliseconds; the whole batch takes over 10 s
        assert!(secs < 3.0, "{signal}: exited {secs:.1} s after the signal");
        assert!(left.is_empty(), "{signal}: left {left:?}");
    }
}

/// `any2any serve` shuts down gracefully on SIGTERM: it says so and exits 0 (no request in
/// flight, so without waiting for the grace period).
#[cfg(unix)]
#[test]
fn serve_shuts_down_on_sigterm() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_any2any"))
        .args(["serve", "--port", "0", "--model"])
        .arg(janus_dir())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut head = Vec::new();
    while !head.last().is_some_and(|l: &String| l.contains("serving")) {
        let line = lines.next();
        assert!(line.is_some(), "serve exited before listening: {head:?}");
        head.push(line.unwrap().unwrap());
    }
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "serve still up after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    assert_eq!(status.code(), Some(0), "{rest:?}");
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
}
