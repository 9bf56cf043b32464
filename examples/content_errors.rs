//! Where a captioner's content errors come from, on the test and compositional splits:
//! `cargo run --release --example content_errors -- MODEL_DIR [N] [STYLE]`.
//! Over N pictures per split (factual: greedy; another style: sampled as `stylecap eval`
//! samples), counts kinds named that are not in the picture, colours named on a kind that is
//! (a held-out pair, another object's colour, or one absent from the picture), colours put on
//! a wrong kind, and missed facts. For factual captions it also asks whether the colour word
//! steers the kind (see `colour_steering`).
use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::prelude::*;
use stylecap::eval::captioner::EvalConfig;
use stylecap::model::folder::LoadedCaptioner;
use stylecap::world::checker::{check, Fact};
use stylecap::world::lexicon::Lexicon;
use stylecap::world::splits::Split;
use stylecap::world::{World, WorldConfig};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let dir = PathBuf::from(&args[1]);
    let n: u64 = args.get(2).map(|s| s.parse().unwrap()).unwrap_or(200);
    let style = args.get(3).map(String::as_str).unwrap_or("factual");
    let opts = EvalConfig {
        greedy: style == "factual",
        ..EvalConfig::default()
    }
    .decode_options();
    let device = Device::flex();
    let cap = LoadedCaptioner::load(&dir, &device)?;
    let world = World::new(WorldConfig {
        image_size: cap.model.config.encoder.image_size() as u32,
        ..WorldConfig::default()
    });
    let lex = Lexicon::new();
    for split in [Split::Test, Split::Compositional] {
        let ex: Vec<_> = (0..n).map(|i| world.example(split, i)).collect();
        let images: Vec<_> = ex.iter().map(|e| e.image.clone()).collect();
        let texts = cap.caption(&images, style, &opts, &device)?;
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        let mut f1 = 0.0;
        for (e, t) in ex.iter().zip(&texts) {
            let c = check(&lex, t, &e.scene);
            f1 += c.f1;
            *counts.entry("truth").or_default() += c.correct.len() + c.missed.len();
            *counts.entry("correct").or_default() += c.correct.len();
            for w in &c.wrong {
                let key = match w {
                    Fact::Kind(_) => "wrong kind",
                    Fact::Background(_) => "wrong background",
                    Fact::Coloured(col, k) => {
                        if e.scene.objects.iter().any(|o| o.kind == *k) {
                            if world.held_out_pairs().contains(&(*k, *col)) {
                                "wrong colour (held-out pair)"
                            } else if e.scene.objects.iter().any(|o| o.colour == *col) {
                                "wrong colour (another object's)"
                            } else {
                                "wrong colour (absent)"
                            }
                        } else {
                            "colour on wrong kind"
                        }
                    }
                };
                *counts.entry(key).or_default() += 1;
            }
            for m in &c.missed {
                let key = match m {
                    Fact::Kind(_) => "missed kind",
                    Fact::Background(_) => "missed background",
                    Fact::Coloured(..) => "missed colour",
                };
                *counts.entry(key).or_default() += 1;
            }
        }
        println!("{} F1 {:.3}", split.name(), f1 / n as f32);
        for (k, v) in &counts {
            println!("  {k:32} {v}");
        }
        for (e, t) in ex.iter().zip(&texts).take(6) {
            println!("  truth: {}\n  model: {t}", e.captions[0]);
        }
    }
    if style == "factual" {
        colour_steering(&cap, &world, n.min(100), &device);
    }
    Ok(())
}

/// Whether the colour word steers the kind: for the first object of each compositional
/// picture, ranks the 12 kinds by caption log-probability after its true (held-out) colour,
/// and after a colour the kind had in training.
fn colour_steering(cap: &LoadedCaptioner, world: &World, n: u64, device: &Device) {
    use stylecap::world::{Colour, Kind};
    let (mut hit_true, mut hit_allowed) = (0, 0);
    for i in 0..n {
        let e = world.example(Split::Compositional, i);
        let mut objs = e.scene.objects.clone();
        objs.sort_by_key(|o| (o.column, o.row));
        let o = objs[0];
        let caption = &e.captions[0]; // the plain caption
        let phrase = format!("{} {} {}", o.size.word(), o.colour.word(), o.kind.word());
        assert!(caption.contains(&phrase), "{caption} / {phrase}");
        let allowed = *Colour::ALL
            .iter()
            .find(|&&c| !world.held_out_pairs().contains(&(o.kind, c)))
            .unwrap();
        for (colour, hits) in [(o.colour, &mut hit_true), (allowed, &mut hit_allowed)] {
            let texts: Vec<String> = Kind::ALL
                .iter()
                .map(|k| {
                    caption.replacen(
                        &phrase,
                        &format!("{} {} {}", o.size.word(), colour.word(), k.word()),
                        1,
                    )
                })
                .collect();
            let tokens: Vec<Vec<u32>> = texts
                .iter()
                .map(|t| {
                    let mut v = cap.tokenizer.encode(t).unwrap();
                    v.push(cap.model.config.decoder_start_token_id);
                    v
                })
                .collect();
            let images = vec![e.image.clone(); texts.len()];
            let lp = cap.score(&images, "factual", &tokens, device).unwrap();
            let sums: Vec<f32> = lp.iter().map(|v| v.iter().sum()).collect();
            let best = (0..sums.len())
                .max_by(|&a, &b| sums[a].total_cmp(&sums[b]))
                .unwrap();
            if Kind::ALL[best] == o.kind {
                *hits += 1;
            }
        }
    }
    println!(
        "first-object kind ranked first: after its held-out colour {hit_true}/{n}, after a \
         training colour {hit_allowed}/{n}"
    );
}
