//! Draws a scene with anti-aliased vector shapes (tiny-skia).
//!
//! Shapes are designed on a 64×64 canvas and scaled to the requested size. Each object is drawn
//! in its own box, in coordinates from -1 to 1 (y down), so a reader can check one against a
//! picture of the thing.

use image::RgbImage;
use tiny_skia::{
    Color, FillRule, GradientStop, LinearGradient, Mask, Paint, Path, PathBuilder, Pixmap, Point,
    Rect, SpreadMode, Stroke, Transform,
};

use super::scene::{Background, Colour, Column, Kind, Row, Scene, SceneObject, Size};
use crate::rng::Rng;

const CANVAS: f32 = 64.0;
const HORIZON: f32 = 46.0;

/// Renders `scene` at `size`×`size` pixels. `seed` places the weather (stars, rain, snow).
pub fn render(scene: &Scene, size: u32, seed: u64) -> RgbImage {
    let mut pix = Pixmap::new(size, size).expect("image size must be positive");
    let scale = size as f32 / CANVAS;
    let base = Transform::from_scale(scale, scale);
    let mut rng = Rng::new(seed);
    draw_background(&mut pix, scene.background, base, &mut rng);
    for o in &scene.objects {
        draw_object(&mut pix, o, base);
    }
    draw_weather(&mut pix, scene.background, base, &mut rng);
    let mut out = RgbImage::new(size, size);
    // The background is opaque, so premultiplied RGBA is plain RGBA.
    for (dst, src) in out.pixels_mut().zip(pix.data().chunks_exact(4)) {
        dst.0 = [src[0], src[1], src[2]];
    }
    out
}

fn rgb(c: [u8; 3]) -> Color {
    Color::from_rgba8(c[0], c[1], c[2], 255)
}

fn shade(c: [u8; 3], f: f32) -> [u8; 3] {
    c.map(|v| (v as f32 * f).min(255.0) as u8)
}

fn paint(c: [u8; 3], alpha: u8) -> Paint<'static> {
    let mut p = Paint::default();
    p.set_color_rgba8(c[0], c[1], c[2], alpha);
    p.anti_alias = true;
    p
}

fn sky_and_ground(b: Background) -> ([u8; 3], [u8; 3], [u8; 3]) {
    match b {
        Background::Day => ([110, 180, 240], [200, 232, 255], [96, 170, 80]),
        Background::Night => ([8, 12, 36], [32, 38, 84], [18, 36, 24]),
        Background::Dusk => ([70, 40, 120], [250, 150, 80], [64, 50, 44]),
        Background::Rain => ([96, 100, 112], [150, 154, 164], [70, 96, 72]),
        Background::Fog => ([180, 182, 188], [214, 216, 220], [150, 158, 150]),
        Background::Snow => ([160, 172, 190], [214, 220, 230], [240, 243, 250]),
    }
}

fn draw_background(pix: &mut Pixmap, b: Background, t: Transform, rng: &mut Rng) {
    let (top, bottom, ground) = sky_and_ground(b);
    let gradient = LinearGradient::new(
        Point::from_xy(0.0, 0.0),
        Point::from_xy(0.0, HORIZON),
        vec![
            GradientStop::new(0.0, rgb(top)),
            GradientStop::new(1.0, rgb(bottom)),
        ],
        SpreadMode::Pad,
        Transform::identity(),
    )
    .expect("valid gradient");
    let sky = Paint {
        shader: gradient,
        ..Paint::default()
    };
    let full = Rect::from_xywh(0.0, 0.0, CANVAS, CANVAS).unwrap();
    pix.fill_rect(full, &sky, t, None);
    let land = Rect::from_xywh(0.0, HORIZON, CANVAS, CANVAS - HORIZON).unwrap();
    pix.fill_rect(land, &paint(ground, 255), t, None);
    if b == Background::Night {
        let star = paint([255, 255, 230], 230);
        for _ in 0..14 {
            let (x, y) = (rng.range(1.0, 63.0), rng.range(1.0, HORIZON - 4.0));
            let r = rng.range(0.35, 0.7);
            if let Some(p) = PathBuilder::from_circle(x, y, r) {
                pix.fill_path(&p, &star, FillRule::Winding, t, None);
            }
        }
    }
}

fn draw_weather(pix: &mut Pixmap, b: Background, t: Transform, rng: &mut Rng) {
    match b {
        Background::Rain => {
            let mut pb = PathBuilder::new();
            for _ in 0..40 {
                let (x, y) = (rng.range(-4.0, 64.0), rng.range(-4.0, 64.0));
                pb.move_to(x, y);
                pb.line_to(x + 2.0, y + 6.0);
            }
            let stroke = Stroke {
                width: 0.6,
                ..Stroke::default()
            };
            if let Some(p) = pb.finish() {
                pix.stroke_path(&p, &paint([190, 205, 235], 200), &stroke, t, None);
            }
        }
        Background::Snow => {
            let flake = paint([255, 255, 255], 235);
            for _ in 0..45 {
                let (x, y) = (rng.range(0.0, 64.0), rng.range(0.0, 64.0));
                if let Some(p) = PathBuilder::from_circle(x, y, rng.range(0.5, 1.0)) {
                    pix.fill_path(&p, &flake, FillRule::Winding, t, None);
                }
            }
        }
        Background::Fog => {
            let full = Rect::from_xywh(0.0, 0.0, CANVAS, CANVAS).unwrap();
            pix.fill_rect(full, &paint([225, 228, 232], 95), t, None);
            for _ in 0..3 {
                let y = rng.range(8.0, 56.0);
                let band = Rect::from_xywh(0.0, y, CANVAS, rng.range(3.0, 6.0)).unwrap();
                pix.fill_rect(band, &paint([235, 236, 240], 70), t, None);
            }
        }
        Background::Day | Background::Night | Background::Dusk => {}
    }
}

/// Where an object's box sits and how big it is, in canvas units.
fn object_box(o: &SceneObject) -> (f32, f32, f32) {
    let cx = match o.column {
        Column::Left => 12.0,
        Column::Centre => 32.0,
        Column::Right => 52.0,
    };
    let cy = match o.row {
        Row::High => 16.0,
        Row::Low => 44.0,
    };
    let r = match o.size {
        Size::Small => 6.5,
        Size::Large => 10.5,
    };
    (cx, cy, r)
}

/// Fills a path with `c` and outlines it slightly darker, so objects stand out from a
/// background of their own colour.
fn shape(pix: &mut Pixmap, path: Option<Path>, c: [u8; 3], t: Transform) {
    let Some(path) = path else { return };
    pix.fill_path(&path, &paint(c, 255), FillRule::Winding, t, None);
    let outline = Stroke {
        width: 0.07,
        ..Stroke::default()
    };
    let edge = if c.iter().map(|&v| v as u32).sum::<u32>() < 120 {
        shade(c, 1.0).map(|v| v.saturating_add(70))
    } else {
        shade(c, 0.55)
    };
    pix.stroke_path(&path, &paint(edge, 255), &outline, t, None);
}

fn poly(points: &[(f32, f32)]) -> Option<Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(points[0].0, points[0].1);
    for &(x, y) in &points[1..] {
        pb.line_to(x, y);
    }
    pb.close();
    pb.finish()
}

fn rect(x0: f32, y0: f32, x1: f32, y1: f32) -> Option<Path> {
    Rect::from_ltrb(x0, y0, x1, y1).map(PathBuilder::from_rect)
}

fn circle(x: f32, y: f32, r: f32) -> Option<Path> {
    PathBuilder::from_circle(x, y, r)
}

fn line(pix: &mut Pixmap, points: &[(f32, f32)], width: f32, c: [u8; 3], t: Transform) {
    let mut pb = PathBuilder::new();
    pb.move_to(points[0].0, points[0].1);
    for &(x, y) in &points[1..] {
        pb.line_to(x, y);
    }
    if let Some(p) = pb.finish() {
        let stroke = Stroke {
            width,
            ..Stroke::default()
        };
        pix.stroke_path(&p, &paint(c, 255), &stroke, t, None);
    }
}

/// A second colour for details (a sail, a snow cap) that differs from the object's colour.
fn contrast(main: Colour, usual: [u8; 3], instead: [u8; 3]) -> [u8; 3] {
    if main.rgb() == usual || (main == Colour::White && usual[0] >= 240) {
        instead
    } else {
        usual
    }
}

fn draw_object(pix: &mut Pixmap, o: &SceneObject, base: Transform) {
    let (cx, cy, r) = object_box(o);
    let t = base.pre_concat(Transform::from_row(r, 0.0, 0.0, r, cx, cy));
    let c = o.colour.rgb();
    let dark = [40, 36, 34];
    let white = [245, 245, 245];
    match o.kind {
        Kind::House => {
            shape(pix, rect(-0.8, -0.1, 0.8, 1.0), c, t);
            shape(
                pix,
                poly(&[(-1.0, -0.05), (0.0, -0.9), (1.0, -0.05)]),
                shade(c, 0.6),
                t,
            );
            shape(pix, rect(-0.2, 0.4, 0.2, 1.0), dark, t);
            shape(pix, rect(0.35, 0.15, 0.65, 0.45), [250, 230, 120], t);
        }
        Kind::Tree => {
            let trunk = contrast(o.colour, [110, 70, 40], [60, 40, 30]);
            shape(pix, rect(-0.15, 0.2, 0.15, 1.0), trunk, t);
            shape(pix, circle(0.0, -0.25, 0.65), c, t);
            shape(pix, circle(-0.4, 0.05, 0.4), c, t);
            shape(pix, circle(0.4, 0.05, 0.4), c, t);
        }
        Kind::Car => {
            shape(
                pix,
                poly(&[(-0.55, 0.0), (-0.35, -0.45), (0.4, -0.45), (0.62, 0.0)]),
                c,
                t,
            );
            shape(pix, rect(-1.0, -0.02, 1.0, 0.55), c, t);
            shape(pix, rect(-0.3, -0.35, 0.02, -0.05), [170, 210, 240], t);
            shape(pix, rect(0.1, -0.35, 0.4, -0.05), [170, 210, 240], t);
            shape(pix, circle(-0.55, 0.6, 0.27), [20, 20, 20], t);
            shape(pix, circle(0.55, 0.6, 0.27), [20, 20, 20], t);
        }
        Kind::Boat => {
            line(pix, &[(0.0, 0.4), (0.0, -0.95)], 0.1, dark, t);
            let sail = contrast(o.colour, white, [200, 200, 210]);
            shape(
                pix,
                poly(&[(0.08, -0.9), (0.08, 0.25), (0.8, 0.25)]),
                sail,
                t,
            );
            shape(
                pix,
                poly(&[(-0.6, 0.25), (-0.08, -0.6), (-0.08, 0.25)]),
                sail,
                t,
            );
            shape(
                pix,
                poly(&[(-1.0, 0.35), (1.0, 0.35), (0.65, 0.8), (-0.65, 0.8)]),
                c,
                t,
            );
        }
        Kind::Moon => {
            // A crescent: the disc minus a shifted disc.
            let mut mask = Mask::new(pix.width(), pix.height()).expect("mask size");
            if let Some(bite) = circle(0.38, -0.22, 0.72) {
                mask.fill_path(&bite, FillRule::Winding, true, t);
            }
            mask.invert();
            if let Some(disc) = circle(0.0, 0.0, 0.85) {
                pix.fill_path(&disc, &paint(c, 255), FillRule::Winding, t, Some(&mask));
            }
        }
        Kind::Sun => {
            for i in 0..8 {
                let a = i as f32 * std::f32::consts::FRAC_PI_4;
                let (s, co) = a.sin_cos();
                line(
                    pix,
                    &[(0.68 * co, 0.68 * s), (1.0 * co, 1.0 * s)],
                    0.16,
                    c,
                    t,
                );
            }
            shape(pix, circle(0.0, 0.0, 0.55), c, t);
        }
        Kind::LampPost => {
            shape(pix, rect(-0.1, -0.55, 0.1, 1.0), c, t);
            shape(pix, rect(-0.32, 0.84, 0.32, 1.0), c, t);
            shape(pix, rect(-0.4, -1.0, 0.4, -0.88), c, t);
            let glow = contrast(o.colour, [255, 236, 150], [255, 255, 255]);
            shape(
                pix,
                poly(&[(-0.3, -0.55), (0.3, -0.55), (0.22, -0.88), (-0.22, -0.88)]),
                glow,
                t,
            );
        }
        Kind::Tower => {
            shape(pix, rect(-0.35, -0.35, 0.35, 1.0), c, t);
            shape(
                pix,
                poly(&[(-0.48, -0.33), (0.0, -1.0), (0.48, -0.33)]),
                shade(c, 0.6),
                t,
            );
            shape(pix, rect(-0.1, -0.15, 0.1, 0.12), dark, t);
            shape(pix, rect(-0.1, 0.35, 0.1, 0.62), dark, t);
        }
        Kind::Bird => {
            let mut pb = PathBuilder::new();
            pb.move_to(-1.0, -0.45);
            pb.quad_to(-0.5, -0.75, 0.0, -0.05);
            pb.quad_to(0.5, -0.75, 1.0, -0.45);
            if let Some(p) = pb.finish() {
                let stroke = Stroke {
                    width: 0.22,
                    ..Stroke::default()
                };
                pix.stroke_path(&p, &paint(c, 255), &stroke, t, None);
            }
            let body = Rect::from_ltrb(-0.32, -0.2, 0.32, 0.22).map(PathBuilder::from_oval);
            shape(pix, body.flatten(), c, t);
            shape(
                pix,
                poly(&[(0.3, -0.05), (0.55, 0.0), (0.3, 0.1)]),
                [250, 160, 30],
                t,
            );
        }
        Kind::Cat => {
            let mut pb = PathBuilder::new();
            pb.move_to(0.45, 0.9);
            pb.quad_to(1.05, 0.7, 0.85, 0.1);
            if let Some(p) = pb.finish() {
                let stroke = Stroke {
                    width: 0.16,
                    ..Stroke::default()
                };
                pix.stroke_path(&p, &paint(c, 255), &stroke, t, None);
            }
            let body = Rect::from_ltrb(-0.55, -0.05, 0.55, 1.0).map(PathBuilder::from_oval);
            shape(pix, body.flatten(), c, t);
            shape(
                pix,
                poly(&[(-0.42, -0.5), (-0.36, -0.98), (-0.06, -0.7)]),
                c,
                t,
            );
            shape(
                pix,
                poly(&[(0.42, -0.5), (0.36, -0.98), (0.06, -0.7)]),
                c,
                t,
            );
            shape(pix, circle(0.0, -0.38, 0.4), c, t);
            let eye = contrast(o.colour, [120, 220, 90], [250, 220, 40]);
            shape(pix, circle(-0.15, -0.42, 0.08), eye, t);
            shape(pix, circle(0.15, -0.42, 0.08), eye, t);
        }
        Kind::Mountain => {
            shape(pix, poly(&[(-1.0, 1.0), (0.0, -0.9), (1.0, 1.0)]), c, t);
            let cap = contrast(o.colour, white, [200, 200, 210]);
            shape(
                pix,
                poly(&[(-0.33, -0.27), (0.0, -0.9), (0.33, -0.27)]),
                cap,
                t,
            );
        }
        Kind::Flower => {
            let stem = contrast(o.colour, Colour::Green.rgb(), [30, 110, 40]);
            line(pix, &[(0.0, -0.2), (0.0, 1.0)], 0.12, stem, t);
            shape(pix, poly(&[(0.0, 0.55), (0.45, 0.3), (0.3, 0.6)]), stem, t);
            for i in 0..5 {
                let a = i as f32 * std::f32::consts::TAU / 5.0 - std::f32::consts::FRAC_PI_2;
                let (s, co) = a.sin_cos();
                shape(pix, circle(0.38 * co, -0.35 + 0.38 * s, 0.27), c, t);
            }
            let centre = contrast(o.colour, Colour::Yellow.rgb(), [120, 70, 30]);
            shape(pix, circle(0.0, -0.35, 0.18), centre, t);
        }
    }
}
