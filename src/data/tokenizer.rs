//! Tokenizers through the `tokenizers` crate: an HF `tokenizer.json` (e.g. GPT-2's byte-level
//! BPE), or a byte-level BPE trained here on the training texts.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, TokenizerImpl,
};

/// End-of-text token used as start, end and padding token by the captioners trained here.
pub const END_OF_TEXT: &str = "<|endoftext|>";

#[derive(Clone)]
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
}

impl TextTokenizer {
    pub fn load(path: &Path) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow!("{}: cannot load tokenizer: {e}", path.display()))?;
        // Some checkpoints ship fixed padding (MiniLM pads every text to 128 [PAD] tokens);
        // batches are padded here, with a mask, so the tokenizer must return only real tokens.
        inner.with_padding(None);
        Ok(Self { inner })
    }

    /// The same tokenizer, cutting every text to at most `max_len` ids, special tokens
    /// included: the text is cut before they are added, so a CLIP text still ends with its
    /// end token, as transformers' `truncation=True` gives.
    pub fn truncating(mut self, max_len: usize) -> Result<Self> {
        self.inner
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("cannot truncate to {max_len} tokens: {e}"))?;
        Ok(self)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| anyhow!("cannot serialise tokenizer: {e}"))?;
        crate::util::write_atomic(path, json.as_bytes())
    }

    /// The smallest vocabulary a byte-level BPE can have: the 256 bytes and `<|endoftext|>`.
    pub const MIN_BPE_VOCAB: usize = 257;

    /// Trains a byte-level BPE with `vocab_size` entries (256 bytes + merges + `<|endoftext|>`).
    pub fn train_bpe<I: Iterator<Item = String> + Send>(
        texts: I,
        vocab_size: usize,
    ) -> Result<Self> {
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut tok: TokenizerImpl<
            ModelWrapper,
            NormalizerWrapper,
            PreTokenizerWrapper,
            PostProcessorWrapper,
            DecoderWrapper,
        > = TokenizerImpl::new(ModelWrapper::BPE(BPE::default()));
        tok.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, true, true,
        ))));
        tok.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
        let mut trainer = TrainerWrapper::BpeTrainer(trainer);
        tok.train(&mut trainer, texts)
            .map_err(|e| anyhow!("BPE training failed: {e}"))?;
        Ok(Self { inner: tok.into() })
    }

    /// Ids of `text`, with the tokenizer's special tokens ([CLS] ... [SEP]) when `special`.
    pub fn encode_with(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, special)
            .map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| anyhow!("cannot decode {ids:?}: {e}"))
    }

    /// A caption to show: the text of `ids`, trimmed, without control characters or the
    /// replacement character. Byte-level tokens can spell control bytes or half a UTF-8
    /// sequence, which a sampled caption may end with; neither belongs in a caption.
    pub fn decode_caption(&self, ids: &[u32]) -> Result<String> {
        Ok(clean_caption(&self.decode(ids)?))
    }

    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Refuses a tokenizer (read from `path`) that can write an id past the `vocab` rows of
    /// the `owner`'s embedding (ids need not be contiguous, so the largest is what counts).
    pub fn check_ids_below(&self, vocab: usize, owner: &str, path: &Path) -> Result<()> {
        if let Some(largest) = self.inner.get_vocab(true).into_values().max() {
            anyhow::ensure!(
                (largest as usize) < vocab,
                "{}: it has token id {largest}, beyond the {owner}'s vocabulary of {vocab} \
                 (config.json): is it another model's tokenizer?",
                path.display()
            );
        }
        Ok(())
    }

    /// The id used to start, end and pad captions: `<|endoftext|>` where the vocabulary has it.
    pub fn end_of_text(&self) -> Result<u32> {
        self.token_id(END_OF_TEXT)
            .context("tokenizer has no `<|endoftext|>` token")
    }
}

/// `text` trimmed, whitespace controls (newline, tab) as spaces, other control characters and
/// U+FFFD dropped.
pub fn clean_caption(text: &str) -> String {
    let kept: String = text
        .chars()
        .filter_map(|c| match c {
            '\u{FFFD}' => None,
            c if c.is_whitespace() => Some(if c.is_control() { ' ' } else { c }),
            c if c.is_control() => None,
            c => Some(c),
        })
        .collect();
    kept.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_bpe_round_trips_text() {
        let texts: Vec<String> = (0..50)
            .map(|i| format!("a red car number {i} parks near the tall house"))
            .collect();
        let tok = TextTokenizer::train_bpe(texts.into_iter(), 300).unwrap();
        let ids = tok.encode("a red car parks near the house").unwrap();
        assert!(
            ids.len() < 20,
            "merges should shorten the text: {} tokens",
            ids.len()
        );
        assert_eq!(tok.decode(&ids).unwrap(), "a red car parks near the house");
        assert!(tok.end_of_text().is_ok());
        // Unseen characters still encode: byte-level BPE has every byte.
        let ids = tok.encode("zébra ☂").unwrap();
        assert_eq!(tok.decode(&ids).unwrap(), "zébra ☂");
    }

    #[test]
    fn captions_lose_control_characters_and_broken_bytes() {
        assert_eq!(
            clean_caption(" a\u{1}\u{7f} dark\n\thouse \u{FFFD}\u{FFFD}"),
            "a dark  house"
        );
        assert_eq!(clean_caption("café noir"), "café noir");
    }
}
