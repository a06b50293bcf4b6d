//! The msgpack files of the release, read in place from a memory map.
//!
//! * `params`: tux's *streaming* checkpoint (`StreamingCheckpointer.save_train_state_to_file`):
//!   one msgpack value after another, no header; each is `[key_path: [str…], value: bin]` where
//!   `value` is `flax.serialization.to_bytes(array)`: msgpack **ext type 1** holding
//!   `[shape: [int…], dtype: str, data: bin]` (C order, little endian), or, for arrays of more than
//!   2^30 bytes, a map `{"__msgpack_chunked_array__": true, "shape": {"0": d0, …}, "chunks": {"0":
//!   ext1 (1-D), …}}` whose chunks concatenate to the flat array.
//! * a flax state dict (`flax.serialization.to_bytes(params)`): one msgpack map of maps whose
//!   leaves are those arrays (the VQGAN, when saved that way).
//!
//! Every marker, length and count is read with `rmp`'s marker table and checked against the bytes
//! left before it is used; the data of an array is a slice of the map, never copied here. A
//! truncated or corrupt file is an [`Error::WeightFile`] naming the file, the record (index and
//! key) and what was wrong.

use any2any_core::{Error, Result};
use rmp::Marker;
use std::borrow::Cow;
use std::path::{Path, PathBuf};

/// Ext type of `flax.serialization`'s ndarray.
const EXT_NDARRAY: i8 = 1;
/// The key marking a chunked array.
const CHUNKED: &str = "__msgpack_chunked_array__";
/// Dimensions an array may have.
const MAX_RANK: usize = 8;

/// The element types the release uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `bfloat16` (the LLM's params).
    Bf16,
    /// `float16`.
    F16,
    /// `float32` (the VQGAN).
    F32,
}

impl Dtype {
    /// numpy's dtype name → the type; `None` for any other.
    pub fn from_numpy(name: &str) -> Option<Self> {
        match name {
            "bfloat16" => Some(Self::Bf16),
            "float16" | "<f2" => Some(Self::F16),
            "float32" | "<f4" => Some(Self::F32),
            _ => None,
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::Bf16 | Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

/// One array of a file: its shape, type and the byte slices that concatenate to its data (one
/// slice, or one per chunk).
#[derive(Debug, Clone)]
pub struct RawArray<'a> {
    /// The shape (C order).
    pub shape: Vec<usize>,
    /// The element type.
    pub dtype: Dtype,
    /// The data, in pieces (little-endian elements): slices of the file, or bytes a pickle
    /// spelled another way (protocol 2's latin-1 strings).
    pub parts: Vec<Cow<'a, [u8]>>,
}

impl RawArray<'_> {
    /// Elements in the array.
    pub fn elem_count(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A file mapped read-only.
pub struct Mapped {
    path: PathBuf,
    map: memmap2::Mmap,
}

impl Mapped {
    /// Maps `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        // SAFETY: mapped read-only; like every mmap-based loader we assume the file is not
        // truncated or rewritten while it is being read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
        })
    }
    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }
    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A bounded cursor over msgpack bytes; `what` names the position in errors.
pub(crate) struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A decoding failure, turned into [`Error::WeightFile`] by the caller with its context.
pub(crate) type Fail = String;

impl<'a> Cursor<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], Fail> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(format!(
                "truncated: {n} bytes needed at offset {}, {left} left",
                self.pos
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn be(&mut self, n: usize) -> std::result::Result<u64, Fail> {
        Ok(self.take(n)?.iter().fold(0u64, |a, &b| (a << 8) | b as u64))
    }
    fn marker(&mut self) -> std::result::Result<Marker, Fail> {
        Ok(Marker::from_u8(self.take(1)?[0]))
    }
    /// A length read as `n` big-endian bytes, no larger than the bytes left (each element of
    /// a container takes at least one byte).
    fn len(&mut self, n: usize) -> std::result::Result<usize, Fail> {
        let v = self.be(n)?;
        let left = (self.buf.len() - self.pos) as u64;
        if v > left {
            return Err(format!(
                "length {v} at offset {} exceeds the {left} bytes left",
                self.pos
            ));
        }
        Ok(v as usize)
    }

    pub(crate) fn array_len(&mut self) -> std::result::Result<usize, Fail> {
        let at = self.pos;
        match self.marker()? {
            Marker::FixArray(n) => Ok(n as usize),
            Marker::Array16 => self.len(2),
            Marker::Array32 => self.len(4),
            m => Err(format!("expected an array at offset {at}, found {m:?}")),
        }
    }
    pub(crate) fn map_len(&mut self) -> std::result::Result<usize, Fail> {
        let at = self.pos;
        match self.marker()? {
            Marker::FixMap(n) => Ok(n as usize),
            Marker::Map16 => self.len(2),
            Marker::Map32 => self.len(4),
            m => Err(format!("expected a map at offset {at}, found {m:?}")),
        }
    }
    pub(crate) fn str(&mut self) -> std::result::Result<&'a str, Fail> {
        let at = self.pos;
        let n = match self.marker()? {
            Marker::FixStr(n) => n as usize,
            Marker::Str8 => self.len(1)?,
            Marker::Str16 => self.len(2)?,
            Marker::Str32 => self.len(4)?,
            m => return Err(format!("expected a string at offset {at}, found {m:?}")),
        };
        std::str::from_utf8(self.take(n)?)
            .map_err(|_| format!("string at offset {at} is not UTF-8"))
    }
    pub(crate) fn bin(&mut self) -> std::result::Result<&'a [u8], Fail> {
        let at = self.pos;
        let n = match self.marker()? {
            Marker::Bin8 => self.len(1)?,
            Marker::Bin16 => self.len(2)?,
            Marker::Bin32 => self.len(4)?,
            m => return Err(format!("expected binary data at offset {at}, found {m:?}")),
        };
        self.take(n)
    }
    fn uint(&mut self) -> std::result::Result<u64, Fail> {
        let at = self.pos;
        match self.marker()? {
            Marker::FixPos(n) => Ok(n as u64),
            Marker::U8 => self.be(1),
            Marker::U16 => self.be(2),
            Marker::U32 => self.be(4),
            Marker::U64 => self.be(8),
            m => Err(format!(
                "expected a non-negative integer at offset {at}, found {m:?}"
            )),
        }
    }
    fn bool(&mut self) -> std::result::Result<bool, Fail> {
        let at = self.pos;
        match self.marker()? {
            Marker::True => Ok(true),
            Marker::False => Ok(false),
            m => Err(format!("expected a boolean at offset {at}, found {m:?}")),
        }
    }
    /// The next marker without consuming it.
    pub(crate) fn peek(&self) -> std::result::Result<Marker, Fail> {
        self.buf
            .get(self.pos)
            .map(|&b| Marker::from_u8(b))
            .ok_or_else(|| format!("truncated: a value expected at offset {}", self.pos))
    }
    fn ext(&mut self) -> std::result::Result<(i8, &'a [u8]), Fail> {
        let at = self.pos;
        let n = match self.marker()? {
            Marker::FixExt1 => 1,
            Marker::FixExt2 => 2,
            Marker::FixExt4 => 4,
            Marker::FixExt8 => 8,
            Marker::FixExt16 => 16,
            Marker::Ext8 => self.len(1)?,
            Marker::Ext16 => self.len(2)?,
            Marker::Ext32 => self.len(4)?,
            m => return Err(format!("expected an ext value at offset {at}, found {m:?}")),
        };
        let ty = self.take(1)?[0] as i8;
        Ok((ty, self.take(n)?))
    }
}

/// A flax ndarray: ext type 1 holding `[shape, dtype, data]`.
fn ndarray<'a>(c: &mut Cursor<'a>) -> std::result::Result<RawArray<'a>, Fail> {
    let (ty, payload) = c.ext()?;
    if ty != EXT_NDARRAY {
        return Err(format!("ext type {ty}, expected {EXT_NDARRAY} (ndarray)"));
    }
    let mut p = Cursor::new(payload);
    if p.array_len()? != 3 {
        return Err("ndarray payload is not [shape, dtype, data]".into());
    }
    let rank = p.array_len()?;
    if rank > MAX_RANK {
        return Err(format!("rank {rank} > {MAX_RANK}"));
    }
    let shape = (0..rank)
        .map(|_| p.uint().map(|d| d as usize))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let name = p.str()?;
    let dtype = Dtype::from_numpy(name)
        .ok_or_else(|| format!("dtype `{name}` (bfloat16, float16 or float32 expected)"))?;
    let data = p.bin()?;
    let want = shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if data.len() != want {
        return Err(format!(
            "shape {shape:?} {name} needs {want} bytes, the data has {}",
            data.len()
        ));
    }
    Ok(RawArray {
        shape,
        dtype,
        parts: vec![Cow::Borrowed(data)],
    })
}

/// `{"0": v0, "1": v1, …}` read in key order with `item`.
fn indexed<'a, T>(
    c: &mut Cursor<'a>,
    what: &str,
    mut item: impl FnMut(&mut Cursor<'a>) -> std::result::Result<T, Fail>,
) -> std::result::Result<Vec<T>, Fail> {
    let n = c.map_len()?;
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    for _ in 0..n {
        let k = c.str()?;
        let i: usize = k
            .parse()
            .ok()
            .filter(|&i| i < n)
            .ok_or_else(|| format!("{what}: key `{k}` is not an index below {n}"))?;
        if out[i].is_some() {
            return Err(format!("{what}: key `{k}` twice"));
        }
        out[i] = Some(item(c)?);
    }
    Ok(out.into_iter().flatten().collect())
}

/// The rest of a chunked-array map whose first key (`__msgpack_chunked_array__`) was read.
fn chunked_rest<'a>(c: &mut Cursor<'a>, n: usize) -> std::result::Result<RawArray<'a>, Fail> {
    if !c.bool()? {
        return Err(format!("`{CHUNKED}` is false"));
    }
    let mut shape = None;
    let mut chunks = None;
    for _ in 1..n {
        match c.str()? {
            "shape" => shape = Some(indexed(c, "shape", |c| c.uint().map(|d| d as usize))?),
            "chunks" => chunks = Some(indexed(c, "chunks", ndarray)?),
            k => return Err(format!("unexpected key `{k}` in a chunked array")),
        }
    }
    let shape: Vec<usize> = shape.ok_or("chunked array without `shape`")?;
    let chunks = chunks.ok_or("chunked array without `chunks`")?;
    if shape.len() > MAX_RANK {
        return Err(format!("rank {} > {MAX_RANK}", shape.len()));
    }
    let dtype = chunks.first().ok_or("chunked array without chunks")?.dtype;
    let mut parts = Vec::with_capacity(chunks.len());
    let mut elems = 0usize;
    for (i, ch) in chunks.into_iter().enumerate() {
        if ch.dtype != dtype || ch.shape.len() != 1 {
            return Err(format!("chunk {i} is not a 1-D {dtype:?} array"));
        }
        elems += ch.shape[0];
        parts.extend(ch.parts);
    }
    let want = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    if elems != want {
        return Err(format!(
            "chunks hold {elems} elements, shape {shape:?} needs {want}"
        ));
    }
    Ok(RawArray {
        shape,
        dtype,
        parts,
    })
}

/// One array value: an ndarray ext or a chunked map.
fn array_value<'a>(c: &mut Cursor<'a>) -> std::result::Result<RawArray<'a>, Fail> {
    match c.peek()? {
        Marker::FixMap(_) | Marker::Map16 | Marker::Map32 => {
            let n = c.map_len()?;
            match c.str()? {
                CHUNKED => chunked_rest(c, n),
                k => Err(format!("a map (key `{k}`) where an array was expected")),
            }
        }
        _ => ndarray(c),
    }
}

/// The records of a tux streaming checkpoint, in file order: `(key path joined by '/', array)`.
/// Keys must be unique.
pub fn streaming_records<'a>(file: &'a Mapped) -> Result<Vec<(String, RawArray<'a>)>> {
    let mut c = Cursor::new(file.bytes());
    let mut out: Vec<(String, RawArray<'a>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut index = 0usize;
    while !c.at_end() {
        let start = c.pos();
        let mut key = String::from("?");
        let rec = (|| -> std::result::Result<RawArray<'a>, Fail> {
            if c.array_len()? != 2 {
                return Err("a record is not a [key, value] pair".into());
            }
            let n = c.array_len()?;
            if n == 0 || n > 16 {
                return Err(format!("a key path of {n} parts"));
            }
            let parts = (0..n)
                .map(|_| c.str())
                .collect::<std::result::Result<Vec<_>, _>>()?;
            key = parts.join("/");
            let value = c.bin()?;
            let mut inner = Cursor::new(value);
            let a = array_value(&mut inner)?;
            if !inner.at_end() {
                return Err(format!(
                    "{} bytes after the array in the value",
                    value.len() - inner.pos()
                ));
            }
            Ok(a)
        })()
        .map_err(|msg| Error::WeightFile {
            path: file.path().to_path_buf(),
            msg: format!("record {index} (`{key}`, at byte {start}): {msg}"),
        })?;
        if !seen.insert(key.clone()) {
            return Err(Error::WeightFile {
                path: file.path().to_path_buf(),
                msg: format!("record {index}: key `{key}` appears twice"),
            });
        }
        out.push((key, rec));
        index += 1;
    }
    if out.is_empty() {
        return Err(Error::WeightFile {
            path: file.path().to_path_buf(),
            msg: "no records (an empty file)".into(),
        });
    }
    Ok(out)
}

/// The leaves of a flax state dict (`flax.serialization.to_bytes` of nested dicts), as
/// `(path joined by '/', array)`, in file order.
pub fn state_dict<'a>(file: &'a Mapped) -> Result<Vec<(String, RawArray<'a>)>> {
    let mut c = Cursor::new(file.bytes());
    let mut out = Vec::new();
    let err = |key: &str, msg: Fail| Error::WeightFile {
        path: file.path().to_path_buf(),
        msg: format!("state dict at `{key}`: {msg}"),
    };
    walk(&mut c, String::new(), 0, &mut out).map_err(|(k, m)| err(&k, m))?;
    if !c.at_end() {
        return Err(err(
            "",
            format!("{} trailing bytes", file.bytes().len() - c.pos()),
        ));
    }
    Ok(out)
}

fn walk<'a>(
    c: &mut Cursor<'a>,
    prefix: String,
    depth: usize,
    out: &mut Vec<(String, RawArray<'a>)>,
) -> std::result::Result<(), (String, Fail)> {
    if depth > 16 {
        return Err((prefix, "nested deeper than 16 levels".into()));
    }
    let n = c.map_len().map_err(|m| (prefix.clone(), m))?;
    for _ in 0..n {
        let k = c.str().map_err(|m| (prefix.clone(), m))?;
        let path = if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}/{k}")
        };
        let is_map = matches!(
            c.peek().map_err(|m| (path.clone(), m))?,
            Marker::FixMap(_) | Marker::Map16 | Marker::Map32
        );
        if is_map {
            // a chunked array or a sub-dict: look at its first key
            let save = c.pos;
            let n = c.map_len().map_err(|m| (path.clone(), m))?;
            let first = if n > 0 {
                c.str().map_err(|m| (path.clone(), m))?
            } else {
                ""
            };
            if first == CHUNKED {
                let a = chunked_rest(c, n).map_err(|m| (path.clone(), m))?;
                out.push((path, a));
            } else {
                c.pos = save;
                walk(c, path, depth + 1, out)?;
            }
        } else {
            let a = ndarray(c).map_err(|m| (path.clone(), m))?;
            out.push((path, a));
        }
    }
    Ok(())
}
