//! Writing a `.drv` file: the ATerm exactly as Nix prints it, and the
//! variant with inputs replaced and outputs masked that
//! `hashDerivationModulo` hashes.

use super::{Derivation, InputDrvs};

/// Append `s` quoted, escaping exactly what Nix escapes.
fn print_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn print_list<T>(
    out: &mut String,
    items: impl IntoIterator<Item = T>,
    mut f: impl FnMut(&mut String, T),
) {
    out.push('[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        f(out, item);
    }
    out.push(']');
}

fn print_strings<'s>(out: &mut String, items: impl IntoIterator<Item = &'s String>) {
    print_list(out, items, |o, s| print_string(o, s));
}

impl Derivation {
    /// The ATerm text, exactly as Nix writes it.
    pub fn to_aterm(&self) -> String {
        self.to_aterm_with(&self.input_drvs, false)
    }

    /// The ATerm with `input_drvs` in place of the real input derivations and,
    /// if `mask_outputs`, every output path and every env variable named after
    /// an output printed as "". This is what `hashDerivationModulo` hashes:
    /// inputs are replaced by their own modulo hashes so that a change which
    /// does not alter an input's outputs (e.g. a fixed-output fetcher's URL)
    /// does not ripple into every dependent's paths; outputs are masked while
    /// they are being computed, since they depend on this very hash.
    pub fn to_aterm_with(&self, input_drvs: &InputDrvs, mask_outputs: bool) -> String {
        let mut s = String::with_capacity(1024);
        s.push_str("Derive(");
        print_list(&mut s, &self.outputs, |o, (name, out)| {
            o.push('(');
            print_string(o, name);
            o.push(',');
            print_string(o, if mask_outputs { "" } else { &out.path });
            o.push(',');
            print_string(o, &out.hash_algo);
            o.push(',');
            print_string(o, &out.hash);
            o.push(')');
        });
        s.push(',');
        print_list(&mut s, input_drvs, |o, (path, outs)| {
            o.push('(');
            print_string(o, path);
            o.push(',');
            print_strings(o, outs);
            o.push(')');
        });
        s.push(',');
        print_strings(&mut s, &self.input_srcs);
        s.push(',');
        print_string(&mut s, &self.system);
        s.push(',');
        print_string(&mut s, &self.builder);
        s.push(',');
        print_strings(&mut s, &self.args);
        s.push(',');
        print_list(&mut s, &self.env, |o, (k, v)| {
            o.push('(');
            print_string(o, k);
            o.push(',');
            let masked = mask_outputs && self.outputs.contains_key(k);
            print_string(o, if masked { "" } else { v });
            o.push(')');
        });
        s.push(')');
        s
    }
}
