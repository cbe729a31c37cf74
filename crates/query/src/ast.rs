//! The syntax tree of a twin query and its canonical text.
//!
//! `Display` prints a canonical form (upper-case keywords and function names, single-quoted
//! strings, decimal numbers, minimal parentheses, `[[ ]]` only where needed) that parses
//! back to an equal tree. The continuation-token fingerprint hashes this text, so two
//! spellings of one query share tokens.
//!
//! The tree keeps what the evaluator needs ready-made: path segments carry their
//! lower-cased form so that case-insensitive lookups do not allocate per twin, AND/OR are
//! n-ary so a long `deviceId = 'a' OR deviceId = 'b' OR …` list is flat rather than a deep
//! (stack-hungry) chain.

use std::fmt::{self, Display, Formatter, Write as _};

use crate::lexer::{is_ident_continue, is_ident_start};

/// Words that cannot be unquoted names (spec §6.1); `[[group]]` quotes one.
const KEYWORDS: [&str; 16] = [
    "SELECT",
    "TOP",
    "FROM",
    "WHERE",
    "GROUP",
    "BY",
    "AS",
    "AND",
    "OR",
    "NOT",
    "IN",
    "NIN",
    "TRUE",
    "FALSE",
    "NULL",
    "UNDEFINED",
];

/// True when `word` is a reserved keyword in any letter case.
pub(crate) fn is_keyword(word: &str) -> bool {
    KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(word))
}

/// Lower-cases a name the same way for query segments and (at lookup time) twin keys.
pub(crate) fn fold_case(name: &str) -> String {
    name.chars().flat_map(char::to_lowercase).collect()
}

/// A parsed query: `SELECT [TOP n] items FROM collection [WHERE condition] [GROUP BY path]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `TOP n`: the maximum number of rows of the whole result (not per page).
    pub top: Option<u64>,
    pub select: Select,
    pub collection: Collection,
    pub condition: Option<Expr>,
    pub group_by: Option<Path>,
}

/// The document set named after `FROM` (spec §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    /// `devices`: device twins only (documents without `moduleId`).
    Devices,
    /// `devices.modules`: module twins only (documents with `moduleId`).
    Modules,
    /// `devices.jobs`: per-device job records.
    Jobs,
}

impl Collection {
    /// The collection's name as written after `FROM`.
    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Devices => "devices",
            Collection::Modules => "devices.modules",
            Collection::Jobs => "devices.jobs",
        }
    }
}

/// The select list.
#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// `SELECT *`: whole documents.
    All,
    /// A projection; never empty.
    Items(Vec<SelectItem>),
}

/// One select-list entry: an expression or aggregate, optionally `AS alias`.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectItem {
    pub value: Projection,
    pub alias: Option<String>,
}

/// What a select item computes.
#[derive(Debug, Clone, PartialEq)]
pub enum Projection {
    Expr(Expr),
    Aggregate(Aggregate),
}

/// Aggregates, only allowed as whole select items (spec §7.8).
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    Count,
    Sum(Expr),
    Avg(Expr),
    Min(Expr),
    Max(Expr),
}

impl Aggregate {
    /// The aggregate's name in canonical (upper) case.
    pub fn name(&self) -> &'static str {
        match self {
            Aggregate::Count => "COUNT",
            Aggregate::Sum(_) => "SUM",
            Aggregate::Avg(_) => "AVG",
            Aggregate::Min(_) => "MIN",
            Aggregate::Max(_) => "MAX",
        }
    }

    /// The argument, `None` for `COUNT()`.
    pub fn argument(&self) -> Option<&Expr> {
        match self {
            Aggregate::Count => None,
            Aggregate::Sum(e) | Aggregate::Avg(e) | Aggregate::Min(e) | Aggregate::Max(e) => {
                Some(e)
            }
        }
    }
}

/// An expression. Evaluates to a JSON value or *undefined* (spec §7).
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Literal),
    Path(Path),
    /// Unary minus.
    Neg(Box<Expr>),
    Not(Box<Expr>),
    /// Conjunction of two or more operands.
    And(Vec<Expr>),
    /// Disjunction of two or more operands.
    Or(Vec<Expr>),
    Compare {
        op: CompareOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Arithmetic {
        op: ArithmeticOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    /// `value IN [list]`, or `value NIN [list]` when `negated`; the list is never empty.
    In {
        value: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Call {
        function: Function,
        args: Vec<Expr>,
    },
}

/// A constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Undefined,
    Null,
    Bool(bool),
    /// Always finite.
    Number(f64),
    String(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    /// `!=` or `<>`.
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub fn as_str(self) -> &'static str {
        match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    /// The operator that gives the same answer with the operands swapped.
    pub fn mirrored(self) -> CompareOp {
        match self {
            CompareOp::Lt => CompareOp::Gt,
            CompareOp::Le => CompareOp::Ge,
            CompareOp::Gt => CompareOp::Lt,
            CompareOp::Ge => CompareOp::Le,
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArithmeticOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl ArithmeticOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ArithmeticOp::Add => "+",
            ArithmeticOp::Sub => "-",
            ArithmeticOp::Mul => "*",
            ArithmeticOp::Div => "/",
            ArithmeticOp::Rem => "%",
        }
    }
}

/// Built-in scalar functions (spec §7.6). Names are case-insensitive. `STARTS_WITH` and
/// `ENDS_WITH` are deliberately absent: IoT Hub rejects them in twin queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Function {
    IsDefined,
    StartsWith,
    EndsWith,
    IsNull,
    IsBool,
    IsNumber,
    IsString,
    IsObject,
    IsArray,
    IsPrimitive,
    AsNumber,
    Abs,
    Ceiling,
    Floor,
    Sign,
    Sqrt,
    Square,
    Exp,
    Power,
    Concat,
    Length,
    Lower,
    Upper,
    Substring,
    IndexOf,
    Contains,
}

impl Function {
    /// Every function, for lookups and tests.
    pub const ALL: [Function; 26] = [
        Function::IsDefined,
        Function::StartsWith,
        Function::EndsWith,
        Function::IsNull,
        Function::IsBool,
        Function::IsNumber,
        Function::IsString,
        Function::IsObject,
        Function::IsArray,
        Function::IsPrimitive,
        Function::AsNumber,
        Function::Abs,
        Function::Ceiling,
        Function::Floor,
        Function::Sign,
        Function::Sqrt,
        Function::Square,
        Function::Exp,
        Function::Power,
        Function::Concat,
        Function::Length,
        Function::Lower,
        Function::Upper,
        Function::Substring,
        Function::IndexOf,
        Function::Contains,
    ];

    /// Canonical (upper-case) name.
    pub fn name(self) -> &'static str {
        match self {
            Function::IsDefined => "IS_DEFINED",
            Function::StartsWith => "STARTSWITH",
            Function::EndsWith => "ENDSWITH",
            Function::IsNull => "IS_NULL",
            Function::IsBool => "IS_BOOL",
            Function::IsNumber => "IS_NUMBER",
            Function::IsString => "IS_STRING",
            Function::IsObject => "IS_OBJECT",
            Function::IsArray => "IS_ARRAY",
            Function::IsPrimitive => "IS_PRIMITIVE",
            Function::AsNumber => "AS_NUMBER",
            Function::Abs => "ABS",
            Function::Ceiling => "CEILING",
            Function::Floor => "FLOOR",
            Function::Sign => "SIGN",
            Function::Sqrt => "SQRT",
            Function::Square => "SQUARE",
            Function::Exp => "EXP",
            Function::Power => "POWER",
            Function::Concat => "CONCAT",
            Function::Length => "LENGTH",
            Function::Lower => "LOWER",
            Function::Upper => "UPPER",
            Function::Substring => "SUBSTRING",
            Function::IndexOf => "INDEX_OF",
            Function::Contains => "CONTAINS",
        }
    }

    /// Looks a function up by name in any letter case.
    pub fn from_name(name: &str) -> Option<Function> {
        Function::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Smallest and largest number of arguments (`None`: unbounded).
    pub fn arity(self) -> (usize, Option<usize>) {
        match self {
            Function::StartsWith
            | Function::EndsWith
            | Function::Power
            | Function::IndexOf
            | Function::Contains => (2, Some(2)),
            Function::Substring => (2, Some(3)),
            Function::Concat => (2, None),
            _ => (1, Some(1)),
        }
    }
}

/// A property path such as `properties.reported.$version` or `configurations.[[id]].status`.
/// Never empty. A leading collection name (`devices.`, `devices.modules.`) written in the
/// query has already been removed by the parser.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path {
    segments: Vec<Segment>,
}

/// One path segment: the name as written and its case-folded form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Segment {
    name: String,
    folded: String,
}

impl Segment {
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let folded = fold_case(&name);
        Segment { name, folded }
    }

    /// The name as written in the query.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The lower-cased name used for case-insensitive matching.
    pub fn folded(&self) -> &str {
        &self.folded
    }
}

impl Path {
    /// A path from segment names; `None` when there are none.
    pub fn new<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Option<Path> {
        let segments: Vec<Segment> = names.into_iter().map(Segment::new).collect();
        (!segments.is_empty()).then_some(Path { segments })
    }

    pub(crate) fn from_segments(segments: Vec<Segment>) -> Path {
        Path { segments }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// True when both paths name the same property under case-insensitive matching.
    pub fn same_property(&self, other: &Path) -> bool {
        self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(&other.segments)
                .all(|(a, b)| a.folded == b.folded)
    }
}

impl Display for Path {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.segments.iter().enumerate() {
            if i > 0 {
                f.write_char('.')?;
            }
            // An unquoted leading `devices` would be taken for the collection prefix.
            let collection_like = i == 0 && segment.name.eq_ignore_ascii_case("devices");
            write_name(f, &segment.name, collection_like)?;
        }
        Ok(())
    }
}

/// Writes a name bare when it lexes back as the same identifier, else as `[[name]]`.
fn write_name(f: &mut Formatter<'_>, name: &str, force_quotes: bool) -> fmt::Result {
    let mut chars = name.chars();
    let plain = chars.next().is_some_and(is_ident_start)
        && chars.all(is_ident_continue)
        && !is_keyword(name);
    if plain && !force_quotes {
        f.write_str(name)
    } else {
        write!(f, "[[{name}]]")
    }
}

/// Writes a finite number so that the lexer reads back the same `f64`.
fn write_number(f: &mut Formatter<'_>, n: f64) -> fmt::Result {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        // Exact: integral and far inside i64; also prints -0 as 0.
        write!(f, "{}", n as i64)
    } else {
        // Rust's Debug for f64 is the shortest text that round-trips (`0.1`, `1e300`).
        write!(f, "{n:?}")
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Undefined => f.write_str("undefined"),
            Literal::Null => f.write_str("null"),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Number(n) => write_number(f, *n),
            Literal::String(s) => {
                f.write_char('\'')?;
                for c in s.chars() {
                    if c == '\'' || c == '\\' {
                        f.write_char('\\')?;
                    }
                    f.write_char(c)?;
                }
                f.write_char('\'')
            }
        }
    }
}

/// Binding strength for printing, low to high (spec §6.2 precedence).
fn precedence(expr: &Expr) -> u8 {
    match expr {
        Expr::Or(_) => 1,
        Expr::And(_) => 2,
        Expr::Not(_) => 3,
        Expr::Compare { .. } | Expr::In { .. } => 4,
        Expr::Arithmetic { op, .. } => match op {
            ArithmeticOp::Add | ArithmeticOp::Sub => 5,
            ArithmeticOp::Mul | ArithmeticOp::Div | ArithmeticOp::Rem => 6,
        },
        Expr::Neg(_) => 7,
        Expr::Literal(_) | Expr::Path(_) | Expr::Call { .. } => 8,
    }
}

/// Prints `expr`, in parentheses when it binds less tightly than `min` requires.
fn write_operand(f: &mut Formatter<'_>, expr: &Expr, min: u8) -> fmt::Result {
    if precedence(expr) < min {
        write!(f, "({expr})")
    } else {
        write!(f, "{expr}")
    }
}

fn write_list(f: &mut Formatter<'_>, items: &[Expr], separator: &str, min: u8) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        write_operand(f, item, min)?;
    }
    Ok(())
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Literal(l) => write!(f, "{l}"),
            Expr::Path(p) => write!(f, "{p}"),
            Expr::Neg(operand) => {
                f.write_char('-')?;
                // `-5` would read back as the literal -5, not as negation of 5.
                if matches!(**operand, Expr::Literal(Literal::Number(_))) {
                    write!(f, "({operand})")
                } else {
                    write_operand(f, operand, 7)
                }
            }
            Expr::Not(operand) => {
                f.write_str("NOT ")?;
                write_operand(f, operand, 3)
            }
            // A nested AND inside AND gets parentheses, which keeps the tree shape.
            Expr::And(operands) => write_list(f, operands, " AND ", 3),
            Expr::Or(operands) => write_list(f, operands, " OR ", 2),
            Expr::Compare { op, left, right } => {
                write_operand(f, left, 5)?;
                write!(f, " {} ", op.as_str())?;
                write_operand(f, right, 5)
            }
            Expr::Arithmetic { op, left, right } => {
                let own = precedence(self);
                write_operand(f, left, own)?;
                write!(f, " {} ", op.as_str())?;
                write_operand(f, right, own + 1)
            }
            Expr::In {
                value,
                list,
                negated,
            } => {
                write_operand(f, value, 5)?;
                f.write_str(if *negated { " NIN [" } else { " IN [" })?;
                let inner = ListText(list).to_string();
                // `[[` would open a quoted name: keep `[` and `[[x]]` apart.
                if inner.starts_with('[') {
                    f.write_char(' ')?;
                }
                f.write_str(&inner)?;
                f.write_char(']')
            }
            Expr::Call { function, args } => {
                write!(f, "{}(", function.name())?;
                write_list(f, args, ", ", 1)?;
                f.write_char(')')
            }
        }
    }
}

struct ListText<'a>(&'a [Expr]);

impl Display for ListText<'_> {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_list(f, self.0, ", ", 5)
    }
}

impl Display for Aggregate {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.argument() {
            None => write!(f, "{}()", self.name()),
            Some(arg) => write!(f, "{}({arg})", self.name()),
        }
    }
}

impl Display for SelectItem {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.value {
            Projection::Expr(e) => write!(f, "{e}")?,
            Projection::Aggregate(a) => write!(f, "{a}")?,
        }
        if let Some(alias) = &self.alias {
            f.write_str(" AS ")?;
            write_name(f, alias, false)?;
        }
        Ok(())
    }
}

impl Display for Collection {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        if let Some(n) = self.top {
            write!(f, "TOP {n} ")?;
        }
        match &self.select {
            Select::All => f.write_char('*')?,
            Select::Items(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
            }
        }
        write!(f, " FROM {}", self.collection)?;
        if let Some(condition) = &self.condition {
            write!(f, " WHERE {condition}")?;
        }
        if let Some(path) = &self.group_by {
            write!(f, " GROUP BY {path}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(names: &[&str]) -> Path {
        Path::new(names.iter().copied()).unwrap()
    }

    #[test]
    fn names_that_are_not_identifiers_or_are_keywords_get_brackets() {
        assert_eq!(path(&["tags", "group"]).to_string(), "tags.[[group]]");
        assert_eq!(
            path(&["configurations", "fw-rollout-1", "status"]).to_string(),
            "configurations.[[fw-rollout-1]].status"
        );
        assert_eq!(
            path(&["properties", "reported", "$version"]).to_string(),
            "properties.reported.$version"
        );
        assert_eq!(path(&["devices", "x"]).to_string(), "[[devices]].x");
        assert_eq!(path(&["a", "devices"]).to_string(), "a.devices");
    }

    #[test]
    fn numbers_print_in_decimal_and_round_trip() {
        let text = |n: f64| Literal::Number(n).to_string();
        assert_eq!(text(300.0), "300");
        assert_eq!(text(-0.0), "0");
        assert_eq!(text(30.25), "30.25");
        assert_eq!(text(1e300), "1e300");
        assert_eq!(text(0.1), "0.1");
    }

    #[test]
    fn strings_escape_quote_and_backslash() {
        assert_eq!(
            Literal::String("O'Brien\\".into()).to_string(),
            r"'O\'Brien\\'"
        );
    }

    #[test]
    fn negation_of_a_number_keeps_parentheses() {
        let e = Expr::Neg(Box::new(Expr::Literal(Literal::Number(5.0))));
        assert_eq!(e.to_string(), "-(5)");
    }

    #[test]
    fn in_list_starting_with_quoted_name_is_spaced() {
        let e = Expr::In {
            value: Box::new(Expr::Literal(Literal::Number(1.0))),
            list: vec![Expr::Path(path(&["group"]))],
            negated: false,
        };
        assert_eq!(e.to_string(), "1 IN [ [[group]]]");
    }

    #[test]
    fn function_lookup_is_case_insensitive_and_rejects_starts_with() {
        assert_eq!(Function::from_name("is_defined"), Some(Function::IsDefined));
        assert_eq!(
            Function::from_name("StartsWith"),
            Some(Function::StartsWith)
        );
        assert_eq!(Function::from_name("STARTS_WITH"), None);
        assert_eq!(Function::from_name("ENDS_WITH"), None);
    }
}
