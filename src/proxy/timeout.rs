//! The `grpc-timeout` header: parsing the client's budget and writing what is left for the backend.

use std::time::Duration;

use http::HeaderValue;

/// Parses `grpc-timeout`: 1 to 8 ASCII digits and a unit (`H M S m u n`).
pub fn parse(value: &HeaderValue) -> Result<Duration, String> {
    let bad = || format!("invalid grpc-timeout {value:?}");
    let s = value.to_str().map_err(|_| bad())?;
    let (digits, unit) = s.split_at(s.len().checked_sub(1).ok_or_else(bad)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    })
}

/// Encodes a budget in the finest unit that fits 8 digits, rounding up so the backend never gets 0 too early.
pub fn encode(d: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = d.as_nanos();
    let units: [(u128, &str); 6] = [
        (1, "n"),
        (1_000, "u"),
        (1_000_000, "m"),
        (1_000_000_000, "S"),
        (60_000_000_000, "M"),
        (3_600_000_000_000, "H"),
    ];
    for (per, unit) in units {
        let n = nanos.div_ceil(per);
        if n <= MAX {
            return HeaderValue::from_str(&format!("{n}{unit}")).expect("ascii");
        }
    }
    HeaderValue::from_static("99999999H")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        let p = |s: &'static str| parse(&HeaderValue::from_static(s));
        assert_eq!(p("1H").unwrap(), Duration::from_secs(3600));
        assert_eq!(p("2M").unwrap(), Duration::from_secs(120));
        assert_eq!(p("3S").unwrap(), Duration::from_secs(3));
        assert_eq!(p("250m").unwrap(), Duration::from_millis(250));
        assert_eq!(p("7u").unwrap(), Duration::from_micros(7));
        assert_eq!(p("99999999n").unwrap(), Duration::from_nanos(99_999_999));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S"] {
            assert!(parse(&HeaderValue::from_static(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn encodes_within_eight_digits_and_round_trips() {
        assert_eq!(encode(Duration::from_nanos(500)), "500n");
        assert_eq!(encode(Duration::from_millis(1500)), "1500000u");
        assert_eq!(encode(Duration::from_secs(1000)), "1000000m");
        for d in [Duration::from_micros(1234), Duration::from_secs(86_400), Duration::from_millis(99)] {
            let back = parse(&encode(d)).unwrap();
            assert!(back >= d && back - d < d / 1000 + Duration::from_nanos(1), "{d:?} -> {back:?}");
        }
    }
}
