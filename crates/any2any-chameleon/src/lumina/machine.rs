//! The free-running Lumina-mGPT loop as a [`Constraint`] state machine over one sequence: text
//! (text top-k) until a BOI opens an image, the two size tokens (image top-k, unconstrained),
//! then the rows of the grid they name with the newline forced at each row end and EOI after the
//! last row ([`RowGrid`]); `<reserved08706>` ends the sequence. With guidance the image rows run
//! on a two-row batch (the sequence, and the image alone from its BOI), so the machine ends the
//! single-row loop once both size tokens exist, and the guided loop at EOI.

use super::layout::LuminaLayout;
use crate::config::SpecialIds;
use any2any_core::candle_core::{Device, Tensor};
use any2any_core::decode::{Ahead, Allowed, Constraint, RowGrid};
use any2any_core::sampling::LogitsPipeline;
use any2any_core::{Error, Result};

/// An image closed by its EOI: the index of its BOI and of its EOI in the sequence, and its grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed {
    /// Index of its BOI in the sequence.
    pub boi: usize,
    /// Index of its EOI in the sequence.
    pub eoi: usize,
    /// Its code grid (rows, columns).
    pub grid: (usize, usize),
}

/// Where the sequence stands.
enum Mode {
    Text,
    /// Inside the image whose BOI is at `boi`; its layout once both size tokens exist.
    Image {
        boi: usize,
        grid: Option<RowGrid>,
    },
}

/// The samplings of the loop: text, and image tokens (size tokens, unguided rows).
pub struct Pipes {
    /// Sampling of text tokens.
    pub text: LogitsPipeline,
    /// Sampling of image tokens (size tokens, unguided rows).
    pub image: LogitsPipeline,
}

/// What the machine reads from the vocabulary.
pub struct Vocab<'a> {
    /// The special ids.
    pub ids: SpecialIds,
    /// The size and newline tokens.
    pub layout: &'a LuminaLayout,
    /// IMGIMG ids.
    pub codes: &'a [u32],
    /// Entries of the vocabulary.
    pub size: usize,
    /// The device the allowed-token masks are built on.
    pub device: &'a Device,
}

/// Lumina-mGPT's layout machine: which tokens may come next (text, size tokens, a row of codes, a newline, the EOI), from what the sequence holds so far.
pub struct Machine<'a> {
    /// The whole sequence: the prompt, then every id drawn.
    pub seq: Vec<u32>,
    /// Ids of the prompt at the start of `seq`.
    pub prompt_len: usize,
    /// The images closed so far, in order.
    pub images: Vec<Closed>,
    mode: Mode,
    vocab: Vocab<'a>,
    pipes: &'a Pipes,
    /// Image rows run guided on a two-row batch.
    guided: bool,
    /// The guided two-row batch is running.
    paired: bool,
    /// Output ends at the first closed image (image output).
    one_image: bool,
    finished: bool,
}

impl<'a> Machine<'a> {
    /// The machine after `prompt`: an image the prompt opens (its last BOI without EOI) is
    /// continued, its size tokens checked when the prompt holds both.
    pub fn new(
        prompt: Vec<u32>,
        vocab: Vocab<'a>,
        pipes: &'a Pipes,
        guided: bool,
        one_image: bool,
    ) -> Result<Self> {
        let mode = match open_image(&prompt, &vocab.ids)? {
            Some(boi) => Mode::Image { boi, grid: None },
            None => Mode::Text,
        };
        let mut m = Self {
            prompt_len: prompt.len(),
            seq: prompt,
            images: Vec::new(),
            mode,
            vocab,
            pipes,
            guided,
            paired: false,
            one_image,
            finished: false,
        };
        if m.header_done() {
            m.grid()?;
        }
        Ok(m)
    }

    /// The BOI of the open image.
    pub fn open(&self) -> Option<usize> {
        match self.mode {
            Mode::Image { boi, .. } => Some(boi),
            Mode::Text => None,
        }
    }

    /// The grid of the open image, once its size tokens have been read.
    pub fn open_grid(&self) -> Option<(usize, usize)> {
        match &self.mode {
            Mode::Image { grid: Some(g), .. } => Some(g.grid()),
            _ => None,
        }
    }

    /// Ids drawn so far.
    pub fn generated(&self) -> usize {
        self.seq.len() - self.prompt_len
    }

    /// The sequence is complete (`<reserved08706>` drawn, or the image of image output closed).
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Where the guided two-row batch starts (the open image's BOI), when the next draw is an
    /// image row under guidance.
    pub fn pair_start(&self) -> Option<usize> {
        match self.mode {
            Mode::Image { boi, .. } if self.guided && !self.finished && self.header_done() => {
                Some(boi)
            }
            _ => None,
        }
    }

    /// The guided two-row batch runs (`true`) or the single row does.
    pub fn set_paired(&mut self, paired: bool) {
        self.paired = paired;
    }

    fn header_done(&self) -> bool {
        matches!(self.mode, Mode::Image { boi, .. } if self.seq.len() >= boi + 3)
    }

    /// The open image's layout, read from its size tokens the first time.
    fn grid(&mut self) -> Result<&RowGrid> {
        let Mode::Image { boi, grid } = &mut self.mode else {
            return Err(Error::invalid("ids", "no image is open"));
        };
        if grid.is_none() {
            let (h, w) = (self.seq[*boi + 1], self.seq[*boi + 2]);
            let v = &self.vocab;
            *grid = Some(RowGrid::new(
                v.layout.grid_of(h, w)?,
                v.codes,
                v.layout.newline,
                &[v.ids.eoi],
                v.size,
                v.device,
            )?);
        }
        grid.as_ref()
            .ok_or_else(|| Error::invalid("ids", "no image grid"))
    }

    /// Position of the next draw inside the open image's rows.
    fn body_pos(&self) -> usize {
        self.open().map_or(0, |boi| self.seq.len() - (boi + 3))
    }

    fn observe_id(&mut self, id: u32) -> Result<()> {
        let in_header = !self.header_done();
        self.seq.push(id);
        let ids = self.vocab.ids;
        if id == ids.sep {
            self.finished = true;
            return Ok(());
        }
        match self.mode {
            Mode::Text if id == ids.boi => {
                self.mode = Mode::Image {
                    boi: self.seq.len() - 1,
                    grid: None,
                }
            }
            Mode::Text => {}
            Mode::Image { .. } if in_header && id == ids.eoi => {
                return Err(Error::invalid(
                    "ids",
                    "an image ended before its size tokens",
                ))
            }
            Mode::Image { boi, .. } if id == ids.eoi => {
                let grid = self.open_grid().ok_or_else(|| {
                    Error::invalid("ids", "an image ended before its size tokens")
                })?;
                self.images.push(Closed {
                    boi,
                    eoi: self.seq.len() - 1,
                    grid,
                });
                self.mode = Mode::Text;
                self.finished = self.one_image;
            }
            Mode::Image { .. } => {}
        }
        Ok(())
    }
}

impl Constraint for Machine<'_> {
    fn allowed(&mut self, _step: usize) -> Result<Allowed> {
        if self.finished {
            return Ok(Allowed::Done);
        }
        if !self.header_done() {
            return Ok(Allowed::Any);
        }
        let t = self.body_pos();
        Ok(self.grid()?.at(t))
    }

    fn observe(&mut self, _step: usize, ids: &Tensor) -> Result<()> {
        let drawn = ids.to_vec1::<u32>()?;
        let id = drawn
            .first()
            .copied()
            .ok_or_else(|| Error::invalid("ids", "no id drawn"))?;
        self.observe_id(id)
    }

    fn pipeline(&self, _step: usize) -> Option<&LogitsPipeline> {
        match self.mode {
            Mode::Text => Some(&self.pipes.text),
            // the guided loop's own pipeline
            Mode::Image { .. } if self.paired => None,
            Mode::Image { .. } => Some(&self.pipes.image),
        }
    }

    /// Known ahead inside the rows of an open image whose size tokens are read (the grid's
    /// codes, newlines and EOI); text and the header depend on the ids drawn.
    fn ahead(&self, next: usize, step: usize) -> Option<Ahead> {
        match &self.mode {
            Mode::Image { grid: Some(g), .. } if !self.finished && self.header_done() => {
                Some(g.ahead_at(self.body_pos() + step.checked_sub(next)?))
            }
            _ => None,
        }
    }

    fn is_done(&self) -> bool {
        self.finished
            || (self.paired && matches!(self.mode, Mode::Text))
            || (!self.paired && self.pair_start().is_some())
    }
}

/// The BOI of the image a prompt leaves open (its last BOI without an EOI after it); a prompt
/// with more EOIs than BOIs, or two images open, is refused.
pub fn open_image(prompt: &[u32], ids: &SpecialIds) -> Result<Option<usize>> {
    let mut open = None;
    let (mut n_boi, mut n_eoi) = (0usize, 0usize);
    for (i, &id) in prompt.iter().enumerate() {
        if id == ids.boi {
            n_boi += 1;
            if n_boi == n_eoi + 1 {
                open = Some(i);
            }
        } else if id == ids.eoi {
            n_eoi += 1;
            open = None;
        }
    }
    if n_boi != n_eoi && n_boi != n_eoi + 1 {
        return Err(Error::invalid(
            "ids",
            format!("the prompt has {n_boi} image starts and {n_eoi} image ends"),
        ));
    }
    Ok(open)
}
