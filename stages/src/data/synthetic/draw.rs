//! Drawing a face: the identity's shapes under a nuisance and a similarity, rasterised, blurred
//! and JPEG-encoded.

use super::*;

#[inline]
fn inside(dx: f32, dy: f32) -> f32 {
    dx * dx + dy * dy
}

/// Render one face; `t` maps the identity frame to image pixels. Returns HWC RGB u8.
pub fn render(id: &Identity, nz: &Nuisance, t: &Sim, w: usize, h: usize) -> Vec<u8> {
    let inv = t.inverse();
    let scale = (t.a * t.a + t.b * t.b).sqrt();
    let mut img = vec![0f32; w * h * 3];
    let f = Placed::new(id, nz);
    for py in 0..h {
        for px in 0..w {
            let [u, v] = inv.apply([px as f32 + 0.5, py as f32 + 0.5]);
            let col = pixel(id, nz, &f, u, v);
            let light = nz.gain * (1.0 + nz.grad[0] * (u - 56.0) + nz.grad[1] * (v - 56.0));
            let o = (py * w + px) * 3;
            for k in 0..3 {
                img[o + k] = col[k] * light * nz.cast[k];
            }
        }
    }
    if nz.blur {
        let radius = if scale > 1.5 { 2 } else { 1 };
        box_blur(&mut img, w, h, radius);
    }
    add_noise(&img, nz)
}

fn shade(col: [f32; 3], f: f32) -> [f32; 3] {
    [col[0] * f, col[1] * f, col[2] * f]
}

/// An identity's features as one nuisance places them in the identity frame, with the
/// reciprocals the per-pixel tests use.
struct Placed {
    c: [f32; 2],
    fw: f32,
    fh: f32,
    /// The eyes' x.
    ex: [f32; 2],
    /// The nose's and mouth's x.
    mx: f32,
    mouth_h: f32,
    /// The hairline's wave, tabulated per integer column of the identity frame.
    hair_lut: [f32; HAIR_LUT],
    ifw: f32,
    ifh: f32,
    ihw: f32,
    ihh: f32,
}

impl Placed {
    fn new(id: &Identity, nz: &Nuisance) -> Self {
        let (fw, fh) = (id.face_w, id.face_h);
        Placed {
            c: id.center,
            fw,
            fh,
            ex: [56.0 - id.eye_dx + nz.yaw, 56.0 + id.eye_dx + nz.yaw],
            mx: 56.0 + nz.yaw,
            mouth_h: id.lip_t + nz.mouth_open,
            hair_lut: std::array::from_fn(|x| id.hairline + id.hair_wave * (x as f32 * 0.21).sin()),
            ifw: 1.0 / fw,
            ifh: 1.0 / fh,
            ihw: 1.0 / (fw * 1.16),
            ihh: 1.0 / (fh * 1.1),
        }
    }
}

/// The colour at point (u, v) of the identity frame, before lighting: background, neck, hair
/// or face, and the occluder over all.
fn pixel(id: &Identity, nz: &Nuisance, f: &Placed, u: f32, v: f32) -> [f32; 3] {
    let c = f.c;
    let dx = (u - c[0]) * f.ifw;
    let dy = (v - c[1]) * f.ifh;
    let r2 = inside(dx, dy);
    let tex = {
        let tx = ((u / 112.0 * TEX as f32) as isize).clamp(0, TEX as isize - 1) as usize;
        let ty = ((v / 112.0 * TEX as f32) as isize).clamp(0, TEX as isize - 1) as usize;
        id.texture[ty * TEX + tx]
    };
    let hair_r2 = inside((u - c[0]) * f.ihw, (v - c[1] + 3.0) * f.ihh);
    let hairline = f.hair_lut[(u.max(0.0) as usize).min(HAIR_LUT - 1)];
    let mut col = {
        let g = (u + v) / 224.0;
        std::array::from_fn::<f32, 3, _>(|k| nz.bg[0][k] * (1.0 - g) + nz.bg[1][k] * g)
    };
    let neck = (u - c[0]).abs() < f.fw * 0.5 && v > c[1] + f.fh * 0.55 && v < c[1] + f.fh * 1.45;
    if neck {
        col = shade(id.skin, 0.72 * (1.0 + tex));
    }
    let is_hair = id.hair_style != 2
        && hair_r2 < 1.0
        && (v < hairline || (id.hair_style == 1 && dx.abs() > 0.8 && v < c[1] + f.fh * 0.7));
    if is_hair {
        col = shade(id.hair, 0.85 + 2.0 * tex);
    } else if r2 < 1.0 {
        col = face(id, nz, f, u, v, r2, tex);
    }
    if let Some((rect, oc)) = &nz.occluder {
        if u > rect[0] && u < rect[2] && v > rect[1] && v < rect[3] {
            col = *oc;
        }
    }
    col
}

/// Inside the face oval (`r2` < 1): shaded skin, beard, nose, mouth, brows, eyes and glasses.
fn face(id: &Identity, nz: &Nuisance, f: &Placed, u: f32, v: f32, r2: f32, tex: f32) -> [f32; 3] {
    let (mx, mouth_h) = (f.mx, f.mouth_h);
    let mut col = shade(id.skin, (1.0 + tex) * (1.0 - 0.22 * r2));
    // Beard below the nose, outside the lips.
    if id.beard && v > id.nose_y + 6.0 && r2 > 0.25 {
        col = shade(id.hair, 0.9 + tex);
    }
    // Nose: a shaded wedge ending at the nose tip.
    let ny = (v - (id.nose_y - 15.0)) / 15.0;
    if (0.0..=1.0).contains(&ny) && (u - mx).abs() < id.nose_w * ny {
        col = shade(col, 0.84);
    }
    if (v - id.nose_y).abs() < 1.2 && (u - mx).abs() < id.nose_w {
        col = shade(col, 0.6);
    }
    // Mouth: lips, and the dark inside when open.
    if (v - id.mouth_y).abs() < mouth_h
        && inside((u - mx) / id.mouth_hw, (v - id.mouth_y) / mouth_h) < 1.0
    {
        col = if nz.mouth_open > 0.0
            && inside(
                (u - mx) / (id.mouth_hw * 0.85),
                (v - id.mouth_y) / nz.mouth_open,
            ) < 1.0
        {
            [40.0, 15.0, 20.0]
        } else {
            id.lip
        };
    }
    let near_eyes = (v - id.eye_y).abs() < id.eye_r * 2.0 + 14.0;
    for (k, &e) in f.ex.iter().enumerate().filter(|_| near_eyes) {
        col = eye(id, k, e, u, v, col);
    }
    col
}

/// Eye `k` (0: left) at x = `e`, with its brow and the glasses' rim, over `col`.
fn eye(id: &Identity, k: usize, e: f32, u: f32, v: f32, mut col: [f32; 3]) -> [f32; 3] {
    // Brow: a tilted band above the eye.
    let side = if k == 0 { -1.0 } else { 1.0 };
    let by = id.eye_y - 8.5 + side * id.brow_tilt * (u - e);
    if (u - e).abs() < 8.0 && v > by - id.brow_t && v < by {
        col = shade(id.hair, 0.8);
    }
    let d = inside((u - e) / (id.eye_r * 1.7), (v - id.eye_y) / id.eye_r);
    if d < 1.0 {
        col = if inside(u - e, v - id.eye_y) < (id.eye_r * 0.65).powi(2) {
            if inside(u - e, v - id.eye_y) < (id.eye_r * 0.25).powi(2) {
                [10.0, 10.0, 10.0]
            } else {
                id.eye
            }
        } else {
            [235.0, 232.0, 225.0]
        };
    }
    if id.glasses {
        let g = inside(
            (u - e) / (id.eye_r * 2.6),
            (v - id.eye_y) / (id.eye_r * 2.0),
        );
        if (0.8..1.0).contains(&g) {
            col = [25.0, 25.0, 30.0];
        }
    }
    col
}

/// Sensor noise, and the conversion to u8: one xorshift draw per pixel gives six 10-bit
/// uniforms, summed in pairs into a triangular distribution per channel.
fn add_noise(img: &[f32], nz: &Nuisance) -> Vec<u8> {
    let mut s = nz.noise_seed | 1;
    let amp = nz.noise * 1.7 / 1024.0;
    let mut out = vec![0u8; img.len()];
    for (o, px) in out.chunks_exact_mut(3).zip(img.chunks_exact(3)) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        for k in 0..3 {
            let a = ((s >> (20 * k)) & 1023) as f32;
            let b = ((s >> (20 * k + 10)) & 1023) as f32;
            o[k] = (px[k] + (a + b - 1023.0) * amp + 0.5).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

fn box_blur(img: &mut [f32], w: usize, h: usize, r: usize) {
    let mut tmp = img.to_vec();
    let n = (2 * r + 1) as f32;
    for y in 0..h {
        for x in 0..w {
            for k in 0..3 {
                let mut s = 0.0;
                for d in 0..=2 * r {
                    let xx = (x + d).saturating_sub(r).min(w - 1);
                    s += img[(y * w + xx) * 3 + k];
                }
                tmp[(y * w + x) * 3 + k] = s / n;
            }
        }
    }
    for y in 0..h {
        for x in 0..w {
            for k in 0..3 {
                let mut s = 0.0;
                for d in 0..=2 * r {
                    let yy = (y + d).saturating_sub(r).min(h - 1);
                    s += tmp[(yy * w + x) * 3 + k];
                }
                img[(y * w + x) * 3 + k] = s / n;
            }
        }
    }
}

/// JPEG-encode HWC RGB (jpeg-encoder: SIMD DCT, several times faster than `image`'s encoder).
pub fn encode_jpeg(rgb: &[u8], w: usize, h: usize, quality: u8) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(w * h / 2);
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| anyhow::anyhow!("JPEG encoding failed: {e}"))?;
    Ok(out)
}
