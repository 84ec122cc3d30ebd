//! IJB-B / IJB-C release files (formats.md §3.1): [`IjbRelease`] read by [`read_release`] from
//! `meta/<t>_face_tid_mid.txt`, `meta/<t>_template_pair_label.txt`, `meta/<t>_name_5pts_score.txt`
//! and `loose_crop/<img>`, and written by [`write_release`]. Errors name `file:line`.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// One IJB release, rows in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct IjbRelease {
    /// Image file names under `loose_crop/` (e.g. `1.jpg`).
    pub images: Vec<String>,
    /// Template id of each image.
    pub templates: Vec<u64>,
    /// Media id of each image (video frames share one).
    pub media: Vec<u64>,
    /// Five (x, y) landmarks per image, absolute pixels in the loose crop: left eye, right eye,
    /// nose, left mouth corner, right mouth corner.
    pub landmarks: Vec<[[f32; 2]; 5]>,
    /// Detector (faceness) score of each image.
    pub scores: Vec<f32>,
    /// (template 1, template 2, genuine) rows of the 1:1 protocol.
    pub pairs: Vec<(u64, u64, bool)>,
}

/// File-name prefix of a target: `IJBC` → `ijbc`.
fn prefix(target: &str) -> Result<String> {
    match target {
        "IJBC" | "IJBB" => Ok(target.to_lowercase()),
        other => bail!("unknown IJB target {other:?}\nhint: use IJBC or IJBB"),
    }
}

pub fn meta_paths(root: &Path, target: &str) -> Result<[PathBuf; 3]> {
    let p = prefix(target)?;
    let meta = root.join("meta");
    Ok([
        meta.join(format!("{p}_face_tid_mid.txt")),
        meta.join(format!("{p}_template_pair_label.txt")),
        meta.join(format!("{p}_name_5pts_score.txt")),
    ])
}

/// Path of a loose crop.
pub fn image_path(root: &Path, name: &str) -> PathBuf {
    root.join("loose_crop").join(name)
}

/// Read the encoded bytes of a loose crop; a missing file names the meta line that lists it.
pub fn read_image(
    root: &Path,
    release: &IjbRelease,
    index: usize,
    target: &str,
) -> Result<Vec<u8>> {
    let name = release
        .images
        .get(index)
        .ok_or_else(|| anyhow!("image index {index} out of range"))?;
    let path = image_path(root, name);
    std::fs::read(&path).map_err(|e| {
        let meta = meta_paths(root, target).map(|m| m[0].display().to_string()).unwrap_or_default();
        anyhow!("{}: cannot read image listed at {meta}:{}: {e}\nhint: the loose_crop/ folder is incomplete", path.display(), index + 1)
    })
}

fn read_lines(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Split `line` on spaces and check the value count.
fn fields<'a>(
    path: &Path,
    no: usize,
    line: &'a str,
    want: usize,
    what: &str,
) -> Result<Vec<&'a str>> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != want {
        bail!(
            "{}:{no}: expected {want} values ({what}), got {}: {line:?}",
            path.display(),
            f.len()
        );
    }
    Ok(f)
}

fn num<T: std::str::FromStr>(path: &Path, no: usize, s: &str, what: &str) -> Result<T> {
    s.parse()
        .map_err(|_| anyhow!("{}:{no}: {what} {s:?} is not a number", path.display()))
}

/// The non-blank lines of `text`, with their 1-based line numbers.
fn numbered(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l))
}

/// Read the release under `root` (the folder holding `meta/` and `loose_crop/`). With
/// `check_images`, every listed loose crop must exist.
pub fn read_release(root: &Path, target: &str, check_images: bool) -> Result<IjbRelease> {
    let [tid_mid, pairs_path, pts] = meta_paths(root, target)?;
    let mut r = IjbRelease::default();
    read_tid_mid(&mut r, &tid_mid)?;
    read_landmarks(&mut r, &pts, &tid_mid)?;
    read_pairs(&mut r, &pairs_path, &tid_mid)?;
    if check_images {
        for (i, name) in r.images.iter().enumerate() {
            if !image_path(root, name).is_file() {
                bail!(
                    "{}:{}: image {} is missing\nhint: the loose_crop/ folder is incomplete",
                    tid_mid.display(),
                    i + 1,
                    image_path(root, name).display()
                );
            }
        }
    }
    Ok(r)
}

/// The image list: each image with its template and media.
fn read_tid_mid(r: &mut IjbRelease, tid_mid: &Path) -> Result<()> {
    for (no, line) in numbered(&read_lines(tid_mid)?) {
        let f = fields(tid_mid, no, line, 3, "image template_id media_id")?;
        r.images.push(f[0].to_string());
        r.templates.push(num(tid_mid, no, f[1], "template id")?);
        r.media.push(num(tid_mid, no, f[2], "media id")?);
    }
    Ok(())
}

/// The landmarks and detector score of each image, one line per image of `tid_mid`, in its
/// order.
fn read_landmarks(r: &mut IjbRelease, pts: &Path, tid_mid: &Path) -> Result<()> {
    let mut row = 0usize;
    for (no, line) in numbered(&read_lines(pts)?) {
        let f = fields(pts, no, line, 12, "image x1 y1 ... x5 y5 score")?;
        match r.images.get(row) {
            Some(name) if name == f[0] => {}
            Some(name) => bail!(
                "{}:{}: image {:?} but line {} of {} lists {name:?}\nhint: both files list the images in the same order",
                pts.display(),
                no,
                f[0],
                row + 1,
                tid_mid.display()
            ),
            None => bail!("{}:{}: more lines than the {} images of {}", pts.display(), no, r.images.len(), tid_mid.display()),
        }
        let mut lm = [[0f32; 2]; 5];
        for k in 0..10 {
            lm[k / 2][k % 2] = num(pts, no, f[1 + k], "coordinate")?;
        }
        r.landmarks.push(lm);
        r.scores.push(num(pts, no, f[11], "score")?);
        row += 1;
    }
    if row != r.images.len() {
        bail!(
            "{}: {row} lines but {} lists {} images",
            pts.display(),
            tid_mid.display(),
            r.images.len()
        );
    }
    Ok(())
}

/// The template pairs with their labels (1: same subject); both templates must be in
/// `tid_mid`.
fn read_pairs(r: &mut IjbRelease, pairs_path: &Path, tid_mid: &Path) -> Result<()> {
    let known: HashSet<u64> = r.templates.iter().copied().collect();
    for (no, line) in numbered(&read_lines(pairs_path)?) {
        let f = fields(pairs_path, no, line, 3, "template_id1 template_id2 label")?;
        let t1: u64 = num(pairs_path, no, f[0], "template id")?;
        let t2: u64 = num(pairs_path, no, f[1], "template id")?;
        for t in [t1, t2] {
            if !known.contains(&t) {
                bail!(
                    "{}:{}: template {t} is not in {}\nhint: the pair file belongs to another release",
                    pairs_path.display(),
                    no,
                    tid_mid.display()
                );
            }
        }
        let label = match f[2] {
            "0" => false,
            "1" => true,
            other => bail!(
                "{}:{}: label {other:?} must be 0 or 1",
                pairs_path.display(),
                no
            ),
        };
        r.pairs.push((t1, t2, label));
    }
    Ok(())
}

/// Write the three meta files (loose crops are written by the caller with [`image_path`]).
pub fn write_release(root: &Path, target: &str, r: &IjbRelease) -> Result<()> {
    let n = r.images.len();
    if [
        r.templates.len(),
        r.media.len(),
        r.landmarks.len(),
        r.scores.len(),
    ]
    .iter()
    .any(|&l| l != n)
    {
        bail!("write_release: images, templates, media, landmarks and scores must have the same length");
    }
    let [tid_mid, pairs, pts] = meta_paths(root, target)?;
    std::fs::create_dir_all(root.join("meta"))?;
    std::fs::create_dir_all(root.join("loose_crop"))?;
    let mut a = String::new();
    let mut c = String::new();
    for i in 0..n {
        writeln!(a, "{} {} {}", r.images[i], r.templates[i], r.media[i])?;
        write!(c, "{}", r.images[i])?;
        for p in &r.landmarks[i] {
            write!(c, " {:.3} {:.3}", p[0], p[1])?;
        }
        writeln!(c, " {:.6}", r.scores[i])?;
    }
    let mut b = String::new();
    for &(t1, t2, l) in &r.pairs {
        writeln!(b, "{t1} {t2} {}", l as u8)?;
    }
    for (p, s) in [(&tid_mid, a), (&pairs, b), (&pts, c)] {
        std::fs::write(p, s).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> IjbRelease {
        IjbRelease {
            images: vec!["1.jpg".into(), "2.jpg".into(), "3.jpg".into()],
            templates: vec![5, 5, 9],
            media: vec![100, 100, 7],
            landmarks: vec![[[1.5, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0], [9.0, 10.25]]; 3],
            scores: vec![0.9, 0.5, 1.0],
            pairs: vec![(5, 9, false), (5, 5, true)],
        }
    }

    #[test]
    fn round_trip_and_errors() {
        let d = tempfile::tempdir().unwrap();
        let r = sample();
        write_release(d.path(), "IJBC", &r).unwrap();
        for name in &r.images {
            std::fs::write(image_path(d.path(), name), b"jpg").unwrap();
        }
        assert_eq!(read_release(d.path(), "IJBC", true).unwrap(), r);
        assert!(d.path().join("meta/ijbc_face_tid_mid.txt").is_file());
        assert_eq!(
            std::fs::read_to_string(d.path().join("meta/ijbc_template_pair_label.txt")).unwrap(),
            "5 9 0\n5 5 1\n"
        );

        std::fs::remove_file(image_path(d.path(), "2.jpg")).unwrap();
        let e = read_release(d.path(), "IJBC", true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ijbc_face_tid_mid.txt:2: image") && e.contains("is missing"),
            "{e}"
        );
        let e = read_image(d.path(), &r, 1, "IJBC").unwrap_err().to_string();
        assert!(e.contains("ijbc_face_tid_mid.txt:2"), "{e}");

        std::fs::write(
            d.path().join("meta/ijbc_template_pair_label.txt"),
            "5 9 0\n5 12 1\n",
        )
        .unwrap();
        let e = read_release(d.path(), "IJBC", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ijbc_template_pair_label.txt:2: template 12 is not in"),
            "{e}"
        );

        std::fs::write(
            d.path().join("meta/ijbc_face_tid_mid.txt"),
            "1.jpg 5 100\n2.jpg 5\n3.jpg 9 7\n",
        )
        .unwrap();
        let e = read_release(d.path(), "IJBC", false)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ijbc_face_tid_mid.txt:2: expected 3 values"),
            "{e}"
        );

        let e = read_release(d.path(), "IJBX", false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown IJB target"), "{e}");
    }
}
