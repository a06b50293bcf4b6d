//! A preallocated KV cache: one `[rows, kv_heads, capacity, head_dim]` buffer per layer, written
//! in place; no per-step concatenation. `truncate` restores a prefix (a text prompt computed once,
//! an image span recomputed per step); `repeat_rows` fans a prefilled prompt out to n streams.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};

#[derive(Debug, Clone)]
struct LayerKv {
    k: Tensor,
    v: Tensor,
}

/// The cache of every layer of one backbone for a batch of `rows`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    len: usize,
    capacity: usize,
}

impl KvCache {
    /// An empty cache of `layers` layers for `rows` rows, `kv_heads × head_dim` per position and
    /// room for `capacity` positions, allocated at once (zeros) in `dtype` on `device`.
    pub fn new(
        layers: usize,
        rows: usize,
        kv_heads: usize,
        head_dim: usize,
        capacity: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let shape = (rows, kv_heads, capacity, head_dim);
        let layers = (0..layers)
            .map(|_| {
                Ok(LayerKv {
                    k: Tensor::zeros(shape, dtype, device)?,
                    v: Tensor::zeros(shape, dtype, device)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            len: 0,
            capacity,
        })
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Positions the buffers hold at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Rows (sequences) of the batch.
    pub fn rows(&self) -> usize {
        self.layers.first().map_or(0, |l| l.k.dims()[0])
    }

    /// Writes `k`, `v` (`[rows, kv_heads, n, head_dim]`) of `layer` at the current end and returns
    /// views of everything held so far including them. Call [`KvCache::advance`] once all layers
    /// have been written.
    pub fn append(&mut self, layer: usize, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let n = k.dim(2)?;
        if self.len + n > self.capacity {
            return Err(Error::ContextOverflow {
                len: self.len + n,
                max: self.capacity,
                reserved: 0,
            });
        }
        let l = self.layers.get(layer).ok_or_else(|| {
            Error::invalid(
                "layer",
                format!("{layer} ≥ {} cached layers", self.layers.len()),
            )
        })?;
        l.k.slice_set(&k.contiguous()?, 2, self.len)?;
        l.v.slice_set(&v.contiguous()?, 2, self.len)?;
        Ok((
            l.k.narrow(2, 0, self.len + n)?,
            l.v.narrow(2, 0, self.len + n)?,
        ))
    }

    /// Commits `n` appended positions.
    pub fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Drops everything after the first `len` positions (restores a prefix snapshot).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Keeps only the rows `rows` (in that order), e.g. when finished rows leave a batch.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let n = self.rows();
        if let Some(bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::invalid(
                "rows",
                format!("row {bad} of a cache of {n} rows"),
            ));
        }
        let Some(first) = self.layers.first() else {
            return Ok(());
        };
        let idx = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            first.k.device(),
        )?;
        for l in self.layers.iter_mut() {
            l.k = l.k.index_select(&idx, 0)?;
            l.v = l.v.index_select(&idx, 0)?;
        }
        Ok(())
    }

    /// A new cache whose rows are `self`'s rows each repeated `n` times (row-major: r0,r0,…,r1,…),
    /// with the same contents and capacity.
    pub fn repeat_rows(&self, n: usize) -> Result<Self> {
        let rep = |t: &Tensor| -> Result<Tensor> {
            let (r, h, c, d) = t.dims4()?;
            Ok(t.unsqueeze(1)?
                .broadcast_as((r, n, h, c, d))?
                .reshape((r * n, h, c, d))?
                .contiguous()?)
        };
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(LayerKv {
                    k: rep(&l.k)?,
                    v: rep(&l.v)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            len: self.len,
            capacity: self.capacity,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_truncate_and_repeat() {
        let dev = Device::Cpu;
        let mut c = KvCache::new(1, 2, 1, 2, 4, DType::F32, &dev).unwrap();
        let k = Tensor::arange(0f32, 8., &dev)
            .unwrap()
            .reshape((2, 1, 2, 2))
            .unwrap();
        let (ka, _) = c.append(0, &k, &k).unwrap();
        c.advance(2);
        assert_eq!(ka.dims(), &[2, 1, 2, 2]);
        let k1 = Tensor::full(9f32, (2, 1, 1, 2), &dev).unwrap();
        let (ka, _) = c.append(0, &k1, &k1).unwrap();
        c.advance(1);
        assert_eq!(ka.dims(), &[2, 1, 3, 2]);
        c.truncate(2);
        assert_eq!(c.len(), 2);
        let (ka, _) = c.append(0, &k1, &k1).unwrap();
        let row0: Vec<f32> = ka.get(0).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(row0, vec![0., 1., 2., 3., 9., 9.]);
        let r = c.repeat_rows(2).unwrap();
        assert_eq!(r.rows(), 4);
        assert_eq!(r.len(), 2);
        // overflow is a typed error
        c.advance(1);
        let big = Tensor::zeros((2, 1, 2, 2), DType::F32, &dev).unwrap();
        assert!(matches!(
            c.append(0, &big, &big),
            Err(Error::ContextOverflow { .. })
        ));
    }
}
