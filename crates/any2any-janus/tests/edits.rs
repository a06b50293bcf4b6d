//! Janus carries out no image edits: a request holding one is refused, naming the edit, instead
//! of being served as a plain image prompt.

use any2any_core::image;
use any2any_core::{Error, ExtendDirection, ImageInput, Modality, Request};
use any2any_test_util::{generate, load_fixture};

#[test]
fn image_edits_are_refused_not_ignored() {
    // a family without edits refuses them instead of ignoring them
    let janus = load_fixture("janus-tiny", any2any_janus::load);
    let small = ImageInput::new(image::RgbImage::new(16, 16));
    for (i, what) in [
        (
            small.clone().with_mask_rect(0, 0, 8, 8).unwrap(),
            "inpainting",
        ),
        (
            small.extend(&[ExtendDirection::Up], 0).unwrap(),
            "extrapolation",
        ),
    ] {
        let r = Request::new().image(i).text("x").want(Modality::Image);
        match generate(janus.as_ref(), r) {
            Err(e @ Error::Unsupported { .. }) => {
                assert!(e.to_string().contains(what), "{e}");
                assert!(e.to_string().starts_with("janus does not support"), "{e}");
            }
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
}
