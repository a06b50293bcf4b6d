//! The [`Backend`] over Show-o: text→image (MaskGIT with CFG, `--steps` = MaskGIT steps,
//! `--cfg` w = 1 + s), image→text (greedy MMU; temperature/top-k are ignored, as Show-o's
//! `top_k=1` path), and image→image as the official `inference_t2i.py` modes:
//!
//! - **inpainting**: an image with a mask ([`ImageInput::with_mask`]): the white region is
//!   regenerated (see [`crate::edit::code_mask`]); or `Segment::ImageCodes` entries ≥
//!   codebook_size;
//! - **extrapolation**: an image with an [`Extend`](any2any_core::Extend) (directions in order,
//!   offset): one MaskGIT pass per direction; the request's text is used for every direction, or,
//!   when it holds exactly one text segment (`Text` / `TextIds`) per direction, segment i
//!   conditions direction i;
//! - a plain image (no edit) keeps every code (the loop re-samples nothing).
//!
//! Images go through the official `image_transform` (shorter side to the resolution with PIL
//! bicubic, centre crop). Requests of one `generate_batch` share one MaskGIT loop per pass where
//! their prompt lengths and step counts agree (each image with its own mask, guidance,
//! temperature and noise; the codes are those of a lone run); progress is reported per step.
use crate::config::ShowoConfig;
use crate::edit::{check_extend, code_mask, extend_merge, extend_window, CodeGrid};
use crate::magvit::{Magvit, MagvitConfig};
use crate::maskgit::{t2i_generate_batch, MaskgitRow};
use crate::model::ShowoModel;
use crate::prompt;
use any2any_core::backend::{Capabilities, Param};
use any2any_core::edit::resize_shortest_center_crop;
use any2any_core::loading::{ComponentLayout, LayoutFile};
use any2any_core::sampling::{LogitsPipeline, SamplingParams};
use any2any_core::{image, tokenizers};
use any2any_core::{
    Backend, Direction, EditKind, Error, ExtendDirection, Generated, Hooks, ImageEdit, ImageInput,
    LoadOptions, Modality, ModelFiles, ModelInfo, NoiseSource, Output, ReplayNoise, Request,
    Result, Segment,
};
use candle_core::{DType, Device, Tensor};
use std::time::Instant;

/// Text slots before `[soi]` of a t2i prompt (Show-o's `max_seq_length`, 128 in its configs).
pub const MAX_SEQ_LENGTH: usize = 128;
/// Show-o's default guidance scale s (w = 1 + s).
pub const DEFAULT_GUIDANCE_SCALE: f64 = 1.75;
/// Show-o's default number of MaskGIT steps.
pub const DEFAULT_STEPS: usize = 18;
/// Most uniforms pre-drawn for one request (1 GiB of f32): a step draws 2 per image code.
const MAX_PREDRAWN: usize = 1 << 28;
/// The reference's `max_new_tokens` for image→text.
const DEFAULT_MMU_TOKENS: usize = 100;

/// A loaded Show-o checkpoint: the transformer, MAGVIT-v2 (when the checkpoint has it) and the
/// tokenizer. Load it with [`load`].
pub struct ShowoBackend {
    model: ShowoModel,
    magvit: Option<Magvit>,
    tokenizer: Option<tokenizers::Tokenizer>,
    /// `<|endoftext|>` of the Phi tokenizer: bos, eos and the MMU stop token.
    bos: u32,
    name: String,
}

/// Where Show-o keeps MAGVIT-v2: `magvit/model.safetensors` (+ `magvit/config.json`, else the
/// official defaults), always in f32; `--component magvit=DIR_OR_HUB_ID` points elsewhere.
pub const MAGVIT_LAYOUT: ComponentLayout = ComponentLayout {
    name: "magvit",
    dirs: &["magvit"],
    files: &[LayoutFile {
        weights: "model.safetensors",
        configs: &["config.json"],
    }],
    dtype: Some(DType::F32),
    optional: true,
};

/// Show-o's own components (for [`any2any_core::Family::components`]).
pub const COMPONENTS: &[ComponentLayout] = &[MAGVIT_LAYOUT];

/// Loads a Show-o checkpoint directory (MAGVIT-v2 from its `magvit` component, see
/// [`MAGVIT_LAYOUT`], when present).
pub fn load(files: &ModelFiles, opts: &LoadOptions) -> Result<Box<dyn Backend>> {
    let (cfg, bb) = ShowoConfig::load(&files.config)?;
    let dtype = opts.dtype();
    let device = &opts.device;
    let vb = files.var_builder(dtype, device)?;
    let model = ShowoModel::load(vb, cfg, &bb)?;
    let magvit = match files.layout_component(&MAGVIT_LAYOUT, &[])? {
        Some(c) => {
            let mcfg: MagvitConfig = ModelFiles::optional_json(&c.config)?;
            Some(Magvit::load(c.var_builder(DType::F32, device)?, &mcfg)?)
        }
        None => None,
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

/// The text of each Text / TextIds segment of a request, in order.
type Texts = Vec<Vec<u32>>;

/// The MaskGIT passes one output of an image request goes through.
#[derive(Debug, Clone)]
enum Plan {
    /// One pass over `tokens` (N codes, or the mask id where a code is generated).
    Single { text: Vec<u32>, tokens: Vec<u32> },
    /// Extrapolation: one pass per direction, text `texts[i]` for direction i.
    Extend {
        texts: Texts,
        dirs: Vec<ExtendDirection>,
        offset: usize,
        grid: CodeGrid,
    },
}

/// One output of one image request, moving through its passes.
struct Job {
    req: usize,
    plan: Plan,
    next_pass: usize,
    steps: usize,
    guidance_scale: f64,
    temperature: f64,
    noise: ReplayNoise,
    /// The final code grid once every pass ran.
    result: Option<CodeGrid>,
}

impl Job {
    fn passes(&self) -> usize {
        match &self.plan {
            Plan::Single { .. } => 1,
            Plan::Extend { dirs, .. } => dirs.len(),
        }
    }

    /// The text of pass `i`.
    fn text(&self, i: usize) -> &[u32] {
        match &self.plan {
            Plan::Single { text, .. } => text,
            Plan::Extend { texts, .. } => &texts[i.min(texts.len().saturating_sub(1))],
        }
    }
}

impl ShowoBackend {
    fn grid(&self) -> usize {
        (self.model.config.num_vq_tokens as f64).sqrt() as usize
    }

    /// The pixel resolution images are brought to (`grid · 16`).
    fn resolution(&self) -> u32 {
        (self.grid() * 16) as u32
    }

    fn device(&self) -> &Device {
        self.model.device()
    }

    fn magvit(&self) -> Result<&Magvit> {
        self.magvit.as_ref().ok_or_else(|| Error::MissingFile {
            dir: self.name.clone(),
            what: "Show-o's MAGVIT-v2 image tokenizer (showlab/magvitv2 weights)".into(),
            looked_for: "magvit/model.safetensors (or a `magvit` component: --component magvit=DIR_OR_HUB_ID)".into(),
        })
    }

    fn encode_text(&self, t: &str) -> Result<Vec<u32>> {
        any2any_core::loading::tokenize(self.tokenizer.as_ref(), t)
    }

    /// The ids of each text segment, in order; refuses segment kinds Show-o does not take.
    fn texts(&self, req: &Request) -> Result<Texts> {
        let mut out = Vec::new();
        for s in &req.segments {
            match s {
                Segment::TextIds(t) => out.push(t.clone()),
                Segment::Text(t) => out.push(self.encode_text(t)?),
                Segment::Image(_) | Segment::ImageCodes { .. } => {}
                other => {
                    return Err(Error::invalid(
                        "prompt",
                        format!("Show-o does not take {} segments", other.kind()),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn text_ids(&self, req: &Request) -> Result<Vec<u32>> {
        Ok(self.texts(req)?.concat())
    }

    /// The single image-ish segment of a request (Show-o takes at most one).
    fn image_segment<'r>(&self, req: &'r Request) -> Result<Option<&'r Segment>> {
        let imgs: Vec<&Segment> = req
            .segments
            .iter()
            .filter(|s| matches!(s, Segment::Image(_) | Segment::ImageCodes { .. }))
            .collect();
        match imgs.len() {
            0 => Ok(None),
            1 => Ok(Some(imgs[0])),
            k => Err(Error::invalid(
                "image",
                format!("Show-o takes one image per prompt, got {k}"),
            )),
        }
    }

    fn image_codes(&self, req: &Request) -> Result<Option<Vec<u32>>> {
        match self.image_segment(req)? {
            Some(Segment::ImageCodes { codes, .. }) => Ok(Some(codes.clone())),
            Some(Segment::Image(img)) => Ok(Some(self.encode_image(img)?)),
            _ => Ok(None),
        }
    }

    /// The official `image_transform` (shorter side to the resolution with PIL bicubic, centre
    /// crop, `(x/255 − 0.5)/0.5`) and MAGVIT-v2 codes, row-major over the grid.
    fn encode_image(&self, img: &ImageInput) -> Result<Vec<u32>> {
        let size = self.resolution();
        let px = resize_shortest_center_crop(&img.pixels, size)?;
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

    /// The plan of one image request (identical for each of its outputs).
    fn plan(&self, req: &Request) -> Result<Plan> {
        let n = self.model.config.num_vq_tokens;
        let mask_id = self.model.config.vocab().mask;
        let texts = self.texts(req)?;
        let single = |tokens: Vec<u32>| Plan::Single {
            text: texts.concat(),
            tokens,
        };
        Ok(match self.image_segment(req)? {
            None => single(vec![mask_id; n]),
            Some(Segment::ImageCodes { codes, .. }) => {
                // given codes stay, mask-id codes (≥ codebook) are regenerated
                if codes.len() != n {
                    return Err(Error::invalid(
                        "image",
                        format!("{} codes, the model takes {n}", codes.len()),
                    ));
                }
                single(self.known(codes))
            }
            Some(Segment::Image(img)) => match &img.edit {
                None => single(self.known(&self.encode_image(img)?)),
                Some(ImageEdit::Inpaint { mask }) => single(self.inpaint_tokens(img, mask)?),
                Some(ImageEdit::Extend(e)) => self.extend_plan(img, e, texts)?,
                // an edit kind this family does not list is refused by `check` already
                Some(other) => return Err(self.unsupported(&other.kind().to_string())),
            },
            Some(other) => {
                return Err(Error::invalid(
                    "image",
                    format!("unexpected {} segment", other.kind()),
                ))
            }
        })
    }

    /// Codes as the MaskGIT loop's known tokens: codes outside the codebook become the mask id.
    fn known(&self, codes: &[u32]) -> Vec<u32> {
        let v = self.model.config.vocab();
        codes
            .iter()
            .map(|&c| {
                if (c as usize) < v.codebook_size {
                    c
                } else {
                    v.mask
                }
            })
            .collect()
    }

    /// The known tokens of an inpaint: the image's codes with the cells under the mask's white
    /// region set to the mask id.
    fn inpaint_tokens(
        &self,
        img: &ImageInput,
        mask: &any2any_core::image::GrayImage,
    ) -> Result<Vec<u32>> {
        let g = self.grid();
        let mask_id = self.model.config.vocab().mask;
        let (regen, _) = code_mask(mask, self.resolution(), g)?;
        if !regen.iter().any(|&b| b) {
            return Err(Error::invalid(
                "mask",
                format!(
                    "the white region covers none of the {g}×{g} code cells after \
                     resizing (a cell is regenerated when the bicubic-downsampled \
                     mask is ≥ 0.5 there); draw a larger region"
                ),
            ));
        }
        let mut tokens = self.known(&self.encode_image(img)?);
        for (t, r) in tokens.iter_mut().zip(&regen) {
            if *r {
                *t = mask_id;
            }
        }
        Ok(tokens)
    }

    /// The plan of an extend: one text per direction (none, one shared, or one each) and the
    /// image's code grid to grow.
    fn extend_plan(
        &self,
        img: &ImageInput,
        e: &any2any_core::edit::Extend,
        texts: Texts,
    ) -> Result<Plan> {
        let g = self.grid();
        check_extend(&e.directions, e.offset, g)?;
        let k = e.directions.len();
        let texts = match texts.len() {
            0 => vec![Vec::new(); k],
            1 => vec![texts[0].clone(); k],
            m if m == k => texts,
            m => {
                return Err(Error::invalid(
                    "prompt",
                    format!(
                        "{m} text segments for {k} extend directions: give one \
                         text (used for every direction) or one per direction"
                    ),
                ))
            }
        };
        let codes = self.encode_image(img)?;
        Ok(Plan::Extend {
            texts,
            dirs: e.directions.clone(),
            offset: e.offset,
            grid: CodeGrid::new(g, g, codes)?,
        })
    }

    /// `max_seq_length` of a t2i prompt for `text` (Show-o's 128, more for a longer text).
    fn msl(text: &[u32]) -> usize {
        MAX_SEQ_LENGTH.max(text.len() + 2)
    }

    /// The image tokens (N entries) and the grid a job's next pass works on.
    fn pass_tokens(&self, job: &Job) -> Result<Vec<u32>> {
        let v = self.model.config.vocab();
        Ok(match &job.plan {
            Plan::Single { tokens, .. } => tokens.clone(),
            Plan::Extend {
                dirs, offset, grid, ..
            } => extend_window(grid, dirs[job.next_pass], *offset, self.grid(), v.mask)?.codes,
        })
    }

    /// The cond and uncond rows of a pass over `tokens` (codes or the mask id).
    fn pass_rows(&self, text: &[u32], tokens: &[u32]) -> Result<(Vec<u32>, Vec<u32>)> {
        let v = self.model.config.vocab();
        let n = self.model.config.num_vq_tokens;
        let msl = Self::msl(text);
        let mut cond = prompt::t2i_prompt(&v, text, self.bos, msl, n)?;
        let mut uncond = prompt::t2i_prompt(&v, &[], self.bos, msl, n)?;
        let start = cond.len() - n - 1;
        for (i, &t) in tokens.iter().enumerate() {
            let id = if t == v.mask {
                v.mask
            } else {
                t + v.code_offset
            };
            cond[start + i] = id;
            uncond[start + i] = id;
        }
        Ok((cond, uncond))
    }

    /// Applies a pass's codes to a job: the final grid, or the grown grid and the next pass.
    fn finish_pass(&self, job: &mut Job, codes: Vec<u32>) -> Result<()> {
        let g = self.grid();
        let pass = job.next_pass;
        job.next_pass += 1;
        let done = job.next_pass == job.passes();
        match &mut job.plan {
            Plan::Single { .. } => job.result = Some(CodeGrid::new(g, g, codes)?),
            Plan::Extend {
                dirs, offset, grid, ..
            } => {
                let gen = CodeGrid::new(g, g, codes)?;
                *grid = extend_merge(grid, &gen, dirs[pass], *offset, g)?;
                if done {
                    job.result = Some(grid.clone());
                }
            }
        }
        Ok(())
    }

    /// Every image request of a batch: plans, pre-drawn noise per output, then the passes in
    /// rounds (pass r of every job), each round's jobs grouped into shared MaskGIT loops by
    /// (prompt length, steps). Returns the outputs per request (request index, outputs).
    fn generate_images(
        &self,
        reqs: &[(usize, &Request)],
        hooks: &mut Hooks,
    ) -> Result<Vec<(usize, Vec<Output>)>> {
        let t0 = Instant::now();
        let mut jobs = self.build_jobs(reqs, hooks)?;
        // the whole schedule up front, for the progress total
        let schedule = Self::schedule(&jobs);
        let total: usize = schedule.iter().flatten().map(|g| jobs[g[0]].steps).sum();
        let mut done = 0;
        for (r, groups) in schedule.iter().enumerate() {
            for group in groups {
                done = self.run_group(&mut jobs, group, r, hooks, done, total)?;
            }
        }
        hooks.step("image", total, total)?;
        self.assemble_outputs(jobs, t0, hooks)
    }

    /// One job per output of every image request, each with its plan, sampling settings and
    /// its share of the request's pre-drawn noise.
    fn build_jobs(&self, reqs: &[(usize, &Request)], hooks: &mut Hooks) -> Result<Vec<Job>> {
        let n = self.model.config.num_vq_tokens;
        let mut jobs: Vec<Job> = Vec::new();
        for &(ri, req) in reqs {
            let plan = self.plan(req)?;
            let steps = req.params.steps.unwrap_or(DEFAULT_STEPS);
            let s = req
                .params
                .cfg
                .map_or(DEFAULT_GUIDANCE_SCALE, |w| w as f64 - 1.0);
            let temperature = req.params.temperature.map_or(1.0, |t| t as f64);
            let passes = match &plan {
                Plan::Single { .. } => 1,
                Plan::Extend { dirs, .. } => dirs.len(),
            };
            // each step draws N multinomial and N Gumbel uniforms; a lone run draws the
            // outputs one after the other from one source, so split the same stream
            let per_out = passes
                .checked_mul(steps)
                .and_then(|x| x.checked_mul(2 * n))
                .filter(|&x| x.saturating_mul(req.num_outputs) <= MAX_PREDRAWN)
                .ok_or_else(|| {
                    Error::invalid(
                        "steps",
                        format!(
                            "{steps} steps × {passes} passes × {} outputs need more than {} \
                             random draws",
                            req.num_outputs, MAX_PREDRAWN
                        ),
                    )
                })?;
            let mut src = hooks.take_noise(req.params.seed);
            for _ in 0..req.num_outputs {
                jobs.push(Job {
                    req: ri,
                    plan: plan.clone(),
                    next_pass: 0,
                    steps,
                    guidance_scale: s,
                    temperature,
                    noise: ReplayNoise::uniforms(src.uniform(per_out)?),
                    result: None,
                });
            }
        }
        Ok(jobs)
    }

    /// Per round r, the job indices grouped by (prompt length of pass r, steps), in order of
    /// first appearance.
    fn schedule(jobs: &[Job]) -> Vec<Vec<Vec<usize>>> {
        let rounds = jobs.iter().map(Job::passes).max().unwrap_or(0);
        let key = |j: &Job, r: usize| (Self::msl(j.text(r)), j.steps);
        let mut schedule: Vec<Vec<Vec<usize>>> = Vec::with_capacity(rounds);
        for r in 0..rounds {
            let mut groups: Vec<((usize, usize), Vec<usize>)> = Vec::new();
            for (i, j) in jobs.iter().enumerate().filter(|(_, j)| j.passes() > r) {
                let k = key(j, r);
                match groups.iter_mut().find(|(gk, _)| *gk == k) {
                    Some((_, g)) => g.push(i),
                    None => groups.push((k, vec![i])),
                }
            }
            schedule.push(groups.into_iter().map(|(_, g)| g).collect());
        }
        schedule
    }

    /// Pass r of the jobs in `group` as one shared MaskGIT loop; returns the progress count
    /// after it (`done` plus the group's steps).
    fn run_group(
        &self,
        jobs: &mut [Job],
        group: &[usize],
        r: usize,
        hooks: &mut Hooks,
        done: usize,
        total: usize,
    ) -> Result<usize> {
        let mut rows = Vec::with_capacity(group.len());
        for &i in group {
            let j = &jobs[i];
            let text = j.text(r).to_vec();
            let (cond, uncond) = self.pass_rows(&text, &self.pass_tokens(j)?)?;
            rows.push((cond, uncond, Self::msl(&text) + 1));
        }
        let specs: Vec<MaskgitRow> = rows
            .iter()
            .zip(group)
            .map(|((c, u, p), &i)| MaskgitRow {
                cond: c,
                uncond: Some(u),
                prefix_len: *p,
                guidance_scale: jobs[i].guidance_scale,
                temperature: jobs[i].temperature,
            })
            .collect();
        let steps = jobs[group[0]].steps;
        let mut noises: Vec<&mut dyn NoiseSource> = jobs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| group.contains(i))
            .map(|(_, j)| &mut j.noise as &mut dyn NoiseSource)
            .collect();
        let out = t2i_generate_batch(
            &self.model,
            &specs,
            steps,
            true,
            &mut noises,
            &mut |i, _| hooks.step("image", done + i, total),
        )?;
        for (&i, (codes, _)) in group.iter().zip(out) {
            self.finish_pass(&mut jobs[i], codes)?;
        }
        Ok(done + steps)
    }

    /// Decodes every finished job's grid into an output (one image at a time, cancellable
    /// between images), grouped per request in job order.
    fn assemble_outputs(
        &self,
        jobs: Vec<Job>,
        t0: Instant,
        hooks: &mut Hooks,
    ) -> Result<Vec<(usize, Vec<Output>)>> {
        let loop_s = t0.elapsed().as_secs_f64();
        let n = jobs.len();
        let mut jobs = jobs.into_iter();
        let decoded = hooks.each("vq decode", n, |_| {
            let j = jobs
                .next()
                .ok_or_else(|| Error::invalid("image", "fewer MaskGIT jobs than outputs"))?;
            let steps = j.steps * j.passes();
            let grid = j
                .result
                .ok_or_else(|| Error::invalid("image", "a MaskGIT pass did not run"))?;
            let t1 = Instant::now();
            let image = self.decode_codes(&grid.codes, grid.h, grid.w)?;
            let out = Output {
                segments: vec![Generated::Image {
                    image,
                    codes: Some(grid.codes),
                    grid: Some((grid.h, grid.w)),
                }],
                timings: any2any_core::Timings {
                    decode_s: loop_s,
                    steps,
                    image_decode_s: t1.elapsed().as_secs_f64(),
                    total_s: t0.elapsed().as_secs_f64(),
                    ..Default::default()
                },
            };
            Ok((j.req, out))
        })?;
        let mut outs: Vec<(usize, Vec<Output>)> = Vec::new();
        for (req, out) in decoded {
            match outs.last_mut() {
                Some((r, v)) if *r == req => v.push(out),
                _ => outs.push((req, vec![out])),
            }
        }
        Ok(outs)
    }

    fn generate_text(&self, req: &Request, hooks: &mut Hooks) -> Result<Vec<Output>> {
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
        let p = &req.params;
        let max_new = any2any_core::decode::text_budget(
            p.max_new_tokens,
            DEFAULT_MMU_TOKENS,
            ids.len(),
            self.model.decoder.config().max_position_embeddings,
        )?;
        // The reference's `mmu_generate` is greedy (top_k = 1); sampling is opt-in.
        let pipe = LogitsPipeline::new(
            None,
            SamplingParams::from_params(p, SamplingParams::greedy()),
        );
        let mut noise = hooks.batch_noise(&[(p.seed, req.num_outputs)]);
        let job = crate::mmu::Mmu {
            prompts: &[&ids],
            outputs: &[req.num_outputs],
            max_new,
            stop: &[self.bos],
            pipe: &pipe,
        };
        let (rows, _) = crate::mmu::mmu_generate(
            &self.model,
            &job,
            &mut noise,
            hooks,
            self.tokenizer.as_ref(),
        )?;
        let timings = any2any_core::Timings {
            total_s: t0.elapsed().as_secs_f64(),
            steps: rows.iter().map(|r| r.ids.len()).max().unwrap_or(0),
            ..Default::default()
        };
        rows.into_iter()
            .map(|r| {
                Ok(Output {
                    segments: vec![any2any_core::decode::text_segment(
                        self.tokenizer.as_ref(),
                        r.ids,
                    )?],
                    timings: timings.clone(),
                })
            })
            .collect()
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

    fn capabilities(&self) -> Capabilities {
        use Param::*;
        let image = vec![Temperature, Cfg, Steps];
        Capabilities {
            family: "showo",
            directions: vec![
                (Direction::TextToImage, image.clone()),
                (
                    Direction::ImageToText,
                    vec![Temperature, TopK, TopP, MaxNewTokens],
                ),
                (Direction::ImageToImage, image),
            ],
            edits: vec![EditKind::Inpaint, EditKind::Extend],
        }
    }

    /// The MaskGIT loop batches image requests whatever their parameters (it groups them by
    /// step count itself).
    fn same_group(&self, a: &Request, b: &Request) -> bool {
        a.want == b.want
    }

    fn generate_group(&self, group: &[&Request], hooks: &mut Hooks) -> Result<Vec<Output>> {
        if group.first().map(|r| r.want) == Some(Modality::Image) {
            let images: Vec<(usize, &Request)> = group.iter().copied().enumerate().collect();
            return Ok(self
                .generate_images(&images, hooks)?
                .into_iter()
                .flat_map(|(_, o)| o)
                .collect());
        }
        let mut out = Vec::new();
        for r in group {
            out.extend(self.generate_text(r, hooks)?);
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
        any2any_core::backend::check_code_grid(
            codes,
            height,
            width,
            self.model.config.codebook_size,
        )?;
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
