//! Finds a TrueType font for chart text and registers it with plotters' ab_glyph backend.

use std::sync::OnceLock;

/// Where we look, in order (Debian's fonts-dejavu-core first).
const CANDIDATES: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

pub const SEARCHED: &str = "looked for DejaVuSans.ttf, LiberationSans and FreeSans under /usr/share/fonts; set RINGPORT_BENCH_FONT to a .ttf file, or install fonts-dejavu-core";

/// Registers the first usable font as "sans-serif" once; returns its path, or None.
pub fn load_font() -> Option<&'static str> {
    static FONT: OnceLock<Option<String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let env = std::env::var("RINGPORT_BENCH_FONT").ok();
        env.iter()
            .map(String::as_str)
            .chain(CANDIDATES.iter().copied())
            .find_map(|path| {
                let bytes = std::fs::read(path).ok()?;
                // plotters keeps registered fonts for the life of the process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font(
                    "sans-serif",
                    plotters::style::FontStyle::Normal,
                    bytes,
                )
                .ok()?;
                Some(path.to_string())
            })
    })
    .as_deref()
}
