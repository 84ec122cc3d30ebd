//! Content hashing: [`hash_file`] is blake3 over a memory map, split across cores with rayon for
//! big files (blake3's own tree hashing), plain reads for small ones.

use std::path::Path;

/// Files at least this big are hashed with mmap + rayon; smaller ones with one read.
pub const HASH_CHUNK_HINT: u64 = 128 * 1024;

/// The blake3 digest (hex) of a file's bytes.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let len = std::fs::metadata(path)?.len();
    let mut h = blake3::Hasher::new();
    if len >= HASH_CHUNK_HINT {
        h.update_mmap_rayon(path)?;
    } else {
        h.update(&std::fs::read(path)?);
    }
    Ok(h.finalize().to_hex().to_string())
}

/// The blake3 digest (hex) of bytes.
pub fn hash_bytes(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_hash_matches_bytes_hash_small_and_big() {
        let t = tempfile::tempdir().unwrap();
        for len in [0usize, 10, HASH_CHUNK_HINT as usize + 17, 3 << 20] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = t.path().join(format!("f{len}"));
            std::fs::write(&p, &data).unwrap();
            assert_eq!(hash_file(&p).unwrap(), hash_bytes(&data), "len {len}");
        }
    }
}
