//! [`Templates`]: IJB template pooling and pair scoring (formats.md §3.3): image features →
//! media mean → template sum → L2 normalisation, then the cosine score of every template pair.
//!
//! The reference loops over templates with `np.where` (O(templates × images)); here the images are
//! sorted once by (template, media, position) and every template is a contiguous run pooled on its
//! own thread. Sums follow the reference's order (media ascending, images in file order, f32
//! accumulation as NumPy's axis-0 reductions do); the template sum is widened to f64 and
//! normalised in f64, as `eval_ijbc.py` stores it in an f64 array and
//! `sklearn.preprocessing.normalize` divides in f64. Scores are f64 dot products (the reference's
//! `np.sum(feat1 * feat2, -1)` on f64 templates: f32 scores would tie pairs closer than ~6e-8)
//! with 16 independent accumulators: the same arithmetic whatever SIMD width the compiler picks,
//! so identical bytes on every x86-64 machine.

use rayon::prelude::*;

/// Pairs scored per parallel task (the reference's batch of 100k pairs, split further for threads).
const SCORE_CHUNK: usize = 16_384;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PoolError {
    #[error("{feats} feature values are not {images} images × {dim}")]
    Shape {
        feats: usize,
        images: usize,
        dim: usize,
    },
    #[error("{templates} template ids but {medias} media ids; each image needs one of each")]
    IdLengths { templates: usize, medias: usize },
    #[error("no images to pool")]
    Empty,
    #[error("pair {pair} (line {line}) names template {template}, which has no image\nhint: the pair list and the face/template/media list must come from the same release")]
    UnknownTemplate {
        pair: usize,
        line: usize,
        template: u64,
    },
    #[error("{left} first templates but {right} second templates in the pair list")]
    PairLengths { left: usize, right: usize },
    #[error("feature of image {image} is not finite")]
    NotFinite { image: usize },
}

/// Pooled, L2-normalised template features (f64), one row per template id in ascending id order.
#[derive(Debug, Clone, PartialEq)]
pub struct Templates {
    pub ids: Vec<u64>,
    pub dim: usize,
    pub feats: Vec<f64>,
    /// Media count per template (for reports).
    pub medias: Vec<u32>,
}

impl Templates {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
    pub fn row(&self, i: usize) -> &[f64] {
        &self.feats[i * self.dim..(i + 1) * self.dim]
    }
    /// Row of template `id`, if it has images.
    pub fn index_of(&self, id: u64) -> Option<usize> {
        self.ids.binary_search(&id).ok()
    }
}

/// Pool image features (`images × dim`, row-major) into templates.
pub fn pool_templates(
    feats: &[f32],
    dim: usize,
    templates: &[u64],
    medias: &[u64],
) -> Result<Templates, PoolError> {
    let n = templates.len();
    if medias.len() != n {
        return Err(PoolError::IdLengths {
            templates: n,
            medias: medias.len(),
        });
    }
    if dim == 0 || feats.len() != n * dim {
        return Err(PoolError::Shape {
            feats: feats.len(),
            images: n,
            dim,
        });
    }
    if n == 0 {
        return Err(PoolError::Empty);
    }
    if let Some(image) = feats
        .par_chunks(dim)
        .position_first(|r| r.iter().any(|v| !v.is_finite()))
    {
        return Err(PoolError::NotFinite { image });
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.par_sort_unstable_by_key(|&i| (templates[i as usize], medias[i as usize], i));
    // Start of each template's run in `order`.
    let mut starts: Vec<usize> = (0..n)
        .filter(|&k| k == 0 || templates[order[k] as usize] != templates[order[k - 1] as usize])
        .collect();
    starts.push(n);
    let ids: Vec<u64> = starts[..starts.len() - 1]
        .iter()
        .map(|&s| templates[order[s] as usize])
        .collect();

    let mut out = vec![0f64; ids.len() * dim];
    let mut media_counts = vec![0u32; ids.len()];
    out.par_chunks_mut(dim)
        .zip(media_counts.par_iter_mut())
        .enumerate()
        .for_each(|(t, (row, mc))| {
            let run = &order[starts[t]..starts[t + 1]];
            let mut acc = vec![0f32; dim];
            let mut media = vec![0f32; dim];
            let mut k = 0;
            while k < run.len() {
                let m = medias[run[k] as usize];
                let mut e = k + 1;
                while e < run.len() && medias[run[e] as usize] == m {
                    e += 1;
                }
                *mc += 1;
                let first = &feats[run[k] as usize * dim..][..dim];
                if e - k == 1 {
                    acc.iter_mut().zip(first).for_each(|(a, &v)| *a += v);
                } else {
                    // np.mean(axis=0) in f32: a running sum over the rows, then one division.
                    media.copy_from_slice(first);
                    for &i in &run[k + 1..e] {
                        media
                            .iter_mut()
                            .zip(&feats[i as usize * dim..][..dim])
                            .for_each(|(a, &v)| *a += v);
                    }
                    let c = (e - k) as f32;
                    acc.iter_mut().zip(&media).for_each(|(a, &v)| *a += v / c);
                }
                k = e;
            }
            let norm = acc.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
            let norm = if norm == 0.0 { 1.0 } else { norm };
            row.iter_mut()
                .zip(&acc)
                .for_each(|(r, &v)| *r = v as f64 / norm);
        });
    Ok(Templates {
        ids,
        dim,
        feats: out,
        medias: media_counts,
    })
}

/// Cosine score of every pair `(p1[k], p2[k])` of template ids; an unknown id is an error naming
/// the pair (line = pair + 1 in the pair list).
pub fn score_pairs(t: &Templates, p1: &[u64], p2: &[u64]) -> Result<Vec<f64>, PoolError> {
    if p1.len() != p2.len() {
        return Err(PoolError::PairLengths {
            left: p1.len(),
            right: p2.len(),
        });
    }
    // Ids are sparse but small in the releases (< 200k for 23k templates): a direct table beats a
    // binary search per pair by an order of magnitude; fall back to the search for huge ids.
    let max_id = t.ids.last().copied().unwrap_or(0);
    let table: Option<Vec<u32>> = (max_id < (64 * t.len() as u64).max(1 << 20)).then(|| {
        let mut tab = vec![u32::MAX; max_id as usize + 1];
        for (i, &id) in t.ids.iter().enumerate() {
            tab[id as usize] = i as u32;
        }
        tab
    });
    let lookup = |id: u64| -> Option<u32> {
        match &table {
            Some(tab) => tab.get(id as usize).copied().filter(|&r| r != u32::MAX),
            None => t.index_of(id).map(|i| i as u32),
        }
    };
    let rows = |ids: &[u64]| -> Result<Vec<u32>, PoolError> {
        let r: Vec<u32> = ids
            .par_iter()
            .map(|&id| lookup(id).unwrap_or(u32::MAX))
            .collect();
        if let Some(pair) = r.iter().position(|&x| x == u32::MAX) {
            return Err(PoolError::UnknownTemplate {
                pair,
                line: pair + 1,
                template: ids[pair],
            });
        }
        Ok(r)
    };
    let (r1, r2) = rayon::join(|| rows(p1), || rows(p2));
    let (r1, r2) = (r1?, r2?);
    let mut scores = vec![0f64; p1.len()];
    if t.len() <= DIRECT_TEMPLATES {
        scores
            .par_chunks_mut(SCORE_CHUNK)
            .enumerate()
            .for_each(|(c, out)| {
                let base = c * SCORE_CHUNK;
                for (k, s) in out.iter_mut().enumerate() {
                    *s = dot(t.row(r1[base + k] as usize), t.row(r2[base + k] as usize));
                }
            });
    } else {
        score_tiled(t, &r1, &r2, &mut scores);
    }
    Ok(scores)
}

/// Up to this many templates (8 MB of 512-d f64 rows) random access stays in cache.
const DIRECT_TEMPLATES: usize = 2048;
/// Rows per tile side: two 128-row blocks of 512-d f64 rows (1 MB) sit in a core's L2.
const TILE_ROWS: usize = 128;

/// Pair scoring for template sets larger than the caches. Random pairs over 23k templates
/// (47 MB) would fetch two rows from DRAM per pair; instead the pairs are bucketed by
/// (row block of the first, row block of the second) with one counting sort, each thread takes one
/// first-row block and walks its tiles in order (so the block stays in L2 while the second
/// blocks stream through once), and the scores are scattered back to pair order at the end.
fn score_tiled(t: &Templates, r1: &[u32], r2: &[u32], scores: &mut [f64]) {
    let nb = t.len().div_ceil(TILE_ROWS);
    let tile = |k: usize| (r1[k] as usize / TILE_ROWS) * nb + r2[k] as usize / TILE_ROWS;
    let mut start = vec![0usize; nb * nb + 1];
    for k in 0..r1.len() {
        start[tile(k) + 1] += 1;
    }
    for i in 0..nb * nb {
        start[i + 1] += start[i];
    }
    // The pair's rows travel with it, so the scoring pass reads memory only in tile order.
    let mut fill = start.clone();
    let mut order = vec![0u32; r1.len()];
    let mut rows = vec![(0u32, 0u32); r1.len()];
    for k in 0..r1.len() {
        let b = tile(k);
        order[fill[b]] = k as u32;
        rows[fill[b]] = (r1[k], r2[k]);
        fill[b] += 1;
    }
    // Split the tile-ordered output at first-block boundaries, one piece per parallel task.
    let mut tmp = vec![0f64; r1.len()];
    type Piece<'a> = (&'a [(u32, u32)], &'a mut [f64]);
    let mut pieces: Vec<Piece> = Vec::with_capacity(nb);
    let (mut rest_r, mut rest_t): Piece = (&rows, &mut tmp);
    for i in 0..nb {
        let len = start[(i + 1) * nb] - start[i * nb];
        let (r, rr) = rest_r.split_at(len);
        let (s, rt) = rest_t.split_at_mut(len);
        pieces.push((r, s));
        rest_r = rr;
        rest_t = rt;
    }
    pieces.into_par_iter().for_each(|(r, s)| {
        for (&(a, b), out) in r.iter().zip(s.iter_mut()) {
            *out = dot(t.row(a as usize), t.row(b as usize));
        }
    });
    for (&k, &v) in order.iter().zip(&tmp) {
        scores[k as usize] = v;
    }
}

/// f64 dot product with 16 lane accumulators, combined in a fixed tree.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above); the function is plain safe Rust.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2(a: &[f64], b: &[f64]) -> f64 {
    use std::arch::x86_64::*;
    // Lanes 0-3 in v[0], 4-7 in v[1], 8-11 in v[2], 12-15 in v[3]: the same 16 accumulators and
    // the same reduction tree as `dot_portable`, with separate multiply and add (no FMA), so both
    // give identical bits.
    let (ca, ra) = a.as_chunks::<16>();
    let (cb, rb) = b.as_chunks::<16>();
    let mut v = [_mm256_setzero_pd(); 4];
    for (x, y) in ca.iter().zip(cb) {
        for (j, acc) in v.iter_mut().enumerate() {
            // SAFETY: each chunk holds 16 f64, so the unaligned 4-lane loads at 4j stay inside it.
            let (xj, yj) = unsafe {
                (
                    _mm256_loadu_pd(x.as_ptr().add(4 * j)),
                    _mm256_loadu_pd(y.as_ptr().add(4 * j)),
                )
            };
            *acc = _mm256_add_pd(*acc, _mm256_mul_pd(xj, yj));
        }
    }
    let mut tail = 0f64;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    // acc[j] += acc[j + 8], then acc[j] += acc[j + 4], acc[j] += acc[j + 2], acc[0] += acc[1].
    let s8 = [_mm256_add_pd(v[0], v[2]), _mm256_add_pd(v[1], v[3])];
    let s4 = _mm256_add_pd(s8[0], s8[1]);
    let s2 = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd::<1>(s4));
    let s1 = _mm_add_sd(s2, _mm_unpackhi_pd(s2, s2));
    _mm_cvtsd_f64(s1) + tail
}

fn dot_portable(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 16];
    let (ca, ra) = a.as_chunks::<16>();
    let (cb, rb) = b.as_chunks::<16>();
    for (x, y) in ca.iter().zip(cb) {
        for j in 0..16 {
            acc[j] += x[j] * y[j];
        }
    }
    let mut tail = 0f64;
    for (x, y) in ra.iter().zip(rb) {
        tail += x * y;
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for j in 0..w {
            acc[j] += acc[j + w];
        }
    }
    acc[0] + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn hand_made_layout() {
        // dim 2. Template 7: media 1 = two frames (mean), media 2 = one still; template 3: one image.
        // Unsorted ids and interleaved rows check the grouping.
        let feats = [
            1.0, 0.0, // t7 m1
            0.0, 3.0, // t3 m5
            3.0, 0.0, // t7 m1
            0.0, 2.0, // t7 m2
        ];
        let t = pool_templates(&feats, 2, &[7, 3, 7, 7], &[1, 5, 1, 2]).unwrap();
        assert_eq!(t.ids, vec![3, 7]);
        assert_eq!(t.medias, vec![1, 2]);
        // t3 = (0, 3) / 3; t7 = mean((1,0),(3,0)) + (0,2) = (2, 2) / sqrt(8).
        let s = 1.0 / 2f64.sqrt();
        assert!(close(t.row(0), &[0.0, 1.0]));
        assert!(close(t.row(1), &[s, s]));
        let scores = score_pairs(&t, &[3, 7, 3], &[7, 7, 3]).unwrap();
        assert!(close(&scores, &[s, 1.0, 1.0]));
    }

    #[test]
    fn media_mean_differs_from_image_sum() {
        // Three frames of one video weigh as much as one still image of another media.
        let feats = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let t = pool_templates(&feats, 2, &[1, 1, 1, 1], &[10, 10, 10, 11]).unwrap();
        let s = 1.0 / 2f64.sqrt();
        assert!(close(t.row(0), &[s, s]));
    }

    #[test]
    fn norm_is_kept_before_pooling() {
        // A high-norm (high-quality) image dominates the template direction.
        let feats = [10.0, 0.0, 0.0, 1.0];
        let t = pool_templates(&feats, 2, &[1, 1], &[1, 2]).unwrap();
        let n = (101f64).sqrt();
        assert!(close(t.row(0), &[10.0 / n, 1.0 / n]));
    }

    #[test]
    fn errors_name_the_problem() {
        let t = pool_templates(&[1.0, 0.0], 2, &[1], &[1]).unwrap();
        let e = score_pairs(&t, &[1, 1, 1], &[1, 2, 1]).unwrap_err();
        assert_eq!(
            e,
            PoolError::UnknownTemplate {
                pair: 1,
                line: 2,
                template: 2
            }
        );
        assert!(e.to_string().contains("template 2"));
        assert!(matches!(
            pool_templates(&[1.0], 2, &[1], &[1]),
            Err(PoolError::Shape { .. })
        ));
        assert!(matches!(
            pool_templates(&[1.0, 2.0], 2, &[1], &[]),
            Err(PoolError::IdLengths { .. })
        ));
        assert!(matches!(
            pool_templates(&[1.0, f32::NAN], 2, &[1], &[1]),
            Err(PoolError::NotFinite { image: 0 })
        ));
        assert!(matches!(
            score_pairs(&t, &[1], &[]),
            Err(PoolError::PairLengths { .. })
        ));
    }

    #[test]
    fn tiled_scoring_equals_direct() {
        // More templates than DIRECT_TEMPLATES takes the tiled path; every score must equal the
        // plain dot product of its two rows, in pair order.
        let (n, dim) = (DIRECT_TEMPLATES + 900, 8);
        let feats: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 2_654_435_761) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let ids: Vec<u64> = (0..n as u64).map(|i| 10 + 3 * i).collect();
        let t = pool_templates(&feats, dim, &ids, &ids).unwrap();
        let p1: Vec<u64> = (0..50_000u64)
            .map(|k| ids[((k * 7919) % n as u64) as usize])
            .collect();
        let p2: Vec<u64> = (0..50_000u64)
            .map(|k| ids[((k * 104_729 + 13) % n as u64) as usize])
            .collect();
        let s = score_pairs(&t, &p1, &p2).unwrap();
        for k in 0..p1.len() {
            let (a, b) = (t.index_of(p1[k]).unwrap(), t.index_of(p2[k]).unwrap());
            assert_eq!(s[k], dot(t.row(a), t.row(b)), "pair {k}");
        }
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f64> = (0..515).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..515).map(|i| (i as f64 * 0.11).cos()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-12);
        assert_eq!(dot(&a, &b).to_bits(), dot_portable(&a, &b).to_bits());
    }

    #[test]
    fn scores_closer_than_f32_resolution_stay_ordered() {
        // Template 1 = (1, 0, 0); 2 = (x, y, 0) and 3 = (x, y, 1e-4) score 0.72570168419 and
        // 0.72570168056 against it: the same f32, so f32 scores would tie them.
        let (x, y) = (0.7257017f32, 0.6880095f32);
        let feats = [1.0, 0.0, 0.0, x, y, 0.0, x, y, 1e-4];
        let t = pool_templates(&feats, 3, &[1, 2, 3], &[1, 2, 3]).unwrap();
        let s = score_pairs(&t, &[1, 1], &[2, 3]).unwrap();
        assert_eq!(s[0] as f32, s[1] as f32, "{s:?}");
        assert!(s[0] > s[1], "{s:?}");
    }
}
