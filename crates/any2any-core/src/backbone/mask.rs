use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// The additive value of a masked score: finite (never −∞), so a row can never turn into NaN.
pub const MASKED: f32 = f32::MIN;

/// How rows of one batch sit in the cache: each row is left-padded by `pad_left[r]` positions,
/// which no query ever sees and which do not count as positions.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RowLayout {
    /// Left padding of each row, in cache slots; one entry per row.
    pub pad_left: Vec<usize>,
}

impl RowLayout {
    /// `rows` rows without padding.
    pub fn dense(rows: usize) -> Self {
        Self {
            pad_left: vec![0; rows],
        }
    }
    /// Left-pads sequences of the given lengths to the longest.
    pub fn left_padded(lens: &[usize]) -> Self {
        let max = lens.iter().copied().max().unwrap_or(0);
        Self {
            pad_left: lens.iter().map(|l| max - l).collect(),
        }
    }
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.pad_left.len()
    }
    /// Whether no row is padded.
    pub fn is_dense(&self) -> bool {
        self.pad_left.iter().all(|&p| p == 0)
    }
    /// Each row repeated `n` times in place (r0,r0,…,r1,…).
    pub fn repeat_rows(&self, n: usize) -> Self {
        Self {
            pad_left: self
                .pad_left
                .iter()
                .flat_map(|&p| std::iter::repeat_n(p, n))
                .collect(),
        }
    }
    /// The rows of `self` followed by the rows of `other`.
    pub fn stack(&self, other: &Self) -> Self {
        Self {
            pad_left: self
                .pad_left
                .iter()
                .chain(&other.pad_left)
                .copied()
                .collect(),
        }
    }
    /// Position id of cache slot `slot` in row `r` (pads clamp to 0; they are never attended).
    pub fn position(&self, r: usize, slot: usize) -> usize {
        slot.saturating_sub(self.pad_left[r])
    }
}

/// Which keys a query may see, beyond padding.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskKind {
    /// Each query sees itself and everything before it.
    Causal,
    /// Causal, except that the first `n` slots (pads included) see each other in full
    /// (bidirectional prefix, e.g. Show-o understanding).
    BidirectionalPrefix(usize),
    /// Causal, with full attention inside each `[start, end)` slot span (image spans).
    BlockCausal(Vec<(usize, usize)>),
    /// Causal, except that in row `r` no query sees a key inside one of the `[start, end)` slot
    /// spans of `hidden[r]` (a row without an entry hides nothing). E.g. JanusFlow's
    /// unconditioned rows: their prompt tokens after BOS are masked out at the same positions,
    /// as an HF 2-D attention mask with zeros does.
    HiddenKeys(Vec<Vec<(usize, usize)>>),
    /// Fully explicit visibility over absolute cache slots (pads and layout ignored):
    /// `visible[(r * len + q) * len + k]` says whether query slot `q` of row `r` sees key slot
    /// `k`; `len` covers every slot a forward may reach. Each query must see at least one key
    /// (checked in `build`) so no row goes NaN. E.g. Show-o's omni-attention mask.
    Explicit {
        /// Cache slots covered, the side of each row's `len × len` visibility matrix.
        len: usize,
        /// `rows · len · len` flags, query-major within each row.
        visible: Vec<bool>,
    },
}

impl MaskKind {
    fn visible(&self, r: usize, q: usize, k: usize) -> bool {
        if let MaskKind::HiddenKeys(hidden) = self {
            let spans = hidden.get(r).map_or(&[][..], Vec::as_slice);
            return k <= q && !spans.iter().any(|&(s, e)| k >= s && k < e);
        }
        if k <= q {
            return true;
        }
        match self {
            MaskKind::Causal | MaskKind::Explicit { .. } | MaskKind::HiddenKeys(_) => false,
            MaskKind::BidirectionalPrefix(n) => q < *n && k < *n,
            MaskKind::BlockCausal(spans) => spans
                .iter()
                .any(|&(s, e)| q >= s && q < e && k >= s && k < e),
        }
    }

    /// The additive mask `[rows, 1, q_len, q_offset + q_len]` for queries at slots
    /// `q_offset..q_offset+q_len`, or `None` when nothing is masked (a single query over an
    /// unpadded causal cache), so the hot decode step skips it.
    pub fn build(
        &self,
        layout: &RowLayout,
        q_offset: usize,
        q_len: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Option<Tensor>> {
        let k_len = q_offset + q_len;
        let causal_single = matches!(self, MaskKind::Causal) && q_len == 1;
        if layout.is_dense() && causal_single {
            return Ok(None);
        }
        let rows = layout.rows();
        if let MaskKind::Explicit { len, visible } = self {
            if k_len > *len || visible.len() != rows * len * len {
                return Err(Error::invalid(
                    "mask",
                    format!(
                        "explicit mask of {} entries for {rows} rows × {len}² slots, forward \
                         reaches slot {k_len}",
                        visible.len()
                    ),
                ));
            }
            let mut m = vec![MASKED; rows * q_len * k_len];
            for r in 0..rows {
                for qi in 0..q_len {
                    let q = q_offset + qi;
                    let src = &visible[(r * len + q) * len..(r * len + q) * len + k_len];
                    let row = &mut m[(r * q_len + qi) * k_len..(r * q_len + qi + 1) * k_len];
                    let mut any = false;
                    for (v, &ok) in row.iter_mut().zip(src) {
                        if ok {
                            *v = 0.0;
                            any = true;
                        }
                    }
                    if !any {
                        return Err(Error::invalid(
                            "mask",
                            format!("row {r} query slot {q} sees no key"),
                        ));
                    }
                }
            }
            let t = Tensor::from_vec(m, (rows, 1, q_len, k_len), device)?;
            return Ok(Some(t.to_dtype(dtype)?));
        }
        let mut m = vec![0f32; rows * q_len * k_len];
        for r in 0..rows {
            let pad = layout.pad_left[r];
            for qi in 0..q_len {
                let q = q_offset + qi;
                let row = &mut m[(r * q_len + qi) * k_len..(r * q_len + qi + 1) * k_len];
                for (k, v) in row.iter_mut().enumerate() {
                    // pads see only themselves, so a pad row is never fully masked
                    let ok = if q < pad {
                        k == q
                    } else {
                        k >= pad && self.visible(r, q, k)
                    };
                    if !ok {
                        *v = MASKED;
                    }
                }
            }
        }
        let t = Tensor::from_vec(m, (rows, 1, q_len, k_len), device)?;
        Ok(Some(t.to_dtype(dtype)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causal_with_padding_never_masks_a_whole_row() {
        let layout = RowLayout::left_padded(&[3, 1]);
        let m = MaskKind::Causal
            .build(&layout, 0, 3, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v: Vec<Vec<Vec<f32>>> = m.squeeze(1).unwrap().to_vec3().unwrap();
        assert_eq!(v[0][2], vec![0.0, 0.0, 0.0]);
        assert_eq!(v[0][0], vec![0.0, MASKED, MASKED]);
        // row 1: two pads then one token that sees only itself
        assert_eq!(v[1][2], vec![MASKED, MASKED, 0.0]);
        for r in &v {
            for q in r {
                assert!(q.contains(&0.0));
            }
        }
        assert!(MaskKind::Causal
            .build(&RowLayout::dense(2), 5, 1, DType::F32, &Device::Cpu)
            .unwrap()
            .is_none());
    }

    #[test]
    fn prefix_and_blocks() {
        let l = RowLayout::dense(1);
        let m = MaskKind::BidirectionalPrefix(2)
            .build(&l, 0, 3, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v = m
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(v[0], vec![0.0, 0.0, MASKED]);
        let m = MaskKind::BlockCausal(vec![(1, 3)])
            .build(&l, 0, 4, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v = m
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(v[1], vec![0.0, 0.0, 0.0, MASKED]);
        assert_eq!(v[0], vec![0.0, MASKED, MASKED, MASKED]);
    }

    #[test]
    fn hidden_keys_mask_only_their_rows() {
        let m = MaskKind::HiddenKeys(vec![vec![], vec![(1, 3)]]);
        let t = m
            .build(&RowLayout::dense(2), 0, 4, DType::F32, &Device::Cpu)
            .unwrap()
            .unwrap();
        let v: Vec<Vec<Vec<f32>>> = t.squeeze(1).unwrap().to_vec3().unwrap();
        assert_eq!(v[0][3], vec![0.0; 4]);
        // row 1: slots 1 and 2 are seen by no query, not even themselves
        assert_eq!(v[1][3], vec![0.0, MASKED, MASKED, 0.0]);
        assert_eq!(v[1][2], vec![0.0, MASKED, MASKED, MASKED]);
        assert_eq!(v[1][0], vec![0.0, MASKED, MASKED, MASKED]);
    }

    #[test]
    fn explicit_mask_is_used_verbatim_and_refuses_empty_rows() {
        let dev = Device::Cpu;
        // 1 row, 3 slots: slot 0 sees 0 and 2, slot 1 sees 1, slot 2 sees all
        let vis = vec![true, false, true, false, true, false, true, true, true];
        let m = MaskKind::Explicit {
            len: 3,
            visible: vis,
        };
        let t = m
            .build(&RowLayout::dense(1), 1, 2, DType::F32, &dev)
            .unwrap()
            .unwrap();
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(v, vec![MASKED, 0.0, MASKED, 0.0, 0.0, 0.0]);
        let empty = MaskKind::Explicit {
            len: 2,
            visible: vec![true, false, false, false],
        };
        assert!(empty
            .build(&RowLayout::dense(1), 0, 2, DType::F32, &dev)
            .is_err());
        assert!(m
            .build(&RowLayout::dense(1), 2, 2, DType::F32, &dev)
            .is_err());
    }
}
