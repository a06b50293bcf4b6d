//! The synthetic "shapes" world of the demo models (`examples/models/shapes-*`, trained by
//! `scripts/train_demo/`): the Rust twin of `scripts/train_demo/world.py`.
//!
//! A square canvas of one background colour with one filled shape (circle, axis-aligned square,
//! isosceles triangle apex up) of one of six colours. [`classify`] reads a picture back:
//! background = the border's colour, shape colour = the dominant palette colour away from it,
//! shape = the fill ratio of that colour's bounding box (circle ≈ π/4, square ≈ 1,
//! triangle ≈ 1/2).

use any2any_core::image::{Rgb, RgbImage};

/// Background names and colours.
pub const BACKGROUNDS: [(&str, [u8; 3]); 3] = [
    ("white", [255, 255, 255]),
    ("black", [0, 0, 0]),
    ("gray", [128, 128, 128]),
];

/// Shape colour names and colours.
pub const COLOURS: [(&str, [u8; 3]); 6] = [
    ("red", [220, 40, 40]),
    ("green", [40, 180, 60]),
    ("blue", [40, 80, 220]),
    ("yellow", [240, 220, 40]),
    ("purple", [150, 60, 200]),
    ("orange", [250, 140, 30]),
];

/// Shape names.
pub const SHAPES: [&str; 3] = ["circle", "square", "triangle"];

/// What a picture shows: (colour, shape, background) names.
pub type Scene = (&'static str, &'static str, &'static str);

/// `a {colour} {shape} on a {background} background`.
pub fn caption((colour, shape, background): Scene) -> String {
    format!("a {colour} {shape} on a {background} background")
}

fn rgb(table: &[(&'static str, [u8; 3])], name: &str) -> [u8; 3] {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .unwrap_or_else(|| panic!("unknown name {name}"))
}

/// Draws a `size`×`size` picture: the shape's side or diameter `d` px, its box's top-left at
/// (`x0`, `y0`) (hard edges, exact palette colours; the same rule as world.py's `render`).
pub fn render(scene: Scene, size: u32, d: u32, x0: u32, y0: u32) -> RgbImage {
    let (colour, shape, background) = scene;
    let (fg, bg) = (rgb(&COLOURS, colour), rgb(&BACKGROUNDS, background));
    let d = f64::from(d);
    RgbImage::from_fn(size, size, |x, y| {
        let u = f64::from(x) + 0.5 - f64::from(x0);
        let v = f64::from(y) + 0.5 - f64::from(y0);
        let inside = match shape {
            "square" => u > 0.0 && u < d && v > 0.0 && v < d,
            "circle" => {
                let r = d / 2.0;
                (u - r).powi(2) + (v - r).powi(2) <= r * r
            }
            _ => v > 0.0 && v < d && (u - d / 2.0).abs() <= v / 2.0,
        };
        Rgb(if inside { fg } else { bg })
    })
}

fn nearest(p: &Rgb<u8>, table: &[(&'static str, [u8; 3])]) -> (usize, f64) {
    table
        .iter()
        .enumerate()
        .map(|(i, (_, c))| {
            let d: f64 = (0..3)
                .map(|k| (f64::from(p.0[k]) - f64::from(c[k])).powi(2))
                .sum();
            (i, d.sqrt())
        })
        .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a })
}

/// (colour, shape, background) of a picture, or None when no shape is found.
pub fn classify(img: &RgbImage) -> Option<Scene> {
    let (w, h) = img.dimensions();
    if w < 3 || h < 3 {
        return None;
    }
    let mut votes = [0usize; 3];
    for x in 0..w {
        for y in [0, h - 1] {
            votes[nearest(img.get_pixel(x, y), &BACKGROUNDS).0] += 1;
        }
    }
    for y in 0..h {
        for x in [0, w - 1] {
            votes[nearest(img.get_pixel(x, y), &BACKGROUNDS).0] += 1;
        }
    }
    let bi = argmax(&votes);
    let bg = BACKGROUNDS[bi].1;
    let far = |p: &Rgb<u8>| {
        let d: f64 = (0..3)
            .map(|k| (f64::from(p.0[k]) - f64::from(bg[k])).powi(2))
            .sum();
        d.sqrt() > 60.0
    };
    let mut cvotes = [0usize; 6];
    let mut n_far = 0;
    for p in img.pixels() {
        if far(p) {
            n_far += 1;
            let (ci, dist) = nearest(p, &COLOURS);
            if dist < 80.0 {
                cvotes[ci] += 1;
            }
        }
    }
    if n_far < 4 || cvotes.iter().sum::<usize>() == 0 {
        return None;
    }
    let ci = argmax(&cvotes);
    let (mut x0, mut y0, mut x1, mut y1, mut n) = (u32::MAX, u32::MAX, 0, 0, 0usize);
    for (x, y, p) in img.enumerate_pixels() {
        let (c, dist) = nearest(p, &COLOURS);
        if far(p) && c == ci && dist < 80.0 {
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            n += 1;
        }
    }
    let area = f64::from(x1 - x0 + 1) * f64::from(y1 - y0 + 1);
    let fill = n as f64 / area;
    let shape = if fill > 0.89 {
        "square"
    } else if fill > 0.64 {
        "circle"
    } else {
        "triangle"
    };
    Some((COLOURS[ci].0, shape, BACKGROUNDS[bi].0))
}

fn argmax(v: &[usize]) -> usize {
    // the first maximum, as numpy's argmax
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_reads_back_every_rendered_scene() {
        for &(b, _) in &BACKGROUNDS {
            for &(c, _) in &COLOURS {
                for &s in &SHAPES {
                    for (size, d, x0, y0) in [(64, 23, 0, 41), (64, 44, 19, 3), (100, 60, 30, 9)] {
                        let img = render((c, s, b), size, d, x0, y0);
                        assert_eq!(classify(&img), Some((c, s, b)), "{size} {d} {x0} {y0}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_blank_canvas_has_no_shape() {
        let img = RgbImage::from_pixel(32, 32, Rgb([128, 128, 128]));
        assert_eq!(classify(&img), None);
    }
}
