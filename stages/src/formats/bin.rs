//! Verification packs (`lfw.bin`, `cfp_fp.bin`, …; formats.md §2): [`read_pairs`] reads every pickle
//! variant in use (A: Python 2 BINSTRING, B: Python 3 bytes, C: numpy arrays from `cv2.imencode`),
//! [`write_pairs`] writes protocol 3, which Python's `pickle.load` reads.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_pickle::{DeOptions, SerOptions, Value};

/// Read a pack: the 2·P encoded images (pair k = images 2k, 2k+1) and the P `issame` flags.
pub fn read_pairs(path: &Path) -> Result<(Vec<Vec<u8>>, Vec<bool>)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read verification pack {}", path.display()))?;
    parse_pairs(&bytes).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Parse the bytes of a pack (see [`read_pairs`]).
pub fn parse_pairs(bytes: &[u8]) -> Result<(Vec<Vec<u8>>, Vec<bool>)> {
    let value = serde_pickle::value_from_slice(bytes, DeOptions::new().replace_unresolved_globals().keep_restore_state())
        .map_err(|e| anyhow!("not a readable pickle: {e}\nhint: a verification pack is a pickled (bins, issame_list) tuple"))?;
    let (bins, issame) = match value {
        Value::Tuple(mut t) | Value::List(mut t) if t.len() == 2 => {
            let issame = t.pop().unwrap_or(Value::None);
            (t.pop().unwrap_or(Value::None), issame)
        }
        other => bail!(
            "expected a 2-tuple (bins, issame_list), got {}",
            describe(&other)
        ),
    };
    let bins = match bins {
        Value::List(v) | Value::Tuple(v) => v,
        other => bail!(
            "element 0 (bins) must be a list of encoded images, got {}",
            describe(&other)
        ),
    };
    let issame = match issame {
        Value::List(v) | Value::Tuple(v) => v,
        other => bail!(
            "element 1 (issame_list) must be a list of bools, got {}",
            describe(&other)
        ),
    };
    let images = bins
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            image_bytes(v).ok_or_else(|| {
                anyhow!("bins[{i}] is not an encoded image (bytes or a numpy uint8 array)")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let flags = issame
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Bool(b) => Ok(b),
            Value::I64(x @ (0 | 1)) => Ok(x == 1),
            other => Err(anyhow!(
                "issame_list[{i}] must be a bool, got {}",
                describe(&other)
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    if images.len() != 2 * flags.len() {
        bail!(
            "{} images for {} pairs; a pack holds exactly 2 images per pair\nhint: the file is truncated or not a verification pack",
            images.len(),
            flags.len()
        );
    }
    Ok((images, flags))
}

/// The JPEG bytes of one `bins` element: `bytes` itself (A, B), or the raw data of a pickled numpy
/// array, which keep_restore_state leaves as a tuple whose last `Bytes` is the data (C).
fn image_bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::Tuple(items) | Value::List(items) => items.into_iter().rev().find_map(image_bytes),
        Value::Dict(d) => d.into_values().rev().find_map(image_bytes),
        _ => None,
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(_) => "a bool".into(),
        Value::I64(_) | Value::Int(_) => "an int".into(),
        Value::F64(_) => "a float".into(),
        Value::Bytes(b) => format!("bytes of length {}", b.len()),
        Value::String(_) => "a str".into(),
        Value::List(v) => format!("a list of {}", v.len()),
        Value::Tuple(v) => format!("a tuple of {}", v.len()),
        Value::Set(_) | Value::FrozenSet(_) => "a set".into(),
        Value::Dict(_) => "a dict".into(),
    }
}

/// Write a pack as pickle protocol 3 (variant B).
pub fn write_pairs(path: &Path, images: &[Vec<u8>], issame: &[bool]) -> Result<()> {
    if images.len() != 2 * issame.len() {
        bail!(
            "write_pairs {}: {} images for {} pairs (need 2 per pair)",
            path.display(),
            images.len(),
            issame.len()
        );
    }
    let value = Value::Tuple(vec![
        Value::List(images.iter().map(|b| Value::Bytes(b.clone())).collect()),
        Value::List(issame.iter().map(|&b| Value::Bool(b)).collect()),
    ]);
    let bytes = serde_pickle::value_to_vec(&value, SerOptions::new())?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<Vec<u8>>, Vec<bool>) {
        (
            vec![
                b"abc".to_vec(),
                b"\xff\xd8defg".to_vec(),
                vec![0u8; 300],
                b"z".to_vec(),
            ],
            vec![true, false],
        )
    }

    #[test]
    fn protocol3_round_trip() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.bin");
        let (imgs, same) = sample();
        write_pairs(&p, &imgs, &same).unwrap();
        let raw = std::fs::read(&p).unwrap();
        assert_eq!(&raw[..2], b"\x80\x03");
        assert_eq!(read_pairs(&p).unwrap(), (imgs, same));
    }

    #[test]
    fn variant_a_python2_by_hand() {
        // protocol 2 as Python 2's cPickle writes it: SHORT_BINSTRING / BINSTRING, BINPUT and
        // LONG_BINPUT memo, MARK … APPENDS, NEWTRUE/NEWFALSE, TUPLE2.
        let mut b = b"\x80\x02]q\x00(U\x03abcq\x01T\x06\x00\x00\x00\xff\xd8defgq\x02".to_vec();
        b.extend_from_slice(b"T\x2c\x01\x00\x00");
        b.extend_from_slice(&[0u8; 300]);
        b.extend_from_slice(b"r\x03\x00\x00\x00U\x01zq\x04e]q\x05(\x88\x89e\x86q\x06.");
        assert_eq!(parse_pairs(&b).unwrap(), sample());
    }

    #[test]
    fn errors_are_specific() {
        let v = serde_pickle::value_to_vec(
            &Value::Tuple(vec![
                Value::List(vec![Value::Bytes(vec![1])]),
                Value::List(vec![Value::Bool(true)]),
            ]),
            SerOptions::new(),
        )
        .unwrap();
        let e = parse_pairs(&v).unwrap_err().to_string();
        assert!(e.contains("1 images for 1 pairs"), "{e}");
        let v = serde_pickle::value_to_vec(&Value::List(vec![Value::I64(3)]), SerOptions::new())
            .unwrap();
        let e = parse_pairs(&v).unwrap_err().to_string();
        assert!(e.contains("expected a 2-tuple"), "{e}");
        let e = parse_pairs(b"garbage").unwrap_err().to_string();
        assert!(e.contains("not a readable pickle"), "{e}");
    }

    /// Variants B (protocols 2-5 from Python 3) and C (numpy arrays, protocols 2-5), written by Python.
    #[test]
    #[ignore = "requires ORCHESTRATOR_PYTHON: the venv of scripts/deps.sh; `make test` sets it"]
    fn python_written_variants() {
        let py = crate::testing::require_python();
        let d = tempfile::tempdir().unwrap();
        let script = r#"
import pickle, sys, numpy as np
out = sys.argv[1]
bins = [b'abc', b'\xff\xd8defg', bytes(300), b'z']
same = [True, False]
for p in (2, 3, 4, 5):
    with open(f'{out}/bytes{p}.bin', 'wb') as f:
        pickle.dump((bins, same), f, protocol=p)
for p in (2, 3, 4, 5):
    arrs = [np.frombuffer(b, dtype=np.uint8).reshape(-1, 1).copy() for b in bins]
    with open(f'{out}/numpy{p}.bin', 'wb') as f:
        pickle.dump((arrs, same), f, protocol=p)
"#;
        let st = std::process::Command::new(py)
            .arg("-c")
            .arg(script)
            .arg(d.path())
            .status()
            .unwrap();
        assert!(st.success());
        for name in [
            "bytes2", "bytes3", "bytes4", "bytes5", "numpy2", "numpy3", "numpy4",
        ] {
            let got = read_pairs(&d.path().join(format!("{name}.bin")))
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
            assert_eq!(got, sample(), "{name}");
        }
    }
}
