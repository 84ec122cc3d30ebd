//! Image decoding as the reference does it: [`decode_rgb`] decodes JPEGs with libjpeg-turbo itself
//! (the decoder behind the reference's `mx.image.imdecode` / `cv2.imdecode` and PIL), with their
//! settings: accurate integer IDCT (`JDCT_ISLOW`), fancy upsampling, RGB output. Grayscale JPEGs
//! come out as three equal channels, as PIL's `convert("RGB")` gives them. Other formats (PNG,
//! BMP) go through the `image` crate. [`decode_rgb_sized`] also brings an image to a given size
//! (bilinear), for benchmarks whose crops are not at the network's input size.
//!
//! Each thread keeps one TurboJPEG handle, so the loader's workers decode without allocating one
//! per image.

use std::cell::RefCell;

use anyhow::{anyhow, Result};

thread_local! {
    static DECOMPRESSOR: RefCell<Option<turbojpeg::Decompressor>> = const { RefCell::new(None) };
}

/// Whether `bytes` start like a JPEG (SOI marker).
pub fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8])
}

/// Decode an image into HWC RGB u8 in `out` (resized to fit). Returns (height, width). `what`
/// names the image in errors.
pub fn decode_rgb(
    bytes: &[u8],
    out: &mut Vec<u8>,
    what: &dyn Fn() -> String,
) -> Result<(u32, u32)> {
    if is_jpeg(bytes) {
        return decode_jpeg(bytes, out).map_err(|e| {
            anyhow!(
                "{}: undecodable JPEG ({} bytes): {e}\nhint: the image data is corrupt",
                what(),
                bytes.len()
            )
        });
    }
    let img = image::load_from_memory(bytes)
        .map_err(|e| anyhow!("{}: undecodable image ({} bytes): {e}\nhint: the image data is corrupt or not an image", what(), bytes.len()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    out.clear();
    out.extend_from_slice(img.as_raw());
    Ok((h, w))
}

fn decode_jpeg(bytes: &[u8], out: &mut Vec<u8>) -> std::result::Result<(u32, u32), String> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut d = turbojpeg::Decompressor::new().map_err(|e| e.to_string())?;
            // The library defaults, stated: fancy upsampling on (and the accurate integer IDCT,
            // TurboJPEG's default, which the crate does not expose).
            d.set_fast_upsample(false).map_err(|e| e.to_string())?;
            *slot = Some(d);
        }
        let d = slot.as_mut().expect("set just above");
        let header = d.read_header(bytes).map_err(|e| e.to_string())?;
        let (w, h) = (header.width, header.height);
        out.resize(w * h * 3, 0);
        let image = turbojpeg::Image {
            pixels: out.as_mut_slice(),
            width: w,
            pitch: w * 3,
            height: h,
            format: turbojpeg::PixelFormat::RGB,
        };
        d.decompress(bytes, image).map_err(|e| e.to_string())?;
        Ok((h as u32, w as u32))
    })
}

/// Decode an image and bring it to `w × h` RGB (bilinear resize when it differs).
pub fn decode_rgb_sized(
    bytes: &[u8],
    w: usize,
    h: usize,
    what: &dyn Fn() -> String,
) -> Result<Vec<u8>> {
    let mut rgb = Vec::new();
    let (ih, iw) = decode_rgb(bytes, &mut rgb, what)?;
    if (ih as usize, iw as usize) == (h, w) {
        return Ok(rgb);
    }
    let img = image::RgbImage::from_raw(iw, ih, rgb)
        .ok_or_else(|| anyhow!("{}: decoded buffer does not match {iw}x{ih}", what()))?;
    Ok(image::imageops::resize(
        &img,
        w as u32,
        h as u32,
        image::imageops::FilterType::Triangle,
    )
    .into_raw())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg(w: u32, h: u32) -> Vec<u8> {
        let img =
            image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, 77]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn decodes_jpeg_and_png_and_names_bad_data() {
        let mut buf = Vec::new();
        assert_eq!(
            decode_rgb(&jpeg(20, 12), &mut buf, &|| "a".into()).unwrap(),
            (12, 20)
        );
        assert_eq!(buf.len(), 20 * 12 * 3);
        let mut png = Vec::new();
        image::RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode_rgb(&png, &mut buf, &|| "b".into()).unwrap(), (2, 3));
        assert_eq!(&buf[..3], &[1, 2, 3]);
        let mut bad = jpeg(20, 12);
        bad.truncate(40);
        let e = decode_rgb(&bad, &mut buf, &|| "x.rec key 3".into())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.rec key 3: undecodable JPEG") && e.contains("hint:"),
            "{e}"
        );
        let e = decode_rgb(b"nope", &mut buf, &|| "y".into())
            .unwrap_err()
            .to_string();
        assert!(e.contains("y: undecodable image"), "{e}");
        assert_eq!(
            decode_rgb_sized(&jpeg(20, 12), 8, 8, &|| "c".into())
                .unwrap()
                .len(),
            8 * 8 * 3
        );
    }
}
