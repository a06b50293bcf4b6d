//! Bad inputs get named errors: a UNet config that does not match its weights, a missing
//! component, unsupported options, conditioning of the wrong shape, unknown schedulers.

use any2any_core::candle_core::{DType, Device, Tensor};
use any2any_core::Error;
use any2any_diffusion::scheduler::SchedulerConfig;
use any2any_diffusion::unet::{TextTime, UNet2DConditionModel, UNetCondition};
use any2any_test_util::fixture_dir;
use std::path::{Path, PathBuf};

fn unet_dir(name: &str) -> PathBuf {
    fixture_dir("unet-tiny").join(name).join("unet")
}

/// A copy of fixture `name`'s `unet/` whose config.json is edited by `edit`.
fn edited(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let src = unet_dir(name);
    let dir = tempfile::tempdir().unwrap();
    let w = "diffusion_pytorch_model.safetensors";
    std::fs::copy(src.join(w), dir.path().join(w)).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(src.join("config.json")).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    dir
}

fn load(dir: &Path) -> any2any_core::Result<UNet2DConditionModel> {
    UNet2DConditionModel::from_dir(dir, DType::F32, &Device::Cpu)
}

#[test]
fn config_wider_than_the_weights_names_the_tensor_and_shapes() {
    let d = edited("sdxl", |c| c["cross_attention_dim"] = 32.into());
    match load(d.path()) {
        Err(Error::ShapeMismatch {
            name,
            expected,
            found,
            ..
        }) => {
            assert_eq!(
                name,
                "down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"
            );
            assert_eq!((expected, found), (vec![24, 32], vec![24, 24]));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_with_fewer_layers_than_the_weights_lists_the_unused_tensors() {
    let d = edited("sdxl", |c| c["transformer_layers_per_block"] = 1.into());
    let e = load(d.path()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::WeightFile { .. }), "{e:?}");
    assert!(
        msg.contains("not used by the unet config") && msg.contains("transformer_blocks.1."),
        "{msg}"
    );
}

#[test]
fn config_with_more_layers_than_the_weights_names_the_missing_tensor() {
    let d = edited("sd15", |c| c["layers_per_block"] = 3.into());
    match load(d.path()) {
        Err(Error::MissingTensor { name, .. }) => {
            assert!(name.starts_with("down_blocks.0.resnets.2."), "{name}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsupported_options_are_refused_by_field() {
    for (field, value) in [
        ("addition_embed_type", serde_json::json!("text")),
        ("resnet_time_scale_shift", serde_json::json!("scale_shift")),
        (
            "up_block_types",
            serde_json::json!(["UpBlock2D", "SimpleCrossAttnUpBlock2D"]),
        ),
        ("attention_head_dim", serde_json::json!([2, 4, 8])),
    ] {
        let d = edited("sd15", |c| c[field] = value.clone());
        match load(d.path()) {
            Err(Error::Config { msg, .. }) => {
                let key = field.split('_').next().unwrap();
                assert!(msg.contains(key), "{field}: {msg}")
            }
            other => panic!("{field}: {other:?}"),
        }
    }
}

#[test]
fn a_missing_component_directory_is_named() {
    let e = load(Path::new("/nonexistent/unet")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/unet"), "{e}");
}

#[test]
fn conditioning_of_the_wrong_shape_is_refused() {
    let m = load(&unet_dir("sdxl")).unwrap();
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 4, 8, 8), DType::F32, &dev).unwrap();
    let ehs = Tensor::zeros((2, 5, 24), DType::F32, &dev).unwrap();
    let tt = TextTime::sdxl(
        Tensor::zeros((2, 24), DType::F32, &dev).unwrap(),
        (64, 64),
        (0, 0),
        (64, 64),
    )
    .unwrap();
    let name = |r: any2any_core::Result<Tensor>| match r {
        Err(Error::InvalidArgument { name, .. }) => name,
        other => panic!("{other:?}"),
    };
    // no text_time for a text_time UNet
    assert_eq!(
        name(m.forward(&x, 1.0, &UNetCondition::new(ehs.clone()))),
        "text_time"
    );
    // encoder states of another width, or batch
    let wide = Tensor::zeros((2, 5, 32), DType::F32, &dev).unwrap();
    let c = UNetCondition::new(wide).with_text_time(tt.clone());
    assert_eq!(name(m.forward(&x, 1.0, &c)), "encoder_hidden_states");
    let one = UNetCondition::new(ehs.narrow(0, 0, 1).unwrap()).with_text_time(tt.clone());
    assert_eq!(name(m.forward(&x, 1.0, &one)), "encoder_hidden_states");
    // pooled embeds of the wrong width
    let bad = TextTime::sdxl(
        Tensor::zeros((2, 20), DType::F32, &dev).unwrap(),
        (64, 64),
        (0, 0),
        (64, 64),
    )
    .unwrap();
    let c = UNetCondition::new(ehs.clone()).with_text_time(bad);
    assert_eq!(name(m.forward(&x, 1.0, &c)), "text_embeds");
    // a sample with 3 channels
    let x3 = Tensor::zeros((2, 3, 8, 8), DType::F32, &dev).unwrap();
    assert_eq!(
        name(m.forward(&x3, 1.0, &UNetCondition::new(ehs).with_text_time(tt))),
        "sample"
    );
}

#[test]
fn unclip_needs_class_labels() {
    let m = load(&unet_dir("sd21-unclip")).unwrap();
    let dev = Device::Cpu;
    let x = Tensor::zeros((1, 4, 8, 8), DType::F32, &dev).unwrap();
    let c = UNetCondition::new(Tensor::zeros((1, 5, 24), DType::F32, &dev).unwrap());
    assert!(
        matches!(m.forward(&x, 1.0, &c), Err(Error::InvalidArgument { name, .. }) if name == "class_labels")
    );
}

#[test]
fn scheduler_configs_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let write = |v: serde_json::Value| {
        std::fs::write(dir.path().join("scheduler_config.json"), v.to_string()).unwrap();
        SchedulerConfig::from_dir(dir.path())
    };
    let e = write(serde_json::json!({"_class_name": "LMSDiscreteScheduler"})).unwrap_err();
    assert!(
        matches!(&e, Error::Config { msg, .. } if msg.contains("LMSDiscreteScheduler")),
        "{e:?}"
    );
    let e = write(
        serde_json::json!({"_class_name": "EulerDiscreteScheduler", "use_karras_sigmas": true}),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Config { msg, .. } if msg.contains("use_karras_sigmas")),
        "{e:?}"
    );
    let e = write(serde_json::json!({"_class_name": "PNDMScheduler"})).unwrap_err();
    assert!(
        matches!(&e, Error::Config { msg, .. } if msg.contains("skip_prk_steps")),
        "{e:?}"
    );
    let e = write(
        serde_json::json!({"_class_name": "DDIMScheduler", "num_train_timesteps": 10_000_000}),
    )
    .unwrap_err();
    assert!(
        matches!(&e, Error::Config { msg, .. } if msg.contains("num_train_timesteps")),
        "{e:?}"
    );
    let ok = write(serde_json::json!({"_class_name": "DDIMScheduler", "num_train_timesteps": 10}))
        .unwrap();
    assert!(matches!(ok.build(11), Err(Error::InvalidArgument { name, .. }) if name == "steps"));
    assert!(matches!(ok.build(0), Err(Error::InvalidArgument { name, .. }) if name == "steps"));
    let e = SchedulerConfig::from_dir(Path::new("/nonexistent")).unwrap_err();
    assert!(matches!(e, Error::MissingFile { .. }), "{e:?}");
}
