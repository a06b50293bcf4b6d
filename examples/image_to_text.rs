//! Image → text: ask a question about a picture.
//!
//!     cargo run --release --example image_to_text -- [MODEL_DIR_OR_HUB_ID] [IMAGE] [QUESTION]
//!
//! Defaults to the trained demo model the repo ships (`examples/models/shapes-janus`) and a
//! picture of its shapes world.

use any2any::{GenerationParams, LoadOptions, Modality, Pipeline, Request};

fn main() -> any2any::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .unwrap_or_else(|| "examples/models/shapes-janus".into());
    let image = args
        .next()
        .unwrap_or_else(|| "examples/models/blue-triangle.png".into());
    let question = args.next().unwrap_or_else(|| "Describe the image.".into());

    let pipe = Pipeline::load(&model, LoadOptions::default())?;
    let photo = any2any::imageops::load_image(std::path::Path::new(&image))?;
    let req = Request::new()
        .image(photo)
        .text(question)
        .want(Modality::Text)
        .params(GenerationParams {
            max_new_tokens: Some(64),
            ..Default::default()
        });
    let out = pipe.generate(req)?;
    println!("{}", out.text());
    Ok(())
}
