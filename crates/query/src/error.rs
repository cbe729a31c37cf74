//! The one error type of the query crate.
//!
//! Every [`QueryError`] is the client's fault (bad query text, bad paging header, foreign or
//! forged continuation token), so the server answers all of them the same way: HTTP 400 with
//! IoT Hub error code `ArgumentInvalid` (400004) and the `Display` text as the message
//! (spec §4). [`QueryError::kind`] lets the server tell them apart for logs and metrics.

use thiserror::Error;

/// Maximum length of a query text in characters (spec §6.2, §8).
pub const MAX_QUERY_LENGTH: usize = 8192;

/// Maximum nesting depth of an expression (parentheses, operators, function calls).
///
/// The language has no documented limit; the cap keeps the recursive parser and evaluator
/// far away from the end of a 2 MiB thread stack whatever the input.
pub const MAX_EXPRESSION_DEPTH: usize = 64;

/// What went wrong with a query request. All variants map to HTTP 400 `ArgumentInvalid`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QueryError {
    /// The text does not follow the grammar (including unknown functions, misplaced
    /// aggregates, reserved words used as names, nesting deeper than
    /// [`MAX_EXPRESSION_DEPTH`]). `position` is the 1-based character position of the
    /// offending token (one past the end for "end of query").
    #[error("Syntax error at position {position}: {message}")]
    Syntax { position: usize, message: String },

    /// The text is longer than [`MAX_QUERY_LENGTH`] characters.
    #[error("The query is {length} characters long; the maximum is {MAX_QUERY_LENGTH}")]
    TooLong { length: usize },

    /// The text parses but the query is not allowed (e.g. an aggregate beside a plain
    /// expression without GROUP BY, GROUP BY with `SELECT *`, a projection over
    /// `devices.jobs`).
    #[error("Invalid query: {0}")]
    Invalid(String),

    /// The `x-ms-continuation` token is malformed or belongs to a different query.
    #[error("Invalid continuation token: {0}")]
    InvalidContinuation(String),

    /// The `x-ms-max-item-count` header is not a positive integer.
    #[error("Invalid x-ms-max-item-count: {0}")]
    InvalidMaxItemCount(String),
}

/// The variant of a [`QueryError`] without its details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryErrorKind {
    Syntax,
    TooLong,
    Invalid,
    InvalidContinuation,
    InvalidMaxItemCount,
}

impl QueryError {
    /// HTTP status the server answers with, for every query error.
    pub const HTTP_STATUS: u16 = 400;
    /// IoT Hub error code name (`iothub-errorcode` header and `ErrorCode` body field).
    pub const ERROR_CODE: &'static str = "ArgumentInvalid";
    /// IoT Hub's numeric error code for [`Self::ERROR_CODE`].
    pub const ERROR_CODE_NUMBER: u32 = 400_004;

    /// The variant, for logging and tests.
    pub fn kind(&self) -> QueryErrorKind {
        match self {
            QueryError::Syntax { .. } => QueryErrorKind::Syntax,
            QueryError::TooLong { .. } => QueryErrorKind::TooLong,
            QueryError::Invalid(_) => QueryErrorKind::Invalid,
            QueryError::InvalidContinuation(_) => QueryErrorKind::InvalidContinuation,
            QueryError::InvalidMaxItemCount(_) => QueryErrorKind::InvalidMaxItemCount,
        }
    }

    pub(crate) fn syntax(position: usize, message: impl Into<String>) -> Self {
        QueryError::Syntax {
            position,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_message_names_position_and_expectation() {
        let e = QueryError::syntax(23, "expected FROM, found 'WHERE'");
        assert_eq!(
            e.to_string(),
            "Syntax error at position 23: expected FROM, found 'WHERE'"
        );
        assert_eq!(e.kind(), QueryErrorKind::Syntax);
    }

    #[test]
    fn too_long_message_names_the_limit() {
        let e = QueryError::TooLong { length: 8193 };
        assert!(e.to_string().contains("8193"));
        assert!(e.to_string().contains("8192"));
    }
}
