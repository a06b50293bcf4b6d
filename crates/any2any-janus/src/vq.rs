//! Janus' VQ-16 image tokenizer (the Hugging Face `JanusVQVAE`, weights under `model.vqmodel`).
//!
//! Generation only needs [`JanusVq::decode_codes`]; [`JanusVq::encode`] is the matching
//! pixels-to-codes path.

use any2any_core::codec::taming::{conv2d, Decoder, Encoder, NormConfig, TamingConfig, UpOrder};
use candle_core::{bail, DType, Module, Result, Tensor, D};
use candle_nn::{Conv2d, Embedding, VarBuilder};
use serde::Deserialize;

/// The `vq_config` section of a Janus `config.json` (HF `JanusVQVAEConfig`); missing keys take
/// the HF class defaults, unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct JanusVqConfig {
    /// Width of a codebook entry (and of the generation embeddings).
    pub embed_dim: usize,
    /// Codebook entries: the image-token vocabulary.
    pub num_embeddings: usize,
    /// Whether the encoder writes twice `latent_channels` channels.
    pub double_latent: bool,
    /// `z_channels` of the encoder/decoder bottleneck.
    pub latent_channels: usize,
    /// Channels of the input image (3).
    pub in_channels: usize,
    /// Channels of the first resolution level.
    pub base_channels: usize,
    /// Channel multiplier per resolution level (its length sets the downsampling, 2^(L-1)).
    pub channel_multiplier: Vec<usize>,
    /// Residual blocks per encoder level.
    pub num_res_blocks: usize,
    /// Training-only; ignored at inference.
    pub dropout: f64,
    /// Training-only; ignored at inference.
    pub initializer_range: f64,
    /// Side of the code grid HF expects (`vision image_size / patch_size`, overwritten by
    /// `JanusConfig`); informative only here, the grid size is passed to `decode_codes`.
    pub num_patches: usize,
    /// Channels of the decoded image (3).
    pub out_channels: usize,
    /// Width of the generation aligner and head (the language model's hidden size).
    pub projection_dim: usize,
    /// Linear layers of the generation aligner.
    pub num_hidden_layers: usize,
    /// Activation of the generation aligner and head, by its HF name.
    pub hidden_act: String,
    /// Input width of the generation head.
    pub image_token_embed_dim: usize,
}

impl Default for JanusVqConfig {
    fn default() -> Self {
        Self {
            embed_dim: 8,
            num_embeddings: 16384,
            double_latent: false,
            latent_channels: 256,
            in_channels: 3,
            base_channels: 128,
            channel_multiplier: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            dropout: 0.0,
            initializer_range: 0.02,
            num_patches: 32,
            out_channels: 3,
            projection_dim: 2048,
            num_hidden_layers: 2,
            hidden_act: "gelu".to_string(),
            image_token_embed_dim: 2048,
        }
    }
}

impl JanusVqConfig {
    /// Checks the values the encoder/decoder shapes depend on.
    pub fn validate(&self) -> Result<()> {
        let norm = NormConfig::default();
        if self.channel_multiplier.is_empty() {
            bail!("vq_config.channel_multiplier must not be empty");
        }
        if self.num_res_blocks == 0 {
            bail!("vq_config.num_res_blocks must be at least 1, got 0");
        }
        for (k, v) in [
            ("embed_dim", self.embed_dim),
            ("num_embeddings", self.num_embeddings),
            ("latent_channels", self.latent_channels),
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ] {
            if v == 0 {
                bail!("vq_config.{k} must be positive, got 0");
            }
        }
        for &m in &self.channel_multiplier {
            let c = self.base_channels * m;
            if c == 0 || !c.is_multiple_of(norm.groups) {
                bail!(
                    "vq_config: base_channels {} * channel_multiplier {m} = {c} is not a positive \
                     multiple of the {} GroupNorm groups",
                    self.base_channels,
                    norm.groups
                );
            }
        }
        Ok(())
    }

    /// How many pixels one code covers along each side: `2^(levels - 1)`.
    pub fn downsample_factor(&self) -> usize {
        1usize << self.channel_multiplier.len().saturating_sub(1)
    }
}

impl JanusVqConfig {
    /// The taming shape: attention only at the lowest resolution; HF numbers `up.0` as the
    /// lowest resolution.
    pub fn taming(&self) -> TamingConfig {
        let levels = self.channel_multiplier.len();
        TamingConfig {
            in_channels: self.in_channels,
            out_channels: self.out_channels,
            base_channels: self.base_channels,
            channel_multiplier: self.channel_multiplier.clone(),
            num_res_blocks: self.num_res_blocks,
            latent_channels: self.latent_channels,
            double_latent: self.double_latent,
            attn_levels: (0..levels).map(|l| l + 1 == levels).collect(),
            mid_attention: true,
            up_order: UpOrder::RunOrder,
            norm: NormConfig::default(),
        }
    }
}

/// Janus' VQ autoencoder: `encoder`, `quant_conv`, `quantize.embedding`, `post_quant_conv`,
/// `decoder`.
#[derive(Debug, Clone)]
pub struct JanusVq {
    encoder: Option<(Encoder, Conv2d)>,
    codebook: Embedding,
    post_quant_conv: Conv2d,
    decoder: Decoder,
    cfg: JanusVqConfig,
    dtype: DType,
}

impl JanusVq {
    /// Loads the model; `vb` points at the `model.vqmodel` prefix. The encoder half (`encoder.*`,
    /// `quant_conv`) is loaded only when the weights contain `encoder.conv_in.weight`, so
    /// decode-only checkpoints work; use [`JanusVq::load_with_encoder`] to force either way
    /// (e.g. with a `VarMap`, which reports no tensors before they are created).
    pub fn load(vb: VarBuilder, cfg: &JanusVqConfig) -> Result<Self> {
        let with_encoder = vb.contains_tensor("encoder.conv_in.weight");
        Self::load_with_encoder(vb, cfg, with_encoder)
    }

    /// Like [`JanusVq::load`], loading the encoder half iff `with_encoder`.
    pub fn load_with_encoder(
        vb: VarBuilder,
        cfg: &JanusVqConfig,
        with_encoder: bool,
    ) -> Result<Self> {
        cfg.validate()?;
        let encoder = if with_encoder {
            let encoder = Encoder::load(vb.pp("encoder"), &cfg.taming())?;
            let quant_conv = conv2d(
                cfg.latent_channels,
                cfg.embed_dim,
                1,
                0,
                vb.pp("quant_conv"),
            )?;
            Some((encoder, quant_conv))
        } else {
            None
        };
        let codebook = candle_nn::embedding(
            cfg.num_embeddings,
            cfg.embed_dim,
            vb.pp("quantize").pp("embedding"),
        )?;
        let post_quant_conv = conv2d(
            cfg.embed_dim,
            cfg.latent_channels,
            1,
            0,
            vb.pp("post_quant_conv"),
        )?;
        let decoder = Decoder::load(vb.pp("decoder"), &cfg.taming())?;
        Ok(Self {
            encoder,
            codebook,
            post_quant_conv,
            decoder,
            cfg: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    /// Whether [`JanusVq::encode`] is available.
    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// The configuration the model was built with.
    pub fn config(&self) -> &JanusVqConfig {
        &self.cfg
    }

    /// Pixels per code along each side (16 for Janus' 5-level VQ-16).
    pub fn downsample_factor(&self) -> usize {
        self.cfg.downsample_factor()
    }

    /// Codes `[B, h*w]` (any integer dtype, row-major over the `h×w` grid) to images
    /// `[B, out_channels, h*f, w*f]` in f32, in the model's output range (about [-1, 1]) and not
    /// clamped. Codebook rows are L2-normalised before `post_quant_conv`, as HF's
    /// `get_codebook_entry` does.
    pub fn decode_codes(&self, codes: &Tensor, h: usize, w: usize) -> Result<Tensor> {
        let (b, n) = codes.dims2()?;
        if n != h * w {
            bail!(
                "decode_codes: got {n} codes per image but the grid is {h}x{w} = {}",
                h * w
            );
        }
        if b == 0 || n == 0 {
            bail!("decode_codes: empty code tensor of shape [{b}, {n}]");
        }
        let codes = to_u32_codes(codes)?;
        let max = codes.max_all()?.to_scalar::<u32>()? as usize;
        if max >= self.cfg.num_embeddings {
            bail!(
                "decode_codes: code {max} out of range for a codebook of {} entries",
                self.cfg.num_embeddings
            );
        }
        let rows = self
            .codebook
            .embeddings()
            .index_select(&codes.flatten_all()?, 0)?
            .to_dtype(DType::F32)?;
        let norm = rows.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.maximum(1e-12)?;
        let rows = rows.broadcast_div(&norm)?;
        let latent = rows
            .reshape((b, h, w, self.cfg.embed_dim))?
            .permute((0, 3, 1, 2))?
            .contiguous()?
            .to_dtype(self.dtype)?;
        let latent = self.post_quant_conv.forward(&latent)?;
        self.decoder.forward(&latent)?.to_dtype(DType::F32)
    }

    /// Images `[B, in_channels, H, W]` (model range, about [-1, 1]) to codes `[B, h*w]` u32, where
    /// each of the `levels - 1` downsamplings halves the size rounding down (`h = H / f` when `H`
    /// is a multiple of `f`).
    ///
    /// Mirrors HF `JanusVQVAE.encode`: nearest codebook row by squared Euclidean distance to
    /// the *raw* (not L2-normalised) codebook and un-normalised latents.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        let Some((encoder, quant_conv)) = &self.encoder else {
            bail!("encode: this JanusVq was loaded without its encoder weights");
        };
        if self.cfg.double_latent {
            bail!(
                "encode: double_latent = true is not supported (quant_conv expects {} channels, \
                 the encoder yields {})",
                self.cfg.latent_channels,
                2 * self.cfg.latent_channels
            );
        }
        let (_, c, _, _) = pixels.dims4()?;
        if c != self.cfg.in_channels {
            bail!(
                "encode: expected {} input channels, got {c}",
                self.cfg.in_channels
            );
        }
        let xs = pixels.to_dtype(self.dtype)?;
        let z = quant_conv.forward(&encoder.forward(&xs)?)?;
        let (b, d, h, w) = z.dims4()?;
        let z = z
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .reshape((b * h * w, d))?;
        let e = self.codebook.embeddings().to_dtype(DType::F32)?;
        let z2 = z.sqr()?.sum_keepdim(1)?;
        let e2 = e.sqr()?.sum(1)?.unsqueeze(0)?;
        let ze = z.matmul(&e.t()?)?;
        let dist = z2.broadcast_add(&e2)?.broadcast_sub(&(ze * 2.0)?)?;
        any2any_core::limits::check_finite(&dist, "image encoder")?;
        dist.argmin(1)?.to_dtype(DType::U32)?.reshape((b, h * w))
    }
}

fn to_u32_codes(codes: &Tensor) -> Result<Tensor> {
    match codes.dtype() {
        DType::U32 => Ok(codes.clone()),
        DType::U8 => codes.to_dtype(DType::U32),
        DType::I64 => {
            let min = codes.min_all()?.to_scalar::<i64>()?;
            if min < 0 {
                bail!("codes must be non-negative, got {min}");
            }
            codes.to_dtype(DType::U32)
        }
        dt => bail!("codes must be an integer tensor (u8/u32/i64), got {dt:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn tiny() -> JanusVqConfig {
        JanusVqConfig {
            embed_dim: 8,
            num_embeddings: 16,
            latent_channels: 32,
            base_channels: 32,
            channel_multiplier: vec![1, 1, 2],
            num_res_blocks: 1,
            ..Default::default()
        }
    }

    #[test]
    fn config_defaults_and_parsing() {
        let cfg: JanusVqConfig = serde_json::from_str(
            r#"{"embed_dim": 8, "num_embeddings": 16384, "model_type": "janus_vqgan",
                "channel_multiplier": [1, 1, 2, 2, 4], "num_patches": 24}"#,
        )
        .unwrap();
        assert_eq!(cfg.latent_channels, 256);
        assert_eq!(cfg.base_channels, 128);
        assert_eq!(cfg.num_res_blocks, 2);
        assert_eq!(cfg.num_patches, 24);
        assert_eq!(cfg.downsample_factor(), 16);
        assert_eq!(cfg.hidden_act, "gelu");
        assert!(cfg.validate().is_ok());
        let bad = JanusVqConfig {
            base_channels: 48,
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn tiny_shapes_and_keys() -> Result<()> {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let cfg = tiny();
        let vq = JanusVq::load_with_encoder(vb, &cfg, true)?;
        assert!(vq.has_encoder());
        assert_eq!(vq.downsample_factor(), 4);

        let codes = Tensor::arange(0u32, 16, &dev)?
            .reshape((1, 16))?
            .repeat((2, 1))?;
        let img = vq.decode_codes(&codes, 4, 4)?;
        assert_eq!(img.dims(), [2, 3, 16, 16]);
        assert_eq!(img.dtype(), DType::F32);
        let codes_i64 = codes.to_dtype(DType::I64)?;
        let img2 = vq.decode_codes(&codes_i64, 4, 4)?;
        assert_eq!((img2 - &img)?.abs()?.max_all()?.to_scalar::<f32>()?, 0.0);
        assert!(vq.decode_codes(&codes, 4, 3).is_err());
        let oob = Tensor::full(16u32, (1, 16), &dev)?;
        assert!(vq.decode_codes(&oob, 4, 4).is_err());

        let enc = vq.encode(&img)?;
        assert_eq!(enc.dims(), [2, 16]);
        assert_eq!(enc.dtype(), DType::U32);
        assert!(enc.max_all()?.to_scalar::<u32>()? < 16);

        let data = vm.data().lock().unwrap();
        for k in [
            "quantize.embedding.weight",
            "quant_conv.weight",
            "post_quant_conv.bias",
            "encoder.conv_in.weight",
            "encoder.down.0.block.0.conv1.weight",
            "encoder.down.0.downsample.conv.weight",
            "encoder.down.1.downsample.conv.weight",
            "encoder.down.2.block.0.nin_shortcut.weight",
            "encoder.down.2.attn.0.q.weight",
            "encoder.mid.block_1.norm1.weight",
            "encoder.mid.attn_1.proj_out.weight",
            "encoder.norm_out.weight",
            "encoder.conv_out.weight",
            "decoder.conv_in.weight",
            "decoder.mid.block_2.conv2.weight",
            "decoder.up.0.block.0.conv1.weight",
            "decoder.up.0.block.1.conv1.weight",
            "decoder.up.0.attn.1.k.weight",
            "decoder.up.0.upsample.conv.weight",
            "decoder.up.1.block.0.nin_shortcut.weight",
            "decoder.up.1.upsample.conv.weight",
            "decoder.up.2.block.1.norm2.bias",
            "decoder.norm_out.bias",
            "decoder.conv_out.weight",
        ] {
            assert!(data.contains_key(k), "missing {k}");
        }
        for k in [
            "encoder.down.2.downsample.conv.weight",
            "encoder.down.0.attn.0.q.weight",
            "decoder.up.2.upsample.conv.weight",
            "decoder.up.1.attn.0.q.weight",
            "decoder.up.0.block.0.nin_shortcut.weight",
        ] {
            assert!(!data.contains_key(k), "unexpected {k}");
        }
        // lowest decoder level is 64 wide (32 * 2)
        assert_eq!(
            data["decoder.up.0.block.0.conv1.weight"].dims(),
            [64, 64, 3, 3]
        );
        assert_eq!(
            data["decoder.up.2.block.0.conv1.weight"].dims(),
            [32, 32, 3, 3]
        );
        Ok(())
    }
    fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/janus-tiny")
    }

    fn json_f32(v: &serde_json::Value) -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    }

    #[test]
    fn decode_matches_hf_fixture() -> Result<()> {
        let dir = fixture_dir();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap())
                .unwrap();
        let cfg: JanusVqConfig = serde_json::from_value(config["vq_config"].clone()).unwrap();
        let parity: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("parity.json")).unwrap())
                .unwrap();
        let dec = &parity["decode"];
        let dev = candle_core::Device::Cpu;
        // SAFETY: the fixture file is not modified while mapped.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DType::F32, &dev)?
        };
        // the fixture strips the encoder, so `load` must fall back to decode-only
        let vq = JanusVq::load(vb.pp("model").pp("vqmodel"), &cfg)?;
        assert!(!vq.has_encoder());

        let codes: Vec<u32> = dec["codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        let h = dec["height"].as_u64().unwrap() as usize;
        let w = dec["width"].as_u64().unwrap() as usize;
        let n = codes.len();
        let codes = Tensor::from_vec(codes, (1, n), &dev)?;
        let out = vq.decode_codes(&codes, h, w)?;
        assert_eq!(out.dims(), [1, 3, 4 * h, 4 * w]);

        let hwc = out.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?;
        let want = json_f32(&dec["raw_all"]);
        assert_eq!(hwc.len(), want.len());
        let max_diff = hwc
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("decode.raw max |diff| = {max_diff:e}");
        assert!(max_diff <= 1e-4, "decode.raw differs by {max_diff}");

        let pixels = json_f32(&dec["pixels"]);
        for (x, p) in hwc.iter().zip(&pixels) {
            let u = (((x + 1.0) / 2.0) * 255.0).clamp(0.0, 255.0).trunc();
            assert!((u - p).abs() <= 1.0, "pixel {u} vs {p}");
        }
        Ok(())
    }
}
