//! [`Similarity`]: 5-point face alignment (formats.md §3.2): the least-squares similarity from the
//! landmarks to the ArcFace template (skimage's `SimilarityTransform.estimate`, closed form in 2-D)
//! and [`warp_affine`], a bilinear warp with a constant-0 border that follows OpenCV's
//! `warpAffine` fixed-point scheme (1/32-pixel coordinates, 15-bit weights), so aligned crops
//! match the reference to within rounding of the matrix itself.

/// The ArcFace 5-point template for a 112×112 crop: eyes, nose, mouth corners.
pub const ARCFACE_112: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// The template for a `width`×`height` crop: the 112 template scaled by `width / 112` in x and
/// `height / 112` in y.
pub fn template(width: usize, height: usize) -> [[f64; 2]; 5] {
    let (sx, sy) = (width as f64 / 112.0, height as f64 / 112.0);
    ARCFACE_112.map(|[x, y]| [x * sx, y * sy])
}

/// `[[a, −b, tx], [b, a, ty]]`: a rotation + uniform scale + translation (no reflection).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    pub fn matrix(&self) -> [[f64; 3]; 2] {
        [[self.a, -self.b, self.tx], [self.b, self.a, self.ty]]
    }
    pub fn apply(&self, [x, y]: [f64; 2]) -> [f64; 2] {
        [
            self.a * x - self.b * y + self.tx,
            self.b * x + self.a * y + self.ty,
        ]
    }

    /// Least-squares similarity mapping `src` onto `dst` (Umeyama without reflection in 2-D).
    /// `None` when the source points coincide (no scale can be estimated).
    pub fn estimate(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Similarity> {
        let n = src.len();
        if n == 0 || n != dst.len() {
            return None;
        }
        let mean = |p: &[[f64; 2]]| {
            let (sx, sy) = p.iter().fold((0.0, 0.0), |(a, b), q| (a + q[0], b + q[1]));
            [sx / n as f64, sy / n as f64]
        };
        let (ms, md) = (mean(src), mean(dst));
        let (mut var, mut sa, mut sb) = (0.0, 0.0, 0.0);
        for (p, q) in src.iter().zip(dst) {
            let (px, py) = (p[0] - ms[0], p[1] - ms[1]);
            let (qx, qy) = (q[0] - md[0], q[1] - md[1]);
            var += px * px + py * py;
            sa += px * qx + py * qy;
            sb += px * qy - py * qx;
        }
        if var.is_nan() || var <= 0.0 {
            return None;
        }
        let (a, b) = (sa / var, sb / var);
        Some(Similarity {
            a,
            b,
            tx: md[0] - (a * ms[0] - b * ms[1]),
            ty: md[1] - (b * ms[0] + a * ms[1]),
        })
    }
}

/// An interleaved 8-bit image (`height × width × channels`, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

const INTER_BITS: i32 = 5;
const INTER_TAB: i32 = 1 << INTER_BITS;
const AB_BITS: i32 = 10;
const AB_SCALE: f64 = (1 << AB_BITS) as f64;
const COEF_BITS: i32 = 15;
const COEF_SCALE: f64 = (1 << COEF_BITS) as f64;

/// OpenCV's `saturate_cast<int>(double)`: round half to even.
fn round_i32(v: f64) -> i32 {
    v.round_ties_even().clamp(i32::MIN as f64, i32::MAX as f64) as i32
}

/// The 1/32-pixel bilinear weight table, as OpenCV builds it.
fn weight_table() -> Vec<[i32; 4]> {
    let mut tab = Vec::with_capacity((INTER_TAB * INTER_TAB) as usize);
    let coef = |t: i32| {
        let f = t as f64 / INTER_TAB as f64;
        [1.0 - f, f]
    };
    for ty in 0..INTER_TAB {
        for tx in 0..INTER_TAB {
            let (wy, wx) = (coef(ty), coef(tx));
            let f = [wy[0] * wx[0], wy[0] * wx[1], wy[1] * wx[0], wy[1] * wx[1]];
            // Fractions are multiples of 1/1024, so the scaled weights are exact integers summing
            // to 2^15 and OpenCV's rounding correction never applies.
            let w = f.map(|v| round_i32(v * COEF_SCALE));
            tab.push(w);
        }
    }
    tab
}

/// `cv2.warpAffine(img, m, (width, height), flags=INTER_LINEAR, borderValue=0)`: every destination
/// pixel is mapped through the inverse of `m` and sampled bilinearly; outside pixels read as 0.
pub fn warp_affine(img: &Image, m: &[[f64; 3]; 2], width: usize, height: usize) -> Image {
    let c = img.channels;
    let mut out = Image {
        width,
        height,
        channels: c,
        data: vec![0; width * height * c],
    };
    // invertAffineTransform.
    let det = m[0][0] * m[1][1] - m[0][1] * m[1][0];
    let d = if det != 0.0 { 1.0 / det } else { 0.0 };
    let (a11, a22, a12, a21) = (m[1][1] * d, m[0][0] * d, -m[0][1] * d, -m[1][0] * d);
    let b1 = -a11 * m[0][2] - a12 * m[1][2];
    let b2 = -a21 * m[0][2] - a22 * m[1][2];
    let inv = [a11, a12, b1, a21, a22, b2];
    let tab = weight_table();
    let round_delta = (AB_SCALE as i32) / INTER_TAB / 2;
    let adelta: Vec<i32> = (0..width)
        .map(|x| round_i32(inv[0] * x as f64 * AB_SCALE))
        .collect();
    let bdelta: Vec<i32> = (0..width)
        .map(|x| round_i32(inv[3] * x as f64 * AB_SCALE))
        .collect();
    let (w, h) = (img.width as i64, img.height as i64);
    let px = |x: i64, y: i64, ch: usize| -> i32 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0
        } else {
            img.data[(y as usize * img.width + x as usize) * c + ch] as i32
        }
    };
    for y in 0..height {
        let x0 = round_i32((inv[1] * y as f64 + inv[2]) * AB_SCALE) + round_delta;
        let y0 = round_i32((inv[4] * y as f64 + inv[5]) * AB_SCALE) + round_delta;
        for x in 0..width {
            let xx = (x0 + adelta[x]) >> (AB_BITS - INTER_BITS);
            let yy = (y0 + bdelta[x]) >> (AB_BITS - INTER_BITS);
            let (sx, sy) = ((xx >> INTER_BITS) as i64, (yy >> INTER_BITS) as i64);
            let wt = tab[((yy & (INTER_TAB - 1)) * INTER_TAB + (xx & (INTER_TAB - 1))) as usize];
            let o = (y * width + x) * c;
            for ch in 0..c {
                let v = px(sx, sy, ch) * wt[0]
                    + px(sx + 1, sy, ch) * wt[1]
                    + px(sx, sy + 1, ch) * wt[2]
                    + px(sx + 1, sy + 1, ch) * wt[3];
                out.data[o + ch] = ((v + (1 << (COEF_BITS - 1))) >> COEF_BITS).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// Align a face: estimate the similarity from its 5 landmarks to the template of a
/// `width`×`height` crop and warp. `None` when the landmarks are degenerate (all at one point).
pub fn align_face(
    img: &Image,
    landmarks: &[[f64; 2]; 5],
    width: usize,
    height: usize,
) -> Option<Image> {
    let m = Similarity::estimate(landmarks, &template(width, height))?;
    Some(warp_affine(img, &m.matrix(), width, height))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_a_known_similarity() {
        // Landmarks = T⁻¹(template) for a known T, so estimating landmarks → template gives T back.
        let t = Similarity {
            a: 1.7 * 0.3f64.cos(),
            b: 1.7 * 0.3f64.sin(),
            tx: -20.0,
            ty: 35.5,
        };
        let det = t.a * t.a + t.b * t.b;
        let inv = |[x, y]: [f64; 2]| {
            let (u, v) = (x - t.tx, y - t.ty);
            [(t.a * u + t.b * v) / det, (-t.b * u + t.a * v) / det]
        };
        let lmk: Vec<[f64; 2]> = ARCFACE_112.iter().map(|&p| inv(p)).collect();
        let e = Similarity::estimate(&lmk, &ARCFACE_112).unwrap();
        for (g, w) in [e.a, e.b, e.tx, e.ty].iter().zip([t.a, t.b, t.tx, t.ty]) {
            assert!((g - w).abs() < 1e-9, "{g} vs {w}");
        }
        for (p, q) in lmk.iter().zip(ARCFACE_112) {
            let r = e.apply(*p);
            assert!((r[0] - q[0]).abs() < 1e-9 && (r[1] - q[1]).abs() < 1e-9);
        }
    }

    #[test]
    fn template_scales_with_size() {
        assert_eq!(template(112, 112), ARCFACE_112);
        assert!((template(56, 56)[0][0] - 38.2946 / 2.0).abs() < 1e-12);
        assert!(Similarity::estimate(&[[1.0, 1.0]; 5], &ARCFACE_112).is_none());
    }

    fn gradient(w: usize, h: usize) -> Image {
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&[(x * 10) as u8, (y * 10) as u8, 200]);
            }
        }
        Image {
            width: w,
            height: h,
            channels: 3,
            data,
        }
    }

    #[test]
    fn identity_and_integer_shift() {
        let img = gradient(8, 6);
        let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert_eq!(warp_affine(&img, &id, 8, 6), img);
        // dst(x, y) = src(x + 2, y + 1): columns past the source edge read the 0 border.
        let shift = [[1.0, 0.0, -2.0], [0.0, 1.0, -1.0]];
        let out = warp_affine(&img, &shift, 8, 6);
        let at = |im: &Image, x: usize, y: usize| im.data[(y * im.width + x) * 3..][..3].to_vec();
        assert_eq!(at(&out, 0, 0), at(&img, 2, 1));
        assert_eq!(at(&out, 5, 4), at(&img, 7, 5));
        assert_eq!(at(&out, 6, 0), vec![0, 0, 0]);
        assert_eq!(at(&out, 0, 5), vec![0, 0, 0]);
    }

    #[test]
    fn half_pixel_is_the_average() {
        // Upscale 2x: dst x=1 maps to src 0.5, the mean of columns 0 and 1 (0 and 10 -> 5).
        let img = gradient(4, 4);
        let up = [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]];
        let out = warp_affine(&img, &up, 8, 8);
        assert_eq!(out.data[3], 5);
        assert_eq!(out.data[(2 * 8 + 2) * 3 + 1], 10);
        let tab = weight_table();
        assert!(tab.iter().all(|w| w.iter().sum::<i32>() == 1 << 15));
    }

    #[test]
    fn aligned_landmarks_land_on_the_template() {
        // A bright dot at each landmark of a rotated face ends up near the template point.
        let t = Similarity {
            a: 0.8,
            b: 0.25,
            tx: 30.0,
            ty: 10.0,
        };
        let lmk: [[f64; 2]; 5] = ARCFACE_112.map(|p| t.apply(p));
        let mut img = Image {
            width: 200,
            height: 200,
            channels: 1,
            data: vec![0; 200 * 200],
        };
        for p in lmk {
            let (x, y) = (p[0].round() as usize, p[1].round() as usize);
            for dy in 0..3 {
                for dx in 0..3 {
                    img.data[(y + dy - 1) * 200 + x + dx - 1] = 255;
                }
            }
        }
        let out = align_face(&img, &lmk, 112, 112).unwrap();
        for q in ARCFACE_112 {
            let (x, y) = (q[0].round() as usize, q[1].round() as usize);
            assert!(out.data[y * 112 + x] > 100, "no dot at {x},{y}");
        }
    }
}
