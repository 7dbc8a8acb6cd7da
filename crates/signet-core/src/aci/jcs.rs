//! JSON Canonicalization Scheme (RFC 8785) over [`serde_json::Value`]: the form ACI hashes
//! and signs its own documents in (the keyset, receipts, sessions).
//!
//! The rules, all of RFC 8785 §3.2:
//! - no whitespace between tokens;
//! - object members sorted by their names as arrays of UTF-16 code units (not by UTF-8
//!   bytes: the two orders differ for characters above U+FFFF against U+E000..U+FFFF);
//! - strings written as ECMAScript's `JSON.stringify` writes them: `"` and `\` escaped, the
//!   control characters U+0000..U+001F as `\b \t \n \f \r` or `\u00xx` (lowercase hex), every
//!   other character as itself (no `\u` escapes for non-ASCII, nor for U+2028/U+2029);
//! - numbers as ECMAScript's `Number.prototype.toString` writes an IEEE 754 double
//!   (RFC 8785 §3.2.2.3): integers exactly representable as doubles print as plain integers,
//!   other values use the shortest digits that round-trip, in plain or exponent form by the
//!   ECMAScript thresholds (`1e+21`, `0.000001`, `1e-7`). NaN and infinities are not JSON.
//!
//! ACI's own documents use only ASCII names and integers, for which JCS is compact JSON with
//! sorted names; the general rules are kept so that a verifier canonicalizes whatever a
//! service served exactly as the RFC says.

use serde_json::{Map, Number, Value};

/// Why a value has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JcsError {
    /// A number that is not a finite IEEE 754 double (RFC 8785 §3.2.2.3).
    #[error("a number JCS cannot represent: {0}")]
    Number(String),
}

/// The canonical form of `value`, as text (always ASCII-compatible UTF-8).
pub fn canonicalize(value: &Value) -> Result<String, JcsError> {
    let mut out = String::new();
    write_value(value, &mut out)?;
    Ok(out)
}

/// The canonical form of `value`, as bytes (what is hashed and signed).
pub fn canonical_bytes(value: &Value) -> Result<Vec<u8>, JcsError> {
    canonicalize(value).map(String::into_bytes)
}

fn write_value(value: &Value, out: &mut String) -> Result<(), JcsError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(number, out)?,
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => write_object(map, out)?,
    }
    Ok(())
}

fn write_object(map: &Map<String, Value>, out: &mut String) -> Result<(), JcsError> {
    let mut members: Vec<(&String, &Value)> = map.iter().collect();
    members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
    out.push('{');
    for (i, (name, value)) in members.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(name, out);
        out.push(':');
        write_value(value, out)?;
    }
    out.push('}');
    Ok(())
}

fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{0c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if u32::from(c) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Integers within ±2^53 are exact doubles and print as themselves.
const MAX_SAFE: u64 = 1 << 53;

fn write_number(number: &Number, out: &mut String) -> Result<(), JcsError> {
    if let Some(n) = number.as_u64()
        && n <= MAX_SAFE
    {
        out.push_str(&n.to_string());
        return Ok(());
    }
    if let Some(n) = number.as_i64()
        && n.unsigned_abs() <= MAX_SAFE
    {
        out.push_str(&n.to_string());
        return Ok(());
    }
    // Larger integers and fractions: the value JSON parsers give them, an IEEE double.
    let double = number
        .as_f64()
        .ok_or_else(|| JcsError::Number(number.to_string()))?;
    out.push_str(&format_double(double)?);
    Ok(())
}

/// ECMAScript `Number.prototype.toString(10)` of a finite double (ECMA-262 §6.1.6.1.20), as
/// RFC 8785 §3.2.2.3 requires.
pub fn format_double(value: f64) -> Result<String, JcsError> {
    if !value.is_finite() {
        return Err(JcsError::Number(value.to_string()));
    }
    if value == 0.0 {
        // Both zeros print as "0".
        return Ok("0".to_owned());
    }
    // Rust's `{:e}` gives the shortest digits that round-trip (the same digits ECMAScript
    // chooses), as `d[.ddd]e[-]x`.
    let scientific = format!("{:e}", value.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .ok_or_else(|| JcsError::Number(scientific.clone()))?;
    let exponent: i32 = exponent
        .parse()
        .map_err(|_| JcsError::Number(scientific.clone()))?;
    let mut digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    break_tie_to_even(value.abs(), exponent, &mut digits);
    let k = i32::try_from(digits.len()).map_err(|_| JcsError::Number(scientific.clone()))?;
    // The value is 0.digits × 10^n.
    let n = exponent + 1;
    let mut out = String::new();
    if value < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.push_str(int);
        out.push('.');
        out.push_str(frac);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        let (first, rest) = digits.split_at(1);
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        out.push('e');
        out.push(if n - 1 < 0 { '-' } else { '+' });
        out.push_str(&(n - 1).abs().to_string());
    }
    Ok(out)
}

/// ECMAScript picks, of two shortest digit strings equally close to the value, the one whose
/// last digit is even; Rust's shortest formatting rounds such a tie up. A tie exists only
/// when the value's exact decimal expansion is the shortest digits plus one more digit, a 5:
/// then the two candidates are that prefix and the prefix plus one in the last place.
fn break_tie_to_even(value: f64, exponent: i32, digits: &mut String) {
    // A double's exact decimal expansion has at most 767 significant digits.
    let exact = format!("{value:.800e}");
    let Some((mantissa, exact_exponent)) = exact.split_once('e') else {
        return;
    };
    if exact_exponent.parse::<i32>().ok() != Some(exponent) {
        return;
    }
    let exact_digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exact_digits = exact_digits.trim_end_matches('0');
    let k = digits.len();
    if exact_digits.len() != k + 1 || !exact_digits.ends_with('5') {
        return;
    }
    let prefix = &exact_digits[..k];
    let last_even = |d: &str| d.bytes().last().is_some_and(|b| (b - b'0') % 2 == 0);
    // `digits` is either the prefix (rounded down) or the prefix plus one (rounded up).
    if digits.as_str() != prefix && !last_even(digits) && last_even(prefix) {
        *digits = prefix.to_owned();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_are_sorted_by_utf16_code_units_and_nothing_is_spaced() {
        let value = json!({"b": [1, {"d": true, "c": null}], "a": "x", "": 0});
        assert_eq!(
            canonicalize(&value).unwrap(),
            r#"{"":0,"a":"x","b":[1,{"c":null,"d":true}]}"#
        );
        // RFC 8785 §3.2.3: U+1F600 (surrogates D83D DE00) sorts before U+FB33 in UTF-16,
        // although its UTF-8 bytes sort after.
        let value = json!({"\u{fb33}": 1, "\u{1f600}": 2, "\u{80}": 3, "\r": 4, "1": 5});
        assert_eq!(
            canonicalize(&value).unwrap(),
            "{\"\\r\":4,\"1\":5,\"\u{80}\":3,\"\u{1f600}\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn strings_are_escaped_as_ecmascript_does() {
        let value = json!("\u{0}\u{8}\t\n\u{b}\u{c}\r\u{1f}\"\\/\u{7f}\u{2028}é€😀");
        assert_eq!(
            canonicalize(&value).unwrap(),
            "\"\\u0000\\b\\t\\n\\u000b\\f\\r\\u001f\\\"\\\\/\u{7f}\u{2028}é€😀\""
        );
    }

    #[test]
    fn numbers_follow_the_rfc_8785_table() {
        // RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
        for (bits, text) in [
            (0x0000000000000000_u64, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ] {
            assert_eq!(
                format_double(f64::from_bits(bits)).unwrap(),
                text,
                "{bits:#x}"
            );
        }
        assert!(format_double(f64::NAN).is_err());
        assert!(format_double(f64::INFINITY).is_err());
        // Integers as ACI uses them, and the RFC's own example values.
        let value: Value =
            serde_json::from_str(r#"[1790000000, -1, 0, 4.50, 2e-3, 1E30, 1e-7, 100]"#).unwrap();
        assert_eq!(
            canonicalize(&value).unwrap(),
            "[1790000000,-1,0,4.5,0.002,1e+30,1e-7,100]"
        );
        // Beyond 2^53 an integer is the double a JSON parser makes of it.
        let value: Value =
            serde_json::from_str("[9007199254740993, 18446744073709551615]").unwrap();
        assert_eq!(
            canonicalize(&value).unwrap(),
            "[9007199254740992,18446744073709552000]"
        );
    }

    #[test]
    fn the_rfc_8785_sample_canonicalizes_as_published() {
        // RFC 8785 §3.2.2 input (numbers and literals) and its §3.2.3-sorted output.
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let value: Value = serde_json::from_str(input).unwrap();
        assert_eq!(
            canonicalize(&value).unwrap(),
            "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}"
        );
    }
}
