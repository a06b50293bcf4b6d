//! Text → image by rectified flow (JanusFlow): Euler steps over a continuous latent, decoded
//! by the SDXL VAE component.
//!
//!     cargo run --release --example flow_text_to_image -- [MODEL_DIR_OR_HUB_ID] [PROMPT] [OUT.png] [STEPS]
//!
//! Defaults to the tiny random JanusFlow checkpoint the repo ships (its VAE inside as `vae/`;
//! its pictures are noise). For the real model, `deepseek-ai/JanusFlow-1.3B` fetches the
//! checkpoint and, on first use, `stabilityai/sdxl-vae`; a local VAE folder can be given with
//! `LoadOptions::components` (the CLI's `--component vae=DIR`).

use any2any::{GenerationParams, Hooks, LoadOptions, Modality, Pipeline, Request};

fn main() -> any2any::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/janusflow-tiny".into());
    let prompt = args
        .next()
        .unwrap_or_else(|| "a red fox in the snow".into());
    let out = args.next().unwrap_or_else(|| "flow.png".into());
    let steps = args.next().and_then(|s| s.parse().ok()).unwrap_or(30);

    let pipe = Pipeline::load(&model, LoadOptions::default())?;
    let req = Request::new()
        .text(prompt)
        .want(Modality::Image)
        .params(GenerationParams {
            cfg: Some(2.0),
            steps: Some(steps),
            seed: 42,
            ..Default::default()
        })
        .num_outputs(2);
    let mut hooks = Hooks::new().on_progress(|p| eprintln!("{}: {}/{}", p.stage, p.step, p.total));
    let output = pipe.generate_with(req, &mut hooks)?;
    for (i, img) in output.images().iter().enumerate() {
        let path = out.replace(".png", &format!("-{i}.png"));
        any2any::imageops::save_image(img, std::path::Path::new(&path))?;
        println!("wrote {path} ({}×{})", img.width(), img.height());
    }
    println!("timings: {:?}", output.timings);
    Ok(())
}
