//! `POST /v1/captions` bodies: JSON with a base64 image, or a multipart form with an image
//! file. Both become the same [`Params`], validated against the model and the limits.

use axum::extract::{FromRequest, Multipart, Request};
use base64::Engine as _;
use serde::Deserialize;

use super::config::ServeConfig;
use super::error::ApiError;
use crate::model::repeats::Repeats;
use crate::model::settings::{DecodeLimits, DecodeSettings, Setting};

/// A request as sent, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// JSON: the image file's bytes in base64 (standard alphabet, padding optional).
    #[serde(default)]
    pub image: String,
    #[serde(skip)]
    pub image_bytes: Vec<u8>,
    pub styles: Option<Vec<String>>,
    // Counts are signed so that a negative one gets the range message of the settings check
    // rather than a parse error.
    pub n: Option<i64>,
    pub greedy: Option<bool>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_new_tokens: Option<i64>,
    pub repetition_penalty: Option<f32>,
    pub no_repeat_ngram_size: Option<i64>,
    pub seed: Option<u64>,
}

pub fn parse_json(body: &[u8]) -> Result<Params, ApiError> {
    let mut p: Params = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("invalid JSON body: {e}")))?;
    if p.image.is_empty() {
        return Err(ApiError::bad_request(
            "missing_image",
            "the field `image` (base64 PNG or JPEG) is required",
        ));
    }
    let b64 = std::mem::take(&mut p.image);
    let b64 = b64.trim();
    // Accept data URLs as a browser's FileReader writes them.
    let b64 = b64.split_once("base64,").map_or(b64, |(_, rest)| rest);
    p.image_bytes = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|e| ApiError::bad_request("bad_base64", format!("field `image`: {e}")))?;
    Ok(p)
}

pub async fn parse_multipart(req: Request) -> Result<Params, ApiError> {
    let bad = |code, msg: String| ApiError::bad_request(code, msg);
    let mut form = Multipart::from_request(req, &())
        .await
        .map_err(|e| bad("bad_multipart", format!("invalid multipart body: {e}")))?;
    let mut p = Params::default();
    let mut seen = std::collections::HashSet::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad("bad_multipart", format!("invalid multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        // A form field given twice is ambiguous (which image did the client mean?), except
        // styles, which a form of checkboxes sends once per box.
        if !matches!(name.as_str(), "styles" | "style") && !seen.insert(name.clone()) {
            return Err(bad(
                "duplicate_field",
                format!("the form field `{name}` is given twice; send it once"),
            ));
        }
        if name == "image" {
            p.image_bytes = field
                .bytes()
                .await
                .map_err(|e| bad("bad_multipart", format!("field `image`: {e}")))?
                .to_vec();
            continue;
        }
        let text = field
            .text()
            .await
            .map_err(|e| bad("bad_multipart", format!("field `{name}`: {e}")))?;
        let text = text.trim();
        let number = |what: &str| {
            bad(
                "invalid_field",
                format!("field `{name}`: {text:?} is not {what}"),
            )
        };
        match name.as_str() {
            "styles" | "style" => p.styles.get_or_insert_with(Vec::new).extend(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            ),
            "n" => p.n = Some(text.parse().map_err(|_| number("a whole number"))?),
            "greedy" => {
                p.greedy = Some(matches!(text, "true" | "on" | "1"));
                if !matches!(text, "true" | "on" | "1" | "false" | "off" | "0") {
                    return Err(number("true or false"));
                }
            }
            "temperature" => p.temperature = Some(text.parse().map_err(|_| number("a number"))?),
            "top_p" => p.top_p = Some(text.parse().map_err(|_| number("a number"))?),
            "max_new_tokens" => {
                p.max_new_tokens = Some(text.parse().map_err(|_| number("a whole number"))?)
            }
            "repetition_penalty" => {
                p.repetition_penalty = Some(text.parse().map_err(|_| number("a number"))?)
            }
            "no_repeat_ngram_size" => {
                p.no_repeat_ngram_size = Some(text.parse().map_err(|_| number("a whole number"))?)
            }
            "seed" => p.seed = Some(text.parse().map_err(|_| number("an integer"))?),
            _ => return Err(bad("unknown_field", format!("unknown form field `{name}`"))),
        }
    }
    if p.image_bytes.is_empty() {
        return Err(bad(
            "missing_image",
            "the form field `image` (a PNG or JPEG file) is required".into(),
        ));
    }
    Ok(p)
}

/// Validated settings of one request.
#[derive(Debug)]
pub struct Checked {
    /// Captioner style indices (one `0` for a captioner without styles).
    pub styles: Vec<usize>,
    pub n: usize,
    pub greedy: bool,
    pub temperature: f32,
    pub top_p: f32,
    pub max_new_tokens: usize,
    pub repeats: Repeats,
}

/// Checks a request against the captioner's styles and the limits; the decoding settings
/// go through the same check as the command line's ([`DecodeSettings::check`]).
/// Sampling (temperature 1, top-p 0.9) is the default; `greedy: true` takes the argmax.
pub fn check(
    p: &Params,
    model_styles: &[String],
    limits: &DecodeLimits,
    c: &ServeConfig,
) -> Result<Checked, ApiError> {
    let bad = |code, msg: String| Err(ApiError::bad_request(code, msg));
    let styles = match (&p.styles, model_styles.is_empty()) {
        (Some(s), true) if !s.is_empty() => {
            return bad(
                "unknown_style",
                "this captioner has no styles; leave `styles` out".into(),
            )
        }
        (_, true) => vec![0],
        (None, false) => (0..model_styles.len()).collect(),
        (Some(s), false) => {
            let mut idx = Vec::new();
            for name in s {
                let Some(i) = model_styles.iter().position(|m| m == name) else {
                    return bad(
                        "unknown_style",
                        format!(
                            "unknown style {name:?}; this captioner knows: {}",
                            model_styles.join(", ")
                        ),
                    );
                };
                if idx.contains(&i) {
                    return bad("duplicate_style", format!("style {name:?} is listed twice"));
                }
                idx.push(i);
            }
            idx
        }
    };
    if styles.is_empty() {
        return bad("no_styles", "`styles` is empty; give at least one".into());
    }
    if styles.len() > c.max_styles {
        return bad(
            "too_many_styles",
            format!(
                "{} styles requested; at most {} per request",
                styles.len(),
                c.max_styles
            ),
        );
    }
    let settings = DecodeSettings {
        temperature: p.temperature,
        top_p: p.top_p,
        n: p.n,
        max_new_tokens: p.max_new_tokens,
        repetition_penalty: p.repetition_penalty,
        no_repeat_ngram_size: p.no_repeat_ngram_size,
        ..DecodeSettings::default()
    }
    .check(limits)
    .map_err(|e| {
        let code = match e.setting {
            Setting::Temperature => "invalid_temperature",
            Setting::TopP => "invalid_top_p",
            Setting::N => "invalid_n",
            Setting::MaxNewTokens => "invalid_max_new_tokens",
            Setting::RepetitionPenalty => "invalid_repetition_penalty",
            Setting::NoRepeatNgramSize => "invalid_no_repeat_ngram_size",
            Setting::TopK | Setting::Beams => "invalid_field",
        };
        ApiError::bad_request(code, e.message(&format!("`{}`", e.setting.field())))
    })?;
    Ok(Checked {
        styles,
        n: settings.n.unwrap_or(1),
        greedy: p.greedy.unwrap_or(false),
        temperature: settings.temperature.unwrap_or(1.0),
        top_p: settings.top_p.unwrap_or(0.9),
        max_new_tokens: settings
            .max_new_tokens
            .unwrap_or(limits.max_new_tokens.min(32)),
        repeats: settings.repeats(),
    })
}
