//! The decoding settings a user may give (command-line flags of `caption`, fields of the
//! server's API) and their allowed ranges, checked in one place for both.
//!
//! Out-of-range settings are refused rather than clamped: a temperature near zero overflows
//! the logits to NaN (and samples arbitrary bytes), huge beam counts allocate a row per beam,
//! and a user who asks for `top_p 2` has misunderstood the setting.

use std::fmt;

use super::captioner::Captioner;
use super::repeats::Repeats;

/// Lowest temperature accepted: below it, sampling is greedy decoding in all but name, and
/// near zero the scaled logits overflow.
pub const MIN_TEMPERATURE: f32 = 0.01;
pub const MAX_TEMPERATURE: f32 = 10.0;
/// Most beams: each beam is a decoded row, so the cost grows with it.
pub const MAX_BEAMS: usize = 16;
/// Largest repetition penalty: at 10 a repeated token's logit is already a tenth of itself
/// (or ten times as negative), as good as forbidden.
pub const MAX_REPETITION_PENALTY: f32 = 10.0;

/// Settings as given, before any default is applied; unset ones are not checked. Counts are
/// signed so that a negative count is reported with its range like any other bad value.
#[derive(Debug, Default, Clone, Copy)]
pub struct DecodeSettings {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub beams: Option<i64>,
    /// Captions per style (the server's `n`).
    pub n: Option<i64>,
    pub max_new_tokens: Option<i64>,
    pub repetition_penalty: Option<f32>,
    pub no_repeat_ngram_size: Option<i64>,
}

/// The settings after [`DecodeSettings::check`]: every value within its range.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct CheckedSettings {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub beams: Option<usize>,
    pub n: Option<usize>,
    pub max_new_tokens: Option<usize>,
    pub repetition_penalty: Option<f32>,
    pub no_repeat_ngram_size: Option<usize>,
}

impl CheckedSettings {
    /// The limits on repetition asked for (off where unset).
    pub fn repeats(&self) -> Repeats {
        Repeats {
            penalty: self.repetition_penalty.unwrap_or(1.0),
            no_repeat_ngram: self.no_repeat_ngram_size.unwrap_or(0),
        }
    }
}

/// The bounds that depend on the model or the caller.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Longest caption: the decoder's positions left after the prefix and start token, or a
    /// smaller cap of the caller.
    pub max_new_tokens: usize,
    pub max_n: usize,
    pub vocab: usize,
}

impl DecodeLimits {
    pub fn of(model: &Captioner) -> Self {
        DecodeLimits {
            max_new_tokens: model
                .decoder
                .max_positions()
                .saturating_sub(model.prefix_len() + 1),
            max_n: 1,
            vocab: model.decoder.vocab_size(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    Temperature,
    TopP,
    TopK,
    Beams,
    N,
    MaxNewTokens,
    RepetitionPenalty,
    NoRepeatNgramSize,
}

impl Setting {
    /// The name in the API (`top_p`).
    pub fn field(self) -> &'static str {
        match self {
            Setting::Temperature => "temperature",
            Setting::TopP => "top_p",
            Setting::TopK => "top_k",
            Setting::Beams => "beams",
            Setting::N => "n",
            Setting::MaxNewTokens => "max_new_tokens",
            Setting::RepetitionPenalty => "repetition_penalty",
            Setting::NoRepeatNgramSize => "no_repeat_ngram_size",
        }
    }

    /// The command-line flag (`--top-p`).
    pub fn flag(self) -> String {
        format!("--{}", self.field().replace('_', "-"))
    }
}

/// A setting out of its range: which one, the value given, and the range allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct InvalidSetting {
    pub setting: Setting,
    pub value: String,
    pub range: String,
}

impl InvalidSetting {
    /// The message with the setting called `name` (a flag or a field).
    pub fn message(&self, name: &str) -> String {
        format!("{name} is {}; it must be {}", self.value, self.range)
    }
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message(&format!("`{}`", self.setting.field())))
    }
}

impl std::error::Error for InvalidSetting {}

impl DecodeSettings {
    pub fn check(&self, limits: &DecodeLimits) -> Result<CheckedSettings, InvalidSetting> {
        // `{:?}` prints floats as given (1e-45, NaN), where `{}` would spell out every digit.
        let float = |setting, v: Option<f32>, ok: fn(f32) -> bool, range: &str| match v {
            Some(x) if !ok(x) => Err(InvalidSetting {
                setting,
                value: format!("{x:?}"),
                range: range.to_string(),
            }),
            _ => Ok(v),
        };
        let count = |setting, v: Option<i64>, max: usize| match v {
            Some(x) if x < 1 || x as u64 > max as u64 => Err(InvalidSetting {
                setting,
                value: x.to_string(),
                range: if max == 0 {
                    "unset: this model allows none".to_string()
                } else {
                    format!("1 to {max}")
                },
            }),
            _ => Ok(v.map(|x| x as usize)),
        };
        Ok(CheckedSettings {
            temperature: float(
                Setting::Temperature,
                self.temperature,
                |t| (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&t),
                &format!("{MIN_TEMPERATURE} to {MAX_TEMPERATURE}"),
            )?,
            top_p: float(
                Setting::TopP,
                self.top_p,
                |p| p > 0.0 && p <= 1.0,
                "above 0 and at most 1",
            )?,
            top_k: count(Setting::TopK, self.top_k, limits.vocab)?,
            beams: count(Setting::Beams, self.beams, MAX_BEAMS)?,
            n: count(Setting::N, self.n, limits.max_n)?,
            max_new_tokens: count(
                Setting::MaxNewTokens,
                self.max_new_tokens,
                limits.max_new_tokens,
            )?,
            repetition_penalty: float(
                Setting::RepetitionPenalty,
                self.repetition_penalty,
                |p| (1.0..=MAX_REPETITION_PENALTY).contains(&p),
                &format!("1 (off) to {MAX_REPETITION_PENALTY}"),
            )?,
            // 0 is off, as in transformers (and as the answers echo it); an n-gram longer
            // than the longest caption can never repeat.
            no_repeat_ngram_size: match self.no_repeat_ngram_size {
                Some(0) => Some(0),
                v => count(Setting::NoRepeatNgramSize, v, limits.max_new_tokens).map_err(|e| {
                    InvalidSetting {
                        range: format!("0 (off) to {}", limits.max_new_tokens),
                        ..e
                    }
                })?,
            },
        })
    }
}

/// Longest caption a stage's configuration may ask for (the model's own limit is lower).
pub const MAX_NEW_TOKENS: usize = 4096;

/// The sampling settings of a stage's configuration (alignment rollouts, evaluation), in the
/// ranges `caption` and the server accept.
pub fn check_sampling(temperature: f32, top_p: f32, max_new_tokens: usize) -> anyhow::Result<()> {
    check_stage(DecodeSettings {
        temperature: Some(temperature),
        top_p: Some(top_p),
        max_new_tokens: Some(max_new_tokens.min(i64::MAX as usize) as i64),
        ..DecodeSettings::default()
    })
}

/// The limits on repetition of a stage's configuration (evaluation), in the ranges `caption`
/// and the server accept; 1 and 0 (off) included.
pub fn check_repeats(r: &Repeats) -> anyhow::Result<()> {
    check_stage(DecodeSettings {
        repetition_penalty: Some(r.penalty),
        no_repeat_ngram_size: Some(r.no_repeat_ngram.min(i64::MAX as usize) as i64),
        ..DecodeSettings::default()
    })
}

fn check_stage(settings: DecodeSettings) -> anyhow::Result<()> {
    settings.check(&DecodeLimits {
        max_new_tokens: MAX_NEW_TOKENS,
        max_n: 1,
        vocab: 1,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: DecodeLimits = DecodeLimits {
        max_new_tokens: 40,
        max_n: 4,
        vocab: 300,
    };

    fn refused(s: DecodeSettings) -> InvalidSetting {
        s.check(&LIMITS).expect_err("out of range")
    }

    #[test]
    fn every_setting_is_refused_outside_its_range_and_accepted_at_its_edges() {
        let t = |v| DecodeSettings {
            temperature: Some(v),
            ..Default::default()
        };
        for bad in [f32::NAN, -1.0, 0.0, 1e-45, 10.5, f32::INFINITY] {
            assert_eq!(refused(t(bad)).setting, Setting::Temperature, "{bad}");
        }
        let e = refused(t(1e-45));
        assert_eq!(
            e.message("--temperature"),
            "--temperature is 1e-45; it must be 0.01 to 10"
        );
        let p = |v| DecodeSettings {
            top_p: Some(v),
            ..Default::default()
        };
        for bad in [f32::NAN, 0.0, -0.5, 2.0] {
            assert_eq!(refused(p(bad)).setting, Setting::TopP, "{bad}");
        }
        let b = |v| DecodeSettings {
            beams: Some(v),
            ..Default::default()
        };
        assert_eq!(
            refused(b(100_000)).to_string(),
            "`beams` is 100000; it must be 1 to 16"
        );
        for bad in [0, -1, i64::MIN] {
            assert_eq!(refused(b(bad)).setting, Setting::Beams);
        }
        let counts = |v| DecodeSettings {
            top_k: Some(v),
            n: Some(v),
            max_new_tokens: Some(v),
            ..Default::default()
        };
        assert_eq!(refused(counts(0)).setting, Setting::TopK);
        let edges = DecodeSettings {
            temperature: Some(MIN_TEMPERATURE),
            top_p: Some(1.0),
            top_k: Some(300),
            beams: Some(16),
            n: Some(4),
            max_new_tokens: Some(40),
            repetition_penalty: Some(MAX_REPETITION_PENALTY),
            no_repeat_ngram_size: Some(40),
        };
        assert!(edges.check(&LIMITS).is_ok());
        let low = DecodeSettings {
            temperature: Some(MAX_TEMPERATURE),
            top_p: Some(1e-6),
            top_k: Some(1),
            beams: Some(1),
            n: Some(1),
            max_new_tokens: Some(1),
            repetition_penalty: Some(1.0),
            no_repeat_ngram_size: Some(1),
        };
        assert_eq!(low.check(&LIMITS).unwrap().max_new_tokens, Some(1));
        let over = DecodeSettings {
            max_new_tokens: Some(41),
            ..Default::default()
        };
        assert_eq!(refused(over).range, "1 to 40");
        assert_eq!(Setting::MaxNewTokens.flag(), "--max-new-tokens");
        let r = |v| DecodeSettings {
            repetition_penalty: Some(v),
            ..Default::default()
        };
        for bad in [f32::NAN, 0.9, 0.0, -1.0, 10.5, f32::INFINITY] {
            assert_eq!(refused(r(bad)).setting, Setting::RepetitionPenalty, "{bad}");
        }
        assert_eq!(
            refused(r(0.5)).message("--repetition-penalty"),
            "--repetition-penalty is 0.5; it must be 1 (off) to 10"
        );
        let n = |v| DecodeSettings {
            no_repeat_ngram_size: Some(v),
            ..Default::default()
        };
        for bad in [-3, 41] {
            assert_eq!(refused(n(bad)).setting, Setting::NoRepeatNgramSize, "{bad}");
        }
        assert_eq!(refused(n(-1)).range, "0 (off) to 40");
        assert_eq!(n(0).check(&LIMITS).unwrap().repeats(), Repeats::default());
        assert_eq!(Setting::NoRepeatNgramSize.flag(), "--no-repeat-ngram-size");
        assert!(check_repeats(&Repeats::default()).is_ok());
        assert!(check_repeats(&Repeats {
            penalty: 1.3,
            no_repeat_ngram: 3
        })
        .is_ok());
        assert!(check_repeats(&Repeats {
            penalty: 0.7,
            no_repeat_ngram: 0
        })
        .is_err());
    }
}
