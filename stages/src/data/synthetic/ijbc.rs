//! The IJB-C-style part of the `synthetic-faces` generator: subjects with a pool of media (stills
//! and short videos), templates that pick a few media from their subject's pool, and every pair
//! of templates listed in the pair file.
//!
//! Pairs grow quadratically with the templates while images grow with the pools: the defaults
//! (150 subjects × 10 templates, 10 media each) give 1,500 templates, 6,750 genuine and 1,117,500
//! impostor pairs from about 2,000 loose crops. A media shared by several templates is the same
//! file (same name, landmarks and faceness) on every row that lists it, as in a release where the
//! same frame belongs to several templates; the `ijbc` stage embeds it once.

use std::path::Path;

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::{encode_jpeg, normal, render, rng_of, seed_of, Identity, Nuisance, Sim};
use crate::formats::ijb::{self, IjbRelease};
use crate::kinds::data::SyntheticFacesParams;

/// Counts of a generated release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IjbcCounts {
    /// Distinct loose-crop files.
    pub images: usize,
    /// Rows of `ijbc_face_tid_mid.txt` (a file shared by several templates is listed once per template).
    pub rows: usize,
    pub templates: usize,
    pub pairs: usize,
    pub genuine: usize,
}

/// One distinct loose crop: its subject (identity index), shot seed and optional video frame seed.
struct Frame {
    identity: u64,
    shot: u64,
    frame: Option<u64>,
}

/// A subject's media pool: each media as (media id, index of its first frame, frame count).
type Pool = Vec<(u64, usize, usize)>;

/// A row of the release: (frame, template id, media id).
type Row = (usize, u64, u64);

/// One encoded loose crop: its file name, JPEG bytes, five landmarks and faceness score.
type Crop = (String, Vec<u8>, [[f32; 2]; 5], f32);

/// Write `root` (meta/ijbc_*.txt + loose_crop/) for the subjects `identities[s0..s0 + subjects]`.
pub(super) fn generate_ijbc(
    p: &SyntheticFacesParams,
    identities: &[Identity],
    root: &Path,
) -> Result<IjbcCounts> {
    let mut r = rng_of(&[p.seed, 8]);
    let (frames, pools) = media(p, &mut r);
    let (template_subject, rows) = templates(p, &pools, &mut r);
    let size = p.size as f32;
    let crops = frames
        .par_iter()
        .enumerate()
        .map(|(i, fr)| loose_crop(&identities[fr.identity as usize], fr, i, size))
        .collect::<Result<Vec<_>>>()?;
    let mut release = IjbRelease::default();
    // Creates meta/ and loose_crop/.
    ijb::write_release(root, "IJBC", &release)?;
    for (name, jpeg, _, _) in &crops {
        std::fs::write(ijb::image_path(root, name), jpeg)
            .with_context(|| format!("cannot write {name} in {}", root.display()))?;
    }
    for &(f, t, m) in &rows {
        let (name, _, lm, score) = &crops[f];
        release.images.push(name.clone());
        release.templates.push(t);
        release.media.push(m);
        release.landmarks.push(*lm);
        release.scores.push(*score);
    }
    let n = template_subject.len();
    release.pairs.reserve(n * n.saturating_sub(1) / 2);
    for i in 0..n {
        for j in i + 1..n {
            let (t1, s1) = template_subject[i];
            let (t2, s2) = template_subject[j];
            release.pairs.push((t1, t2, s1 == s2));
        }
    }
    ijb::write_release(root, "IJBC", &release)?;
    Ok(IjbcCounts {
        images: crops.len(),
        rows: rows.len(),
        templates: n,
        pairs: release.pairs.len(),
        genuine: release.pairs.iter().filter(|x| x.2).count(),
    })
}

/// Every subject's media (stills, and videos of 2–3 frames of one shot): the distinct frames,
/// and each subject's pool of media over them.
fn media(p: &SyntheticFacesParams, r: &mut ChaCha8Rng) -> (Vec<Frame>, Vec<Pool>) {
    let s0 = p.identities as u64 + p.verification_identities as u64;
    let mut frames: Vec<Frame> = Vec::new();
    let mut pools: Vec<Pool> = Vec::new();
    let mut mid = 0u64;
    for s in 0..p.ijbc_subjects as u64 {
        let mut pool = Vec::new();
        for _ in 0..p.ijbc_media_per_subject {
            mid += r.gen_range(1..500);
            let shot: u64 = r.gen();
            // A video media has several frames of the same shot.
            let count = if r.gen_bool(0.35) {
                r.gen_range(2..=3)
            } else {
                1
            };
            pool.push((mid, frames.len(), count));
            for f in 0..count {
                frames.push(Frame {
                    identity: s0 + s,
                    shot,
                    frame: (count > 1).then(|| seed_of(&[shot, f as u64])),
                });
            }
        }
        pools.push(pool);
    }
    (frames, pools)
}

/// The templates, each 1–3 media of its subject's pool: (template id, subject) per template,
/// and the release's rows.
fn templates(
    p: &SyntheticFacesParams,
    pools: &[Pool],
    r: &mut ChaCha8Rng,
) -> (Vec<(u64, u64)>, Vec<Row>) {
    let mut template_subject: Vec<(u64, u64)> = Vec::new();
    let mut rows: Vec<Row> = Vec::new();
    let mut tid = 0u64;
    for (s, pool) in pools.iter().enumerate() {
        for _ in 0..p.ijbc_templates_per_subject {
            tid += r.gen_range(1..40);
            template_subject.push((tid, s as u64));
            let k = r.gen_range(1..=pool.len().min(3));
            let mut picked = rand::seq::index::sample(r, pool.len(), k).into_vec();
            picked.sort_unstable();
            for m in picked {
                let (media, first, count) = pool[m];
                rows.extend((first..first + count).map(|f| (f, tid, media)));
            }
        }
    }
    (template_subject, rows)
}

/// Frame `i` as a loose crop (`{i + 1}.jpg`): the face drawn at a random scale, rotation and
/// offset in a larger, random-sized image, with noisy landmarks.
fn loose_crop(ident: &Identity, fr: &Frame, i: usize, size: f32) -> Result<Crop> {
    let mut nz = Nuisance::new(&mut ChaCha8Rng::seed_from_u64(fr.shot));
    if let Some(f) = fr.frame {
        nz = nz.near_duplicate(&mut ChaCha8Rng::seed_from_u64(f));
    }
    let mut cr = rng_of(&[fr.shot, 9, fr.frame.unwrap_or(0)]);
    let cw = (size * cr.gen_range(1.4..2.0)).round();
    let ch = (cw * cr.gen_range(1.0..1.3)).round();
    let k = size / 112.0 * cr.gen_range(0.8..1.15);
    let theta = 0.17 * normal(&mut cr);
    let centre = [
        cw * 0.5 + cw * cr.gen_range(-0.08..0.08),
        ch * 0.5 + ch * cr.gen_range(-0.08..0.08),
    ];
    let (a, b) = (k * theta.cos(), k * theta.sin());
    let face_c = [56.0 + nz.yaw, 62.0];
    let loose = Sim {
        a,
        b,
        tx: centre[0] - (a * face_c[0] - b * face_c[1]),
        ty: centre[1] - (b * face_c[0] + a * face_c[1]),
    };
    let rgb = render(ident, &nz, &loose, cw as usize, ch as usize);
    let jpeg = encode_jpeg(&rgb, cw as usize, ch as usize, nz.quality)?;
    let mut lm = ident.landmarks(nz.yaw);
    for q in &mut lm {
        let t = loose.apply(*q);
        *q = [
            t[0] + 0.4 * k * normal(&mut cr),
            t[1] + 0.4 * k * normal(&mut cr),
        ];
    }
    Ok((format!("{}.jpg", i + 1), jpeg, lm, nz.faceness()))
}
