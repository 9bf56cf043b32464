//! Image resizing exactly as Pillow does it (`Image.resize`, `libImaging/Resample.c`), since
//! transformers' image processors resize with Pillow and a captioner is only as good as the
//! pixels it was trained on: separable filtering (horizontal, then vertical), a filter support
//! widened by the downscaling factor, coefficients in 22-bit fixed point, and rounding to
//! 8 bits after each pass.

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
    Lanczos,
}

impl Filter {
    /// Pillow's resample codes: 2 bilinear, 3 bicubic, 1 lanczos (others fall back to bilinear).
    pub fn from_pil(code: u32) -> Self {
        match code {
            3 => Self::Bicubic,
            1 => Self::Lanczos,
            _ => Self::Bilinear,
        }
    }

    fn support(self) -> f64 {
        match self {
            Self::Bilinear => 1.0,
            Self::Bicubic => 2.0,
            Self::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Self::Bilinear => (1.0 - x).max(0.0),
            Self::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
            Self::Lanczos => {
                if x < 3.0 {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// For each output index: the first input index and the fixed-point weights.
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut w: Vec<f64> = (xmin..xmax)
                .map(|x| filter.weight((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            let fixed = w
                .iter()
                .map(|&v| {
                    let s = v * (1u64 << PRECISION_BITS) as f64;
                    if v < 0.0 {
                        (s - 0.5) as i32
                    } else {
                        (s + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an RGB image to `width × height` with Pillow's arithmetic.
pub fn resize(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (nw, nh) = (width as usize, height as usize);
    let src = img.as_raw();
    let round = 1i64 << (PRECISION_BITS - 1);
    let horizontal: Vec<u8> = if nw != w {
        let coeffs = coefficients(w, nw, filter);
        let mut out = vec![0u8; nw * h * 3];
        for y in 0..h {
            for (x, (start, k)) in coeffs.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = round;
                    for (i, &kv) in k.iter().enumerate() {
                        acc += src[(y * w + start + i) * 3 + c] as i64 * kv as i64;
                    }
                    out[(y * nw + x) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        src.clone()
    };
    let vertical: Vec<u8> = if nh != h {
        let coeffs = coefficients(h, nh, filter);
        let mut out = vec![0u8; nw * nh * 3];
        for (y, (start, k)) in coeffs.iter().enumerate() {
            for x in 0..nw {
                for c in 0..3 {
                    let mut acc = round;
                    for (i, &kv) in k.iter().enumerate() {
                        acc += horizontal[((start + i) * nw + x) * 3 + c] as i64 * kv as i64;
                    }
                    out[(y * nw + x) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        horizontal
    };
    RgbImage::from_raw(width, height, vertical).expect("buffer size matches")
}
