//! What each step trains on: the rows of its micro-batches, a pure function of the seed, the
//! step and the micro-batch (every order is a seeded epoch permutation), so a resumed run sees
//! exactly the rows an uninterrupted one would, and the trainer may prepare a step's rows while
//! the previous step is still being applied.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use anyhow::Result;
use image::RgbImage;

use super::config::TrainConfig;
use super::features::{PictureKey, BLANK};
use crate::data::pseudo_pairs::PseudoPairs;
use crate::data::records::StyleText;
use crate::data::sources::{CaptionSource, EpochOrder, TrainData};
use crate::data::tokenizer::TextTokenizer;
use crate::model::style::FACTUAL;
use crate::rng::{streams, Rng};
use crate::world::Lexicon;

/// The rows of one micro-batch: picture, caption tokens and style index of each.
pub struct StepRows {
    pub images: Vec<RgbImage>,
    pub tokens: Vec<Vec<u32>>,
    pub styles: Vec<usize>,
    /// Each picture's identity for the frozen encoder's feature cache (None: drawn for this
    /// row alone).
    pub keys: Vec<Option<PictureKey>>,
}

/// Image–caption rows (style `factual`) and style-text rows, mixed as the configuration says.
pub struct RowSource {
    config: TrainConfig,
    data: Arc<TrainData>,
    tokenizer: TextTokenizer,
    style_ids: BTreeMap<String, usize>,
    /// Side of the pictures (and of the blank one shown with a style text).
    image_size: u32,
    image_order: EpochOrder,
    style_order: EpochOrder,
    /// Style texts that name things (world things, or words of the references), and the
    /// others.
    style_pools: (Vec<usize>, Vec<usize>),
    /// The references' concepts, for data other than the built-in world.
    pseudo_pairs: Option<PseudoPairs>,
    /// The styles whose sentences' slots take a picture's things (`fill_below`).
    filled: BTreeSet<String>,
    world_order: EpochOrder,
    other_order: EpochOrder,
    lexicon: Lexicon,
}

impl RowSource {
    pub fn new(
        config: TrainConfig,
        data: Arc<TrainData>,
        tokenizer: TextTokenizer,
        style_ids: BTreeMap<String, usize>,
        image_size: u32,
    ) -> Self {
        let lexicon = Lexicon::new();
        let pseudo_pairs = match &data.train {
            CaptionSource::World { .. } => None,
            train => Some(PseudoPairs::new(
                (0..train.len()).map(|i| train.references(i)),
            )),
        };
        // A sentence whose picture would be refused counts with those that name nothing, so
        // that the share of rows shown with a picture is `mention_share`. Ties between
        // pictures rarely differ in coverage; one draw decides.
        let shown = |t: &StyleText, fill: bool| match &pseudo_pairs {
            None => !lexicon.mentions(&t.text).is_empty(),
            Some(p) => p
                .shown_pair(
                    &t.text,
                    config.show_pairs(fill),
                    &mut Rng::keyed(config.seed, streams::SFT_STYLE_PICTURE),
                )
                .is_some(),
        };
        let unfilled: Vec<bool> = data.styles.iter().map(|t| shown(t, false)).collect();
        let filled = match &pseudo_pairs {
            Some(p) => styles_to_fill(p, &data.styles, &unfilled, config.fill_below),
            None => BTreeSet::new(),
        };
        let (world_texts, other_texts): (Vec<usize>, Vec<usize>) = (0..data.styles.len())
            .partition(|&i| {
                let t = &data.styles[i];
                unfilled[i] || (filled.contains(&t.style) && shown(t, true))
            });
        let seed = config.seed;
        RowSource {
            world_order: EpochOrder::new(
                seed,
                streams::SFT_MENTION_ORDER,
                world_texts.len().max(1),
            ),
            other_order: EpochOrder::new(seed, streams::SFT_OTHER_ORDER, other_texts.len().max(1)),
            style_pools: (world_texts, other_texts),
            pseudo_pairs,
            filled,
            image_order: EpochOrder::new(seed, streams::SFT_IMAGE_ORDER, data.train.len()),
            style_order: EpochOrder::new(seed, streams::SFT_STYLE_ORDER, data.styles.len().max(1)),
            config,
            data,
            tokenizer,
            style_ids,
            image_size,
            lexicon,
        }
    }

    /// Tokens of a text, cut to `max_caption_tokens`.
    pub fn encode_text(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode(text)?;
        ids.truncate(self.config.max_caption_tokens);
        Ok(ids)
    }

    /// The rows of micro-batch `micro` of `step`.
    pub fn rows(&self, step: usize, micro: usize) -> Result<StepRows> {
        let c = &self.config;
        let k0 = (step * c.grad_accum + micro) * c.batch_size;
        let indices: Vec<usize> = (k0..k0 + c.batch_size)
            .map(|k| self.image_order.at(k))
            .collect();
        let examples = self.data.train.get_many(&indices)?;
        let factual = self.style_ids[FACTUAL];
        let mut images: Vec<RgbImage> = Vec::new();
        let mut tokens = Vec::new();
        let mut styles = Vec::new();
        let mut keys: Vec<Option<PictureKey>> =
            indices.iter().map(|&i| Some(i as PictureKey)).collect();
        for (e, k) in examples.into_iter().zip(k0..) {
            let mut rng = Rng::for_item(c.seed, streams::SFT_CAPTION_PICK, k as u64);
            let pick = if rng.chance(c.first_caption_rate) {
                0
            } else {
                rng.below(e.captions.len())
            };
            tokens.push(self.encode_text(&e.captions[pick])?);
            images.push(e.image);
            styles.push(factual);
        }
        if !self.data.styles.is_empty() {
            let s0 = (step * c.grad_accum + micro) * c.style_batch_size;
            let size = self.image_size;
            let mut with_image = Vec::new();
            let mut matched: Vec<Option<RgbImage>> = Vec::new();
            for k in s0..s0 + c.style_batch_size {
                let t = &self.data.styles[self.style_text(k)];
                let mut text = Cow::Borrowed(t.text.as_str());
                let mut rng = Rng::for_item(c.seed, streams::SFT_STYLE_PICTURE, k as u64);
                let (picture, paired) = match (&self.pseudo_pairs, c.pair_mentions) {
                    (_, false) => (None, None),
                    (None, true) => (self.picture_of_mentions(&t.text, &mut rng), None),
                    (Some(p), true) => {
                        let fill = self.filled.contains(&t.style);
                        let shown = p.shown_pair(&t.text, c.show_pairs(fill), &mut rng);
                        (
                            None,
                            shown.map(|(picture, shown)| {
                                text = shown;
                                picture
                            }),
                        )
                    }
                };
                tokens.push(self.encode_text(&text)?);
                styles.push(self.style_ids[&t.style]);
                let unrelated =
                    (picture.is_none() && paired.is_none()) && rng.chance(c.style_image_rate);
                with_image
                    .push(paired.or_else(|| unrelated.then(|| rng.below(self.data.train.len()))));
                matched.push(picture);
            }
            let shown: Vec<usize> = with_image.iter().flatten().copied().collect();
            let mut shown = self.data.train.get_many(&shown)?.into_iter();
            for (w, m) in with_image.into_iter().zip(matched) {
                let (image, key) = match (m, w) {
                    (Some(picture), _) => (picture, None),
                    (None, Some(i)) => (
                        shown.next().expect("one per index").image,
                        Some(i as PictureKey),
                    ),
                    (None, None) => (RgbImage::new(size, size), Some(BLANK)),
                };
                images.push(image);
                keys.push(key);
            }
        }
        Ok(StepRows {
            images,
            tokens,
            styles,
            keys,
        })
    }

    /// The style text of style row `k`: from the sentences that name things with
    /// probability `mention_share`, else from the others (each pool in its own seeded
    /// epoch order).
    fn style_text(&self, k: usize) -> usize {
        let Some(share) = self.config.mention_share else {
            return self.style_order.at(k);
        };
        let (world, other) = &self.style_pools;
        let mut rng = Rng::for_item(self.config.seed, streams::SFT_MENTION_POOL, k as u64);
        let use_world = rng.chance(share);
        match (use_world, world.is_empty(), other.is_empty()) {
            (true, false, _) | (false, false, true) => world[self.world_order.at(k)],
            (_, _, false) => other[self.other_order.at(k)],
            _ => self.style_order.at(k),
        }
    }

    /// A picture of the world things a style sentence names ("the crimson automobile ... in
    /// the fog": a red car in fog, other details random), so the decoder learns to take
    /// those words from the image under any style. None when the sentence names no object, or
    /// names a pair held out of training, or the data is not the built-in world.
    fn picture_of_mentions(&self, text: &str, rng: &mut Rng) -> Option<RgbImage> {
        use crate::world::checker::{claimed_facts, Fact};
        use crate::world::lexicon::Concept;
        use crate::world::scene::{Column, Row, SceneObject, Size};
        use crate::world::{Background, Colour, Kind};
        let CaptionSource::World { world, .. } = &self.data.train else {
            return None;
        };
        let facts = claimed_facts(&self.lexicon, text);
        let mut background = None;
        // Objects in the order the sentence names them, which is left to right in the picture.
        let mut objects: Vec<(Kind, Option<Colour>)> = self
            .lexicon
            .mentions(text)
            .iter()
            .filter_map(|m| match m.concept {
                Concept::Kind(k) => Some(k),
                _ => None,
            })
            .fold(Vec::new(), |mut kinds, k| {
                if !kinds.contains(&(k, None)) {
                    kinds.push((k, None));
                }
                kinds
            });
        for f in &facts {
            match *f {
                Fact::Background(b) => background = Some(b),
                Fact::Kind(k) if !objects.iter().any(|o| o.0 == k) => objects.push((k, None)),
                Fact::Coloured(c, k) => match objects.iter_mut().find(|o| o.0 == k) {
                    Some(o) => o.1 = Some(c),
                    None => objects.push((k, Some(c))),
                },
                _ => {}
            }
        }
        if objects.is_empty() || objects.len() > 3 {
            return None;
        }
        let held = world.held_out_pairs();
        let mut slots: Vec<(Column, Row)> = Column::ALL
            .iter()
            .flat_map(|&c| Row::ALL.iter().map(move |&r| (c, r)))
            .collect();
        rng.shuffle(&mut slots);
        slots.truncate(objects.len());
        slots.sort();
        let mut scene_objects = Vec::new();
        for ((kind, colour), (column, row)) in objects.into_iter().zip(slots) {
            let colour = match colour {
                Some(c) if held.contains(&(kind, c)) => return None,
                Some(c) => c,
                None => {
                    let allowed: Vec<Colour> = Colour::ALL
                        .iter()
                        .copied()
                        .filter(|&c| !held.contains(&(kind, c)))
                        .collect();
                    *rng.pick(&allowed)
                }
            };
            scene_objects.push(SceneObject {
                kind,
                colour,
                size: *rng.pick(Size::ALL),
                column,
                row,
            });
        }
        let scene = crate::world::Scene {
            background: background.unwrap_or(*rng.pick(Background::ALL)),
            objects: scene_objects,
        };
        Some(crate::world::render::render(
            &scene,
            world.config.image_size,
            rng.next_u64(),
        ))
    }
}

/// The styles below `fill_below`: too few of their sentences describe pictures (name two or
/// more of the references' words and are `shown` with a picture, as they are or rewritten).
fn styles_to_fill(
    pairs: &PseudoPairs,
    styles: &[StyleText],
    shown: &[bool],
    fill_below: f32,
) -> BTreeSet<String> {
    let mut counts: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (t, &shown) in styles.iter().zip(shown) {
        let c = counts.entry(t.style.as_str()).or_default();
        c.0 += 1;
        c.1 += (shown && pairs.known_words(&t.text) >= 2) as usize;
    }
    counts
        .into_iter()
        .filter(|&(_, (all, describing))| (describing as f32) < fill_below * all as f32)
        .map(|(style, _)| style.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn styles_that_seldom_describe_the_pictures_have_their_slots_filled() {
        let refs = [
            "a red car in the rain",
            "a blue boat in the snow",
            "a green tree in the fog",
            "a red boat",
        ];
        let pairs = PseudoPairs::new(refs.iter().map(|r| vec![r.to_string()]));
        let text = |style: &str, text: &str| StyleText {
            text: text.into(),
            style: style.into(),
            source: crate::data::records::Source::file(std::path::Path::new("styles.jsonl")),
        };
        // "noir": 1 of 4 sentences names two words of the references and has a picture;
        // "review": none does ("the rain" names one), so its sentences take a picture's
        // things below a quarter, and every style's below a half.
        let styles = [
            text("noir", "The red car waited in the rain."),
            text("noir", "Smoke curled."),
            text("noir", "Nobody talked."),
            text("noir", "The night was long."),
            text("review", "the food was great ."),
            text("review", "we got soaked in the rain ."),
        ];
        let mut rng = Rng::keyed(0, 1);
        let unfilled = TrainConfig::default().show_pairs(false);
        let shown: Vec<bool> = styles
            .iter()
            .map(|t| pairs.shown_pair(&t.text, unfilled, &mut rng).is_some())
            .collect();
        let filled = |fill_below| styles_to_fill(&pairs, &styles, &shown, fill_below);
        let set = |names: &[&str]| names.iter().map(|s| s.to_string()).collect();
        assert_eq!(filled(0.0), set(&[]));
        assert_eq!(filled(0.25), set(&["review"]));
        assert_eq!(filled(0.5), set(&["noir", "review"]));
    }
}
