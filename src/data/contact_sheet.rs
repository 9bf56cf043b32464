//! A contact sheet: sample images in a grid with their captions under them, as one PNG to look
//! at. Text is drawn with the public-domain 8×8 bitmap font, so no font file is needed.

use font8x8::UnicodeFonts;
use image::{imageops, Rgb, RgbImage};

const CELL_IMAGE: u32 = 192;
const PAD: u32 = 8;
const CHARS_PER_LINE: usize = (CELL_IMAGE / 8) as usize;
const TEXT_LINES: u32 = 7;

pub fn contact_sheet(items: &[(&RgbImage, &str)], columns: u32) -> RgbImage {
    let rows = (items.len() as u32).div_ceil(columns).max(1);
    let cell_w = CELL_IMAGE + 2 * PAD;
    let cell_h = CELL_IMAGE + TEXT_LINES * 10 + 2 * PAD;
    let mut sheet = RgbImage::from_pixel(columns * cell_w, rows * cell_h, Rgb([255, 255, 255]));
    for (i, (image, caption)) in items.iter().enumerate() {
        let (x, y) = (
            (i as u32 % columns) * cell_w + PAD,
            (i as u32 / columns) * cell_h + PAD,
        );
        // Nearest-neighbour, so the pixels seen are the pixels a model sees.
        let big = imageops::resize(
            *image,
            CELL_IMAGE,
            CELL_IMAGE,
            imageops::FilterType::Nearest,
        );
        imageops::overlay(&mut sheet, &big, x as i64, y as i64);
        for (j, line) in wrap(caption, CHARS_PER_LINE)
            .iter()
            .take(TEXT_LINES as usize)
            .enumerate()
        {
            draw_text(&mut sheet, line, x, y + CELL_IMAGE + 4 + j as u32 * 10);
        }
    }
    sheet
}

fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

pub fn draw_text(image: &mut RgbImage, text: &str, x: u32, y: u32) {
    for (k, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else {
            continue;
        };
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8u32 {
                if bits >> col & 1 == 1 {
                    let (px, py) = (x + k as u32 * 8 + col, y + row as u32);
                    if px < image.width() && py < image.height() {
                        image.put_pixel(px, py, Rgb([20, 20, 20]));
                    }
                }
            }
        }
    }
}
