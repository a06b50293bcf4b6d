//! config.json of a Chameleon checkpoint: the text fields, `vq_config` (new and old key
//! spellings), and the `vocabulary_map` with the image-code ↔ token-id mapping.

use any2any_core::backbone::{BackboneConfig, BlockOrder, LlamaTextConfig, QkNorm};
use any2any_core::{Error, Result};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::Path;

/// The VQGAN configuration (HF `ChameleonVQVAEConfig`, or the taming `ddconfig` names).
#[derive(Debug, Clone, PartialEq)]
pub struct VqConfig {
    /// Width of a codebook entry.
    pub embed_dim: usize,
    /// Codebook entries (image codes).
    pub num_embeddings: usize,
    /// Channels of the bottleneck (`z_channels`).
    pub latent_channels: usize,
    /// Channels of the first resolution level (`ch`).
    pub base_channels: usize,
    /// Channel multiplier per resolution level (`ch_mult`); its length sets the downsample factor.
    pub channel_multiplier: Vec<usize>,
    /// Residual blocks per level.
    pub num_res_blocks: usize,
    /// Pixel size of the square images the VQGAN was trained on.
    pub resolution: usize,
    /// Level resolutions that have attention blocks.
    pub attn_resolutions: Vec<usize>,
    /// Channels of the input image (3).
    pub in_channels: usize,
    /// Channels of the decoded image (3).
    pub out_channels: usize,
    /// Whether the encoder writes twice `latent_channels` channels.
    pub double_latent: bool,
    /// "vanilla" (attention blocks) or anything else (no attention).
    pub attn_type: String,
}

impl Default for VqConfig {
    fn default() -> Self {
        Self {
            embed_dim: 256,
            num_embeddings: 8192,
            latent_channels: 256,
            base_channels: 128,
            channel_multiplier: vec![1, 1, 2, 2, 4],
            num_res_blocks: 2,
            resolution: 512,
            attn_resolutions: vec![],
            in_channels: 3,
            out_channels: 3,
            double_latent: false,
            attn_type: "vanilla".into(),
        }
    }
}

/// `vq_config` as config.json or a `vqgan_config.json` writes it: HF names and taming names
/// (`ch`, `ch_mult`, `z_channels`, `n_embed`, `out_ch`, `double_z`); `null` is absent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct VqJson {
    embed_dim: Option<usize>,
    num_embeddings: Option<usize>,
    n_embed: Option<usize>,
    latent_channels: Option<usize>,
    z_channels: Option<usize>,
    base_channels: Option<usize>,
    ch: Option<usize>,
    channel_multiplier: Option<Vec<usize>>,
    ch_mult: Option<Vec<usize>>,
    num_res_blocks: Option<usize>,
    resolution: Option<usize>,
    attn_resolutions: Option<Vec<usize>>,
    in_channels: Option<usize>,
    out_channels: Option<usize>,
    out_ch: Option<usize>,
    double_latent: Option<bool>,
    double_z: Option<bool>,
    attn_type: Option<String>,
}

impl VqJson {
    /// HF names win over taming names; HF defaults for what neither gives.
    fn into_config(self) -> VqConfig {
        let d = VqConfig::default();
        VqConfig {
            embed_dim: self.embed_dim.unwrap_or(d.embed_dim),
            num_embeddings: self
                .num_embeddings
                .or(self.n_embed)
                .unwrap_or(d.num_embeddings),
            latent_channels: self
                .latent_channels
                .or(self.z_channels)
                .unwrap_or(d.latent_channels),
            base_channels: self.base_channels.or(self.ch).unwrap_or(d.base_channels),
            channel_multiplier: self
                .channel_multiplier
                .or(self.ch_mult)
                .unwrap_or(d.channel_multiplier),
            num_res_blocks: self.num_res_blocks.unwrap_or(d.num_res_blocks),
            resolution: self.resolution.unwrap_or(d.resolution),
            attn_resolutions: self.attn_resolutions.unwrap_or(d.attn_resolutions),
            in_channels: self.in_channels.unwrap_or(d.in_channels),
            out_channels: self.out_channels.or(self.out_ch).unwrap_or(d.out_channels),
            double_latent: self
                .double_latent
                .or(self.double_z)
                .unwrap_or(d.double_latent),
            attn_type: self.attn_type.unwrap_or(d.attn_type),
        }
    }
}

impl VqConfig {
    /// Reads a JSON object holding HF names and/or taming names (`ch`, `ch_mult`, `z_channels`,
    /// `n_embed`, `out_ch`, `double_z`); HF names win when both are present. The error names the
    /// section (`vq_config`); the caller adds the file.
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let bad = |msg: String| Error::invalid("vq_config", msg);
        let cfg = VqJson::deserialize(v)
            .map_err(|e| bad(e.to_string()))?
            .into_config();
        cfg.validate().map_err(bad)?;
        Ok(cfg)
    }

    /// The taming `model.params` of an original `vqgan.yaml` (as JSON): `embed_dim`, `n_embed` and
    /// `ddconfig.{ch, ch_mult, z_channels, num_res_blocks, resolution, attn_resolutions,
    /// in_channels, out_ch}` are required (taming's `Encoder`/`Decoder` have no default for them
    /// except `ch_mult`); `ch_mult` defaults to taming's `[1, 2, 4, 8]`, `double_z` to taming's
    /// `true`, `attn_type` to "vanilla" (`use_linear_attn: true` means "linear"). The error names
    /// the missing or mistyped field by its path under `model.params`.
    pub fn from_taming(params: &serde_json::Value) -> std::result::Result<Self, String> {
        let field = |obj: &serde_json::Value, k: &str| obj.get(k).filter(|v| !v.is_null()).cloned();
        let need = |obj: &serde_json::Value, path: &str, k: &str| {
            field(obj, k).ok_or_else(|| format!("missing `{path}.{k}`"))
        };
        let num = |v: serde_json::Value, path: &str, k: &str| {
            v.as_u64()
                .map(|u| u as usize)
                .ok_or_else(|| format!("`{path}.{k}` must be a non-negative integer, got {v}"))
        };
        let list = |v: serde_json::Value,
                    path: &str,
                    k: &str|
         -> std::result::Result<Vec<usize>, String> {
            let bad = || format!("`{path}.{k}` must be a list of non-negative integers, got {v}");
            v.as_array()
                .ok_or_else(bad)?
                .iter()
                .map(|e| e.as_u64().map(|u| u as usize).ok_or_else(bad))
                .collect()
        };
        let boolean = |v: serde_json::Value, path: &str, k: &str| {
            v.as_bool()
                .ok_or_else(|| format!("`{path}.{k}` must be true or false, got {v}"))
        };
        let p = "model.params";
        if !params.is_object() {
            return Err(format!("`{p}` must be a mapping"));
        }
        let dd = need(params, p, "ddconfig")?;
        let d = "model.params.ddconfig";
        if !dd.is_object() {
            return Err(format!("`{d}` must be a mapping"));
        }
        let linear = match field(&dd, "use_linear_attn") {
            Some(v) => boolean(v, d, "use_linear_attn")?,
            None => false,
        };
        let cfg = Self {
            embed_dim: num(need(params, p, "embed_dim")?, p, "embed_dim")?,
            num_embeddings: num(need(params, p, "n_embed")?, p, "n_embed")?,
            latent_channels: num(need(&dd, d, "z_channels")?, d, "z_channels")?,
            base_channels: num(need(&dd, d, "ch")?, d, "ch")?,
            channel_multiplier: match field(&dd, "ch_mult") {
                Some(v) => list(v, d, "ch_mult")?,
                None => vec![1, 2, 4, 8],
            },
            num_res_blocks: num(need(&dd, d, "num_res_blocks")?, d, "num_res_blocks")?,
            resolution: num(need(&dd, d, "resolution")?, d, "resolution")?,
            attn_resolutions: list(need(&dd, d, "attn_resolutions")?, d, "attn_resolutions")?,
            in_channels: num(need(&dd, d, "in_channels")?, d, "in_channels")?,
            out_channels: num(need(&dd, d, "out_ch")?, d, "out_ch")?,
            double_latent: match field(&dd, "double_z") {
                Some(v) => boolean(v, d, "double_z")?,
                None => true,
            },
            attn_type: match field(&dd, "attn_type") {
                Some(v) => v
                    .as_str()
                    .ok_or_else(|| format!("`{d}.attn_type` must be a string, got {v}"))?
                    .to_string(),
                None if linear => "linear".into(),
                None => "vanilla".into(),
            },
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what the VQGAN layers need; the message names the field at fault.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let bad = |m: String| Err(m);
        if self.channel_multiplier.is_empty()
            || self.channel_multiplier.len() > 8
            || self.num_res_blocks == 0
        {
            return bad(
                "channel_multiplier must hold 1 to 8 levels and num_res_blocks must be ≥ 1".into(),
            );
        }
        for (k, v) in [
            ("embed_dim", self.embed_dim),
            ("num_embeddings", self.num_embeddings),
            ("latent_channels", self.latent_channels),
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ] {
            if v == 0 {
                return bad(format!("{k} must be positive"));
            }
        }
        let f = self.downsample_factor();
        if self.resolution == 0 || !self.resolution.is_multiple_of(f) {
            return bad(format!(
                "resolution {} must be a positive multiple of the downsample factor {f} \
                 (2^(levels − 1) of channel_multiplier)",
                self.resolution
            ));
        }
        for &m in &self.channel_multiplier {
            let c = self.base_channels.saturating_mul(m);
            if c == 0 || !c.is_multiple_of(32) {
                return bad(format!(
                    "base_channels {} × channel_multiplier {m} = {c} is not a positive multiple of 32 (GroupNorm groups)",
                    self.base_channels
                ));
            }
        }
        Ok(())
    }

    /// Pixels per code along each side.
    pub fn downsample_factor(&self) -> usize {
        1 << (self.channel_multiplier.len() - 1)
    }

    /// Whether the level whose configured resolution is `res` has attention blocks.
    pub fn attn_at(&self, res: usize) -> bool {
        self.attn_type == "vanilla" && self.attn_resolutions.contains(&res)
    }
}

/// The keys of an HF Chameleon config.json read besides the Llama text fields (unknown keys
/// ignored).
#[derive(Debug, Deserialize)]
struct ConfigJson {
    /// Chameleon's defaults differ from Llama's for these three.
    rms_norm_eps: Option<f64>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    swin_norm: bool,
    #[serde(default = "yes")]
    mask_image_logits: bool,
    image_token_id: Option<u32>,
    vocabulary_map: Option<HashMap<String, u32>>,
    #[serde(default)]
    vq_config: VqJson,
    #[serde(default)]
    architectures: Vec<String>,
    target_size: Option<usize>,
}

fn yes() -> bool {
    true
}

/// The parts of config.json the backends use.
#[derive(Debug, Clone)]
pub struct ChameleonConfig {
    /// The Llama text fields of config.json, with Chameleon's defaults.
    pub text: LlamaTextConfig,
    /// The decoder's runtime config (per-head q/k norm, swin-norm block order where set).
    pub backbone: BackboneConfig,
    /// The VQGAN (`vq_config`).
    pub vq: VqConfig,
    /// Image codes ↔ token ids and the special ids, from `vocabulary_map`.
    pub vocab: VocabMapping,
    /// HF's text-mode forward sets the IMGIMG logits to `finfo.min` unless the config says
    /// `mask_image_logits: false` (Lumina-mGPT).
    pub mask_image_logits: bool,
    /// `architectures` (Lumina-mGPT: `ChameleonXLLMXForConditionalGeneration`).
    pub architectures: Vec<String>,
    /// Lumina-mGPT's training resolution, when config.json states it.
    pub target_size: Option<usize>,
}

impl ChameleonConfig {
    /// Reads an HF config.json (`path` names it in errors): the Llama text fields with
    /// Chameleon's defaults, per-head q/k LayerNorm, `swin_norm`, `vq_config` and the
    /// `vocabulary_map`.
    pub fn from_json(v: &serde_json::Value, path: &Path) -> Result<Self> {
        let cfg_err = |msg: String| Error::Config {
            path: path.to_path_buf(),
            msg,
        };
        for flag in ["mask_image_logits", "swin_norm"] {
            if let Some(x) = v.get(flag).filter(|x| !x.is_boolean()) {
                return Err(cfg_err(format!("{flag} must be true or false, found {x}")));
            }
        }
        let j = ConfigJson::deserialize(v).map_err(|e| cfg_err(e.to_string()))?;
        if v.get("architectures").is_some() && j.architectures.is_empty() {
            return Err(cfg_err(
                "architectures is empty: it must name the model class (e.g. \
                 ChameleonForConditionalGeneration, or Lumina-mGPT's \
                 ChameleonXLLMXForConditionalGeneration)"
                    .into(),
            ));
        }
        let mut text = LlamaTextConfig::deserialize(v).map_err(|e| cfg_err(e.to_string()))?;
        text.rms_norm_eps = j.rms_norm_eps.unwrap_or(1e-5);
        text.vocab_size = j.vocab_size.unwrap_or(65536);
        text.max_position_embeddings = j.max_position_embeddings.unwrap_or(4096);
        let mut backbone = text.to_backbone(&path.display().to_string())?;
        backbone.qk_norm = QkNorm::PerHead;
        if j.swin_norm {
            backbone.block = BlockOrder::SwinNorm;
        }
        let vq = j.vq_config.into_config();
        vq.validate()
            .map_err(|e| cfg_err(format!("vq_config: {e}")))?;
        let map = j.vocabulary_map.ok_or_else(|| {
            cfg_err(
                "no `vocabulary_map` (the tokenizer vocab Chameleon stores in config.json)".into(),
            )
        })?;
        let vocab =
            VocabMapping::new(&map, backbone.vocab_size).map_err(|e| cfg_err(e.to_string()))?;
        if let Some(id) = j.image_token_id.filter(|&id| id != vocab.ids.image) {
            return Err(cfg_err(format!(
                "image_token_id {id} differs from vocabulary_map[\"<image>\"] = {}",
                vocab.ids.image
            )));
        }
        Ok(Self {
            text,
            backbone,
            vq,
            vocab,
            mask_image_logits: j.mask_image_logits,
            architectures: j.architectures,
            target_size: j.target_size,
        })
    }
}

/// Special token ids, read from the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// `<s>`: beginning of a sequence.
    pub bos: u32,
    /// `</s>`: end of a sequence.
    pub eos: u32,
    /// `<pad>`, when the vocabulary has one.
    pub pad: Option<u32>,
    /// `<racm3:break>`: begin of image.
    pub boi: u32,
    /// `<eoss>`: end of image.
    pub eoi: u32,
    /// `<reserved08706>`: separator / end of turn.
    pub sep: u32,
    /// `<image>`: the processor's placeholder.
    pub image: u32,
}

/// Image code ↔ token id, parsed from the `IMGIMG<letters>Z` names (A–J = digits 0–9).
#[derive(Debug, Clone, PartialEq)]
pub struct VocabMapping {
    /// `code_to_id[c]` is the token id of image code `c`.
    pub code_to_id: Vec<u32>,
    /// All IMGIMG token ids, sorted.
    pub image_ids: Vec<u32>,
    id_to_code: HashMap<u32, u32>,
    /// The special ids.
    pub ids: SpecialIds,
    /// Every token by name (Lumina-mGPT reads its layout tokens from it).
    tokens: HashMap<String, u32>,
}

/// `IMGIMGBAZ` → 10.
pub fn parse_image_token(name: &str) -> Option<u32> {
    let inner = name.strip_prefix("IMGIMG")?.strip_suffix('Z')?;
    if inner.is_empty() {
        return None;
    }
    let mut v: u32 = 0;
    for c in inner.chars() {
        if !('A'..='J').contains(&c) {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(c as u32 - 'A' as u32)?;
    }
    Some(v)
}

impl VocabMapping {
    /// Parses a `vocabulary_map` (token name → id) for a vocabulary of `vocab_size` entries; errors name `vocabulary_map`.
    pub fn new(map: &HashMap<String, u32>, vocab_size: usize) -> Result<Self> {
        let bad = |m: String| Error::invalid("vocabulary_map", m);
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        for (name, &id) in map {
            if name.starts_with("IMGIMG") {
                let code = parse_image_token(name)
                    .ok_or_else(|| bad(format!("cannot parse image token name `{name}`")))?;
                pairs.push((code, id));
            }
        }
        if pairs.is_empty() {
            return Err(bad("no IMGIMG…Z image tokens".into()));
        }
        pairs.sort_unstable();
        for (k, &(code, _)) in pairs.iter().enumerate() {
            if code as usize != k {
                return Err(bad(format!(
                    "image codes are not contiguous from 0 (missing code {k})"
                )));
            }
        }
        let code_to_id: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let mut image_ids = code_to_id.clone();
        image_ids.sort_unstable();
        let id_to_code = pairs.iter().map(|&(c, i)| (i, c)).collect();
        let need = |s: &str| {
            map.get(s)
                .copied()
                .ok_or_else(|| bad(format!("no `{s}` token")))
        };
        let ids = SpecialIds {
            bos: need("<s>")?,
            eos: need("</s>")?,
            pad: map.get("<pad>").copied(),
            boi: need("<racm3:break>")?,
            eoi: need("<eoss>")?,
            sep: need("<reserved08706>")?,
            image: need("<image>")?,
        };
        let all = code_to_id
            .iter()
            .chain([&ids.bos, &ids.eos, &ids.boi, &ids.eoi, &ids.sep, &ids.image]);
        for &id in all {
            if id as usize >= vocab_size {
                return Err(bad(format!(
                    "token id {id} is outside the vocabulary ({vocab_size})"
                )));
            }
        }
        Ok(Self {
            code_to_id,
            image_ids,
            id_to_code,
            ids,
            tokens: map.clone(),
        })
    }

    /// The id of the token named `name`.
    pub fn token(&self, name: &str) -> Option<u32> {
        self.tokens.get(name).copied()
    }

    /// Image codes (IMGIMG tokens) in the vocabulary.
    pub fn num_codes(&self) -> usize {
        self.code_to_id.len()
    }

    /// The image code of a token id, if it is an image token.
    pub fn code_of(&self, id: u32) -> Option<u32> {
        self.id_to_code.get(&id).copied()
    }

    /// Whether `id` is an image (IMGIMG) token.
    pub fn is_image_token(&self, id: u32) -> bool {
        self.id_to_code.contains_key(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_token_names() {
        assert_eq!(parse_image_token("IMGIMGAZ"), Some(0));
        assert_eq!(parse_image_token("IMGIMGBAZ"), Some(10));
        assert_eq!(parse_image_token("IMGIMGIBJCZ"), Some(8192));
        assert_eq!(parse_image_token("IMGIMGZ"), None);
        assert_eq!(parse_image_token("IMGIMGKZ"), None);
        assert_eq!(parse_image_token("IMGIMGAB"), None);
    }

    #[test]
    fn vq_config_old_and_new_names() {
        let v = serde_json::json!({"ch": 64, "ch_mult": [1, 2], "z_channels": 4, "n_embed": 16,
            "embed_dim": 4, "base_channels": 32, "attn_resolutions": [16], "resolution": 32});
        let c = VqConfig::from_json(&v).unwrap();
        assert_eq!(c.base_channels, 32);
        assert_eq!(c.channel_multiplier, vec![1, 2]);
        assert_eq!(c.latent_channels, 4);
        assert_eq!(c.num_embeddings, 16);
        assert!(c.attn_at(16) && !c.attn_at(32));
        assert!(VqConfig::from_json(&serde_json::json!({"ch": 20, "ch_mult": [1]})).is_err());
    }
}
