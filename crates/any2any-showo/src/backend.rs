//! The [`Backend`] over Show-o: text→image (MaskGIT with CFG, `--steps` = MaskGIT steps,
//! `--cfg` w = 1 + s), image→text (greedy MMU; temperature/top-k are ignored, as Show-o's
//! `top_k=1` path), image→image = inpainting through the same loop: the input's codes stay and
//! only positions given as `Segment::ImageCodes` entries ≥ codebook_size are regenerated (a
//! plain `Segment::Image` has every code known, so each step re-samples one position, as the
//! official rule `mask_len = max(1, …)` does; no CLI region option yet).
use crate::config::ShowoConfig;
use crate::magvit::{Magvit, MagvitConfig};
use crate::maskgit::{t2i_generate, T2iOptions};
use crate::model::ShowoModel;
use crate::prompt;
use any2any_core::backend::check_direction;
use any2any_core::{image, tokenizers};
use any2any_core::{
    Backend, Direction, Error, Generated, Hooks, ImageInput, LoadOptions, Modality, ModelFiles,
    ModelInfo, Output, Request, Result, Segment,
};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::time::Instant;

/// Text slots before `[soi]` of a t2i prompt (Show-o's `max_seq_length`, 128 in its configs).
pub const MAX_SEQ_LENGTH: usize = 128;
/// Show-o's default guidance scale s (w = 1 + s).
pub const DEFAULT_GUIDANCE_SCALE: f64 = 1.75;
pub const DEFAULT_STEPS: usize = 18;

pub struct ShowoBackend {
    model: ShowoModel,
    magvit: Option<Magvit>,
    tokenizer: Option<tokenizers::Tokenizer>,
    /// `<|endoftext|>` of the Phi tokenizer: bos, eos and the MMU stop token.
    bos: u32,
    name: String,
}

/// Loads a Show-o checkpoint directory (MAGVIT-v2 from its `magvit/` subfolder when present).
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    let (cfg, bb) = ShowoConfig::load(&files.config)?;
    let dtype = opts.dtype();
    let device = &opts.device;
    let vb = files.var_builder(dtype, device)?;
    let model = ShowoModel::load(vb, cfg, &bb)?;
    let mdir = files.dir.join("magvit");
    let magvit = if mdir.join("model.safetensors").is_file() {
        let mcfg: MagvitConfig = if mdir.join("config.json").is_file() {
            any2any_core::loading::read_json(&mdir.join("config.json"))?
        } else {
            MagvitConfig::default()
        };
        let store = any2any_core::loading::WeightStore::open(&[mdir.join("model.safetensors")])?;
        let vb = VarBuilder::from_backend(Box::new(store), DType::F32, device.clone());
        Some(Magvit::load(vb, &mcfg)?)
    } else {
        None
    };
    let phi: serde_json::Value = {
        let p = files.dir.join("phi_config.json");
        if p.is_file() {
            any2any_core::loading::read_json(&p)?
        } else {
            serde_json::Value::Null
        }
    };
    let bos = phi
        .get("bos_token_id")
        .and_then(|v| v.as_u64())
        .unwrap_or(50256) as u32;
    Ok(Box::new(ShowoBackend {
        model,
        magvit,
        tokenizer: files.load_tokenizer()?,
        bos,
        name: files.name.clone(),
    }))
}

impl ShowoBackend {
    fn grid(&self) -> usize {
        (self.model.config.num_vq_tokens as f64).sqrt() as usize
    }

    fn device(&self) -> &Device {
        self.model.device()
    }

    fn magvit(&self) -> Result<&Magvit> {
        self.magvit.as_ref().ok_or_else(|| Error::MissingFile {
            dir: self.name.clone(),
            what: "Show-o's MAGVIT-v2 image tokenizer (showlab/magvitv2 weights)".into(),
            looked_for: "magvit/model.safetensors".into(),
        })
    }

    fn text_ids(&self, req: &Request) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        for s in &req.segments {
            match s {
                Segment::TextIds(t) => ids.extend_from_slice(t),
                Segment::Text(t) => {
                    let tok = self.tokenizer.as_ref().ok_or_else(|| {
                        Error::invalid(
                            "prompt",
                            "this checkpoint has no tokenizer.json; pass --raw-ids",
                        )
                    })?;
                    let enc = tok
                        .encode(t.as_str(), false)
                        .map_err(|e| Error::Tokenizer(e.to_string()))?;
                    ids.extend_from_slice(enc.get_ids());
                }
                Segment::Image(_) | Segment::ImageCodes { .. } => {}
                other => {
                    return Err(Error::invalid(
                        "prompt",
                        format!("Show-o does not take {} segments", other.kind()),
                    ))
                }
            }
        }
        Ok(ids)
    }

    fn image_codes(&self, req: &Request) -> Result<Option<Vec<u32>>> {
        for s in &req.segments {
            match s {
                Segment::ImageCodes { codes, .. } => return Ok(Some(codes.clone())),
                Segment::Image(img) => return Ok(Some(self.encode_image(img)?)),
                _ => {}
            }
        }
        Ok(None)
    }

    fn encode_image(&self, img: &ImageInput) -> Result<Vec<u32>> {
        let size = (self.grid() * 16) as u32;
        let px = if img.width() == size && img.height() == size {
            img.pixels.clone()
        } else {
            image::imageops::resize(
                &img.pixels,
                size,
                size,
                image::imageops::FilterType::CatmullRom,
            )
        };
        let s = size as usize;
        let v: Vec<f32> = px
            .into_raw()
            .iter()
            .map(|&b| (b as f32 / 255.0 - 0.5) / 0.5)
            .collect();
        let x = Tensor::from_vec(v, (1, s, s, 3), self.device())?
            .permute((0, 3, 1, 2))?
            .contiguous()?;
        Ok(self.magvit()?.encode(&x)?.get(0)?.to_vec1::<u32>()?)
    }

    fn generate_image(&self, req: &Request, hooks: &mut Hooks) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let v = self.model.config.vocab();
        let n = self.model.config.num_vq_tokens;
        let text = self.text_ids(req)?;
        let msl = MAX_SEQ_LENGTH.max(text.len() + 2);
        let mut cond = prompt::t2i_prompt(&v, &text, self.bos, msl, n)?;
        let uncond = prompt::t2i_prompt(&v, &[], self.bos, msl, n)?;
        if let Some(codes) = self.image_codes(req)? {
            // image→image: given codes stay, mask-id codes (≥ codebook) are regenerated
            if codes.len() != n {
                return Err(Error::invalid(
                    "image",
                    format!("{} codes, the model takes {n}", codes.len()),
                ));
            }
            let start = cond.len() - n - 1;
            for (i, &c) in codes.iter().enumerate() {
                cond[start + i] = if (c as usize) < v.codebook_size {
                    c + v.code_offset
                } else {
                    v.mask
                };
            }
        }
        let s = req
            .params
            .cfg
            .map_or(DEFAULT_GUIDANCE_SCALE, |w| w as f64 - 1.0);
        let opts = T2iOptions {
            steps: req.params.steps.unwrap_or(DEFAULT_STEPS),
            guidance_scale: s,
            temperature: req.params.temperature.map_or(1.0, |t| t as f64),
            cache_prefix: true,
        };
        let mut noise = hooks.take_noise(req.params.seed);
        let mut outs = Vec::new();
        for _ in 0..req.num_outputs {
            hooks.step("image", 0, opts.steps)?;
            let (codes, _) = t2i_generate(
                &self.model,
                &cond,
                Some(&uncond),
                msl + 1,
                &opts,
                noise.as_mut(),
            )?;
            let t1 = Instant::now();
            let g = self.grid();
            let image = self.decode_codes(&codes, g, g)?;
            outs.push(Output {
                segments: vec![Generated::Image {
                    image,
                    codes: Some(codes),
                    grid: Some((g, g)),
                }],
                timings: any2any_core::Timings {
                    decode_s: t1.duration_since(t0).as_secs_f64(),
                    steps: opts.steps,
                    image_decode_s: t1.elapsed().as_secs_f64(),
                    total_s: t0.elapsed().as_secs_f64(),
                    ..Default::default()
                },
            });
        }
        Ok(outs)
    }

    fn generate_text(&self, req: &Request) -> Result<Vec<Output>> {
        let t0 = Instant::now();
        let v = self.model.config.vocab();
        let codes = self
            .image_codes(req)?
            .ok_or_else(|| Error::invalid("image", "image→text needs an image"))?;
        let text = self.text_ids(req)?;
        let mut ids = vec![v.mmu, v.soi];
        ids.extend(codes.iter().map(|&c| c + v.code_offset));
        ids.push(v.eoi);
        ids.push(self.bos);
        ids.extend(text);
        let max_new = req.params.max_new_tokens.unwrap_or(100);
        let (new, _) = crate::mmu::mmu_greedy(&self.model, &ids, max_new, Some(self.bos), true)?;
        let text = self
            .tokenizer
            .as_ref()
            .and_then(|t| t.decode(&new, true).ok());
        let out = Output {
            segments: vec![Generated::Text { ids: new, text }],
            timings: any2any_core::Timings {
                total_s: t0.elapsed().as_secs_f64(),
                ..Default::default()
            },
        };
        Ok(vec![out; req.num_outputs])
    }
}

impl Backend for ShowoBackend {
    fn info(&self) -> ModelInfo {
        let g = self.grid();
        ModelInfo::of_decoder(
            "showo",
            format!("{} (Show-o, Phi + MAGVIT-v2)", self.name),
            &self.directions(),
            &self.model.decoder,
            (g, g),
            16,
        )
    }

    fn directions(&self) -> Vec<Direction> {
        vec![
            Direction::TextToImage,
            Direction::ImageToText,
            Direction::ImageToImage,
        ]
    }

    fn generate_batch(&self, requests: &[Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        let mut out = Vec::new();
        for r in requests {
            r.validate()?;
            check_direction(self, "showo", r)?;
            out.extend(match r.want {
                Modality::Image => self.generate_image(r, hooks)?,
                Modality::Text => self.generate_text(r)?,
            });
        }
        Ok(out)
    }

    fn last_logits(&self, ids: &[u32], images: &[ImageInput]) -> Result<Tensor> {
        if ids.is_empty() {
            return Err(Error::invalid("raw-ids", "no token ids given"));
        }
        if !images.is_empty() {
            return Err(Error::invalid(
                "image",
                "Show-o raw ids carry the image as code ids; pass no --image",
            ));
        }
        let v = self.model.config.vocab();
        let len = ids.len();
        let mask = if ids.contains(&v.t2i) {
            prompt::omni_mask_t2i(&v, &[ids.to_vec()])?
        } else if let Some(e) = ids.iter().position(|&t| t == v.eoi) {
            prompt::omni_mask_mmu(1, e, len)
        } else {
            prompt::omni_mask_mmu(1, 0, len)
        };
        let x = Tensor::from_slice(ids, (1, len), self.device())?;
        Ok(self.model.forward(&x, &mask)?.get(0)?.get(len - 1)?)
    }

    fn decode_codes(&self, codes: &[u32], height: usize, width: usize) -> Result<image::RgbImage> {
        let k = self.model.config.codebook_size as u32;
        if let Some(c) = codes.iter().find(|&&c| c >= k) {
            return Err(Error::invalid(
                "codes",
                format!("code {c} outside the codebook of {k}"),
            ));
        }
        let t = Tensor::from_slice(codes, (1, codes.len()), self.device())?;
        let raw = self.magvit()?.decode(&t, height, width)?;
        let imgs = any2any_core::imageops::to_images(&raw.to_dtype(DType::F32)?)?;
        imgs.into_iter()
            .next()
            .ok_or_else(|| Error::invalid("codes", "nothing decoded"))
    }

    fn tokenizer(&self) -> Option<&tokenizers::Tokenizer> {
        self.tokenizer.as_ref()
    }
}
