//! The KL VAE against diffusers 0.31.0 `AutoencoderKL` on the tiny SDXL-shaped VAE of
//! `tests/fixtures/janusflow-tiny/vae` (written by `scripts/fixtures/make_janusflow.py`).

use any2any_core::candle_core::{DType, Device, Tensor};
use any2any_diffusion::vae::KlVae;
use any2any_test_util::{f32s, fixture_dir, max_abs_diff, parity};

fn vae(dtype: DType) -> KlVae {
    KlVae::from_dir(
        &fixture_dir("janusflow-tiny").join("vae"),
        dtype,
        &Device::Cpu,
    )
    .expect("vae")
}

#[test]
fn decode_matches_diffusers() {
    let p = parity("janusflow-tiny");
    let v = vae(DType::F32);
    assert_eq!(v.config().downsample_factor(), 8);
    assert!((v.config().scaling_factor - 0.13025).abs() < 1e-12);
    let z = Tensor::from_vec(f32s(&p["vae_latent"]), (1, 4, 4, 4), &Device::Cpu).unwrap();
    let px = v.decode(&z).unwrap();
    assert_eq!(px.dims(), &[1, 3, 32, 32]);
    let got = px.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let err = max_abs_diff(&got, &f32s(&p["vae_decoded"]));
    eprintln!("decoded pixels: max |Δ| = {err:e}");
    assert!(err <= 1e-4, "decoded pixels differ by {err}");
}

#[test]
fn encode_mean_matches_diffusers() {
    let p = parity("janusflow-tiny");
    let v = vae(DType::F32);
    let x = Tensor::from_vec(f32s(&p["vae_pixels"]), (1, 3, 32, 32), &Device::Cpu).unwrap();
    let m = v.encode_mean(&x).unwrap();
    assert_eq!(m.dims(), &[1, 4, 4, 4]);
    let got = m.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let err = max_abs_diff(&got, &f32s(&p["vae_latent_mean"]));
    eprintln!("latent mean: max |Δ| = {err:e}");
    assert!(err <= 1e-4, "latent mean differs by {err}");
    // the mean is deterministic (the pinned log-variance leaves no noise in the sample)
    let again = v
        .encode_mean(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    assert_eq!(got, again);
}

#[test]
fn f16_is_upcast_and_bad_shapes_are_named() {
    let v = vae(DType::F16);
    assert_eq!(v.dtype(), DType::F32);
    let z = Tensor::zeros((1, 3, 4, 4), DType::F32, &Device::Cpu).unwrap();
    let e = v.decode(&z).unwrap_err().to_string();
    assert!(e.contains("latents") && e.contains("[1, 3, 4, 4]"), "{e}");
    let x = Tensor::zeros((1, 3, 30, 30), DType::F32, &Device::Cpu).unwrap();
    let e = v.encode_mean(&x).unwrap_err().to_string();
    assert!(e.contains("pixels") && e.contains("multiples of 8"), "{e}");
}

#[test]
fn a_batch_decodes_as_each_image_alone() {
    let p = parity("janusflow-tiny");
    let v = vae(DType::F32);
    let z = Tensor::from_vec(f32s(&p["vae_latent"]), (1, 4, 4, 4), &Device::Cpu).unwrap();
    let z2 = Tensor::cat(&[&z, &(&z * -0.5).unwrap()], 0).unwrap();
    let both = v.decode(&z2).unwrap();
    let second = v.decode(&z2.narrow(0, 1, 1).unwrap()).unwrap();
    let got = both
        .narrow(0, 1, 1)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let want = second.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(max_abs_diff(&got, &want) <= 1e-6);
}
