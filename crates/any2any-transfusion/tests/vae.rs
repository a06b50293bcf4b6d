//! Parity of a latent-space checkpoint with transfusion-pytorch 0.20 + diffusers 0.31 on
//! tests/fixtures/transfusion-vae-tiny (scripts/fixtures/make_transfusion.py): a 4-channel 4×4
//! latent decoded to 8×8 pixels by the checkpoint's `vae` component (a diffusers
//! `AutoencoderKL`, the library's modality decoder being `export_transfusion.VaeDecoder`), and
//! an image prompt encoded by it (`VaeEncoder`).

use any2any_core::backend::Backend;
use any2any_core::{
    image, Generated, GenerationParams, Hooks, ImageInput, LoadOptions, Modality, ReplayNoise,
    Request,
};
use any2any_test_util::{f32s, fixture_files, max_abs_diff, parity, u32s, worst_level_diff};
use any2any_transfusion::flow::{sample_latent, FlowOptions};
use any2any_transfusion::sequence::{Part, Rows};
use any2any_transfusion::{load_backend, OdeMethod, TransfusionBackend};

const TOL: f32 = 1e-4;
const NAME: &str = "transfusion-vae-tiny";

fn backend() -> TransfusionBackend {
    load_backend(&fixture_files(NAME), &LoadOptions::default()).unwrap()
}

/// `[n, C]` latent tokens → the library's channel-first values.
fn chw_of(tokens: &any2any_core::candle_core::Tensor) -> Vec<f32> {
    TransfusionBackend::channel_first(tokens, (4, 4))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn text_to_image_through_the_vae_replays_the_reference() {
    let p = parity(NAME);
    let c = &p["image"];
    let b = backend();
    assert_eq!(b.info().image_size, Some((8, 8)));
    let steps = c["modality_steps"].as_u64().unwrap() as usize - 1;
    let cfg = c["cfg"].as_f64().unwrap() as f32;
    let noise = f32s(&c["noise"]);
    // the final latent
    let opts = FlowOptions {
        steps,
        cfg,
        method: OdeMethod::Midpoint,
    };
    let hist = [Part::Text(u32s(&c["prefix"]))];
    let mut rn = ReplayNoise::new(vec![], noise.clone());
    let (z, _) = sample_latent(b.model(), &hist, 16, 0, &opts, &mut rn, &mut Hooks::new()).unwrap();
    let d = max_abs_diff(&chw_of(&z), &f32s(&c["final"]));
    eprintln!("final latent: max |Δ| {d:e}");
    assert!(d <= TOL, "final latent differs by {d}");
    // the decoded pixels, through the backend
    let req = Request::new()
        .text("hi")
        .want(Modality::Image)
        .params(GenerationParams {
            steps: Some(steps),
            cfg: Some(cfg),
            ..Default::default()
        });
    let mut hooks = Hooks::new().noise(ReplayNoise::new(vec![], noise));
    let out = b.generate_batch(&[req], &mut hooks).unwrap();
    let Generated::Image { image, grid, .. } = &out[0].segments[0] else {
        panic!("image expected")
    };
    assert_eq!((image.dimensions(), *grid), ((8, 8), Some((4, 4))));
    // reference pixels are channel-first [3, 8, 8]; ours are HWC
    let want = u32s(&c["pixels"]);
    let hwc: Vec<u32> = (0..64)
        .flat_map(|i| (0..3).map(move |ch| (ch, i)))
        .map(|(ch, i)| want[ch * 64 + i])
        .collect();
    let worst = worst_level_diff(image.as_raw(), &hwc);
    eprintln!("decoded pixels: worst {worst} level(s)");
    assert!(worst <= 1, "pixels differ by {worst} levels");
}

#[test]
fn an_image_prompt_is_encoded_by_the_vae() {
    let p = parity(NAME);
    let c = &p["image_prompt"];
    let b = backend();
    let px: Vec<u8> = u32s(&c["pixels"]).iter().map(|&v| v as u8).collect();
    let img = ImageInput::new(image::RgbImage::from_raw(8, 8, px).unwrap());
    let req = Request::new()
        .image(img)
        .text("?")
        .want(Modality::Text)
        .params(GenerationParams {
            max_new_tokens: Some(3),
            ..Default::default()
        });
    let parts = b.prompt_parts(&req).unwrap();
    let latent = parts
        .iter()
        .find_map(|p| match p {
            Part::Latent { tokens, .. } => Some(tokens.clone()),
            _ => None,
        })
        .expect("an image part");
    let d = max_abs_diff(&chw_of(&latent), &f32s(&c["latent"]));
    eprintln!("encoded latent: max |Δ| {d:e}");
    assert!(d <= TOL, "encoded latent differs by {d}");
    let (_, h) = Rows::prefill(b.model(), &[parts], 0).unwrap();
    let n = h.dim(1).unwrap();
    let logits = b
        .model()
        .logits(&h.get(0).unwrap().get(n - 1).unwrap())
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let d = max_abs_diff(&logits, &f32s(&c["logits"]));
    eprintln!("image prompt logits: max |Δ| {d:e}");
    assert!(d <= TOL, "logits differ by {d}");
    let out = b.generate_batch(&[req], &mut Hooks::new()).unwrap();
    let Generated::Text { ids, .. } = &out[0].segments[0] else {
        panic!("text expected")
    };
    let drawn = u32s(&c["drawn"]);
    let eos = b.model().vocab.eos;
    let upto = drawn
        .iter()
        .position(|&i| i == eos)
        .map_or(drawn.len(), |e| e + 1);
    assert_eq!(ids.as_slice(), &drawn[..upto]);
}

#[test]
fn a_vae_of_other_channels_is_refused_by_name() {
    let dir = tempfile_dir();
    let cfg = dir.join("vae/config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["latent_channels"] = 3.into();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let files = any2any_core::ModelFiles::from_dir(&dir).unwrap();
    let e = load_backend(&files, &LoadOptions::default())
        .err()
        .expect("a 3-channel VAE for a 4-channel model must be refused");
    let s = e.to_string();
    assert!(s.contains("vae") || s.contains("latent"), "{s}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A scratch copy of the fixture.
fn tempfile_dir() -> std::path::PathBuf {
    let dst = std::env::temp_dir().join(format!("tf-vae-{}", std::process::id()));
    any2any_test_util::copy_fixture_files(NAME, &dst);
    any2any_test_util::copy_fixture_files(&format!("{NAME}/vae"), &dst.join("vae"));
    dst
}
