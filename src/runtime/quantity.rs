//! Kubernetes resource quantities (`500m`, `1.5`, `64Mi`, `1G`, `2e3`) as the numbers the cgroup
//! limits need: CPU in millicores, memory in bytes.

/// The value of a quantity in units of 1/1000 (the registry's parser, which admission uses too).
fn parse_milli(q: &str) -> Result<i128, String> {
    crate::registry::quantity::parse_milli(q.trim())
        .map_err(|_| format!("invalid quantity \"{}\"", q.trim()))
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
