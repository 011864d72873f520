//! Kubernetes resource quantities (`500m`, `1.5`, `64Mi`, `1G`, `2e3`) as the numbers the cgroup
//! limits need: CPU in millicores, memory in bytes.

/// The value of a quantity in units of 1/1000 (so `500m` → 500, `2` → 2000, `1Ki` → 1024000).
pub fn parse_milli(q: &str) -> Result<i128, String> {
    let q = q.trim();
    let bad = || format!("invalid quantity \"{q}\"");
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    if num.is_empty() {
        return Err(bad());
    }
    // Exact decimal arithmetic: value * 1000 as an integer, rounding up like upstream.
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let neg = int.starts_with('-');
    let int = int.trim_start_matches(['+', '-']);
    let digits = format!("{int}{frac}");
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let mantissa: i128 = digits.parse().map_err(|_| bad())?;
    let mut scale: i32 = -(frac.len() as i32);
    let mut factor: i128 = 1;
    match suffix {
        "" => {}
        "m" => scale -= 3,
        "k" => scale += 3,
        "M" => scale += 6,
        "G" => scale += 9,
        "T" => scale += 12,
        "P" => scale += 15,
        "E" => scale += 18,
        "Ki" => factor = 1 << 10,
        "Mi" => factor = 1 << 20,
        "Gi" => factor = 1 << 30,
        "Ti" => factor = 1 << 40,
        "Pi" => factor = 1 << 50,
        "Ei" => factor = 1 << 60,
        s if s.starts_with(['e', 'E']) => {
            scale += s[1..].parse::<i32>().map_err(|_| bad())?;
        }
        _ => return Err(bad()),
    }
    scale += 3;
    let mut v = mantissa.checked_mul(factor).ok_or_else(bad)?;
    if scale >= 0 {
        v = v
            .checked_mul(10i128.checked_pow(scale as u32).ok_or_else(bad)?)
            .ok_or_else(bad)?;
    } else {
        let d = 10i128.checked_pow((-scale) as u32).ok_or_else(bad)?;
        v = (v + d - 1) / d;
    }
    Ok(if neg { -v } else { v })
}

/// CPU in millicores.
pub fn cpu_millis(q: &str) -> Result<i64, String> {
    parse_milli(q).map(|v| v as i64)
}

/// Memory (or any byte count) in bytes, rounded up.
pub fn bytes(q: &str) -> Result<i64, String> {
    parse_milli(q).map(|v| ((v + 999) / 1000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_like_upstream() {
        assert_eq!(cpu_millis("500m").unwrap(), 500);
        assert_eq!(cpu_millis("2").unwrap(), 2000);
        assert_eq!(cpu_millis("0.1").unwrap(), 100);
        assert_eq!(cpu_millis("1.5").unwrap(), 1500);
        assert_eq!(bytes("64Mi").unwrap(), 64 << 20);
        assert_eq!(bytes("1G").unwrap(), 1_000_000_000);
        assert_eq!(bytes("128974848").unwrap(), 128974848);
        assert_eq!(bytes("129e6").unwrap(), 129_000_000);
        assert!(bytes("12 MB").is_err());
        assert!(bytes("Mi").is_err());
    }
}
