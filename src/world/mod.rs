//! The built-in scene world: procedural pictures with a scene graph each, factual captions,
//! and a checker that scores what a caption says against the graph.

pub mod captions;
pub mod checker;
pub mod lexicon;
pub mod render;
pub mod scene;
pub mod splits;
pub mod styles;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::rng::{streams, Rng};
pub use checker::{check, content_fidelity, ContentCheck};
pub use lexicon::Lexicon;
pub use scene::{Background, Colour, Kind, Scene};
pub use splits::Split;

/// Everything that decides the world's pictures and captions; saved with every dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorldConfig {
    pub seed: u64,
    /// Pixels per side of each image.
    pub image_size: u32,
    /// Distinct factual captions per image (the first is the canonical one).
    pub captions_per_image: usize,
    /// Colours per object kind held out of training for the compositional split.
    pub held_out_colours_per_kind: usize,
}

impl Default for WorldConfig {
    fn default() -> Self {
        WorldConfig {
            seed: 0,
            image_size: 64,
            captions_per_image: 5,
            held_out_colours_per_kind: 2,
        }
    }
}

/// One picture of the world with its graph and captions.
#[derive(Clone, Debug)]
pub struct Example {
    pub id: String,
    pub scene: Scene,
    pub captions: Vec<String>,
    pub image: RgbImage,
}

/// The world under one configuration. Example `i` of a split depends only on the config, the
/// split and `i`, so any example can be made alone, in parallel, or again.
pub struct World {
    pub config: WorldConfig,
    held_out: Vec<(Kind, Colour)>,
}

impl World {
    pub fn new(config: WorldConfig) -> Self {
        let held_out = splits::held_out_pairs(config.seed, config.held_out_colours_per_kind);
        World { config, held_out }
    }

    pub fn held_out_pairs(&self) -> &[(Kind, Colour)] {
        &self.held_out
    }

    pub fn scene(&self, split: Split, index: u64) -> Scene {
        let mut rng = Rng::for_item(
            self.config.seed,
            streams::WORLD_SCENES + split as u64,
            index,
        );
        Scene::sample(&mut rng, &|k, c| {
            splits::allows(split, &self.held_out, k, c)
        })
    }

    /// The reference captions of an example, without rendering its picture.
    pub fn captions(&self, split: Split, index: u64) -> Vec<String> {
        self.described(split, index).1
    }

    /// An example's scene and captions, and the generator that then renders its picture.
    fn described(&self, split: Split, index: u64) -> (Scene, Vec<String>, Rng) {
        let scene = self.scene(split, index);
        let mut rng = Rng::for_item(
            self.config.seed,
            streams::WORLD_PICTURES + split as u64,
            index,
        );
        let captions = captions::captions(&scene, self.config.captions_per_image, &mut rng);
        (scene, captions, rng)
    }

    pub fn example(&self, split: Split, index: u64) -> Example {
        let (scene, captions, mut rng) = self.described(split, index);
        let image = render::render(&scene, self.config.image_size, rng.next_u64());
        Example {
            id: format!("{}-{index:06}", split.name()),
            scene,
            captions,
            image,
        }
    }
}
