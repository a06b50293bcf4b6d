//! Janus' understanding-side image encoder: the SigLIP-style ViT `model.vision_model` (HF
//! `JanusVisionModel`) and the MLP `model.aligner` (HF `JanusVisionAlignerMLP`) that projects its
//! patch features into the language model's embedding space.

use candle_core::{bail, DType, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Embedding, LayerNorm, Linear, VarBuilder};
use serde::{Deserialize, Deserializer};

/// The `vision_config` section of a Janus `config.json` (HF `JanusVisionConfig`); missing keys
/// take the HF class defaults, unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct JanusVisionConfig {
    /// Width of the ViT's hidden states.
    pub hidden_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Channels of the input image (3).
    pub num_channels: usize,
    /// Square input side; the JSON may hold an int or an `[h, w]` pair with `h == w`.
    #[serde(deserialize_with = "square_size")]
    pub image_size: usize,
    /// Square patch side; int or `[h, w]` pair with `h == w`.
    #[serde(deserialize_with = "square_size")]
    pub patch_size: usize,
    /// Activation of the MLPs and the aligner, by its HF name (see [`HfActivation`]).
    pub hidden_act: String,
    /// Epsilon of the LayerNorms.
    pub layer_norm_eps: f64,
    /// Training-only; ignored at inference.
    pub attention_dropout: f64,
    /// MLP width over hidden width (see [`JanusVisionConfig::intermediate_size`]).
    pub mlp_ratio: f64,
    /// Whether the q/k/v projections have biases.
    pub attention_bias: bool,
    /// Training-only; ignored at inference.
    pub hidden_dropout_rate: f64,
    /// Output width of the aligner.
    pub projection_dim: usize,
    /// Training-only; ignored at inference.
    pub projection_dropout: f64,
    /// LayerNorm on queries and keys (HF supports it with a single head only).
    pub use_qk_norm: bool,
    /// Training-only; ignored at inference.
    pub initializer_range: f64,
    /// Number of linear layers in the aligner (`fc1` plus `depth - 1` hidden layers).
    pub depth: usize,
    /// Image tokens per image, in the prompt and in a generated image (576 = 24 × 24).
    pub num_image_tokens: usize,
}

impl Default for JanusVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 1024,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 384,
            patch_size: 16,
            hidden_act: "gelu".to_string(),
            layer_norm_eps: 1e-6,
            attention_dropout: 0.0,
            mlp_ratio: 4.0,
            attention_bias: true,
            hidden_dropout_rate: 0.0,
            projection_dim: 2048,
            projection_dropout: 0.0,
            use_qk_norm: false,
            initializer_range: 0.02,
            depth: 2,
            num_image_tokens: 576,
        }
    }
}

fn square_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        One(usize),
        Pair([usize; 2]),
    }
    match Size::deserialize(d)? {
        Size::One(n) => Ok(n),
        Size::Pair([h, w]) if h == w => Ok(h),
        Size::Pair([h, w]) => Err(serde::de::Error::custom(format!(
            "non-square size [{h}, {w}] is not supported"
        ))),
    }
}

impl JanusVisionConfig {
    /// Patches per side (`image_size / patch_size`).
    pub fn grid_size(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Number of patch tokens the model produces (`grid_size^2`).
    pub fn num_patches(&self) -> usize {
        self.grid_size() * self.grid_size()
    }

    /// MLP width: `int(hidden_size * mlp_ratio)`, truncating like Python's `int`.
    pub fn intermediate_size(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }

    /// Refuses shapes the model cannot be built with (zero or indivisible sizes, a patch larger
    /// than the image, q/k norm with several heads, an empty MLP).
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            bail!(
                "vision_config: hidden_size ({}) and num_attention_heads ({}) must be positive",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "vision_config: hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            bail!(
                "vision_config: layer_norm_eps {} must be a finite number > 0",
                self.layer_norm_eps
            );
        }
        if self.patch_size == 0 || self.image_size < self.patch_size {
            bail!(
                "vision_config: patch_size {} must be positive and at most image_size {}",
                self.patch_size,
                self.image_size
            );
        }
        if self.use_qk_norm && self.num_attention_heads != 1 {
            // HF builds LayerNorm(hidden_size) but applies it to per-head [.., head_dim] slices,
            // which only type-checks with a single head.
            bail!(
                "vision_config: use_qk_norm requires num_attention_heads == 1 (as in HF), got {}",
                self.num_attention_heads
            );
        }
        if self.intermediate_size() == 0 {
            bail!(
                "vision_config: hidden_size {} * mlp_ratio {} gives an empty MLP",
                self.hidden_size,
                self.mlp_ratio
            );
        }
        Ok(())
    }
}

/// Activation functions by their Hugging Face `ACT2FN` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HfActivation {
    /// `"gelu"`: exact erf GELU.
    GeluErf,
    /// `"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`: tanh approximation.
    GeluTanh,
    /// `"quick_gelu"`: `x * sigmoid(1.702 x)`.
    QuickGelu,
    /// `"silu"`, `"swish"`.
    Silu,
    /// `"relu"`.
    Relu,
}

impl HfActivation {
    /// The activation of an HF name; an unknown name is an error naming it.
    pub fn from_hf_name(name: &str) -> Result<Self> {
        Ok(match name {
            "gelu" => Self::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "quick_gelu" => Self::QuickGelu,
            "silu" | "swish" => Self::Silu,
            "relu" => Self::Relu,
            other => bail!("unsupported hidden_act {other:?}"),
        })
    }
}

impl Module for HfActivation {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        let x = xs.to_dtype(DType::F32)?;
        let y = match self {
            Self::GeluErf => x.gelu_erf()?,
            Self::GeluTanh => x.gelu()?,
            Self::QuickGelu => (&x * candle_nn::ops::sigmoid(&(&x * 1.702)?)?)?,
            Self::Silu => x.silu()?,
            Self::Relu => x.relu()?,
        };
        y.to_dtype(dtype)
    }
}

/// LayerNorm with f32 statistics and parameters, output cast back to the input dtype.
#[derive(Debug, Clone)]
struct F32LayerNorm(LayerNorm);

impl F32LayerNorm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(size, "weight", candle_nn::Init::Const(1.))?;
        let bias = vb.get_with_hints(size, "bias", candle_nn::Init::Const(0.))?;
        Ok(Self(LayerNorm::new(
            weight.to_dtype(DType::F32)?,
            bias.to_dtype(DType::F32)?,
            eps,
        )))
    }
}

impl Module for F32LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = xs.to_dtype(DType::F32)?.contiguous()?;
        self.0.forward(&x)?.to_dtype(xs.dtype())
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    projection_layer: Linear,
    qk_norm: Option<(F32LayerNorm, F32LayerNorm)>,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &JanusVisionConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let bias = cfg.attention_bias;
        let head_dim = d / cfg.num_attention_heads;
        let qk_norm = if cfg.use_qk_norm {
            // nn.LayerNorm default eps, not layer_norm_eps
            Some((
                F32LayerNorm::load(vb.pp("q_norm"), d, 1e-5)?,
                F32LayerNorm::load(vb.pp("k_norm"), d, 1e-5)?,
            ))
        } else {
            None
        };
        Ok(Self {
            q_proj: candle_nn::linear_b(d, d, bias, vb.pp("q_proj"))?,
            k_proj: candle_nn::linear_b(d, d, bias, vb.pp("k_proj"))?,
            v_proj: candle_nn::linear_b(d, d, bias, vb.pp("v_proj"))?,
            projection_layer: candle_nn::linear(d, d, vb.pp("projection_layer"))?,
            qk_norm,
            num_heads: cfg.num_attention_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, n, d) = xs.dims3()?;
        let dtype = xs.dtype();
        let mut q = self.q_proj.forward(xs)?;
        let mut k = self.k_proj.forward(xs)?;
        let v = self.v_proj.forward(xs)?;
        if let Some((q_norm, k_norm)) = &self.qk_norm {
            q = q_norm.forward(&q)?;
            k = k_norm.forward(&k)?;
        }
        let heads = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, n, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .to_dtype(DType::F32)?
                .contiguous()
        };
        let (q, k, v) = (heads(q)?, heads(k)?, heads(v)?);
        let scores = (q.matmul(&k.t()?.contiguous()?)? * self.scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, n, d))?
            .to_dtype(dtype)?;
        self.projection_layer.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    act: HfActivation,
}

impl Mlp {
    fn load(vb: VarBuilder, cfg: &JanusVisionConfig) -> Result<Self> {
        let inter = cfg.intermediate_size();
        Ok(Self {
            fc1: candle_nn::linear(cfg.hidden_size, inter, vb.pp("fc1"))?,
            fc2: candle_nn::linear(inter, cfg.hidden_size, vb.pp("fc2"))?,
            act: HfActivation::from_hf_name(&cfg.hidden_act)?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.act.forward(&self.fc1.forward(xs)?)?)
    }
}

#[derive(Debug, Clone)]
struct EncoderLayer {
    layer_norm1: F32LayerNorm,
    self_attn: Attention,
    layer_norm2: F32LayerNorm,
    mlp: Mlp,
}

impl EncoderLayer {
    fn load(vb: VarBuilder, cfg: &JanusVisionConfig) -> Result<Self> {
        let eps = cfg.layer_norm_eps;
        Ok(Self {
            layer_norm1: F32LayerNorm::load(vb.pp("layer_norm1"), cfg.hidden_size, eps)?,
            self_attn: Attention::load(vb.pp("self_attn"), cfg)?,
            layer_norm2: F32LayerNorm::load(vb.pp("layer_norm2"), cfg.hidden_size, eps)?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }
}

impl Module for EncoderLayer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.self_attn.forward(&self.layer_norm1.forward(xs)?)?)?;
        &xs + self.mlp.forward(&self.layer_norm2.forward(&xs)?)?
    }
}

/// The ViT at `model.vision_model`: `embeddings.patch_embedding` (conv, stride = patch),
/// `embeddings.position_embedding` (no CLS token), `encoder.layers.{i}`, `post_layernorm`.
#[derive(Debug, Clone)]
pub struct JanusVisionModel {
    patch_embedding: Conv2d,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    post_layernorm: F32LayerNorm,
    cfg: JanusVisionConfig,
    dtype: DType,
}

impl JanusVisionModel {
    /// Loads the model; `vb` points at the `model.vision_model` prefix.
    pub fn load(vb: VarBuilder, cfg: &JanusVisionConfig) -> Result<Self> {
        cfg.validate()?;
        let emb = vb.pp("embeddings");
        let conv_cfg = Conv2dConfig {
            stride: cfg.patch_size,
            ..Default::default()
        };
        let patch_embedding = candle_nn::conv2d(
            cfg.num_channels,
            cfg.hidden_size,
            cfg.patch_size,
            conv_cfg,
            emb.pp("patch_embedding"),
        )?;
        let position_embedding = candle_nn::embedding(
            cfg.num_patches(),
            cfg.hidden_size,
            emb.pp("position_embedding"),
        )?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::load(vb.pp("encoder").pp("layers").pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let post_layernorm =
            F32LayerNorm::load(vb.pp("post_layernorm"), cfg.hidden_size, cfg.layer_norm_eps)?;
        Ok(Self {
            patch_embedding,
            position_embedding,
            layers,
            post_layernorm,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &JanusVisionConfig {
        &self.cfg
    }

    /// Normalised pixels `[B, C, image_size, image_size]` to `[B, num_patches, hidden_size]` in
    /// the weights' dtype: HF's `last_hidden_state`, i.e. after `post_layernorm`, which is what
    /// `get_image_features` passes to the aligner.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = pixel_values.dims4()?;
        if c != self.cfg.num_channels {
            bail!(
                "vision: expected {} channels, got {c}",
                self.cfg.num_channels
            );
        }
        let (gh, gw) = (h / self.cfg.patch_size, w / self.cfg.patch_size);
        if gh * gw != self.cfg.num_patches() {
            bail!(
                "vision: a {h}x{w} image gives {gh}x{gw} patches but the position table has {} \
                 (image_size {}, patch_size {})",
                self.cfg.num_patches(),
                self.cfg.image_size,
                self.cfg.patch_size
            );
        }
        let x = self
            .patch_embedding
            .forward(&pixel_values.to_dtype(self.dtype)?)?;
        let mut x = x
            .flatten_from(2)?
            .transpose(1, 2)?
            .broadcast_add(self.position_embedding.embeddings())?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        self.post_layernorm.forward(&x)
    }
}

/// The understanding aligner at `model.aligner`: `fc1` then, for each of the `depth - 1`
/// `hidden_layers.{i}`, activation followed by the layer (no activation after the last).
#[derive(Debug, Clone)]
pub struct JanusAligner {
    fc1: Linear,
    hidden_layers: Vec<Linear>,
    act: HfActivation,
}

impl JanusAligner {
    /// Loads the aligner; `vb` points at the `model.aligner` prefix. Uses the vision config's
    /// `hidden_size`, `projection_dim`, `depth` and `hidden_act`.
    pub fn load(vb: VarBuilder, cfg: &JanusVisionConfig) -> Result<Self> {
        let p = cfg.projection_dim;
        if p == 0 {
            bail!("vision_config.projection_dim must be positive, got 0");
        }
        let fc1 = candle_nn::linear(cfg.hidden_size, p, vb.pp("fc1"))?;
        let hidden_layers = (0..cfg.depth.saturating_sub(1))
            .map(|i| candle_nn::linear(p, p, vb.pp("hidden_layers").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            fc1,
            hidden_layers,
            act: HfActivation::from_hf_name(&cfg.hidden_act)?,
        })
    }
}

impl Module for JanusAligner {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut x = self.fc1.forward(xs)?;
        for layer in &self.hidden_layers {
            x = layer.forward(&self.act.forward(&x)?)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn tiny() -> JanusVisionConfig {
        JanusVisionConfig {
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            image_size: 32,
            patch_size: 8,
            mlp_ratio: 2.0,
            projection_dim: 48,
            ..Default::default()
        }
    }

    #[test]
    fn config_parsing() {
        let cfg: JanusVisionConfig = serde_json::from_str(
            r#"{"hidden_size": 32, "image_size": [32, 32], "patch_size": 8, "mlp_ratio": 2,
                "model_type": "janus_vision_model"}"#,
        )
        .unwrap();
        assert_eq!(cfg.image_size, 32);
        assert_eq!(cfg.mlp_ratio, 2.0);
        assert_eq!(cfg.intermediate_size(), 64);
        assert_eq!(cfg.num_patches(), 16);
        assert_eq!(cfg.num_hidden_layers, 24);
        assert_eq!(cfg.hidden_act, "gelu");
        assert_eq!(cfg.layer_norm_eps, 1e-6);
        assert!(serde_json::from_str::<JanusVisionConfig>(r#"{"image_size": [32, 16]}"#).is_err());
        let bad = JanusVisionConfig {
            hidden_size: 30,
            num_attention_heads: 4,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
        assert!(HfActivation::from_hf_name("gelu").unwrap() == HfActivation::GeluErf);
        assert!(HfActivation::from_hf_name("nope").is_err());
    }

    #[test]
    fn tiny_shapes_and_keys() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let cfg = tiny();
        let vision = JanusVisionModel::load(vb.pp("model").pp("vision_model"), &cfg)?;
        let aligner = JanusAligner::load(vb.pp("model").pp("aligner"), &cfg)?;
        let px = Tensor::randn(0f32, 1., (2, 3, 32, 32), &dev)?;
        let feats = vision.forward(&px)?;
        assert_eq!(feats.dims(), [2, 16, 32]);
        let out = aligner.forward(&feats)?;
        assert_eq!(out.dims(), [2, 16, 48]);
        assert!(vision
            .forward(&Tensor::zeros((1, 3, 40, 40), DType::F32, &dev)?)
            .is_err());

        let data = vm.data().lock().unwrap();
        for k in [
            "model.vision_model.embeddings.patch_embedding.weight",
            "model.vision_model.embeddings.patch_embedding.bias",
            "model.vision_model.embeddings.position_embedding.weight",
            "model.vision_model.encoder.layers.0.layer_norm1.weight",
            "model.vision_model.encoder.layers.0.self_attn.q_proj.bias",
            "model.vision_model.encoder.layers.1.self_attn.projection_layer.weight",
            "model.vision_model.encoder.layers.1.mlp.fc1.weight",
            "model.vision_model.encoder.layers.1.mlp.fc2.bias",
            "model.vision_model.encoder.layers.1.layer_norm2.bias",
            "model.vision_model.post_layernorm.weight",
            "model.aligner.fc1.weight",
            "model.aligner.hidden_layers.0.weight",
        ] {
            assert!(data.contains_key(k), "missing {k}");
        }
        assert!(!data.contains_key("model.aligner.hidden_layers.1.weight"));
        assert!(!data.keys().any(|k| k.contains("q_norm")));
        assert_eq!(
            data["model.vision_model.encoder.layers.0.mlp.fc1.weight"].dims(),
            [64, 32]
        );
        assert_eq!(
            data["model.vision_model.embeddings.patch_embedding.weight"].dims(),
            [32, 3, 8, 8]
        );
        Ok(())
    }

    #[test]
    fn qk_norm_single_head() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let cfg = JanusVisionConfig {
            num_attention_heads: 1,
            use_qk_norm: true,
            ..tiny()
        };
        let vision = JanusVisionModel::load(vb, &cfg)?;
        let px = Tensor::randn(0f32, 1., (1, 3, 32, 32), &dev)?;
        assert_eq!(vision.forward(&px)?.dims(), [1, 16, 32]);
        assert!(vm
            .data()
            .lock()
            .unwrap()
            .contains_key("encoder.layers.0.self_attn.q_norm.weight"));
        let multi = JanusVisionConfig {
            use_qk_norm: true,
            ..tiny()
        };
        assert!(multi.validate().is_err());
        Ok(())
    }
    fn json_f32(v: &serde_json::Value) -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    fn max_abs_diff(a: &Tensor, b: &[f32]) -> f32 {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    }

    #[test]
    fn vision_and_aligner_match_hf_fixture() -> Result<()> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/janus-tiny");
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let cfg: JanusVisionConfig =
            serde_json::from_value(config["vision_config"].clone()).unwrap();
        let parity: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("parity.json")).unwrap())
                .unwrap();
        let il = &parity["image_logits"];
        let dev = Device::Cpu;
        // SAFETY: the fixture file is not modified while mapped.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &dev)?
        };
        let vision = JanusVisionModel::load(vb.pp("model").pp("vision_model"), &cfg)?;
        let aligner = JanusAligner::load(vb.pp("model").pp("aligner"), &cfg)?;

        // the fixture image is already 32x32, so preprocessing is rescale + normalise (mean/std 0.5)
        let img = image::open(dir.join(il["image"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let (w, h) = img.dimensions();
        let (w, h) = (w as usize, h as usize);
        let hwc: Vec<f32> = img
            .as_raw()
            .iter()
            .map(|&v| (v as f32 / 255.0 - 0.5) / 0.5)
            .collect();
        let px = Tensor::from_vec(hwc, (1, h, w, 3), &dev)?
            .permute((0, 3, 1, 2))?
            .contiguous()?;

        let hidden = vision.forward(&px)?;
        assert_eq!(hidden.dims(), [1, 16, 32]);
        let d = max_abs_diff(&hidden, &json_f32(&il["vision_last_hidden"]));
        eprintln!("vision_last_hidden max |diff| = {d:e}");
        assert!(d <= 1e-4, "vision_last_hidden differs by {d}");
        let feats = aligner.forward(&hidden)?;
        let d = max_abs_diff(&feats, &json_f32(&il["image_features"]));
        eprintln!("image_features max |diff| = {d:e}");
        assert!(d <= 1e-4, "image_features differ by {d}");
        Ok(())
    }
}
