//! The release's tokenizer: `tokenizer.model`, LLaMA-2's SentencePiece BPE model (a protobuf
//! `ModelProto`). The `tokenizers` crate cannot read it, so it is decoded here with `prost` (the
//! few `sentencepiece_model.proto` fields used, declared below) and rebuilt as the `tokenizers`
//! model transformers' `LlamaConverter` (4.40, legacy mode) makes of it: BPE over the pieces with
//! merges ordered by piece score, byte fallback, `<unk>` fused; normalizer `Prepend("▁")` (when
//! `add_dummy_prefix`) + `Replace(" ", "▁")`; the special pieces `<unk>`, `<s>`, `</s>` as added
//! tokens, so `"<s>"` in a prompt is BOS (LWM's training-time `LLaMATokenizer`); decoder
//! `Replace("▁", " ")`, byte fallback, fuse, strip one leading space. A `tokenizer.json` next to
//! it (e.g. the HF `LlamaTokenizerFast` of `LargeWorldModel/LWM-Text-1M`) is used instead when
//! present. `any2any convert` writes the rebuilt one as `tokenizer.json`.

use any2any_core::tokenizers::decoders::byte_fallback::ByteFallback;
use any2any_core::tokenizers::decoders::fuse::Fuse;
use any2any_core::tokenizers::decoders::sequence::Sequence as DecoderSequence;
use any2any_core::tokenizers::decoders::strip::Strip;
use any2any_core::tokenizers::models::bpe::BPE;
use any2any_core::tokenizers::normalizers::{Prepend, Replace, Sequence as NormSequence};
use any2any_core::tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, Tokenizer};
use any2any_core::{Error, Result};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

/// `sentencepiece_model.proto`'s `ModelProto`, the fields read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    /// The pieces, by id.
    #[prost(message, repeated, tag = "1")]
    pub pieces: Vec<Piece>,
    /// How the model was trained.
    #[prost(message, optional, tag = "2")]
    pub trainer_spec: Option<TrainerSpec>,
    /// Text normalization.
    #[prost(message, optional, tag = "3")]
    pub normalizer_spec: Option<NormalizerSpec>,
}

/// `ModelProto.SentencePiece`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Piece {
    /// The piece's text.
    #[prost(string, optional, tag = "1")]
    pub piece: Option<String>,
    /// Its score (merge priority in a BPE model).
    #[prost(float, optional, tag = "2")]
    pub score: Option<f32>,
    /// NORMAL 1, UNKNOWN 2, CONTROL 3, USER_DEFINED 4, UNUSED 5, BYTE 6.
    #[prost(int32, optional, tag = "3")]
    pub r#type: Option<i32>,
}

/// `TrainerSpec`, the fields read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TrainerSpec {
    /// UNIGRAM 1, BPE 2, WORD 3, CHAR 4.
    #[prost(int32, optional, tag = "3")]
    pub model_type: Option<i32>,
    /// Whether unknown characters fall back to `<0xNN>` byte pieces.
    #[prost(bool, optional, tag = "35")]
    pub byte_fallback: Option<bool>,
    /// The unknown piece (`<unk>`).
    #[prost(string, optional, tag = "45")]
    pub unk_piece: Option<String>,
}

/// `NormalizerSpec`, the fields read.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NormalizerSpec {
    /// Whether a `▁` is prepended to the text (default true).
    #[prost(bool, optional, tag = "3")]
    pub add_dummy_prefix: Option<bool>,
}

/// Pieces a model may hold.
const MAX_PIECES: usize = 1 << 20;

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Tokenizer(format!("{}: {}", path.display(), msg.into()))
}

/// Reads a SentencePiece `tokenizer.model` and builds the equivalent `tokenizers` tokenizer.
pub fn from_sentencepiece(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let proto = ModelProto::decode(bytes.as_slice())
        .map_err(|e| bad(path, format!("not a SentencePiece model (protobuf: {e})")))?;
    build(&proto).map_err(|m| bad(path, m))
}

fn build(proto: &ModelProto) -> std::result::Result<Tokenizer, String> {
    let trainer = proto.trainer_spec.clone().unwrap_or_default();
    if trainer.model_type.unwrap_or(1) != 2 {
        return Err(format!(
            "model_type {} (only BPE = 2, LLaMA's, is supported)",
            trainer.model_type.unwrap_or(1)
        ));
    }
    if proto.pieces.is_empty() || proto.pieces.len() > MAX_PIECES {
        return Err(format!("{} pieces", proto.pieces.len()));
    }
    let pieces: Vec<(&str, f32, i32)> = proto
        .pieces
        .iter()
        .map(|p| {
            (
                p.piece.as_deref().unwrap_or(""),
                p.score.unwrap_or(0.0),
                p.r#type.unwrap_or(1),
            )
        })
        .collect();
    let mut vocab: HashMap<String, u32> = HashMap::with_capacity(pieces.len());
    for (i, (p, _, _)) in pieces.iter().enumerate() {
        vocab.entry((*p).to_string()).or_insert(i as u32);
    }
    // transformers' SentencePieceExtractor.extract(vocab_scores): for each piece in id order, its
    // splits into two pieces of the vocabulary ordered by (left id, right id); then all of them
    // stably sorted by the piece's score, highest first.
    let mut merges: Vec<(String, String, f32)> = Vec::new();
    for (p, score, _) in &pieces {
        let bounds: Vec<usize> = p.char_indices().map(|(i, _)| i).skip(1).collect();
        let mut local: Vec<(u32, u32, &str, &str)> = bounds
            .iter()
            .filter_map(|&i| {
                let (l, r) = p.split_at(i);
                Some((*vocab.get(l)?, *vocab.get(r)?, l, r))
            })
            .collect();
        local.sort_by_key(|&(a, b, _, _)| (a, b));
        merges.extend(
            local
                .into_iter()
                .map(|(_, _, l, r)| (l.to_string(), r.to_string(), *score)),
        );
    }
    merges.sort_by(|a, b| b.2.total_cmp(&a.2));
    let merges: Vec<(String, String)> = merges.into_iter().map(|(l, r, _)| (l, r)).collect();
    let unk = trainer.unk_piece.clone().unwrap_or_else(|| "<unk>".into());
    let bpe = BPE::builder()
        .vocab_and_merges(
            vocab
                .into_iter()
                .collect::<any2any_core::tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .unk_token(unk)
        .fuse_unk(true)
        .byte_fallback(trainer.byte_fallback.unwrap_or(false))
        .build()
        .map_err(|e| format!("BPE: {e}"))?;
    let mut tok = Tokenizer::new(bpe);
    let dummy = proto
        .normalizer_spec
        .as_ref()
        .and_then(|n| n.add_dummy_prefix)
        .unwrap_or(true);
    let mut norms: Vec<NormalizerWrapper> = Vec::new();
    if dummy {
        norms.push(Prepend::new("▁".into()).into());
    }
    norms.push(Replace::new(" ", "▁").map_err(|e| e.to_string())?.into());
    tok.with_normalizer(Some(NormSequence::new(norms)))
        .map_err(|e| e.to_string())?;
    let mut decs: Vec<DecoderWrapper> = vec![
        any2any_core::tokenizers::decoders::DecoderWrapper::Replace(
            Replace::new("▁", " ").map_err(|e| e.to_string())?,
        ),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if dummy {
        decs.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decs)));
    // the control and unknown pieces (LLaMA: <unk>, <s>, </s>) are special tokens
    let special: Vec<AddedToken> = pieces
        .iter()
        .filter(|(_, _, t)| *t == 2 || *t == 3)
        .map(|(p, _, _)| AddedToken::from(p.to_string(), true).normalized(false))
        .collect();
    tok.add_special_tokens(special).map_err(|e| e.to_string())?;
    Ok(tok)
}

/// The tokenizer of a release directory: `tokenizer.json` if present, else `tokenizer.model`.
pub fn load(dir: &Path) -> Result<Option<Tokenizer>> {
    let json = dir.join("tokenizer.json");
    if json.is_file() {
        return Tokenizer::from_file(&json)
            .map(Some)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", json.display())));
    }
    let model = dir.join("tokenizer.model");
    if model.is_file() {
        return from_sentencepiece(&model).map(Some);
    }
    Ok(None)
}
