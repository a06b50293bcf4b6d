//! The release's `vqgan` file: a Python pickle of the flax parameter dict (`lwm/vqgan.py` reads it
//! with `pickle.load`), its leaves numpy arrays (or jax arrays, which pickle as a numpy state).
//!
//! No Rust crate reads numpy arrays out of a pickle (`serde-pickle` drops the `_reconstruct` /
//! `BUILD` objects that carry them, candle's reader has no bytes opcodes), so this is a small
//! interpreter of the opcodes `pickle.dump` writes for such a dict (protocols 2–5): nothing is
//! executed; the only objects it builds are dicts, lists, tuples, scalars, strings, byte
//! strings (slices of the map) and the array states numpy's `__reduce__` produces
//! (`_reconstruct` + `BUILD (version, shape, dtype, fortran, data)`, or protocol 5's
//! `_frombuffer(data, dtype, shape, order)`). Any other global is kept by name and only an
//! error if an array is looked for inside it. Every length is checked against the bytes left.

use crate::msgpack::{Dtype, Mapped, RawArray};
use any2any_core::{Error, Result};
use std::borrow::Cow;

/// Values on the stack.
#[derive(Debug, Clone)]
enum V<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float,
    Str(String),
    Bytes(Cow<'a, [u8]>),
    Tuple(Vec<V<'a>>),
    List(Vec<V<'a>>),
    Dict(Vec<(V<'a>, V<'a>)>),
    Global(String),
    Mark,
    /// `callable(*args)`, and the state `BUILD` gave it.
    Obj {
        callable: String,
        args: Vec<V<'a>>,
        state: Option<Box<V<'a>>>,
    },
    /// A numpy dtype, by its `str` name (`'f4'`, `'<f4'`, …).
    DtypeName(String),
}

const MAX_STACK: usize = 1 << 20;
const MAX_MEMO: usize = 1 << 20;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
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
    fn le(&mut self, n: usize) -> std::result::Result<u64, String> {
        Ok(self
            .take(n)?
            .iter()
            .rev()
            .fold(0u64, |a, &b| (a << 8) | b as u64))
    }
    fn line(&mut self) -> std::result::Result<&'a str, String> {
        let rest = &self.buf[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated: unterminated line")?;
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| "a GLOBAL name is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }
    fn sized(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let len = self.le(n)? as usize;
        self.take(len)
    }
}

fn text(b: &[u8]) -> std::result::Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string is not UTF-8".into())
}

/// Pops back to the last MARK, returning the items above it.
fn pop_mark<'a>(stack: &mut Vec<V<'a>>) -> std::result::Result<Vec<V<'a>>, String> {
    let i = stack
        .iter()
        .rposition(|v| matches!(v, V::Mark))
        .ok_or("no MARK on the stack")?;
    let items = stack.split_off(i + 1);
    stack.pop();
    Ok(items)
}

fn pop<'a>(stack: &mut Vec<V<'a>>) -> std::result::Result<V<'a>, String> {
    stack.pop().ok_or_else(|| "stack underflow".to_string())
}

fn run<'a>(buf: &'a [u8]) -> std::result::Result<V<'a>, String> {
    let mut r = Reader { buf, pos: 0 };
    let mut stack: Vec<V<'a>> = Vec::new();
    let mut memo: Vec<Option<V<'a>>> = Vec::new();
    loop {
        if stack.len() > MAX_STACK {
            return Err("stack grows past 2^20 items".into());
        }
        let at = r.pos;
        let op = r.take(1)?[0];
        match op {
            0x80 => {
                let p = r.take(1)?[0];
                if p > 5 {
                    return Err(format!("pickle protocol {p} (≤ 5 supported)"));
                }
            }
            0x95 => {
                r.take(8)?; // FRAME: its length only groups opcodes
            }
            b'.' => return pop(&mut stack),
            b'}' => stack.push(V::Dict(Vec::new())),
            b']' => stack.push(V::List(Vec::new())),
            b')' => stack.push(V::Tuple(Vec::new())),
            b'(' => stack.push(V::Mark),
            b'N' => stack.push(V::None),
            0x88 => stack.push(V::Bool(true)),
            0x89 => stack.push(V::Bool(false)),
            b'J' => stack.push(V::Int(r.le(4)? as u32 as i32 as i64)),
            b'K' => stack.push(V::Int(r.le(1)? as i64)),
            b'M' => stack.push(V::Int(r.le(2)? as i64)),
            0x8a => {
                let n = r.take(1)?[0] as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err(format!("a {n}-byte integer"));
                }
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(V::Int(v));
            }
            b'G' => {
                r.take(8)?;
                stack.push(V::Float);
            }
            b'X' => stack.push(V::Str(text(r.sized(4)?)?)),
            0x8c => stack.push(V::Str(text(r.sized(1)?)?)),
            0x8d => stack.push(V::Str(text(r.sized(8)?)?)),
            b'U' => stack.push(V::Str(text(r.sized(1)?)?)), // SHORT_BINSTRING (py2 str)
            b'T' => stack.push(V::Str(text(r.sized(4)?)?)),
            b'C' => stack.push(V::Bytes(Cow::Borrowed(r.sized(1)?))),
            b'B' => stack.push(V::Bytes(Cow::Borrowed(r.sized(4)?))),
            0x8e | 0x96 => stack.push(V::Bytes(Cow::Borrowed(r.sized(8)?))), // BINBYTES8, BYTEARRAY8
            0x98 => {} // READONLY_BUFFER: the buffer stays what it is
            0x97 => return Err("out-of-band buffers (NEXT_BUFFER) are not in a file".into()),
            0x85 => {
                let a = pop(&mut stack)?;
                stack.push(V::Tuple(vec![a]));
            }
            0x86 => {
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(V::Tuple(vec![a, b]));
            }
            0x87 => {
                let c = pop(&mut stack)?;
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(V::Tuple(vec![a, b, c]));
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(V::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(V::List(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                stack.push(V::Dict(pairs(items)?));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(V::List(l)) => l.push(v),
                    _ => return Err(format!("APPEND at offset {at} onto a non-list")),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(V::List(l)) => l.extend(items),
                    _ => return Err(format!("APPENDS at offset {at} onto a non-list")),
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(V::Dict(d)) => d.push((k, v)),
                    _ => return Err(format!("SETITEM at offset {at} onto a non-dict")),
                }
            }
            b'u' => {
                let items = pairs(pop_mark(&mut stack)?)?;
                match stack.last_mut() {
                    Some(V::Dict(d)) => d.extend(items),
                    _ => return Err(format!("SETITEMS at offset {at} onto a non-dict")),
                }
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(V::Global(format!("{module}.{name}")));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (V::Str(m), V::Str(n)) => stack.push(V::Global(format!("{m}.{n}"))),
                    _ => return Err(format!("STACK_GLOBAL at offset {at} without two strings")),
                }
            }
            b'R' | 0x81 => {
                // REDUCE callable(*args) / NEWOBJ cls(*args)
                let args = match pop(&mut stack)? {
                    V::Tuple(a) => a,
                    _ => return Err(format!("REDUCE at offset {at} without an argument tuple")),
                };
                let callable = match pop(&mut stack)? {
                    V::Global(g) => g,
                    _ => return Err(format!("REDUCE at offset {at} on a non-global")),
                };
                stack.push(reduce(callable, args));
            }
            b'b' => {
                let state = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(V::Obj { state: s, .. }) => *s = Some(Box::new(state)),
                    Some(V::DtypeName(_)) => {}
                    _ => return Err(format!("BUILD at offset {at} onto a non-object")),
                }
            }
            0x94 => {
                if memo.len() >= MAX_MEMO {
                    return Err("memo grows past 2^20 entries".into());
                }
                memo.push(stack.last().cloned());
            }
            b'q' | b'r' => {
                let i = if op == b'q' { r.le(1)? } else { r.le(4)? } as usize;
                if i >= MAX_MEMO {
                    return Err(format!("memo index {i}"));
                }
                if memo.len() <= i {
                    memo.resize(i + 1, None);
                }
                memo[i] = stack.last().cloned();
            }
            b'h' | b'j' => {
                let i = if op == b'h' { r.le(1)? } else { r.le(4)? } as usize;
                let v = memo
                    .get(i)
                    .cloned()
                    .flatten()
                    .ok_or_else(|| format!("memo entry {i} read before it is written"))?;
                stack.push(v);
            }
            b'0' => {
                pop(&mut stack)?;
            }
            b'2' => {
                let v = stack.last().cloned().ok_or("DUP on an empty stack")?;
                stack.push(v);
            }
            other => {
                return Err(format!(
                    "opcode 0x{other:02x} at offset {at} (not one `pickle.dump` writes for a dict of arrays)"
                ))
            }
        }
    }
}

fn pairs(items: Vec<V<'_>>) -> std::result::Result<Vec<(V<'_>, V<'_>)>, String> {
    if !items.len().is_multiple_of(2) {
        return Err("an odd number of dict items".into());
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

fn reduce(callable: String, args: Vec<V<'_>>) -> V<'_> {
    if callable == "numpy.dtype" {
        if let Some(V::Str(s)) = args.first() {
            return V::DtypeName(s.clone());
        }
    }
    // protocol 2 spells a bytes object `_codecs.encode(str, 'latin1')`
    if callable == "_codecs.encode" {
        if let [V::Str(s), V::Str(enc)] = args.as_slice() {
            if enc == "latin1" || enc == "latin-1" {
                let b: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
                if let Some(b) = b {
                    return V::Bytes(Cow::Owned(b));
                }
            }
        }
    }
    V::Obj {
        callable,
        args,
        state: None,
    }
}

fn dtype_of(v: &V<'_>) -> Option<Dtype> {
    match v {
        V::DtypeName(s) => Dtype::from_numpy(s.trim_start_matches(['<', '=', '|'])).or(
            match s.trim_start_matches(['<', '=', '|']) {
                "f4" => Some(Dtype::F32),
                "f2" => Some(Dtype::F16),
                _ => None,
            },
        ),
        V::Str(s) => Dtype::from_numpy(s),
        _ => None,
    }
}

fn shape_of(v: &V<'_>) -> Option<Vec<usize>> {
    match v {
        V::Tuple(t) | V::List(t) => t
            .iter()
            .map(|d| match d {
                V::Int(i) if *i >= 0 => Some(*i as usize),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// The array an object stands for, if it is one.
fn array_of<'a>(v: &V<'a>) -> std::result::Result<Option<RawArray<'a>>, String> {
    let V::Obj {
        callable,
        args,
        state,
    } = v
    else {
        return Ok(None);
    };
    let (shape, dtype, fortran, data) = match callable.as_str() {
        c if c.ends_with("multiarray._reconstruct") => {
            // BUILD (version, shape, dtype, is_fortran, data)
            let Some(V::Tuple(st)) = state.as_deref() else {
                return Err("a numpy array without its state".into());
            };
            // (version, shape, dtype, is_fortran, data), or without the version
            let st = if st.len() == 5 { &st[1..] } else { &st[..] };
            let [shape, dtype, fortran, data] = st else {
                return Err("a numpy array state of unexpected length".into());
            };
            (
                shape_of(shape),
                dtype_of(dtype),
                matches!(fortran, V::Bool(true)),
                data,
            )
        }
        c if c.ends_with("numeric._frombuffer") => match args.as_slice() {
            [b, d, s, o] => (
                shape_of(s),
                dtype_of(d),
                matches!(o, V::Str(o) if o == "F"),
                b,
            ),
            _ => return Err("_frombuffer with unexpected arguments".into()),
        },
        // jax.Array pickles as `_reconstruct_array(fun, args, arr_state, aval_state)`, arr_state
        // being numpy's state tuple
        c if c.ends_with("_reconstruct_array") => {
            let Some(st) = args.get(2) else {
                return Err("a jax array without its numpy state".into());
            };
            let fake = V::Obj {
                callable: "numpy.core.multiarray._reconstruct".into(),
                args: Vec::new(),
                state: Some(Box::new(st.clone())),
            };
            return array_of(&fake);
        }
        other => return Err(format!("an object `{other}` where an array was expected")),
    };
    let shape = shape.ok_or("an array shape that is not a tuple of sizes")?;
    let dtype = dtype.ok_or("an array dtype other than float32/float16/bfloat16")?;
    if fortran && shape.len() > 1 {
        return Err("a Fortran-ordered array".into());
    }
    let V::Bytes(data) = data else {
        return Err("array data that is not a byte string".into());
    };
    let want = shape
        .iter()
        .try_fold(dtype.size(), |a, &d| a.checked_mul(d))
        .ok_or("array shape overflows")?;
    if data.len() != want {
        return Err(format!(
            "shape {shape:?} needs {want} bytes, the data has {}",
            data.len()
        ));
    }
    Ok(Some(RawArray {
        shape,
        dtype,
        parts: vec![data.clone()],
    }))
}

fn leaves<'a>(
    v: &V<'a>,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(String, RawArray<'a>)>,
) -> std::result::Result<(), String> {
    if depth > 16 {
        return Err(format!("`{prefix}`: nested deeper than 16 levels"));
    }
    match v {
        V::Dict(items) => {
            for (k, v) in items {
                let V::Str(k) = k else {
                    return Err(format!("`{prefix}`: a key that is not a string"));
                };
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}/{k}")
                };
                leaves(v, &path, depth + 1, out)?;
            }
            Ok(())
        }
        // flax's FrozenDict pickles as FrozenDict({...})
        V::Obj { args, .. } if matches!(args.first(), Some(V::Dict(_))) && args.len() == 1 => {
            leaves(&args[0], prefix, depth + 1, out)
        }
        other => match array_of(other).map_err(|e| format!("`{prefix}`: {e}"))? {
            Some(a) => {
                out.push((prefix.to_string(), a));
                Ok(())
            }
            None => Err(format!("`{prefix}`: neither a dict nor an array")),
        },
    }
}

/// The arrays of a pickled parameter dict, as `(path joined by '/', array)` in file order.
pub fn param_dict(file: &Mapped) -> Result<Vec<(String, RawArray<'_>)>> {
    let err = |msg: String| Error::WeightFile {
        path: file.path().to_path_buf(),
        msg: format!("pickled parameter dict: {msg}"),
    };
    let root = run(file.bytes()).map_err(err)?;
    let mut out = Vec::new();
    leaves(&root, "", 0, &mut out).map_err(err)?;
    if out.is_empty() {
        return Err(err("no arrays".into()));
    }
    Ok(out)
}

/// Whether the bytes start like a pickle (protocol ≥ 2).
pub fn looks_like_pickle(bytes: &[u8]) -> bool {
    bytes.first() == Some(&0x80)
}
