//! Limits on sizes that come from a caller's input or a checkpoint's config, the memory estimate
//! checked before the largest allocations, and the NaN/Inf guard on a loop's values.
//!
//! Every size a request or a config can set is bounded here or by the model's context, so a
//! hostile value is a typed error naming it, never an allocation that aborts the process.
//!
//! ```
//! use any2any_core::limits::{check_memory, memory_budget};
//! use any2any_core::Error;
//! assert!(check_memory("a small buffer", 1024).is_ok());
//! match check_memory("a KV cache of 10⁹ rows", u128::MAX) {
//!     Err(Error::TooLarge { what, .. }) => assert!(what.contains("KV cache")),
//!     other => panic!("{other:?}"),
//! }
//! assert!(memory_budget() > 0);
//! ```

use crate::{Error, Result};
use candle_core::{DType, Tensor};
use std::sync::OnceLock;

/// Most outputs one request asks for (`--num`).
pub const MAX_OUTPUTS: usize = 4096;
/// Most new tokens a request may reserve (`--max-new-tokens`); the model's context bounds it
/// further.
pub const MAX_NEW_TOKENS: usize = 1 << 20;
/// Largest `max_position_embeddings` a config may declare.
pub const MAX_POSITIONS: usize = 1 << 24;
/// Most pixels of an image a request or a processor config asks for (`--size`, Emu3's
/// `min_pixels` / `max_pixels`): 64 megapixels.
pub const MAX_PIXELS: u64 = 1 << 26;
/// Most denoising / unmasking steps (`--steps`).
pub const MAX_STEPS: usize = 10_000;
/// Most beams per prompt of a beam search (`--num-beams`).
pub const MAX_BEAMS: usize = 64;
/// Most rows (prompts) a benchmark batch runs (`bench --batch`).
pub const MAX_BATCH: usize = 4096;

/// The environment variable that sets the memory budget, in bytes (suffixes K, M, G, T).
pub const MEMORY_LIMIT_VAR: &str = "ANY2ANY_MEMORY_LIMIT";

/// The memory the largest allocations are checked against: [`MEMORY_LIMIT_VAR`] when set, else
/// the machine's physical memory (Linux `/proc/meminfo`), else unlimited. Read once.
pub fn memory_budget() -> u64 {
    static BUDGET: OnceLock<u64> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        std::env::var(MEMORY_LIMIT_VAR)
            .ok()
            .and_then(|v| parse_bytes(&v))
            .or_else(physical_memory)
            .unwrap_or(u64::MAX)
    })
}

/// `512`, `64K`, `24G`, `1.5T` → bytes.
fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return None,
            };
            (&s[..i], (1u64 << shift) as f64)
        }
        _ => (s, 1.0),
    };
    let v = num.trim().parse::<f64>().ok()? * mul;
    (v.is_finite() && v >= 1.0).then_some(v as u64)
}

fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

/// Bytes as `1.5 GiB`.
pub fn human_bytes(b: u128) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

/// Refuses an allocation of about `bytes` that exceeds [`memory_budget`], before it is made;
/// `what` names it and the argument or field that sized it.
pub fn check_memory(what: &str, bytes: u128) -> Result<()> {
    let budget = memory_budget();
    if bytes > budget as u128 {
        return Err(Error::TooLarge {
            what: what.to_string(),
            bytes,
            budget,
        });
    }
    Ok(())
}

/// The bytes of `elems` values of `dtype`, saturating.
pub fn bytes_of(elems: &[usize], dtype: DType) -> u128 {
    elems.iter().fold(dtype.size_in_bytes() as u128, |a, &e| {
        a.saturating_mul(e as u128)
    })
}

/// Errors when `t` holds a NaN or an infinity, naming the `stage` (e.g. "image-token logits",
/// "decoded pixels"). Cheap: one reduction to a scalar on the tensor's device; only a
/// non-finite sum (NaN, ±inf, or an overflow of large finite values) is checked element-wise.
pub fn check_finite(t: &Tensor, stage: &str) -> Result<()> {
    if t.elem_count() == 0 || !t.dtype().is_float() {
        return Ok(());
    }
    let sum = t.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?;
    if sum.is_finite() {
        return Ok(());
    }
    // 0 · x is 0 for every finite x and NaN for NaN and ±inf.
    let zero = (t.to_dtype(DType::F32)? * 0.0)?
        .sum_all()?
        .to_scalar::<f32>()?;
    if zero == 0.0 {
        return Ok(());
    }
    Err(Error::NonFinite {
        stage: stage.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_bytes("512"), Some(512));
        assert_eq!(parse_bytes("64K"), Some(64 << 10));
        assert_eq!(parse_bytes("24g"), Some(24 << 30));
        assert_eq!(parse_bytes("1.5T"), Some(3 << 39));
        for bad in ["", "x", "-1G", "0", "3Q", "NaN"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn finite_guard_names_the_stage() {
        let d = &Device::Cpu;
        let ok = Tensor::new(&[1f32, -2.0, f32::MAX, f32::MAX], d).unwrap();
        check_finite(&ok, "logits").unwrap();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let t = Tensor::new(&[1f32, bad, 3.0], d).unwrap();
            match check_finite(&t, "image logits") {
                Err(Error::NonFinite { stage }) => assert_eq!(stage, "image logits"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        let ids = Tensor::new(&[1u32, 2], d).unwrap();
        check_finite(&ids, "ids").unwrap();
    }

    #[test]
    fn memory_estimate_refuses_what_cannot_fit() {
        assert_eq!(bytes_of(&[2, 3], DType::F32), 24);
        assert_eq!(
            bytes_of(&[usize::MAX, usize::MAX, 16], DType::F32),
            u128::MAX
        );
        let e = check_memory("KV cache (--num)", u128::MAX).unwrap_err();
        assert!(e.to_string().contains("KV cache (--num)"), "{e}");
    }
}
