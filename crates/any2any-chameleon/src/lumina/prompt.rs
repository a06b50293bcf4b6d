//! Lumina-mGPT prompts: image inputs as layout blocks (`FlexARItemProcessor`), the text→image
//! instruction and the size header.

use super::layout::{crop_sizes, image_instruction, CODES_PER_UNIT};
use super::LuminaBackend;
use any2any_core::{Error, ImageInput, Modality, Request, Result, Segment};

impl LuminaBackend {
    /// Pixels per size unit.
    pub(super) fn unit_px(&self) -> usize {
        CODES_PER_UNIT * self.model.cfg.vq.downsample_factor()
    }

    /// The size units `(h, w)` of a requested pixel size (default: the target size, square).
    pub fn units(&self, size: Option<(usize, usize)>) -> Result<(usize, usize)> {
        let u = self.unit_px();
        let t = self.lumina.target_size;
        let (w, h) = size.unwrap_or((t, t));
        if !w.is_multiple_of(u) || !h.is_multiple_of(u) || w == 0 || h == 0 {
            return Err(Error::invalid(
                "size",
                format!("{w}x{h}: Lumina-mGPT sizes are positive multiples of {u} px"),
            ));
        }
        self.lumina.size_token(h / u)?;
        self.lumina.size_token(w / u)?;
        Ok((h / u, w / u))
    }

    /// `FlexARItemProcessor.process_image`: the crop size of the best aspect fit among
    /// `crop_sizes` for the target size, resize + centre crop, `x/255·2 − 1`, VQ encode, then
    /// `[BOI, size(h), size(w), rows + newline, EOI]`.
    pub fn image_block(&self, img: &ImageInput) -> Result<Vec<u32>> {
        let lt = &self.lumina;
        let u = self.unit_px();
        let n = (lt.target_size / u).pow(2).max(1);
        let (w0, h0) = (img.width() as f64, img.height() as f64);
        let fit = |&(cw, ch): &(usize, usize)| {
            let (a, b) = (cw as f64 / w0, ch as f64 / h0);
            a.min(b) / a.max(b)
        };
        // `var_center_crop`: the best aspect fit; ties go to the larger (w, h) as the reference's
        // descending sort of (fit, size) pairs does.
        let (cw, ch) = crop_sizes(n, u)
            .into_iter()
            .max_by(|a, b| fit(a).total_cmp(&fit(b)).then(a.cmp(b)))
            .ok_or_else(|| Error::invalid("image", "no Lumina crop size"))?;
        let (codes, hl, wl) = self.model.encode_pixels(
            &img.pixels,
            (cw as u32, ch as u32),
            image::imageops::FilterType::CatmullRom,
            |v| (v as f64 / 255.0 * 2.0 - 1.0) as f32,
        )?;
        let v = &self.model.cfg.vocab;
        let mut block = vec![
            v.ids.boi,
            lt.size_token(hl / CODES_PER_UNIT)?,
            lt.size_token(wl / CODES_PER_UNIT)?,
        ];
        for row in codes.chunks(wl) {
            block.extend(row.iter().map(|&c| v.code_to_id[c as usize]));
            block.push(lt.newline);
        }
        block.push(v.ids.eoi);
        Ok(block)
    }

    /// The prompt ids of a request: `<s>` + turns + `<reserved08706>`, images as blocks where
    /// they stand; for image output the instruction with the size is prepended to the text and
    /// the header `BOI, h, w` is written. Raw ids are taken as given, each `<image>` token
    /// standing for the next image's block.
    pub fn prompt(&self, req: &Request) -> Result<Vec<u32>> {
        let ids = if req.raw {
            self.raw_prompt(req)?
        } else {
            self.templated_prompt(req)?
        };
        self.model.check_ids(&ids)?;
        Ok(ids)
    }

    fn raw_prompt(&self, req: &Request) -> Result<Vec<u32>> {
        let ph = self.model.cfg.vocab.ids.image;
        let mut images = req.images().into_iter();
        let mut ids = Vec::new();
        for seg in &req.segments {
            match seg {
                Segment::TextIds(v) => {
                    for &i in v {
                        if i != ph {
                            ids.push(i);
                            continue;
                        }
                        let img = images.next().ok_or_else(|| {
                            Error::invalid(
                                "image",
                                format!("more `<image>` tokens (id {ph}) than images"),
                            )
                        })?;
                        ids.extend(self.image_block(img)?);
                    }
                }
                Segment::Image(_) => {}
                other => return Err(not_taken(other)),
            }
        }
        if images.next().is_some() {
            return Err(Error::invalid(
                "image",
                format!("more images than `<image>` tokens (id {ph}) in the ids"),
            ));
        }
        Ok(ids)
    }

    fn templated_prompt(&self, req: &Request) -> Result<Vec<u32>> {
        let s = self.model.cfg.vocab.ids;
        let units = (req.want == Modality::Image)
            .then(|| self.units(req.params.size))
            .transpose()?;
        let mut instruction = units.map(|(h, w)| {
            let u = self.unit_px();
            image_instruction(w * u, h * u)
        });
        let mut ids = vec![s.bos];
        for seg in &req.segments {
            match seg {
                Segment::Text(t) => {
                    let text = instruction.take().unwrap_or_default() + t;
                    ids.extend(self.model.tokenize(&text)?);
                }
                Segment::TextIds(v) => ids.extend_from_slice(v),
                Segment::Image(img) => ids.extend(self.image_block(img)?),
                other => return Err(not_taken(other)),
            }
        }
        ids.push(s.sep);
        if let Some((h, w)) = units {
            ids.extend([
                s.boi,
                self.lumina.size_token(h)?,
                self.lumina.size_token(w)?,
            ]);
        }
        Ok(ids)
    }
}

fn not_taken(seg: &Segment) -> Error {
    Error::invalid(
        "input",
        format!("Lumina-mGPT does not take {} segments", seg.kind()),
    )
}
