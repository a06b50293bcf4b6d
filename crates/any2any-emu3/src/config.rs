//! Emu3 checkpoint configuration, mirroring the HF `config.json`, and the special-token map
//! parsed from `vocabulary_map` by name.

use any2any_core::backbone::LlamaTextConfig;
use any2any_core::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// `config.json` of `Emu3ForConditionalGeneration`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Emu3Config {
    /// The Llama language model.
    pub text_config: LlamaTextConfig,
    /// The MoVQGAN-style image tokenizer.
    pub vq_config: Emu3VqConfig,
    /// Token string → id; the visual tokens and image markers are found here by name.
    pub vocabulary_map: HashMap<String, u32>,
    /// The `<image>` placeholder id of the processor.
    pub image_token_id: u32,
}

/// `vq_config` (`Emu3VQVAEConfig`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Emu3VqConfig {
    /// Codebook entries: the visual-token vocabulary.
    #[serde(default = "d_codebook")]
    pub codebook_size: usize,
    /// Width of a codebook entry.
    #[serde(default = "d_embed_dim")]
    pub embed_dim: usize,
    /// `z_channels` of the bottleneck.
    #[serde(default = "d_latent")]
    pub latent_channels: usize,
    /// Whether the encoder writes twice `latent_channels` channels.
    #[serde(default)]
    pub double_latent: bool,
    /// Channels of the input image (3).
    #[serde(default = "d_three")]
    pub in_channels: usize,
    /// Channels of the decoded image (3).
    #[serde(default = "d_three")]
    pub out_channels: usize,
    /// Frames per latent frame (an image is one frame, repeated to fill the window).
    #[serde(default = "d_tdf")]
    pub temporal_downsample_factor: usize,
    /// Channels of the first resolution level.
    #[serde(default = "d_base")]
    pub base_channels: usize,
    /// Channel multiplier per resolution level (its length sets the spatial factor).
    #[serde(default = "d_mult")]
    pub channel_multiplier: Vec<usize>,
    /// Residual blocks per encoder level.
    #[serde(default = "d_two")]
    pub num_res_blocks: usize,
    /// The resolution levels that have attention blocks.
    #[serde(default = "d_attn")]
    pub attn_resolutions: Vec<usize>,
    /// Width of the attention blocks' projections.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Heads of the attention blocks.
    #[serde(default = "d_one")]
    pub num_attention_heads: usize,
}

fn d_codebook() -> usize {
    32768
}
fn d_embed_dim() -> usize {
    4
}
fn d_latent() -> usize {
    4
}
fn d_three() -> usize {
    3
}
fn d_tdf() -> usize {
    4
}
fn d_base() -> usize {
    256
}
fn d_mult() -> Vec<usize> {
    vec![1, 2, 2, 4]
}
fn d_two() -> usize {
    2
}
fn d_attn() -> Vec<usize> {
    vec![3]
}
fn d_hidden() -> usize {
    1024
}
fn d_one() -> usize {
    1
}

impl Emu3Config {
    /// The pad id written into left padding (never attended).
    pub fn text_config_pad(&self) -> u32 {
        self.vocabulary_map
            .get("<|endoftext|>")
            .copied()
            .unwrap_or(0)
    }
}

impl Emu3VqConfig {
    /// Refuses values the image tokenizer cannot be built from, naming the field (`what`
    /// names the file and section, e.g. `config.json: vq_config`).
    pub fn validate(&self, what: &str) -> Result<()> {
        let bad = |msg: String| Error::Config {
            path: what.into(),
            msg,
        };
        let levels = self.channel_multiplier.len();
        if levels == 0 || levels > 8 || self.channel_multiplier.contains(&0) {
            return Err(bad(format!(
                "channel_multiplier {:?} must hold 1 to 8 positive multipliers (one per level)",
                self.channel_multiplier
            )));
        }
        for (field, v) in [
            ("codebook_size", self.codebook_size),
            ("embed_dim", self.embed_dim),
            ("latent_channels", self.latent_channels),
            ("base_channels", self.base_channels),
            ("num_attention_heads", self.num_attention_heads),
            (
                "temporal_downsample_factor",
                self.temporal_downsample_factor,
            ),
        ] {
            if v == 0 {
                return Err(bad(format!("{field} must be > 0")));
            }
        }
        if (self.in_channels, self.out_channels) != (3, 3) {
            return Err(bad(format!(
                "in_channels {} and out_channels {} must be 3 (RGB)",
                self.in_channels, self.out_channels
            )));
        }
        Ok(())
    }

    /// Spatial downsampling factor of the VQ: `2^(levels - 1)`.
    pub fn spatial_factor(&self) -> usize {
        1 << self.channel_multiplier.len().saturating_sub(1)
    }
}

/// The special ids of an Emu3 vocabulary, all looked up by token name.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Emu3Vocab {
    /// `visual[k]` is the BPE id of VQ code `k` (`<|visual token kkkkkk|>`).
    pub visual: Vec<u32>,
    /// End of a code row, `<|extra_200|>`.
    pub eol: u32,
    /// End of the code grid, `<|extra_201|>`.
    pub eof: u32,
    /// `<|image start|>`.
    pub boi: u32,
    /// `<|image end|>`.
    pub eoi: u32,
    /// `<|image token|>`, after the `H*W` size text of an image.
    pub img_token: u32,
    /// The processor's `<image>` placeholder.
    pub image_placeholder: u32,
    /// `<|extra_203|>`, BOS of Emu3.
    pub bos: u32,
    /// `<|extra_204|>`, EOS of Emu3.
    pub eos: u32,
}

impl Emu3Vocab {
    /// Parses the map; `codebook_size` visual tokens must all be present.
    pub fn from_config(cfg: &Emu3Config) -> Result<Self> {
        let map = &cfg.vocabulary_map;
        let get = |name: &str| {
            map.get(name).copied().ok_or_else(|| Error::Config {
                path: "config.json: vocabulary_map".into(),
                msg: format!("token `{name}` is missing"),
            })
        };
        let mut visual: Vec<Option<u32>> = vec![None; cfg.vq_config.codebook_size];
        for (name, &id) in map {
            let Some(num) = name
                .strip_prefix("<|visual token ")
                .and_then(|s| s.strip_suffix("|>"))
            else {
                continue;
            };
            let k: usize = num.parse().map_err(|_| Error::Config {
                path: "config.json: vocabulary_map".into(),
                msg: format!("bad visual token name `{name}`"),
            })?;
            if let Some(slot) = visual.get_mut(k) {
                *slot = Some(id);
            }
        }
        let visual = visual
            .into_iter()
            .enumerate()
            .map(|(k, v)| {
                v.ok_or_else(|| Error::Config {
                    path: "config.json: vocabulary_map".into(),
                    msg: format!(
                        "visual token {k} of {} is missing",
                        cfg.vq_config.codebook_size
                    ),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            visual,
            eol: get("<|extra_200|>")?,
            eof: get("<|extra_201|>")?,
            boi: get("<|image start|>")?,
            eoi: get("<|image end|>")?,
            img_token: get("<|image token|>")?,
            image_placeholder: cfg.image_token_id,
            bos: get("<|extra_203|>")?,
            eos: get("<|extra_204|>")?,
        })
    }

    /// BPE id of VQ code `k`.
    pub fn code_to_id(&self, k: u32) -> Option<u32> {
        self.visual.get(k as usize).copied()
    }

    /// VQ code of a BPE id, when it is a visual token.
    pub fn id_to_code(&self, id: u32) -> Option<u32> {
        self.visual.iter().position(|&v| v == id).map(|k| k as u32)
    }
}

/// `Emu3ImageProcessor` settings (`preprocessor_config.json`, or the `image_processor` entry of
/// `processor_config.json`); HF class defaults when absent.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Emu3ImageProcessorConfig {
    /// Fewest pixels an input image is resized to.
    #[serde(default = "d_min_pixels")]
    pub min_pixels: u64,
    /// Most pixels an input image is resized to.
    #[serde(default = "d_max_pixels")]
    pub max_pixels: u64,
    /// Pixel scale before normalisation (1/255).
    #[serde(default = "d_rescale")]
    pub rescale_factor: f64,
    /// Whether `(x − mean) / std` is applied.
    #[serde(default = "d_true")]
    pub do_normalize: bool,
    /// Per-channel mean.
    #[serde(default = "d_half")]
    pub image_mean: [f64; 3],
    /// Per-channel standard deviation.
    #[serde(default = "d_half")]
    pub image_std: [f64; 3],
}

fn d_min_pixels() -> u64 {
    512 * 512
}
fn d_max_pixels() -> u64 {
    1024 * 1024
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}
fn d_true() -> bool {
    true
}
fn d_half() -> [f64; 3] {
    [0.5; 3]
}

impl Default for Emu3ImageProcessorConfig {
    fn default() -> Self {
        Self {
            min_pixels: d_min_pixels(),
            max_pixels: d_max_pixels(),
            rescale_factor: d_rescale(),
            do_normalize: true,
            image_mean: d_half(),
            image_std: d_half(),
        }
    }
}

impl Emu3ImageProcessorConfig {
    /// Reads `preprocessor` when given, else the `image_processor` entry of
    /// `dir/processor_config.json`, else the defaults; each a JSON object whose normalisation
    /// and pixel bounds are checked ([`Emu3ImageProcessorConfig::validate`]).
    pub fn find(dir: &Path, preprocessor: Option<&Path>) -> Result<Self> {
        use any2any_core::loading::{config_from_value, read_config};
        let (cfg, path): (Self, _) = if let Some(p) = preprocessor {
            (read_config(p)?, p.to_path_buf())
        } else {
            let p = dir.join("processor_config.json");
            if !p.is_file() {
                return Ok(Self::default());
            }
            let v: serde_json::Value = read_config(&p)?;
            match v.get("image_processor") {
                Some(ip) => (config_from_value(ip.clone(), &p)?, p),
                None => return Ok(Self::default()),
            }
        };
        cfg.validate(&path)?;
        Ok(cfg)
    }

    /// Refuses settings that cannot work, naming `path` and the field: a zero or non-finite
    /// std or scale, `min_pixels` > `max_pixels`, or a bound beyond
    /// [`MAX_PIXELS`](any2any_core::limits::MAX_PIXELS).
    pub fn validate(&self, path: &Path) -> Result<()> {
        let (r, m, s) = (self.rescale_factor, self.image_mean, self.image_std);
        any2any_core::imageops::check_normalization(path, r, m, s)?;
        let max = any2any_core::limits::MAX_PIXELS;
        let bad = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        if self.min_pixels == 0 || self.min_pixels > self.max_pixels || self.max_pixels > max {
            return Err(bad(format!(
                "min_pixels {} and max_pixels {} must satisfy 1 ≤ min_pixels ≤ max_pixels ≤ {max}",
                self.min_pixels, self.max_pixels
            )));
        }
        Ok(())
    }

    /// Mean and std that make normalisation a no-op when `do_normalize` is false.
    pub fn mean_std(&self) -> ([f64; 3], [f64; 3]) {
        if self.do_normalize {
            (self.image_mean, self.image_std)
        } else {
            ([0.0; 3], [1.0; 3])
        }
    }

    /// `smart_resize`: sides divisible by `factor`, pixel count within `[min, max]`, aspect kept
    /// (Python's round-half-even). Returns `(height, width)`.
    pub fn smart_resize(&self, height: u32, width: u32, factor: u32) -> Result<(u32, u32)> {
        let (h, w, f) = (height as f64, width as f64, factor as f64);
        if height == 0 || width == 0 || h.max(w) / h.min(w) > 200.0 {
            return Err(Error::invalid(
                "image",
                format!("{width}×{height}: the aspect ratio must be below 200"),
            ));
        }
        let mut hb = (h / f).round_ties_even() * f;
        let mut wb = (w / f).round_ties_even() * f;
        if hb * wb > self.max_pixels as f64 {
            let beta = (h * w / self.max_pixels as f64).sqrt();
            hb = f.max((h / beta / f).floor() * f);
            wb = f.max((w / beta / f).floor() * f);
        } else if hb * wb < self.min_pixels as f64 {
            let beta = (self.min_pixels as f64 / (h * w)).sqrt();
            hb = (h * beta / f).ceil() * f;
            wb = (w * beta / f).ceil() * f;
        }
        Ok((hb.max(f) as u32, wb.max(f) as u32))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smart_resize_matches_the_hf_function() {
        // expected values from transformers' emu3 smart_resize
        let tiny = Emu3ImageProcessorConfig {
            min_pixels: 64,
            max_pixels: 4096,
            ..Default::default()
        };
        assert_eq!(tiny.smart_resize(10, 12, 2).unwrap(), (10, 12));
        assert_eq!(tiny.smart_resize(5, 7, 2).unwrap(), (8, 10));
        assert_eq!(tiny.smart_resize(300, 200, 2).unwrap(), (78, 52));
        let real = Emu3ImageProcessorConfig::default();
        assert_eq!(real.smart_resize(1080, 1920, 8).unwrap(), (768, 1360));
        assert_eq!(real.smart_resize(100, 100, 8).unwrap(), (512, 512));
        assert_eq!(real.smart_resize(20, 28, 8).unwrap(), (440, 608));
        assert!(real.smart_resize(1, 300, 8).is_err());
    }

    fn cfg_with(map: &[(&str, u32)], codebook: usize) -> Emu3Config {
        let v = serde_json::json!({
            "text_config": {},
            "vq_config": {"codebook_size": codebook},
            "image_token_id": 9,
            "vocabulary_map": map.iter().map(|(k, v)| (k.to_string(), *v)).collect::<HashMap<_, _>>(),
        });
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn vocab_comes_from_names_and_missing_ones_are_errors() {
        let base = [
            ("<|extra_200|>", 1),
            ("<|extra_201|>", 2),
            ("<|extra_203|>", 3),
            ("<|extra_204|>", 4),
            ("<|image start|>", 5),
            ("<|image end|>", 6),
            ("<|image token|>", 7),
            ("<|visual token 000001|>", 100),
            ("<|visual token 000000|>", 200),
        ];
        let v = Emu3Vocab::from_config(&cfg_with(&base, 2)).unwrap();
        assert_eq!(v.visual, vec![200, 100]);
        assert_eq!((v.eol, v.eof, v.bos, v.eos), (1, 2, 3, 4));
        assert_eq!(v.id_to_code(100), Some(1));
        assert_eq!(v.code_to_id(0), Some(200));
        // a codebook larger than the named visual tokens
        assert!(Emu3Vocab::from_config(&cfg_with(&base, 3)).is_err());
        // a missing marker
        assert!(Emu3Vocab::from_config(&cfg_with(&base[1..], 2)).is_err());
    }
}
