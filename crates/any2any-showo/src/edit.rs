//! Show-o's image edits, as the official `inference_t2i.py` modes do them:
//!
//! - **inpainting**: the mask goes through `image_transform(normalize=False)` (PIL bicubic
//!   resize of the shorter side + centre crop, `/255`), then `F.interpolate(mode="bicubic")`
//!   to the `grid × grid` code map, and `≥ 0.5` marks a code to regenerate;
//! - **extrapolation**: per direction, a `grid × grid` window made of `grid/2 − offset` kept
//!   columns (rows) of the current code grid and a masked band of `grid/2 + offset`; after the
//!   MaskGIT pass the window replaces the kept part and the grid grows by the band.
use any2any_core::edit::{interpolate_bicubic, resize_shortest_center_crop_gray, ExtendDirection};
use any2any_core::{Error, Result};

/// A row-major `h × w` grid of codes (or the mask id where a code is to be generated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeGrid {
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
    /// `h · w` codes, row-major.
    pub codes: Vec<u32>,
}

impl CodeGrid {
    /// A grid of `codes`; their count must be `h · w`.
    pub fn new(h: usize, w: usize, codes: Vec<u32>) -> Result<Self> {
        if h.checked_mul(w) != Some(codes.len()) {
            return Err(Error::invalid(
                "codes",
                format!("{} codes for a {h}×{w} grid", codes.len()),
            ));
        }
        Ok(Self { h, w, codes })
    }

    fn at(&self, r: usize, c: usize) -> u32 {
        self.codes[r * self.w + c]
    }
}

/// The inpainting mask at code resolution: `image_transform` of the 8-bit mask to
/// `resolution` px, torch bicubic down to `grid × grid`, then `≥ 0.5` → regenerate. Also returns
/// the interpolated values (for tests and diagnostics).
pub fn code_mask(
    mask: &any2any_core::image::GrayImage,
    resolution: u32,
    grid: usize,
) -> Result<(Vec<bool>, Vec<f32>)> {
    let m = resize_shortest_center_crop_gray(mask, resolution)?;
    let r = resolution as usize;
    let f: Vec<f32> = m.as_raw().iter().map(|&b| b as f32 / 255.0).collect();
    let v = interpolate_bicubic(&f, (r, r), (grid, grid))?;
    Ok((v.iter().map(|&x| x >= 0.5).collect(), v))
}

/// A direction Show-o has no window for (`ExtendDirection` may gain sides).
fn unknown_direction(dir: ExtendDirection) -> Error {
    Error::invalid("extend", format!("Show-o cannot extend {dir}"))
}

/// Checks an extrapolation request against a `grid × grid` model: one axis only (the official
/// loop builds a `grid`-wide band, which no longer fits once the grid grew the other way), an
/// even grid, and `offset < grid/2` (at least one column or row of context is kept).
pub fn check_extend(dirs: &[ExtendDirection], offset: usize, grid: usize) -> Result<()> {
    if dirs.is_empty() {
        return Err(Error::invalid("extend", "no direction given"));
    }
    let horizontal = dirs[0].is_horizontal();
    if dirs.iter().any(|d| d.is_horizontal() != horizontal) {
        return Err(Error::invalid(
            "extend",
            "Show-o extends along one axis per request (left/right or up/down): each step \
             generates a grid-wide band, which does not fit once the image grew the other way",
        ));
    }
    if !grid.is_multiple_of(2) {
        return Err(Error::invalid(
            "extend",
            format!("the model's {grid}×{grid} code grid is odd; extrapolation needs an even one"),
        ));
    }
    if offset >= grid / 2 {
        return Err(Error::invalid(
            "extend-offset",
            format!(
                "{offset} is out of range: each step keeps grid/2 − offset code columns/rows of \
                 the image as context (this model's grid is {grid}), so the offset must be \
                 below {}",
                grid / 2
            ),
        ));
    }
    Ok(())
}

/// The `grid × grid` window of one extrapolation step on `cur` (codes; `mask` where the band is
/// generated). `left`: band, then the first `keep` columns; `right`: the last `keep` columns,
/// then band; `up`/`down` likewise over rows.
pub fn extend_window(
    cur: &CodeGrid,
    dir: ExtendDirection,
    offset: usize,
    grid: usize,
    mask: u32,
) -> Result<CodeGrid> {
    let keep = grid / 2 - offset;
    let band = grid - keep;
    let fits = if dir.is_horizontal() {
        cur.h == grid && cur.w >= keep
    } else {
        cur.w == grid && cur.h >= keep
    };
    if !fits || keep == 0 {
        return Err(Error::invalid(
            "extend",
            format!(
                "cannot extend a {}×{} code grid {dir} with a {grid}-wide window",
                cur.h, cur.w
            ),
        ));
    }
    let mut codes = Vec::with_capacity(grid * grid);
    for r in 0..grid {
        for c in 0..grid {
            codes.push(match dir {
                ExtendDirection::Left if c < band => mask,
                ExtendDirection::Left => cur.at(r, c - band),
                ExtendDirection::Right if c < keep => cur.at(r, cur.w - keep + c),
                ExtendDirection::Right => mask,
                ExtendDirection::Up if r < band => mask,
                ExtendDirection::Up => cur.at(r - band, c),
                ExtendDirection::Down if r < keep => cur.at(cur.h - keep + r, c),
                ExtendDirection::Down => mask,
                other => return Err(unknown_direction(other)),
            });
        }
    }
    CodeGrid::new(grid, grid, codes)
}

/// Joins a generated window to the part of `cur` it did not cover: `left` → `[gen | cur[:, keep:]]`,
/// `right` → `[cur[:, :w-keep] | gen]`, `up` → `[gen ; cur[keep:, :]]`, `down` →
/// `[cur[:h-keep, :] ; gen]`. (The official `down` branch concatenates `image_left_part` along
/// rows, which only runs when `keep == 0`; the intended up part is used here.)
pub fn extend_merge(
    cur: &CodeGrid,
    gen: &CodeGrid,
    dir: ExtendDirection,
    offset: usize,
    grid: usize,
) -> Result<CodeGrid> {
    let keep = grid / 2 - offset;
    let (h, w) = (cur.h, cur.w);
    let mut codes = Vec::new();
    let out = match dir {
        ExtendDirection::Left | ExtendDirection::Right => {
            let nw = w - keep + gen.w;
            for r in 0..h {
                if dir == ExtendDirection::Left {
                    codes.extend((0..gen.w).map(|c| gen.at(r, c)));
                    codes.extend((keep..w).map(|c| cur.at(r, c)));
                } else {
                    codes.extend((0..w - keep).map(|c| cur.at(r, c)));
                    codes.extend((0..gen.w).map(|c| gen.at(r, c)));
                }
            }
            (h, nw)
        }
        ExtendDirection::Up => {
            codes.extend_from_slice(&gen.codes);
            codes.extend_from_slice(&cur.codes[keep * w..]);
            (gen.h + h - keep, w)
        }
        ExtendDirection::Down => {
            codes.extend_from_slice(&cur.codes[..(h - keep) * w]);
            codes.extend_from_slice(&gen.codes);
            (h - keep + gen.h, w)
        }
        other => return Err(unknown_direction(other)),
    };
    CodeGrid::new(out.0, out.1, codes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ExtendDirection::*;

    const M: u32 = 99;

    fn grid4() -> CodeGrid {
        CodeGrid::new(4, 4, (0..16).collect()).unwrap()
    }

    #[test]
    fn windows_follow_the_reference_slices() {
        let g = grid4();
        // right, offset 0: last 2 columns, then a 2-wide band
        let w = extend_window(&g, Right, 0, 4, M).unwrap();
        assert_eq!(&w.codes[..4], &[2, 3, M, M]);
        // left, offset 1: 3-wide band, then the first column
        let w = extend_window(&g, Left, 1, 4, M).unwrap();
        assert_eq!(&w.codes[4..8], &[M, M, M, 4]);
        // up, offset 0: 2 band rows, then rows 0..2
        let w = extend_window(&g, Up, 0, 4, M).unwrap();
        assert_eq!(&w.codes[..8], &[M; 8]);
        assert_eq!(&w.codes[8..], &g.codes[..8]);
        // down, offset 1: the last row, then 3 band rows
        let w = extend_window(&g, Down, 1, 4, M).unwrap();
        assert_eq!(&w.codes[..4], &[12, 13, 14, 15]);
        assert_eq!(&w.codes[4..], &[M; 12]);
    }

    #[test]
    fn merges_grow_the_grid_by_the_band() {
        let g = grid4();
        let gen = CodeGrid::new(4, 4, (100..116).collect()).unwrap();
        let r = extend_merge(&g, &gen, Right, 0, 4).unwrap();
        assert_eq!((r.h, r.w), (4, 6));
        assert_eq!(&r.codes[..6], &[0, 1, 100, 101, 102, 103]);
        let l = extend_merge(&g, &gen, Left, 1, 4).unwrap();
        assert_eq!((l.h, l.w), (4, 7));
        assert_eq!(&l.codes[..7], &[100, 101, 102, 103, 1, 2, 3]);
        let u = extend_merge(&g, &gen, Up, 0, 4).unwrap();
        assert_eq!((u.h, u.w), (6, 4));
        assert_eq!(&u.codes[16..], &g.codes[8..]);
        let d = extend_merge(&g, &gen, Down, 1, 4).unwrap();
        assert_eq!((d.h, d.w), (7, 4));
        assert_eq!(&d.codes[..12], &g.codes[..12]);
        assert_eq!(&d.codes[12..], &gen.codes[..]);
        // a second horizontal step works on the grown grid
        let w = extend_window(&r, Right, 0, 4, M).unwrap();
        assert_eq!(&w.codes[..4], &[102, 103, M, M]);
    }

    #[test]
    fn extend_checks_name_the_argument() {
        let name = |r: Result<()>| match r {
            Err(Error::InvalidArgument { name, .. }) => name,
            other => panic!("{other:?}"),
        };
        assert_eq!(name(check_extend(&[Right, Up], 0, 4)), "extend");
        assert_eq!(name(check_extend(&[], 0, 4)), "extend");
        assert_eq!(name(check_extend(&[Left], 2, 4)), "extend-offset");
        assert_eq!(name(check_extend(&[Left], 0, 5)), "extend");
        check_extend(&[Left, Right, Left], 1, 4).unwrap();
        check_extend(&[Up, Down], 7, 16).unwrap();
        // a window that does not fit is refused, not sliced out of bounds
        let tall = CodeGrid::new(6, 4, vec![0; 24]).unwrap();
        assert!(extend_window(&tall, Right, 0, 4, M).is_err());
    }
}
