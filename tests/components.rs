//! Multi-part checkpoints: components from a diffusers `model_index.json`, from a family's own
//! layout (Show-o's `magvit/`, Chameleon's VQGAN files) and from the user (`--component
//! NAME=DIR_OR_HUB_ID`, a local folder or a hub id from the offline HF cache).

mod common;
use any2any::candle_core::{DType, Device, Tensor};
use any2any::loading::{parse_component, Component};
use any2any::{Error, LoadOptions, ModelFiles, Pipeline};
use common::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn copy(from: &Path, to: &Path, files: &[&str]) {
    std::fs::create_dir_all(to).unwrap();
    for f in files {
        std::fs::copy(from.join(f), to.join(f))
            .unwrap_or_else(|e| panic!("copy {}: {e}", from.join(f).display()));
    }
}

fn opts(components: &[(&str, &Path)]) -> LoadOptions {
    LoadOptions {
        components: components
            .iter()
            .map(|(n, p)| (n.to_string(), p.display().to_string()))
            .collect(),
        ..Default::default()
    }
}

fn load(dir: &Path, o: LoadOptions) -> Result<Pipeline, Error> {
    Pipeline::load(dir.to_str().unwrap(), o)
}

fn run(args: &[&str], hf_home: Option<&Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_any2any"));
    c.args(args).env("HF_HUB_OFFLINE", "1");
    if let Some(h) = hf_home {
        c.env("HF_HOME", h);
    }
    c.output().expect("run any2any")
}

#[track_caller]
fn ok_json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// Show-o's LM without its `magvit/` (tmp/model) and the MAGVIT alone elsewhere (tmp/elsewhere).
fn split_showo() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let src = fixture_dir("showo-tiny");
    let model = t.path().join("model");
    let mv = t.path().join("elsewhere");
    copy(
        &src,
        &model,
        &["config.json", "model.safetensors", "phi_config.json"],
    );
    copy(
        &src.join("magvit"),
        &mv,
        &["config.json", "model.safetensors"],
    );
    (t, model, mv)
}

fn showo_decode(p: &Pipeline) -> Result<Vec<u8>, Error> {
    let d = &parity("showo-tiny")["magvit_decode"];
    p.decode_codes(&u32s(&d["codes"]), 4, 4)
        .map(|img| img.into_raw())
}

#[test]
fn showo_magvit_component_from_another_dir_decodes_the_same() {
    let normal = load(&fixture_dir("showo-tiny"), LoadOptions::default()).unwrap();
    let want = showo_decode(&normal).unwrap();
    let ref_pixels = u32s(&parity("showo-tiny")["magvit_decode"]["pixels"]);
    assert!(want
        .iter()
        .zip(&ref_pixels)
        .all(|(&a, &b)| (a as i64 - b as i64).abs() <= 1));
    let c = normal.files().component("magvit").expect("magvit listed");
    assert_eq!(c.dir, fixture_dir("showo-tiny").join("magvit"));
    assert_eq!(
        (c.dtype, c.weights.len(), c.optional),
        (Some(DType::F32), 1, true)
    );

    let (_t, model, mv) = split_showo();
    let without = load(&model, LoadOptions::default()).unwrap();
    assert!(without.files().component("magvit").is_none());
    let e = showo_decode(&without).unwrap_err();
    assert!(
        matches!(e, Error::MissingFile { .. }) && e.to_string().contains("--component magvit="),
        "{e}"
    );

    let with = load(&model, opts(&[("magvit", &mv)])).unwrap();
    assert_eq!(showo_decode(&with).unwrap(), want);
    let c = with.files().component("magvit").unwrap();
    assert_eq!(c.dir, mv);
    assert_eq!(c.config, Some(mv.join("config.json")));
    assert_eq!(
        c.dtype,
        Some(DType::F32),
        "the layout's f32 applies to the override"
    );
}

#[test]
fn showo_magvit_override_in_diffusers_file_names() {
    // A folder that is not in the layout's names is read as a generic component.
    let (t, model, mv) = split_showo();
    let other = t.path().join("renamed");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::rename(
        mv.join("model.safetensors"),
        other.join("diffusion_pytorch_model.safetensors"),
    )
    .unwrap();
    std::fs::rename(mv.join("config.json"), other.join("config.json")).unwrap();
    let normal = load(&fixture_dir("showo-tiny"), LoadOptions::default()).unwrap();
    let with = load(&model, opts(&[("magvit", &other)])).unwrap();
    assert_eq!(showo_decode(&with).unwrap(), showo_decode(&normal).unwrap());
    // an empty folder names the component and what was looked for
    let empty = t.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    match load(&model, opts(&[("magvit", &empty)])) {
        Err(e @ Error::MissingFile { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("component `magvit`") && m.contains("config.json"),
                "{m}"
            );
        }
        Err(e) => panic!("expected MissingFile, got {e:?}"),
        Ok(_) => panic!("expected an error"),
    }
}

fn chameleon_decode(p: &Pipeline) -> Result<Vec<u8>, Error> {
    let c = &parity("chameleon-tiny")["decode"];
    let (h, w) = (
        c["height"].as_u64().unwrap() as usize,
        c["width"].as_u64().unwrap() as usize,
    );
    p.decode_codes(&u32s(&c["codes"]), h, w)
        .map(|img| img.into_raw())
}

#[test]
fn chameleon_vqgan_component_from_another_dir() {
    let normal = load(&chameleon_dir(), LoadOptions::default()).unwrap();
    let want = chameleon_decode(&normal).unwrap();
    let c = normal.files().component("vqgan").expect("vqgan listed");
    assert_eq!(
        c.weights,
        vec![chameleon_dir().join("vqgan_decoder.safetensors")]
    );
    assert_eq!(c.config, Some(chameleon_dir().join("vqgan_config.json")));

    let t = tempfile::tempdir().unwrap();
    let model = t.path().join("model");
    copy(
        &chameleon_dir(),
        &model,
        &["config.json", "model.safetensors", "tokenizer.json"],
    );
    let without = load(&model, LoadOptions::default()).unwrap();
    let e = chameleon_decode(&without).unwrap_err().to_string();
    assert!(e.contains("--component vqgan="), "{e}");

    // the safetensors conversion elsewhere
    let st = t.path().join("vq-st");
    copy(
        &chameleon_dir(),
        &st,
        &["vqgan_decoder.safetensors", "vqgan_config.json"],
    );
    let with = load(&model, opts(&[("vqgan", &st)])).unwrap();
    assert_eq!(chameleon_decode(&with).unwrap(), want);
    assert_eq!(with.files().component("vqgan").unwrap().dir, st);

    // the original release's vqgan.ckpt + vqgan.yaml elsewhere (the family's file names)
    let ckpt = t.path().join("vq-ckpt");
    copy(
        &fixture_dir("chameleon-raw-tiny/tokenizer"),
        &ckpt,
        &["vqgan.ckpt", "vqgan.yaml"],
    );
    let with = load(&model, opts(&[("vqgan", &ckpt)])).unwrap();
    let got = chameleon_decode(&with).unwrap();
    let px = u32s(&parity("chameleon-tiny")["decode"]["pixels"]);
    assert!(got
        .iter()
        .zip(&px)
        .all(|(&a, &b)| (a as i64 - b as i64).abs() <= 1));
    let c = with.files().component("vqgan").unwrap();
    assert_eq!(c.config, Some(ckpt.join("vqgan.yaml")));
}

#[test]
fn original_chameleon_layout_takes_its_vqgan_from_a_component() {
    let t = tempfile::tempdir().unwrap();
    let raw = fixture_dir("chameleon-raw-tiny");
    let root = t.path().join("anole");
    copy(
        &raw.join("models/7b"),
        &root.join("models/7b"),
        &["params.json", "consolidated.pth"],
    );
    copy(
        &raw.join("tokenizer"),
        &root.join("tokenizer"),
        &["text_tokenizer.json"],
    );
    let vq = t.path().join("vq");
    copy(&raw.join("tokenizer"), &vq, &["vqgan.ckpt", "vqgan.yaml"]);
    match load(&root, LoadOptions::default()) {
        Err(e @ Error::MissingFile { .. }) => assert!(e.to_string().contains("VQGAN"), "{e}"),
        Err(e) => panic!("expected MissingFile, got {e:?}"),
        Ok(_) => panic!("loaded without a VQGAN"),
    }
    let with = load(&root, opts(&[("vqgan", &vq)])).unwrap();
    let normal = load(&raw, LoadOptions::default()).unwrap();
    assert_eq!(
        normal.files().component("vqgan").unwrap().weights,
        vec![raw.join("tokenizer/vqgan.ckpt")],
        "the original layout lists the VQGAN of tokenizer/"
    );
    assert_eq!(
        chameleon_decode(&with).unwrap(),
        chameleon_decode(&normal).unwrap()
    );
    assert_eq!(with.files().component("vqgan").unwrap().dir, vq);
}

fn save(path: &Path, tensors: &[(&str, Tensor)]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let m: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    any2any::candle_core::safetensors::save(&m, path).unwrap();
}

fn write_json(path: &Path, v: serde_json::Value) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

const UNET_INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";
const SHARDS: [&str; 2] = [
    "diffusion_pytorch_model-00001-of-00002.safetensors",
    "diffusion_pytorch_model-00002-of-00002.safetensors",
];

/// A diffusers pipeline: `unet/` (sharded), `vae/`, `scheduler/` (config only), a `[null,
/// null]` entry and an entry whose sub-folder is absent.
fn diffusers_dir(root: &Path) {
    write_json(
        &root.join("model_index.json"),
        serde_json::json!({
            "_class_name": "Emu2GenPipeline",
            "_diffusers_version": "0.24.0",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "safety_checker": [null, null],
            "feature_extractor": ["transformers", "CLIPImageProcessor"],
            "requires_safety_checker": false
        }),
    );
    let dev = Device::Cpu;
    let unet = root.join("unet");
    write_json(
        &unet.join("config.json"),
        serde_json::json!({"in_channels": 4}),
    );
    save(
        &unet.join(SHARDS[0]),
        &[("a", Tensor::ones(2, DType::F32, &dev).unwrap())],
    );
    save(
        &unet.join(SHARDS[1]),
        &[("b", Tensor::zeros(3, DType::F32, &dev).unwrap())],
    );
    write_json(
        &unet.join(UNET_INDEX),
        serde_json::json!({"metadata": {}, "weight_map": {"a": SHARDS[0], "b": SHARDS[1]}}),
    );
    let vae = root.join("vae");
    write_json(
        &vae.join("config.json"),
        serde_json::json!({"latent_channels": 4}),
    );
    let w = Tensor::new(&[1.5f32, -2.0, 0.25], &dev).unwrap();
    save(
        &vae.join("diffusion_pytorch_model.safetensors"),
        &[("decoder.w", w)],
    );
    write_json(
        &root.join("scheduler/scheduler_config.json"),
        serde_json::json!({"num_train_timesteps": 1000}),
    );
}

#[test]
fn diffusers_model_index_becomes_components() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("pipe");
    diffusers_dir(&root);
    let f = ModelFiles::from_dir(&root).unwrap();
    assert_eq!(f.config, root.join("model_index.json"));
    assert!(f.weights.is_empty());
    let names: Vec<&str> = f.components.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        ["scheduler", "unet", "vae"],
        "[null, null] and absent folders are not components"
    );
    let unet = f.component("unet").unwrap();
    assert_eq!(
        unet.weights,
        SHARDS.map(|s| root.join("unet").join(s)).to_vec()
    );
    assert_eq!(unet.config, Some(root.join("unet/config.json")));
    assert_eq!(
        unet.class,
        Some(("diffusers".to_string(), "UNet2DConditionModel".to_string()))
    );
    assert!(!unet.optional && unet.dtype.is_none());
    let sched = f.component("scheduler").unwrap();
    assert!(sched.weights.is_empty());
    assert_eq!(
        sched.config,
        Some(root.join("scheduler/scheduler_config.json"))
    );
    assert_eq!(
        sched.require_config().unwrap(),
        root.join("scheduler/scheduler_config.json")
    );

    // the component's own dtype wins over the default
    let dev = Device::Cpu;
    let vb = f.component_var_builder("vae", DType::F32, &dev).unwrap();
    let x = vb.get(3, "decoder.w").unwrap();
    assert_eq!(x.dtype(), DType::F32);
    assert_eq!(x.to_vec1::<f32>().unwrap(), [1.5, -2.0, 0.25]);
    let mut f16 = f.clone();
    f16.components.get_mut("vae").unwrap().dtype = Some(DType::F16);
    let vb = f16.component_var_builder("vae", DType::F32, &dev).unwrap();
    assert_eq!(vb.get(3, "decoder.w").unwrap().dtype(), DType::F16);
    let vb = f.component_var_builder("unet", DType::F32, &dev).unwrap();
    assert_eq!(vb.get(3, "b").unwrap().dims(), [3], "both shards are read");

    // named errors: no weights, no such component
    let e = f
        .component_var_builder("scheduler", DType::F32, &dev)
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("weights of component `scheduler`"),
        "{e}"
    );
    let e = f
        .component_var_builder("safety_checker", DType::F32, &dev)
        .err()
        .unwrap();
    let m = e.to_string();
    assert!(
        m.contains("`safety_checker`") && m.contains("scheduler, unet, vae"),
        "{m}"
    );

    // the diffusers layout loads as far as the family check
    match load(&root, LoadOptions::default()) {
        Err(Error::UnknownFamily { found, path, .. }) => {
            assert_eq!(found, "Emu2GenPipeline");
            assert_eq!(path, root.join("model_index.json"));
        }
        Err(e) => panic!("expected UnknownFamily, got {e:?}"),
        Ok(_) => panic!("no family loads a diffusers pipeline yet"),
    }
}

#[test]
fn diffusers_errors_name_the_component_and_file() {
    let fresh = || {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("a/pipe");
        diffusers_dir(&root);
        (t, root)
    };
    // a shard the index lists is absent
    let (_t, root) = fresh();
    std::fs::remove_file(root.join("unet").join(SHARDS[1])).unwrap();
    match ModelFiles::from_dir(&root) {
        Err(Error::MissingFile {
            dir,
            what,
            looked_for,
        }) => {
            assert!(dir.contains("component `unet`"), "{dir}");
            assert!(what.contains(UNET_INDEX), "{what}");
            assert_eq!(looked_for, SHARDS[1]);
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    // a shard name that escapes the folder is refused, even when the file exists there
    let (t, root) = fresh();
    std::fs::copy(
        root.join("unet").join(SHARDS[1]),
        t.path().join("a/x.safetensors"),
    )
    .unwrap();
    write_json(
        &root.join("unet").join(UNET_INDEX),
        serde_json::json!({"weight_map": {"a": SHARDS[0], "b": "../../x.safetensors"}}),
    );
    match ModelFiles::from_dir(&root) {
        Err(Error::Config { path, msg }) => {
            assert_eq!(path, root.join("unet").join(UNET_INDEX));
            assert!(
                msg.contains("component `unet`") && msg.contains("`../../x.safetensors`"),
                "{msg}"
            );
        }
        other => panic!("expected Config, got {other:?}"),
    }
    // a sub-folder without its config
    let (_t, root) = fresh();
    std::fs::remove_file(root.join("vae/config.json")).unwrap();
    match ModelFiles::from_dir(&root) {
        Err(Error::MissingFile {
            dir,
            what,
            looked_for,
        }) => {
            assert!(dir.contains("component `vae`"), "{dir}");
            assert!(
                what.contains("config") && what.contains("AutoencoderKL"),
                "{what}"
            );
            assert!(looked_for.contains("config.json"), "{looked_for}");
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    // an entry that is neither [library, class] nor [null, null]
    let (_t, root) = fresh();
    write_json(
        &root.join("model_index.json"),
        serde_json::json!({"_class_name": "X", "vae": ["diffusers", null]}),
    );
    match ModelFiles::from_dir(&root) {
        Err(Error::Config { path, msg }) => {
            assert_eq!(path, root.join("model_index.json"));
            assert!(msg.contains("`vae`"), "{msg}");
        }
        other => panic!("expected Config, got {other:?}"),
    }
    // neither config.json nor model_index.json: the old error
    let (_t, root) = fresh();
    std::fs::remove_file(root.join("model_index.json")).unwrap();
    match ModelFiles::from_dir(&root) {
        Err(Error::MissingFile { looked_for, .. }) => assert_eq!(looked_for, "config.json"),
        other => panic!("expected MissingFile, got {other:?}"),
    }
}

#[test]
fn user_components_replace_add_and_are_checked() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("pipe");
    diffusers_dir(&root);
    let other = t.path().join("sdxl-vae");
    write_json(
        &other.join("config.json"),
        serde_json::json!({"latent_channels": 4}),
    );
    save(
        &other.join("diffusion_pytorch_model.safetensors"),
        &[(
            "decoder.w",
            Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
        )],
    );
    let f = ModelFiles::resolve(
        root.to_str().unwrap(),
        &opts(&[("vae", &other), ("text_encoder", &root.join("unet"))]),
    )
    .unwrap();
    let names: Vec<&str> = f.components.keys().map(String::as_str).collect();
    assert_eq!(names, ["scheduler", "text_encoder", "unet", "vae"]);
    let vae = f.component("vae").unwrap();
    assert_eq!(vae.dir, other);
    assert_eq!(
        vae.weights,
        vec![other.join("diffusion_pytorch_model.safetensors")]
    );
    assert_eq!(vae.class, None);
    assert_eq!(f.component("text_encoder").unwrap().weights.len(), 2);

    let invalid =
        |o: LoadOptions, needles: &[&str]| match ModelFiles::resolve(root.to_str().unwrap(), &o) {
            Err(e @ Error::InvalidArgument { .. }) => {
                let m = e.to_string();
                assert!(m.contains("`component`"), "{m}");
                for n in needles {
                    assert!(m.contains(n), "{n}: {m}");
                }
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        };
    invalid(
        opts(&[("vae", &other), ("vae", &other)]),
        &["`vae` is given twice"],
    );
    let nope = t.path().join("nope");
    invalid(
        opts(&[("vae", &nope)]),
        &["vae=", "nope", "no such directory"],
    );
    invalid(
        opts(&[("vae", &other.join("config.json"))]),
        &["vae=", "a file, not a directory"],
    );
    invalid(opts(&[("../vae", &other)]), &["`../vae`"]);
    assert_eq!(
        parse_component("vae=stabilityai/sdxl-vae").unwrap(),
        ("vae".into(), "stabilityai/sdxl-vae".into())
    );
}

/// A hub repository in the offline HF cache with `files` copied in from `(name, source)`.
fn fake_repo(home: &Path, id: &str, files: &[(&str, &Path)]) -> PathBuf {
    let repo = home.join(format!("hub/models--{}", id.replace('/', "--")));
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let snap = repo.join("snapshots").join(rev);
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), rev).unwrap();
    for (name, src) in files {
        let to = snap.join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src, to).unwrap();
    }
    snap
}

#[test]
fn hub_id_components_from_the_offline_cache() {
    let home = tempfile::tempdir().unwrap();
    let mv = fixture_dir("showo-tiny/magvit");
    let snap = fake_repo(
        home.path(),
        "acme/magvit",
        &[
            ("config.json", &mv.join("config.json")),
            ("model.safetensors", &mv.join("model.safetensors")),
        ],
    );
    let (t, model, _) = split_showo();
    let m = model.to_str().unwrap();
    let j = ok_json(&run(
        &[
            "inspect",
            "--model",
            m,
            "--component",
            "magvit=acme/magvit",
            "--json",
        ],
        Some(home.path()),
    ));
    let comps = j["components"].as_array().unwrap();
    assert_eq!(comps.len(), 1, "{j}");
    assert_eq!(comps[0]["name"], "magvit");
    assert_eq!(comps[0]["dir"], snap.display().to_string());
    assert_eq!(
        (
            comps[0]["dtype"].as_str(),
            comps[0]["weight_files"].as_u64()
        ),
        (Some("f32"), Some(1))
    );

    // decoding through the hub component gives the normal layout's pixels
    let codes = csv(&u32s(&parity("showo-tiny")["magvit_decode"]["codes"]));
    let decode = |model: &str, extra: &[&str], out: &Path| {
        let mut a = vec!["decode", "--model", model, "--codes", codes.as_str()];
        a.extend_from_slice(&["--height", "4", "--width", "4"]);
        a.extend_from_slice(extra);
        a.extend_from_slice(&["--out", out.to_str().unwrap()]);
        let o = run(&a, Some(home.path()));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        std::fs::read(out).unwrap()
    };
    let normal = decode(
        fixture_dir("showo-tiny").to_str().unwrap(),
        &[],
        &t.path().join("a.png"),
    );
    let hub = decode(
        m,
        &["--component", "magvit=acme/magvit"],
        &t.path().join("b.png"),
    );
    assert_eq!(normal, hub);

    // a hub id the cache lacks names the component and the repository
    let o = run(
        &[
            "inspect",
            "--model",
            m,
            "--component",
            "magvit=acme/missing",
        ],
        Some(home.path()),
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("component `magvit`") && err.contains("hub:acme/missing"),
        "{err}"
    );
}

#[test]
fn hub_diffusers_repo_in_process() {
    // The only test of this binary that touches HF_HOME (read by hf-hub when a hub id resolves).
    let home = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let root = src.path().join("pipe");
    diffusers_dir(&root);
    let names = [
        "model_index.json".to_string(),
        "unet/config.json".to_string(),
        format!("unet/{UNET_INDEX}"),
        format!("unet/{}", SHARDS[0]),
        format!("unet/{}", SHARDS[1]),
        "vae/config.json".to_string(),
        "vae/diffusion_pytorch_model.safetensors".to_string(),
        "scheduler/scheduler_config.json".to_string(),
    ];
    let files: Vec<(String, PathBuf)> = names.iter().map(|f| (f.clone(), root.join(f))).collect();
    let refs: Vec<(&str, &Path)> = files
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    let snap = fake_repo(home.path(), "acme/emu2-gen", &refs);
    std::env::set_var("HF_HOME", home.path());
    let offline = LoadOptions {
        offline: true,
        ..Default::default()
    };
    let f = ModelFiles::resolve("acme/emu2-gen", &offline).unwrap();
    assert_eq!(f.config, snap.join("model_index.json"));
    let names: Vec<&str> = f.components.keys().map(String::as_str).collect();
    assert_eq!(names, ["scheduler", "unet", "vae"]);
    assert_eq!(f.component("unet").unwrap().dir, snap.join("unet"));
    assert_eq!(
        f.component("unet").unwrap().weights,
        SHARDS.map(|s| snap.join("unet").join(s)).to_vec()
    );

    // a shard missing from the cache is named with its component
    let partial: Vec<(&str, &Path)> = refs
        .iter()
        .filter(|(n, _)| !n.ends_with(SHARDS[1]))
        .copied()
        .collect();
    let home2 = tempfile::tempdir().unwrap();
    fake_repo(home2.path(), "acme/emu2-gen", &partial);
    std::env::set_var("HF_HOME", home2.path());
    match ModelFiles::resolve("acme/emu2-gen", &offline) {
        Err(Error::MissingFile {
            dir, looked_for, ..
        }) => {
            assert!(
                dir.contains("component `unet`") && dir.contains("hub:acme/emu2-gen"),
                "{dir}"
            );
            assert_eq!(looked_for, SHARDS[1]);
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    // a hub-id component over a local model
    let (vcfg, vweights) = (
        root.join("vae/config.json"),
        root.join("vae/diffusion_pytorch_model.safetensors"),
    );
    let vae_only: Vec<(&str, &Path)> = vec![
        ("config.json", &vcfg),
        ("diffusion_pytorch_model.safetensors", &vweights),
    ];
    let vsnap = fake_repo(home2.path(), "acme/sdxl-vae", &vae_only);
    let c = Component::resolve("vae", "acme/sdxl-vae", &offline).unwrap();
    assert_eq!(c.dir, vsnap);
    assert_eq!(c.config, Some(vsnap.join("config.json")));
    assert_eq!(
        c.weights,
        vec![vsnap.join("diffusion_pytorch_model.safetensors")]
    );
}

#[test]
fn cli_component_flag_and_inspect() {
    let showo = fixture_dir("showo-tiny");
    let s = showo.to_str().unwrap();
    let j = ok_json(&run(&["inspect", "--model", s, "--json"], None));
    let c = &j["components"][0];
    assert_eq!(c["name"], "magvit");
    assert_eq!(c["dir"], showo.join("magvit").display().to_string());
    assert_eq!(c["optional"], true);
    assert_eq!(j["family"], "showo", "the model info is still there");

    let o = run(&["inspect", "--model", s], None);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("component"))
        .unwrap_or_else(|| panic!("no component line in\n{text}"));
    assert!(
        line.contains("magvit") && line.contains("f32") && line.contains("1 weight file"),
        "{line}"
    );

    let (_t, model, mv) = split_showo();
    let arg = format!("magvit={}", mv.display());
    let j = ok_json(&run(
        &[
            "inspect",
            "--model",
            model.to_str().unwrap(),
            "--component",
            &arg,
            "--json",
        ],
        None,
    ));
    assert_eq!(j["components"][0]["dir"], mv.display().to_string());

    for bad in ["magvit", "magvit=", "=dir"] {
        let o = run(&["inspect", "--model", s, "--component", bad], None);
        assert_eq!(o.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("`component`") && err.contains("NAME=DIR_OR_HUB_ID"),
            "{bad}: {err}"
        );
    }
    // a family without components lists none
    let j = ok_json(&run(
        &[
            "inspect",
            "--model",
            janus_dir().to_str().unwrap(),
            "--json",
        ],
        None,
    ));
    assert_eq!(j["components"], serde_json::json!([]));
}
