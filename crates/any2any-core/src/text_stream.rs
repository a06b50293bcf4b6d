//! UTF-8-safe incremental detokenization: turns a growing list of token ids into text deltas
//! that never split a character (byte-level BPE emits a multi-byte character over several ids).

use crate::{Error, Result};
use tokenizers::Tokenizer;

/// The decoding state of one output's text.
///
/// Each [`TextStream::push`] decodes the ids since the last emitted boundary and returns the new
/// text once it no longer ends in an incomplete character (U+FFFD from a partial byte
/// sequence); [`TextStream::finish`] flushes what is left. Concatenated, the deltas equal
/// `tokenizer.decode(all_ids, true)` for tokenizers whose decoding is prefix-stable.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    /// Start of the window that is decoded for context.
    prev: usize,
    /// End of what has been emitted.
    cur: usize,
}

impl TextStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    fn decode(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
        tok.decode(ids, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// Adds one id; the text it completes, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = Self::decode(tok, &self.ids[self.prev..self.cur])?;
        let now = Self::decode(tok, &self.ids[self.prev..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') {
            let delta = match now.get(before.len()..) {
                Some(d) => d.to_string(),
                None => return Ok(None),
            };
            self.prev = self.cur;
            self.cur = self.ids.len();
            Ok(Some(delta))
        } else {
            Ok(None)
        }
    }

    /// The text not yet emitted (an incomplete character at the very end included as decoded).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<Option<String>> {
        let before = Self::decode(tok, &self.ids[self.prev..self.cur])?;
        let now = Self::decode(tok, &self.ids[self.prev..])?;
        self.prev = self.cur;
        self.cur = self.ids.len();
        Ok(now
            .get(before.len()..)
            .filter(|d| !d.is_empty())
            .map(str::to_string))
    }
}
