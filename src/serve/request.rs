//! `POST /v1/captions` bodies: JSON with a base64 image, or a multipart form with an image
//! file. Both become the same [`Params`], validated against the model and the limits.

use axum::extract::{FromRequest, Multipart, Request};
use base64::Engine as _;
use serde::Deserialize;

use super::config::ServeConfig;
use super::error::ApiError;

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
    pub n: Option<usize>,
    pub greedy: Option<bool>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub max_new_tokens: Option<usize>,
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
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| bad("bad_multipart", format!("invalid multipart body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
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
            "n" => p.n = Some(text.parse().map_err(|_| number("a count"))?),
            "greedy" => {
                p.greedy = Some(matches!(text, "true" | "on" | "1"));
                if !matches!(text, "true" | "on" | "1" | "false" | "off" | "0") {
                    return Err(number("true or false"));
                }
            }
            "temperature" => p.temperature = Some(text.parse().map_err(|_| number("a number"))?),
            "top_p" => p.top_p = Some(text.parse().map_err(|_| number("a number"))?),
            "max_new_tokens" => {
                p.max_new_tokens = Some(text.parse().map_err(|_| number("a count"))?)
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
}

/// Checks a request against the captioner's styles, its decoder length and the limits.
/// Sampling (temperature 1, top-p 0.9) is the default; `greedy: true` takes the argmax.
pub fn check(
    p: &Params,
    model_styles: &[String],
    model_max_tokens: usize,
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
    let n = p.n.unwrap_or(1);
    if n == 0 || n > c.max_n {
        return bad(
            "invalid_n",
            format!("`n` is {n}; it must be 1 to {}", c.max_n),
        );
    }
    let temperature = p.temperature.unwrap_or(1.0);
    if !(temperature.is_finite() && temperature > 0.0 && temperature <= 10.0) {
        return bad(
            "invalid_temperature",
            format!("`temperature` is {temperature}; it must be in (0, 10]"),
        );
    }
    let top_p = p.top_p.unwrap_or(0.9);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return bad(
            "invalid_top_p",
            format!("`top_p` is {top_p}; it must be in (0, 1]"),
        );
    }
    let cap = c.max_new_tokens.min(model_max_tokens);
    let max_new_tokens = p.max_new_tokens.unwrap_or(cap.min(32));
    if max_new_tokens == 0 || max_new_tokens > cap {
        return bad(
            "invalid_max_new_tokens",
            format!("`max_new_tokens` is {max_new_tokens}; it must be 1 to {cap}"),
        );
    }
    Ok(Checked {
        styles,
        n,
        greedy: p.greedy.unwrap_or(false),
        temperature,
        top_p,
        max_new_tokens,
    })
}
