//! The scene graph: what is in a picture of the built-in world.

use serde::{Deserialize, Serialize};

use crate::rng::Rng;

macro_rules! concept_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $word:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The plain English word, as factual captions use it.
            pub fn word(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }

            pub fn index(self) -> usize {
                self as usize
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.word())
            }
        }
    };
}

concept_enum!(
    /// An object kind.
    Kind {
        House => "house", Tree => "tree", Car => "car", Boat => "boat", Moon => "moon",
        Sun => "sun", LampPost => "lamp post", Tower => "tower", Bird => "bird", Cat => "cat",
        Mountain => "mountain", Flower => "flower",
    }
);

concept_enum!(
    /// The main colour an object is painted in.
    Colour {
        Red => "red", Orange => "orange", Yellow => "yellow", Green => "green", Blue => "blue",
        Purple => "purple", Pink => "pink", Brown => "brown", White => "white", Black => "black",
        Grey => "grey",
    }
);

concept_enum!(
    /// The sky, light and weather: the mood of the picture.
    Background {
        Day => "day", Night => "night", Dusk => "dusk", Rain => "rain", Fog => "fog", Snow => "snow",
    }
);

concept_enum!(Size { Small => "small", Large => "large" });
concept_enum!(Column { Left => "left", Centre => "centre", Right => "right" });
concept_enum!(Row { High => "high", Low => "low" });

impl Colour {
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [214, 39, 40],
            Colour::Orange => [255, 140, 20],
            Colour::Yellow => [250, 220, 40],
            Colour::Green => [44, 170, 60],
            Colour::Blue => [31, 100, 230],
            Colour::Purple => [140, 60, 190],
            Colour::Pink => [250, 130, 190],
            Colour::Brown => [140, 86, 50],
            Colour::White => [245, 245, 245],
            Colour::Black => [25, 25, 25],
            Colour::Grey => [128, 128, 128],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SceneObject {
    pub kind: Kind,
    pub colour: Colour,
    pub size: Size,
    pub column: Column,
    pub row: Row,
}

/// One picture of the world: a background and one to three objects of distinct kinds in
/// distinct places.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scene {
    pub background: Background,
    pub objects: Vec<SceneObject>,
}

pub const MAX_OBJECTS: usize = 3;

impl Scene {
    /// Samples a scene whose object–colour pairs all satisfy `allowed` (how splits keep their
    /// pairs apart). Every kind must allow at least one colour.
    pub fn sample(rng: &mut Rng, allowed: &dyn Fn(Kind, Colour) -> bool) -> Scene {
        let background = *rng.pick(Background::ALL);
        let n = 1 + rng.below(MAX_OBJECTS);
        let mut kinds = Kind::ALL.to_vec();
        rng.shuffle(&mut kinds);
        let mut slots: Vec<(Column, Row)> = Column::ALL
            .iter()
            .flat_map(|&c| Row::ALL.iter().map(move |&r| (c, r)))
            .collect();
        rng.shuffle(&mut slots);
        let objects = kinds
            .into_iter()
            .take(n)
            .zip(slots)
            .map(|(kind, (column, row))| {
                let colours: Vec<Colour> = Colour::ALL
                    .iter()
                    .copied()
                    .filter(|&c| allowed(kind, c))
                    .collect();
                assert!(!colours.is_empty(), "no colour allowed for {kind}");
                SceneObject {
                    kind,
                    colour: *rng.pick(&colours),
                    size: *rng.pick(Size::ALL),
                    column,
                    row,
                }
            })
            .collect();
        Scene {
            background,
            objects,
        }
    }
}
