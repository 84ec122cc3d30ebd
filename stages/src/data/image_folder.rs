//! The `image-folder` kind ([`run`]): one sub-folder of images per identity (sorted names = class
//! ids) packed into an insightface face-layout RecordIO `train/` folder. JPEGs of the right size are
//! stored as they are; anything else is decoded, resized to `size`×`size` and re-encoded.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use serde_json::json;

use crate::data::decode::{decode_rgb, is_jpeg};
use crate::formats::recordio;
use crate::kinds::data::ImageFolderParams;

const IMAGE_EXT: &[&str] = &["jpg", "jpeg", "png", "bmp"];

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Bytes to store for one image file: the file itself when it is a JPEG of the target size.
fn prepare(path: &Path, p: &ImageFolderParams) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut rgb = Vec::new();
    let what = || path.display().to_string();
    let (h, w) = decode_rgb(&bytes, &mut rgb, &what)?;
    if (h, w) == (p.size, p.size) && is_jpeg(&bytes) {
        return Ok(bytes);
    }
    let img = image::RgbImage::from_raw(w, h, rgb)
        .with_context(|| format!("{}: bad image buffer", path.display()))?;
    let img = if (h, w) == (p.size, p.size) {
        img
    } else {
        image::imageops::resize(&img, p.size, p.size, image::imageops::FilterType::Triangle)
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, p.quality)
        .encode_image(&img)
        .with_context(|| format!("{}: cannot re-encode as JPEG", path.display()))?;
    Ok(out)
}

pub fn run(p: &ImageFolderParams, source: &Path, train: &Path) -> Result<serde_json::Value> {
    let classes: Vec<PathBuf> = sorted_entries(source)?
        .into_iter()
        .filter(|d| d.is_dir())
        .collect();
    if classes.is_empty() {
        bail!(
            "{}: no identity sub-folders\nhint: put each identity's images in its own sub-folder",
            source.display()
        );
    }
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut empty = Vec::new();
    for (c, dir) in classes.iter().enumerate() {
        let imgs: Vec<PathBuf> = sorted_entries(dir)?
            .into_iter()
            .filter(|f| {
                f.is_file()
                    && f.extension().is_some_and(|x| {
                        IMAGE_EXT.contains(&x.to_string_lossy().to_lowercase().as_str())
                    })
            })
            .collect();
        if imgs.is_empty() {
            empty.push(
                dir.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default(),
            );
        }
        labels.extend(std::iter::repeat_n(c as i64, imgs.len()));
        files.extend(imgs);
    }
    if files.is_empty() {
        bail!(
            "{}: the identity sub-folders hold no images ({})",
            source.display(),
            IMAGE_EXT.join(", ")
        );
    }
    let images = files
        .par_iter()
        .map(|f| prepare(f, p))
        .collect::<Result<Vec<_>>>()?;
    recordio::write_face_layout(train, &images, &labels, classes.len(), (p.size, p.size))?;
    let meta = crate::data::dataset::publish(
        train,
        Path::new("train.rec"),
        Path::new("train.idx"),
        Some(&train.join("property")),
        false,
    )?;
    let names: Vec<String> = classes
        .iter()
        .map(|d| {
            d.file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default()
        })
        .collect();
    std::fs::write(train.join("class_names.json"), serde_json::to_vec(&names)?)?;
    Ok(json!({"images": meta.n, "classes": meta.c, "empty_identities": empty, "size": p.size}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_sorted_folders_and_resizes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        for (name, n, side) in [("bob", 2, 20u32), ("alice", 1, 16)] {
            std::fs::create_dir_all(src.join(name)).unwrap();
            for i in 0..n {
                let img =
                    image::RgbImage::from_pixel(side, side, image::Rgb([i as u8 * 50, 100, 200]));
                img.save(src.join(name).join(format!("{i}.png"))).unwrap();
            }
        }
        let train = d.path().join("train");
        let m = run(
            &ImageFolderParams {
                size: 16,
                quality: 90,
            },
            &src,
            &train,
        )
        .unwrap();
        assert_eq!(m["images"], 3);
        let ds = crate::data::dataset::Dataset::open(&train).unwrap();
        assert_eq!(ds.labels(), &[0, 1, 1], "alice < bob");
        assert_eq!(ds.image_size(), (16, 16));
        let mut buf = Vec::new();
        ds.decode_rgb(2, &mut buf).unwrap();
        assert!(
            (buf[0] as i32 - 50).abs() < 8 && (buf[2] as i32 - 200).abs() < 8,
            "{:?}",
            &buf[..3]
        );

        std::fs::write(src.join("bob").join("2.jpg"), b"not a jpeg").unwrap();
        let e = run(
            &ImageFolderParams {
                size: 16,
                quality: 90,
            },
            &src,
            &d.path().join("t2"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bob/2.jpg: undecodable"), "{e}");
    }
}
