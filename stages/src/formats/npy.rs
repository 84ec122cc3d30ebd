//! NumPy `.npy` v1.0 reader and writer for the dtypes the stages exchange (formats.md §6):
//! `<f8`, `<f4`, `<i8`, `<i4`, `|u1`, C order, any rank.
//!
//! Hand-written rather than a crate: the format is 10 bytes of preamble and a Python-literal dict,
//! and the readers must produce errors that name the file and what was expected.

use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

/// A scalar type that `.npy` files of this project hold.
pub trait Element: Copy {
    const DESCR: &'static str;
    fn write_le(self, out: &mut Vec<u8>);
}

impl Element for f64 {
    const DESCR: &'static str = "<f8";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes())
    }
}
impl Element for f32 {
    const DESCR: &'static str = "<f4";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes())
    }
}
impl Element for i64 {
    const DESCR: &'static str = "<i8";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes())
    }
}
impl Element for i32 {
    const DESCR: &'static str = "<i4";
    fn write_le(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes())
    }
}
impl Element for u8 {
    const DESCR: &'static str = "|u1";
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(self)
    }
}

/// Write `data` with `shape` (product must equal `data.len()`).
pub fn write<T: Element>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        bail!(
            "npy write {}: shape {:?} holds {n} values, got {}",
            path.display(),
            shape,
            data.len()
        );
    }
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}",
        T::DESCR,
        shape_s
    );
    // Pad with spaces and end with '\n' so that 10 + len is a multiple of 64.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut buf = Vec::with_capacity(10 + header.len() + std::mem::size_of_val(data));
    buf.extend_from_slice(b"\x93NUMPY\x01\x00");
    buf.extend_from_slice(&(header.len() as u16).to_le_bytes());
    buf.extend_from_slice(header.as_bytes());
    for &x in data {
        x.write_le(&mut buf);
    }
    let f =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::new(f);
    w.write_all(&buf)
        .with_context(|| format!("cannot write {}", path.display()))?;
    w.flush()?;
    Ok(())
}

pub fn write_1d<T: Element>(path: &Path, data: &[T]) -> Result<()> {
    write(path, &[data.len()], data)
}

/// The decoded contents of a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    pub descr: String,
    pub shape: Vec<usize>,
    data: Vec<u8>,
}

impl Array {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values widened to f64 (float and integer dtypes).
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        Ok(match self.descr.as_str() {
            "<f8" => self
                .data
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            "<f4" => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            _ => self.to_i64()?.into_iter().map(|x| x as f64).collect(),
        })
    }

    /// Values as f32 (`<f4` exactly, `<f8` rounded).
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        Ok(match self.descr.as_str() {
            "<f4" => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            _ => self.to_f64()?.into_iter().map(|x| x as f32).collect(),
        })
    }

    /// Integer values (any integer dtype; floats are an error).
    pub fn to_i64(&self) -> Result<Vec<i64>> {
        Ok(match self.descr.as_str() {
            "<i8" => self
                .data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            "<u8" => self
                .data
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            "<i4" => self
                .data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            "<u4" => self
                .data
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            "<i2" => self
                .data
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            "|u1" | "|b1" => self.data.iter().map(|&b| b as i64).collect(),
            "|i1" => self.data.iter().map(|&b| b as i8 as i64).collect(),
            d => bail!("expected an integer array, found dtype {d}"),
        })
    }

    pub fn to_u8(&self) -> Result<Vec<u8>> {
        match self.descr.as_str() {
            "|u1" | "|b1" => Ok(self.data.clone()),
            _ => self
                .to_i64()?
                .into_iter()
                .map(|x| u8::try_from(x).map_err(|_| anyhow::anyhow!("value {x} is not a byte")))
                .collect(),
        }
    }
}

/// Read a `.npy` file; errors name the file and the defect.
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a valid .npy file", path.display()))
}

pub fn parse(bytes: &[u8]) -> Result<Array> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("missing the \\x93NUMPY magic at byte 0");
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("truncated header");
            }
            (
                u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize,
                12,
            )
        }
        v => bail!("unsupported .npy version {v}"),
    };
    let header = bytes
        .get(start..start + hlen)
        .context("header runs past the end of the file")?;
    let header = std::str::from_utf8(header).context("header is not text")?;
    let descr = dict_value(header, "descr").context("header has no 'descr'")?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"').to_string();
    let fortran = dict_value(header, "fortran_order").context("header has no 'fortran_order'")?;
    if fortran.trim() != "False" {
        bail!("fortran_order arrays are not supported (save with np.ascontiguousarray)");
    }
    let shape_s = dict_value(header, "shape").context("header has no 'shape'")?;
    let shape: Vec<usize> = shape_s
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| anyhow::anyhow!("bad shape {shape_s}"))
        })
        .collect::<Result<_>>()?;
    let item = match descr.as_str() {
        "<f8" | "<i8" | "<u8" => 8,
        "<f4" | "<i4" | "<u4" => 4,
        "<i2" => 2,
        "|u1" | "|i1" | "|b1" => 1,
        d => bail!("unsupported dtype {d} (expected <f8, <f4, <i8, <i4 or |u1)"),
    };
    let n: usize = shape.iter().product();
    let data = &bytes[start + hlen..];
    if data.len() != n * item {
        bail!(
            "shape {:?} of {descr} needs {} data bytes, the file has {}",
            shape,
            n * item,
            data.len()
        );
    }
    Ok(Array {
        descr,
        shape,
        data: data.to_vec(),
    })
}

/// The text of `key`'s value in a Python dict literal (values here contain no nested dicts).
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat_a = format!("'{key}':");
    let pat_b = format!("\"{key}\":");
    let i = header
        .find(&pat_a)
        .map(|i| i + pat_a.len())
        .or_else(|| header.find(&pat_b).map(|i| i + pat_b.len()))?;
    let rest = header[i..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}'])?
    };
    Some(rest[..end].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_dtype_and_pads_to_64() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_1d(&p, &[1.5f64, -2.0, 3.25]).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + hlen) % 64, 0);
        assert_eq!(read(&p).unwrap().to_f64().unwrap(), vec![1.5, -2.0, 3.25]);
        write(&p, &[2, 3], &[1f32, 2., 3., 4., 5., 6.]).unwrap();
        let a = read(&p).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.to_f32().unwrap()[5], 6.0);
        write_1d(&p, &[7i64, -1]).unwrap();
        assert_eq!(read(&p).unwrap().to_i64().unwrap(), vec![7, -1]);
        write_1d(&p, &[0u8, 1, 1]).unwrap();
        assert_eq!(read(&p).unwrap().to_u8().unwrap(), vec![0, 1, 1]);
    }

    #[test]
    fn rejects_truncated_data_with_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_1d(&p, &[1.0f64, 2.0]).unwrap();
        let mut b = std::fs::read(&p).unwrap();
        b.truncate(b.len() - 3);
        std::fs::write(&p, b).unwrap();
        let e = format!("{:#}", read(&p).unwrap_err());
        assert!(e.contains("needs 16 data bytes, the file has 13"), "{e}");
    }
}
