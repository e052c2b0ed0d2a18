//! Readable failures when bytes or JSON differ: the first differing offset
//! with hex context, the JSON paths at which two values differ.

/// Panic with the first differing offset and hex context if `a != b`.
pub fn assert_same_bytes(what: &str, a_name: &str, a: &[u8], b_name: &str, b: &[u8]) {
    if a == b {
        return;
    }
    let off = a
        .iter()
        .zip(b.iter())
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let ctx = |v: &[u8]| {
        let start = off.saturating_sub(32) & !7;
        let end = (off + 48).min(v.len());
        let hex: Vec<String> = v[start.min(end)..end]
            .chunks(8)
            .map(|c| c.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        format!("from offset {start}: {}", hex.join(" "))
    };
    panic!(
        "{what}: {a_name} ({} bytes) and {b_name} ({} bytes) first differ at byte offset {off}\n  {a_name}: {}\n  {b_name}: {}",
        a.len(),
        b.len(),
        ctx(a),
        ctx(b)
    );
}

/// The JSON paths at which two values differ (up to 20).
pub fn json_diff(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    fn walk(a: &serde_json::Value, b: &serde_json::Value, at: String, out: &mut Vec<String>) {
        use serde_json::Value::*;
        if out.len() >= 20 {
            return;
        }
        match (a, b) {
            (Object(x), Object(y)) => {
                for (k, v) in x {
                    match y.get(k) {
                        Some(w) => walk(v, w, format!("{at}.{k:?}"), out),
                        None => out.push(format!("{at}.{k:?}: only on the left: {v}")),
                    }
                }
                for (k, w) in y {
                    if !x.contains_key(k) {
                        out.push(format!("{at}.{k:?}: only on the right: {w}"));
                    }
                }
            }
            (Array(x), Array(y)) if x.len() == y.len() => {
                for (i, (v, w)) in x.iter().zip(y).enumerate() {
                    walk(v, w, format!("{at}[{i}]"), out);
                }
            }
            _ if a == b => {}
            _ => out.push(format!("{at}: left {a} / right {b}")),
        }
    }
    let mut out = Vec::new();
    walk(a, b, String::new(), &mut out);
    out
}
