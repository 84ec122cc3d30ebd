//! [`Dataset`]: the `train/` folder contract every dataset kind publishes (diffprob.md §2.1) and
//! random access to its images.
//!
//! The folder holds `dataset.json` ([`DatasetMeta`]: N, C, image size, layout, where the `.rec` and
//! `.idx` are, the record key of every position), `labels.npy` (`<i8`, N), `label_dict.json`
//! (identity → ascending positions) and, except for the in-place `recordio` kind, the RecordIO files
//! themselves. [`publish`] writes those files from a RecordIO pair; [`Dataset::open`] reads them back.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::decode::decode_rgb;
use crate::formats::npy;
use crate::formats::recordio::{self, FaceIndex, Layout, RecordReader};

/// Bumped when the shape of `dataset.json` changes incompatibly.
pub const DATASET_FORMAT_VERSION: u32 = 1;

/// The content of `dataset.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DatasetMeta {
    pub version: u32,
    /// Images (positions 0..n).
    pub n: usize,
    /// Classes (identities); labels are in 0..c.
    pub c: usize,
    pub height: u32,
    pub width: u32,
    pub layout: Layout,
    /// `.rec` path: relative to the folder (a packed dataset) or absolute (read in place).
    pub rec: PathBuf,
    pub idx: PathBuf,
    /// RecordIO key of each position.
    pub keys: Vec<u64>,
    /// Content digest of the folder read in place (the `recordio` kind), as the engine hashed
    /// it: a change of the data there changes this file, so every stage downstream sees it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_digest: Option<String>,
}

/// Index a RecordIO pair and write the dataset files into `train_dir`. `rec`/`idx` are stored in
/// `dataset.json` as given (relative to `train_dir` or absolute). With `verify_images` every
/// record is decoded and checked against the image size.
pub fn publish(
    train_dir: &Path,
    rec: &Path,
    idx: &Path,
    property: Option<&Path>,
    verify_images: bool,
) -> Result<DatasetMeta> {
    let rec_abs = train_dir.join(rec);
    let idx_abs = train_dir.join(idx);
    let reader = RecordReader::open(&rec_abs, Some(&idx_abs))?;
    let prop = match property {
        Some(p) if p.exists() => Some(recordio::read_property(p)?),
        _ => None,
    };
    let index = FaceIndex::build(&reader, prop.map(|p| p.0))?;
    if index.keys.is_empty() {
        bail!("{}: the dataset has no image records", rec_abs.display());
    }
    let mut buf = Vec::new();
    let first = reader.read_at(index.offsets[0])?;
    let rec_ref = &rec_abs;
    let what = |k: u64| move || format!("{} key {k}", rec_ref.display());
    let (h, w) = decode_rgb(
        recordio::unpack(&first, &what(index.keys[0]))?.payload,
        &mut buf,
        &what(index.keys[0]),
    )?;
    if let Some((_, ph, pw)) = prop {
        if (ph, pw) != (h, w) {
            bail!(
                "{}: property says {ph}x{pw} but key {} decodes to {h}x{w}\nhint: fix the `property` file (C,H,W)",
                property.map(|p| p.display().to_string()).unwrap_or_default(),
                index.keys[0]
            );
        }
    }
    if verify_images {
        for (i, (&k, &off)) in index.keys.iter().zip(&index.offsets).enumerate() {
            let r = reader.read_at(off)?;
            let dims = decode_rgb(recordio::unpack(&r, &what(k))?.payload, &mut buf, &what(k))?;
            if dims != (h, w) {
                bail!(
                    "{} key {k} (position {i}): image is {}x{}, the dataset is {h}x{w}",
                    rec_abs.display(),
                    dims.0,
                    dims.1
                );
            }
        }
    }
    let meta = DatasetMeta {
        version: DATASET_FORMAT_VERSION,
        n: index.keys.len(),
        c: index.num_classes,
        height: h,
        width: w,
        layout: index.layout,
        rec: rec.to_path_buf(),
        idx: idx.to_path_buf(),
        keys: index.keys.clone(),
        source_digest: None,
    };
    std::fs::create_dir_all(train_dir)?;
    write_meta(train_dir, &meta)?;
    npy::write_1d(&train_dir.join("labels.npy"), &index.labels)?;
    write_label_dict(
        &train_dir.join("label_dict.json"),
        &index.labels,
        index.num_classes,
    )?;
    Ok(meta)
}

/// Write `dataset.json` into `train_dir`.
pub fn write_meta(train_dir: &Path, meta: &DatasetMeta) -> Result<()> {
    let path = train_dir.join("dataset.json");
    std::fs::write(&path, serde_json::to_vec(meta)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// `label_dict.json`: every identity 0..c (as a string key) → ascending list of positions.
pub fn write_label_dict(path: &Path, labels: &[i64], c: usize) -> Result<()> {
    let mut dict: BTreeMap<usize, Vec<usize>> = (0..c).map(|k| (k, Vec::new())).collect();
    for (pos, &l) in labels.iter().enumerate() {
        dict.entry(l as usize).or_default().push(pos);
    }
    let obj: serde_json::Map<String, serde_json::Value> = dict
        .into_iter()
        .map(|(k, v)| (k.to_string(), serde_json::json!(v)))
        .collect();
    std::fs::write(path, serde_json::to_vec(&obj)?)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// An opened `train/` folder: metadata, labels and the memory-mapped records.
pub struct Dataset {
    dir: PathBuf,
    meta: DatasetMeta,
    labels: Vec<i64>,
    offsets: Vec<u64>,
    reader: RecordReader,
}

impl Dataset {
    /// Open a `train/` folder published by a dataset kind.
    pub fn open(train_dir: &Path) -> Result<Dataset> {
        let meta_path = train_dir.join("dataset.json");
        let text = std::fs::read_to_string(&meta_path).with_context(|| {
            format!("cannot read {}\nhint: a `train` input must be the `train/` output of a dataset stage", meta_path.display())
        })?;
        let meta: DatasetMeta = serde_json::from_str(&text)
            .map_err(|e| anyhow!("{}: invalid dataset.json: {e}", meta_path.display()))?;
        if meta.version != DATASET_FORMAT_VERSION {
            bail!(
                "{}: dataset format version {} but this build reads {DATASET_FORMAT_VERSION}\nhint: rerun the dataset stage",
                meta_path.display(),
                meta.version
            );
        }
        if meta.keys.len() != meta.n {
            bail!(
                "{}: n = {} but {} keys",
                meta_path.display(),
                meta.n,
                meta.keys.len()
            );
        }
        let labels_path = train_dir.join("labels.npy");
        let labels = npy::read(&labels_path)?.to_i64()?;
        if labels.len() != meta.n {
            bail!(
                "{}: {} labels but dataset.json says n = {}",
                labels_path.display(),
                labels.len(),
                meta.n
            );
        }
        if let Some(p) = labels.iter().position(|&l| l < 0 || l as usize >= meta.c) {
            bail!(
                "{}: position {p} has label {} out of range 0..{}",
                labels_path.display(),
                labels[p],
                meta.c
            );
        }
        let rec = train_dir.join(&meta.rec);
        let idx = train_dir.join(&meta.idx);
        let reader = RecordReader::open(&rec, Some(&idx))?;
        let offsets = meta
            .keys
            .iter()
            .map(|&k| {
                reader.offset_of(k).ok_or_else(|| {
                    anyhow!(
                        "{}: key {k} of dataset.json is not in {}",
                        meta_path.display(),
                        idx.display()
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Dataset {
            dir: train_dir.to_path_buf(),
            meta,
            labels,
            offsets,
            reader,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn meta(&self) -> &DatasetMeta {
        &self.meta
    }

    pub fn len(&self) -> usize {
        self.meta.n
    }

    pub fn is_empty(&self) -> bool {
        self.meta.n == 0
    }

    pub fn num_classes(&self) -> usize {
        self.meta.c
    }

    /// Class of every position.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// (height, width) of every image.
    pub fn image_size(&self) -> (u32, u32) {
        (self.meta.height, self.meta.width)
    }

    /// RecordIO key of a position.
    pub fn key(&self, pos: usize) -> u64 {
        self.meta.keys[pos]
    }

    fn check_pos(&self, pos: usize) -> Result<()> {
        if pos >= self.meta.n {
            bail!(
                "position {pos} out of range: the dataset {} has {} images",
                self.dir.display(),
                self.meta.n
            );
        }
        Ok(())
    }

    /// The whole logical record (IRHeader ‖ labels ‖ JPEG) of a position.
    pub fn record_bytes(&self, pos: usize) -> Result<Cow<'_, [u8]>> {
        self.check_pos(pos)?;
        self.reader.read_at(self.offsets[pos])
    }

    /// Decode the image of `pos` as HWC RGB u8 into `out` (resized to H·W·3).
    pub fn decode_rgb(&self, pos: usize, out: &mut Vec<u8>) -> Result<()> {
        let rec = self.record_bytes(pos)?;
        let key = self.meta.keys[pos];
        let what = || {
            format!(
                "{} key {key} (position {pos})",
                self.reader.path().display()
            )
        };
        let u = recordio::unpack(&rec, &what)?;
        let (h, w) = decode_rgb(u.payload, out, &what)?;
        if (h, w) != self.image_size() {
            bail!(
                "{}: image is {h}x{w}, the dataset is {}x{}",
                what(),
                self.meta.height,
                self.meta.width
            );
        }
        Ok(())
    }

    /// The encoded image (JPEG) of a position, without decoding.
    pub fn payload(&self, pos: usize) -> Result<Cow<'_, [u8]>> {
        let rec = self.record_bytes(pos)?;
        let key = self.meta.keys[pos];
        let what = || {
            format!(
                "{} key {key} (position {pos})",
                self.reader.path().display()
            )
        };
        let start = {
            let u = recordio::unpack(&rec, &what)?;
            rec.len() - u.payload.len()
        };
        Ok(match rec {
            Cow::Borrowed(b) => Cow::Borrowed(&b[start..]),
            Cow::Owned(mut v) => {
                v.drain(..start);
                Cow::Owned(v)
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small JPEG of a flat colour with a gradient, for tests.
    pub(crate) fn jpeg(h: u32, w: u32, seed: u8) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([seed.wrapping_mul(37), (x * 4) as u8, (y * 4) as u8])
        });
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
            .encode_image(&img)
            .unwrap();
        out
    }

    pub(crate) fn tiny_dataset(dir: &Path, per_class: &[usize], h: u32, w: u32) {
        let mut images = Vec::new();
        let mut labels = Vec::new();
        for (c, &k) in per_class.iter().enumerate() {
            for j in 0..k {
                images.push(jpeg(h, w, (c * 10 + j) as u8));
                labels.push(c as i64);
            }
        }
        recordio::write_face_layout(dir, &images, &labels, per_class.len(), (h, w)).unwrap();
        publish(
            dir,
            Path::new("train.rec"),
            Path::new("train.idx"),
            Some(&dir.join("property")),
            true,
        )
        .unwrap();
    }

    #[test]
    fn publish_and_open() {
        let d = tempfile::tempdir().unwrap();
        tiny_dataset(d.path(), &[2, 0, 3], 16, 24);
        let ds = Dataset::open(d.path()).unwrap();
        assert_eq!(ds.len(), 5);
        assert_eq!(ds.num_classes(), 3);
        assert_eq!(ds.labels(), &[0, 0, 2, 2, 2]);
        assert_eq!(ds.image_size(), (16, 24));
        assert_eq!(ds.meta().keys, vec![1, 2, 3, 4, 5]);
        let mut buf = Vec::new();
        ds.decode_rgb(3, &mut buf).unwrap();
        assert_eq!(buf.len(), 16 * 24 * 3);
        // Pixel (x=5, y=2): G ≈ 20, B ≈ 8 (lossy JPEG: within a few LSB).
        let px = &buf[(2 * 24 + 5) * 3..][..3];
        assert!(
            (px[1] as i32 - 20).abs() <= 6 && (px[2] as i32 - 8).abs() <= 6,
            "{px:?}"
        );
        let dict: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.path().join("label_dict.json")).unwrap())
                .unwrap();
        assert_eq!(dict["0"], serde_json::json!([0, 1]));
        assert_eq!(dict["1"], serde_json::json!([]));
        assert_eq!(dict["2"], serde_json::json!([2, 3, 4]));
        assert!(ds.payload(0).unwrap().starts_with(&[0xFF, 0xD8]));
        let err = ds.decode_rgb(5, &mut buf).unwrap_err().to_string();
        assert!(err.contains("position 5 out of range"), "{err}");
    }

    #[test]
    fn undecodable_jpeg_is_reported_with_key() {
        let d = tempfile::tempdir().unwrap();
        let mut bad = jpeg(8, 8, 1);
        bad.truncate(30);
        recordio::write_face_layout(d.path(), &[jpeg(8, 8, 0), bad], &[0, 0], 1, (8, 8)).unwrap();
        let err = publish(
            d.path(),
            Path::new("train.rec"),
            Path::new("train.idx"),
            None,
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("train.rec key 2: undecodable JPEG"), "{err}");
        // Without verification the dataset opens, and decoding that position fails with the same message.
        publish(
            d.path(),
            Path::new("train.rec"),
            Path::new("train.idx"),
            None,
            false,
        )
        .unwrap();
        let ds = Dataset::open(d.path()).unwrap();
        let err = ds.decode_rgb(1, &mut Vec::new()).unwrap_err().to_string();
        assert!(
            err.contains("key 2 (position 1): undecodable JPEG"),
            "{err}"
        );
    }
}
