//! Text → image with any family that can draw.
//!
//!     cargo run --release --example text_to_image -- [MODEL_DIR_OR_HUB_ID] [PROMPT] [OUT.png]
//!
//! Defaults to the trained demo model the repo ships (`examples/models/shapes-janus`, 64×64
//! pictures of its shapes world: `a {colour} {shape} on a {background} background`).

use any2any::{GenerationParams, Hooks, LoadOptions, Modality, Pipeline, Request};

fn main() -> any2any::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| "examples/models/shapes-janus".into());
    let prompt = args
        .next()
        .unwrap_or_else(|| "a red circle on a white background".into());
    let out = args.next().unwrap_or_else(|| "circle.png".into());

    let pipe = Pipeline::load(&model, LoadOptions::default())?;
    let req = Request::new()
        .text(prompt)
        .want(Modality::Image)
        .params(GenerationParams {
            cfg: Some(5.0),
            seed: 42,
            ..Default::default()
        })
        .num_outputs(2);
    let mut hooks = Hooks::new().on_progress(|p| {
        if p.step == p.total {
            eprintln!("{}: {}/{}", p.stage, p.step, p.total);
        }
    });
    let output = pipe.generate_with(req, &mut hooks)?;
    for (i, img) in output.images().iter().enumerate() {
        let path = out.replace(".png", &format!("-{i}.png"));
        any2any::imageops::save_image(img, std::path::Path::new(&path))?;
        println!("wrote {path} ({}×{})", img.width(), img.height());
    }
    println!("timings: {:?}", output.timings);
    Ok(())
}
