//! The `synthetic-faces` generator: a seeded stand-in for CASIA-WebFace ([`generate`]) written in
//! the real formats: a face-layout RecordIO `train/` folder, an LFW-style `pairs.bin`, an IJB-C-style
//! `ijbc/` release, and `noise.json` with the ground truth of the injected defects.
//!
//! Each identity is a parametric face ([`Identity`]: skin, hair and eye colours, face shape,
//! feature geometry, hair style, beard, glasses, a skin texture). Each image adds nuisance
//! ([`Nuisance`]: pose and affine jitter, expression, illumination, colour cast, background,
//! occlusion, blur, sensor noise, JPEG quality). Everything derives from (seed, identity, image) by
//! hashing, so images render in parallel and the bytes do not depend on the thread count.
//!
//! Faces are drawn in the identity's own frame, whose scale matches the 112×112 ArcFace template.
//! Aligned images (training, pairs) use the similarity that maps the identity's five landmarks
//! onto the template; IJB-C loose crops use an arbitrary larger similarity and publish the
//! transformed landmarks, so aligning them to the template recovers the aligned face.

use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde_json::json;

use crate::formats::{bin, recordio};
use crate::kinds::data::SyntheticFacesParams;

mod draw;
mod ijbc;
mod plan;

pub use draw::{encode_jpeg, render};
pub use ijbc::IjbcCounts;
use plan::{image_counts, plan_train};

/// ArcFace 112×112 five-point template (formats.md §3.2).
pub const TEMPLATE: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// 2-D similarity x' = [[a, −b], [b, a]]·x + t.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sim {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Sim {
    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }

    /// self ∘ other (apply `other` first).
    pub fn then_after(&self, other: &Sim) -> Sim {
        let t = self.apply([other.tx, other.ty]);
        Sim {
            a: self.a * other.a - self.b * other.b,
            b: self.b * other.a + self.a * other.b,
            tx: t[0],
            ty: t[1],
        }
    }

    pub fn inverse(&self) -> Sim {
        let d = self.a * self.a + self.b * self.b;
        let (a, b) = (self.a / d, -self.b / d);
        let t = [-(a * self.tx - b * self.ty), -(b * self.tx + a * self.ty)];
        Sim {
            a,
            b,
            tx: t[0],
            ty: t[1],
        }
    }

    /// Rotation θ (radians) and scale s about `center`, then a shift.
    pub fn about(center: [f32; 2], theta: f32, s: f32, shift: [f32; 2]) -> Sim {
        let (a, b) = (s * theta.cos(), s * theta.sin());
        let tx = center[0] - (a * center[0] - b * center[1]) + shift[0];
        let ty = center[1] - (b * center[0] + a * center[1]) + shift[1];
        Sim { a, b, tx, ty }
    }

    /// Least-squares similarity mapping `src` onto `dst` (the 2-D closed form of formats.md §3.2).
    pub fn estimate(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Sim {
        let n = src.len() as f32;
        let mean = |p: &[[f32; 2]]| {
            let s = p
                .iter()
                .fold([0f32; 2], |acc, q| [acc[0] + q[0], acc[1] + q[1]]);
            [s[0] / n, s[1] / n]
        };
        let (ms, md) = (mean(src), mean(dst));
        let (mut var, mut sa, mut sb) = (0f32, 0f32, 0f32);
        for (p, q) in src.iter().zip(dst) {
            let (px, py, qx, qy) = (p[0] - ms[0], p[1] - ms[1], q[0] - md[0], q[1] - md[1]);
            var += px * px + py * py;
            sa += px * qx + py * qy;
            sb += px * qy - py * qx;
        }
        let (a, b) = (sa / var, sb / var);
        Sim {
            a,
            b,
            tx: md[0] - (a * ms[0] - b * ms[1]),
            ty: md[1] - (b * ms[0] + a * ms[1]),
        }
    }
}

/// SplitMix64 step, used to derive independent seeds from (seed, domain, index…).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn seed_of(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5EED_u64, |h, &p| mix(h ^ p))
}

fn rng_of(parts: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed_of(parts))
}

fn normal(r: &mut ChaCha8Rng) -> f32 {
    // Box-Muller; one value per call is plenty here.
    let u1: f32 = r.gen_range(1e-7..1.0);
    let u2: f32 = r.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

const TEX: usize = 32;
const HAIR_LUT: usize = 128;

/// The fixed appearance of one identity, in its own 112-pixel frame.
#[derive(Debug, Clone)]
pub struct Identity {
    skin: [f32; 3],
    hair: [f32; 3],
    eye: [f32; 3],
    lip: [f32; 3],
    center: [f32; 2],
    face_w: f32,
    face_h: f32,
    eye_dx: f32,
    eye_y: f32,
    eye_r: f32,
    brow_t: f32,
    brow_tilt: f32,
    nose_y: f32,
    nose_w: f32,
    mouth_y: f32,
    mouth_hw: f32,
    lip_t: f32,
    hairline: f32,
    hair_wave: f32,
    /// 0 = short, 1 = long, 2 = bald.
    hair_style: u8,
    beard: bool,
    glasses: bool,
    /// Skin texture (multiplicative, around 0) on a TEX×TEX grid over the frame.
    texture: Vec<f32>,
    /// The five landmarks in the identity's frame.
    landmarks: [[f32; 2]; 5],
    /// Maps the landmarks onto the template.
    align: Sim,
}

/// Skin, hair, eye and lip colours of an identity.
fn colours(r: &mut ChaCha8Rng) -> [[f32; 3]; 4] {
    let tone: f32 = r.gen_range(0.0..1.0);
    let skin = [
        90.0 + 150.0 * tone + r.gen_range(-12.0..12.0),
        60.0 + 130.0 * tone + r.gen_range(-12.0..12.0),
        45.0 + 115.0 * tone + r.gen_range(-15.0..15.0),
    ];
    let hair_kind: f32 = r.gen();
    let hair = if hair_kind < 0.5 {
        let d = r.gen_range(15.0..60.0);
        [d + 10.0, d + 5.0, d]
    } else if hair_kind < 0.75 {
        [
            r.gen_range(90.0..160.0),
            r.gen_range(50.0..100.0),
            r.gen_range(20.0..50.0),
        ]
    } else if hair_kind < 0.9 {
        [
            r.gen_range(180.0..230.0),
            r.gen_range(150.0..200.0),
            r.gen_range(80.0..130.0),
        ]
    } else {
        let g = r.gen_range(130.0..220.0);
        [g, g, g]
    };
    let eye = [
        r.gen_range(20.0..120.0),
        r.gen_range(20.0..110.0),
        r.gen_range(10.0..130.0),
    ];
    let lip = [
        skin[0] * r.gen_range(0.75..1.0) + 30.0,
        skin[1] * r.gen_range(0.45..0.7),
        skin[2] * r.gen_range(0.45..0.75),
    ];
    [skin, hair, eye, lip]
}

/// Skin texture (multiplicative, around 0) on a TEX×TEX grid: a few waves and dark spots.
fn skin_texture(r: &mut ChaCha8Rng) -> Vec<f32> {
    let mut texture = vec![0f32; TEX * TEX];
    let waves: Vec<(f32, f32, f32, f32)> = (0..4)
        .map(|_| {
            (
                r.gen_range(-0.9..0.9),
                r.gen_range(-0.9..0.9),
                r.gen_range(0.0..std::f32::consts::TAU),
                r.gen_range(0.02..0.08),
            )
        })
        .collect();
    let spots: Vec<(f32, f32, f32)> = (0..r.gen_range(0..7))
        .map(|_| {
            (
                r.gen_range(4.0..28.0),
                r.gen_range(6.0..28.0),
                r.gen_range(0.8..2.0),
            )
        })
        .collect();
    for (i, t) in texture.iter_mut().enumerate() {
        let (x, y) = ((i % TEX) as f32, (i / TEX) as f32);
        *t = waves
            .iter()
            .map(|&(kx, ky, ph, a)| a * (kx * x + ky * y + ph).sin())
            .sum::<f32>();
        for &(sx, sy, sr) in &spots {
            if (x - sx).powi(2) + (y - sy).powi(2) < sr * sr {
                *t -= 0.22;
            }
        }
    }
    texture
}

impl Identity {
    pub fn new(seed: u64, index: u64) -> Identity {
        let mut r = rng_of(&[seed, 1, index]);
        let [skin, hair, eye, lip] = colours(&mut r);
        let face_w = r.gen_range(31.0..41.0);
        let face_h = r.gen_range(44.0..56.0);
        let center = [56.0, r.gen_range(62.0..68.0)];
        let eye_dx = r.gen_range(14.5..21.0);
        let eye_y = r.gen_range(47.0..56.0);
        let nose_y = eye_y + r.gen_range(16.0..24.0);
        let mouth_y = nose_y + r.gen_range(16.0..24.0);
        let mouth_hw = r.gen_range(10.5..18.0);
        let hair_style = match r.gen_range(0..10) {
            0..=5 => 0,
            6..=8 => 1,
            _ => 2,
        };
        let texture = skin_texture(&mut r);
        let landmarks = [
            [56.0 - eye_dx, eye_y],
            [56.0 + eye_dx, eye_y],
            [56.0, nose_y],
            [56.0 - mouth_hw, mouth_y],
            [56.0 + mouth_hw, mouth_y],
        ];
        Identity {
            skin,
            hair,
            eye,
            lip,
            center,
            face_w,
            face_h,
            eye_dx,
            eye_y,
            eye_r: r.gen_range(3.2..5.5),
            brow_t: r.gen_range(1.5..4.0),
            brow_tilt: r.gen_range(-0.25..0.25),
            nose_y,
            nose_w: r.gen_range(3.5..7.5),
            mouth_y,
            mouth_hw,
            lip_t: r.gen_range(1.8..4.2),
            hairline: center[1] - face_h * r.gen_range(0.55..0.85),
            hair_wave: r.gen_range(0.0..4.0),
            hair_style,
            beard: r.gen_bool(0.18),
            glasses: r.gen_bool(0.15),
            texture,
            align: Sim::estimate(&landmarks, &TEMPLATE),
            landmarks,
        }
    }

    /// The five landmarks in the identity's frame (pose shift included).
    pub fn landmarks(&self, yaw: f32) -> [[f32; 2]; 5] {
        let mut l = self.landmarks;
        for p in &mut l {
            p[0] += yaw;
        }
        l
    }
}

/// Everything that varies from one image of an identity to the next.
#[derive(Debug, Clone)]
pub struct Nuisance {
    /// Inner features shifted sideways against the face outline (a cheap yaw).
    yaw: f32,
    mouth_open: f32,
    gain: f32,
    grad: [f32; 2],
    cast: [f32; 3],
    bg: [[f32; 3]; 2],
    /// Occluder rectangle in the identity frame and its colour.
    occluder: Option<([f32; 4], [f32; 3])>,
    blur: bool,
    noise: f32,
    quality: u8,
    /// Affine jitter of aligned images: rotation, scale, shift (template pixels).
    jitter: (f32, f32, [f32; 2]),
    noise_seed: u64,
}

impl Nuisance {
    pub fn new(r: &mut ChaCha8Rng) -> Nuisance {
        Nuisance::with_difficulty(r, 1.0)
    }

    /// A shot whose pose, jitter, occlusion and blur odds and sensor noise are scaled by `d`
    /// (1 = the default mix). Every `d` consumes the same draws; only their scale changes.
    pub fn with_difficulty(r: &mut ChaCha8Rng, d: f32) -> Nuisance {
        let odds = |p: f64| (p * f64::from(d)).min(0.95);
        // The occluder is drawn whether or not it is used, so that every difficulty consumes
        // the same draws: a harder shot is the same shot, scaled.
        let occluded = r.gen_bool(odds(0.18));
        let w: f32 = r.gen_range(18.0..60.0);
        let h: f32 = r.gen_range(8.0..26.0);
        let x = r.gen_range(20.0..92.0 - w * 0.5);
        let y: f32 = r.gen_range(35.0..105.0);
        let c = [
            r.gen_range(0.0..255.0),
            r.gen_range(0.0..255.0),
            r.gen_range(0.0..255.0),
        ];
        let occluder =
            occluded.then_some(([x - w * 0.5, y - h * 0.5, x + w * 0.5, y + h * 0.5], c));
        let light = r.gen_range(0.0..0.45);
        let phi = r.gen_range(0.0..std::f32::consts::TAU);
        Nuisance {
            yaw: 2.2 * d * normal(r),
            mouth_open: if r.gen_bool(0.3) {
                r.gen_range(1.0..6.0)
            } else {
                0.0
            },
            gain: r.gen_range(0.6..1.3),
            grad: [light * phi.cos() / 56.0, light * phi.sin() / 56.0],
            cast: [
                1.0 + 0.07 * normal(r),
                1.0 + 0.07 * normal(r),
                1.0 + 0.07 * normal(r),
            ],
            bg: [
                [
                    r.gen_range(0.0..255.0),
                    r.gen_range(0.0..255.0),
                    r.gen_range(0.0..255.0),
                ],
                [
                    r.gen_range(0.0..255.0),
                    r.gen_range(0.0..255.0),
                    r.gen_range(0.0..255.0),
                ],
            ],
            occluder,
            blur: r.gen_bool(odds(0.3)),
            noise: d * r.gen_range(1.0..9.0),
            quality: r.gen_range(75..96),
            jitter: (
                0.09 * d * normal(r),
                1.0 + 0.05 * d * normal(r),
                [2.5 * d * normal(r), 2.5 * d * normal(r)],
            ),
            noise_seed: r.gen(),
        }
    }

    /// A near-duplicate: the same shot with fresh sensor noise and a sub-pixel shift.
    pub fn near_duplicate(&self, r: &mut ChaCha8Rng) -> Nuisance {
        self.near_duplicate_by(r, 1.0)
    }

    /// A near-duplicate of strength `s`: shift up to ±0.6·s px, gain ×[0.97, 1.03]^s, fresh
    /// sensor noise and JPEG quality (s = 0 keeps only those two).
    pub fn near_duplicate_by(&self, r: &mut ChaCha8Rng, s: f32) -> Nuisance {
        let mut n = self.clone();
        n.jitter.2 = [
            n.jitter.2[0] + s * r.gen_range(-0.6..0.6),
            n.jitter.2[1] + s * r.gen_range(-0.6..0.6),
        ];
        n.noise_seed = r.gen();
        n.gain *= r.gen_range(0.97f32..1.03).powf(s);
        n.quality = r.gen_range(80..96);
        n
    }

    /// Identity frame → aligned image of side `size`: the identity's alignment, the jitter, the scale.
    fn aligned(&self, id: &Identity, size: u32) -> Sim {
        let (theta, s, shift) = self.jitter;
        let k = size as f32 / 112.0;
        let jit = Sim::about([56.0, 60.0], theta, s, shift);
        Sim {
            a: k,
            b: 0.0,
            tx: 0.0,
            ty: 0.0,
        }
        .then_after(&jit.then_after(&id.align))
    }

    /// A detector-like confidence: lower with occlusion, blur and strong pose.
    fn faceness(&self) -> f32 {
        let mut s = 0.97 - 0.02 * self.yaw.abs();
        if self.occluder.is_some() {
            s -= 0.2;
        }
        if self.blur {
            s -= 0.08;
        }
        s.clamp(0.3, 1.0)
    }
}

/// A near-duplicate's perturbation: its seed and strength.
type Dup = Option<(u64, f32)>;

/// Render the aligned image of `id` for shot seed `shot` at difficulty `d` (1 = the default mix),
/// with an optional near-duplicate perturbation.
fn aligned_jpeg(id: &Identity, shot: u64, d: f32, dup: Dup, size: u32) -> Result<Vec<u8>> {
    let mut r = ChaCha8Rng::seed_from_u64(shot);
    let mut nz = Nuisance::with_difficulty(&mut r, d);
    if let Some((seed, strength)) = dup {
        nz = nz.near_duplicate_by(&mut ChaCha8Rng::seed_from_u64(seed), strength);
    }
    let t = nz.aligned(id, size);
    let rgb = render(id, &nz, &t, size as usize, size as usize);
    encode_jpeg(&rgb, size as usize, size as usize, nz.quality)
}

/// The difficulty of a training shot: exp(spread · z), z ~ N(0, 1) drawn from the shot's seed (so
/// a near-duplicate shares its source's); exactly 1 at spread 0.
fn difficulty(p: &SyntheticFacesParams, shot: u64) -> f32 {
    (p.difficulty_spread as f32 * normal(&mut rng_of(&[shot, 7]))).exp()
}

/// Output paths of the generator.
pub struct Outputs<'a> {
    pub train: &'a Path,
    pub pairs: &'a Path,
    pub ijbc: &'a Path,
    pub noise: &'a Path,
}

/// Generate the whole default dataset. Returns the metrics.
pub fn generate(p: &SyntheticFacesParams, out: &Outputs) -> Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let ids = p.identities as u64;
    let identities: Vec<Identity> =
        (0..ids + p.verification_identities as u64 + p.ijbc_subjects as u64)
            .into_par_iter()
            .map(|i| Identity::new(p.seed, i))
            .collect();
    let train = write_train(p, &identities, out)?;
    let verification_images = write_pairs(p, &identities, out.pairs)?;
    let ijbc = ijbc::generate_ijbc(p, &identities, out.ijbc)?;
    let mut metrics = train;
    let m = metrics
        .as_object_mut()
        .expect("write_train returns an object");
    for (k, v) in [
        ("pairs", json!(p.pairs)),
        ("verification_images", json!(verification_images)),
        ("ijbc_images", json!(ijbc.images)),
        ("ijbc_rows", json!(ijbc.rows)),
        ("ijbc_templates", json!(ijbc.templates)),
        ("ijbc_pairs", json!(ijbc.pairs)),
        ("ijbc_genuine_pairs", json!(ijbc.genuine)),
        ("ijbc_impostor_pairs", json!(ijbc.pairs - ijbc.genuine)),
        ("seconds", json!(started.elapsed().as_secs_f64())),
    ] {
        m.insert(k.to_string(), v);
    }
    Ok(metrics)
}

/// The training set and `noise.json`; returns the training metrics.
fn write_train(
    p: &SyntheticFacesParams,
    identities: &[Identity],
    out: &Outputs,
) -> Result<serde_json::Value> {
    let size = p.size;
    let plan = plan_train(p);
    let images = plan
        .par_iter()
        .enumerate()
        .map(|(pos, im)| {
            let dup = im.duplicate_of.map(|_| {
                (
                    seed_of(&[p.seed, 5, pos as u64]),
                    p.duplicate_strength as f32,
                )
            });
            let d = difficulty(p, im.shot.1);
            aligned_jpeg(&identities[im.shot.0 as usize], im.shot.1, d, dup, size)
        })
        .collect::<Result<Vec<_>>>()?;
    let labels: Vec<i64> = plan.iter().map(|im| im.label as i64).collect();
    recordio::write_face_layout(
        out.train,
        &images,
        &labels,
        p.identities as usize,
        (size, size),
    )?;
    let meta = crate::data::dataset::publish(
        out.train,
        Path::new("train.rec"),
        Path::new("train.idx"),
        Some(&out.train.join("property")),
        false,
    )?;

    // Ground truth of the injected defects.
    let noisy: Vec<serde_json::Value> = plan
        .iter()
        .enumerate()
        .filter(|(_, im)| im.true_id != im.label)
        .map(|(pos, im)| json!({"position": pos, "label": im.label, "true_identity": im.true_id, "duplicate_of": im.duplicate_of}))
        .collect();
    let dups: Vec<serde_json::Value> = plan
        .iter()
        .enumerate()
        .filter_map(|(pos, im)| {
            im.duplicate_of
                .map(|src| json!({"position": pos, "source": src, "identity": im.true_id}))
        })
        .collect();
    let true_ids: Vec<usize> = plan.iter().map(|im| im.true_id).collect();
    let counts = image_counts(p);
    let (n_noisy, n_dups) = (noisy.len(), dups.len());
    let noise = json!({
        "n": plan.len(),
        "label_noise": noisy,
        "duplicates": dups,
        "true_identity": true_ids,
        "images_per_identity": counts,
    });
    std::fs::write(out.noise, serde_json::to_vec(&noise)?)
        .with_context(|| format!("cannot write {}", out.noise.display()))?;
    Ok(json!({
        "images": plan.len(),
        "identities": p.identities,
        "min_images_per_identity": counts.iter().min(),
        "max_images_per_identity": counts.iter().max(),
        "identities_with_at_most_5_images": counts.iter().filter(|&&c| c <= 5).count(),
        "label_noise_images": n_noisy,
        "duplicate_images": n_dups,
        "image_size": size,
        "classes": meta.c,
    }))
}

/// Verification pairs: 10 folds, each half genuine then half impostor, drawn from a pool of
/// `verification_pool` images per held-out identity (a genuine pair is two different images).
/// Returns the number of distinct images.
fn write_pairs(p: &SyntheticFacesParams, identities: &[Identity], path: &Path) -> Result<usize> {
    let v0 = p.identities as u64;
    let nv = p.verification_identities as u64;
    let pool = p.verification_pool as u64;
    let per_fold = (p.pairs / 10) as usize;
    // (identity, pool index) of both images of each pair, and whether it is genuine.
    type PoolImage = (u64, u64);
    let mut specs: Vec<(PoolImage, PoolImage, bool)> = Vec::with_capacity(p.pairs as usize);
    let mut r = rng_of(&[p.seed, 6]);
    for fold in 0..10 {
        // With an odd fold size, even folds get the extra genuine pair, so that exactly half are.
        let genuine_in_fold = (per_fold + (fold + 1) % 2) / 2;
        for k in 0..per_fold {
            let genuine = k < genuine_in_fold;
            let a = r.gen_range(0..nv);
            let i = r.gen_range(0..pool);
            let (b, j) = if genuine {
                (a, (i + r.gen_range(1..pool)) % pool)
            } else {
                ((a + r.gen_range(1..nv)) % nv, r.gen_range(0..pool))
            };
            specs.push(((a, i), (b, j), genuine));
        }
    }
    let pool_imgs = (0..nv * pool)
        .into_par_iter()
        .map(|k| {
            let (v, j) = (k / pool, k % pool);
            let shot = seed_of(&[p.seed, 10, v, j]);
            aligned_jpeg(&identities[(v0 + v) as usize], shot, 1.0, None, p.size)
        })
        .collect::<Result<Vec<_>>>()?;
    let pair_imgs: Vec<Vec<u8>> = specs
        .iter()
        .flat_map(|&(x, y, _)| [x, y])
        .map(|(v, j)| pool_imgs[(v * pool + j) as usize].clone())
        .collect();
    let issame: Vec<bool> = specs.iter().map(|s| s.2).collect();
    bin::write_pairs(path, &pair_imgs, &issame)?;
    Ok(pool_imgs.len())
}

#[cfg(test)]
mod tests;
