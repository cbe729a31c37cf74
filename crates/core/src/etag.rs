//! `If-Match` semantics (spec §5.3).

/// What an `If-Match` header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: unconditional.
    Absent,
    /// `*` or `"*"`: the resource must exist, any version.
    Any,
    /// A specific etag (unquoted contents).
    Etag(String),
}

impl IfMatch {
    /// Parses the header value. Quotes and a weak `W/` prefix are removed; an
    /// unquoted value is treated like a quoted one (stricter than IoT Hub's old
    /// habit of ignoring it).
    pub fn parse(header: Option<&str>) -> Self {
        let Some(raw) = header.map(str::trim).filter(|s| !s.is_empty()) else {
            return Self::Absent;
        };
        let raw = raw.strip_prefix("W/").unwrap_or(raw);
        let inner = raw
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .unwrap_or(raw);
        if inner == "*" {
            Self::Any
        } else {
            Self::Etag(inner.to_owned())
        }
    }

    /// Whether a resource whose etag is `current` satisfies the condition.
    pub fn matches(&self, current: &str) -> bool {
        match self {
            Self::Absent | Self::Any => true,
            Self::Etag(e) => e == current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_unquoted_weak_and_star() {
        assert_eq!(IfMatch::parse(None), IfMatch::Absent);
        assert_eq!(IfMatch::parse(Some("\"*\"")), IfMatch::Any);
        assert_eq!(IfMatch::parse(Some("*")), IfMatch::Any);
        assert_eq!(
            IfMatch::parse(Some("\"AAAAAAAAAAE=\"")),
            IfMatch::Etag("AAAAAAAAAAE=".into())
        );
        assert_eq!(IfMatch::parse(Some("W/\"x\"")), IfMatch::Etag("x".into()));
        assert!(IfMatch::parse(Some("\"a\"")).matches("a"));
        assert!(!IfMatch::parse(Some("\"a\"")).matches("b"));
    }
}
