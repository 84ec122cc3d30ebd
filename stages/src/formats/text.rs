//! Text formats of the reference (diffprob.md §4): `np.savetxt`-style float columns
//! ([`format_floats`], [`parse_floats`]), integer columns ([`parse_ints`]) and the kept list
//! `kept_index = [i0, i1, ...]` ([`format_kept`], [`parse_kept`]).
//!
//! Floats are written as C `%.18e` with a sign and at least two exponent digits, exactly the bytes
//! `np.savetxt` writes; readers parse f64 with correct rounding, so a written file reads back
//! bit for bit. Every reader error names the file and the line (or the entry) that is wrong.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rayon::prelude::*;

/// Append one value as `np.savetxt` writes it (`%.18e`), without the newline.
pub fn push_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("nan");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
        return;
    }
    if let Some((digits, exp10)) = digits19(x.abs()) {
        if x.is_sign_negative() {
            out.push('-');
        }
        push_scientific(out, digits, exp10);
        return;
    }
    let start = out.len();
    // Rust's exact formatting rounds half to even like Python's `%`; only the exponent differs.
    let _ = write!(out, "{x:.18e}");
    let e = start + out[start..].rfind('e').unwrap_or(out.len() - start);
    let exp: i32 = out[e + 1..].parse().unwrap_or(0);
    out.truncate(e);
    let _ = write!(
        out,
        "e{}{:02}",
        if exp < 0 { '-' } else { '+' },
        exp.unsigned_abs()
    );
}

/// `d.dddddddddddddddddde±XX` from 19 digits and the decimal exponent.
fn push_scientific(out: &mut String, digits: u64, exp10: i32) {
    let mut buf = [0u8; 19];
    let mut d = digits;
    for b in buf.iter_mut().rev() {
        *b = b'0' + (d % 10) as u8;
        d /= 10;
    }
    out.push(buf[0] as char);
    out.push('.');
    // The digits are ASCII.
    out.push_str(std::str::from_utf8(&buf[1..]).unwrap_or(""));
    let _ = write!(
        out,
        "e{}{:02}",
        if exp10 < 0 { '-' } else { '+' },
        exp10.unsigned_abs()
    );
}

/// The 19 significant digits of `v` (≥ 0) rounded half to even, exactly, and its decimal
/// exponent: `v ≈ digits · 10^(exp10 − 18)`. `None` outside the fast range [1e−14, 1e19) (and for
/// 0, handled here too), where the caller falls back to the slower exact formatter.
///
/// v = m·2^e, so v·10^k = m·5^k·2^(e+k): with k ≤ 32, m·5^k < 2^128 and the scaling and the
/// remainder of the shift are exact in u128.
fn digits19(v: f64) -> Option<(u64, i32)> {
    if v == 0.0 {
        return Some((0, 0));
    }
    if !(1e-14..1e19).contains(&v) {
        return None;
    }
    let bits = v.to_bits();
    let (m, e) = (
        (bits & ((1 << 52) - 1)) | (1 << 52),
        ((bits >> 52) & 0x7ff) as i32 - 1075,
    );
    let mut exp10 = v.log10().floor() as i32;
    for _ in 0..3 {
        let k = 18 - exp10;
        if !(0..=32).contains(&k) {
            return None;
        }
        let n = m as u128 * 5u128.pow(k as u32);
        let shift = e + k;
        let digits = if shift >= 0 {
            if shift > 10 {
                return None;
            }
            n << shift
        } else {
            let s = (-shift) as u32;
            if s >= 127 {
                return None;
            }
            let q = n >> s;
            let rem = n & ((1u128 << s) - 1);
            let half = 1u128 << (s - 1);
            if rem > half || (rem == half && q & 1 == 1) {
                q + 1
            } else {
                q
            }
        };
        if digits < 1_000_000_000_000_000_000 {
            exp10 -= 1;
            continue;
        }
        if digits >= 10_000_000_000_000_000_000 {
            // Either the estimate was low, or rounding carried into a 20th digit (…9.5 → 10…0).
            if digits == 10_000_000_000_000_000_000 && shift < 0 {
                return Some((1_000_000_000_000_000_000, exp10 + 1));
            }
            exp10 += 1;
            continue;
        }
        return Some((digits as u64, exp10));
    }
    None
}

/// Values per parallel chunk when formatting or parsing long columns.
const CHUNK: usize = 16 * 1024;

/// The whole file `np.savetxt(path, values)` writes for a 1-D float array.
pub fn format_floats(values: &[f64]) -> String {
    let format = |xs: &[f64]| {
        let mut s = String::with_capacity(xs.len() * 25);
        for &x in xs {
            push_float(&mut s, x);
            s.push('\n');
        }
        s
    };
    if values.len() <= CHUNK {
        return format(values);
    }
    let parts: Vec<String> = values.par_chunks(CHUNK).map(format).collect();
    parts.concat()
}

pub fn write_floats(path: &Path, values: &[f64]) -> Result<()> {
    std::fs::write(path, format_floats(values))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Lines that hold a value: 1-based line number and trimmed text. Blank lines and `#` comments
/// are skipped, as `np.loadtxt` does.
fn value_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let l = l.split('#').next().unwrap_or("").trim();
        (!l.is_empty()).then_some((i + 1, l))
    })
}

/// One float per line (what `np.savetxt` writes for a 1-D array), parsed as f64.
pub fn parse_floats(text: &str, name: &str) -> Result<Vec<f64>> {
    let lines: Vec<(usize, &str)> = value_lines(text).collect();
    let parse = |&(line, l): &(usize, &str)| {
        l.parse::<f64>().map_err(|_| {
            anyhow::anyhow!("{name}:{line}: `{}` is not a number (expected one value per line, e.g. 9.876543283462524414e-01)", clip(l))
        })
    };
    if lines.len() <= CHUNK {
        return lines.iter().map(parse).collect();
    }
    let parsed: Vec<Option<f64>> = lines
        .par_iter()
        .with_min_len(CHUNK / 4)
        .map(|(_, l)| l.parse::<f64>().ok())
        .collect();
    match parsed.iter().position(Option::is_none) {
        // The first bad line in file order, whatever thread saw it.
        Some(i) => parse(&lines[i]).map(|_| Vec::new()),
        None => Ok(parsed.into_iter().flatten().collect()),
    }
}

pub fn read_floats(path: &Path) -> Result<Vec<f64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_floats(&text, &path.display().to_string())
}

/// One integer per line (a labels text file). `5.000000000000000000e+00` (np.savetxt of an integer
/// array saved as float) is accepted when it is a whole number.
pub fn parse_ints(text: &str, name: &str) -> Result<Vec<i64>> {
    value_lines(text)
        .map(|(line, l)| {
            if let Ok(v) = l.parse::<i64>() {
                return Ok(v);
            }
            match l.parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
                _ => bail!(
                    "{name}:{line}: `{}` is not an integer (expected one integer per line)",
                    clip(l)
                ),
            }
        })
        .collect()
}

pub fn read_ints(path: &Path) -> Result<Vec<i64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_ints(&text, &path.display().to_string())
}

/// `kept_index = [i0, i1, ...]`, no trailing newline: the bytes of the reference's
/// `f"kept_index = {keep}"` (a Python list repr).
pub fn format_kept(kept: &[usize]) -> String {
    let mut s = String::with_capacity(16 + kept.len() * 8);
    s.push_str("kept_index = [");
    for (i, k) in kept.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}");
    }
    s.push(']');
    s
}

pub fn write_kept(path: &Path, kept: &[usize]) -> Result<()> {
    std::fs::write(path, format_kept(kept))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Parse a kept list: the text after the first `=` is a bracketed list of decimal integers (any
/// whitespace). Entries must be strictly increasing and, when `n` is given, below `n`.
pub fn parse_kept(text: &str, name: &str, n: Option<usize>) -> Result<Vec<usize>> {
    let eq = text
        .find('=')
        .with_context(|| format!("{name}: no `=` found (expected `kept_index = [0, 3, 7]`)"))?;
    let body_start = eq + 1;
    let body = &text[body_start..];
    let lead = body.len() - body.trim_start().len();
    let open = body_start + lead;
    if !text[open..].starts_with('[') {
        bail!("{name}: byte {open}: expected `[` after `=` (expected `kept_index = [0, 3, 7]`)");
    }
    let close = text[open..]
        .find(']')
        .map(|i| open + i)
        .with_context(|| format!("{name}: the list opened at byte {open} has no closing `]`"))?;
    if !text[close + 1..].trim().is_empty() {
        bail!(
            "{name}: byte {}: unexpected text after the closing `]`",
            close + 1
        );
    }
    let inner = &text[open + 1..close];
    let mut out: Vec<usize> = Vec::new();
    if inner.trim().is_empty() {
        return Ok(out);
    }
    let mut offset = open + 1;
    for (entry, raw) in inner.split(',').enumerate() {
        let lead = raw.len() - raw.trim_start().len();
        let tok = raw.trim();
        let at = offset + lead;
        offset += raw.len() + 1;
        let v: usize = tok.parse().map_err(|_| {
            anyhow::anyhow!(
                "{name}: entry {entry} (byte {at}): `{}` is not a non-negative decimal integer",
                clip(tok)
            )
        })?;
        if let Some(&prev) = out.last() {
            if v == prev {
                bail!("{name}: entry {entry} (byte {at}): duplicate position {v}");
            }
            if v < prev {
                bail!("{name}: entry {entry} (byte {at}): position {v} comes after {prev}; kept lists must be sorted ascending");
            }
        }
        if let Some(n) = n {
            if v >= n {
                bail!("{name}: entry {entry} (byte {at}): position {v} is out of range for a dataset of {n} samples (valid: 0..{})", n.saturating_sub(1));
            }
        }
        out.push(v);
    }
    Ok(out)
}

pub fn read_kept(path: &Path, n: Option<usize>) -> Result<Vec<usize>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_kept(&text, &path.display().to_string(), n)
}

fn clip(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn floats_match_numpy_savetxt_bytes() {
        let got = format_floats(&[
            0.9876543283462524,
            -1.0,
            0.0,
            1e300,
            5e-324,
            2f64.powi(-28),
            f64::NAN,
            f64::NEG_INFINITY,
            1e-100,
        ]);
        let want = "9.876543283462524414e-01\n-1.000000000000000000e+00\n0.000000000000000000e+00\n\
                    1.000000000000000053e+300\n4.940656458412465442e-324\n3.725290298461914062e-09\nnan\n-inf\n\
                    1.000000000000000020e-100\n";
        assert_eq!(got, want);
    }

    #[test]
    fn float_reader_names_the_line() {
        let e = parse_floats("1.0\n\n2.0\nabc\n", "p.txt")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("p.txt:4: `abc` is not a number"), "{e}");
        assert_eq!(
            parse_floats("# c\n1.5\n  2.5e-01  \n", "x").unwrap(),
            vec![1.5, 0.25]
        );
    }

    #[test]
    fn kept_list_round_trips_with_reference_bytes() {
        assert_eq!(format_kept(&[]), "kept_index = []");
        assert_eq!(format_kept(&[0, 3, 17]), "kept_index = [0, 3, 17]");
        assert_eq!(
            parse_kept("kept_index = [0, 3, 17]", "k", Some(18)).unwrap(),
            vec![0, 3, 17]
        );
        assert_eq!(
            parse_kept("kept_index=[\n 1,\n\t2 ]\n", "k", None).unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            parse_kept("kept_index = []", "k", Some(0)).unwrap(),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn kept_reader_rejects_bad_entries_with_their_place() {
        let e = parse_kept("kept_index = [0, 5, 3]", "k.txt", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("k.txt: entry 2 (byte 20): position 3 comes after 5"),
            "{e}"
        );
        let e = parse_kept("kept_index = [0, 5, 5]", "k.txt", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("entry 2 (byte 20): duplicate position 5"), "{e}");
        let e = parse_kept("kept_index = [0, 9]", "k.txt", Some(9))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("entry 1 (byte 17): position 9 is out of range for a dataset of 9 samples"),
            "{e}"
        );
        let e = parse_kept("kept_index = [0, -1]", "k.txt", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`-1` is not a non-negative decimal integer"),
            "{e}"
        );
        assert!(parse_kept("[1, 2]", "k", None)
            .unwrap_err()
            .to_string()
            .contains("no `=`"));
        assert!(parse_kept("k = [1, 2", "k", None)
            .unwrap_err()
            .to_string()
            .contains("no closing"));
        assert!(parse_kept("k = [1, 2] x", "k", None)
            .unwrap_err()
            .to_string()
            .contains("after the closing"));
    }

    #[test]
    fn ints_accept_integers_and_whole_floats() {
        assert_eq!(
            parse_ints("3\n-1\n2.000000000000000000e+00\n", "l").unwrap(),
            vec![3, -1, 2]
        );
        let e = parse_ints("1\n2.5\n", "l.txt").unwrap_err().to_string();
        assert!(e.contains("l.txt:2: `2.5` is not an integer"), "{e}");
    }

    /// The slow, exact reference: Rust's formatter with the exponent rewritten.
    fn slow(x: f64) -> String {
        let s = format!("{x:.18e}");
        let (mant, exp) = s.split_once('e').unwrap();
        let exp: i32 = exp.parse().unwrap();
        format!(
            "{mant}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.unsigned_abs()
        )
    }

    #[test]
    fn fast_digits_handle_carries_ties_and_range_edges() {
        for x in [
            1.0,
            0.1,
            9.999999999999999e-1,
            1e-14,
            1e19 * (1.0 - f64::EPSILON),
            2f64.powi(-28),
            2f64.powi(-40),
            0.5,
            123456.789,
            3e-5,
        ] {
            let mut s = String::new();
            push_float(&mut s, x);
            assert_eq!(s, slow(x), "{x:e}");
        }
    }

    proptest! {
        #[test]
        fn fast_formatting_equals_the_exact_formatter(bits in any::<u64>(), scaled in 1e-15f64..2e19, small in 0.0f64..1.0, f32_bits in any::<u32>()) {
            for x in [f64::from_bits(bits), scaled, small, f32::from_bits(f32_bits) as f64] {
                if x.is_finite() {
                    let mut s = String::new();
                    push_float(&mut s, x);
                    prop_assert_eq!(s, slow(x), "{:e}", x);
                }
            }
        }

        #[test]
        fn floats_read_back_bit_for_bit(bits in proptest::collection::vec(any::<u64>(), 0..50)) {
            let xs: Vec<f64> = bits.into_iter().map(f64::from_bits).filter(|x| x.is_finite()).collect();
            let back = parse_floats(&format_floats(&xs), "t").unwrap();
            prop_assert_eq!(xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), back.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }

        #[test]
        fn kept_lists_round_trip(mut v in proptest::collection::vec(0usize..1_000_000, 0..100)) {
            v.sort_unstable();
            v.dedup();
            prop_assert_eq!(parse_kept(&format_kept(&v), "t", Some(1_000_000)).unwrap(), v);
        }
    }
}
