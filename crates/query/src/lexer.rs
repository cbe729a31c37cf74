//! Tokenizer (spec §6.1).
//!
//! The lexer turns the whole text into a token vector up front: queries are at most 8192
//! characters, and a vector lets the parser peek freely. Keywords are not recognised here:
//! the parser decides, because `[[group]]` must stay a name while `group` is a keyword.
//! Positions are 1-based character (not byte) positions, as shown to users.

use crate::error::QueryError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TokenKind {
    /// An unquoted identifier or keyword, as written.
    Ident(String),
    /// A `[[ … ]]` quoted name, without the brackets.
    Quoted(String),
    /// A string literal with escapes resolved.
    Str(String),
    /// A numeric literal (always finite).
    Number(f64),
    Dot,
    Comma,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Star,
    Slash,
    Percent,
    Plus,
    Minus,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    End,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Token {
    pub(crate) kind: TokenKind,
    /// 1-based character position of the first character.
    pub(crate) position: usize,
    /// The token's source text, for error messages.
    pub(crate) text: String,
}

impl Token {
    /// How an error message names this token: `'WHERE'`, `string 'US'`, `end of query`.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            TokenKind::End => "end of query".to_owned(),
            TokenKind::Str(_) => format!("string {}", self.text),
            _ => format!("'{}'", self.text),
        }
    }
}

/// True for characters that may start an unquoted identifier.
pub(crate) fn is_ident_start(c: char) -> bool {
    c == '_' || c == '$' || c.is_alphabetic()
}

/// True for characters that may continue an unquoted identifier.
pub(crate) fn is_ident_continue(c: char) -> bool {
    c == '_' || c == '$' || c.is_alphanumeric()
}

struct Lexer {
    chars: Vec<char>,
    /// Index into `chars` (0-based); positions reported are `index + 1`.
    index: usize,
    tokens: Vec<Token>,
}

/// Splits `src` into tokens, ending with a [`TokenKind::End`] token.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, QueryError> {
    let mut lexer = Lexer {
        chars: src.chars().collect(),
        index: 0,
        tokens: Vec::new(),
    };
    lexer.run()?;
    Ok(lexer.tokens)
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.index + ahead).copied()
    }

    fn text(&self, start: usize) -> String {
        self.chars
            .get(start..self.index)
            .map(|s| s.iter().collect())
            .unwrap_or_default()
    }

    fn push(&mut self, kind: TokenKind, start: usize) {
        let text = self.text(start);
        self.tokens.push(Token {
            kind,
            position: start + 1,
            text,
        });
    }

    fn run(&mut self) -> Result<(), QueryError> {
        while let Some(c) = self.peek(0) {
            let start = self.index;
            if c.is_whitespace() {
                self.index += 1;
                continue;
            }
            if is_ident_start(c) {
                while self.peek(0).is_some_and(is_ident_continue) {
                    self.index += 1;
                }
                let text = self.text(start);
                self.push(TokenKind::Ident(text), start);
                continue;
            }
            if c.is_ascii_digit() || (c == '.' && self.peek(1).is_some_and(|d| d.is_ascii_digit()))
            {
                let value = self.number(start)?;
                self.push(TokenKind::Number(value), start);
                continue;
            }
            match c {
                '\'' | '"' => {
                    let value = self.string(c, start)?;
                    self.push(TokenKind::Str(value), start);
                }
                '[' if self.peek(1) == Some('[') => {
                    let name = self.quoted_name(start)?;
                    self.push(TokenKind::Quoted(name), start);
                }
                _ => {
                    let kind = self.punctuation(c, start)?;
                    self.push(kind, start);
                }
            }
        }
        self.tokens.push(Token {
            kind: TokenKind::End,
            position: self.chars.len() + 1,
            text: String::new(),
        });
        Ok(())
    }

    fn punctuation(&mut self, c: char, start: usize) -> Result<TokenKind, QueryError> {
        let next = self.peek(1);
        let (kind, width) = match (c, next) {
            ('!', Some('=')) => (TokenKind::Ne, 2),
            ('<', Some('>')) => (TokenKind::Ne, 2),
            ('<', Some('=')) => (TokenKind::Le, 2),
            ('>', Some('=')) => (TokenKind::Ge, 2),
            ('<', _) => (TokenKind::Lt, 1),
            ('>', _) => (TokenKind::Gt, 1),
            ('=', _) => (TokenKind::Eq, 1),
            ('.', _) => (TokenKind::Dot, 1),
            (',', _) => (TokenKind::Comma, 1),
            ('(', _) => (TokenKind::LParen, 1),
            (')', _) => (TokenKind::RParen, 1),
            ('[', _) => (TokenKind::LBracket, 1),
            (']', _) => (TokenKind::RBracket, 1),
            ('*', _) => (TokenKind::Star, 1),
            ('/', _) => (TokenKind::Slash, 1),
            ('%', _) => (TokenKind::Percent, 1),
            ('+', _) => (TokenKind::Plus, 1),
            ('-', _) => (TokenKind::Minus, 1),
            _ => {
                return Err(QueryError::syntax(
                    start + 1,
                    format!("unexpected character '{}'", c.escape_debug()),
                ))
            }
        };
        self.index += width;
        Ok(kind)
    }

    /// Decimal (`300`, `30.25`, `.5`, `1e-3`) or hexadecimal (`0x12C`) number.
    fn number(&mut self, start: usize) -> Result<f64, QueryError> {
        let hex = self.peek(0) == Some('0') && matches!(self.peek(1), Some('x' | 'X'));
        let value = if hex {
            self.index += 2;
            let mut value = 0f64;
            let mut digits = 0usize;
            while let Some(d) = self.peek(0).and_then(|c| c.to_digit(16)) {
                value = value * 16.0 + f64::from(d);
                digits += 1;
                self.index += 1;
            }
            if digits == 0 {
                return Err(QueryError::syntax(
                    start + 1,
                    "expected hexadecimal digits after '0x'",
                ));
            }
            value
        } else {
            self.skip_digits();
            if self.peek(0) == Some('.') && self.peek(1).is_some_and(|d| d.is_ascii_digit()) {
                self.index += 1;
                self.skip_digits();
            }
            if matches!(self.peek(0), Some('e' | 'E')) {
                let sign = usize::from(matches!(self.peek(1), Some('+' | '-')));
                if self.peek(1 + sign).is_some_and(|d| d.is_ascii_digit()) {
                    self.index += 1 + sign;
                    self.skip_digits();
                }
            }
            let text = self.text(start);
            text.parse::<f64>()
                .map_err(|_| QueryError::syntax(start + 1, format!("invalid number '{text}'")))?
        };
        // `12abc` is a typo, not the number 12 followed by the name abc.
        if self.peek(0).is_some_and(is_ident_continue) {
            self.index += 1;
            while self.peek(0).is_some_and(is_ident_continue) {
                self.index += 1;
            }
            return Err(QueryError::syntax(
                start + 1,
                format!("invalid number '{}'", self.text(start)),
            ));
        }
        if !value.is_finite() {
            return Err(QueryError::syntax(
                start + 1,
                format!("number '{}' is out of range", self.text(start)),
            ));
        }
        Ok(value)
    }

    fn skip_digits(&mut self) {
        while self.peek(0).is_some_and(|d| d.is_ascii_digit()) {
            self.index += 1;
        }
    }

    /// A string literal delimited by `quote`; `\'`, `\"`, `\\`, `\/`, `\b`, `\f`, `\n`,
    /// `\r`, `\t` and `\uXXXX` (with surrogate pairs) are recognised.
    fn string(&mut self, quote: char, start: usize) -> Result<String, QueryError> {
        self.index += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek(0) else {
                return Err(QueryError::syntax(start + 1, "unterminated string literal"));
            };
            self.index += 1;
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let escape_at = self.index;
            let Some(e) = self.peek(0) else {
                return Err(QueryError::syntax(start + 1, "unterminated string literal"));
            };
            self.index += 1;
            match e {
                '\'' | '"' | '\\' | '/' => out.push(e),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => out.push(self.unicode_escape(escape_at)?),
                _ => {
                    return Err(QueryError::syntax(
                        escape_at,
                        format!("invalid escape sequence '\\{}'", e.escape_debug()),
                    ))
                }
            }
        }
    }

    fn hex4(&mut self, escape_at: usize) -> Result<u32, QueryError> {
        let mut value = 0u32;
        for _ in 0..4 {
            let digit = self.peek(0).and_then(|c| c.to_digit(16)).ok_or_else(|| {
                QueryError::syntax(escape_at, "expected four hexadecimal digits after '\\u'")
            })?;
            value = value * 16 + digit;
            self.index += 1;
        }
        Ok(value)
    }

    fn unicode_escape(&mut self, escape_at: usize) -> Result<char, QueryError> {
        let first = self.hex4(escape_at)?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if self.peek(0) != Some('\\') || self.peek(1) != Some('u') {
                return Err(QueryError::syntax(
                    escape_at,
                    "unpaired surrogate in '\\u' escape",
                ));
            }
            self.index += 2;
            let second = self.hex4(escape_at)?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(QueryError::syntax(
                    escape_at,
                    "unpaired surrogate in '\\u' escape",
                ));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code)
            .ok_or_else(|| QueryError::syntax(escape_at, "unpaired surrogate in '\\u' escape"))
    }

    /// `[[name]]`: everything up to the first `]]`, verbatim.
    fn quoted_name(&mut self, start: usize) -> Result<String, QueryError> {
        self.index += 2;
        let mut name = String::new();
        loop {
            match (self.peek(0), self.peek(1)) {
                (Some(']'), Some(']')) => {
                    self.index += 2;
                    return Ok(name);
                }
                (Some(c), _) => {
                    name.push(c);
                    self.index += 1;
                }
                (None, _) => {
                    return Err(QueryError::syntax(
                        start + 1,
                        "unterminated '[[' quoted name (missing ']]')",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<TokenKind> {
        tokenize(src).unwrap().into_iter().map(|t| t.kind).collect()
    }

    #[test]
    fn numbers_decimal_hex_fraction_exponent() {
        assert_eq!(
            kinds("300 30.25 .5 0x12C 1e3 2.5E-1"),
            vec![
                TokenKind::Number(300.0),
                TokenKind::Number(30.25),
                TokenKind::Number(0.5),
                TokenKind::Number(300.0),
                TokenKind::Number(1000.0),
                TokenKind::Number(0.25),
                TokenKind::End
            ]
        );
    }

    #[test]
    fn number_followed_by_letters_is_an_error() {
        assert!(tokenize("12abc").is_err());
        assert!(tokenize("0x").is_err());
        assert!(tokenize("1e999").is_err());
    }

    #[test]
    fn strings_with_escapes_both_quotes() {
        assert_eq!(
            kinds(r#"'O\'Brien' "a\"b" '\\' '\u0041\uD83D\uDE00'"#),
            vec![
                TokenKind::Str("O'Brien".into()),
                TokenKind::Str("a\"b".into()),
                TokenKind::Str("\\".into()),
                TokenKind::Str("A😀".into()),
                TokenKind::End
            ]
        );
        assert!(tokenize(r"'\uD83D'").is_err());
        assert!(tokenize(r"'\q'").is_err());
    }

    #[test]
    fn unterminated_string_reports_its_start() {
        let err = tokenize("x = 'US").unwrap_err();
        assert_eq!(err, QueryError::syntax(5, "unterminated string literal"));
    }

    #[test]
    fn quoted_names_keep_everything_up_to_double_bracket() {
        assert_eq!(
            kinds("configurations.[[fw-rollout-1]].status"),
            vec![
                TokenKind::Ident("configurations".into()),
                TokenKind::Dot,
                TokenKind::Quoted("fw-rollout-1".into()),
                TokenKind::Dot,
                TokenKind::Ident("status".into()),
                TokenKind::End
            ]
        );
        assert!(tokenize("[[abc").is_err());
    }

    #[test]
    fn operators() {
        assert_eq!(
            kinds("= != <> < <= > >= + - * / %"),
            vec![
                TokenKind::Eq,
                TokenKind::Ne,
                TokenKind::Ne,
                TokenKind::Lt,
                TokenKind::Le,
                TokenKind::Gt,
                TokenKind::Ge,
                TokenKind::Plus,
                TokenKind::Minus,
                TokenKind::Star,
                TokenKind::Slash,
                TokenKind::Percent,
                TokenKind::End
            ]
        );
        assert!(tokenize("a ! b").is_err());
        assert!(tokenize("a # b").is_err());
    }

    #[test]
    fn positions_count_characters_not_bytes() {
        let tokens = tokenize("'é' x").unwrap();
        assert_eq!(tokens[1].position, 5);
        assert_eq!(tokens[2].position, 6);
    }

    #[test]
    fn dollar_identifiers() {
        assert_eq!(
            kinds("$version"),
            vec![TokenKind::Ident("$version".into()), TokenKind::End]
        );
    }
}
