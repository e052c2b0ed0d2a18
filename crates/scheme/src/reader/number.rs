//! Number tokens as written (integers, decimals, exponents, a radix),
//! shared by the reader and `string->number`.

/// A number as written; shared with `string->number`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Number {
    Int(i64),
    Float(f64),
}

/// Parses a number token (no `#x`-style prefix); `None` if it is not one.
pub(crate) fn parse_number(token: &str, radix: u32) -> Option<Number> {
    match token {
        "+inf.0" => return Some(Number::Float(f64::INFINITY)),
        "-inf.0" => return Some(Number::Float(f64::NEG_INFINITY)),
        "+nan.0" | "-nan.0" => return Some(Number::Float(f64::NAN)),
        _ => {}
    }
    let digits = token.strip_prefix(['+', '-']).unwrap_or(token);
    if digits.is_empty() {
        return None;
    }
    if radix != 10 {
        if !digits.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        return match i64::from_str_radix(token, radix) {
            Ok(i) => Some(Number::Int(i)),
            Err(_) => u128::from_str_radix(digits, radix).ok().map(|v| {
                let x = v as f64;
                Number::Float(if token.starts_with('-') { -x } else { x })
            }),
        };
    }
    if let Some((n, d)) = token.split_once('/') {
        // No rationals: 1/2 reads as the float 0.5 (documented in lib.rs).
        let (Some(Number::Int(n)), Some(Number::Int(d))) =
            (parse_number(n, 10), parse_number(d, 10))
        else {
            return None;
        };
        if d <= 0 || d.to_string() != token.split_once('/')?.1 {
            return None;
        }
        return Some(if n % d == 0 {
            Number::Int(n / d)
        } else {
            Number::Float(n as f64 / d as f64)
        });
    }
    if digits.chars().all(|c| c.is_ascii_digit()) {
        return Some(match token.parse::<i64>() {
            Ok(i) => Number::Int(i),
            Err(_) => Number::Float(token.parse::<f64>().ok()?),
        });
    }
    // Decimal: digits, optional '.', digits, optional exponent; at least one
    // digit in the mantissa. Accepts `2.` and `.5`.
    let (mantissa, exponent) = match digits.find(['e', 'E']) {
        Some(i) => (&digits[..i], Some(&digits[i + 1..])),
        None => (digits, None),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let ok_mantissa = int_part.chars().all(|c| c.is_ascii_digit())
        && frac_part.chars().all(|c| c.is_ascii_digit())
        && !(int_part.is_empty() && frac_part.is_empty());
    let ok_exponent = match exponent {
        None => true,
        Some(e) => {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
        }
    };
    if !ok_mantissa || !ok_exponent {
        return None;
    }
    let mut normalized = String::with_capacity(token.len() + 2);
    if token.starts_with('-') {
        normalized.push('-');
    }
    normalized.push_str(if int_part.is_empty() { "0" } else { int_part });
    normalized.push('.');
    normalized.push_str(if frac_part.is_empty() { "0" } else { frac_part });
    if let Some(e) = exponent {
        normalized.push('e');
        normalized.push_str(e);
    }
    normalized.parse::<f64>().ok().map(Number::Float)
}
