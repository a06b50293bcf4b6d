//! Image editing: regenerate a rectangle of an image (inpainting) with a family that can
//! (Show-o), guided by a prompt.
//!
//!     cargo run --release --example inpaint -- [MODEL_DIR_OR_HUB_ID] [IMAGE] [PROMPT] [OUT.png]
//!
//! Defaults to the tiny random Show-o checkpoint the repo ships (its pictures are noise) and
//! regenerates the centre quarter of the image.

use any2any::{GenerationParams, Hooks, LoadOptions, Modality, Pipeline, Request};

fn main() -> any2any::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/showo-tiny".into());
    let image = args
        .next()
        .unwrap_or_else(|| "tests/fixtures/showo-tiny/edit_image.png".into());
    let prompt = args.next().unwrap_or_else(|| "a red apple".into());
    let out = args.next().unwrap_or_else(|| "inpainted.png".into());

    let pipe = Pipeline::load(&model, LoadOptions::default())?;
    let img = any2any::imageops::load_image(std::path::Path::new(&image))?;
    let (w, h) = (img.width(), img.height());
    // White = regenerate: the centre quarter.
    let img = img.with_mask_rect(w / 4, h / 4, w / 2, h / 2)?;
    let mut req = Request::new().image(img).want(Modality::Image);
    // The tiny fixture ships no tokenizer: give it a few token ids instead of the text.
    req = match pipe.backend().tokenizer() {
        Some(_) => req.text(prompt),
        None => req.raw_ids(vec![1, 2, 3]),
    };
    let req = req.params(GenerationParams {
        seed: 7,
        ..Default::default()
    });
    let mut hooks = Hooks::new().on_progress(|p| eprintln!("{}: {}/{}", p.stage, p.step, p.total));
    let output = pipe.generate_with(req, &mut hooks)?;
    let img = output.images()[0];
    any2any::imageops::save_image(img, std::path::Path::new(&out))?;
    println!("wrote {out} ({}×{})", img.width(), img.height());
    Ok(())
}
