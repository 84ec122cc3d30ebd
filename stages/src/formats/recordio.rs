//! MXNet/dmlc RecordIO (formats.md §1): [`RecordReader`] (mmap'd `.rec` + parsed `.idx`, multi-part
//! records, sequential scan without an index), [`RecordWriter`] (the dmlc split rule, padding, the
//! `.idx` lines), the [`IrHeader`] with scalar or array labels, and [`FaceIndex`], which maps the
//! insightface face layout (header record or `.idx` order) to positions, keys and labels.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// Current dmlc magic (bytes on disk `0A 23 D7 CE`).
pub const MAGIC: u32 = 0xCED7_230A;
const MAGIC_BYTES: [u8; 4] = MAGIC.to_le_bytes();
const LEN_MASK: u32 = (1 << 29) - 1;
/// Size of the packed IRHeader: u32 flag, f32 label, u64 id, u64 id2.
pub const IR_HEADER_LEN: usize = 24;

/// The 24-byte header `mx.recordio.pack` puts in front of every record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IrHeader {
    /// 0 = scalar label in `label`; n > 0 = n f32 labels follow the header.
    pub flag: u32,
    pub label: f32,
    pub id: u64,
    pub id2: u64,
}

/// A logical record split into header, labels and payload (an encoded image, or empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Unpacked<'a> {
    pub header: IrHeader,
    /// The array labels (flag > 0), or the scalar label alone (flag 0).
    pub labels: Vec<f32>,
    pub payload: &'a [u8],
}

impl Unpacked<'_> {
    /// The class label: the scalar, or the first element of an array label.
    pub fn first_label(&self) -> Option<f32> {
        self.labels.first().copied()
    }
}

/// `mx.recordio.pack`: header ‖ f32 labels (when more than one is given or `array` is set) ‖ payload.
pub fn pack(id: u64, labels: &[f32], array: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(IR_HEADER_LEN + 4 * labels.len() + payload.len());
    let (flag, scalar) = if array || labels.len() != 1 {
        (labels.len() as u32, 0.0f32)
    } else {
        (0, labels[0])
    };
    out.extend_from_slice(&flag.to_le_bytes());
    out.extend_from_slice(&scalar.to_le_bytes());
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&0u64.to_le_bytes());
    if flag > 0 {
        for l in labels {
            out.extend_from_slice(&l.to_le_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

/// `mx.recordio.unpack`. `what` names the record in errors (file and key).
pub fn unpack<'a>(rec: &'a [u8], what: &dyn Fn() -> String) -> Result<Unpacked<'a>> {
    if rec.len() < IR_HEADER_LEN {
        bail!(
            "{}: record of {} bytes is shorter than the 24-byte IRHeader",
            what(),
            rec.len()
        );
    }
    let u32_at = |o: usize| u32::from_le_bytes([rec[o], rec[o + 1], rec[o + 2], rec[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&rec[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let header = IrHeader {
        flag: u32_at(0),
        label: f32::from_bits(u32_at(4)),
        id: u64_at(8),
        id2: u64_at(16),
    };
    if header.flag == 0 {
        return Ok(Unpacked {
            header,
            labels: vec![header.label],
            payload: &rec[IR_HEADER_LEN..],
        });
    }
    let n = header.flag as usize;
    let end = n.checked_mul(4).and_then(|b| b.checked_add(IR_HEADER_LEN));
    match end {
        Some(end) if end <= rec.len() => {
            let labels = (0..n).map(|i| f32::from_bits(u32_at(IR_HEADER_LEN + 4 * i))).collect();
            Ok(Unpacked { header, labels, payload: &rec[end..] })
        }
        _ => bail!(
            "{}: IRHeader flag {} announces {} f32 labels but the record has only {} bytes\nhint: the file is truncated or not an insightface RecordIO",
            what(),
            header.flag,
            n,
            rec.len()
        ),
    }
}

/// Read the logical record whose first part starts at `offset` in `data`. Returns the record
/// (borrowed when it is a single part) and the offset just past its last part.
pub fn read_record_at<'a>(
    data: &'a [u8],
    offset: usize,
    file: &Path,
) -> Result<(Cow<'a, [u8]>, usize)> {
    let mut pos = offset;
    let mut assembled: Option<Vec<u8>> = None;
    loop {
        if pos + 8 > data.len() {
            bail!(
                "{}: truncated record at byte offset {pos}: {} bytes left, a part header needs 8\nhint: the .rec file is incomplete (interrupted copy?)",
                file.display(),
                data.len().saturating_sub(pos)
            );
        }
        let magic = u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]);
        if magic != MAGIC {
            bail!(
                "{}: bad magic 0x{magic:08X} at byte offset {pos} (expected 0x{MAGIC:08X})\nhint: the .idx does not belong to this .rec, or the file is corrupt",
                file.display()
            );
        }
        let lrec = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let cflag = lrec >> 29;
        let len = (lrec & LEN_MASK) as usize;
        let start = pos + 8;
        if start + len > data.len() {
            bail!(
                "{}: truncated record at byte offset {pos}: the part announces {len} bytes, only {} remain\nhint: the .rec file is incomplete (interrupted copy?)",
                file.display(),
                data.len() - start
            );
        }
        let part = &data[start..start + len];
        let next = start + len + (4 - len % 4) % 4;
        match (cflag, assembled.as_mut()) {
            (0, None) => return Ok((Cow::Borrowed(part), next.min(data.len()))),
            (1, None) => {
                let mut v = part.to_vec();
                v.extend_from_slice(&MAGIC_BYTES);
                assembled = Some(v);
            }
            (2, Some(v)) => {
                v.extend_from_slice(part);
                v.extend_from_slice(&MAGIC_BYTES);
            }
            (3, Some(v)) => {
                v.extend_from_slice(part);
                return Ok((Cow::Owned(std::mem::take(v)), next.min(data.len())));
            }
            _ => bail!(
                "{}: unexpected part flag {cflag} at byte offset {pos} (record started at {offset})\nhint: the .idx offset points into the middle of a multi-part record, or the file is corrupt",
                file.display()
            ),
        }
        pos = next;
    }
}

/// Append the parts of one logical record to `out` with the dmlc split rule; returns the bytes written.
pub fn write_record<W: Write>(out: &mut W, buf: &[u8]) -> std::io::Result<u64> {
    let mut written = 0u64;
    let mut emit = |out: &mut W, cflag: u32, data: &[u8]| -> std::io::Result<()> {
        let lrec = (cflag << 29) | data.len() as u32;
        out.write_all(&MAGIC_BYTES)?;
        out.write_all(&lrec.to_le_bytes())?;
        out.write_all(data)?;
        let pad = (4 - data.len() % 4) % 4;
        out.write_all(&[0u8; 3][..pad])?;
        written += 8 + data.len() as u64 + pad as u64;
        Ok(())
    };
    let mut dptr = 0usize;
    let aligned = buf.len() / 4 * 4;
    let mut i = 0;
    while i < aligned {
        if buf[i..i + 4] == MAGIC_BYTES {
            emit(out, if dptr == 0 { 1 } else { 2 }, &buf[dptr..i])?;
            dptr = i + 4;
        }
        i += 4;
    }
    emit(out, if dptr != 0 { 3 } else { 0 }, &buf[dptr..])?;
    Ok(written)
}

/// Writes a `.rec` and its `.idx` (one `"{key}\t{offset}\n"` line per record, in write order).
pub struct RecordWriter {
    rec_path: PathBuf,
    rec: BufWriter<File>,
    idx: BufWriter<File>,
    pos: u64,
}

impl RecordWriter {
    pub fn create(rec_path: &Path, idx_path: &Path) -> Result<Self> {
        let rec = File::create(rec_path)
            .with_context(|| format!("cannot create {}", rec_path.display()))?;
        let idx = File::create(idx_path)
            .with_context(|| format!("cannot create {}", idx_path.display()))?;
        Ok(RecordWriter {
            rec_path: rec_path.to_path_buf(),
            rec: BufWriter::with_capacity(1 << 20, rec),
            idx: BufWriter::new(idx),
            pos: 0,
        })
    }

    /// Write one logical record (already packed) under `key`.
    pub fn write(&mut self, key: u64, record: &[u8]) -> Result<()> {
        let n = write_record(&mut self.rec, record)
            .with_context(|| format!("writing {}", self.rec_path.display()))?;
        writeln!(self.idx, "{key}\t{}", self.pos)?;
        self.pos += n;
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        self.rec
            .flush()
            .with_context(|| format!("writing {}", self.rec_path.display()))?;
        self.idx.flush()?;
        Ok(())
    }
}

/// Write a complete insightface face-layout dataset: images as keys 1..N (flag 0, scalar label),
/// key 0 = [N+1, N+1+C], identity records [start, end), and `property` = `"{C},{H},{W}\n"`.
/// `images` must be in ascending class order; `labels[i]` is the class of image i.
pub fn write_face_layout(
    dir: &Path,
    images: &[Vec<u8>],
    labels: &[i64],
    num_classes: usize,
    (height, width): (u32, u32),
) -> Result<()> {
    if images.len() != labels.len() {
        bail!(
            "write_face_layout: {} images but {} labels",
            images.len(),
            labels.len()
        );
    }
    if labels.windows(2).any(|w| w[1] < w[0]) {
        bail!("write_face_layout: labels must be in ascending class order");
    }
    if let Some(&l) = labels.iter().find(|&&l| l < 0 || l as usize >= num_classes) {
        bail!("write_face_layout: label {l} out of range 0..{num_classes}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut w = RecordWriter::create(&dir.join("train.rec"), &dir.join("train.idx"))?;
    let n = images.len() as u64;
    for (i, (img, &l)) in images.iter().zip(labels).enumerate() {
        let key = i as u64 + 1;
        w.write(key, &pack(key, &[l as f32], false, img))?;
    }
    w.write(
        0,
        &pack(
            0,
            &[(n + 1) as f32, (n + 1 + num_classes as u64) as f32],
            true,
            &[],
        ),
    )?;
    let mut start = 0usize;
    for c in 0..num_classes {
        let end = start
            + labels[start..]
                .iter()
                .take_while(|&&l| l == c as i64)
                .count();
        let key = n + 1 + c as u64;
        w.write(
            key,
            &pack(key, &[(start + 1) as f32, (end + 1) as f32], true, &[]),
        )?;
        start = end;
    }
    w.finish()?;
    std::fs::write(
        dir.join("property"),
        format!("{num_classes},{height},{width}\n"),
    )
    .with_context(|| format!("cannot write {}", dir.join("property").display()))?;
    Ok(())
}

/// A memory-mapped `.rec` with its key → offset table.
pub struct RecordReader {
    rec_path: PathBuf,
    map: memmap2::Mmap,
    /// (key, offset) in `.idx` line order (write order), or in file order after a scan.
    entries: Vec<(u64, u64)>,
    by_key: HashMap<u64, u64>,
}

impl RecordReader {
    /// Open `rec` with its `.idx`; without an index (`idx = None`) the file is scanned and each
    /// record's key is its IRHeader `id`.
    pub fn open(rec: &Path, idx: Option<&Path>) -> Result<Self> {
        let file = File::open(rec).with_context(|| format!("cannot open {}", rec.display()))?;
        // SAFETY: the file is opened read-only; a concurrent writer truncating it is outside the contract
        // of a dataset (inputs are read-only), and every access is bounds-checked against the map length.
        let map = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("cannot mmap {}", rec.display()))?;
        let entries = match idx {
            Some(idx) => parse_idx(idx, map.len() as u64)?,
            None => scan(&map, rec)?,
        };
        let mut by_key = HashMap::with_capacity(entries.len());
        for &(k, o) in &entries {
            if by_key.insert(k, o).is_some() {
                bail!(
                    "{}: key {k} appears twice\nhint: rebuild the .idx",
                    idx.unwrap_or(rec).display()
                );
            }
        }
        Ok(RecordReader {
            rec_path: rec.to_path_buf(),
            map,
            entries,
            by_key,
        })
    }

    pub fn path(&self) -> &Path {
        &self.rec_path
    }

    /// (key, offset) in `.idx` order.
    pub fn entries(&self) -> &[(u64, u64)] {
        &self.entries
    }

    pub fn offset_of(&self, key: u64) -> Option<u64> {
        self.by_key.get(&key).copied()
    }

    /// The logical record starting at `offset`.
    pub fn read_at(&self, offset: u64) -> Result<Cow<'_, [u8]>> {
        Ok(read_record_at(&self.map, offset as usize, &self.rec_path)?.0)
    }

    /// Records of the `.rec` that the index does not list: a sequential scan of the whole file,
    /// each logical record's (IRHeader id, byte offset), in file order. A scan error (a corrupt
    /// record) is an error.
    pub fn unindexed(&self) -> Result<Vec<(u64, u64)>> {
        let listed: std::collections::HashSet<u64> = self.entries.iter().map(|&(_, o)| o).collect();
        let mut out = Vec::new();
        for (id, off) in scan(&self.map, &self.rec_path)? {
            if !listed.contains(&off) {
                out.push((id, off));
            }
        }
        Ok(out)
    }

    /// The logical record of `key`.
    pub fn read_key(&self, key: u64) -> Result<Cow<'_, [u8]>> {
        let off = self.offset_of(key).ok_or_else(|| {
            anyhow!(
                "{}: no record with key {key} in the index",
                self.rec_path.display()
            )
        })?;
        self.read_at(off)
    }
}

fn parse_idx(path: &Path, rec_len: u64) -> Result<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read index {}", path.display()))?;
    let mut out = Vec::with_capacity(text.len() / 12);
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let mut it = line.split('\t');
        let (k, o) = match (it.next(), it.next(), it.next()) {
            (Some(k), Some(o), None) => (k.trim(), o.trim()),
            _ => bail!(
                "{}:{}: expected `key<TAB>offset`, got {line:?}\nhint: an insightface .idx has two tab-separated integers per line",
                path.display(),
                i + 1
            ),
        };
        let key: u64 = k
            .parse()
            .map_err(|_| anyhow!("{}:{}: key {k:?} is not an integer", path.display(), i + 1))?;
        let off: u64 = o.parse().map_err(|_| {
            anyhow!(
                "{}:{}: offset {o:?} is not an integer",
                path.display(),
                i + 1
            )
        })?;
        if off + 8 > rec_len {
            bail!(
                "{}:{}: idx entry for key {key} points at byte offset {off}, past the end of the .rec ({rec_len} bytes)\nhint: the .idx belongs to another (larger) .rec, or the .rec is truncated",
                path.display(),
                i + 1
            );
        }
        out.push((key, off));
    }
    Ok(out)
}

fn scan(data: &[u8], path: &Path) -> Result<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let (rec, next) = read_record_at(data, pos, path)?;
        let what = || format!("{} (record at byte offset {pos})", path.display());
        let u = unpack(&rec, &what)?;
        out.push((u.header.id, pos as u64));
        pos = next;
    }
    Ok(out)
}

/// How positions map to keys (diffprob.md §2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// Key 0 has flag > 0: positions 0..N-1 are keys 1..N.
    Header,
    /// No header record: positions follow the `.idx` line order.
    IdxOrder,
}

/// The face-layout view of a RecordIO pair: position → key/offset/label, and the class count.
#[derive(Debug, Clone)]
pub struct FaceIndex {
    pub layout: Layout,
    pub keys: Vec<u64>,
    pub offsets: Vec<u64>,
    pub labels: Vec<i64>,
    pub num_classes: usize,
}

impl FaceIndex {
    /// Build the index. `property_classes` = C from a `property` file when there is one.
    pub fn build(reader: &RecordReader, property_classes: Option<usize>) -> Result<FaceIndex> {
        let path = reader.path().to_path_buf();
        let header = match reader.offset_of(0) {
            Some(_) => {
                let rec = reader.read_key(0)?;
                let what = || format!("{} key 0", path.display());
                let u = unpack(&rec, &what)?;
                if u.header.flag > 0 {
                    Some(u.labels)
                } else {
                    None
                }
            }
            None => None,
        };
        let (layout, keys, header_classes): (Layout, Vec<u64>, Option<usize>) = match header {
            Some(l) => {
                if l.len() < 2 || l[0].is_nan() || l[1].is_nan() || l[0] < 1.0 || l[1] < l[0] {
                    bail!(
                        "{}: header record (key 0) has label {l:?}; expected [N+1, N+1+C]\nhint: the file is not in the insightface face layout",
                        path.display()
                    );
                }
                let first_id = l[0] as u64;
                let c = (l[1] - l[0]) as usize;
                (Layout::Header, (1..first_id).collect(), Some(c))
            }
            None => (
                Layout::IdxOrder,
                reader.entries().iter().map(|&(k, _)| k).collect(),
                None,
            ),
        };
        let mut offsets = Vec::with_capacity(keys.len());
        let mut labels = Vec::with_capacity(keys.len());
        for &key in &keys {
            let off = reader.offset_of(key).ok_or_else(|| {
                anyhow!(
                    "{}: the header record announces image keys 1..{} but key {key} is not in the .idx\nhint: the .idx is incomplete",
                    path.display(),
                    keys.len()
                )
            })?;
            let rec = reader.read_at(off)?;
            let what = || format!("{} key {key}", path.display());
            let u = unpack(&rec, &what)?;
            let l = u.first_label().unwrap_or(f32::NAN);
            if !l.is_finite() || l < 0.0 {
                bail!("{}: key {key} has label {l}, not a class id\nhint: image records carry a non-negative class label", path.display());
            }
            offsets.push(off);
            labels.push(l as i64);
        }
        let max = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
        let num_classes = header_classes.or(property_classes).unwrap_or(max);
        if let Some(pos) = labels.iter().position(|&l| l as usize >= num_classes) {
            bail!(
                "{}: key {} has label {} out of range 0..{num_classes} (classes from the {})\nhint: the header record or `property` disagrees with the image labels",
                path.display(),
                keys[pos],
                labels[pos],
                if header_classes.is_some() { "header record" } else { "property file" }
            );
        }
        Ok(FaceIndex {
            layout,
            keys,
            offsets,
            labels,
            num_classes,
        })
    }
}

/// Parse `property`: `"{C},{H},{W}"` (optionally a second line `N`). Returns (C, H, W).
pub fn read_property(path: &Path) -> Result<(usize, u32, u32)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let first = text.lines().next().unwrap_or("").trim();
    let parts: Vec<&str> = first.split(',').map(str::trim).collect();
    let bad = || {
        anyhow!(
            "{}:1: expected `C,H,W` (e.g. `10572,112,112`), got {first:?}",
            path.display()
        )
    };
    if parts.len() != 3 {
        return Err(bad());
    }
    let c = parts[0].parse().map_err(|_| bad())?;
    let h = parts[1].parse().map_err(|_| bad())?;
    let w = parts[2].parse().map_err(|_| bad())?;
    Ok((c, h, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn split_rule_with_magic_at_0_4_and_end() {
        // 16-byte payload, magic at 0, 4 and len-4 = 12.
        let mut buf = Vec::new();
        buf.extend_from_slice(&MAGIC_BYTES);
        buf.extend_from_slice(&MAGIC_BYTES);
        buf.extend_from_slice(&[1, 2, 3, 4]);
        buf.extend_from_slice(&MAGIC_BYTES);
        let mut out = Vec::new();
        let n = write_record(&mut out, &buf).unwrap();
        assert_eq!(n as usize, out.len());
        // Hand-built expected bytes: empty first part, empty middle, [1,2,3,4] middle, empty last.
        let mut want = Vec::new();
        for (cflag, data) in [
            (1u32, &[][..]),
            (2, &[][..]),
            (2, &[1u8, 2, 3, 4][..]),
            (3, &[][..]),
        ] {
            want.extend_from_slice(&[0x0A, 0x23, 0xD7, 0xCE]);
            want.extend_from_slice(&((cflag << 29) | data.len() as u32).to_le_bytes());
            want.extend_from_slice(data);
        }
        assert_eq!(out, want);
        let (back, next) = read_record_at(&out, 0, Path::new("x.rec")).unwrap();
        assert_eq!(&*back, &buf[..]);
        assert_eq!(next, out.len());
    }

    #[test]
    fn odd_length_record_is_padded_and_unsplit() {
        let buf = vec![7u8; 13];
        let mut out = Vec::new();
        write_record(&mut out, &buf).unwrap();
        assert_eq!(out.len(), 8 + 13 + 3);
        assert_eq!(&out[4..8], &13u32.to_le_bytes());
        let (back, next) = read_record_at(&out, 0, Path::new("x.rec")).unwrap();
        assert!(matches!(back, Cow::Borrowed(_)));
        assert_eq!(&*back, &buf[..]);
        assert_eq!(next, 24);
    }

    #[test]
    fn pack_unpack_scalar_and_array() {
        let r = pack(5, &[3.0], false, b"jpeg");
        let u = unpack(&r, &|| "t".into()).unwrap();
        assert_eq!(u.header.flag, 0);
        assert_eq!(u.labels, vec![3.0]);
        assert_eq!(u.payload, b"jpeg");
        assert_eq!(u.header.id, 5);
        let r = pack(0, &[11.0, 14.0], true, &[]);
        assert_eq!(r.len(), 32);
        let u = unpack(&r, &|| "t".into()).unwrap();
        assert_eq!(u.header.flag, 2);
        assert_eq!(u.labels, vec![11.0, 14.0]);
        assert!(u.payload.is_empty());
        let err = unpack(&r[..28], &|| "f.rec key 0".into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f.rec key 0") && err.contains("announces 2 f32 labels"),
            "{err}"
        );
    }

    fn write_dataset(dir: &Path, payloads: &[Vec<u8>], labels: &[i64], c: usize) {
        write_face_layout(dir, payloads, labels, c, (112, 112)).unwrap();
    }

    #[test]
    fn face_layout_round_trip_with_split_record() {
        let d = tmp();
        let mut p2 = vec![9u8; 40];
        p2[16..20].copy_from_slice(&MAGIC_BYTES); // record offset 24+16 = 40, 4-aligned: split
        let payloads = vec![b"abc".to_vec(), p2.clone(), vec![1, 2, 3, 4, 5, 6, 7, 8]];
        write_dataset(d.path(), &payloads, &[0, 0, 2], 3);
        let r = RecordReader::open(
            &d.path().join("train.rec"),
            Some(&d.path().join("train.idx")),
        )
        .unwrap();
        let idx = FaceIndex::build(&r, None).unwrap();
        assert_eq!(idx.layout, Layout::Header);
        assert_eq!(idx.keys, vec![1, 2, 3]);
        assert_eq!(idx.labels, vec![0, 0, 2]);
        assert_eq!(idx.num_classes, 3);
        let rec = r.read_key(2).unwrap();
        assert!(
            matches!(rec, Cow::Owned(_)),
            "the magic inside forces a multi-part record"
        );
        assert_eq!(unpack(&rec, &|| "t".into()).unwrap().payload, &p2[..]);
        // Identity records [start, end) in keys.
        let u = r.read_key(4).unwrap();
        assert_eq!(unpack(&u, &|| "t".into()).unwrap().labels, vec![1.0, 3.0]);
        let u = r.read_key(5).unwrap();
        assert_eq!(unpack(&u, &|| "t".into()).unwrap().labels, vec![3.0, 3.0]);
        // A scan without the index finds the same keys.
        let s = RecordReader::open(&d.path().join("train.rec"), None).unwrap();
        assert_eq!(s.entries(), r.entries());
        assert_eq!(
            read_property(&d.path().join("property")).unwrap(),
            (3, 112, 112)
        );
    }

    #[test]
    fn idx_order_layout_without_header() {
        let d = tmp();
        let rec = d.path().join("t.rec");
        let idx = d.path().join("t.idx");
        let mut w = RecordWriter::create(&rec, &idx).unwrap();
        for key in [0u64, 4, 7, 5, 1, 6, 3, 2] {
            w.write(key, &pack(key, &[(key % 2) as f32], false, b"x"))
                .unwrap();
        }
        w.finish().unwrap();
        let r = RecordReader::open(&rec, Some(&idx)).unwrap();
        let fi = FaceIndex::build(&r, None).unwrap();
        assert_eq!(fi.layout, Layout::IdxOrder);
        assert_eq!(fi.keys, vec![0, 4, 7, 5, 1, 6, 3, 2]);
        assert_eq!(fi.labels, vec![0, 0, 1, 1, 1, 0, 1, 0]);
        assert_eq!(fi.num_classes, 2);
        let err = FaceIndex::build(&r, Some(1)).unwrap_err().to_string();
        assert!(err.contains("key 7 has label 1 out of range 0..1"), "{err}");
    }

    #[test]
    fn corrupt_inputs_name_the_place() {
        let d = tmp();
        write_dataset(d.path(), &[b"abcd".to_vec(), b"efgh".to_vec()], &[0, 1], 2);
        let rec = d.path().join("train.rec");
        let idx = d.path().join("train.idx");
        let good = std::fs::read(&rec).unwrap();
        // Each record is 8 + 24 + 4 = 36 bytes: key 2 starts at 36.
        let mut bad = good.clone();
        bad[36] = 0xFF;
        std::fs::write(&rec, &bad).unwrap();
        let r = RecordReader::open(&rec, Some(&idx)).unwrap();
        let err = r.read_key(2).unwrap_err().to_string();
        assert!(
            err.contains("bad magic 0xCED723FF at byte offset 36"),
            "{err}"
        );
        // Truncated: cut the last identity record in half.
        std::fs::write(&rec, &good[..good.len() - 10]).unwrap();
        let r = RecordReader::open(&rec, Some(&idx)).unwrap();
        let last = r.entries().last().unwrap().1;
        let err = r.read_at(last).unwrap_err().to_string();
        assert!(
            err.contains(&format!("truncated record at byte offset {last}")),
            "{err}"
        );
        // idx entry past the end.
        std::fs::write(&rec, &good[..60]).unwrap();
        let err = RecordReader::open(&rec, Some(&idx))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("train.idx:3: idx entry for key 0 points at byte offset 72, past the end"),
            "{err}"
        );
        // Malformed idx line.
        std::fs::write(&rec, &good).unwrap();
        std::fs::write(&idx, "1\t0\nfoo\n").unwrap();
        let err = RecordReader::open(&rec, Some(&idx))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("train.idx:2: expected `key<TAB>offset`"),
            "{err}"
        );
    }

    #[test]
    fn records_missing_from_the_idx_are_found_by_a_scan() {
        let d = tmp();
        let rec = d.path().join("t.rec");
        let idx = d.path().join("t.idx");
        let mut w = RecordWriter::create(&rec, &idx).unwrap();
        for key in 0..8u64 {
            w.write(key, &pack(key, &[0.0], false, b"x")).unwrap();
        }
        w.finish().unwrap();
        let r = RecordReader::open(&rec, Some(&idx)).unwrap();
        assert!(r.unindexed().unwrap().is_empty());
        let lines: Vec<String> = std::fs::read_to_string(&idx)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let kept: Vec<&String> = lines
            .iter()
            .filter(|l| !["2", "5", "7"].contains(&l.split('\t').next().unwrap()))
            .collect();
        std::fs::write(
            &idx,
            kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        let r = RecordReader::open(&rec, Some(&idx)).unwrap();
        let missing: Vec<u64> = r.unindexed().unwrap().iter().map(|&(k, _)| k).collect();
        assert_eq!(missing, vec![2, 5, 7]);
    }

    #[test]
    fn header_out_of_range_label() {
        let d = tmp();
        let rec = d.path().join("train.rec");
        let idx = d.path().join("train.idx");
        let mut w = RecordWriter::create(&rec, &idx).unwrap();
        w.write(1, &pack(1, &[0.0], false, b"a")).unwrap();
        w.write(2, &pack(2, &[5.0], false, b"b")).unwrap();
        w.write(0, &pack(0, &[3.0, 5.0], true, &[])).unwrap();
        w.finish().unwrap();
        let r = RecordReader::open(&rec, Some(&idx)).unwrap();
        let err = FaceIndex::build(&r, None).unwrap_err().to_string();
        assert!(
            err.contains("key 2 has label 5 out of range 0..2 (classes from the header record)"),
            "{err}"
        );
    }
}
