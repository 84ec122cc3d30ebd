//! [`Loader`]: multi-threaded, deterministic mini-batches of normalised CHW f32 images from a
//! [`Dataset`].
//!
//! The epoch order is fixed up front from (seed, epoch), and so is every flip (from seed, epoch,
//! position), so the batches are the same whatever the number of worker threads. Workers take
//! batch numbers in order and may run at most `prefetch` batches ahead of the consumer (a window
//! guarded by a condition variable), so memory stays bounded; the consumer puts finished batches
//! back in order.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::dataset::Dataset;

/// Horizontal flip policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flip {
    None,
    /// Flip with probability 0.5, decided by (seed, epoch, position).
    Random {
        seed: u64,
    },
}

#[derive(Debug, Clone)]
pub struct LoaderConfig {
    /// Full-dataset positions to use (a kept list); `None` = all.
    pub positions: Option<Vec<usize>>,
    /// old class → new class; -1 drops the class (its positions are left out).
    pub label_map: Option<Vec<i64>>,
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    pub epoch: u64,
    pub drop_last: bool,
    pub flip: Flip,
    /// Decoding threads; 0 decodes on the consumer's thread.
    pub workers: usize,
    /// Batches that may be decoded ahead of the consumer.
    pub prefetch: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            positions: None,
            label_map: None,
            batch_size: 128,
            shuffle: false,
            seed: 0,
            epoch: 0,
            drop_last: false,
            flip: Flip::None,
            workers: 2,
            prefetch: 4,
        }
    }
}

/// One mini-batch. `images` is B×3×H×W, CHW per image, values (x/255 − 0.5)/0.5.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Full-dataset positions of the samples.
    pub positions: Vec<usize>,
    /// Labels after the label map.
    pub labels: Vec<i64>,
    pub images: Vec<f32>,
    pub h: usize,
    pub w: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.positions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }
}

/// The epoch plan: sample order and the batches cut from it. Shared by the worker threads.
struct Plan {
    ds: Arc<Dataset>,
    order: Vec<usize>,
    labels: Vec<i64>,
    batch_size: usize,
    num_batches: usize,
    flip: Flip,
    epoch: u64,
}

/// SplitMix64 finaliser: a cheap, well-mixed hash for per-sample decisions.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Whether `pos` is flipped in `epoch` under `flip`.
pub fn flipped(flip: Flip, epoch: u64, pos: usize) -> bool {
    match flip {
        Flip::None => false,
        Flip::Random { seed } => mix(mix(mix(seed) ^ epoch) ^ pos as u64) & 1 == 1,
    }
}

impl Plan {
    fn build_batch(&self, b: usize, rgb: &mut Vec<u8>) -> Result<Batch> {
        let start = b * self.batch_size;
        let end = (start + self.batch_size).min(self.order.len());
        let (h, w) = self.ds.image_size();
        let (h, w) = (h as usize, w as usize);
        let plane = h * w;
        let positions = self.order[start..end].to_vec();
        let labels = self.labels[start..end].to_vec();
        let mut images = vec![0f32; positions.len() * 3 * plane];
        // (x/255 - 0.5)/0.5 as a table: one lookup per byte.
        let lut: [f32; 256] = std::array::from_fn(|x| (x as f32 / 255.0 - 0.5) / 0.5);
        for (i, &pos) in positions.iter().enumerate() {
            self.ds.decode_rgb(pos, rgb)?;
            let dst = &mut images[i * 3 * plane..(i + 1) * 3 * plane];
            let (r, rest) = dst.split_at_mut(plane);
            let (g, bl) = rest.split_at_mut(plane);
            let flip = flipped(self.flip, self.epoch, pos);
            for y in 0..h {
                let src = &rgb[y * w * 3..(y + 1) * w * 3];
                let row = y * w;
                for x in 0..w {
                    let sx = if flip { w - 1 - x } else { x };
                    let p = &src[sx * 3..sx * 3 + 3];
                    r[row + x] = lut[p[0] as usize];
                    g[row + x] = lut[p[1] as usize];
                    bl[row + x] = lut[p[2] as usize];
                }
            }
        }
        Ok(Batch {
            positions,
            labels,
            images,
            h,
            w,
        })
    }
}

struct Window {
    next: usize,
    consumed: usize,
    stop: bool,
}

struct Shared {
    window: Mutex<Window>,
    cv: Condvar,
}

/// The epoch's positions (the kept list or all, less the classes the label map drops, shuffled
/// by (seed, epoch) when asked) and their labels after the map.
fn epoch_order(
    ds: &Dataset,
    positions: Option<Vec<usize>>,
    cfg: &LoaderConfig,
) -> Result<(Vec<usize>, Vec<i64>)> {
    let all = ds.labels();
    let mut order = match positions {
        Some(p) => {
            if let Some(&bad) = p.iter().find(|&&q| q >= ds.len()) {
                bail!(
                    "loader: kept position {bad} is out of range: the dataset has {} images",
                    ds.len()
                );
            }
            p
        }
        None => (0..ds.len()).collect(),
    };
    let new_label = |pos: usize| -> Result<i64> {
        let l = all[pos];
        match &cfg.label_map {
            None => Ok(l),
            Some(m) => m.get(l as usize).copied().ok_or_else(|| {
                anyhow!("loader: the label map has {} entries but position {pos} has class {l}\nhint: the label map must come from this dataset", m.len())
            }),
        }
    };
    // Positions whose class the map drops are left out.
    let mut kept = Vec::with_capacity(order.len());
    for &p in &order {
        if new_label(p)? >= 0 {
            kept.push(p);
        }
    }
    order = kept;
    if cfg.shuffle {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
        rng.set_stream(cfg.epoch);
        order.shuffle(&mut rng);
    }
    let labels = order
        .iter()
        .map(|&p| new_label(p))
        .collect::<Result<Vec<_>>>()?;
    Ok((order, labels))
}

/// A worker thread: take the next batch number while the window (`depth` batches ahead of the
/// consumer) allows, build it and send it; stop at the end of the epoch, on `stop`, or when
/// the consumer is gone.
fn work(plan: &Plan, shared: &Shared, tx: &Sender<(usize, Result<Batch>)>, depth: usize) {
    let mut rgb = Vec::new();
    loop {
        let b = {
            let Ok(mut win) = shared.window.lock() else {
                return;
            };
            while !win.stop && win.next < plan.num_batches && win.next >= win.consumed + depth {
                win = match shared.cv.wait(win) {
                    Ok(w) => w,
                    Err(_) => return,
                };
            }
            if win.stop || win.next >= plan.num_batches {
                return;
            }
            win.next += 1;
            win.next - 1
        };
        if tx.send((b, plan.build_batch(b, &mut rgb))).is_err() {
            return;
        }
    }
}

/// Iterator over the batches of one epoch, in a deterministic order.
pub struct Loader {
    plan: Arc<Plan>,
    cursor: usize,
    shared: Arc<Shared>,
    rx: Option<Receiver<(usize, Result<Batch>)>>,
    pending: BTreeMap<usize, Result<Batch>>,
    threads: Vec<JoinHandle<()>>,
    rgb: Vec<u8>,
}

impl Loader {
    pub fn new(ds: Arc<Dataset>, mut cfg: LoaderConfig) -> Result<Loader> {
        if cfg.batch_size == 0 {
            bail!("loader: batch_size must be at least 1");
        }
        let positions = cfg.positions.take();
        let (order, labels) = epoch_order(&ds, positions, &cfg)?;
        let num_batches = if cfg.drop_last {
            order.len() / cfg.batch_size
        } else {
            order.len().div_ceil(cfg.batch_size)
        };
        let plan = Arc::new(Plan {
            ds,
            order,
            labels,
            batch_size: cfg.batch_size,
            num_batches,
            flip: cfg.flip,
            epoch: cfg.epoch,
        });
        let shared = Arc::new(Shared {
            window: Mutex::new(Window {
                next: 0,
                consumed: 0,
                stop: false,
            }),
            cv: Condvar::new(),
        });
        let mut threads = Vec::new();
        let mut rx = None;
        if cfg.workers > 0 && num_batches > 0 {
            let (tx, r) = channel();
            rx = Some(r);
            let depth = cfg.prefetch.max(1);
            for _ in 0..cfg.workers {
                let (plan, shared, tx) = (plan.clone(), shared.clone(), tx.clone());
                threads.push(std::thread::spawn(move || work(&plan, &shared, &tx, depth)));
            }
        }
        Ok(Loader {
            plan,
            cursor: 0,
            shared,
            rx,
            pending: BTreeMap::new(),
            threads,
            rgb: Vec::new(),
        })
    }

    /// Batches in this epoch.
    pub fn num_batches(&self) -> usize {
        self.plan.num_batches
    }

    /// The epoch's sample order (after the kept list, the label map and the shuffle).
    pub fn order(&self) -> &[usize] {
        &self.plan.order
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.cursor >= self.plan.num_batches {
            return None;
        }
        let b = self.cursor;
        self.cursor += 1;
        let Some(rx) = &self.rx else {
            return Some(self.plan.build_batch(b, &mut self.rgb));
        };
        let out = loop {
            if let Some(r) = self.pending.remove(&b) {
                break r;
            }
            match rx.recv() {
                Ok((i, r)) => {
                    self.pending.insert(i, r);
                }
                Err(_) => {
                    break Err(anyhow!(
                        "loader: the decoding threads stopped before batch {b}"
                    ))
                }
            }
        };
        if let Ok(mut win) = self.shared.window.lock() {
            win.consumed = self.cursor;
        }
        self.shared.cv.notify_all();
        Some(out)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.plan.num_batches - self.cursor;
        (left, Some(left))
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        if let Ok(mut win) = self.shared.window.lock() {
            win.stop = true;
        }
        self.shared.cv.notify_all();
        // Dropping the receiver unblocks a worker stuck in `send`.
        self.rx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::dataset::tests::tiny_dataset;

    fn ds(dir: &std::path::Path) -> Arc<Dataset> {
        tiny_dataset(dir, &[3, 4, 2, 5], 8, 12);
        Arc::new(Dataset::open(dir).unwrap())
    }

    fn collect(ds: &Arc<Dataset>, cfg: LoaderConfig) -> Vec<Batch> {
        Loader::new(ds.clone(), cfg)
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    #[test]
    fn same_batches_for_any_worker_count() {
        let d = tempfile::tempdir().unwrap();
        let ds = ds(d.path());
        let cfg = LoaderConfig {
            batch_size: 3,
            shuffle: true,
            seed: 5,
            epoch: 2,
            flip: Flip::Random { seed: 9 },
            workers: 0,
            prefetch: 1,
            ..Default::default()
        };
        let base = collect(&ds, cfg.clone());
        assert_eq!(base.len(), 5);
        assert_eq!(base.last().unwrap().len(), 2);
        let mut seen: Vec<usize> = base.iter().flat_map(|b| b.positions.clone()).collect();
        seen.sort();
        assert_eq!(seen, (0..14).collect::<Vec<_>>());
        for workers in [1, 2, 5] {
            assert_eq!(
                collect(
                    &ds,
                    LoaderConfig {
                        workers,
                        ..cfg.clone()
                    }
                ),
                base,
                "workers {workers}"
            );
        }
        // Another epoch shuffles differently; the same epoch again is identical.
        let other = collect(
            &ds,
            LoaderConfig {
                epoch: 3,
                ..cfg.clone()
            },
        );
        assert_ne!(
            other
                .iter()
                .map(|b| b.positions.clone())
                .collect::<Vec<_>>(),
            base.iter().map(|b| b.positions.clone()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn images_are_normalised_chw_and_flipped() {
        let d = tempfile::tempdir().unwrap();
        let ds = ds(d.path());
        let mut rgb = Vec::new();
        ds.decode_rgb(4, &mut rgb).unwrap();
        let b = collect(
            &ds,
            LoaderConfig {
                positions: Some(vec![4]),
                batch_size: 1,
                ..Default::default()
            },
        );
        let (h, w) = (8, 12);
        assert_eq!(b[0].images.len(), 3 * h * w);
        let at = |c: usize, y: usize, x: usize| b[0].images[c * h * w + y * w + x];
        assert_eq!(
            at(1, 2, 3),
            (rgb[(2 * w + 3) * 3 + 1] as f32 / 255.0 - 0.5) / 0.5
        );
        assert_eq!(
            at(2, 7, 11),
            (rgb[(7 * w + 11) * 3 + 2] as f32 / 255.0 - 0.5) / 0.5
        );
        // Find a seed that flips position 4 in epoch 0 and check the mirrored pixel.
        let seed = (0..64)
            .find(|&s| flipped(Flip::Random { seed: s }, 0, 4))
            .unwrap();
        let f = collect(
            &ds,
            LoaderConfig {
                positions: Some(vec![4]),
                batch_size: 1,
                flip: Flip::Random { seed },
                ..Default::default()
            },
        );
        assert_eq!(f[0].images[h * w + 2 * w + 3], at(1, 2, w - 1 - 3));
        // About half of the positions flip.
        let n = (0..1000)
            .filter(|&p| flipped(Flip::Random { seed: 1 }, 0, p))
            .count();
        assert!((400..600).contains(&n), "{n}");
    }

    #[test]
    fn kept_list_label_map_and_drop_last() {
        let d = tempfile::tempdir().unwrap();
        let ds = ds(d.path());
        // Classes: 0 = 0..3, 1 = 3..7, 2 = 7..9, 3 = 9..14. Drop class 1, remap 2 -> 1, 3 -> 2.
        let cfg = LoaderConfig {
            positions: Some(vec![0, 3, 4, 8, 10, 13]),
            label_map: Some(vec![0, -1, 1, 2]),
            batch_size: 2,
            drop_last: true,
            ..Default::default()
        };
        let b = collect(&ds, cfg.clone());
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].positions, vec![0, 8]);
        assert_eq!(b[0].labels, vec![0, 1]);
        assert_eq!(b[1].labels, vec![2, 2]);
        let err = Loader::new(
            ds.clone(),
            LoaderConfig {
                positions: Some(vec![14]),
                ..cfg.clone()
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(err.contains("kept position 14 is out of range"), "{err}");
        let err = Loader::new(
            ds.clone(),
            LoaderConfig {
                label_map: Some(vec![0]),
                ..cfg
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("the label map has 1 entries but position 3 has class 1"),
            "{err}"
        );
    }

    #[test]
    fn dropping_a_loader_early_joins_its_threads() {
        let d = tempfile::tempdir().unwrap();
        let ds = ds(d.path());
        let mut l = Loader::new(
            ds,
            LoaderConfig {
                batch_size: 1,
                workers: 3,
                prefetch: 2,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(l.next().unwrap().is_ok());
        drop(l);
    }
}
