//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1e3`) as exact integers of
//! thousandths ("milli-units"), rounded up like upstream's `Quantity.MilliValue`. The scheduler
//! compares requests and allocatable in this one unit for every resource.

/// Why a quantity did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
)]
pub struct QuantityError(pub String);

/// `(numerator, denominator)` of a suffix's multiplier.
fn suffix_factor(suffix: &str) -> Option<(i128, i128)> {
    let pow = |b: i128, e: u32| b.pow(e);
    Some(match suffix {
        "" => (1, 1),
        "n" => (1, pow(10, 9)),
        "u" => (1, pow(10, 6)),
        "m" => (1, 1000),
        "k" => (1000, 1),
        "M" => (pow(10, 6), 1),
        "G" => (pow(10, 9), 1),
        "T" => (pow(10, 12), 1),
        "P" => (pow(10, 15), 1),
        "E" => (pow(10, 18), 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().ok()?;
            if e.unsigned_abs() > 24 {
                return None;
            }
            if e >= 0 {
                (pow(10, e as u32), 1)
            } else {
                (1, pow(10, e.unsigned_abs()))
            }
        }
        _ => return None,
    })
}

/// Parses `s` into milli-units, rounding up (a request of `1n` cpu is `1m`).
pub fn parse_milli(s: &str) -> Result<i128, QuantityError> {
    let err = || QuantityError(s.to_string());
    let t = s.trim();
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (-1, &t[1..]),
        Some(b'+') => (1, &t[1..]),
        _ => (1, t),
    };
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err());
    }
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.len() + frac_part.len() > 30 {
        return Err(err());
    }
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().map_err(|_| err())?;
    let (num, den) = suffix_factor(suffix).ok_or_else(err)?;
    let den = den
        .checked_mul(10i128.pow(frac_part.len() as u32))
        .ok_or_else(err)?;
    let scaled = mantissa
        .checked_mul(num)
        .and_then(|v| v.checked_mul(1000))
        .ok_or_else(err)?;
    // Ceiling division of a non-negative value.
    let milli = (scaled + den - 1) / den;
    Ok(sign * milli)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory_forms() {
        assert_eq!(parse_milli("100m").unwrap(), 100);
        assert_eq!(parse_milli("1").unwrap(), 1000);
        assert_eq!(parse_milli("0.5").unwrap(), 500);
        assert_eq!(parse_milli("2.25").unwrap(), 2250);
        assert_eq!(parse_milli("1n").unwrap(), 1, "rounded up");
        assert_eq!(parse_milli("1500u").unwrap(), 2);
        assert_eq!(parse_milli("128Mi").unwrap(), 128 * 1024 * 1024 * 1000);
        assert_eq!(parse_milli("1G").unwrap(), 1_000_000_000_000);
        assert_eq!(parse_milli("1k").unwrap(), 1_000_000);
        assert_eq!(parse_milli("1e3").unwrap(), 1_000_000);
        assert_eq!(parse_milli("5E-3").unwrap(), 5);
        assert_eq!(parse_milli("+4").unwrap(), 4000);
        assert_eq!(parse_milli("-1").unwrap(), -1000);
        assert_eq!(parse_milli("0").unwrap(), 0);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "m",
            "1x",
            "1.2.3",
            ".",
            "1Ki5",
            "abc",
            "1e99",
            "9999999999999999999999999999999999",
        ] {
            assert!(parse_milli(bad).is_err(), "{bad}");
        }
    }
}
