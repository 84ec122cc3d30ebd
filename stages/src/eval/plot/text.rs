//! [`Text`]: a drawing backend that lays out and rasterises text itself (with `ab_glyph` and the
//! embedded font) and passes everything else to the backend it wraps.
//!
//! plotters 0.3.7's `ab_glyph` text drops each glyph's left side bearing: every glyph is drawn
//! from the left edge of its ink, not from its pen position, so letters with a wide bearing crowd
//! their neighbour and the gap after a space nearly disappears ("1 /impostor", "AU C",
//! "diffprob dean" for "diffprob clean"). Here a glyph is placed at its pen position (advance
//! plus kerning, the bearing kept) and the box used for anchoring and for plotters' layout
//! (legend width, label areas) is the same advance sum, so measuring and drawing agree.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    // The same bytes `register_font` parsed before any plot is drawn.
    FONT.get_or_init(|| FontRef::try_from_slice(super::FONT).expect("the embedded font parses"))
}

/// Width (the pen's advance, kerning included) and height (ascent − descent) of `text` at
/// `size` pixels: plotters' `size` is the font's pixel scale, as in its own text code.
pub fn measure(text: &str, size: f64) -> (u32, u32) {
    let f = font().as_scaled(PxScale::from(size as f32));
    let (width, _) = pen_positions(text, size, |_, _| {});
    (
        width.ceil().max(0.0) as u32,
        (f.ascent() - f.descent()).ceil() as u32,
    )
}

/// Call `at(char, x)` with each character's pen position; returns the total advance and the
/// ascent (the baseline's distance below the top of the box).
fn pen_positions(text: &str, size: f64, mut at: impl FnMut(char, f32)) -> (f32, f32) {
    let f = font().as_scaled(PxScale::from(size as f32));
    let mut caret = 0f32;
    let mut prev = None;
    for c in text.chars() {
        let id = f.glyph_id(c);
        if let Some(p) = prev {
            caret += f.kern(p, id);
        }
        at(c, caret);
        caret += f.h_advance(id);
        prev = Some(id);
    }
    (caret, f.ascent())
}

/// A backend whose text is drawn by [`measure`]'s layout; see the module docs.
pub struct Text<B>(pub B);

impl<B: DrawingBackend> DrawingBackend for Text<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }
    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.ensure_prepared()
    }
    fn present(&mut self) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.present()
    }
    fn draw_pixel(
        &mut self,
        p: BackendCoord,
        c: BackendColor,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_pixel(p, c)
    }
    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_line(from, to, style)
    }
    fn draw_rect<S: BackendStyle>(
        &mut self,
        a: BackendCoord,
        b: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_rect(a, b, style, fill)
    }
    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_path(path, style)
    }
    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }
    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<B::ErrorType>> {
        Ok(measure(text, style.size()))
    }

    /// Anchored and rotated as plotters' default `draw_text`, each glyph at its pen position.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let size = style.size();
        let (w, h) = measure(text, size);
        let (w, h) = (w as i32, h as i32);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let trans = style.transform();
        let (cw, ch) = self.get_size();
        let scale = PxScale::from(size as f32);
        let mut pixels = Vec::new();
        let (_, ascent) = pen_positions(text, size, |_, _| {});
        pen_positions(text, size, |c, x| {
            let glyph = font()
                .glyph_id(c)
                .with_scale_and_position(scale, point(x, ascent));
            if let Some(g) = font().outline_glyph(glyph) {
                let b = g.px_bounds();
                g.draw(|gx, gy, cov| {
                    if cov > 0.0 {
                        let (x, y) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                        pixels.push((x, y, cov.min(1.0)));
                    }
                });
            }
        });
        for (x, y, cov) in pixels {
            let (x, y) = trans.transform(x + dx, y + dy);
            let (x, y) = (pos.0 + x, pos.1 + y);
            if x >= 0 && x < cw as i32 && y >= 0 && y < ch as i32 {
                let c = BackendColor {
                    alpha: color.alpha * f64::from(cov),
                    rgb: color.rgb,
                };
                self.0.draw_pixel((x, y), c)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_space_advances_the_pen_and_measuring_adds_up() {
        let size = 18.0;
        let a = measure("a", size).0;
        let (space, _) = measure(" ", size);
        let (a_a, _) = measure("a a", size);
        let (aa, _) = measure("aa", size);
        assert!(space > 0 && a_a > aa, "{a} {space} {a_a} {aa}");
        assert!(space > 0);
        // No kerning pair with a space in Lato: the words' widths add up (± rounding).
        assert!(
            (a_a as i64 - (2 * a + space) as i64).abs() <= 2,
            "{a_a} vs {a} {space}"
        );
    }
}
