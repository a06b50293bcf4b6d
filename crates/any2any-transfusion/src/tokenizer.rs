//! The text tokenizer: the checkpoint's `tokenizer.json` when it has one, else — for
//! `num_text_tokens = 256`, the byte-level setup of the library's examples, whose text ids are
//! the bytes of the text — a byte-level tokenizer built here: id `b` is byte `b`, and the
//! special ids after the text (`[sos]`, `[eos]`, `[null]`, `[som]`/`[eom]` per modality,
//! `[meta]`) are special tokens, so decoding skips them. Shape characters (`[meta]` + 1 + ASCII)
//! are not text and decode to nothing.

use crate::config::Vocab;
use any2any_core::tokenizers::Tokenizer;
use any2any_core::{Error, Result};
use serde_json::{json, Value};

/// GPT-2's byte → printable character table (`bytes_to_unicode`), the alphabet of a
/// byte-level BPE.
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut out = vec!['\0'; 256];
    for (b, c) in bs.iter().zip(&cs) {
        out[*b as usize] = char::from_u32(*c).unwrap_or('\0');
    }
    out
}

/// The names of the special ids, in id order from `vocab.sos`.
fn special_names(vocab: &Vocab) -> Vec<String> {
    let mut names = vec!["<|sos|>".to_string(), "<|eos|>".into(), "<|null|>".into()];
    names.extend((0..vocab.som.len()).map(|i| format!("<|som{i}|>")));
    names.extend((0..vocab.eom.len()).map(|i| format!("<|eom{i}|>")));
    names.push("<|meta|>".into());
    names
}

/// The byte-level tokenizer of a 256-text-token vocabulary (see the module docs).
pub fn byte_level(vocab: &Vocab) -> Result<Tokenizer> {
    let chars = byte_chars();
    let model_vocab: serde_json::Map<String, Value> = chars
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), json!(i)))
        .collect();
    let added: Vec<Value> = special_names(vocab)
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"id": vocab.sos as usize + i, "content": name, "single_word": false,
                   "lstrip": false, "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                            "trim_offsets": false, "use_regex": false});
    let spec = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": model_vocab, "merges": []}
    });
    Tokenizer::from_bytes(spec.to_string().as_bytes())
        .map_err(|e| Error::Tokenizer(format!("byte-level tokenizer: {e}")))
}
