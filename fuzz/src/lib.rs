//! Helpers shared by the fuzz targets.
//!
//! Structured targets read their input as fields separated by NUL bytes (HTTP header values
//! cannot hold NUL), the last field taking the rest (so a body may hold anything). The corpus
//! stays readable and a seed can be written by hand.

/// Splits `data` into at most `n` NUL-separated fields; missing fields are `None`.
pub fn fields(data: &[u8], n: usize) -> Vec<Option<&[u8]>> {
    let mut out: Vec<Option<&[u8]>> = data.splitn(n, |b| *b == 0).map(Some).collect();
    out.resize(n, None);
    out
}

/// A field as text (lossy, so every input exercises the string parsers).
pub fn text(field: Option<&[u8]>) -> Option<String> {
    field.map(|f| String::from_utf8_lossy(f).into_owned())
}

/// A clock value: decimal text if it parses, else up to 8 raw bytes little-endian, so both
/// readable seeds and the mutator's extreme integers (i64::MIN, i64::MAX, …) reach it.
pub fn clock(field: Option<&[u8]>, default: i64) -> i64 {
    let Some(f) = field else { return default };
    if let Some(v) = std::str::from_utf8(f).ok().and_then(|s| s.parse().ok()) {
        return v;
    }
    let mut b = [0u8; 8];
    let n = f.len().min(8);
    b[..n].copy_from_slice(&f[..n]);
    i64::from_le_bytes(b)
}
