//! Lumina-mGPT's image layout: `BOI`, a height and a width token `<reserved{8800+n}>` (n in units
//! of two codes), every row of codes followed by the newline token `<reserved08799>`, then `EOI`.

use crate::config::ChameleonConfig;
use any2any_core::{Error, Result};
use std::collections::HashMap;

/// Codes per size unit along each side (`h_latent = 2·h_grids` in the reference; one unit is
/// 32 px with the 16-px VQGAN).
pub const CODES_PER_UNIT: usize = 2;
/// `create_logits_processor` defaults of `inference_solver.py` (cfg 3.0, image top-k 2000, text
/// top-k 10) and the temperature of its examples (1.0).
pub const DEFAULT_CFG: f32 = 3.0;
/// Lumina-mGPT's default top-k for image tokens.
pub const DEFAULT_IMAGE_TOP_K: usize = 2000;
/// Lumina-mGPT's default top-k for text tokens.
pub const DEFAULT_TEXT_TOP_K: usize = 10;
/// Lumina-mGPT's default sampling temperature.
pub const DEFAULT_TEMPERATURE: f32 = 1.0;

/// The instruction Lumina-mGPT was trained with for text→image (`{W}x{H}`).
pub fn image_instruction(width: usize, height: usize) -> String {
    format!("Generate an image of {width}x{height} according to the following prompt:\n")
}

/// The Lumina layout tokens, read from the vocabulary by name.
#[derive(Debug, Clone, PartialEq)]
pub struct LuminaLayout {
    /// `<reserved08799>`: ends every row of codes.
    pub newline: u32,
    /// `size_ids[n]` is the id of `<reserved{8800+n}>`.
    size_ids: Vec<u32>,
    size_of: HashMap<u32, usize>,
    /// The square side the checkpoint was trained at (`target_size` of the reference's item
    /// processor: 512, 768 or 1024): the default output size and the crop list of image inputs.
    pub target_size: usize,
}

impl LuminaLayout {
    /// The layout of a Lumina-mGPT config: the tokens from its `vocabulary_map`; the target size
    /// is config.json's `target_size` when present, else the `-512`/`-768`/`-1024` suffix of the
    /// checkpoint's name (`Lumina-mGPT-7B-768`), else the VQ resolution. The error names the
    /// missing tokens (the caller names the file).
    pub fn new(cfg: &ChameleonConfig, name: &str) -> Result<Self> {
        let vocab = &cfg.vocab;
        let newline = vocab.token("<reserved08799>").ok_or_else(|| {
            Error::invalid(
                "vocabulary_map",
                "Lumina-mGPT needs the row-end token `<reserved08799>`",
            )
        })?;
        let mut size_ids = Vec::new();
        while 8800 + size_ids.len() <= 99_999 {
            match vocab.token(&format!("<reserved{:05}>", 8800 + size_ids.len())) {
                Some(i) => size_ids.push(i),
                None => break,
            }
        }
        if size_ids.len() < 2 {
            return Err(Error::invalid(
                "vocabulary_map",
                "Lumina-mGPT needs the size tokens `<reserved08800>`, `<reserved08801>`, …",
            ));
        }
        let size_of = size_ids.iter().enumerate().map(|(n, &i)| (i, n)).collect();
        let target_size = cfg
            .target_size
            .or_else(|| target_from_name(name))
            .unwrap_or(cfg.vq.resolution);
        Ok(Self {
            newline,
            size_ids,
            size_of,
            target_size,
        })
    }

    /// The largest size (in units) the vocabulary can express.
    pub fn max_units(&self) -> usize {
        self.size_ids.len() - 1
    }

    /// The size token of `units` (height or width in units of the grid step); an error beyond [`LuminaLayout::max_units`].
    pub fn size_token(&self, units: usize) -> Result<u32> {
        self.size_ids
            .get(units)
            .copied()
            .filter(|_| units > 0)
            .ok_or_else(|| {
                Error::invalid(
                    "size",
                    format!(
                        "{units} size units: Lumina-mGPT expresses 1..={} units per side",
                        self.max_units()
                    ),
                )
            })
    }

    /// The number of units of a size token.
    pub fn units_of(&self, id: u32) -> Option<usize> {
        self.size_of.get(&id).copied().filter(|&n| n > 0)
    }

    /// The code grid `(rows, cols)` of an image from its two size tokens.
    pub fn grid_of(&self, h_id: u32, w_id: u32) -> Result<(usize, usize)> {
        let units = |id: u32| {
            self.units_of(id).ok_or_else(|| {
                Error::invalid(
                    "ids",
                    format!("token {id} stands where a Lumina image size token (<reserved08801>…) is expected"),
                )
            })
        };
        Ok((units(h_id)? * CODES_PER_UNIT, units(w_id)? * CODES_PER_UNIT))
    }
}

/// `…-768` (or `-768-Omni`, `_768/`) → 768 for the sizes Lumina-mGPT was released at.
fn target_from_name(name: &str) -> Option<usize> {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .filter_map(|part| part.parse::<usize>().ok())
        .rfind(|n| [512, 768, 1024].contains(n))
}

/// `generate_crop_size_list`: every `(w, h)` patch grid with `w·h ≤ n` patches and an aspect
/// ratio of at most 4, largest width first, in pixels.
pub fn crop_sizes(num_patches: usize, patch: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let (mut wp, mut hp) = (num_patches, 1usize);
    while wp > 0 {
        if wp.max(hp) as f64 / wp.min(hp) as f64 <= 4.0 {
            out.push((wp * patch, hp * patch));
        }
        if (hp + 1) * wp <= num_patches {
            hp += 1;
        } else {
            wp -= 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_size_from_the_checkpoint_name() {
        assert_eq!(target_from_name("Alpha-VLLM/Lumina-mGPT-7B-768"), Some(768));
        assert_eq!(target_from_name("/models/Lumina-mGPT-7B-1024"), Some(1024));
        assert_eq!(target_from_name("Lumina-mGPT-7B-768-Omni"), Some(768));
        assert_eq!(target_from_name("tests/fixtures/lumina-tiny"), None);
    }

    #[test]
    fn crop_sizes_match_the_reference_list() {
        // generate_crop_size_list((512 // 32) ** 2, 32): first and last entries, ratio ≤ 4.
        let l = crop_sizes(256, 32);
        assert_eq!(l.first(), Some(&(1024, 256)));
        assert_eq!(l.last(), Some(&(256, 1024)));
        assert!(l.contains(&(512, 512)));
        assert!(l.iter().all(|&(w, h)| w * h <= 512 * 512));
        assert!(l
            .iter()
            .all(|&(w, h)| w.max(h) as f64 / w.min(h) as f64 <= 4.0));
    }
}
