//! The `recordio` kind: index an existing insightface RecordIO folder in place ([`run`]). The
//! published `dataset.json` points at the source `.rec`/`.idx` by absolute path (and records the
//! source's content digest); nothing is copied. The source's location is in the fingerprint
//! (`in_place`), so two pipelines on two copies of one folder never share this output.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::formats::recordio::RecordReader;
use crate::invocation::Progress;
use crate::kinds::data::RecordioParams;

/// Find the `.rec`/`.idx` pair in `source`: `train.rec` + `train.idx`, or the only `.rec` there.
pub fn find_pair(source: &Path) -> Result<(PathBuf, PathBuf)> {
    let rec = source.join("train.rec");
    let (rec, idx) = if rec.is_file() {
        (rec, source.join("train.idx"))
    } else {
        let recs: Vec<PathBuf> = std::fs::read_dir(source)
            .with_context(|| format!("cannot list {}", source.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "rec"))
            .collect();
        match recs.as_slice() {
            [one] => (one.clone(), one.with_extension("idx")),
            [] => bail!("{}: no train.rec (or other .rec file) here\nhint: `source` must be an insightface RecordIO folder such as faces_webface_112x112", source.display()),
            _ => bail!("{}: several .rec files and no train.rec; rename the one to use to train.rec", source.display()),
        }
    };
    if !idx.is_file() {
        bail!(
            "{}: missing index {}\nhint: the .idx (key<TAB>offset per record) must sit next to the .rec",
            source.display(),
            idx.display()
        );
    }
    Ok((rec, idx))
}

/// Index `source` in place into `train`. `source_digest` (the engine's content digest of the
/// folder) goes into `dataset.json`: the source's path is there too, and the fingerprint holds
/// both its location and its content, so the output never refers to another pipeline's folder.
/// With `verify_images`, records of the `.rec` that the `.idx` does not list are reported: a
/// warning on stderr and in the progress view (or an error with `strict`), their count and first
/// keys in the metrics.
pub fn run(
    p: &RecordioParams,
    source: &Path,
    train: &Path,
    source_digest: Option<&str>,
    progress: &Progress,
) -> Result<serde_json::Value> {
    let source = source
        .canonicalize()
        .with_context(|| format!("cannot open source folder {}", source.display()))?;
    let (rec, idx) = find_pair(&source)?;
    let unindexed = if p.verify_images {
        let missing = RecordReader::open(&rec, Some(&idx))?.unindexed()?;
        if !missing.is_empty() {
            let msg = unindexed_message(&rec, &idx, &missing);
            if p.strict {
                bail!("{msg}\nhint: rebuild the .idx from the .rec (every record listed), or drop `strict` to use the listed records only");
            }
            eprintln!("warning: {msg}");
            progress.message(&format!("warning: {msg}"));
        }
        Some(missing)
    } else {
        None
    };
    std::fs::create_dir_all(train)?;
    let property = source.join("property");
    let mut meta =
        crate::data::dataset::publish(train, &rec, &idx, Some(&property), p.verify_images)?;
    if let Some(d) = source_digest {
        meta.source_digest = Some(d.to_string());
        crate::data::dataset::write_meta(train, &meta)?;
    }
    if property.is_file() {
        std::fs::copy(&property, train.join("property"))?;
    }
    Ok(json!({
        "images": meta.n,
        "classes": meta.c,
        "height": meta.height,
        "width": meta.width,
        "layout": meta.layout,
        "verified_images": p.verify_images,
        "records_not_in_idx": unindexed.as_ref().map(Vec::len),
        "keys_not_in_idx": unindexed.map(|m| m.iter().take(20).map(|&(k, _)| k).collect::<Vec<_>>()),
    }))
}

fn unindexed_message(rec: &Path, idx: &Path, missing: &[(u64, u64)]) -> String {
    let shown: Vec<String> = missing
        .iter()
        .take(5)
        .map(|(k, o)| format!("key {k} at byte {o}"))
        .collect();
    format!(
        "{}: {} record(s) are not listed in {} and are not part of the dataset ({}{})",
        rec.display(),
        missing.len(),
        idx.display(),
        shown.join(", "),
        if missing.len() > 5 { ", ..." } else { "" }
    )
}
