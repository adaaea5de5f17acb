//! Naming rules for topics and groups, as Kafka's: 1..=249 characters of `[A-Za-z0-9._-]`, not `.` or
//! `..`. Names become directory names, so nothing else is allowed.

use crate::error::BrokerError;

/// Longest name allowed.
pub const MAX_NAME_LEN: usize = 249;

/// Checks a topic or group name; `field` names the request field in the error.
///
/// # Errors
/// [`BrokerError::InvalidName`] saying which rule the name breaks.
pub fn validate_name(field: &'static str, name: &str) -> Result<(), BrokerError> {
    let reason = if name.is_empty() {
        Some("must not be empty")
    } else if name.len() > MAX_NAME_LEN {
        Some("must be at most 249 characters")
    } else if name == "." || name == ".." {
        Some("must not be `.` or `..`")
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("may only contain ASCII letters, digits, `.`, `_` and `-`")
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => {
            let mut value: String = name.chars().take(64).flat_map(char::escape_default).collect();
            if name.chars().count() > 64 {
                value.push_str("...");
            }
            Err(BrokerError::InvalidName { field, value, reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "orders", "my.topic_v2-x", &"x".repeat(249)] {
            validate_name("topic", ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "tab\t",
            "ü",
            &"x".repeat(250),
            "a\u{0}",
        ] {
            let e = validate_name("topic", bad).unwrap_err();
            assert!(
                matches!(e, BrokerError::InvalidName { field: "topic", .. }),
                "{bad:?}"
            );
        }
    }
}
